"""schemes/railway.py (SPEC §5): `<service>.railway.internal` answers A and AAAA of the started replicas;
a legacy (IPv6-only) environment has no A records; anything else is NXDOMAIN."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from internal_dns.authority.schemes import SCHEMES
from internal_dns.authority.schemes.railway import lookup
from internal_dns.authority.views import View
from internal_dns.records import AAAA, A, Node
from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents
from internal_dns.registry.model import Document, Snapshot

ZONES_DIR = Path(__file__).resolve().parents[2] / "zones"
PRODUCTION = View("shop-production", None)
STAGING = View("shop-staging", None)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return build_snapshot(load_documents(ZONES_DIR))


def records(node: Node | None) -> dict[int, list[str]]:
    assert node is not None, "NXDOMAIN"
    return {rtype: [str(ip_address(rd)) for rd in rs.rdatas] for rtype, rs in node.records.items()}


def test_the_scheme_is_registered() -> None:
    assert SCHEMES["railway"] is lookup


def test_a_dual_stack_service(snapshot: Snapshot) -> None:
    node = lookup(snapshot, PRODUCTION, ("web",), "railway.internal")
    assert records(node) == {
        A: ["10.250.1.10", "10.250.1.11"],
        AAAA: ["fd12:3456:7800:1::a", "fd12:3456:7800:1::b"],
    }
    assert node is not None and node.records[A].rotates and node.records[AAAA].rotates
    assert records(lookup(snapshot, PRODUCTION, ("postgres",), "railway.internal")) == {
        A: ["10.250.2.10"],
        AAAA: ["fd12:3456:7800:2::a"],
    }


def test_a_legacy_environment_has_no_a_records(snapshot: Snapshot) -> None:
    assert records(lookup(snapshot, STAGING, ("web",), "railway.internal")) == {AAAA: ["fd12:3456:7900:1::a"]}


def test_a_service_without_started_replicas_exists_empty(snapshot: Snapshot) -> None:
    assert records(lookup(snapshot, STAGING, ("postgres",), "railway.internal")) == {AAAA: []}


@pytest.mark.parametrize(
    ("view", "labels"),
    [
        (PRODUCTION, ("nope",)),
        (PRODUCTION, ("a1f0c3e2d4b5a6", "vm", "web")),  # no Fly forms here
        (PRODUCTION, ("x", "web")),
        (PRODUCTION, ("_apps",)),
        (View("personal", None), ("web",)),  # another network's service
        (STAGING, ("billing",)),  # other-org's app
    ],
)
def test_everything_else_is_nxdomain(snapshot: Snapshot, view: View, labels: tuple[str, ...]) -> None:
    assert lookup(snapshot, view, labels, "railway.internal") is None


def test_a_fly_network_in_the_railway_zone(snapshot: Snapshot) -> None:
    # The scheme reads any network: personal's apps are its services there.
    result = records(lookup(snapshot, View("personal", None), ("my-app",), "railway.internal"))
    assert result[A] == ["10.18.0.2"]  # only 148e21dad76789 has an ip4
    assert result[AAAA] == ["fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"]


def registry(**sections: list[dict[str, Any]]) -> Snapshot:
    data: dict[str, list[dict[str, Any]]] = {
        "regions": [{"code": "sjc", "latitude": 37.36, "longitude": -121.93}],
        "networks": [{"name": "env", "prefix6": "fd00:1::/48", "prefix4": "10.1.0.0/16"}],
        "apps": [{"name": "api", "network": "env"}],
    }
    data.update(sections)
    return build_snapshot([Document("test.yaml", data)])


def test_only_started_replicas_and_only_those_with_ip4_for_a() -> None:
    snap = registry(
        machines=[
            {"id": "c3", "app": "api", "region": "sjc", "ip6": "fd00:1::c3", "ip4": "10.1.0.3"},
            {"id": "a1", "app": "api", "region": "sjc", "ip6": "fd00:1::a1"},
            {"id": "b2", "app": "api", "region": "sjc", "ip6": "fd00:1::b2", "ip4": "10.1.0.2", "state": "stopped"},
            {"id": "d4", "app": "api", "region": "sjc", "ip6": "fd00:1::d4", "ip4": "10.1.0.4", "dns": False},
        ]
    )
    assert records(lookup(snap, View("env", None), ("api",), "railway.internal")) == {
        A: ["10.1.0.3"],
        AAAA: ["fd00:1::a1", "fd00:1::c3"],
    }


def test_a_dual_stack_service_without_any_ip4_has_an_empty_a_set() -> None:
    snap = registry(machines=[{"id": "a1", "app": "api", "region": "sjc", "ip6": "fd00:1::a1"}])
    assert records(lookup(snap, View("env", None), ("api",), "railway.internal")) == {A: [], AAAA: ["fd00:1::a1"]}
