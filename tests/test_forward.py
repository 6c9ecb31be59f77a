"""Forwarding (SPEC §7): names outside the zones relayed to upstreams on loopback, transparently.

The upstream is tests/fake_upstream.py's FakeUpstream, which records what it receives: that is how
these tests show what reaches an upstream (a fresh ID, the client's flags) and what never does
(private names, questions from sources without a view).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import dns.edns
import dns.flags
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from internal_dns.authority.reverse import PrivateReverse, served_prefix
from internal_dns.forward.upstream import Upstream, resolv_conf_upstreams
from tests.conftest import RunningServer, on_reactor
from tests.dnsclient import Reply, exchange, make_query
from tests.fake_upstream import NSID, SPOOFED, FakeUpstream, Pending
from tests.test_dig import dig

StartServer = Callable[..., RunningServer]

SOA_TEXT = "ns.example.test. hostmaster.example.test. 2026112101 3600 600 86400 60"


@pytest.fixture
def fwd(start_server: StartServer, fake: FakeUpstream) -> RunningServer:
    return start_server(upstreams=[fake.address], forward={"enabled": True})


def rrsets(reply: Reply, section: str = "answer") -> list[tuple[str, int, str, list[str]]]:
    """(owner as sent, TTL, type, rdata texts) of each RRset in a section, in wire order."""
    return [
        (rrset.name.to_text(), rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), [rd.to_text() for rd in rrset])
        for rrset in getattr(reply.msg, section)
    ]


def flags_of(reply: Reply) -> set[str]:
    return set(dns.flags.to_text(reply.msg.flags).split())


# --- the relay is transparent --------------------------------------------------------------------


def test_answer_relayed_with_this_hops_flags(fwd: RunningServer, fake: FakeUpstream) -> None:
    direct = Reply.decode(exchange(make_query("www.example.test", "A").to_wire(), fake.port))
    assert direct.flag("AA")  # the upstream is authoritative for example.test ...
    reply = fwd.ask("www.example.test", "A")
    assert reply.rcode_text == "NOERROR"
    assert flags_of(reply) == {"QR", "RD", "RA"}  # ... but a forwarded answer never is
    assert rrsets(reply) == [("www.example.test.", 300, "A", ["192.0.2.10"])]
    assert reply.msg.authority == [] and reply.msg.additional == []
    direct_query, sent = fake.queries("www.example.test.")  # the direct one, then the server's
    assert sent.rdtype == dns.rdatatype.A and sent.transport == "udp"


def test_nxdomain_relayed_with_the_soa(fwd: RunningServer) -> None:
    reply = fwd.ask("nope.example.test", "A")
    assert reply.rcode_text == "NXDOMAIN"
    assert flags_of(reply) == {"QR", "RD", "RA"}
    assert reply.msg.answer == []
    # RFC 2308 §3: the SOA's TTL in a negative answer is min(SOA TTL 300, minimum 60).
    assert rrsets(reply, "authority") == [("example.test.", 60, "SOA", [SOA_TEXT])]


def test_nodata_relayed_with_the_soa(fwd: RunningServer) -> None:
    reply = fwd.ask("www.example.test", "TXT")
    assert reply.rcode_text == "NOERROR" and reply.msg.answer == []
    assert rrsets(reply, "authority") == [("example.test.", 60, "SOA", [SOA_TEXT])]


def test_mx_with_its_additional_section(fwd: RunningServer) -> None:
    reply = fwd.ask("mail.example.test", "MX")
    assert rrsets(reply) == [("mail.example.test.", 300, "MX", ["10 mx.example.test."])]
    assert rrsets(reply, "additional") == [("mx.example.test.", 300, "A", ["192.0.2.25"])]


def test_aaaa_relayed(fwd: RunningServer) -> None:
    reply = fwd.ask("www.example.test", "AAAA")
    assert reply.addresses("AAAA") == ["2001:db8::10"]


def test_edns_client_gets_opt_with_the_upstreams_options(fwd: RunningServer, fake: FakeUpstream) -> None:
    reply = fwd.ask("www.example.test", "A", payload=4096)
    assert reply.msg.edns == 0
    assert reply.msg.payload == 1232  # this server's payload, not the client's or the upstream's
    assert [(o.otype, o.nsid) for o in reply.msg.options] == [(dns.edns.OptionType.NSID, NSID)]
    assert [r.rtype for r in reply.lib.ar][-1:] == [41]  # the OPT, last
    [sent] = fake.queries("www.example.test.")
    assert sent.edns == 0 and sent.payload == 1232


def test_server_payload_setting_is_advertised(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(upstreams=[fake.address], forward={"enabled": True}, edns_payload=1400)
    assert server.ask("www.example.test", "A").msg.payload == 1400


def test_client_without_edns_gets_no_opt(fwd: RunningServer, fake: FakeUpstream) -> None:
    reply = fwd.ask("www.example.test", "A", edns=False)
    assert reply.msg.edns == -1
    assert struct.unpack_from("!H", reply.wire, 10)[0] == 0  # ARCOUNT: not even a stray OPT
    assert reply.addresses("A") == ["192.0.2.10"]
    [sent] = fake.queries("www.example.test.")
    assert sent.edns == 0  # upstream, EDNS always


def test_do_query_gets_rrsigs(fwd: RunningServer, fake: FakeUpstream) -> None:
    plain = fwd.ask("www.example.test", "A")
    assert [t for _, _, t, _ in rrsets(plain)] == ["A"]
    assert not plain.msg.ednsflags & dns.flags.DO
    signed = fwd.ask("www.example.test", "A", want_dnssec=True)
    assert [t for _, _, t, _ in rrsets(signed)] == ["A", "RRSIG"]
    [(_, ttl, _, [rrsig])] = [r for r in rrsets(signed) if r[2] == "RRSIG"]
    assert ttl == 300 and rrsig.startswith("A 13 3 300 20270101000000 20260101000000 12345 example.test.")
    assert signed.msg.ednsflags & dns.flags.DO
    assert [q.do for q in fake.queries("www.example.test.")] == [False, True]


def test_do_bit_echoed_even_when_the_upstream_forgets(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.echo_do = False  # RFC 3225: the DO bit is this hop's to echo
    signed = fwd.ask("www.example.test", "AAAA", want_dnssec=True)
    assert signed.msg.ednsflags & dns.flags.DO
    assert [t for _, _, t, _ in rrsets(signed)] == ["AAAA", "RRSIG"]


def test_clients_id_and_question_case(fwd: RunningServer, fake: FakeUpstream) -> None:
    ids = []
    for name in ("wWw.ExAmPlE.tEsT", "MAIL.example.TEST"):
        query = make_query(name, "A")
        query.id = 0x1234
        reply = fwd.send(query)
        assert reply.msg.id == 0x1234
        question_end = 12 + len(query.question[0].name.to_wire()) + 4
        assert reply.wire[12:question_end] == query.to_wire()[12:question_end]  # byte for byte, 0x20 kept
        assert reply.msg.question[0].name.to_text() == name + "."
        ids.append(fake.received[-1].id)
    assert ids != [0x1234, 0x1234]  # the upstream sees IDs of the server's own choosing
    assert reply.msg.answer == [] and reply.rcode_text == "NOERROR"  # MX-less A: NODATA
    owner = fwd.ask("wWw.ExAmPlE.tEsT", "A").msg.answer[0].name.to_text()
    assert owner == "wWw.ExAmPlE.tEsT."


def test_upstream_sees_fresh_ids_and_source_ports(fwd: RunningServer, fake: FakeUpstream) -> None:
    for i in range(4):
        query = make_query(f"n{i}.example.test", "A")
        query.id = 7
        assert fwd.send(query).rcode_text == "NXDOMAIN"
    sent = fake.wait_for(4)
    assert len({r.id for r in sent}) > 1 and any(r.id != 7 for r in sent)
    assert len({r.source_port for r in sent}) > 1  # a socket of its own for each query
    assert fwd.port not in {r.source_port for r in sent}


def test_rd_and_cd_come_from_the_client(fwd: RunningServer, fake: FakeUpstream) -> None:
    query = make_query("www.example.test", "A")
    query.flags = dns.flags.CD  # RD off, CD on
    reply = fwd.send(query)
    assert flags_of(reply) == {"QR", "RA", "CD"}
    [sent] = fake.queries("www.example.test.")
    assert sent.flags & dns.flags.RD and sent.flags & dns.flags.CD
    plain = fwd.ask("www.example.test", "AAAA")
    assert flags_of(plain) == {"QR", "RD", "RA"}
    assert not fake.queries("www.example.test.")[-1].flags & dns.flags.CD


def test_ad_goes_upstream_and_comes_back(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.validating = True  # like a validating resolver: AD in the reply only when the query asks
    plain = fwd.ask("www.example.test", "A")
    assert not plain.flag("AD")
    query = make_query("www.example.test", "AAAA")
    query.flags |= dns.flags.AD  # RFC 6840 §5.7: "tell me whether it validated"
    reply = fwd.send(query)
    assert reply.flag("AD") and flags_of(reply) == {"QR", "RD", "RA", "AD"}
    assert reply.addresses("AAAA") == ["2001:db8::10"]
    sent = fake.queries("www.example.test.")
    assert [bool(r.flags & dns.flags.AD) for r in sent] == [False, True]
    assert all(r.flags & dns.flags.RD and not r.flags & dns.flags.CD for r in sent)


def test_questions_differing_in_ad_are_not_shared_in_flight(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.validating, fake.mode = True, "slow"
    plain = Pending.ask(fwd, "www.example.test", "A")
    fake.wait_for(1)
    query = make_query("www.example.test", "A")
    query.flags |= dns.flags.AD
    authentic = Pending(fwd.host, fwd.port, query)
    sent = fake.wait_for(2)  # its own upstream query: the first one's reply would lack AD
    assert [bool(r.flags & dns.flags.AD) for r in sent] == [False, True]
    fake.release()
    assert not plain.reply().flag("AD")
    assert authentic.reply().flag("AD")
    assert on_reactor(fwd.reactor, lambda: fwd.service.forwarder.stats.deduplicated) == 0


def test_upstreams_servfail_relayed(start_server: StartServer, fake: FakeUpstream) -> None:
    other = FakeUpstream()
    try:
        fake.mode = other.mode = "servfail"
        server = start_server(upstreams=[fake.address, other.address], forward={"enabled": True})
        reply = server.ask("www.example.test", "A")  # no clock move: both answered at once
        assert reply.rcode_text == "SERVFAIL"
        assert flags_of(reply) == {"QR", "RD", "RA"}
        assert len(fake.queries("www.example.test.")) == len(other.queries("www.example.test.")) == 1
    finally:
        other.close()


def test_upstream_refusing_us_is_a_failure_not_relayed(start_server: StartServer, fake: FakeUpstream) -> None:
    other = FakeUpstream()
    try:
        fake.mode = "refused"
        server = start_server(upstreams=[fake.address, other.address], forward={"enabled": True})
        assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
        other.mode = "refused"
        reply = server.ask("mail.example.test", "MX")
        assert reply.rcode_text == "SERVFAIL"  # not REFUSED: this server does not refuse the client
        assert flags_of(reply) == {"QR", "RD", "RA"}
    finally:
        other.close()


# --- upstreams that do not know EDNS (RFC 6891 §7) -------------------------------------------------


@pytest.mark.parametrize("rcode", ["FORMERR", "NOTIMP"])
def test_upstream_without_edns_asked_again_without_it(start_server: StartServer, fake: FakeUpstream, rcode: str) -> None:
    fake.mode, fake.noedns_rcode = "noedns", dns.rcode.from_text(rcode)
    server = start_server(upstreams=[fake.address], forward={"enabled": True})
    reply = server.ask("www.example.test", "A", payload=4096)
    assert reply.rcode_text == "NOERROR" and reply.addresses("A") == ["192.0.2.10"]
    assert reply.msg.edns == 0 and reply.msg.payload == 1232  # the client's EDNS, answered as ever
    assert not reply.msg.options  # the upstream's reply had no OPT to take options from
    assert [(r.transport, r.edns) for r in fake.queries("www.example.test.")] == [("udp", 0), ("udp", -1)]
    plain = server.ask("mail.example.test", "MX", edns=False)
    assert plain.rcode_text == "NOERROR" and plain.msg.edns == -1 and struct.unpack_from("!H", plain.wire, 10)[0] == 1
    signed = server.ask("www.example.test", "AAAA", want_dnssec=True, tcp=True)
    assert signed.addresses("AAAA") == ["2001:db8::10"] and signed.msg.ednsflags & dns.flags.DO
    assert [(r.transport, r.edns) for r in fake.queries("www.example.test.")][2:] == [("tcp", 0), ("tcp", -1)]
    results = on_reactor(server.reactor, lambda: dict(server.service.forwarder.upstreams[0].results))
    assert results["noedns_retry"] == 3 and results["success"] == 3


def test_upstream_without_edns_truncated_then_asked_over_tcp(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.mode = "noedns"
    whole = fwd.ask("big.example.test", "TXT", tcp=True)
    assert len(whole.txt()) == 30
    cut = fwd.ask("big.example.test", "TXT", payload=4096)  # from the cache, cut at our 1232 bytes
    assert cut.flag("TC")
    other = fwd.ask("big.example.test", "TXT", want_dnssec=True)  # another key: asked again
    assert other.flag("TC")
    sent = [(r.transport, r.edns) for r in fake.queries("big.example.test.")]
    # Without EDNS the UDP reply stops at 512 bytes: fetched whole over TCP, still without EDNS.
    assert sent == [("tcp", 0), ("tcp", -1), ("udp", 0), ("udp", -1), ("tcp", -1)]


def test_formerr_with_an_opt_record_is_relayed_not_retried(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.mode = "formerr"  # it knows EDNS: the error is about the query itself
    reply = fwd.ask("www.example.test", "A")
    assert reply.rcode_text == "FORMERR" and reply.flag("RA")
    assert [(r.transport, r.edns) for r in fake.queries("www.example.test.")] == [("udp", 0)]


# --- replies that are not the upstream's answer are discarded -----------------------------------


@pytest.mark.parametrize("mode", ["wrong_id", "wrong_question"])
def test_mismatched_reply_discarded_and_the_right_one_taken(fwd: RunningServer, fake: FakeUpstream, mode: str) -> None:
    fake.mode, fake.then_answer = mode, True
    reply = fwd.ask("www.example.test", "A")
    assert reply.addresses("A") == ["192.0.2.10"]  # never the spoofed 198.51.100.66
    assert reply.msg.question[0].name.to_text() == "www.example.test."


@pytest.mark.parametrize("mode", ["wrong_id", "wrong_question"])
def test_mismatched_reply_only_means_a_timeout(start_server: StartServer, fake: FakeUpstream, mode: str) -> None:
    second = FakeUpstream()
    try:
        fake.mode = mode
        server = start_server(upstreams=[fake.address, second.address], forward={"enabled": True, "timeout": 1.5})
        pending = Pending.ask(server, "www.example.test", "A")
        fake.wait_for(1)
        assert pending.nothing_yet()  # the bad reply was dropped: still waiting
        assert second.received == []
        server.advance(1.5)
        second.wait_for(1)
        reply = pending.reply()
        assert reply.addresses("A") == ["192.0.2.10"] and SPOOFED not in reply.addresses("A")
    finally:
        second.close()


# --- TCP -------------------------------------------------------------------------------------------


def test_truncated_udp_reply_retried_over_tcp(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.mode = "truncate"
    reply = fwd.ask("www.example.test", "A")
    assert not reply.flag("TC")
    assert reply.addresses("A") == ["192.0.2.10"]
    assert [r.transport for r in fake.queries("www.example.test.")] == ["udp", "tcp"]


def test_big_answer_truncated_for_a_512_client_and_whole_over_tcp(fwd: RunningServer, fake: FakeUpstream) -> None:
    small = fwd.ask("big.example.test", "TXT", edns=False)
    assert small.flag("TC") and small.msg.answer == [] and len(small.wire) <= 512
    assert small.msg.edns == -1
    # The upstream cut its UDP reply at the server's 1232 bytes; the server fetched it whole over TCP.
    assert [r.transport for r in fake.queries("big.example.test.")] == ["udp", "tcp"]
    whole = fwd.ask("big.example.test", "TXT", edns=False, tcp=True)
    assert not whole.flag("TC")
    assert len(fake.queries("big.example.test.")) == 2  # the TCP ask came from the cache
    assert sorted(whole.txt()) == [f"{i:03d} {'x' * 60}" for i in range(30)]  # dnspython shuffles its RRsets


def test_big_answer_to_an_edns_client_over_udp_is_cut_at_our_payload(fwd: RunningServer) -> None:
    reply = fwd.ask("big.example.test", "TXT", payload=4096)
    assert reply.flag("TC") and len(reply.wire) <= 1232
    assert reply.msg.edns == 0  # the OPT stays on a truncated reply


def test_tcp_client_forwarded_over_tcp(fwd: RunningServer, fake: FakeUpstream) -> None:
    reply = fwd.ask("www.example.test", "AAAA", tcp=True)
    assert reply.addresses("AAAA") == ["2001:db8::10"]
    assert [r.transport for r in fake.queries("www.example.test.")] == ["tcp"]


# --- in flight: shared and capped -----------------------------------------------------------------


def test_identical_questions_in_flight_sent_once(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.mode = "slow"
    first = make_query("www.example.test", "A")
    first.id = 1111
    second = make_query("WWW.EXAMPLE.TEST", "A")
    second.id = 2222
    a = Pending(fwd.host, fwd.port, first)
    fake.wait_for(1)
    b = Pending(fwd.host, fwd.port, second)
    # A barrier: the listener reads its datagrams in order, so once this is answered the
    # second question has been handled too.
    assert fwd.ask("my-app.internal", "AAAA").rcode_text == "NOERROR"
    assert on_reactor(fwd.reactor, lambda: fwd.service.forwarder.stats.deduplicated) == 1
    fake.release()
    ra, rb = a.reply(), b.reply()
    assert (ra.msg.id, rb.msg.id) == (1111, 2222)
    assert ra.msg.question[0].name.to_text() == "www.example.test."
    assert rb.msg.question[0].name.to_text() == "WWW.EXAMPLE.TEST."
    assert rb.msg.answer[0].name.to_text() == "WWW.EXAMPLE.TEST."
    assert ra.addresses("A") == rb.addresses("A") == ["192.0.2.10"]
    assert len(fake.queries("www.example.test.")) == 1


def test_in_flight_cap_answers_servfail_at_once(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(upstreams=[fake.address], forward={"enabled": True, "max_in_flight": 1})
    fake.mode = "slow"
    held = Pending.ask(server, "www.example.test", "A")
    fake.wait_for(1)
    over = server.ask("mail.example.test", "MX")  # no clock move: refused capacity, not a timeout
    assert over.rcode_text == "SERVFAIL" and over.flag("RA")
    assert fake.queries("mail.example.test.") == []
    fake.release()
    assert held.reply().addresses("A") == ["192.0.2.10"]
    fake.mode = "answer"
    assert server.ask("mail.example.test", "MX").rcode_text == "NOERROR"  # room again


# --- who may forward, and what never leaves ---------------------------------------------------------


def test_forwarding_off_refuses(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(upstreams=[fake.address])  # the test config turns forwarding off
    reply = server.ask("www.example.test", "A")
    assert reply.rcode_text == "REFUSED" and not reply.flag("RA") and not reply.flag("AA")
    assert not server.ask("my-app.internal", "AAAA").flag("RA")  # no recursion to offer
    assert fake.received == []


def test_recursion_available_on_authoritative_answers_when_forwarding(fwd: RunningServer) -> None:
    reply = fwd.ask("my-app.internal", "AAAA")
    assert reply.flag("AA") and reply.flag("RA")


def test_source_without_a_view_is_refused_never_forwarded(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(
        upstreams=[fake.address],
        forward={"enabled": True},
        views=[{"source": "127.0.0.1/32", "network": "personal"}],
    )
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]  # now in the cache
    for tcp in (False, True):
        reply = server.ask("www.example.test", "A", source="127.0.0.9", tcp=tcp)
        assert reply.rcode_text == "REFUSED" and not reply.flag("RA")
        assert reply.msg.answer == []  # not from the cache either: no open resolver
        assert server.ask("other.example.test", "A", source="127.0.0.9", tcp=tcp).rcode_text == "REFUSED"
    assert fake.names() == ["www.example.test."]


PRIVATE = [
    ("my-app.internal", "AAAA", "NOERROR"),
    ("nope.internal", "A", "NXDOMAIN"),
    ("internal", "SOA", "NOERROR"),
    ("my-app.flycast", "AAAA", "NOERROR"),
    ("web.railway.internal", "A", "NXDOMAIN"),  # personal has no railway service "web"
    ("MY-APP.Internal", "TXT", "NOERROR"),
]
PRIVATE_REVERSE = [
    # (address, the locally served zone (RFC 6303) that holds its network's prefix)
    ("fdaa:0:18::1", "d.f.ip6.arpa."),
    ("fdaa:0:18:a7b:7d:f066:b83b:3", "d.f.ip6.arpa."),  # next to a machine's (its own answers PTR: test_ptr.py)
    ("10.18.0.3", "10.in-addr.arpa."),
    ("fd12:3456:7800::9", "d.f.ip6.arpa."),  # another network's: private all the same
    ("10.250.1.1", "10.in-addr.arpa."),
    ("fdaa:0:99::1", "d.f.ip6.arpa."),  # in no network: indistinguishable from another's
    ("10.99.0.1", "10.in-addr.arpa."),
]
PUBLIC = [
    ("1.0.0.127.in-addr.arpa.", "PTR"),  # loopback is inside no network's prefix
    ("f.ip6.arpa.", "NS"),  # above fd00::/8: the public tree
    ("18.10.in-addr.arpa.x.", "A"),  # only looks reverse
    ("www.example.test.", "A"),
]


def test_private_names_never_sent_upstream(fwd: RunningServer, fake: FakeUpstream) -> None:
    for name, rdtype, rcode in PRIVATE:
        reply = fwd.ask(name, rdtype)
        assert reply.rcode_text == rcode and reply.flag("AA"), name
    for address, zone in PRIVATE_REVERSE:
        name = dns.reversename.from_address(address).to_text()
        for asked in (name, name.upper()):
            reply = fwd.ask(asked, "PTR")
            assert reply.rcode_text == "NXDOMAIN" and reply.flag("AA") and reply.flag("RA"), asked
            [(owner, ttl, rdtype, [soa])] = rrsets(reply, "authority")
            assert (owner.lower(), ttl, rdtype) == (zone, 5, "SOA")
            assert soa.split()[:2] == [zone, f"hostmaster.{zone}"]
    for name, rdtype in PUBLIC:
        fwd.ask(name, rdtype)
    assert fake.names() == [name for name, _ in PUBLIC]


def test_private_reverse_names_with_dig(fwd: RunningServer, fake: FakeUpstream) -> None:
    v6 = dig(fwd, "-x", "fdaa:0:18::1")
    assert v6.status == "NXDOMAIN" and v6.flags == {"qr", "aa", "rd", "ra"}
    assert [(r.name, r.rdtype) for r in v6.section("AUTHORITY")] == [("d.f.ip6.arpa.", "SOA")]
    v4 = dig(fwd, "-x", "10.18.0.3")
    assert v4.status == "NXDOMAIN" and "aa" in v4.flags
    assert [(r.name, r.rdtype) for r in v4.section("AUTHORITY")] == [("10.in-addr.arpa.", "SOA")]
    named = dig(fwd, "-x", "10.18.0.2")  # a machine's ip4
    assert named.status == "NOERROR" and "aa" in named.flags
    assert [(r.name, r.rdtype, r.data) for r in named.answer] == [
        ("2.0.18.10.in-addr.arpa.", "PTR", "148e21dad76789.vm.my-app.internal.")
    ]
    public = dig(fwd, "www.example.test", "A")
    assert public.status == "NOERROR" and public.flags == {"qr", "rd", "ra"}
    assert [(r.name, r.ttl, r.rdtype, r.data) for r in public.answer] == [("www.example.test.", 300, "A", "192.0.2.10")]
    assert fake.names() == ["www.example.test."]


def test_private_reverse_zone_apex_holds_its_soa(fwd: RunningServer, fake: FakeUpstream) -> None:
    apex = "d.f.ip6.arpa."
    soa = fwd.ask(apex, "SOA")
    assert soa.rcode_text == "NOERROR" and soa.flag("AA")
    assert [(owner.lower(), rdtype) for owner, _, rdtype, _ in rrsets(soa, "answer")] == [(apex, "SOA")]
    nodata = fwd.ask(apex, "PTR")
    assert nodata.rcode_text == "NOERROR" and not nodata.msg.answer
    assert [(owner.lower(), rdtype) for owner, _, rdtype, _ in rrsets(nodata, "authority")] == [(apex, "SOA")]
    assert fake.names() == []


def test_reverse_names_before_the_first_snapshot_are_not_forwarded(
    start_server: StartServer, fake: FakeUpstream, tmp_path: Path
) -> None:
    empty = tmp_path / "nothing-yet"  # no registry folder: no snapshot
    server = start_server(registry=empty, upstreams=[fake.address], forward={"enabled": True})
    if server.snapshot is not None:
        pytest.fail("expected no snapshot from a missing registry folder")
    name = dns.reversename.from_address("10.18.0.2").to_text()
    assert server.ask(name, "PTR").rcode_text == "SERVFAIL"
    assert fake.received == []


# --- upstreams from resolv.conf ----------------------------------------------------------------------


def labels(upstreams: list[Upstream]) -> list[str]:
    return [u.label for u in upstreams]


def test_resolv_conf_nameservers_skipping_our_own(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\n"
        "search example.test\n"
        "nameserver 127.0.0.1\n"
        "nameserver ::1\n"
        "nameserver 192.0.2.1  # not ours\n"
        "nameserver not-an-address\n"
        "nameserver\n"
        "options edns0 trust-ad\n"
        "nameserver 127.0.0.53\n"
    )
    assert labels(resolv_conf_upstreams(conf, [])) == ["127.0.0.1:53", "[::1]:53", "192.0.2.1:53", "127.0.0.53:53"]
    assert labels(resolv_conf_upstreams(conf, [("127.0.0.1", 53)])) == ["[::1]:53", "192.0.2.1:53", "127.0.0.53:53"]
    assert labels(resolv_conf_upstreams(conf, [("127.0.0.1", 5353)])) == labels(resolv_conf_upstreams(conf, []))
    # A wildcard listener is every local address; `0.0.0.0` only IPv4 ones, `::` both.
    assert labels(resolv_conf_upstreams(conf, [("0.0.0.0", 53)])) == ["[::1]:53", "192.0.2.1:53"]
    assert labels(resolv_conf_upstreams(conf, [("::", 53)])) == ["192.0.2.1:53"]
    assert labels(resolv_conf_upstreams(conf, [("::1", 53), ("127.0.0.53", 53)])) == ["127.0.0.1:53", "192.0.2.1:53"]
    assert resolv_conf_upstreams(tmp_path / "missing", []) == []


def test_resolv_conf_wildcard_listener_skips_this_machines_own_addresses(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        mine = probe.getsockname()[0]
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {mine}\nnameserver 192.0.2.1\n")
    assert labels(resolv_conf_upstreams(conf, [("0.0.0.0", 53)])) == ["192.0.2.1:53"]
    assert labels(resolv_conf_upstreams(conf, [("127.0.0.1", 53)])) == [f"{mine}:53", "192.0.2.1:53"]


def _free_on_port_53(*candidates: str) -> str:
    for address in candidates:
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            ):
                udp.bind((address, 53))
                tcp.bind((address, 53))
        except OSError:
            continue
        return address
    raise AssertionError(f"port 53 is taken on every one of {candidates}")


def test_resolv_conf_upstreams_end_to_end(start_server: StartServer, tmp_path: Path) -> None:
    own = _free_on_port_53("127.83.0.53", "127.83.1.53", "127.83.2.53")
    upstream_address = _free_on_port_53("127.83.0.54", "127.83.1.54", "127.83.2.54")
    upstream = FakeUpstream(upstream_address, port=53)
    try:
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {own}\nnameserver {upstream_address}\n")  # ourselves first
        server = start_server(listen=[{"address": own, "port": 53}], forward={"enabled": True, "resolv_conf": str(conf)})
        assert labels(server.service.forwarder.upstreams) == [f"{upstream_address}:53"]
        # Were the server its own upstream, this would wait on itself until a timeout that the
        # frozen clock never reaches.
        reply = server.ask("www.example.test", "A")
        assert reply.addresses("A") == ["192.0.2.10"]
        assert upstream.names() == ["www.example.test."]
    finally:
        upstream.close()


def test_resolv_conf_without_usable_nameservers_means_no_forwarding(start_server: StartServer, tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    server = start_server(listen=[{"address": "127.0.0.1", "port": 0}], forward={"enabled": True, "resolv_conf": str(conf)})
    # Port 0 is never 53: 127.0.0.1:53 is not ourselves, so it is kept.
    assert labels(server.service.forwarder.upstreams) == ["127.0.0.1:53"]
    conf.write_text("# nothing here\n")
    bare = start_server(forward={"enabled": True, "resolv_conf": str(conf)})
    assert bare.service.forwarder is None
    assert bare.ask("www.example.test", "A").rcode_text == "REFUSED"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ipv6_upstream_and_client(start_server: StartServer, tcp: bool) -> None:
    upstream = FakeUpstream("::1")
    try:
        assert upstream.address == f"[::1]:{upstream.port}"
        server = start_server(listen=[{"address": "::1", "port": 0}], upstreams=[upstream.address], forward={"enabled": True})
        reply = server.ask("www.example.test", "AAAA", source="::1", tcp=tcp)
        assert reply.addresses("AAAA") == ["2001:db8::10"] and reply.flag("RA")
        assert [r.transport for r in upstream.received] == ["tcp" if tcp else "udp"]
    finally:
        upstream.close()


def reverse_labels(name: str) -> tuple[str, ...]:
    return tuple(name.lower().rstrip(".").split("."))


def test_reverse_zone_of_prefixes_off_the_nibble_or_octet() -> None:
    private = PrivateReverse([IPv4Network("10.16.0.0/12"), IPv6Network("fdaa:0:18::/46")])
    # A /12 spans 16.10 to 31.10: each such name's zone is its /16, inside the prefix.
    assert private.zone_of(reverse_labels("2.1.17.10.in-addr.arpa")) == 4
    assert private.zone_of(reverse_labels("31.10.in-addr.arpa")) == 4
    assert private.zone_of(reverse_labels("32.10.in-addr.arpa")) is None
    assert private.zone_of(reverse_labels("10.in-addr.arpa")) is None  # above the prefix: public
    # A /46 spans fdaa:0:18:: to fdaa:0:1b:ffff::: zones of 12 nibbles.
    inside = dns.reversename.from_address("fdaa:0:1b::1").to_text()
    assert private.zone_of(reverse_labels(inside)) == 14
    outside = dns.reversename.from_address("fdaa:0:1c::1").to_text()
    assert private.zone_of(reverse_labels(outside)) is None
    assert private.zone_of(reverse_labels("8.1.0.0.0.0.0.0.a.a.d.f.ip6.arpa")) == 14
    assert private.zone_of(reverse_labels("1.0.0.0.0.0.0.a.a.d.f.ip6.arpa")) is None  # 44 bits: above


def test_network_prefixes_widen_to_their_locally_served_blocks() -> None:
    assert served_prefix(IPv6Network("fdaa:0:18::/48")) == IPv6Network("fd00::/8")
    assert served_prefix(IPv4Network("10.18.0.0/16")) == IPv4Network("10.0.0.0/8")
    assert served_prefix(IPv4Network("100.64.3.0/24")) == IPv4Network("100.64.0.0/10")
    assert served_prefix(IPv6Network("2001:db8:5::/48")) == IPv6Network("2001:db8::/32")
    assert served_prefix(IPv6Network("2a09:8280:1::/48")) == IPv6Network("2a09:8280:1::/48")  # public space: itself
    private = PrivateReverse([served_prefix(IPv4Network("172.20.0.0/16")), served_prefix(IPv4Network("172.21.0.0/16"))])
    # 172.16.0.0/12 is sixteen zones, 16.172 to 31.172.in-addr.arpa, all served here
    assert private.zone_of(reverse_labels("9.0.30.172.in-addr.arpa")) == 4
    assert private.zone_of(reverse_labels("16.172.in-addr.arpa")) == 4
    assert private.zone_of(reverse_labels("32.172.in-addr.arpa")) is None
