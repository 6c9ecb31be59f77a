"""wire.py: query parsing (header, one question, OPT), malformed queries, and reply rendering
(owner pointers into the question, flags, OPT last, whole-RRset truncation, rotation)."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from internal_dns.records import (
    AAAA,
    BADVERS,
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    SOA,
    TXT,
    Answer,
    RRset,
    soa_rdata,
    txt_rdata,
)
from internal_dns.wire import (
    AA,
    CD,
    QR,
    RA,
    RD,
    TC,
    Edns,
    Malformed,
    Query,
    header_reply,
    opcode_of,
    opt_wire,
    parse_query,
    render,
    skip_name,
)

ADDRESSES = tuple(IPv6Address(f"fdaa:0:18::{i:x}").packed for i in range(1, 4))


def wire_query(name: str = "my-app.internal", rdtype: str = "AAAA", qid: int = 0x1234, **kwargs: Any) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kwargs)
    msg.id = qid
    return msg.to_wire()


def parsed(name: str = "my-app.internal", rdtype: str = "AAAA", **kwargs: Any) -> Query:
    q = parse_query(wire_query(name, rdtype, **kwargs))
    assert q is not None
    return q


def header(qid: int = 7, flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x06my-app\x08internal\x00" + struct.pack("!HH", AAAA, 1)
OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


def opt_with_rdata(rdata: bytes, rdlength: int | None = None) -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(rdata) if rdlength is None else rdlength) + rdata


def soa(skip: int, serial: int = 42, ttl: int = 5) -> RRset:
    return RRset(skip, SOA, ttl, (soa_rdata("internal", serial, ttl),))


def addresses(rotates: bool = True, ttl: int = 5) -> RRset:
    return RRset(0, AAAA, ttl, ADDRESSES, rotates)


def do_render(q: Query, answer: Answer, limit: int = 512, rotation: int = 0, ra: bool = False) -> bytes:
    return render(q, answer, recursion_available=ra, limit=limit, server_payload=1232, rotation=rotation)


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_reads_header_and_question_and_lowercases_labels() -> None:
    data = wire_query("My-App.INTERNAL", "AAAA", qid=0xBEEF)
    q = parse_query(data)
    assert q is not None
    assert q.id == 0xBEEF
    assert q.flags & RD  # dnspython sets RD
    assert q.opcode == 0
    assert q.labels == ("my-app", "internal")
    assert q.name == "my-app.internal."
    assert q.label_offsets == (12, 19)
    assert q.question_end == len(data) == 12 + len(QUESTION)
    assert (q.qtype, q.qclass) == (AAAA, 1)
    assert q.edns is None
    assert q.udp_limit() == 512
    assert q.data is data


def test_owner_offset_points_at_each_label_and_then_at_the_root() -> None:
    q = parsed("a.bc.internal")
    assert [q.owner_offset(i) for i in range(3)] == [12, 14, 17]
    assert q.data[q.owner_offset(3)] == 0  # the root label ending the name
    assert q.owner_offset(3) == q.question_end - 5


def test_binary_labels_are_kept_and_only_ascii_is_lowercased() -> None:
    name = b"\x05top1\n\x03A.B\x02\xc9Z\x08internal\x00"
    q = parse_query(header() + name + struct.pack("!HH", AAAA, 1))
    assert q is not None
    assert q.labels == ("top1\n", "a.b", "\xc9z", "internal")


def test_the_root_name_parses_with_no_labels() -> None:
    q = parse_query(header() + b"\x00" + struct.pack("!HH", 2, 1))
    assert q is not None
    assert q.labels == () and q.name == "." and q.qtype == 2


def test_edns_payload_version_and_do() -> None:
    q = parsed(use_edns=0, payload=4096, want_dnssec=True)
    assert q.edns == Edns(4096, 0, True)
    assert q.udp_limit() == 4096
    q = parsed(use_edns=1, payload=1400)
    assert q.edns == Edns(1400, 1, False)


@pytest.mark.parametrize("payload", [0, 1, 511])
def test_edns_payload_below_512_counts_as_512(payload: int) -> None:
    q = parsed(use_edns=0, payload=payload)
    assert q.edns is not None and q.edns.payload == 512 and q.udp_limit() == 512


def test_unknown_edns_options_are_accepted() -> None:
    option = struct.pack("!HH", 65001, 3) + b"abc"
    q = parse_query(header(ar=1) + QUESTION + opt_with_rdata(option + struct.pack("!HH", 10, 8) + b"12345678"))
    assert q is not None and q.edns == Edns(1232, 0, False)


def test_records_in_answer_and_authority_are_skipped() -> None:
    # IXFR carries an SOA in authority; a query with records is still a query.
    record = b"\xc0\x0c" + struct.pack("!HHIH", SOA, 1, 0, 4) + b"\x00\x00\x00\x01"
    q = parse_query(header(an=1, ns=1, ar=1) + QUESTION + record + record + OPT)
    assert q is not None and q.labels == ("my-app", "internal") and q.edns is not None


@pytest.mark.parametrize("data", [b"", b"\x00" * 11])
def test_shorter_than_a_header_is_not_worth_a_reply(data: bytes) -> None:
    assert parse_query(data) is None


def test_a_reply_is_not_worth_a_reply() -> None:
    assert parse_query(header(flags=QR) + QUESTION) is None
    assert parse_query(header(flags=QR, qd=0)) is None  # QR wins over a bad count


def test_a_name_of_255_bytes_parses() -> None:
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]  # 64 * 3 + 62 + root = 255
    name = b"".join(bytes((len(x),)) + x for x in labels) + b"\x00"
    assert len(name) == 255
    q = parse_query(header() + name + struct.pack("!HH", AAAA, 1))
    assert q is not None and len(q.labels) == 4


MALFORMED = {
    "no question": header(qd=0),
    "two questions": header(qd=2) + QUESTION + QUESTION,
    "name past the end": header() + b"\x06my-app\x08inter",
    "no root label": header() + b"\x06my-app",
    "compression in the question": header() + b"\xc0\x0c" + struct.pack("!HH", AAAA, 1),
    "label type 0x40": header() + b"\x41" + b"a" * 65 + b"\x00" + struct.pack("!HH", AAAA, 1),
    "name of 256 bytes": header()
    + b"".join(bytes((63,)) + x * 63 for x in (b"a", b"b", b"c"))
    + b"\x3e"
    + b"d" * 62
    + b"\x00"
    + struct.pack("!HH", AAAA, 1),
    "type and class cut": header() + QUESTION[:-1],
    "trailing bytes": header() + QUESTION + b"\x00",
    "opt promised, absent": header(ar=1) + QUESTION,
    "two opt records": header(ar=2) + QUESTION + OPT + OPT,
    "opt owner not root": header(ar=1) + QUESTION + b"\xc0\x0c" + OPT[1:],
    "opt rdata past the end": header(ar=1) + QUESTION + opt_with_rdata(b"", rdlength=4),
    "truncated option header": header(ar=1) + QUESTION + opt_with_rdata(b"\x00\x0a"),
    "option past the opt record": header(ar=1) + QUESTION + opt_with_rdata(struct.pack("!HH", 10, 9) + b"12345678"),
    "record header cut": header(an=1) + QUESTION + b"\xc0\x0c\x00\x01",
    "bad label type in a record": header(an=1) + QUESTION + b"\x80" + struct.pack("!HHIH", 1, 1, 0, 0),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_queries_raise(data: bytes) -> None:
    with pytest.raises(Malformed):
        parse_query(data)


# --- names ---------------------------------------------------------------------------------------------

# (bytes before the name, the name and what follows it, where the name ends with pointers allowed
# and without: None for Malformed)
NAMES = {
    "root": (b"", b"\x00\x00\x01", 1, 1),
    "two labels": (b"", b"\x06my-app\x08internal\x00\x00\x1c", 17, 17),
    "a label of 63": (b"", b"\x3f" + b"a" * 63 + b"\x00", 65, 65),
    "a pointer": (b"", b"\xc0\x0c\x00\x01", 2, None),
    "a label, then a pointer": (b"", b"\x03www\xc0\x0c", 6, None),
    "a pointer's second byte missing": (b"", b"\x03www\xc0", None, None),
    "a pointer with the top bits all set": (b"", b"\xff\xff", 2, None),
    "label type 0x40": (b"", b"\x40" + b"a" * 64 + b"\x00", None, None),
    "label type 0x80": (b"", b"\x80\x00", None, None),
    "label type 0xbf": (b"", b"\xbf\x00", None, None),
    "no root label": (b"", b"\x06my-app", None, None),
    "a label past the end": (b"", b"\x06my-app\x3fshort", None, None),
    "nothing at all": (b"", b"", None, None),
    "after a header": (b"\x00" * 12, b"\x01a\x00", 3, 3),
}


@pytest.mark.parametrize(("before", "name", "with_pointers", "without"), NAMES.values(), ids=NAMES.keys())
def test_skip_name_finds_the_end_or_refuses(before: bytes, name: bytes, with_pointers: int | None, without: int | None) -> None:
    data = before + name
    for pointers, expected in ((True, with_pointers), (False, without)):
        if expected is None:
            with pytest.raises(Malformed):
                skip_name(data, len(before), pointers=pointers)
        else:
            assert skip_name(data, len(before), pointers=pointers) == len(before) + expected


def test_skip_name_gives_where_each_label_starts() -> None:
    offsets: list[int] = []
    assert skip_name(b"\x00\x03www\x06my-app\x00", 1, offsets=offsets) == 13
    assert offsets == [1, 5]
    offsets.clear()
    assert skip_name(b"\x03www\xc0\x0c", 0, offsets=offsets) == 6
    assert offsets == [0]  # a pointer is no label of this name


def test_opcode_of_reads_the_header() -> None:
    data = wire_query()
    assert opcode_of(data) == 0
    msg = dns.message.make_query("x.internal", "A")
    msg.set_opcode(dns.opcode.NOTIFY)
    assert opcode_of(msg.to_wire()) == 4
    assert opcode_of(header(flags=15 << 11)) == 15


def test_header_reply_is_a_bare_header_keeping_id_opcode_rd_and_cd() -> None:
    data = header(qid=0xABCD, flags=(5 << 11) | RD | CD | AA | TC | 0x0020, qd=1, ar=1) + QUESTION + OPT
    reply = header_reply(data, FORMERR)
    assert len(reply) == 12
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply)
    assert qid == 0xABCD
    assert flags == QR | (5 << 11) | RD | CD | FORMERR
    assert (qd, an, ns, ar) == (0, 0, 0, 0)
    assert struct.unpack("!H", header_reply(header(flags=0), NOTIMP)[2:4])[0] == QR | NOTIMP


def test_opt_wire_carries_payload_extended_rcode_and_do() -> None:
    assert opt_wire(1232, False, 0) == b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    assert opt_wire(4096, True, BADVERS) == b"\x00\x00\x29\x10\x00\x01\x00\x80\x00\x00\x00"


# --- rendering -----------------------------------------------------------------------------------


def test_render_an_answer_decodes_and_keeps_the_question_bytes() -> None:
    data = wire_query("My-App.Internal", "AAAA", qid=0x4242)
    q = parse_query(data)
    assert q is not None
    reply = do_render(q, Answer(NOERROR, answer=(addresses(),)))
    assert reply[:2] == data[:2]
    assert reply[12 : q.question_end] == data[12 : q.question_end]
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x4242
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA and msg.flags & dns.flags.RD
    assert not msg.flags & (dns.flags.RA | dns.flags.TC)
    (rrset,) = msg.answer
    assert rrset.name.to_text() == "My-App.Internal."  # the querier's letter case
    assert rrset.ttl == 5
    assert [r.address for r in rrset] == ["fdaa:0:18::1", "fdaa:0:18::2", "fdaa:0:18::3"]
    assert msg.edns == -1


def test_owners_are_pointers_into_the_question() -> None:
    q = parsed("My-App.Internal")
    reply = do_render(q, Answer(NOERROR, answer=(RRset(0, AAAA, 5, ADDRESSES[:1]),), authority=(soa(1),)))
    body = reply[q.question_end :]
    assert body[:2] == b"\xc0\x0c"  # the whole question name
    assert body[2:4] == struct.pack("!H", AAAA)
    soa_at = 2 + 10 + 16
    assert body[soa_at : soa_at + 2] == struct.pack("!H", 0xC000 | 19)  # "Internal" inside it
    msg = dns.message.from_wire(reply)
    assert msg.authority[0].name.to_text() == "Internal."


def test_nxdomain_is_authoritative_with_the_soa_in_authority() -> None:
    q = parsed("Nope.Internal")
    msg = dns.message.from_wire(do_render(q, Answer(NXDOMAIN, authority=(soa(1, serial=77),))))
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.flags & dns.flags.AA
    assert msg.answer == []
    (rrset,) = msg.authority
    assert rrset.name.to_text() == "Internal."
    assert rrset[0].serial == 77 and rrset[0].minimum == 5
    assert rrset[0].mname.to_text() == "internal." and rrset[0].rname.to_text() == "hostmaster.internal."


@pytest.mark.parametrize("rcode", [SERVFAIL, REFUSED, NOTIMP, FORMERR])
def test_errors_are_never_aa(rcode: int) -> None:
    msg = dns.message.from_wire(do_render(parsed(), Answer(rcode)))
    assert msg.rcode() == rcode
    assert not msg.flags & dns.flags.AA


def test_not_authoritative_answers_lack_aa() -> None:
    msg = dns.message.from_wire(do_render(parsed(), Answer(NOERROR, authoritative=False)))
    assert not msg.flags & dns.flags.AA


def test_ra_and_copied_rd_cd() -> None:
    q = parse_query(header(flags=CD) + QUESTION)
    assert q is not None
    _, flags = struct.unpack_from("!HH", do_render(q, Answer(NOERROR), ra=True))
    assert flags == QR | AA | RA | CD
    q = parse_query(header(flags=RD | AA | TC | 0x0020) + QUESTION)  # AA, TC, AD of a query are not echoed
    assert q is not None
    _, flags = struct.unpack_from("!HH", do_render(q, Answer(NOERROR)))
    assert flags == QR | AA | RD


def test_opt_ends_the_reply_with_the_server_payload_and_the_do_bit() -> None:
    q = parsed(use_edns=0, payload=4096, want_dnssec=True)
    reply = do_render(q, Answer(NOERROR, answer=(addresses(),)), limit=4096)
    assert reply.endswith(opt_wire(1232, True, 0))
    assert struct.unpack_from("!H", reply, 10)[0] == 1
    msg = dns.message.from_wire(reply)
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    q = parsed(use_edns=0)
    assert do_render(q, Answer(NOERROR)).endswith(opt_wire(1232, False, 0))


def test_badvers_goes_into_the_opt_record() -> None:
    q = parsed(use_edns=1)
    reply = do_render(q, Answer(BADVERS, authoritative=False))
    assert struct.unpack_from("!H", reply, 2)[0] & 0xF == 0
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.BADVERS


def test_rotation_turns_a_rotating_set_only() -> None:
    q = parsed()

    def first(rotation: int, rotates: bool) -> list[str]:
        msg = dns.message.from_wire(do_render(q, Answer(NOERROR, answer=(addresses(rotates),)), rotation=rotation))
        return [r.address for r in msg.answer[0]]

    assert first(1, True) == ["fdaa:0:18::2", "fdaa:0:18::3", "fdaa:0:18::1"]
    assert first(5, True) == ["fdaa:0:18::3", "fdaa:0:18::1", "fdaa:0:18::2"]
    assert first(3, True) == first(0, True)
    assert first(1, False) == ["fdaa:0:18::1", "fdaa:0:18::2", "fdaa:0:18::3"]


def big_txt(size: int) -> RRset:
    return RRset(0, TXT, 5, (txt_rdata("x" * size),))


def test_a_reply_exactly_at_the_limit_is_whole_and_one_byte_less_is_cut() -> None:
    q = parsed("_apps.internal", "TXT")
    answer = Answer(NOERROR, answer=(big_txt(100),), authority=())
    whole = do_render(q, answer, limit=4096)
    assert do_render(q, answer, limit=len(whole)) == whole
    cut = do_render(q, answer, limit=len(whole) - 1)
    assert len(cut) == q.question_end
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", cut)
    assert flags & TC and flags & AA and (qd, an, ns, ar) == (1, 0, 0, 0)


def test_truncation_drops_whole_rrsets_from_the_end_and_keeps_opt() -> None:
    q = parsed("_apps.internal", "ANY", use_edns=0, payload=512)
    small, large = RRset(0, AAAA, 5, ADDRESSES), big_txt(600)
    reply = do_render(q, Answer(NOERROR, answer=(small, large), authority=(soa(1),)), limit=q.udp_limit())
    assert len(reply) <= 512
    msg = dns.message.from_wire(reply)
    assert msg.flags & dns.flags.TC
    assert [rrset.rdtype for rrset in msg.answer] == [dns.rdatatype.AAAA]
    assert len(msg.answer[0]) == 3  # never part of an RRset
    assert msg.authority == []  # nothing after the first RRset that does not fit
    assert msg.edns == 0 and msg.payload == 1232
    assert struct.unpack_from("!HHHH", reply, 4) == (1, 3, 0, 1)


def test_truncation_of_a_negative_answer_drops_the_soa() -> None:
    q = parsed("nope.internal", "AAAA")
    whole = do_render(q, Answer(NXDOMAIN, authority=(soa(1),)), limit=512)
    cut = do_render(q, Answer(NXDOMAIN, authority=(soa(1),)), limit=len(whole) - 1)
    msg = dns.message.from_wire(cut)
    assert msg.rcode() == dns.rcode.NXDOMAIN and msg.flags & dns.flags.TC and msg.authority == []


def test_an_rrset_that_does_not_fit_stops_even_a_smaller_one_after_it() -> None:
    q = parsed("_apps.internal", "ANY")
    answer = Answer(NOERROR, answer=(big_txt(600), RRset(0, AAAA, 5, ADDRESSES[:1])))
    msg = dns.message.from_wire(do_render(q, answer, limit=512))
    assert msg.flags & dns.flags.TC and msg.answer == []


def test_owner_at_the_root_label() -> None:
    q = parsed("a.b")
    reply = do_render(q, Answer(NOERROR, answer=(RRset(2, AAAA, 5, ADDRESSES[:1]),)))
    msg = dns.message.from_wire(reply)
    assert msg.answer[0].name.to_text() == "."
