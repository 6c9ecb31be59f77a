"""SPEC §3, Reverse (PTR): in the view's network, the reverse name of a machine's `ip6`/`ip4` (any
state) answers PTR `<id>.vm.<app>.internal.` (Railway: `<service>.railway.internal.`), a peer's
`<peer>._peer.internal.` (not `interactive-*`), a Flycast address `<app>.flycast.`; a `dns: false`
machine and everything else in a locally served reverse block is NXDOMAIN, as another network's
addresses are. Names above the view's own addresses exist (NODATA), so that a resolver walking
down the name (RFC 9156) reaches them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dns.reversename
import pytest
import yaml

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import Reply
from tests.fake_upstream import FakeUpstream

StartServer = Callable[..., RunningServer]

PERSONAL, OTHER_ORG, PRODUCTION, STAGING = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"


def reverse(address: str) -> str:
    return dns.reversename.from_address(address).to_text()


def ask_ptr(server: RunningServer, address: str, source: str = PERSONAL, tcp: bool = False, rdtype: str = "PTR") -> Reply:
    return server.ask(reverse(address), rdtype, source=source, tcp=tcp)


def ptr_of(server: RunningServer, address: str, source: str = PERSONAL) -> list[str]:
    reply = ask_ptr(server, address, source)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA"), (address, reply.rcode_text)
    assert {rrset.ttl for rrset in reply.msg.answer} == {5}
    return reply.ptr()


def assert_nxdomain(reply: Reply) -> None:
    assert reply.rcode_text == "NXDOMAIN" and reply.flag("AA") and not reply.msg.answer
    (soa,) = reply.msg.authority
    assert soa.name.to_text().endswith(".arpa.")


PERSONAL_NAMES = [
    ("fdaa:0:18:a7b:7d:f066:b83b:2", "148e21dad76789.vm.my-app.internal."),  # started
    ("10.18.0.2", "148e21dad76789.vm.my-app.internal."),  # its ip4
    ("fdaa:0:18:a7b:5e:71e9:c03a:2", "91851edb6e5187.vm.my-app.internal."),  # stopped
    ("fdaa:0:18:a7b:1a:9be2:6f10:2", "e2865013a3d438.vm.my-app.internal."),  # suspended
    ("fdaa:0:18:a7b:42:6e5d:90a1:2", "7811b66c2e4e08.vm.api.internal."),  # created
    ("fdaa:0:18:a7b:43:5c2e:81f4:2", "9a0c6e4d2b8f31.vm.api.internal."),  # critical: still its name
    ("fdaa:0:18:a7b:d6b:0:a:2", "my-laptop._peer.internal."),
    ("fdaa:0:18:a7b:d6b:0:b:2", "ci-runner._peer.internal."),
    ("fdaa:0:18:0:1::5", "api.flycast."),  # api's own Flycast address
    ("fdaa:0:18:0:1::9", "billing.flycast."),  # other-org's billing, allocated on personal
]


@pytest.mark.parametrize("tcp", [False, True])
def test_the_views_own_addresses_answer_their_names(server: RunningServer, tcp: bool) -> None:
    for address, name in PERSONAL_NAMES:
        reply = ask_ptr(server, address, tcp=tcp)
        assert reply.rcode_text == "NOERROR" and reply.flag("AA"), address
        assert reply.ptr() == [name], address


def test_each_name_answers_its_address_back(server: RunningServer) -> None:
    """Forward-confirmed reverse DNS: a started machine's, a peer's and a Flycast name lead back
    (an ip4's name too leads to the machine, by its 6PN address: `.internal` answers AAAA only)."""
    for address, name in PERSONAL_NAMES[:1] + PERSONAL_NAMES[6:9]:
        assert address in server.ask(name).addresses(), name


def test_unnamed_addresses_do_not_exist(server: RunningServer) -> None:
    for address in (
        "fdaa:0:18:a7b:2c:d3e4:1b7a:2",  # dns: false
        "fdaa:0:18:a7b:d6b:0:c:2",  # an interactive peer
        "fdaa:0:18:a7b:7d:f066:b83b:3",  # next to a machine
        "10.18.0.3",
        "fdaa:0:22:0:1::7",  # api's address on other-org's network: not personal's
        "fdaa:0:22:a7b:10:4c1d:2e3f:2",  # other-org's machine
        "fd12:3456:7800:1::a",  # shop-production's replica
    ):
        assert_nxdomain(ask_ptr(server, address))


def test_each_network_sees_its_own(server: RunningServer) -> None:
    assert ptr_of(server, "fdaa:0:22:a7b:10:4c1d:2e3f:2", OTHER_ORG) == ["1781973f5e4389.vm.billing.internal."]
    assert ptr_of(server, "fdaa:0:22:0:1::7", OTHER_ORG) == ["api.flycast."]  # allocated on other-org
    assert_nxdomain(ask_ptr(server, "fdaa:0:18:a7b:7d:f066:b83b:2", OTHER_ORG))
    assert_nxdomain(ask_ptr(server, "fdaa:0:18:0:1::9", OTHER_ORG))  # billing's, but on personal
    assert ptr_of(server, "10.250.1.11", PRODUCTION) == ["a1f0c3e2d4b5a7.vm.web.internal."]
    assert ptr_of(server, "fd12:3456:7900:2::a", STAGING) == ["d4c3f6a5b7c8d9.vm.postgres.internal."]  # stopped
    assert_nxdomain(ask_ptr(server, "fd12:3456:7800:1::a", STAGING))


def test_where_only_railway_is_served_replicas_answer_by_their_service(start_server: StartServer) -> None:
    server = start_server(zones={"railway.internal": "railway"})
    assert ptr_of(server, "10.250.1.11", PRODUCTION) == ["web.railway.internal."]
    assert ptr_of(server, "fd12:3456:7800:2::a", PRODUCTION) == ["postgres.railway.internal."]
    assert ptr_of(server, "fd12:3456:7900:1::a", STAGING) == ["web.railway.internal."]
    # no zone names a peer or a Flycast address here: they have no reverse name either
    assert_nxdomain(ask_ptr(server, "fdaa:0:18:a7b:d6b:0:a:2"))
    assert_nxdomain(ask_ptr(server, "fdaa:0:18:0:1::5"))


def test_names_above_the_views_addresses_are_empty_non_terminals(server: RunningServer) -> None:
    full = reverse("fdaa:0:18:a7b:7d:f066:b83b:2").split(".")
    for cut in (1, 8, 16, 24):
        name = ".".join(full[cut:])
        reply = server.ask(name, "PTR")
        assert reply.rcode_text == "NOERROR" and reply.flag("AA") and not reply.msg.answer, name
        assert reply.msg.authority[0].name.to_text().endswith(".arpa."), name
    assert server.ask("18.10.in-addr.arpa.", "PTR").rcode_text == "NOERROR"  # above 10.18.0.2
    assert server.ask("0.18.10.in-addr.arpa.", "PTR").rcode_text == "NOERROR"
    assert_nxdomain(server.ask("1.18.10.in-addr.arpa.", "PTR"))  # nothing named in 10.18.1.0/24
    # an address's name exists: other types are NODATA
    reply = ask_ptr(server, "fdaa:0:18:a7b:7d:f066:b83b:2", rdtype="AAAA")
    assert reply.rcode_text == "NOERROR" and not reply.msg.answer
    # above another network's addresses only: nothing
    other = reverse("fdaa:0:22:a7b:10:4c1d:2e3f:2").split(".")
    assert_nxdomain(server.ask(".".join(other[16:]), "PTR"))
    # a view whose network has nothing below a name: NXDOMAIN where personal gets NODATA
    assert_nxdomain(server.ask(".".join(full[16:]), "PTR", source=OTHER_ORG))


def test_the_query_case_is_kept_and_ignored(server: RunningServer) -> None:
    name = reverse("fdaa:0:18:a7b:7d:f066:b83b:2").upper()
    reply = server.ask(name, "PTR")
    assert reply.msg.answer[0].name.to_text() == name
    assert reply.ptr() == ["148e21dad76789.vm.my-app.internal."]


def test_reverse_names_of_the_networks_are_never_forwarded(start_server: StartServer) -> None:
    upstream = FakeUpstream()
    try:
        server = start_server(upstreams=[upstream.address], forward={"enabled": True})
        for address, name in PERSONAL_NAMES:
            assert ptr_of(server, address) == [name]
        assert_nxdomain(ask_ptr(server, "fdaa:0:18:ffff::1"))
        assert upstream.received == []
    finally:
        upstream.close()


def test_reverse_names_follow_the_registry(server: RunningServer, registry_dir: Path) -> None:
    assert ptr_of(server, "fdaa:0:18:a7b:7d:f066:b83b:2") == ["148e21dad76789.vm.my-app.internal."]
    path = registry_dir / "personal.yaml"
    data = yaml.safe_load(path.read_text())
    added = {"id": "abcdef01234567", "app": "api", "region": "iad", "state": "stopped", "ip6": "fdaa:0:18:a7b:99::2"}
    data["machines"].append(added)
    for machine in data["machines"]:
        if machine["id"] == "148e21dad76789":
            machine["checks"] = {"http": "critical"}  # its name stays; a check is no reason to lose it
    write_yaml(path, data)
    server.poll()
    assert ptr_of(server, "fdaa:0:18:a7b:99::2") == ["abcdef01234567.vm.api.internal."]
    assert ptr_of(server, "fdaa:0:18:a7b:7d:f066:b83b:2") == ["148e21dad76789.vm.my-app.internal."]
    data["machines"] = [m for m in data["machines"] if m["id"] != "abcdef01234567"]
    write_yaml(path, data)
    server.poll()
    assert_nxdomain(ask_ptr(server, "fdaa:0:18:a7b:99::2"))
