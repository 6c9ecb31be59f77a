"""etcd's `KV.Range` call as protocol buffer bytes: the request written and the response read,
by hand, for the few fields a read of the registry uses (etcd's api/etcdserverpb/rpc.proto and
api/mvccpb/kv.proto). A load reads its ranges over gRPC with these rather than through etcd's
JSON gateway, which costs etcd four times the CPU of the read itself (a million machines: about
30 s of etcd's CPU through the gateway, 6 s over gRPC, on two cores).

    RangeRequest  { bytes key = 1; bytes range_end = 2; int64 limit = 3; int64 revision = 4; }
    RangeResponse { ResponseHeader header = 1; repeated KeyValue kvs = 2; bool more = 3; int64 count = 4; }
    ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; uint64 raft_term = 4; }
    KeyValue      { bytes key = 1; int64 create_revision = 2; int64 mod_revision = 3;
                    int64 version = 4; bytes value = 5; int64 lease = 6; }

Fields not listed are skipped by their wire type, as protocol buffers require of a reader.
"""

from __future__ import annotations

from dataclasses import dataclass

RANGE = "/etcdserverpb.KV/Range"

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class Malformed(ValueError):
    """Bytes that are not a RangeResponse."""


@dataclass(frozen=True, slots=True)
class RangePage:
    revision: int  # the store's revision the range was read at
    kvs: list[tuple[bytes, bytes]]  # (key, value), in key order
    more: bool  # keys are left in the range past the limit


def _varint(n: int) -> bytes:
    if n < 0:  # int64 on the wire: two's complement in ten bytes
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def range_request(key: bytes, range_end: bytes, limit: int = 0, revision: int = 0) -> bytes:
    """A RangeRequest: keys from `key` up to `range_end` (excluded), at most `limit` of them (0:
    all), as of `revision` (0: the latest). Defaults are left out, as protocol buffers write them."""
    out = bytearray()
    for number, data in ((1, key), (2, range_end)):
        if data:
            out += _varint(number << 3 | _LEN) + _varint(len(data)) + data
    for number, value in ((3, limit), (4, revision)):
        if value:
            out += _varint(number << 3 | _VARINT) + _varint(value)
    return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise Malformed("a number runs past its message")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


def _skip(buf: bytes, i: int, wire: int) -> int:
    """Past a field's value of this wire type."""
    if wire == _VARINT:
        return _read_varint(buf, i)[1]
    if wire == _LEN:
        n, i = _read_varint(buf, i)
        return i + n
    if wire == _I64:
        return i + 8
    if wire == _I32:
        return i + 4
    raise Malformed(f"wire type {wire} is not one etcd writes")


def _fields(buf: bytes, i: int, end: int) -> list[tuple[int, int, int, int]]:
    """A message's fields between i and end: (number, wire type, start, stop) of each value
    (for a length-delimited one, its bytes; for a number, the varint)."""
    out = []
    while i < end:
        tag, i = _read_varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == _LEN:
            n, i = _read_varint(buf, i)
            start, i = i, i + n
        else:
            start, i = i, _skip(buf, i, wire)
        if i > end:
            raise Malformed(f"field {number} runs past its message")
        out.append((number, wire, start, i))
    return out


def _key_value(buf: bytes, i: int, end: int) -> tuple[bytes, bytes]:
    """A KeyValue's key and value. etcd writes the fields in number order, key first and value
    after three revision numbers: read in one pass, each number only stepped over."""
    key = value = b""
    while i < end:
        tag = buf[i]
        i += 1
        if tag == 0x0A or tag == 0x2A:  # key (1) or value (5), each with its length
            n = buf[i]
            i += 1
            if n >= 0x80:
                n, i = _read_varint(buf, i - 1)
            if tag == 0x0A:
                key = buf[i : i + n]
            else:
                value = buf[i : i + n]
            i += n
        elif tag < 0x80 and tag & 7 == _VARINT:  # a revision, the version or the lease
            while buf[i] >= 0x80:
                i += 1
            i += 1
        else:  # a field a later etcd may add: the general way
            start = i - 1
            tag, i = _read_varint(buf, start)
            i = _skip(buf, i, tag & 7)
    if i != end:
        raise Malformed("a key-value runs past its message")
    return key, value


def range_response(buf: bytes) -> RangePage:
    """A RangeResponse's revision, key-values and whether more are left."""
    revision, more = 0, False
    kvs: list[tuple[bytes, bytes]] = []
    try:
        for number, wire, start, stop in _fields(buf, 0, len(buf)):
            if number == 2 and wire == _LEN:
                kvs.append(_key_value(buf, start, stop))
            elif number == 1 and wire == _LEN:
                for inner, inner_wire, at, _ in _fields(buf, start, stop):
                    if inner == 3 and inner_wire == _VARINT:
                        revision = _read_varint(buf, at)[0]
            elif number == 3 and wire == _VARINT:
                more = _read_varint(buf, start)[0] != 0
    except IndexError:
        raise Malformed("a field runs past the end") from None
    if not revision:
        raise Malformed("no revision in the response's header")
    return RangePage(revision, kvs, more)
