"""SPEC §6 over real sockets: header flags, the echoed question and 0x20, EDNS0, truncation at whole
RRsets, FORMERR/NOTIMP/REFUSED/BADVERS, CHAOS, ANY (RFC 8482), SERVFAIL before the first snapshot,
and random bytes thrown at the UDP listener.
"""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from internal_dns.registry.model import Snapshot
from tests.conftest import EMBEDDED_ZONES, RunningServer, write_yaml
from tests.dnsclient import Reply, make_query

StartServer = Callable[..., RunningServer]

MY_APP = {"fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"}
MY_APP_VMS = "148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad"

QR, AA, TC, RD, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010
OPT_TYPE = 41


# --- helpers ----------------------------------------------------------------------------------


def question_end(wire: bytes) -> int:
    """Offset just past the (uncompressed) first question."""
    pos = 12
    while wire[pos]:
        pos += 1 + wire[pos]
    return pos + 1 + 4


def header(qid: int = 0x1234, flags: int = RD | CD, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def name_bytes(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.strip(".").split(".") if label) + b"\x00"


def question(name: str = "my-app.internal", qtype: int = 28, qclass: int = 1) -> bytes:
    return name_bytes(name) + struct.pack("!HH", qtype, qclass)


def opt_record(payload: int = 1232, ttl: int = 0, rdata: bytes = b"", owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", OPT_TYPE, payload, ttl, len(rdata)) + rdata


def expect_silence(server: RunningServer, wire: bytes, timeout: float = 0.3) -> None:
    """Nothing comes back for `wire` within a short timeout, and the server still answers after it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.connect((server.host, server.port))
        sock.settimeout(timeout)
        sock.send(wire)
        with pytest.raises(socket.timeout):
            sock.recv(65535)
        sentinel = make_query("my-app.internal", "AAAA")
        sock.settimeout(3.0)
        sock.send(sentinel.to_wire())
        reply = Reply.decode(sock.recv(65535))
    assert reply.msg.id == sentinel.id
    assert set(reply.addresses()) == MY_APP


def assert_question_echoed(query: bytes, reply: bytes) -> None:
    end = question_end(query)
    assert struct.unpack_from("!H", reply, 4)[0] == 1
    assert reply[12:end] == query[12:end]


def assert_plain_refusal(reply: Reply, rcode: str) -> None:
    assert reply.rcode_text == rcode
    assert not reply.flag("AA")
    assert not reply.flag("RA")
    assert reply.msg.answer == [] and reply.msg.authority == []


# --- header flags, the question, 0x20 ---------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_aa_on_authoritative_answers_and_no_ra(server: RunningServer, tcp: bool) -> None:
    cases = [
        ("my-app.internal", "AAAA", "NOERROR", True),  # an answer
        ("my-app.internal", "TXT", "NOERROR", False),  # NODATA
        ("nope.internal", "AAAA", "NXDOMAIN", False),
        ("internal", "SOA", "NOERROR", True),
        ("api.flycast", "AAAA", "NOERROR", True),
        ("nope.flycast", "AAAA", "NXDOMAIN", False),
    ]
    for name, rdtype, rcode, answered in cases:
        reply = server.ask(name, rdtype, tcp=tcp)
        assert reply.rcode_text == rcode, name
        assert reply.flag("AA"), name
        assert reply.flag("QR")
        assert not reply.flag("RA"), name  # no forwarding configured: this view may not recurse
        assert not reply.flag("TC")
        assert bool(reply.msg.answer) == answered, name
        if not answered:
            assert reply.soa() is not None, f"{name}: negative answer without SOA in authority"


def test_nxdomain_carries_the_zone_soa(server: RunningServer) -> None:
    reply = server.ask("nope.internal", "AAAA")
    assert reply.rcode_text == "NXDOMAIN" and reply.flag("AA")
    [soa_set] = reply.msg.authority
    assert soa_set.name.to_text() == "internal."
    assert soa_set.ttl == 5 and soa_set[0].minimum == 5


@pytest.mark.parametrize("flags", [0, RD, CD, RD | CD], ids=["none", "rd", "cd", "rd+cd"])
def test_rd_and_cd_are_copied(server: RunningServer, flags: int) -> None:
    for name, rdtype in [("my-app.internal", "AAAA"), ("nope.internal", "AAAA"), ("example.com", "A"), ("id.server", "TXT")]:
        query = make_query(name, rdtype, rdclass="CH" if name == "id.server" else "IN")
        query.flags = flags
        reply = server.send(query)
        assert reply.msg.flags & (RD | CD) == flags, name
        assert not reply.flag("RA")


@pytest.mark.parametrize(
    "name, rdtype, rdclass, source",
    [
        ("My-App.Internal", "AAAA", "IN", "127.0.0.1"),
        ("VMS.my-app.INTERNAL", "TXT", "IN", "127.0.0.1"),
        ("nOpE.iNtErNaL", "AAAA", "IN", "127.0.0.1"),
        ("Web.Railway.Internal", "A", "IN", "127.0.0.3"),
        ("Example.COM", "A", "IN", "127.0.0.1"),  # REFUSED
        ("ID.Server", "TXT", "CH", "127.0.0.1"),
        ("My-App.Internal", "AXFR", "IN", "127.0.0.1"),
    ],
)
def test_question_echoed_byte_for_byte(server: RunningServer, name: str, rdtype: str, rdclass: str, source: str) -> None:
    for edns in (False, True):
        query = make_query(name, rdtype, rdclass=rdclass, edns=edns).to_wire()
        for tcp in (False, True):
            reply = server.raw(query, source=source, tcp=tcp)
            assert reply[:2] == query[:2]
            assert_question_echoed(query, reply)
            assert Reply.decode(reply).msg.question[0].name.to_text() == name + "."


# name, type, source, zone (for the SOA owner of a negative answer)
CASE_NAMES = [
    ("my-app.internal", "AAAA", "127.0.0.1", "internal"),
    ("sea.my-app.internal", "AAAA", "127.0.0.1", "internal"),
    ("148e21dad76789.vm.my-app.internal", "AAAA", "127.0.0.1", "internal"),
    ("vms.my-app.internal", "TXT", "127.0.0.1", "internal"),
    ("my-laptop._peer.internal", "AAAA", "127.0.0.1", "internal"),
    ("my-app.internal", "TXT", "127.0.0.1", "internal"),  # NODATA
    ("nope.my-app.internal", "AAAA", "127.0.0.1", "internal"),  # NXDOMAIN
    ("internal", "SOA", "127.0.0.1", "internal"),
    ("internal", "ANY", "127.0.0.1", "internal"),
    ("api.flycast", "AAAA", "127.0.0.1", "flycast"),
    ("nope.flycast", "AAAA", "127.0.0.1", "flycast"),
    ("web.railway.internal", "ANY", "127.0.0.3", "railway.internal"),
    ("nope.railway.internal", "A", "127.0.0.3", "railway.internal"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASE_NAMES), bits=st.lists(st.booleans(), min_size=40, max_size=40), tcp=st.booleans())
def test_owner_names_keep_the_query_case(
    server: RunningServer, case: tuple[str, str, str, str], bits: list[bool], tcp: bool
) -> None:
    name, rdtype, source, zone = case
    cased = "".join(c.upper() if bit else c for c, bit in zip(name, bits + [False] * len(name), strict=False))
    query = make_query(cased, rdtype).to_wire()
    wire = server.raw(query, source=source, tcp=tcp)
    assert_question_echoed(query, wire)
    reply = Reply.decode(wire)
    assert reply.rcode_text in ("NOERROR", "NXDOMAIN")
    for rrset in reply.msg.answer:
        assert rrset.name.to_text() == cased + "."
    if not reply.msg.answer:
        cased_zone = ".".join(cased.split(".")[-len(zone.split(".")) :]) + "."
        [soa_set] = reply.msg.authority
        assert soa_set.rdtype == dns.rdatatype.SOA
        assert soa_set.name.to_text() == cased_zone


# --- EDNS0 ------------------------------------------------------------------------------------


def edns_queries() -> list[tuple[str, dns.message.Message]]:
    """Queries whose replies must all carry an OPT: answers, negatives, refusals, NOTIMP, CHAOS."""
    notify = make_query("my-app.internal", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    return [
        ("answer", make_query("my-app.internal", "AAAA")),
        ("nodata", make_query("my-app.internal", "TXT")),
        ("nxdomain", make_query("nope.internal", "AAAA")),
        ("refused", make_query("example.com", "A")),
        ("axfr", make_query("internal", "AXFR")),
        ("chaos", make_query("id.server", "TXT", rdclass="CH")),
        ("notimp", notify),
        ("truncated", make_query("all._instances.internal", "TXT", payload=512)),
    ]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_opt_is_echoed_last_with_the_server_payload(server: RunningServer, tcp: bool) -> None:
    for label, query in edns_queries():
        for client_payload in (512, 1232, 4096):
            query.use_edns(0, 0, client_payload)
            wire = server.raw(query.to_wire(), tcp=tcp)
            reply = Reply.decode(wire)
            assert reply.msg.edns == 0, label
            assert reply.msg.payload == 1232, label
            assert struct.unpack_from("!H", wire, 10)[0] == 1, label  # ARCOUNT: the OPT alone
            # last in the message: the final 11 bytes are the OPT (root owner, no options)
            assert wire[-11:] == opt_record(1232, 0), label


def test_edns_payload_is_configurable(start_server: StartServer) -> None:
    server = start_server(edns_payload=4000)
    for name in ("my-app.internal", "nope.internal", "example.com"):
        reply = server.ask(name, "AAAA", payload=1232)
        assert reply.msg.payload == 4000
        assert reply.wire[-11:] == opt_record(4000, 0)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_do_bit_is_echoed(server: RunningServer, tcp: bool) -> None:
    for name in ("my-app.internal", "nope.internal", "example.com"):
        with_do = server.ask(name, "AAAA", want_dnssec=True, tcp=tcp)
        assert with_do.msg.ednsflags & dns.flags.DO, name
        without = server.ask(name, "AAAA", want_dnssec=False, tcp=tcp)
        assert not without.msg.ednsflags & dns.flags.DO, name


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_edns_version_above_zero_is_badvers(server: RunningServer, tcp: bool) -> None:
    for version in (1, 2, 255):
        for name in ("my-app.internal", "example.com"):
            reply = server.ask(name, "AAAA", edns=version, want_dnssec=True, tcp=tcp)
            assert reply.msg.rcode() == dns.rcode.BADVERS == 16
            assert reply.wire[3] & 0x0F == 0  # the low four bits in the header, the rest in the OPT
            assert reply.msg.edns == 0  # the version this server speaks
            assert reply.msg.ednsflags & dns.flags.DO
            assert reply.msg.answer == [] and reply.msg.authority == []
            assert not reply.flag("AA")
            assert_question_echoed(make_query(name, "AAAA").to_wire(), reply.wire)


def test_unknown_edns_options_are_ignored(server: RunningServer) -> None:
    options = [
        dns.edns.GenericOption(65001, b"\x01\x02\x03"),
        dns.edns.GenericOption(65002, b""),
        dns.edns.GenericOption(10, b"\x00" * 8),  # a client COOKIE, as dig sends
    ]
    for tcp in (False, True):
        query = dns.message.make_query("my-app.internal", "AAAA", use_edns=0, payload=1232, options=options)
        reply = server.send(query, tcp=tcp)
        assert reply.rcode_text == "NOERROR" and reply.flag("AA")
        assert set(reply.addresses()) == MY_APP
        assert reply.msg.edns == 0 and list(reply.msg.options) == []


@pytest.mark.parametrize("payload", [0, 1, 100, 511])
def test_client_payload_below_512_counts_as_512(server: RunningServer, payload: int) -> None:
    # 352 bytes with the OPT (three SRV, their three AAAA): over the client's stated limit,
    # under 512, so sent whole, the additional section too
    reply = server.ask("_http._tcp.my-app.internal", "SRV", payload=payload)
    assert 300 < len(reply.wire) <= 512
    assert not reply.flag("TC")
    assert len(reply.srv()) == 3 and len(reply.additional()) == 3
    # and a reply over 512 is cut at 512, not at the client's smaller number
    big = server.ask("all._instances.internal", "TXT", payload=payload)
    assert big.flag("TC")
    assert len(big.wire) <= 512
    assert big.msg.edns == 0


def test_no_opt_in_replies_to_queries_without_edns(server: RunningServer) -> None:
    for label, query in edns_queries():
        query.use_edns(False)
        for tcp in (False, True):
            wire = server.raw(query.to_wire(), tcp=tcp)
            reply = Reply.decode(wire)
            assert reply.msg.edns == -1, label
            assert struct.unpack_from("!H", wire, 10)[0] == 0, label


# --- truncation -------------------------------------------------------------------------------

BIG = 60


@pytest.fixture
def big_registry(tmp_path: Path) -> Path:
    """One dual-stack network with an app of BIG started machines: replies past every UDP limit."""
    folder = tmp_path / "big-registry"
    folder.mkdir()
    shutil.copy(EMBEDDED_ZONES / "regions.yaml", folder / "regions.yaml")
    write_yaml(
        folder / "big.yaml",
        {
            "networks": [{"name": "personal", "prefix6": "fdaa:0:18::/48", "prefix4": "10.18.0.0/16"}],
            "apps": [{"name": "big", "network": "personal"}, {"name": "small", "network": "personal"}],
            "machines": [
                {
                    "id": f"b{i:013x}",
                    "app": "big",
                    "region": ("iad", "sea", "ams")[i % 3],
                    "state": "started",
                    "ip6": f"fdaa:0:18:a7b:100::{i + 1:x}",
                    "ip4": f"10.18.1.{i + 1}",
                }
                for i in range(BIG)
            ]
            + [
                {
                    "id": "5a11",
                    "app": "small",
                    "region": "iad",
                    "state": "started",
                    "ip6": "fdaa:0:18:a7b:200::1",
                    "ip4": "10.18.2.1",
                }
            ],
        },
    )
    return folder


@pytest.fixture
def big_server(start_server: StartServer, big_registry: Path) -> RunningServer:
    return start_server(registry=big_registry)


# name, type → the whole RRsets over TCP: {type: record count}
BIG_QUESTIONS = [
    ("big.internal", "AAAA", {"AAAA": BIG}),
    ("_instances.internal", "TXT", {"TXT": 1}),
    ("big.internal", "ANY", {"AAAA": BIG}),
    ("big.railway.internal", "ANY", {"A": BIG, "AAAA": BIG}),
]


def rrset_counts(reply: Reply) -> dict[str, int]:
    return {dns.rdatatype.to_text(rrset.rdtype): len(rrset) for rrset in reply.msg.answer}


def assert_only_whole_rrsets(reply: Reply, whole: dict[str, int]) -> None:
    counts = rrset_counts(reply)
    for rdtype, count in counts.items():
        assert count == whole[rdtype], f"a partial {rdtype} RRset: {count} of {whole[rdtype]}"
    # the header counts what is there: no record was dropped from inside a set
    assert struct.unpack_from("!H", reply.wire, 6)[0] == sum(counts.values())


@pytest.mark.parametrize("name, rdtype, whole", BIG_QUESTIONS)
def test_tcp_answers_whole(big_server: RunningServer, name: str, rdtype: str, whole: dict[str, int]) -> None:
    reply = big_server.ask(name, rdtype, tcp=True, edns=False)
    assert not reply.flag("TC")
    assert rrset_counts(reply) == whole
    assert len(reply.wire) > 1232
    if rdtype == "TXT":
        entries = reply.txt()[0].split(";")
        assert len(entries) == BIG + 1
        assert entries[0] == "instance=5a11,app=small,ip=fdaa:0:18:a7b:200::1,region=iad"
        assert entries[1:] == [
            f"instance=b{i:013x},app=big,ip=fdaa:0:18:a7b:100::{i + 1:x},region={('iad', 'sea', 'ams')[i % 3]}"
            for i in range(BIG)
        ]
    if "AAAA" in whole:
        assert set(reply.addresses()) == {f"fdaa:0:18:a7b:100::{i + 1:x}" for i in range(BIG)}


@pytest.mark.parametrize("name, rdtype, whole", BIG_QUESTIONS)
def test_udp_without_edns_is_cut_at_512(big_server: RunningServer, name: str, rdtype: str, whole: dict[str, int]) -> None:
    reply = big_server.ask(name, rdtype, edns=False)
    assert reply.flag("TC")
    assert reply.flag("AA") and reply.rcode_text == "NOERROR"
    assert len(reply.wire) <= 512
    assert reply.msg.edns == -1
    assert_only_whole_rrsets(reply, whole)
    assert_question_echoed(make_query(name, rdtype).to_wire(), reply.wire)


@pytest.mark.parametrize("payload", [512, 700, 1000, 1100, 1232])
@pytest.mark.parametrize("name, rdtype, whole", BIG_QUESTIONS)
def test_udp_with_edns_is_cut_at_the_client_payload(
    big_server: RunningServer, name: str, rdtype: str, whole: dict[str, int], payload: int
) -> None:
    reply = big_server.ask(name, rdtype, payload=payload, want_dnssec=True)
    assert reply.flag("TC")
    assert len(reply.wire) <= payload
    assert reply.msg.edns == 0 and reply.msg.payload == 1232  # the OPT stays
    assert reply.msg.ednsflags & dns.flags.DO
    assert reply.wire[-11:] == opt_record(1232, 0x8000)
    assert_only_whole_rrsets(reply, whole)


def test_truncation_keeps_the_rrsets_that_fit(big_server: RunningServer) -> None:
    # ANY: the A set (60 x 16 bytes) fits in 1232, the AAAA set (60 x 28) after it does not
    reply = big_server.ask("big.railway.internal", "ANY", payload=1232)
    assert reply.flag("TC")
    assert rrset_counts(reply) == {"A": BIG}
    assert set(reply.addresses("A")) == {f"10.18.1.{i + 1}" for i in range(BIG)}
    # at 512 not even the A set fits: an empty answer with TC, never a part of a set
    reply = big_server.ask("big.railway.internal", "ANY", payload=512)
    assert reply.flag("TC") and rrset_counts(reply) == {}


def test_udp_is_capped_at_the_server_payload(start_server: StartServer, big_registry: Path) -> None:
    """SPEC is silent: a client offering more than the server's payload gets at most the server's
    (the DNS Flag Day 2020 size, so replies are not fragmented)."""
    default = start_server(registry=big_registry)
    reply = default.ask("big.railway.internal", "ANY", payload=4096)
    assert reply.flag("TC") and len(reply.wire) <= 1232
    assert rrset_counts(reply) == {"A": BIG}
    roomy = start_server(registry=big_registry, edns_payload=4096)
    reply = roomy.ask("big.railway.internal", "ANY", payload=4096)
    assert not reply.flag("TC")
    assert rrset_counts(reply) == {"A": BIG, "AAAA": BIG}
    assert 1232 < len(reply.wire) <= 4096


def test_small_replies_are_not_truncated(big_server: RunningServer) -> None:
    reply = big_server.ask("small.railway.internal", "ANY", edns=False)
    assert not reply.flag("TC")
    assert rrset_counts(reply) == {"A": 1, "AAAA": 1}


# --- FORMERR, silence, NOTIMP, REFUSED, CHAOS -------------------------------------------------

LONG_LABEL = "a" * 63

FORMERR_QUERIES = {
    "qdcount-0": header(qd=0),
    "qdcount-0-with-opt": header(qd=0, ar=1) + opt_record(),
    "qdcount-2": header(qd=2) + question() + question("nope.internal"),
    "name-past-end": header() + b"\x06my-app\x08inter",
    "name-without-root": header() + b"\x06my-app",
    "question-without-class": header() + name_bytes("my-app.internal") + b"\x00\x1c",
    "pointer-in-question": header() + b"\xc0\x0c" + struct.pack("!HH", 28, 1),
    "pointer-after-a-label": header() + b"\x06my-app\xc0\x0c" + struct.pack("!HH", 28, 1),
    "label-64": header() + bytes([64]) + b"a" * 64 + name_bytes("internal") + struct.pack("!HH", 28, 1),
    "label-type-0x80": header() + bytes([0x80]) + b"a" * 10 + name_bytes("internal") + struct.pack("!HH", 28, 1),
    "name-256-bytes": header() + question(".".join([LONG_LABEL] * 3 + ["b" * 53, "internal"])),
    "name-320-bytes": header() + question(".".join([LONG_LABEL] * 5)),
    "two-opt": header(ar=2) + question() + opt_record() + opt_record(),
    "opt-non-root-owner": header(ar=1) + question() + opt_record(owner=name_bytes("foo")),
    "trailing-garbage": header() + question() + b"\x00",
    "trailing-after-opt": header(ar=1) + question() + opt_record() + b"junk",
    "truncated-opt-option": header(ar=1) + question() + opt_record(rdata=b"\xfd\xe9"),
    "opt-option-past-rdata": header(ar=1) + question() + opt_record(rdata=struct.pack("!HH", 65001, 10) + b"ab"),
    "opt-rdata-past-end": header(ar=1) + question() + b"\x00" + struct.pack("!HHIH", OPT_TYPE, 1232, 0, 10) + b"abcd",
    "arcount-past-end": header(ar=1) + question(),
    "ancount-past-end": header(an=1) + question(),
    "answer-record-cut": header(an=1) + question() + b"\xc0\x0c\x00\x1c\x00",
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("label", sorted(FORMERR_QUERIES))
def test_formerr(server: RunningServer, label: str, tcp: bool) -> None:
    reply = Reply.decode(server.raw(FORMERR_QUERIES[label], tcp=tcp))
    assert reply.rcode_text == "FORMERR"
    assert reply.msg.id == 0x1234
    assert reply.flag("QR") and reply.flag("RD") and reply.flag("CD") and not reply.flag("AA")
    assert reply.msg.opcode() == dns.opcode.QUERY
    assert reply.msg.question == [] and reply.msg.edns == -1


def test_names_up_to_255_bytes_and_labels_up_to_63_parse(server: RunningServer) -> None:
    name = ".".join([LONG_LABEL] * 3 + ["b" * 52, "internal"])
    assert len(name_bytes(name)) == 255
    reply = Reply.decode(server.raw(header() + question(name)))
    assert reply.rcode_text == "NXDOMAIN" and reply.flag("AA")
    assert reply.msg.question[0].name.to_text() == name + "."


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x12", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00", b"\xff" * 11],
    ids=["empty", "one-byte", "eleven-bytes", "eleven-0xff"],
)
def test_shorter_than_a_header_gets_no_reply(server: RunningServer, wire: bytes) -> None:
    expect_silence(server, wire)


@pytest.mark.parametrize(
    "wire",
    [
        make_query("my-app.internal", "AAAA").to_wire(),
        header(qd=2) + question(),  # malformed too: still silence, never a FORMERR to a response
        header(qd=0),
    ],
    ids=["valid-question", "malformed", "header-only"],
)
def test_qr_set_gets_no_reply(server: RunningServer, wire: bytes) -> None:
    data = bytearray(wire)
    data[2] |= 0x80
    expect_silence(server, bytes(data))


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 6, 15], ids=["iquery", "status", "notify", "update", "dso", "15"])
def test_opcodes_other_than_query_are_notimp(server: RunningServer, opcode: int) -> None:
    for edns in (False, True):
        query = bytearray(make_query("my-app.internal", "SOA", edns=edns).to_wire())
        query[2] = (query[2] & 0x87) | (opcode << 3)
        for tcp in (False, True):
            wire = server.raw(bytes(query), tcp=tcp)
            qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", wire)
            assert qid == struct.unpack_from("!H", query)[0]
            assert flags & QR and (flags >> 11) & 0xF == opcode
            assert flags & 0xF == dns.rcode.NOTIMP
            assert not flags & AA
            assert (an, ns, ar) == (0, 0, 1 if edns else 0)
            assert_question_echoed(bytes(query), wire)
            dns.message.from_wire(wire)
            dnslib.DNSRecord.parse(wire)


@pytest.mark.parametrize(
    "wire",
    [
        header(flags=6 << 11, qd=0),  # a DSO keepalive's shape (RFC 8490): no question at all
        header(flags=4 << 11 | RD, qd=2) + question() + question(),
        header(flags=5 << 11, qd=1, ns=3) + question("internal", 6) + b"\xc0\x0c",
        header(flags=2 << 11, qd=1) + question() + b"trailing",
    ],
    ids=["dso-no-question", "notify-two-questions", "update-cut", "status-trailing"],
)
def test_other_opcodes_are_notimp_even_when_their_body_is_no_query(server: RunningServer, wire: bytes) -> None:
    """SPEC is silent on the order: the opcode decides first, as a body of another opcode may
    rightly not look like a QUERY; such a reply is a bare header (the body is not understood)."""
    for tcp in (False, True):
        reply = server.raw(wire, tcp=tcp)
        qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
        assert qid == 0x1234 and flags & QR
        assert (flags >> 11) & 0xF == (wire[2] >> 3) & 0xF
        assert flags & 0xF == dns.rcode.NOTIMP
        assert (len(reply), qd, an, ns, ar) == (12, 0, 0, 0, 0)


@pytest.mark.parametrize(
    "name, rdtype, rdclass",
    [
        ("version.bind", "TXT", "CH"),
        ("id.server", "A", "CH"),
        ("hostname.bind", "AAAA", "CH"),
        ("my-app.internal", "TXT", "CH"),
        ("my-app.internal", "AAAA", "ANY"),
        ("my-app.internal", "AAAA", "HS"),
        ("my-app.internal", "AAAA", "NONE"),
        ("id.server", "TXT", "HS"),
        ("internal", "AXFR", "IN"),
        ("internal", "IXFR", "IN"),
        ("railway.internal", "AXFR", "IN"),
        ("flycast", "IXFR", "IN"),
        ("my-app.internal", "AXFR", "IN"),
    ],
)
def test_refused_classes_and_transfers(server: RunningServer, name: str, rdtype: str, rdclass: str) -> None:
    for tcp in (False, True):
        query = make_query(name, rdtype, rdclass=rdclass)
        wire = server.raw(query.to_wire(), tcp=tcp)
        assert_question_echoed(query.to_wire(), wire)
        assert_plain_refusal(Reply.decode(wire), "REFUSED")


def test_ixfr_with_its_soa_in_authority_is_refused(server: RunningServer) -> None:
    query = make_query("internal", "IXFR", edns=False)
    query.authority.append(dns.rrset.from_text("internal.", 0, "IN", "SOA", "internal. hostmaster.internal. 1 3600 600 86400 5"))
    for tcp in (False, True):
        reply = server.send(query, tcp=tcp)
        assert_plain_refusal(reply, "REFUSED")


@pytest.mark.parametrize("name", ["id.server", "hostname.bind", "ID.SERVER", "HostName.Bind"])
def test_chaos_identity(server: RunningServer, name: str) -> None:
    for tcp in (False, True):
        reply = server.ask(name, "TXT", rdclass="CH", tcp=tcp)
        assert reply.rcode_text == "NOERROR"
        [rrset] = reply.msg.answer
        assert rrset.rdclass == dns.rdataclass.CH and rrset.rdtype == dns.rdatatype.TXT
        assert rrset.name.to_text() == name + "."
        assert [list(rd.strings) for rd in rrset] == [[b"test-server"]]


def test_chaos_identity_is_the_configured_server_id(start_server: StartServer) -> None:
    server = start_server(server_id="ns1.iad.example")
    assert server.ask("id.server", "TXT", rdclass="CH").txt_strings() == [[b"ns1.iad.example"]]
    assert server.ask("hostname.bind", "TXT", rdclass="CH").txt_strings() == [[b"ns1.iad.example"]]


@pytest.mark.parametrize(
    "name", ["example.com", "com", ".", "internal.example.com", "xinternal", "flycast.net", "1.0.0.127.in-addr.arpa"]
)
def test_names_outside_the_zones_are_refused(server: RunningServer, name: str) -> None:
    for tcp in (False, True):
        for rdtype in ("A", "AAAA", "NS"):
            assert_plain_refusal(server.ask(name, rdtype, tcp=tcp), "REFUSED")


def test_private_names_refused_without_a_view(start_server: StartServer) -> None:
    server = start_server(views=[])
    for name, rdtype in [
        ("my-app.internal", "AAAA"),
        ("nope.internal", "AAAA"),
        ("internal", "SOA"),
        ("api.flycast", "AAAA"),
        ("web.railway.internal", "A"),
        ("example.com", "A"),
    ]:
        for tcp in (False, True):
            assert_plain_refusal(server.ask(name, rdtype, source="127.0.0.1", tcp=tcp), "REFUSED")


# --- ANY (RFC 8482) ---------------------------------------------------------------------------


def test_any_returns_the_records_the_name_has(server: RunningServer) -> None:
    for tcp in (False, True):
        reply = server.ask("my-app.internal", "ANY", tcp=tcp)
        assert reply.rcode_text == "NOERROR" and reply.flag("AA")
        assert rrset_counts(reply) == {"AAAA": 3}
        assert set(reply.addresses()) == MY_APP

        reply = server.ask("vms.my-app.internal", "ANY", tcp=tcp)
        assert rrset_counts(reply) == {"TXT": 1}
        assert reply.txt() == [MY_APP_VMS]

        reply = server.ask("internal", "ANY", tcp=tcp)
        assert rrset_counts(reply) == {"SOA": 1, "NS": 1}
        [ns] = [rrset for rrset in reply.msg.answer if rrset.rdtype == dns.rdatatype.NS]
        assert ns[0].target.to_text() == "internal."

        reply = server.ask("web.railway.internal", "ANY", source="127.0.0.3", tcp=tcp)
        assert rrset_counts(reply) == {"A": 2, "AAAA": 2}
        reply = server.ask("web.railway.internal", "ANY", source="127.0.0.4", tcp=tcp)  # legacy: IPv6 only
        assert rrset_counts(reply) == {"AAAA": 1}


def test_any_on_an_empty_non_terminal_is_nodata(server: RunningServer) -> None:
    for name in ("vm.my-app.internal", "process.my-app.internal", "kv._metadata.my-app.internal"):
        reply = server.ask(name, "ANY")
        assert reply.rcode_text == "NOERROR" and reply.flag("AA"), name
        assert reply.msg.answer == []
        assert reply.soa() is not None


def test_any_on_a_missing_name_is_nxdomain(server: RunningServer) -> None:
    reply = server.ask("nope.internal", "ANY")
    assert reply.rcode_text == "NXDOMAIN" and reply.soa() is not None


def test_any_is_truncated_over_udp(big_server: RunningServer) -> None:
    udp = big_server.ask("big.internal", "ANY", edns=False)
    assert udp.flag("TC") and len(udp.wire) <= 512 and rrset_counts(udp) == {}
    tcp = big_server.ask("big.internal", "ANY", edns=False, tcp=True)
    assert not tcp.flag("TC") and rrset_counts(tcp) == {"AAAA": BIG}


# --- SERVFAIL before the first snapshot -------------------------------------------------------


def test_servfail_until_the_first_snapshot(start_server: StartServer, registry_dir: Path) -> None:
    broken = registry_dir / "broken.yaml"
    write_yaml(broken, {"apps": [{"name": "ghost", "network": "no-such-network"}]})
    server = start_server(registry=registry_dir)
    assert server.snapshot is None
    for name, rdtype in [
        ("my-app.internal", "AAAA"),
        ("nope.internal", "AAAA"),
        ("internal", "SOA"),
        ("api.flycast", "AAAA"),
        ("web.railway.internal", "A"),
    ]:
        for tcp in (False, True):
            reply = server.ask(name, rdtype, tcp=tcp)
            assert reply.rcode_text == "SERVFAIL", name
            assert not reply.flag("AA")
            assert reply.msg.answer == []
            assert_question_echoed(make_query(name, rdtype).to_wire(), reply.wire)
    write_yaml(broken, {"apps": [{"name": "ghost", "network": "personal"}]})
    assert isinstance(server.poll(), Snapshot)
    reply = server.ask("my-app.internal", "AAAA")
    assert reply.rcode_text == "NOERROR" and set(reply.addresses()) == MY_APP
    assert server.ask("ghost.internal", "AAAA").rcode_text == "NOERROR"  # the fixed file is in
    assert server.ask("nope.internal", "AAAA").rcode_text == "NXDOMAIN"


# --- robustness -------------------------------------------------------------------------------

SEEDS = [
    make_query("my-app.internal", "AAAA").to_wire(),
    make_query("vms.my-app.internal", "TXT", edns=False).to_wire(),
    make_query("nope.internal", "ANY", want_dnssec=True).to_wire(),
    make_query("web.railway.internal", "A").to_wire(),
    make_query("id.server", "TXT", rdclass="CH").to_wire(),
    make_query("all._instances.internal", "TXT", edns=False).to_wire(),
    dns.message.make_query("api.flycast", "AAAA", use_edns=0, options=[dns.edns.GenericOption(65001, b"xyz")]).to_wire(),
    header(ar=1) + question() + opt_record(rdata=struct.pack("!HH", 65001, 2) + b"ab"),
]


@st.composite
def mutated_queries(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "cut", "insert", "count"]))
        if kind == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "count" and len(data) >= 12:
            at = draw(st.sampled_from([4, 6, 8, 10]))  # QD/AN/NS/AR counts
            data[at : at + 2] = struct.pack("!H", draw(st.integers(0, 3)))
    return bytes(data)


ALLOWED_RCODES = {
    dns.rcode.NOERROR,
    dns.rcode.FORMERR,
    dns.rcode.NXDOMAIN,
    dns.rcode.NOTIMP,
    dns.rcode.REFUSED,
    dns.rcode.BADVERS,
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packet=st.one_of(st.binary(max_size=300), mutated_queries()))
def test_random_packets_get_a_sane_reply_or_none(server: RunningServer, packet: bytes) -> None:
    """Every ≥12-byte non-response gets exactly one well-formed reply; the rest get none.

    The garbage and then a normal query go out on one socket; the server reads and answers in order,
    so whatever arrives before the normal query's reply is the reply to the garbage.
    """
    sentinel = make_query("my-app.internal", "AAAA")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.connect((server.host, server.port))
        sock.settimeout(3.0)
        sock.send(packet)
        sock.send(sentinel.to_wire())
        first = sock.recv(65535)
        expect_reply = len(packet) >= 12 and not packet[2] & 0x80
        if expect_reply:
            check_garbage_reply(packet, first)
            first = sock.recv(65535)
    reply = Reply.decode(first)
    assert reply.msg.id == sentinel.id and set(reply.addresses()) == MY_APP


def check_garbage_reply(packet: bytes, wire: bytes) -> None:
    assert len(wire) >= 12
    qid, flags, qd, _, _, ar = struct.unpack_from("!HHHHHH", wire)
    assert qid == struct.unpack_from("!H", packet)[0]
    assert flags & QR
    assert (flags >> 11) & 0xF == (packet[2] >> 3) & 0xF  # the opcode is echoed
    # Parses. An UPDATE's reply is read as a query's: dnspython reads UPDATE sections as a zone
    # and its records and refuses an echoed question of class 0, which DNS itself allows.
    opcode_update = (packet[2] >> 3) & 0xF == 5
    msg = dns.message.from_wire(wire[:2] + bytes((wire[2] & 0x87,)) + wire[3:] if opcode_update else wire)
    if not qd:
        dnslib.DNSRecord.parse(wire)  # (dnslib refuses some odd but legal echoed labels)
    assert msg.rcode() in ALLOWED_RCODES, dns.rcode.to_text(msg.rcode())
    assert len(wire) <= (1232 if ar else 512)
    if msg.rcode() == dns.rcode.FORMERR:
        assert (packet[2] >> 3) & 0xF == 0  # another opcode is NOTIMP, whatever its body
    if qd:
        assert qd == 1
        assert_question_echoed(packet, wire)
    else:
        assert len(wire) == 12 and msg.rcode() in (dns.rcode.FORMERR, dns.rcode.NOTIMP)
