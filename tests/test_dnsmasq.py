"""Forwarding to a real dnsmasq on loopback (SPEC §7), checked with dnspython and with `dig`.

dnsmasq serves `dnsmasq.test` locally and logs every query it receives, which shows what the
server's cache kept from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer
from tests.fake_upstream import Dnsmasq, free_port
from tests.test_dig import dig

StartServer = Callable[..., RunningServer]


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    upstream = Dnsmasq(tmp_path, free_port())
    try:
        upstream.wait_ready()
        yield upstream
    finally:
        upstream.close()


@pytest.fixture
def fwd(start_server: StartServer, dnsmasq: Dnsmasq) -> RunningServer:
    return start_server(upstreams=[f"127.0.0.1:{dnsmasq.port}"], forward={"enabled": True})


def test_a_aaaa_txt_mx(fwd: RunningServer) -> None:
    a = fwd.ask("www.dnsmasq.test", "A")
    assert a.rcode_text == "NOERROR" and a.addresses("A") == ["192.0.2.53"]
    assert a.flag("RA") and a.flag("RD") and not a.flag("AA")
    assert a.msg.answer[0].ttl == 300
    assert fwd.ask("www.dnsmasq.test", "AAAA").addresses("AAAA") == ["2001:db8::53"]
    assert fwd.ask("txt.dnsmasq.test", "TXT").txt() == ["served by dnsmasq"]
    mx = fwd.ask("dnsmasq.test", "MX")
    assert [rd.to_text() for rrset in mx.msg.answer for rd in rrset] == ["10 mx.dnsmasq.test."]


def test_over_tcp(fwd: RunningServer) -> None:
    reply = fwd.ask("www.dnsmasq.test", "AAAA", tcp=True)
    assert reply.addresses("AAAA") == ["2001:db8::53"]


def test_nxdomain(fwd: RunningServer) -> None:
    reply = fwd.ask("nope.dnsmasq.test", "A")
    assert reply.rcode_text == "NXDOMAIN" and reply.msg.answer == []
    assert reply.flag("RA") and not reply.flag("AA")


def test_client_id_case_and_edns(fwd: RunningServer) -> None:
    with_edns = fwd.ask("WwW.DnsMasq.TEST", "A")
    assert with_edns.msg.question[0].name.to_text() == "WwW.DnsMasq.TEST."
    assert with_edns.msg.edns == 0 and with_edns.msg.payload == 1232
    without = fwd.ask("www.dnsmasq.test", "AAAA", edns=False)
    assert without.msg.edns == -1 and without.addresses("AAAA") == ["2001:db8::53"]


def test_cached_dnsmasq_asked_once(fwd: RunningServer, dnsmasq: Dnsmasq) -> None:
    first = fwd.ask("www.dnsmasq.test", "A")
    second = fwd.ask("www.dnsmasq.test", "A")
    assert first.addresses("A") == second.addresses("A") == ["192.0.2.53"]
    fwd.advance(120)
    assert fwd.ask("www.dnsmasq.test", "A").msg.answer[0].ttl == 180
    # A barrier: dnsmasq logs in arrival order, so once this later question is logged any
    # second query for www would have been logged before it.
    fwd.ask("txt.dnsmasq.test", "TXT")
    assert dnsmasq.wait_logged("txt.dnsmasq.test", 1) == ["txt.dnsmasq.test"]
    assert dnsmasq.wait_logged("www.dnsmasq.test", 1) == ["www.dnsmasq.test"]
    fwd.advance(180)  # expired: asked again
    fwd.ask("www.dnsmasq.test", "A")
    assert dnsmasq.wait_logged("www.dnsmasq.test", 2) == ["www.dnsmasq.test"] * 2


def test_with_dig(fwd: RunningServer, dnsmasq: Dnsmasq) -> None:
    a = dig(fwd, "www.dnsmasq.test", "A")
    assert a.status == "NOERROR" and a.flags == {"qr", "rd", "ra"}
    assert [(r.name, r.ttl, r.rdtype, r.data) for r in a.answer] == [("www.dnsmasq.test.", 300, "A", "192.0.2.53")]
    assert a.edns == (0, set(), 1232)
    assert "WARNING" not in a.text  # recursion is available
    aaaa = dig(fwd, "+tcp", "www.dnsmasq.test", "AAAA")
    assert aaaa.transport == "TCP" and [r.data for r in aaaa.answer] == ["2001:db8::53"]
    txt = dig(fwd, "txt.dnsmasq.test", "TXT")
    assert [r.data for r in txt.answer] == ['"served by dnsmasq"']
    nx = dig(fwd, "nope.dnsmasq.test", "A")
    assert nx.status == "NXDOMAIN" and nx.flags == {"qr", "rd", "ra"} and nx.answer == []
    again = dig(fwd, "www.dnsmasq.test", "A")
    assert again.answer == a.answer
    fwd.ask("txt.dnsmasq.test", "MX")  # the barrier, as above
    dnsmasq.wait_logged("txt.dnsmasq.test", 2)
    assert dnsmasq.queries_logged().count("www.dnsmasq.test") == 2  # A and AAAA, once each


def test_dig_noedns_and_dnssec(fwd: RunningServer) -> None:
    plain = dig(fwd, "+noedns", "www.dnsmasq.test", "A")
    assert plain.status == "NOERROR" and plain.edns is None
    signed = dig(fwd, "+dnssec", "www.dnsmasq.test", "AAAA")
    assert signed.edns == (0, {"do"}, 1232)
    assert [r.data for r in signed.answer if r.rdtype == "AAAA"] == ["2001:db8::53"]
