"""SPEC §2: which network a query is answered in, and the querier's region for `nearest`.

Every test asks over real sockets. Networks are told apart by what they answer: `_apps.internal`
lists exactly the view's apps, so it names the view without depending on anything else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EMBEDDED_ZONES, RunningServer, write_yaml

PERSONAL_APPS = "api,cron,docs,my-app"
OTHER_ORG_APPS = "billing"
PRIVATE_NAMES = [
    ("my-app.internal", "AAAA"),
    ("_apps.internal", "TXT"),
    ("internal", "SOA"),
    ("api.flycast", "AAAA"),
    ("web.railway.internal", "A"),
    ("railway.internal", "SOA"),
]

# A network whose IPv4 prefix is on loopback, so a test can send from inside it (127.22.0.9) while
# the config's `views:` maps all of 127/8 to `personal`.
LAB = {
    "networks": [{"name": "lab", "prefix6": "fdaa:0:77::/48", "prefix4": "127.22.0.0/16"}],
    "apps": [{"name": "probe", "network": "lab"}],
    "machines": [
        # 127.22.0.9 is the querier's own address: a machine in Sydney
        {"id": "9000000000000a", "app": "probe", "region": "syd", "state": "stopped", "ip6": "fdaa:0:77::9", "ip4": "127.22.0.9"},
        {"id": "5000000000000b", "app": "probe", "region": "iad", "ip6": "fdaa:0:77::b"},
        {"id": "2000000000000c", "app": "probe", "region": "fra", "ip6": "fdaa:0:77::c"},
        {"id": "1000000000000d", "app": "probe", "region": "fra", "ip6": "fdaa:0:77::d"},
        {"id": "7000000000000e", "app": "probe", "region": "nrt", "ip6": "fdaa:0:77::e"},
        {"id": "3000000000000f", "app": "probe", "region": "gru", "ip6": "fdaa:0:77::f"},
        {"id": "80000000000010", "app": "probe", "region": "sea", "ip6": "fdaa:0:77::10"},
        {"id": "40000000000011", "app": "probe", "region": "jnb", "ip6": "fdaa:0:77::11"},
    ],
}

# A network holding ::1, the one IPv6 source a test can send from; a peer owns that address.
LOOP6 = {
    "networks": [{"name": "loop6", "prefix6": "::/64"}],
    "apps": [{"name": "probe6", "network": "loop6"}],
    "machines": [
        {"id": "6100000000000a", "app": "probe6", "region": "syd", "ip6": "::a"},
        {"id": "6200000000000b", "app": "probe6", "region": "ams", "ip6": "::b"},
        {"id": "6300000000000c", "app": "probe6", "region": "sjc", "ip6": "::c"},
        {"id": "6400000000000d", "app": "probe6", "region": "gru", "ip6": "::d"},
        {"id": "6000000000000e", "app": "probe6", "region": "nrt", "ip6": "::e"},
    ],
    "peers": [{"name": "workstation", "network": "loop6", "ip6": "::1", "region": "gru"}],
}


def regions() -> dict[str, tuple[float, float]]:
    data = yaml.safe_load((EMBEDDED_ZONES / "regions.yaml").read_text())
    return {r["code"]: (float(r["latitude"]), float(r["longitude"])) for r in data["regions"]}


def great_circle(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Spherical law of cosines: a different formula from the server's haversine, same ordering."""
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    c = math.sin(la1) * math.sin(la2) + math.cos(la1) * math.cos(la2) * math.cos(lo2 - lo1)
    return math.acos(max(-1.0, min(1.0, c)))


def expected_nearest(machines: list[dict[str, Any]], origin: str | None, n: int) -> list[str]:
    started = [m for m in machines if m.get("state", "started") == "started"]
    if origin is None:
        ordered = sorted(started, key=lambda m: m["id"])
    else:
        coords = regions()
        ordered = sorted(
            started,
            key=lambda m: (0.0 if m["region"] == origin else great_circle(coords[origin], coords[m["region"]]), m["id"]),
        )
    return [m["ip6"] for m in ordered[:n]]


@pytest.fixture
def lab_registry(registry_dir: Path) -> Path:
    write_yaml(registry_dir / "lab.yaml", LAB)
    return registry_dir


def apps_seen(server: RunningServer, **ask: Any) -> str:
    reply = server.ask("_apps.internal", "TXT", **ask)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    (value,) = reply.txt()
    return value


def assert_refused(server: RunningServer, **ask: Any) -> None:
    for name, rdtype in PRIVATE_NAMES:
        reply = server.ask(name, rdtype, **ask)
        assert reply.rcode_text == "REFUSED", name
        assert not reply.flag("AA") and not reply.flag("RA"), name
        assert reply.msg.answer == [] and reply.msg.authority == [], name


# --- 1. the network's own prefix ------------------------------------------------------------


def test_a_source_inside_a_networks_prefix_selects_it_over_a_config_view(start_server: Any, lab_registry: Path) -> None:
    server = start_server(registry=lab_registry)
    # 127.0.0.0/8 -> personal is configured, but 127.22.0.0/16 is lab's own prefix
    assert apps_seen(server, source="127.22.0.9") == "probe"
    assert apps_seen(server, source="127.22.200.1") == "probe"
    assert server.ask("my-app.internal", source="127.22.0.9").rcode_text == "NXDOMAIN"
    # just outside lab's prefix the config view applies again
    assert apps_seen(server, source="127.23.0.1") == PERSONAL_APPS
    assert server.ask("probe.internal", source="127.23.0.1").rcode_text == "NXDOMAIN"


def test_a_network_prefix_wins_even_over_a_more_specific_config_view(start_server: Any, lab_registry: Path) -> None:
    views = [{"source": "127.22.0.9/32", "network": "other-org"}, {"source": "127.0.0.0/8", "network": "personal"}]
    server = start_server(registry=lab_registry, views=views)
    assert apps_seen(server, source="127.22.0.9") == "probe"


# --- 2. config views ----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["narrow-first", "broad-first"])
def test_the_most_specific_config_view_wins_whatever_its_place_in_the_list(start_server: Any, order: str) -> None:
    views = [
        {"source": "127.0.0.0/8", "network": "personal"},
        {"source": "127.0.0.0/24", "network": "shop-production"},
        {"source": "127.0.0.2/32", "network": "other-org"},
    ]
    if order == "narrow-first":
        views.reverse()
    server = start_server(views=views)
    assert apps_seen(server, source="127.0.0.2") == OTHER_ORG_APPS
    assert apps_seen(server, source="127.0.0.7") == "postgres,web"
    assert apps_seen(server, source="127.0.1.2") == PERSONAL_APPS


def test_the_test_configs_views(server: RunningServer) -> None:
    assert apps_seen(server, source="127.0.0.1") == PERSONAL_APPS
    assert apps_seen(server, source="127.0.0.2") == OTHER_ORG_APPS
    assert apps_seen(server, source="127.0.0.3") == "postgres,web"
    assert apps_seen(server, source="127.0.0.4") == "postgres,web"
    # the two environments share service names but not replicas
    assert (
        server.ask("web.railway.internal", "AAAA", source="127.0.0.3").addresses()
        != server.ask("web.railway.internal", "AAAA", source="127.0.0.4").addresses()
    )
    assert apps_seen(server, source="127.255.255.254") == PERSONAL_APPS


# --- 3. the listener's network ------------------------------------------------------------


def test_a_listeners_fixed_network_serves_sources_no_view_claims(start_server: Any) -> None:
    server = start_server(listen=[{"address": "127.0.0.1", "port": 0, "network": "other-org"}], views=[])
    assert apps_seen(server, source="127.0.0.1") == OTHER_ORG_APPS
    assert apps_seen(server, source="127.0.0.9") == OTHER_ORG_APPS
    assert server.ask("my-app.internal", source="127.0.0.1").rcode_text == "NXDOMAIN"
    assert sorted(server.ask("billing.internal", source="127.0.0.1").addresses()) == [
        "fdaa:0:22:a7b:10:4c1d:2e3f:2",
        "fdaa:0:22:a7b:11:9a8b:7c6d:2",
    ]


def test_a_config_view_comes_before_the_listeners_network(start_server: Any) -> None:
    views = [{"source": "127.0.0.2/32", "network": "shop-staging"}]
    server = start_server(listen=[{"address": "127.0.0.1", "port": 0, "network": "other-org"}], views=views)
    assert apps_seen(server, source="127.0.0.2") == "postgres,web"
    assert apps_seen(server, source="127.0.0.1") == OTHER_ORG_APPS


def test_a_network_prefix_comes_before_the_listeners_network(start_server: Any, lab_registry: Path) -> None:
    server = start_server(registry=lab_registry, listen=[{"address": "127.0.0.1", "port": 0, "network": "other-org"}], views=[])
    assert apps_seen(server, source="127.22.0.9") == "probe"
    assert apps_seen(server, source="127.0.0.1") == OTHER_ORG_APPS


def test_a_listener_on_a_networks_resolver_address_serves_that_network(start_server: Any, registry_dir: Path) -> None:
    write_yaml(
        registry_dir / "edge.yaml",
        {
            "networks": [{"name": "edge", "prefix6": "fdaa:0:30::/48", "prefix4": "127.30.0.0/16", "dns4": "127.30.0.3"}],
            "apps": [{"name": "gateway", "network": "edge"}],
            "machines": [
                {"id": "ed9e0000000001", "app": "gateway", "region": "ams", "ip6": "fdaa:0:30::10", "ip4": "127.30.0.10"}
            ],
        },
    )
    server = start_server(listen=[{"address": "127.30.0.3", "port": 0}], views=[])
    assert server.host == "127.30.0.3"
    # 127.0.0.1 is outside edge's prefix and no view claims it: the listener's address decides
    assert apps_seen(server, source="127.0.0.1") == "gateway"
    assert server.ask("gateway.internal", source="127.0.0.1").addresses() == ["fdaa:0:30::10"]
    assert server.ask("gateway.railway.internal", "A", source="127.0.0.1").addresses("A") == ["127.30.0.10"]
    assert server.ask("my-app.internal", source="127.0.0.1").rcode_text == "NXDOMAIN"


def test_a_config_view_comes_before_the_resolver_address_listener(start_server: Any, registry_dir: Path) -> None:
    write_yaml(
        registry_dir / "edge.yaml",
        {
            "networks": [{"name": "edge", "prefix6": "fdaa:0:30::/48", "prefix4": "127.30.0.0/16", "dns4": "127.30.0.3"}],
            "apps": [{"name": "gateway", "network": "edge"}],
        },
    )
    server = start_server(listen=[{"address": "127.30.0.3", "port": 0}])  # the test config's 127/8 -> personal
    assert apps_seen(server, source="127.0.0.1") == PERSONAL_APPS
    assert apps_seen(server, source="127.0.0.2") == OTHER_ORG_APPS


def test_a_plain_listener_with_a_region_but_no_network_gives_no_view(start_server: Any) -> None:
    server = start_server(listen=[{"address": "127.0.0.1", "port": 0, "region": "fra"}], views=[])
    assert_refused(server, source="127.0.0.1")


# --- 4. no view ---------------------------------------------------------------------------


def test_no_view_refuses_private_names_and_forwarding(start_server: Any) -> None:
    server = start_server(views=[])
    assert_refused(server, source="127.0.0.1")
    for tcp in (False, True):
        reply = server.ask("example.com", "A", source="127.0.0.1", tcp=tcp)
        assert reply.rcode_text == "REFUSED"
        assert not reply.flag("AA") and not reply.flag("RA")
        assert reply.msg.answer == []


def test_a_view_naming_an_unknown_network_is_no_view(start_server: Any) -> None:
    views = [{"source": "127.0.0.2/32", "network": "nowhere"}, {"source": "127.0.0.0/8", "network": "personal"}]
    server = start_server(views=views)
    # the most specific entry names a network the registry lacks: refused, not the broader entry
    assert_refused(server, source="127.0.0.2")
    assert server.ask("example.com", "A", source="127.0.0.2").rcode_text == "REFUSED"
    assert apps_seen(server, source="127.0.0.1") == PERSONAL_APPS


def test_a_view_becomes_valid_when_its_network_appears(start_server: Any, registry_dir: Path, log_lines: list[str]) -> None:
    server = start_server(views=[{"source": "127.0.0.0/8", "network": "edge"}])
    assert_refused(server, source="127.0.0.1")
    assert any("views[0].network: unknown network 'edge'" in line and "no view" in line for line in log_lines), log_lines
    write_yaml(
        registry_dir / "edge.yaml",
        {
            "networks": [{"name": "edge", "prefix6": "fdaa:0:30::/48"}],
            "apps": [{"name": "gateway", "network": "edge"}],
        },
    )
    server.poll()
    assert apps_seen(server, source="127.0.0.1") == "gateway"
    assert "the registry has every network and region the config names" in log_lines


# --- the querier's region -----------------------------------------------------------------


def nearest(server: RunningServer, app: str, n: int, **ask: Any) -> list[str]:
    reply = server.ask(f"top{n}.nearest.of.{app}.internal", "AAAA", **ask)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    return reply.addresses()


def test_the_expected_orders_tell_the_regions_apart() -> None:
    machines = LAB["machines"]
    orders = {origin: expected_nearest(machines, origin, 7) for origin in ("syd", "fra", "iad", None)}
    assert len({tuple(o) for o in orders.values()}) == 4
    # spot checks by hand: Sydney's nearest started machine is Tokyo's, Frankfurt's the lower fra id
    assert orders["syd"][0] == "fdaa:0:77::e"
    assert orders["fra"][:2] == ["fdaa:0:77::d", "fdaa:0:77::c"]
    assert orders["iad"][0] == "fdaa:0:77::b"
    assert orders[None][0] == "fdaa:0:77::d"


def test_the_region_of_the_machine_owning_the_source(start_server: Any, lab_registry: Path) -> None:
    # the owning machine is stopped: its region still places the querier
    listen = [{"address": "127.0.0.1", "port": 0, "region": "fra"}]
    server = start_server(registry=lab_registry, listen=listen)
    for n in (1, 3, 7, 50):
        assert nearest(server, "probe", n, source="127.22.0.9") == expected_nearest(LAB["machines"], "syd", n)


def test_the_listeners_region_when_no_machine_owns_the_source(start_server: Any, lab_registry: Path) -> None:
    listen = [{"address": "127.0.0.1", "port": 0, "region": "fra"}]
    server = start_server(registry=lab_registry, listen=listen)
    for n in (1, 3, 7):
        assert nearest(server, "probe", n, source="127.22.0.10") == expected_nearest(LAB["machines"], "fra", n)


def test_the_servers_region_when_neither_machine_nor_listener_says(start_server: Any, lab_registry: Path) -> None:
    server = start_server(registry=lab_registry)  # region: iad
    for n in (1, 3, 7):
        assert nearest(server, "probe", n, source="127.22.0.10") == expected_nearest(LAB["machines"], "iad", n)
    # the embedded registry, from a loopback source that no machine owns
    assert nearest(server, "my-app", 3, source="127.0.0.1") == expected_nearest(
        [
            m
            for m in yaml.safe_load((EMBEDDED_ZONES / "personal.yaml").read_text())["machines"]
            if m["app"] == "my-app" and m.get("dns", True)
        ],
        "iad",
        3,
    )


def test_no_region_anywhere_orders_by_machine_id(start_server: Any, lab_registry: Path) -> None:
    server = start_server(registry=lab_registry, region=None)
    assert nearest(server, "probe", 7, source="127.22.0.10") == expected_nearest(LAB["machines"], None, 7)
    # an owning machine still gives a region
    assert nearest(server, "probe", 7, source="127.22.0.9") == expected_nearest(LAB["machines"], "syd", 7)


def test_a_view_from_a_config_entry_uses_the_listener_region(start_server: Any, lab_registry: Path) -> None:
    listen = [{"address": "127.0.0.1", "port": 0, "region": "nrt"}]
    views = [{"source": "127.0.0.5/32", "network": "lab"}]
    server = start_server(registry=lab_registry, listen=listen, views=views)
    assert nearest(server, "probe", 7, source="127.0.0.5") == expected_nearest(LAB["machines"], "nrt", 7)


def test_the_region_of_the_peer_owning_the_source(start_server: Any, registry_dir: Path) -> None:
    write_yaml(registry_dir / "loop6.yaml", LOOP6)
    listen = [{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0, "region": "syd"}]
    server = start_server(listen=listen)
    host, port = server.service.bound_ports()[1]
    # ::1 is inside loop6's prefix: that network, and the region of the peer that owns ::1
    assert apps_seen(server, source="::1", host="::1", port=port) == "probe6"
    got = nearest(server, "probe6", 5, source="::1", host="::1", port=port)
    assert got == expected_nearest(LOOP6["machines"], "gru", 5)
    assert got != expected_nearest(LOOP6["machines"], "syd", 5)
    assert got != expected_nearest(LOOP6["machines"], "iad", 5)


def test_a_peer_without_a_region_leaves_the_listeners(start_server: Any, registry_dir: Path) -> None:
    loop6 = yaml.safe_load(yaml.safe_dump(LOOP6))
    del loop6["peers"][0]["region"]
    write_yaml(registry_dir / "loop6.yaml", loop6)
    listen = [{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0, "region": "syd"}]
    server = start_server(listen=listen)
    _, port = server.service.bound_ports()[1]
    assert nearest(server, "probe6", 5, source="::1", host="::1", port=port) == expected_nearest(LOOP6["machines"], "syd", 5)
    # and with no listener region, the server's (iad)
    other = start_server(listen=[{"address": "::1", "port": 0}])
    assert nearest(other, "probe6", 5, source="::1") == expected_nearest(LOOP6["machines"], "iad", 5)
