"""`top<N>.nearest.of.<app>.internal` (SPEC §2, §3): the N started machines nearest the querier's region.

The querier's region is the region of the machine or peer that owns the query's source address,
else the listener's `region`, else the server's `region`, else unknown (then machine-id order).
To send from an owned address without root, the test registry gives its network the loopback
prefix 127.18.0.0/16 (a source inside a network's prefix selects that network's view) and its
machines `ip4`s in it; peers only have `ip6`, so the peer case gives a network the prefix `::/120`
and a peer the address ::1, asked over an IPv6 listener.

Expected orders are computed here, independently of internal_dns.authority.geo: haversine distances on the
coordinates of zones/regions.yaml, the same region at distance 0, ties to the lower machine id.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EMBEDDED_ZONES, RunningServer, write_yaml
from tests.dnsclient import Reply

REGIONS: dict[str, tuple[float, float]] = {
    r["code"]: (r["latitude"], r["longitude"]) for r in yaml.safe_load((EMBEDDED_ZONES / "regions.yaml").read_text())["regions"]
}
# Three regions of this test on the equator: eqa and eqb lie exactly as far from eqo.
TIE_REGIONS = {"eqo": (0.0, 0.0), "eqa": (0.0, 10.0), "eqb": (0.0, -10.0)}
COORDINATES = {**REGIONS, **TIE_REGIONS}


def haversine_km(a: str, b: str) -> float:
    if a == b:
        return 0.0
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, COORDINATES[c])) for c in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


# --- the test registry -----------------------------------------------------------------------

# app `svc`: (id, region, state, dns); ids out of both file order and distance order
SVC = [
    ("c41d0a9e7b2f10", "iad", "started", True),
    ("0a7e55d21c9b33", "sea", "started", True),
    ("9f02b7c4e1d8a6", "ams", "started", True),
    ("5b8e13f0a2c7d9", "syd", "started", True),
    ("e7c3a9d05b1f42", "nrt", "started", True),
    ("2d6f8b1e9a0c57", "fra", "started", True),
    ("71a4c0e8d3b6f5", "gru", "started", True),
    ("b0e9d2f4c6a813", "lhr", "started", True),
    ("3c5a7e9b1d0f26", "lhr", "started", True),  # same region as the one above, lower id
    ("8e1b3d5f7a9c04", "sin", "started", True),
    ("4f6a8c0e2b4d17", "yyz", "stopped", True),  # not started: never in nearest
    ("1b3d5f7a9c0e28", "ewr", "started", False),  # dns: false: never in DNS
]
# app `tie`: equidistant regions from eqo; the lower id lies in the region whose code sorts last
TIE = [
    ("f0000000000001", "eqa", "started", True),
    ("50000000000002", "eqb", "started", True),
    ("a0000000000003", "eqo", "started", True),
    ("70000000000004", "eqo", "started", True),
    ("d0000000000005", "eqa", "started", True),
]
# app `clients`: machines whose ip4 the tests send from
CLIENTS = {
    "syd": ("c0000000000001", "127.18.1.1"),
    "fra": ("c0000000000002", "127.18.1.2"),
    "sjc": ("c0000000000003", "127.18.1.3"),
    "jnb": ("c0000000000004", "127.18.1.4"),
    "eqo": ("c0000000000005", "127.18.1.5"),
}
UNOWNED = "127.18.200.1"  # inside the network's prefix, owned by nobody

V6_APP = [  # app `svc6` on the IPv6 loopback network
    ("11000000000001", "ams", "started", True),
    ("22000000000002", "nrt", "started", True),
    ("33000000000003", "iad", "started", True),
    ("44000000000004", "syd", "started", True),
]


def svc_ip4(i: int) -> str:
    return f"127.18.0.{10 + i}"


def svc_ip6(machine_id: str) -> str:
    """A unique address from the id, written as the server prints it."""
    groups = ":".join(machine_id[i : i + 4] for i in range(0, 14, 4))
    return str(ipaddress.IPv6Address(f"fdaa:0:77:a7b:{groups}"))


def write_registry(folder: Path, peer: dict[str, Any] | None = None) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "regions.yaml").write_text((EMBEDDED_ZONES / "regions.yaml").read_text())
    write_yaml(
        folder / "ties.yaml", {"regions": [{"code": c, "latitude": la, "longitude": lo} for c, (la, lo) in TIE_REGIONS.items()]}
    )
    machines = [
        {"id": mid, "app": "svc", "region": region, "state": state, "dns": dns, "ip6": svc_ip6(mid), "ip4": svc_ip4(i)}
        for i, (mid, region, state, dns) in enumerate(SVC)
    ]
    machines += [
        {"id": mid, "app": "tie", "region": region, "state": state, "dns": dns, "ip6": svc_ip6(mid)}
        for mid, region, state, dns in TIE
    ]
    machines += [
        {"id": mid, "app": "clients", "region": region, "ip6": svc_ip6(mid), "ip4": ip4} for region, (mid, ip4) in CLIENTS.items()
    ]
    machines += [
        {"id": mid, "app": "svc6", "region": region, "state": state, "ip6": f"::{i + 16:x}"}
        for i, (mid, region, state, _) in enumerate(V6_APP)
    ]
    write_yaml(
        folder / "geo.yaml",
        {
            "networks": [
                {"name": "geo", "prefix6": "fdaa:0:77::/48", "prefix4": "127.18.0.0/16"},
                {"name": "loop6", "prefix6": "::/120"},
            ],
            "apps": [
                {"name": "svc", "network": "geo"},
                {"name": "tie", "network": "geo"},
                {"name": "clients", "network": "geo"},
                {"name": "empty", "network": "geo"},
                {"name": "svc6", "network": "loop6"},
            ],
            "machines": machines,
            "peers": [peer] if peer else [],
        },
    )


@pytest.fixture
def geo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "geo"
    write_registry(folder, {"name": "desk", "network": "loop6", "ip6": "::1", "region": "nrt"})
    return folder


def nearest(machines: list[tuple[Any, ...]], origin: str | None) -> list[str]:
    """Started dns:true machine ids, nearest first, ties to the lower id; id order without an origin."""
    live = [m for m in machines if m[2] == "started" and m[3]]
    if origin is None:
        return sorted(m[0] for m in live)
    return [m[0] for m in sorted(live, key=lambda m: (haversine_km(origin, m[1]), m[0]))]


SVC_IP6 = {m[0]: svc_ip6(m[0]) for m in SVC + TIE}
V6_IP6 = {m[0]: f"::{i + 16:x}" for i, m in enumerate(V6_APP)}


def check_topn(server: RunningServer, app: str, expected_ids: list[str], ips: dict[str, str], **ask: Any) -> None:
    """top1..topK+1 and a huge N all give prefixes of the expected order (never rotated)."""
    expected = [ips[i] for i in expected_ids]
    for n in [*range(1, len(expected) + 2), 10**30]:
        name = f"top{n}.nearest.of.{app}.internal"
        reply: Reply = server.ask(name, **ask)
        assert reply.rcode_text == "NOERROR" and reply.flag("AA")
        assert reply.addresses() == expected[:n], (name, ask)
        assert all(rrset.ttl == 5 for rrset in reply.msg.answer)


def test_expected_orders_are_distinct() -> None:
    """The orders the tests tell apart really differ, so a wrong origin cannot pass by accident."""
    origins = ["iad", "syd", "fra", "sjc", "jnb", "gru", "nrt", None]
    orders = [tuple(nearest(SVC, o)) for o in origins]
    assert len(set(orders)) == len(orders)
    # and no two distances any test compares are within rounding of each other
    for origin in origins[:-1]:
        ds = sorted({round(haversine_km(origin, m[1]), 6) for m in SVC})
        assert all(b - a > 1 for a, b in zip(ds, ds[1:], strict=False)), origin


# --- the querier's own machine --------------------------------------------------------------


def test_nearest_from_the_querier_machine_region(geo_dir: Path, start_server: Callable[..., RunningServer]) -> None:
    server = start_server(registry=geo_dir, region="iad")
    for region, (_, ip4) in CLIENTS.items():
        if region == "eqo":
            continue
        check_topn(server, "svc", nearest(SVC, region), SVC_IP6, source=ip4)
    # a svc machine asking: its own region (lhr, two machines) comes first, lower id first
    lhr_source = svc_ip4(7)
    order = nearest(SVC, "lhr")
    assert order[:2] == ["3c5a7e9b1d0f26", "b0e9d2f4c6a813"]
    check_topn(server, "svc", order, SVC_IP6, source=lhr_source)
    check_topn(server, "svc", order, SVC_IP6, source=lhr_source, tcp=True)
    # an app without machines exists: NOERROR, nothing
    reply = server.ask("top3.nearest.of.empty.internal", source=CLIENTS["syd"][1])
    assert reply.rcode_text == "NOERROR" and reply.msg.answer == [] and reply.soa() is not None


def test_ties_go_to_the_lower_machine_id(geo_dir: Path, start_server: Callable[..., RunningServer]) -> None:
    server = start_server(registry=geo_dir, region="iad")
    assert haversine_km("eqo", "eqa") == haversine_km("eqo", "eqb")
    # eqo itself (distance 0, by id), then eqa and eqb at the same distance, by id across both
    expected = ["70000000000004", "a0000000000003", "50000000000002", "d0000000000005", "f0000000000001"]
    assert nearest(TIE, "eqo") == expected
    check_topn(server, "tie", expected, SVC_IP6, source=CLIENTS["eqo"][1])


# --- no owner: listener, then server, then machine-id order ---------------------------------


def test_unowned_source_uses_the_server_region(geo_dir: Path, start_server: Callable[..., RunningServer]) -> None:
    server = start_server(registry=geo_dir, region="gru")
    check_topn(server, "svc", nearest(SVC, "gru"), SVC_IP6, source=UNOWNED)
    check_topn(server, "svc", nearest(SVC, "syd"), SVC_IP6, source=CLIENTS["syd"][1])


def test_listener_region_beats_the_server_region(geo_dir: Path, start_server: Callable[..., RunningServer]) -> None:
    server = start_server(registry=geo_dir, region="gru", listen=[{"address": "127.0.0.1", "port": 0, "region": "nrt"}])
    check_topn(server, "svc", nearest(SVC, "nrt"), SVC_IP6, source=UNOWNED)
    # the querier's own region still comes first
    check_topn(server, "svc", nearest(SVC, "fra"), SVC_IP6, source=CLIENTS["fra"][1])


def test_no_region_at_all_orders_by_machine_id(geo_dir: Path, start_server: Callable[..., RunningServer]) -> None:
    server = start_server(registry=geo_dir, region=None)
    by_id = nearest(SVC, None)
    assert by_id == sorted(m[0] for m in SVC if m[2] == "started" and m[3])
    check_topn(server, "svc", by_id, SVC_IP6, source=UNOWNED)
    check_topn(server, "tie", nearest(TIE, None), SVC_IP6, source=UNOWNED)
    check_topn(server, "svc", nearest(SVC, "jnb"), SVC_IP6, source=CLIENTS["jnb"][1])


def test_example_registry_from_the_server_region(start_server: Callable[..., RunningServer]) -> None:
    """zones/personal.yaml's my-app and api, asked from 127.0.0.1 (personal, no owner)."""
    my_app = [
        ("148e21dad76789", "sea", "started", True),
        ("4d89699c030518", "ams", "started", True),
        ("6e82933c1d7e48", "iad", "started", True),
        ("91851edb6e5187", "iad", "stopped", True),
        ("e2865013a3d438", "syd", "suspended", True),
        ("d8dd5d4b2a6e68", "lhr", "started", False),
    ]
    ips = {
        "148e21dad76789": "fdaa:0:18:a7b:7d:f066:b83b:2",
        "4d89699c030518": "fdaa:0:18:a7b:c4:5b1:8f2e:2",
        "6e82933c1d7e48": "fdaa:0:18:a7b:9f:3c21:44d0:2",
    }
    for region in ("iad", "syd", "ams", "sea"):
        server = start_server(region=region)
        check_topn(server, "my-app", nearest(my_app, region), ips)
    server = start_server(region=None)
    check_topn(server, "my-app", nearest(my_app, None), ips)


# --- a peer owns the source --------------------------------------------------------------------


def ask_v6(start_server: Callable[..., RunningServer], registry: Path, region: str | None) -> tuple[RunningServer, int]:
    server = start_server(
        registry=registry,
        region=region,
        listen=[{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0}],
    )
    host, port = server.service.bound_ports()[1]
    assert host == "::1"
    return server, port


def test_nearest_from_the_querier_peer_region(geo_dir: Path, start_server: Callable[..., RunningServer]) -> None:
    server, port = ask_v6(start_server, geo_dir, "iad")
    order = nearest(V6_APP, "nrt")
    assert order[0] == "22000000000002" and order != nearest(V6_APP, "iad")
    check_topn(server, "svc6", order, V6_IP6, source="::1", host="::1", port=port)
    peers = server.ask("_peer.internal", "TXT", source="::1", host="::1", port=port)
    assert peers.txt() == ["desk"]


def test_peer_without_region_falls_back_to_the_server(tmp_path: Path, start_server: Callable[..., RunningServer]) -> None:
    folder = tmp_path / "geo"
    write_registry(folder, {"name": "desk", "network": "loop6", "ip6": "::1"})
    server, port = ask_v6(start_server, folder, "syd")
    check_topn(server, "svc6", nearest(V6_APP, "syd"), V6_IP6, source="::1", host="::1", port=port)
