"""SPEC §5: zone `railway.internal`, `<service>.railway.internal` → the started replicas' addresses.

The test config maps 127.0.0.3 to shop-production (dual stack) and 127.0.0.4 to shop-staging
(legacy: IPv6 only). Both environments have `web` and `postgres`; staging's postgres is stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import Reply

PERSONAL, OTHER_ORG, PRODUCTION, STAGING = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
TTL = 5
FLY_ONLY = {"internal": "fly"}
BOTH = {"internal": "fly", "railway.internal": "railway"}


def assert_negative(reply: Reply, rcode: str, zone: str) -> None:
    assert reply.rcode_text == rcode
    assert reply.flag("AA")
    assert reply.msg.answer == []
    (rrset,) = reply.msg.authority
    assert rrset.name.to_text().lower() == zone and rrset.rdtype == 6 and rrset.ttl == TTL
    assert rrset[0].minimum == TTL


def assert_addresses(reply: Reply, rdtype: str, expected: list[str]) -> None:
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    assert sorted(reply.addresses(rdtype)) == sorted(expected)
    assert len(reply.msg.answer) == 1 and reply.msg.answer[0].ttl == TTL
    assert reply.msg.authority == []


@pytest.mark.parametrize("tcp", [False, True])
def test_production_answers_a_and_aaaa_of_started_replicas(server: RunningServer, tcp: bool) -> None:
    assert_addresses(server.ask("web.railway.internal", "A", source=PRODUCTION, tcp=tcp), "A", ["10.250.1.10", "10.250.1.11"])
    assert_addresses(
        server.ask("web.railway.internal", "AAAA", source=PRODUCTION, tcp=tcp),
        "AAAA",
        ["fd12:3456:7800:1::a", "fd12:3456:7800:1::b"],
    )
    assert_addresses(server.ask("postgres.railway.internal", "A", source=PRODUCTION, tcp=tcp), "A", ["10.250.2.10"])
    assert_addresses(server.ask("postgres.railway.internal", "AAAA", source=PRODUCTION, tcp=tcp), "AAAA", ["fd12:3456:7800:2::a"])


def test_a_legacy_environment_has_aaaa_only(server: RunningServer) -> None:
    assert_addresses(server.ask("web.railway.internal", "AAAA", source=STAGING), "AAAA", ["fd12:3456:7900:1::a"])
    assert_negative(server.ask("web.railway.internal", "A", source=STAGING), "NOERROR", "railway.internal.")
    reply = server.ask("web.railway.internal", "ANY", source=STAGING)
    assert reply.rcode_text == "NOERROR"
    assert [rrset.rdtype for rrset in reply.msg.answer] == [28]
    assert reply.addresses("AAAA") == ["fd12:3456:7900:1::a"]


def test_any_in_production_gives_both_families(server: RunningServer) -> None:
    reply = server.ask("web.railway.internal", "ANY", source=PRODUCTION)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    assert sorted(rrset.rdtype for rrset in reply.msg.answer) == [1, 28]
    assert sorted(reply.addresses("A")) == ["10.250.1.10", "10.250.1.11"]
    assert sorted(reply.addresses("AAAA")) == ["fd12:3456:7800:1::a", "fd12:3456:7800:1::b"]


def test_a_service_with_every_replica_stopped_is_nodata(server: RunningServer) -> None:
    for rdtype in ("AAAA", "A", "TXT"):
        assert_negative(server.ask("postgres.railway.internal", rdtype, source=STAGING), "NOERROR", "railway.internal.")


def test_stopped_replicas_are_left_out(server: RunningServer, registry_dir: Path) -> None:
    railway = yaml.safe_load((registry_dir / "railway.yaml").read_text())
    railway["machines"] += [
        {
            "id": "a1f0c3e2d4b5a8",
            "app": "web",
            "network": "shop-production",
            "region": "sjc",
            "state": "stopped",
            "ip6": "fd12:3456:7800:1::c",
            "ip4": "10.250.1.12",
        },
        {
            "id": "a1f0c3e2d4b5a9",
            "app": "web",
            "network": "shop-production",
            "region": "sjc",
            "state": "started",
            "ip6": "fd12:3456:7800:1::d",
            "ip4": "10.250.1.13",
            "dns": False,
        },
        {
            "id": "a1f0c3e2d4b5aa",
            "app": "web",
            "network": "shop-production",
            "region": "ams",
            "state": "started",
            "ip6": "fd12:3456:7800:1::e",
        },
    ]
    write_yaml(registry_dir / "railway.yaml", railway)
    server.poll()
    # a started replica without ip4 adds to AAAA only
    assert_addresses(server.ask("web.railway.internal", "A", source=PRODUCTION), "A", ["10.250.1.10", "10.250.1.11"])
    assert_addresses(
        server.ask("web.railway.internal", "AAAA", source=PRODUCTION),
        "AAAA",
        ["fd12:3456:7800:1::a", "fd12:3456:7800:1::b", "fd12:3456:7800:1::e"],
    )


def test_unknown_services_do_not_exist(server: RunningServer) -> None:
    for source in (PRODUCTION, STAGING):
        for name in ("nosuch.railway.internal", "api.railway.internal", "my-app.railway.internal", "billing.railway.internal"):
            for rdtype in ("A", "AAAA"):
                assert_negative(server.ask(name, rdtype, source=source), "NXDOMAIN", "railway.internal.")
    for name in ("web.railway.internal", "postgres.railway.internal"):
        assert_negative(server.ask(name, "A", source=PERSONAL), "NXDOMAIN", "railway.internal.")
        assert_negative(server.ask(name, "AAAA", source=OTHER_ORG), "NXDOMAIN", "railway.internal.")


def test_no_other_shape_exists(server: RunningServer) -> None:
    for name in (
        "x.web.railway.internal",
        "sjc.web.railway.internal",
        "a1f0c3e2d4b5a6.vm.web.railway.internal",
        "_apps.railway.internal",
        "vms.web.railway.internal",
    ):
        assert_negative(server.ask(name, "AAAA", source=PRODUCTION), "NXDOMAIN", "railway.internal.")


def test_each_environment_sees_its_own_web(server: RunningServer) -> None:
    prod = server.ask("web.railway.internal", "AAAA", source=PRODUCTION).addresses()
    staging = server.ask("web.railway.internal", "AAAA", source=STAGING).addresses()
    assert sorted(prod) == ["fd12:3456:7800:1::a", "fd12:3456:7800:1::b"]
    assert staging == ["fd12:3456:7900:1::a"]
    # and the same holds for the Fly names of the same services
    assert sorted(server.ask("web.internal", source=PRODUCTION).addresses()) == sorted(prod)
    assert server.ask("web.internal", source=STAGING).addresses() == staging


def test_addresses_rotate_between_answers(server: RunningServer) -> None:
    first = server.ask("web.railway.internal", "A", source=PRODUCTION).addresses("A")
    second = server.ask("web.railway.internal", "A", source=PRODUCTION).addresses("A")
    assert sorted(first) == sorted(second) == ["10.250.1.10", "10.250.1.11"]
    assert second == first[1:] + first[:1]


# --- railway.internal as a zone of its own ------------------------------------------------


@pytest.mark.parametrize("source", [PRODUCTION, STAGING, PERSONAL])
def test_the_apex_is_its_own_zone_when_both_schemes_are_on(server: RunningServer, source: str) -> None:
    soa = server.ask("railway.internal", "SOA", source=source)
    assert soa.rcode_text == "NOERROR" and soa.flag("AA")
    (rrset,) = soa.msg.answer
    assert rrset.name.to_text() == "railway.internal." and rrset.rdtype == 6 and rrset.ttl == TTL
    ns = server.ask("railway.internal", "NS", source=source)
    assert ns.rcode_text == "NOERROR" and ns.flag("AA") and len(ns.msg.answer) == 1 and ns.msg.answer[0].rdtype == 2
    # an empty non-terminal of `internal` and the apex of its own: NODATA, never NXDOMAIN
    for rdtype in ("AAAA", "A", "TXT"):
        assert_negative(server.ask("railway.internal", rdtype, source=source), "NOERROR", "railway.internal.")


def test_the_longest_zone_suffix_wins(server: RunningServer) -> None:
    assert_negative(server.ask("nosuch.railway.internal", source=PRODUCTION), "NXDOMAIN", "railway.internal.")
    assert_negative(server.ask("nosuch.internal", source=PRODUCTION), "NXDOMAIN", "internal.")
    assert server.ask("railway.internal", "SOA").msg.answer[0].name.to_text() == "railway.internal."
    assert server.ask("internal", "SOA").msg.answer[0].name.to_text() == "internal."


def with_railway_app(registry_dir: Path) -> None:
    """A Fly app named `railway` in shop-production, so Fly's `<region>.railway.internal` means something."""
    write_yaml(
        registry_dir / "railway-app.yaml",
        {
            "apps": [{"name": "railway", "network": "shop-production"}],
            "machines": [
                {"id": "fa11000000000a", "app": "railway", "region": "sjc", "ip6": "fd12:3456:7800:9::a", "ip4": "10.250.9.10"}
            ],
        },
    )


def test_with_both_schemes_railway_names_shadow_a_fly_app_called_railway(start_server: Any, registry_dir: Path) -> None:
    with_railway_app(registry_dir)
    server = start_server(zones=BOTH)
    assert_negative(server.ask("railway.internal", "AAAA", source=PRODUCTION), "NOERROR", "railway.internal.")
    assert server.ask("railway.internal", "SOA", source=PRODUCTION).msg.answer[0].rdtype == 6
    assert_negative(server.ask("sjc.railway.internal", source=PRODUCTION), "NXDOMAIN", "railway.internal.")
    assert_addresses(server.ask("web.railway.internal", "A", source=PRODUCTION), "A", ["10.250.1.10", "10.250.1.11"])
    assert_addresses(server.ask("railway.railway.internal", "A", source=PRODUCTION), "A", ["10.250.9.10"])


def test_with_only_the_fly_scheme_railway_internal_names_are_fly_names(start_server: Any, registry_dir: Path) -> None:
    server = start_server(zones=FLY_ONLY)
    # `web.railway.internal` is `<region>.<app>.internal` with app `railway`: no such app here
    for source in (PRODUCTION, STAGING, PERSONAL):
        for rdtype in ("A", "AAAA"):
            assert_negative(server.ask("web.railway.internal", rdtype, source=source), "NXDOMAIN", "internal.")
        assert_negative(server.ask("railway.internal", "AAAA", source=source), "NXDOMAIN", "internal.")
        assert_negative(server.ask("railway.internal", "SOA", source=source), "NXDOMAIN", "internal.")
    # the services remain Fly apps
    assert sorted(server.ask("web.internal", source=PRODUCTION).addresses()) == ["fd12:3456:7800:1::a", "fd12:3456:7800:1::b"]


def test_with_only_the_fly_scheme_an_app_called_railway_is_a_fly_app(start_server: Any, registry_dir: Path) -> None:
    with_railway_app(registry_dir)
    server = start_server(zones=FLY_ONLY)
    assert server.ask("railway.internal", source=PRODUCTION).addresses() == ["fd12:3456:7800:9::a"]
    assert server.ask("sjc.railway.internal", source=PRODUCTION).addresses() == ["fd12:3456:7800:9::a"]
    assert server.ask("vms.railway.internal", "TXT", source=PRODUCTION).txt() == ["fa11000000000a sjc"]
    # `web` in the region position is not a region code: NXDOMAIN, and A of the app is NODATA
    assert_negative(server.ask("web.railway.internal", "A", source=PRODUCTION), "NXDOMAIN", "internal.")
    assert_negative(server.ask("web.railway.internal", "AAAA", source=PRODUCTION), "NXDOMAIN", "internal.")
    assert_negative(server.ask("railway.internal", "A", source=PRODUCTION), "NOERROR", "internal.")
    # another environment has no app `railway`
    assert_negative(server.ask("railway.internal", source=STAGING), "NXDOMAIN", "internal.")
