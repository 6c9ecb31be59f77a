"""relay.py: upstream replies indexed and handed to the client with byte surgery: ID, question case,
this hop's flags, the OPT record, TTLs (age, cap, stale); the upstream query; cutting for UDP."""

from __future__ import annotations

import struct
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from internal_dns.forward.relay import fit_for_udp, for_client, parse_reply, same_question, upstream_query
from internal_dns.records import NOERROR, NXDOMAIN, OPT, SERVFAIL
from internal_dns.wire import AD, CD, QR, RA, RD, TC, Malformed, Query, opt_wire, parse_query

SOA_TEXT = "ns.example.com. admin.example.com. 1 7200 900 1209600 {minimum}"


def client_query(
    name: str = "WWW.Example.com", rdtype: str = "A", qid: int = 0x1111, flags: int | None = None, **kwargs: Any
) -> Query:
    msg = dns.message.make_query(name, rdtype, **kwargs)
    msg.id = qid
    if flags is not None:
        msg.flags = flags
    q = parse_query(msg.to_wire())
    assert q is not None
    return q


def upstream(
    name: str = "www.example.com",
    rdtype: str = "A",
    *,
    answer: list[tuple[str, int, str, str]] | None = None,
    authority: list[tuple[str, int, str, str]] | None = None,
    additional: list[tuple[str, int, str, str]] | None = None,
    rcode: int = NOERROR,
    edns: bool = True,
    do: bool = False,
    flags: int = dns.flags.RD | dns.flags.RA,
    qid: int = 0x7777,
) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=4096, want_dnssec=do)
    msg = dns.message.make_response(query)
    msg.id = qid
    msg.flags = dns.flags.QR | flags
    msg.set_rcode(dns.rcode.Rcode(rcode))
    for section, records in ((msg.answer, answer), (msg.authority, authority), (msg.additional, additional)):
        for owner, ttl, rtype, text in records or ():
            section.append(dns.rrset.from_text(owner + ".", ttl, "IN", rtype, text))
    return msg.to_wire()


ADDRESS = [("www.example.com", 300, "A", "192.0.2.1")]


def ttls(wire: bytes) -> list[int]:
    msg = dns.message.from_wire(wire)
    return [rrset.ttl for section in (msg.answer, msg.authority, msg.additional) for rrset in section]


# --- parse_reply -----------------------------------------------------------------------------------


def test_parse_reply_indexes_every_record() -> None:
    wire = upstream(
        answer=[("www.example.com", 300, "A", "192.0.2.1"), ("www.example.com", 300, "A", "192.0.2.2")],
        authority=[("example.com", 600, "NS", "ns.example.com.")],
        additional=[("ns.example.com", 900, "A", "192.0.2.53")],
    )
    reply = parse_reply(wire)
    assert reply.id == 0x7777 and reply.rcode == NOERROR and not reply.truncated
    assert reply.question == wire[12 : 12 + 17 + 4]
    assert [(r.section, r.rtype) for r in reply.records] == [(0, 1), (0, 1), (1, 2), (2, 1), (2, OPT)]
    assert [reply.ttl(r) for r in reply.records[:4]] == [300, 300, 600, 900]
    assert reply.records[-1].end == len(wire)
    assert reply.opt is reply.records[-1]
    assert not reply.negative and reply.cache_ttl() == 300 and reply.ttl_limit() is None


def test_an_nxdomain_lasts_as_long_as_its_soa_allows() -> None:
    reply = parse_reply(upstream(rcode=NXDOMAIN, authority=[("example.com", 900, "SOA", SOA_TEXT.format(minimum=60))]))
    assert reply.negative and reply.negative_ttl() == 60 and reply.cache_ttl() == 60 and reply.ttl_limit() == 60
    reply = parse_reply(upstream(rcode=NXDOMAIN, authority=[("example.com", 30, "SOA", SOA_TEXT.format(minimum=60))]))
    assert reply.cache_ttl() == 30


def test_nodata_is_negative_too() -> None:
    reply = parse_reply(upstream(authority=[("example.com", 900, "SOA", SOA_TEXT.format(minimum=120))]))
    assert reply.negative and reply.cache_ttl() == 120


def test_a_negative_answer_without_soa_is_not_cached() -> None:
    reply = parse_reply(upstream(rcode=NXDOMAIN))
    assert reply.negative and reply.negative_ttl() is None and reply.cache_ttl() is None


def test_the_smallest_ttl_bounds_a_positive_answer_and_opt_is_no_ttl() -> None:
    reply = parse_reply(
        upstream(
            answer=[("www.example.com", 300, "CNAME", "web.example.com."), ("web.example.com", 40, "A", "192.0.2.9")],
            additional=[("ns.example.com", 3600, "A", "192.0.2.53")],
            do=True,  # the OPT's TTL field holds 0x8000
        )
    )
    assert reply.cache_ttl() == 40


@pytest.mark.parametrize("rcode", [SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR])
def test_errors_are_not_cached(rcode: int) -> None:
    assert parse_reply(upstream(rcode=rcode, answer=ADDRESS)).cache_ttl() is None


def test_truncated_replies_are_not_cached() -> None:
    reply = parse_reply(upstream(answer=ADDRESS, flags=dns.flags.TC | dns.flags.RA))
    assert reply.truncated and reply.cache_ttl() is None


def test_extended_rcodes_are_read_from_the_header_only() -> None:
    assert parse_reply(upstream(rcode=NXDOMAIN)).rcode == NXDOMAIN


MALFORMED_REPLIES = {
    "short": b"\x00" * 11,
    "a query": upstream()[:2] + b"\x00\x00" + upstream()[4:],
    "two questions": upstream()[:4] + b"\x00\x02" + upstream()[6:],
    "record past the end": upstream(answer=ADDRESS)[:-15],
    "question past the end": upstream()[:20],
    "name past the end": upstream()[:2] + b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x03www",
    "bad label type": upstream()[:12] + b"\x40",
}


@pytest.mark.parametrize("wire", MALFORMED_REPLIES.values(), ids=MALFORMED_REPLIES.keys())
def test_parse_reply_refuses_what_is_no_reply(wire: bytes) -> None:
    with pytest.raises(Malformed):
        parse_reply(wire)


def test_same_question_ignores_only_the_names_case() -> None:
    a = client_query("WWW.Example.COM").data[12:]
    b = client_query("www.example.com").data[12:]
    assert same_question(a, b)
    assert not same_question(a, client_query("www.example.net").data[12:])
    assert not same_question(a, client_query("www.example.com", "AAAA").data[12:])
    assert not same_question(a, client_query("www.example.co").data[12:])
    # type 65 is b"\x00A" and type 97 b"\x00a": type bytes are numbers, never case
    assert not same_question(b"\x01x\x00\x00\x41\x00\x01", b"\x01x\x00\x00\x61\x00\x01")


# --- upstream_query ------------------------------------------------------------------------------


def test_upstream_query_keeps_the_question_bytes_and_sets_rd() -> None:
    q = client_query("WWW.Example.com", flags=0)
    wire = upstream_query(q, qid=0x4321)
    assert struct.unpack_from("!HHHHHH", wire) == (0x4321, RD, 1, 0, 0, 1)
    assert wire[12 : q.question_end] == q.data[12 : q.question_end]
    assert wire[q.question_end :] == opt_wire(1232, False, 0)


def test_upstream_query_passes_ad_cd_and_do_only() -> None:
    q = client_query(flags=dns.flags.RD | dns.flags.AD | dns.flags.CD | dns.flags.AA | dns.flags.TC, use_edns=0, want_dnssec=True)
    wire = upstream_query(q, qid=1, payload=1400)
    assert struct.unpack_from("!H", wire, 2)[0] == RD | AD | CD
    assert wire.endswith(opt_wire(1400, True, 0))


def test_upstream_query_without_edns() -> None:
    q = client_query(use_edns=0, want_dnssec=True)
    wire = upstream_query(q, qid=1, edns=False)
    assert struct.unpack_from("!HHHHHH", wire) == (1, RD, 1, 0, 0, 0)
    assert len(wire) == q.question_end


def test_upstream_query_draws_an_id() -> None:
    q = client_query()
    ids = {struct.unpack_from("!H", upstream_query(q))[0] for _ in range(32)}
    assert len(ids) > 1


# --- for_client -----------------------------------------------------------------------------------


def test_the_clients_id_and_question_spelling() -> None:
    q = client_query("WWW.Example.com", qid=0xABCD, use_edns=0)
    wire = for_client(parse_reply(upstream(answer=ADDRESS)), q, server_payload=1232)
    assert wire[:2] == b"\xab\xcd"
    assert wire[12 : q.question_end] == q.data[12 : q.question_end]
    msg = dns.message.from_wire(wire)
    assert msg.question[0].name.to_text() == "WWW.Example.com."
    # the upstream's owner is a pointer into the question, so it reads in the client's spelling too
    assert msg.answer[0].name.to_text() == "WWW.Example.com."
    assert [r.address for r in msg.answer[0]] == ["192.0.2.1"]


def test_hop_flags_are_this_servers_and_the_rest_the_upstreams() -> None:
    upstream_flags = dns.flags.AA | dns.flags.RD | dns.flags.AD | dns.flags.CD
    up = parse_reply(upstream(answer=ADDRESS, rcode=NXDOMAIN, flags=upstream_flags))
    q = client_query(flags=0, use_edns=0)
    flags = struct.unpack_from("!H", for_client(up, q, server_payload=1232), 2)[0]
    assert flags == QR | AD | RA | NXDOMAIN  # never AA; RD and CD as the client asked; RA always
    q = client_query(flags=dns.flags.RD | dns.flags.CD, use_edns=0)
    flags = struct.unpack_from("!H", for_client(up, q, server_payload=1232), 2)[0]
    assert flags == QR | AD | RA | RD | CD | NXDOMAIN


def test_tc_of_the_upstream_is_kept() -> None:
    up = parse_reply(upstream(flags=dns.flags.TC | dns.flags.RA))
    flags = struct.unpack_from("!H", for_client(up, client_query(use_edns=0), server_payload=1232), 2)[0]
    assert flags & TC


def test_the_opt_record_carries_our_payload_and_the_clients_do() -> None:
    up = parse_reply(upstream(answer=ADDRESS, do=False))
    msg = dns.message.from_wire(for_client(up, client_query(use_edns=0, want_dnssec=True), server_payload=1400))
    assert msg.edns == 0 and msg.payload == 1400 and msg.ednsflags & dns.flags.DO
    up = parse_reply(upstream(answer=ADDRESS, do=True))
    msg = dns.message.from_wire(for_client(up, client_query(use_edns=0), server_payload=1232))
    assert msg.edns == 0 and msg.payload == 1232 and not msg.ednsflags & dns.flags.DO


def test_a_client_without_edns_gets_no_opt() -> None:
    wire = upstream(answer=ADDRESS, additional=[("ns.example.com", 900, "A", "192.0.2.53")])
    out = for_client(parse_reply(wire), client_query(use_edns=False), server_payload=1232)
    assert len(out) == len(wire) - 11
    assert struct.unpack_from("!HHH", out, 6) == (1, 0, 1)
    msg = dns.message.from_wire(out)
    assert msg.edns == -1 and len(msg.additional) == 1


def test_an_edns_client_gets_an_opt_the_upstream_did_not_send() -> None:
    wire = upstream(answer=ADDRESS, edns=False)
    out = for_client(parse_reply(wire), client_query(use_edns=0, want_dnssec=True), server_payload=1232)
    assert out == out[: len(wire)] + opt_wire(1232, True, 0)
    assert struct.unpack_from("!H", out, 10)[0] == 1


def test_edns_options_of_the_upstream_are_kept() -> None:
    msg = dns.message.from_wire(upstream(answer=ADDRESS))
    msg.use_edns(0, payload=4096, options=[dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"keep")])
    out = for_client(parse_reply(msg.to_wire()), client_query(use_edns=0), server_payload=1232)
    options = dns.message.from_wire(out).options
    assert [(o.otype, o.data) for o in options] == [(65001, b"keep")]


def test_ttls_less_age_never_below_zero() -> None:
    up = parse_reply(upstream(answer=ADDRESS, authority=[("example.com", 20, "NS", "ns.example.com.")], do=True))
    out = for_client(up, client_query(use_edns=0, want_dnssec=True), server_payload=1232, age=25)
    assert ttls(out) == [275, 0]
    assert dns.message.from_wire(out).ednsflags & dns.flags.DO  # the OPT's TTL field is no TTL


def test_ttls_capped_then_aged() -> None:
    up = parse_reply(upstream(answer=ADDRESS, authority=[("example.com", 20, "NS", "ns.example.com.")]))
    out = for_client(up, client_query(use_edns=0), server_payload=1232, age=5, cap=100)
    assert ttls(out) == [95, 15]
    assert ttls(for_client(up, client_query(), server_payload=1232, cap=10)) == [10, 10]
    assert ttls(for_client(up, client_query(), server_payload=1232)) == [300, 20]


def test_a_stale_answer_has_every_ttl_set() -> None:
    up = parse_reply(upstream(answer=ADDRESS, authority=[("example.com", 20, "NS", "ns.example.com.")]))
    out = for_client(up, client_query(use_edns=0), server_payload=1232, age=1000, cap=5, stale_ttl=30)
    assert ttls(out) == [30, 30]


def test_a_negative_answers_records_last_no_longer_than_it() -> None:
    up = parse_reply(upstream(rcode=NXDOMAIN, authority=[("example.com", 3600, "SOA", SOA_TEXT.format(minimum=60))]))
    out = for_client(up, client_query(use_edns=0), server_payload=1232, cap=up.ttl_limit())
    assert ttls(out) == [60]
    assert dns.message.from_wire(out).rcode() == dns.rcode.NXDOMAIN


def test_the_upstream_bytes_are_not_changed_in_place() -> None:
    wire = upstream(answer=ADDRESS)
    up = parse_reply(wire)
    for_client(up, client_query(use_edns=0), server_payload=1232, age=10)
    assert up.wire == wire and up.ttl(up.records[0]) == 300


# --- fit_for_udp ----------------------------------------------------------------------------------


def test_a_reply_that_fits_is_untouched() -> None:
    wire = upstream(answer=ADDRESS)
    assert fit_for_udp(wire, len(wire)) is wire


def test_a_reply_too_big_is_cut_at_whole_rrsets_with_tc_and_keeps_opt() -> None:
    many = [("www.example.com", 300, "A", f"192.0.2.{i}") for i in range(1, 21)]
    txt = [("www.example.com", 300, "TXT", '"' + "x" * 200 + '"')]
    wire = upstream("www.example.com", "ANY", answer=many + txt)
    assert len(wire) > 512
    cut = fit_for_udp(wire, 512)
    assert len(cut) <= 512
    msg = dns.message.from_wire(cut)
    assert msg.flags & dns.flags.TC
    assert [(r.rdtype, len(r)) for r in msg.answer] == [(dns.rdatatype.A, 20)]
    assert msg.edns == 0 and msg.id == 0x7777


def test_the_client_reply_cut_for_udp_keeps_its_id_spelling_and_payload() -> None:
    many = [("www.example.com", 300, "AAAA", f"2001:db8::{i:x}") for i in range(1, 11)]
    txt = [("www.example.com", 300, "TXT", '"' + "x" * 250 + '"')] * 2
    q = client_query("WWW.Example.COM", "ANY", qid=0x2222, use_edns=0, payload=512)
    wire = for_client(parse_reply(upstream("www.example.com", "ANY", answer=many + txt)), q, server_payload=1232)
    msg = dns.message.from_wire(fit_for_udp(wire, q.udp_limit()))
    assert msg.id == 0x2222 and msg.flags & dns.flags.TC and msg.flags & dns.flags.RA
    assert msg.question[0].name.to_text() == "WWW.Example.COM."
    assert [(r.rdtype, len(r)) for r in msg.answer] == [(dns.rdatatype.AAAA, 10)]
    assert msg.payload == 1232


def test_an_rrset_larger_than_the_limit_leaves_an_empty_answer() -> None:
    many = [("www.example.com", 300, "AAAA", f"2001:db8::{i:x}") for i in range(1, 41)]
    cut = fit_for_udp(upstream("www.example.com", "AAAA", answer=many), 512)
    msg = dns.message.from_wire(cut)
    assert msg.flags & dns.flags.TC and msg.answer == [] and len(cut) <= 512


def test_an_undecodable_big_reply_becomes_a_bare_tc_reply() -> None:
    wire = upstream(answer=[("www.example.com", 300, "TXT", '"' + "y" * 250 + '"')] * 3, edns=False)
    bad_a = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 5) + b"\x01\x02\x03\x04\x05"  # an A of 5 bytes
    broken = wire[:6] + struct.pack("!H", 4) + wire[8:] + bad_a
    assert len(broken) > 512
    parse_reply(broken)  # the relay's own index takes it; dnspython does not
    cut = fit_for_udp(broken, 512)
    assert struct.unpack_from("!HHHHHH", cut) == (0x7777, struct.unpack_from("!H", broken, 2)[0] | TC, 1, 0, 0, 0)
    assert cut[12:] == broken[12 : 12 + 17 + 4]
