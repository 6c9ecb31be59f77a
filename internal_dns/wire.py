"""DNS messages on the wire: parsing queries and rendering replies (RFC 1035, 6891, 2181 §9).

Replies echo the question bytes as received and name every owner by a compression pointer into
them, so owners keep the querier's letter case (0x20) without any case bookkeeping.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from internal_dns.records import NOERROR, NXDOMAIN, OPT, Answer, RRset

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHHIH")  # pointer, type, class, ttl, rdlength
_TYPE_CLASS = struct.Struct("!HH")

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
UDP_DEFAULT_LIMIT = 512
NSID = 3  # the EDNS option code (RFC 5001)
TCP_LIMIT = 65535


class Malformed(Exception):
    """The query cannot be parsed: answer FORMERR."""


@dataclass(frozen=True, slots=True)
class Edns:
    payload: int  # the client's UDP limit, at least 512
    version: int
    do: bool
    nsid: bool = False  # it asks which server answers (RFC 5001)


@dataclass(frozen=True, slots=True)
class Query:
    data: bytes
    id: int
    flags: int
    labels: tuple[str, ...]  # lower-cased, for lookups
    label_offsets: tuple[int, ...]  # where each label of the question name starts in `data`
    question_end: int
    qtype: int
    qclass: int
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def name(self) -> str:
        return ".".join(self.labels) + "."

    def owner_offset(self, skip: int) -> int:
        if skip < len(self.label_offsets):
            return self.label_offsets[skip]
        return self.question_end - 5  # the root label ending the name

    def udp_limit(self) -> int:
        return self.edns.payload if self.edns is not None else UDP_DEFAULT_LIMIT


def parse_query(data: bytes) -> Query | None:
    """Parse a query. None: not worth a reply (too short for a header, or QR=1). Raises Malformed."""
    if len(data) < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        return None
    if qdcount != 1:
        raise Malformed(f"QDCOUNT is {qdcount}, not 1")
    offsets: list[int] = []
    labels: list[str] = []
    pos = skip_name(data, 12, pointers=False, offsets=offsets, labels=labels)
    if pos - 12 > 255:
        raise Malformed("question name longer than 255 bytes")
    end = len(data)
    if pos + 4 > end:
        raise Malformed("question runs past the end")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, pos)
    pos += 4
    question_end = pos
    for _ in range(ancount + nscount):
        pos = _skip_rr(data, pos)[0]
    edns = None
    for _ in range(arcount):
        start = pos
        pos, rtype = _skip_rr(data, pos)
        if rtype == OPT:
            if edns is not None:
                raise Malformed("more than one OPT record")
            if data[start] != 0:
                raise Malformed("OPT owner is not the root")
            _, payload, ttl, rdlength = struct.unpack_from("!HHIH", data, start + 1)
            nsid = _check_options(data, start + 11, start + 11 + rdlength)
            edns = Edns(max(payload, 512), (ttl >> 16) & 0xFF, bool(ttl & 0x8000), nsid)
    if pos != end:
        raise Malformed("trailing bytes after the last record")
    return Query(data, qid, flags, tuple(labels), tuple(offsets), question_end, qtype, qclass, edns)


def skip_name(
    data: bytes,
    pos: int,
    *,
    pointers: bool = True,
    offsets: list[int] | None = None,
    labels: list[str] | None = None,
) -> int:
    """Where the wire-format name that starts at `pos` ends (RFC 1035 §3.1, §4.1.4): the one
    walker of names for every part that reads messages.

    Labels of up to 63 bytes, ended by the root label or, when `pointers`, by a compression
    pointer (two bytes; where it points is not followed). Raises Malformed for any other label
    type (64 to 191, and a pointer when not `pointers`) and for a name that runs past the end of
    `data`; the caller checks what follows the name. For each label (not the root, not a
    pointer) `offsets` gets where it starts and `labels` its text, lower-cased, when given: the
    question is parsed in this one pass.
    """
    end = len(data)
    while True:
        if pos >= end:
            raise Malformed("name runs past the end")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length > 63:
            if length < 0xC0:
                raise Malformed("bad label type")
            if not pointers:
                raise Malformed("compression where none may be")
            if pos + 2 > end:
                raise Malformed("compression pointer runs past the end")
            return pos + 2
        if offsets is not None:
            offsets.append(pos)
        if labels is not None:
            labels.append(data[pos + 1 : pos + 1 + length].lower().decode("latin-1"))
        pos += 1 + length


def _skip_rr(data: bytes, pos: int) -> tuple[int, int]:
    end = len(data)
    pos = skip_name(data, pos)
    if pos + 10 > end:
        raise Malformed("record runs past the end")
    rtype, _, _, rdlength = struct.unpack_from("!HHIH", data, pos)
    pos += 10 + rdlength
    if pos > end:
        raise Malformed("record data runs past the end")
    return pos, rtype


def _check_options(data: bytes, pos: int, end: int) -> bool:
    """Whether the options, checked to fit the record, include NSID."""
    nsid = False
    while pos < end:
        if pos + 4 > end:
            raise Malformed("truncated EDNS option")
        code, length = struct.unpack_from("!HH", data, pos)
        nsid = nsid or code == NSID
        pos += 4 + length
    if pos != end:
        raise Malformed("EDNS option runs past the OPT record")
    return nsid


def opcode_of(data: bytes) -> int:
    """The opcode of a message at least a header long."""
    return (data[2] >> 3) & 0xF


def header_reply(data: bytes, rcode: int) -> bytes:
    """A bare reply (no question) to a query whose question cannot be trusted."""
    qid, flags = struct.unpack_from("!HH", data)
    out_flags = QR | (flags & (0x7800 | RD | CD)) | (rcode & 0xF)
    return _HEADER.pack(qid, out_flags, 0, 0, 0, 0)


def rrset_wire(q: Query, rrset: RRset, rotation: int) -> bytes:
    rdatas = rrset.rdatas
    if rrset.rotates and len(rdatas) > 1:
        k = rotation % len(rdatas)
        rdatas = rdatas[k:] + rdatas[:k]
    pointer = 0xC000 | q.owner_offset(rrset.skip)
    pack = _RR_FIXED.pack
    prefix = rrset.prefix
    return b"".join(prefix + pack(pointer, rrset.rtype, rrset.rclass, rrset.ttl, len(rd)) + rd for rd in rdatas)


def opt_wire(payload: int, do: bool, rcode: int, nsid: bytes | None = None) -> bytes:
    ttl = ((rcode >> 4) << 24) | (0x8000 if do else 0)
    options = b"" if nsid is None else struct.pack("!HH", NSID, len(nsid)) + nsid
    return b"\x00" + struct.pack("!HHIH", OPT, payload, ttl, len(options)) + options


def render(
    q: Query,
    answer: Answer,
    *,
    recursion_available: bool,
    limit: int,
    server_payload: int,
    rotation: int = 0,
    nsid: bytes | None = None,
) -> bytes:
    """The whole reply; past `limit` bytes whole RRsets are dropped from the end and TC is set,
    but for the additional section's, which are left out while they do not fit, without TC.
    `nsid`: the server's id, sent to a query that asks for it."""
    edns = q.edns
    opt = opt_wire(server_payload, edns.do, answer.rcode, nsid if edns.nsid else None) if edns is not None else b""
    question = q.data[12 : q.question_end]
    budget = limit - 12 - len(question) - len(opt)
    sections: list[tuple[bytes, int]] = []
    truncated = False
    for rrsets in (answer.answer, answer.authority):
        chunks = []
        count = 0
        for rrset in rrsets:
            if truncated:
                break
            wire = rrset_wire(q, rrset, rotation)
            if len(wire) > budget:
                truncated = True
                break
            budget -= len(wire)
            chunks.append(wire)
            count += len(rrset.rdatas)
        sections.append((b"".join(chunks), count))
    extra: list[bytes] = []
    extra_count = 0
    if not truncated:
        for rrset in answer.additional:
            wire = rrset_wire(q, rrset, 0)
            if len(wire) > budget:
                break  # the rest in order would leave gaps a client cannot tell from absence
            budget -= len(wire)
            extra.append(wire)
            extra_count += len(rrset.rdatas)
    flags = QR | (q.flags & (0x7800 | RD | CD)) | (answer.rcode & 0xF)
    if answer.authoritative and answer.rcode in (NOERROR, NXDOMAIN):
        flags |= AA
    if recursion_available:
        flags |= RA
    if truncated:
        flags |= TC
    header = _HEADER.pack(q.id, flags, 1, sections[0][1], sections[1][1], extra_count + (1 if opt else 0))
    return b"".join((header, question, sections[0][0], sections[1][0], *extra, opt))
