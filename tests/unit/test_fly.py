"""schemes/fly.py (SPEC §3): every `.internal` form, existence (None = NXDOMAIN, a Node without the type
= NODATA) and exact record contents, over the embedded registry and small hand-made ones."""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from internal_dns.authority.schemes import SCHEMES
from internal_dns.authority.schemes.fly import instances_txt, lookup, regions_txt, vms_txt
from internal_dns.authority.views import View
from internal_dns.records import AAAA, TXT, Node
from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents
from internal_dns.registry.model import Document, Snapshot

ZONES_DIR = Path(__file__).resolve().parents[2] / "zones"
IAD = View("personal", "iad")
NOWHERE = View("personal", None)

M148 = "fdaa:0:18:a7b:7d:f066:b83b:2"  # sea, started, app, role=primary
M4D8 = "fdaa:0:18:a7b:c4:5b1:8f2e:2"  # ams, started, app, role=replica
M6E8 = "fdaa:0:18:a7b:9f:3c21:44d0:2"  # iad, started, worker, role=replica
MY_APP = [M148, M4D8, M6E8]


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return build_snapshot(load_documents(ZONES_DIR))


def find(snapshot: Snapshot, name: str, view: View = IAD) -> Node | None:
    """`name` relative to the zone `internal`."""
    return lookup(snapshot, view, tuple(name.split(".")), "internal")


def aaaa(snapshot: Snapshot, name: str, view: View = IAD) -> list[str]:
    node = find(snapshot, name, view)
    assert node is not None, f"{name}: NXDOMAIN"
    assert set(node.records) == {AAAA}
    return [str(IPv6Address(rd)) for rd in node.records[AAAA].rdatas]


def strings(rdata: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(rdata):
        n = rdata[pos]
        out.append(rdata[pos + 1 : pos + 1 + n])
        pos += 1 + n
    assert pos == len(rdata)
    return out


def txt(snapshot: Snapshot, name: str, view: View = IAD) -> str:
    node = find(snapshot, name, view)
    assert node is not None, f"{name}: NXDOMAIN"
    assert set(node.records) == {TXT}
    (rdata,) = node.records[TXT].rdatas
    parts = strings(rdata)
    assert all(len(p) == 255 for p in parts[:-1])
    return b"".join(parts).decode()


def registry(**sections: list[dict[str, Any]]) -> Snapshot:
    base: dict[str, list[dict[str, Any]]] = {
        "regions": [
            {"code": "iad", "latitude": 38.95, "longitude": -77.46},
            {"code": "ewr", "latitude": 40.69, "longitude": -74.17},
            {"code": "syd", "latitude": -33.95, "longitude": 151.18},
        ],
        "networks": [{"name": "net", "prefix6": "fdaa:9::/48"}],
        "apps": [{"name": "app", "network": "net"}],
    }
    base.update(sections)
    return build_snapshot([Document("test.yaml", base)])


def test_the_scheme_is_registered() -> None:
    assert SCHEMES["fly"] is lookup


# --- address forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["my-app", "global.my-app"])
def test_an_apps_started_machines_in_id_order(snapshot: Snapshot, name: str) -> None:
    assert aaaa(snapshot, name) == MY_APP
    node = find(snapshot, name)
    assert node is not None and node.records[AAAA].rotates


def test_a_region_of_the_app(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "sea.my-app") == [M148]
    assert aaaa(snapshot, "iad.my-app") == [M6E8]  # the stopped iad machine is left out
    assert aaaa(snapshot, "syd.my-app") == []  # only a suspended machine there: NODATA
    assert aaaa(snapshot, "lhr.my-app") == []  # only a dns: false machine there
    assert aaaa(snapshot, "nrt.my-app") == []  # a known region code without machines


@pytest.mark.parametrize("name", ["xyz.my-app", "all.my-app", "vms2.my-app", "sea.global.my-app"])
def test_a_label_in_the_region_position_that_is_no_region_is_nxdomain(snapshot: Snapshot, name: str) -> None:
    assert find(snapshot, name) is None


def test_a_machine_by_id(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "148e21dad76789.vm.my-app") == [M148]
    assert aaaa(snapshot, "91851edb6e5187.vm.my-app") == []  # stopped: NODATA
    assert aaaa(snapshot, "e2865013a3d438.vm.my-app") == []  # suspended: NODATA


@pytest.mark.parametrize(
    "name",
    [
        "ffffffffffffff.vm.my-app",  # unknown id
        "d8dd5d4b2a6e68.vm.my-app",  # dns: false
        "3287d4e1b09e28.vm.my-app",  # a machine of another app
        "1781973f5e4389.vm.billing",  # of another network
        "148e21dad76789.vm.api",
    ],
)
def test_an_unknown_machine_id_is_nxdomain(snapshot: Snapshot, name: str) -> None:
    assert find(snapshot, name) is None


def test_a_process_group(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "worker.process.my-app") == [M6E8]  # e2865013a3d438 is suspended
    assert aaaa(snapshot, "app.process.my-app") == [M148, M4D8]
    assert aaaa(snapshot, "none.process.my-app") == []


def test_metadata(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "primary.role.kv._metadata.my-app") == [M148]
    assert aaaa(snapshot, "replica.role.kv._metadata.my-app") == [M4D8, M6E8]
    assert aaaa(snapshot, "nobody.role.kv._metadata.my-app") == []
    assert aaaa(snapshot, "primary.other.kv._metadata.my-app") == []


def test_metadata_matches_ignore_case() -> None:
    snap = registry(
        machines=[
            {"id": "a1", "app": "app", "region": "iad", "ip6": "fdaa:9::a1", "metadata": {"Role": "Primary"}},
            {"id": "a2", "app": "app", "region": "iad", "ip6": "fdaa:9::a2", "metadata": {"role": "replica", "n": 8}},
            {"id": "a3", "app": "app", "region": "iad", "ip6": "fdaa:9::a3", "state": "stopped", "metadata": {"role": "primary"}},
        ]
    )
    view = View("net", None)
    assert aaaa(snap, "primary.role.kv._metadata.app", view) == ["fdaa:9::a1"]
    assert aaaa(snap, "8.n.kv._metadata.app", view) == ["fdaa:9::a2"]  # numbers read as their text


# --- nearest ---------------------------------------------------------------------------------------


def test_nearest_orders_by_distance_from_the_askers_region(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "top1.nearest.of.my-app") == [M6E8]
    assert aaaa(snapshot, "top2.nearest.of.my-app") == [M6E8, M148]  # iad, then sea (closer than ams)
    assert aaaa(snapshot, "top3.nearest.of.my-app") == [M6E8, M148, M4D8]
    assert aaaa(snapshot, "top3.nearest.of.my-app", View("personal", "ams")) == [M4D8, M6E8, M148]
    assert aaaa(snapshot, "top3.nearest.of.my-app", View("personal", "syd")) == [M148, M6E8, M4D8]


def test_nearest_is_not_rotated(snapshot: Snapshot) -> None:
    node = find(snapshot, "top3.nearest.of.my-app")
    assert node is not None and not node.records[AAAA].rotates


def test_nearest_without_a_known_region_is_id_order(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "top3.nearest.of.my-app", NOWHERE) == MY_APP
    assert aaaa(snapshot, "top2.nearest.of.my-app", View("personal", "nowhere")) == MY_APP[:2]


def test_nearest_beyond_the_machine_count_returns_them_all(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "top10.nearest.of.my-app") == [M6E8, M148, M4D8]
    assert aaaa(snapshot, f"top{'9' * 60}.nearest.of.my-app") == [M6E8, M148, M4D8]
    assert aaaa(snapshot, "top1.nearest.of.cron") == []


def test_nearest_ties_go_to_the_lower_id() -> None:
    snap = registry(
        machines=[
            {"id": "c3", "app": "app", "region": "ewr", "ip6": "fdaa:9::c3"},
            {"id": "b2", "app": "app", "region": "syd", "ip6": "fdaa:9::b2"},
            {"id": "a1", "app": "app", "region": "ewr", "ip6": "fdaa:9::a1"},
            {"id": "d4", "app": "app", "region": "iad", "ip6": "fdaa:9::d4"},
        ]
    )
    expected = ["fdaa:9::a1", "fdaa:9::c3", "fdaa:9::d4", "fdaa:9::b2"]  # ewr, ewr, iad, syd
    assert aaaa(snap, "top4.nearest.of.app", View("net", "ewr")) == expected


@pytest.mark.parametrize("top", ["top0", "top01", "topx", "top", "top-1", "top1a", "top+1", "top 1", "top١"])
def test_bad_top_n_is_nxdomain(snapshot: Snapshot, top: str) -> None:
    assert find(snapshot, f"{top}.nearest.of.my-app") is None


def test_top_n_with_a_trailing_newline_is_nxdomain(snapshot: Snapshot) -> None:
    assert lookup(snapshot, IAD, ("top1\n", "nearest", "of", "my-app"), "internal") is None


# --- empty non-terminals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "vm.my-app",
        "process.my-app",
        "of.my-app",
        "nearest.of.my-app",
        "_metadata.my-app",
        "kv._metadata.my-app",
        "role.kv._metadata.my-app",
        "nokey.kv._metadata.my-app",
        "vm.docs",
    ],
)
def test_empty_non_terminals_exist_without_records(snapshot: Snapshot, name: str) -> None:
    node = find(snapshot, name)
    assert node is not None and dict(node.records) == {}


@pytest.mark.parametrize("name", ["vm.billing", "of.nope", "kv._metadata.billing"])
def test_empty_non_terminals_of_unknown_apps_are_nxdomain(snapshot: Snapshot, name: str) -> None:
    assert find(snapshot, name) is None


# --- TXT lists -------------------------------------------------------------------------------------


def test_vms(snapshot: Snapshot) -> None:
    assert txt(snapshot, "vms.my-app") == "148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad"
    assert txt(snapshot, "all.vms.my-app") == (
        "148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad,91851edb6e5187 iad,e2865013a3d438 syd"
    )


def test_regions(snapshot: Snapshot) -> None:
    assert txt(snapshot, "regions.my-app") == "ams,iad,sea"
    assert txt(snapshot, "all.regions.my-app") == "ams,iad,sea,syd"  # never lhr: dns: false


def test_empty_lists_are_one_empty_string(snapshot: Snapshot) -> None:
    for name in ("vms.cron", "regions.cron", "vms.docs", "all.regions.docs"):
        node = find(snapshot, name)
        assert node is not None and node.records[TXT].rdatas == (b"\x00",)
    assert txt(snapshot, "all.vms.cron") == "0e286039f42e86 ord"


def test_apps_and_peers(snapshot: Snapshot) -> None:
    assert txt(snapshot, "_apps") == "api,cron,docs,my-app"
    assert txt(snapshot, "_peer") == "ci-runner,my-laptop"  # interactive-* left out
    assert txt(snapshot, "_apps", View("other-org", None)) == "billing"
    assert txt(snapshot, "_peer", View("other-org", None)) == "office-vpn"


def test_a_peer(snapshot: Snapshot) -> None:
    assert aaaa(snapshot, "my-laptop._peer") == ["fdaa:0:18:a7b:d6b:0:a:2"]
    node = find(snapshot, "my-laptop._peer")
    assert node is not None and not node.records[AAAA].rotates


@pytest.mark.parametrize("name", ["interactive-1669ba3d9._peer", "nobody._peer", "office-vpn._peer"])
def test_unknown_interactive_and_foreign_peers_are_nxdomain(snapshot: Snapshot, name: str) -> None:
    assert find(snapshot, name) is None


def test_instances_are_split_into_255_byte_strings(snapshot: Snapshot) -> None:
    value = txt(snapshot, "_instances")
    assert value.split(";") == [
        "instance=148e21dad76789,app=my-app,ip=fdaa:0:18:a7b:7d:f066:b83b:2,region=sea",
        "instance=3287d4e1b09e28,app=api,ip=fdaa:0:18:a7b:40:11c2:5d3e:2,region=fra",
        "instance=4d89699c030518,app=my-app,ip=fdaa:0:18:a7b:c4:5b1:8f2e:2,region=ams",
        "instance=5683e29f4d1118,app=api,ip=fdaa:0:18:a7b:41:8a0f:2b6c:2,region=iad",
        "instance=6e82933c1d7e48,app=my-app,ip=fdaa:0:18:a7b:9f:3c21:44d0:2,region=iad",
        "instance=9a0c6e4d2b8f31,app=api,ip=fdaa:0:18:a7b:43:5c2e:81f4:2,region=ams",  # critical: listed
    ]
    node = find(snapshot, "_instances")
    assert node is not None
    assert [len(s) for s in strings(node.records[TXT].rdatas[0])] == [255, len(value) - 255]


def test_all_instances(snapshot: Snapshot) -> None:
    ids = [entry.split(",")[0] for entry in txt(snapshot, "all._instances").split(";")]
    assert ids == [
        "instance=0e286039f42e86",
        "instance=148e21dad76789",
        "instance=3287d4e1b09e28",
        "instance=4d89699c030518",
        "instance=5683e29f4d1118",
        "instance=6e82933c1d7e48",
        "instance=7811b66c2e4e08",
        "instance=91851edb6e5187",
        "instance=9a0c6e4d2b8f31",
        "instance=e2865013a3d438",
    ]


def test_instances_of_a_network_without_machines_is_empty() -> None:
    snap = registry()
    node = lookup(snap, View("net", None), ("_instances",), "internal")
    assert node is not None and node.records[TXT].rdatas == (b"\x00",)


def test_list_formatters() -> None:
    snap = registry(
        machines=[
            {"id": "b2", "app": "app", "region": "syd", "ip6": "fdaa:9::b2"},
            {"id": "a1", "app": "app", "region": "ewr", "ip6": "fdaa:9::a1"},
            {"id": "c3", "app": "app", "region": "ewr", "ip6": "fdaa:9::c3"},
        ]
    )
    machines = snap.networks["net"].apps["app"].machines
    assert vms_txt(machines) == "a1 ewr,b2 syd,c3 ewr"
    assert regions_txt(machines) == "ewr,syd"
    assert instances_txt(machines[:1]) == "instance=a1,app=app,ip=fdaa:9::a1,region=ewr"
    assert vms_txt(()) == regions_txt(()) == instances_txt(()) == ""


# --- everything else is NXDOMAIN ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "nope",
        "billing",
        "x.y.my-app",
        "all",
        "all.all.vms.my-app",
        "x.vms.my-app",
        "vms.all.my-app",
        "_nope",
        "x._apps",
        "x._instances",
        "all._peer",
        "a.b._peer",
        "x.top1.nearest.of.my-app",
        "a.b.c.kv._metadata.my-app",
        "x.148e21dad76789.vm.my-app",
        "top1.nearest.my-app",
        "kv.my-app",
    ],
)
def test_other_shapes_are_nxdomain(snapshot: Snapshot, name: str) -> None:
    assert find(snapshot, name) is None


def test_views_see_only_their_own_network(snapshot: Snapshot) -> None:
    other = View("other-org", None)
    assert find(snapshot, "my-app", other) is None
    assert aaaa(snapshot, "billing", other) == ["fdaa:0:22:a7b:10:4c1d:2e3f:2", "fdaa:0:22:a7b:11:9a8b:7c6d:2"]
    assert find(snapshot, "web", View("shop-production", None)) is not None
    assert find(snapshot, "web") is None


def test_app_names_are_case_insensitive() -> None:
    snap = registry(
        apps=[{"name": "My-App", "network": "net"}],
        machines=[
            {"id": "a1", "app": "my-app", "region": "iad", "ip6": "fdaa:9::a1"},
        ],
    )
    assert aaaa(snap, "my-app", View("net", None)) == ["fdaa:9::a1"]
    assert txt(snap, "_apps", View("net", None)) == "My-App"
