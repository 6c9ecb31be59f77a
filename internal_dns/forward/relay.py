"""Surgery on relayed messages: the upstream's reply handed to a client byte for byte, but for
the ID, the question's letter case, the flags that describe this hop, the OPT record and the TTLs.

Working on the bytes keeps everything the client should see unchanged — DNSSEC records, EDNS
options, the order of records — without decoding and re-encoding every answer.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

import dns.exception
import dns.message

from internal_dns.records import NOERROR, NXDOMAIN, OPT, SOA
from internal_dns.wire import AA, AD, CD, NSID, QR, RA, RD, TC, Malformed, Query, opt_wire, skip_name

_HEADER = struct.Struct("!HHHHHH")
_DO = 0x8000  # in the OPT record's flags


@dataclass(frozen=True, slots=True)
class Record:
    section: int  # 0 answer, 1 authority, 2 additional
    start: int
    end: int
    rtype: int
    ttl_offset: int


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    wire: bytes
    id: int
    flags: int
    question: bytes  # the question section as the upstream echoed it
    records: tuple[Record, ...]

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)

    @property
    def opt(self) -> Record | None:
        for r in self.records:
            if r.rtype == OPT and r.section == 2:
                return r
        return None

    def ttl(self, record: Record) -> int:
        return struct.unpack_from("!I", self.wire, record.ttl_offset)[0]

    @property
    def negative(self) -> bool:
        """NXDOMAIN, or NOERROR without an answer (NODATA)."""
        return self.rcode == NXDOMAIN or (self.rcode == NOERROR and not any(r.section == 0 for r in self.records))

    def negative_ttl(self) -> int | None:
        """RFC 2308 §5: the smaller of the authority SOA's TTL and its minimum; None without an SOA."""
        for r in self.records:
            if r.section == 1 and r.rtype == SOA:
                minimum = struct.unpack_from("!I", self.wire, r.end - 4)[0]
                return min(self.ttl(r), minimum)
        return None

    def cache_ttl(self) -> int | None:
        """How long this reply may be cached (RFC 2181 §5.2, RFC 2308 §5), or None: do not cache."""
        if self.truncated or self.rcode not in (NOERROR, NXDOMAIN):
            return None
        if self.negative:
            return self.negative_ttl()  # a negative answer without SOA is not cached (RFC 2308 §5)
        return min(self.ttl(r) for r in self.records if r.rtype != OPT)

    def ttl_limit(self) -> int | None:
        """The most any record of this reply may show: a negative answer's records (its SOA, NSEC,
        RRSIGs) last only as long as the negative answer itself (RFC 2308 §3, RFC 9077)."""
        return self.negative_ttl() if self.negative else None


def parse_reply(wire: bytes) -> UpstreamReply:
    """Index an upstream reply's records. Raises Malformed."""
    if len(wire) < 12:
        raise Malformed("reply shorter than a header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if not flags & QR or qdcount != 1:
        raise Malformed("not a reply to one question")
    pos = skip_name(wire, 12) + 4
    if pos > len(wire):
        raise Malformed("question runs past the end")
    question = wire[12:pos]
    records = []
    for section, count in enumerate((ancount, nscount, arcount)):
        for _ in range(count):
            start = pos
            pos = skip_name(wire, pos)
            if pos + 10 > len(wire):
                raise Malformed("record runs past the end")
            rtype, _, _, rdlength = struct.unpack_from("!HHIH", wire, pos)
            end = pos + 10 + rdlength
            if end > len(wire):
                raise Malformed("record data runs past the end")
            records.append(Record(section, start, end, rtype, pos + 4))
            pos = end
    return UpstreamReply(wire, qid, flags, question, tuple(records))


def same_question(a: bytes, b: bytes) -> bool:
    """Question sections equal but for the letter case of the name."""
    return len(a) == len(b) and a.lower() == b.lower() and a[-4:] == b[-4:]


def upstream_query(q: Query, qid: int | None = None, payload: int = 1232, edns: bool = True) -> bytes:
    """The query sent upstream: a fresh ID, RD, the client's AD, CD and DO, and EDNS unless
    `edns` is off (the retry to an upstream that does not know EDNS, RFC 6891 §7).

    AD in a query asks for AD in the reply (RFC 6840 §5.7): a validating upstream sets it only
    then (or for DO), so the client's AD goes up as it came, and is part of the cache key.
    """
    qid = secrets.randbits(16) if qid is None else qid
    flags = RD | (q.flags & (AD | CD))
    question = q.data[12 : q.question_end]
    if not edns:
        return _HEADER.pack(qid, flags, 1, 0, 0, 0) + question
    do = q.edns is not None and q.edns.do
    return _HEADER.pack(qid, flags, 1, 0, 0, 1) + question + opt_wire(payload, do, 0)


def for_client(
    reply: UpstreamReply,
    q: Query,
    *,
    server_payload: int,
    age: int = 0,
    cap: int | None = None,
    stale_ttl: int | None = None,
    nsid: bytes = b"",
) -> bytes:
    """The reply as this client must get it: its ID, its question, this hop's flags and OPT, and
    TTLs no longer than `cap`, less `age` (or all `stale_ttl` for a stale answer, RFC 8767 §4).
    A client asking for NSID is told `nsid`: this server is the one it asked."""
    wire = bytearray(reply.wire)
    for r in reply.records:
        if r.rtype == OPT:
            continue
        if stale_ttl is not None:
            struct.pack_into("!I", wire, r.ttl_offset, stale_ttl)
        elif age or cap is not None:
            ttl = struct.unpack_from("!I", wire, r.ttl_offset)[0]
            if cap is not None:
                ttl = min(ttl, cap)
            struct.pack_into("!I", wire, r.ttl_offset, max(0, ttl - age))
    opt = reply.opt
    arcount = _HEADER.unpack_from(wire)[5]
    if opt is not None:
        if q.edns is None:  # a client without EDNS must not get an OPT record (RFC 6891 §7)
            del wire[opt.start : opt.end]
            arcount -= 1
        else:
            # EDNS is hop by hop: our payload, not the upstream's, and the client's own DO (RFC 3225 §3).
            struct.pack_into("!H", wire, opt.start + 3, server_payload)
            ext_flags = struct.unpack_from("!H", wire, opt.ttl_offset + 2)[0]
            ext_flags = ext_flags | _DO if q.edns.do else ext_flags & ~_DO
            struct.pack_into("!H", wire, opt.ttl_offset + 2, ext_flags)
            if q.edns.nsid:  # ours, in place of any the upstream sent: one NSID per reply (RFC 5001 §2.3)
                start = opt.ttl_offset + 6
                data = _without_option(bytes(wire[start : opt.end]), NSID) + struct.pack("!HH", NSID, len(nsid)) + nsid
                struct.pack_into("!H", wire, opt.ttl_offset + 4, len(data))
                wire[start : opt.end] = data
    elif q.edns is not None:
        wire += opt_wire(server_payload, q.edns.do, 0, nsid if q.edns.nsid else None)
        arcount += 1
    # The upstream's rcode and flags, except those that describe this hop.
    flags = (reply.flags & ~(AA | RD | CD)) | (q.flags & (RD | CD)) | RA
    _HEADER.pack_into(wire, 0, q.id, flags, 1, *_HEADER.unpack_from(wire)[3:5], arcount)
    question = q.data[12 : q.question_end]
    wire[12 : 12 + len(question)] = question
    return bytes(wire)


def fit_for_udp(wire: bytes, limit: int) -> bytes:
    """A reply over the client's UDP limit, cut at whole RRsets with TC (dnspython does the cutting)."""
    if len(wire) <= limit:
        return wire
    try:
        msg = dns.message.from_wire(wire)
        return msg.to_wire(max_size=limit, prefer_truncation=True)
    except (dns.exception.DNSException, ValueError):
        flags = struct.unpack_from("!H", wire, 2)[0] | TC
        return wire[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + wire[12 : skip_name(wire, 12) + 4]


def _without_option(options: bytes, code: int) -> bytes:
    """An OPT record's data without the options of one code (one running past the end goes too)."""
    kept, pos = [], 0
    while pos + 4 <= len(options):
        found, length = struct.unpack_from("!HH", options, pos)
        if found != code and pos + 4 + length <= len(options):
            kept.append(options[pos : pos + 4 + length])
        pos += 4 + length
    return b"".join(kept)
