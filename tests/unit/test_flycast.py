"""schemes/flycast.py (SPEC §4): `<app>.flycast` answers the app's Flycast addresses on the asker's
network; an app exists in a view when it is the network's own or has an address on it."""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from internal_dns.authority.schemes import SCHEMES
from internal_dns.authority.schemes.flycast import lookup
from internal_dns.authority.views import View
from internal_dns.records import AAAA, Node
from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents
from internal_dns.registry.model import Document, Snapshot

ZONES_DIR = Path(__file__).resolve().parents[2] / "zones"
PERSONAL = View("personal", "iad")
OTHER = View("other-org", None)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return build_snapshot(load_documents(ZONES_DIR))


def find(snapshot: Snapshot, view: View, *labels: str) -> Node | None:
    return lookup(snapshot, view, labels, "flycast")


def addresses(node: Node | None) -> list[str]:
    assert node is not None, "NXDOMAIN"
    assert set(node.records) == {AAAA}
    return [str(IPv6Address(rd)) for rd in node.records[AAAA].rdatas]


def test_the_scheme_is_registered() -> None:
    assert SCHEMES["flycast"] is lookup


def test_own_apps_answer_their_addresses_on_the_own_network(snapshot: Snapshot) -> None:
    assert addresses(find(snapshot, PERSONAL, "my-app")) == ["fdaa:0:18:0:1::3"]
    assert addresses(find(snapshot, PERSONAL, "api")) == ["fdaa:0:18:0:1::5"]  # not other-org's ::7


def test_an_address_allocated_on_another_network_is_seen_there_only(snapshot: Snapshot) -> None:
    assert addresses(find(snapshot, OTHER, "api")) == ["fdaa:0:22:0:1::7"]
    assert addresses(find(snapshot, PERSONAL, "billing")) == ["fdaa:0:18:0:1::9"]
    assert addresses(find(snapshot, OTHER, "billing")) == ["fdaa:0:22:0:1::2"]


def test_an_own_app_without_addresses_exists_with_none(snapshot: Snapshot) -> None:
    assert addresses(find(snapshot, PERSONAL, "cron")) == []
    assert addresses(find(snapshot, PERSONAL, "docs")) == []


@pytest.mark.parametrize(
    ("view", "labels"),
    [
        (OTHER, ("my-app",)),  # personal's app without an address on other-org
        (OTHER, ("cron",)),
        (PERSONAL, ("nope",)),
        (PERSONAL, ("x", "api")),  # no other form exists
        (PERSONAL, ("global", "api")),
        (PERSONAL, ("_apps",)),
        (View("shop-production", None), ("api",)),
    ],
)
def test_everything_else_is_nxdomain(snapshot: Snapshot, view: View, labels: tuple[str, ...]) -> None:
    assert lookup(snapshot, view, labels, "flycast") is None


def registry(**sections: list[dict[str, Any]]) -> Snapshot:
    data: dict[str, list[dict[str, Any]]] = {
        "regions": [{"code": "iad", "latitude": 38.95, "longitude": -77.46}],
        "networks": [{"name": "a", "prefix6": "fdaa:a::/48"}, {"name": "b", "prefix6": "fdaa:b::/48"}],
    }
    data.update(sections)
    return build_snapshot([Document("test.yaml", data)])


def test_machine_state_does_not_matter() -> None:
    snap = registry(
        apps=[{"name": "web", "network": "a", "flycast": [{"ip": "fdaa:a::f1"}]}],
        machines=[{"id": "a1", "app": "web", "region": "iad", "state": "stopped", "ip6": "fdaa:a::1"}],
    )
    assert addresses(lookup(snap, View("a", None), ("web",), "flycast")) == ["fdaa:a::f1"]


def test_addresses_are_sorted_and_rotate() -> None:
    snap = registry(apps=[{"name": "web", "network": "a", "flycast": [{"ip": f"fdaa:a::f{i}"} for i in (3, 1, 2)]}])
    node = lookup(snap, View("a", None), ("web",), "flycast")
    assert addresses(node) == ["fdaa:a::f1", "fdaa:a::f2", "fdaa:a::f3"]
    assert node is not None and node.records[AAAA].rotates


def test_apps_of_one_name_in_two_networks_share_the_name_on_a_third() -> None:
    snap = registry(
        networks=[
            {"name": "a", "prefix6": "fdaa:a::/48"},
            {"name": "b", "prefix6": "fdaa:b::/48"},
            {"name": "c", "prefix6": "fdaa:c::/48"},
        ],
        apps=[
            {"name": "web", "network": "a", "flycast": [{"ip": "fdaa:c::2", "network": "c"}]},
            {"name": "web", "network": "b", "flycast": [{"ip": "fdaa:c::1", "network": "c"}]},
        ],
    )
    assert addresses(lookup(snap, View("c", None), ("web",), "flycast")) == ["fdaa:c::1", "fdaa:c::2"]
    assert addresses(lookup(snap, View("a", None), ("web",), "flycast")) == []
