"""The catalog (registry/catalog.py): applying changes one by one must end where loading the
result from scratch ends, and touch only the networks a change touches.

Hypothesis drives sequences of changes a live registry sees (machines started, stopped, moved,
renumbered and removed; apps and peers added and removed, apps and their machines written in
either order; now and then an entity that does not fit: an unknown app, a duplicate id, an
address already in use, a name that is no DNS label) against a catalog, and compares it after
each change with a fresh catalog loaded with the same entities.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from internal_dns.registry.catalog import Catalog, RawEntity, build_snapshot
from internal_dns.registry.model import Document, RegistryError, Snapshot

NETWORKS = ["alpha", "beta", "gamma"]
REGIONS = [
    {"code": c, "latitude": lat, "longitude": lon}
    for c, lat, lon in (("iad", 38.9, -77.4), ("ams", 52.3, 4.7), ("syd", -33.9, 151.1))
]
APPS = ["web", "api", "db", "web2"]
STATES = ["started", "started", "stopped", "suspended"]


def net_index(name: str) -> int:
    return NETWORKS.index(name) + 1


PAIRS = [("alpha", "web"), ("alpha", "api"), ("beta", "db"), ("gamma", "web2"), ("beta", "web")]


def skeleton() -> dict[str, RawEntity]:
    """Regions and networks only."""
    out = {}
    for r in REGIONS:
        out[f"regions/{r['code']}"] = RawEntity(f"regions/{r['code']}", f"regions/{r['code']}", "regions", r)
    for n in NETWORKS:
        data = {"name": n, "prefix6": f"fdaa:0:{net_index(n)}::/48", "prefix4": f"10.{net_index(n)}.0.0/16"}
        out[f"networks/{n}"] = RawEntity(f"networks/{n}", f"networks/{n}", "networks", data)
    return out


def base() -> dict[str, RawEntity]:
    """The skeleton with an app or two in every network."""
    out = skeleton()
    for i, (net, app) in enumerate(PAIRS[:4]):
        entity = app_entity(net, app, None, i)
        out[entity.key] = entity
    return out


def app_entity(network: str, name: str, flycast_to: str | None, n: int) -> RawEntity:
    data: dict[str, Any] = {"name": name, "network": network}
    if flycast_to is not None:
        data["flycast"] = [{"ip": f"fdaa:0:{net_index(flycast_to)}:f::{n:x}", "network": flycast_to}]
    key = f"apps/{network}/{name}"
    return RawEntity(key, key, "apps", data)


def machine_entity(
    mid: int, network: str, app: str, state: str, region: str, host: int, qualified: bool, v4: bool, check: str | None = None
) -> RawEntity:
    data: dict[str, Any] = {
        "id": f"{mid:014x}",
        "app": app,
        "region": region,
        "state": state,
        "ip6": f"fdaa:0:{net_index(network)}:a7b::{host:x}",
        "metadata": {"role": "primary" if mid % 2 else "replica"},
    }
    if qualified:
        data["network"] = network
    if v4:
        data["ip4"] = f"10.{net_index(network)}.1.{host % 250 + 1}"
    if check is not None:
        data["checks"] = {"http": check}
    key = f"machines/{mid:014x}"
    return RawEntity(key, key, "machines", data)


def peer_entity(network: str, name: str, host: int) -> RawEntity:
    key = f"peers/{network}/{name}"
    return RawEntity(key, key, "peers", {"name": name, "network": network, "ip6": f"fdaa:0:{net_index(network)}:d6b::{host:x}"})


# One change: ("put", entity) or ("delete", key)
change = st.one_of(
    st.builds(
        lambda net, app, fly, n: ("put", app_entity(net, app, fly, n)),
        st.sampled_from(NETWORKS),
        st.sampled_from(APPS),
        st.none() | st.sampled_from(NETWORKS),
        st.integers(1, 6),
    ),
    # machines of apps that exist, each with an address of its own: these fit
    st.builds(
        lambda mid, pair, state, region, q, v4: ("put", machine_entity(mid, pair[0], pair[1], state, region, mid, q, v4)),
        st.integers(1, 12),
        st.sampled_from(PAIRS),
        st.sampled_from(STATES),
        st.sampled_from(["iad", "ams", "syd"]),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda mid, pair, state, region, q, v4, check: (
            "put",
            machine_entity(mid, pair[0], pair[1], state, region, mid, q, v4, check),
        ),
        st.integers(1, 12),
        st.sampled_from(PAIRS),
        st.sampled_from(STATES),
        st.sampled_from(["iad", "ams", "syd"]),
        st.booleans(),
        st.booleans(),
        st.sampled_from([None, "passing", "critical"]),  # a check flipping: the index patched in place
    ),
    # and now and then one that may not: any app, any network, an address another may hold
    st.builds(
        lambda mid, net, app, host, q: ("put", machine_entity(mid, net, app, "started", "iad", host, q, False)),
        st.integers(1, 12),
        st.sampled_from(NETWORKS),
        st.sampled_from(APPS),
        st.integers(1, 12),
        st.booleans(),
    ),
    st.builds(
        lambda net, name, host: ("put", peer_entity(net, name, host)),
        st.sampled_from(NETWORKS),
        st.sampled_from(["laptop", "ci", "interactive-x"]),
        st.integers(1, 9),
    ),
    st.builds(lambda net, app: ("delete", f"apps/{net}/{app}"), st.sampled_from(NETWORKS), st.sampled_from(APPS)),
    st.builds(lambda mid: ("delete", f"machines/{mid:014x}"), st.integers(1, 12)),
    st.builds(lambda net, name: ("delete", f"peers/{net}/{name}"), st.sampled_from(NETWORKS), st.sampled_from(["laptop", "ci"])),
    st.just(("put", RawEntity("apps/alpha/Bad_Name", "apps/alpha/Bad_Name", "apps", {"name": "Bad_Name", "network": "alpha"}))),
)


def replayed(changes: list[tuple[str, Any]]) -> Iterator[tuple[Catalog, Snapshot, Catalog, Snapshot]]:
    """After each change applied to a live catalog: it and its snapshot, and a catalog freshly
    loaded with the same entities and its snapshot."""
    entities = base()
    live = Catalog()
    live.load(entities.values())
    for op, arg in changes:
        if op == "put":
            entities[arg.key] = arg
            after = live.apply(upserts=[arg])
        else:
            entities.pop(arg, None)
            after = live.apply(deletes=[arg])
        fresh = Catalog()
        yield live, after, fresh, fresh.load(entities.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(change, min_size=1, max_size=25))
def test_changes_applied_one_by_one_end_where_a_fresh_load_does(changes: list[tuple[str, Any]]) -> None:
    for live, after, fresh, expected in replayed(changes):
        assert bool(live.problem_lines()) == bool(fresh.problem_lines()), (live.problem_lines(), fresh.problem_lines())
        if not fresh.problem_lines():
            assert after.counts() == expected.counts()
            for name in NETWORKS:
                assert after.networks[name] == expected.networks[name], name
                assert after.networks[name].owner_map() == expected.networks[name].owner_map(), name  # regions by address


def test_a_check_flip_patches_its_networks_index_and_leaves_the_others_as_they_are() -> None:
    """A machine read again with only what the index does not check changed (its checks, state,
    region) takes its place without the network being indexed again: the other networks' indexes
    stay the very same objects (the packet cache keeps their replies), and the result is what a
    fresh load gives."""
    catalog = Catalog()
    machines = [machine_entity(i, "alpha", "web", "started", "iad", i, True, True) for i in (1, 2, 3)]
    catalog.load([*base().values(), *machines, machine_entity(4, "beta", "db", "started", "ams", 4, True, False)])
    before = catalog.snapshot()
    flipped = machine_entity(2, "alpha", "web", "started", "syd", 2, True, True, check="critical")
    after = catalog.apply(upserts=[flipped])
    assert after.networks["beta"] is before.networks["beta"] and after.defined is before.defined
    web = after.networks["alpha"].apps["web"]
    assert [(m.id[-1], m.healthy, m.region) for m in web.started] == [("1", True, "iad"), ("2", False, "syd"), ("3", True, "iad")]
    assert after.networks["alpha"].region_of(ipaddress.ip_address("fdaa:0:1:a7b::2").packed) == "syd"
    fresh = Catalog()
    expected = fresh.load(
        [*base().values(), *machines[::2], flipped, machine_entity(4, "beta", "db", "started", "ams", 4, True, False)]
    )
    assert after.networks == expected.networks
    # an address changed: the network is indexed again, its new address checked
    moved = machine_entity(2, "alpha", "web", "started", "iad", 3, True, True)  # machine 3's address
    catalog.apply(upserts=[moved])
    assert "address fdaa:0:1:a7b::3 is already used by machine 00000000000003" in " ".join(catalog.problem_lines())


def test_a_machine_replaced_twice_in_one_change_ends_as_its_last_version() -> None:
    catalog = Catalog()
    machines = [machine_entity(i, "alpha", "web", "started", "iad", i, True, True) for i in (1, 2, 3)]
    catalog.load([*base().values(), *machines])
    first = machine_entity(2, "alpha", "web", "started", "syd", 2, True, True, check="critical")
    second = machine_entity(2, "alpha", "web", "stopped", "ams", 2, True, True)
    other = machine_entity(3, "alpha", "web", "started", "syd", 3, True, True)
    after = catalog.apply(upserts=[first, other, second])
    expected = Catalog().load([*base().values(), machines[0], second, other])
    assert after.networks == expected.networks
    web = after.networks["alpha"].apps["web"]
    assert [(m.id[-1], m.region) for m in web.started] == [("1", "iad"), ("3", "syd")]


def test_a_machine_written_before_its_app_comes_in_with_it() -> None:
    catalog = Catalog()
    catalog.load(skeleton().values())
    machine = machine_entity(1, "alpha", "web", "started", "iad", 1, qualified=True, v4=False)
    snapshot = catalog.apply(upserts=[machine])
    assert "alpha" in snapshot.networks and snapshot.machine_count == 0
    assert catalog.problem_lines() == ["machines/00000000000001: machine 00000000000001: unknown app 'web' in network alpha"]
    snapshot = catalog.apply(upserts=[app_entity("alpha", "web", None, 1)])
    assert catalog.problem_lines() == []
    assert [m.id for m in snapshot.networks["alpha"].apps["web"].started] == ["00000000000001"]


def test_a_clash_leaves_the_newcomer_out_and_the_established_entity_serving() -> None:
    catalog = Catalog()
    catalog.load(
        [
            *skeleton().values(),
            app_entity("alpha", "web", None, 1),
            machine_entity(1, "alpha", "web", "started", "iad", 7, True, False),
        ]
    )
    clash = machine_entity(2, "alpha", "web", "started", "iad", 7, True, False)  # the same ip6
    snapshot = catalog.apply(upserts=[clash])
    assert [m.id for m in snapshot.networks["alpha"].machines] == ["00000000000001"]
    assert catalog.problem_lines() == [
        "machines/00000000000002: machine 00000000000002: address fdaa:0:1:a7b::7 is already used by machine 00000000000001"
    ]
    same_id = RawEntity(
        "machines/other", "machines/other", "machines", {**clash.data, "id": "00000000000001", "ip6": "fdaa:0:1:a7b::8"}
    )
    catalog.apply(upserts=[same_id])
    assert (
        "machines/other: machine 00000000000001: duplicate machine id (first in machines/00000000000001)"
        in catalog.problem_lines()
    )
    snapshot = catalog.apply(deletes=["machines/00000000000001"])  # the first goes: a newcomer takes its place
    assert sorted(m.id for m in snapshot.networks["alpha"].machines) == ["00000000000001", "00000000000002"]
    assert catalog.problem_lines() == []


def test_only_the_touched_network_is_indexed_again() -> None:
    catalog = Catalog()
    before = catalog.load([*skeleton().values(), app_entity("alpha", "web", None, 1), app_entity("beta", "api", "gamma", 2)])
    after = catalog.apply(upserts=[machine_entity(1, "alpha", "web", "started", "iad", 1, True, True)])
    assert after.networks["alpha"] is not before.networks["alpha"]
    assert after.networks["beta"] is before.networks["beta"] and after.networks["gamma"] is before.networks["gamma"]
    again = catalog.apply(upserts=[app_entity("beta", "api", None, 2)])  # its Flycast address leaves gamma
    assert again.networks["alpha"] is after.networks["alpha"]
    assert again.networks["gamma"] is not after.networks["gamma"] and again.networks["gamma"].flycast == {}


def test_an_unchanged_put_changes_nothing() -> None:
    catalog = Catalog()
    web = app_entity("alpha", "web", None, 1)
    before = catalog.load([*skeleton().values(), web])
    assert (
        catalog.apply(upserts=[RawEntity(web.key, web.source, web.kind, dict(web.data))]).networks["alpha"]
        is before.networks["alpha"]
    )


def test_strict_builds_raise_with_every_problem() -> None:
    docs = [
        Document(
            "a.yaml",
            {
                "regions": REGIONS,
                "networks": [{"name": "alpha", "prefix6": "fdaa:0:1::/48"}],
                "machines": [
                    {"id": "abc", "app": "nope", "region": "iad", "ip6": "fdaa:0:1::9"},
                    {"id": "ABC", "app": "nope", "region": "iad", "ip6": "fdaa:0:1::a"},
                ],
            },
        )
    ]
    with pytest.raises(RegistryError) as raised:
        build_snapshot(docs)
    assert raised.value.problems == [
        "a.yaml: machine abc: unknown app 'nope'",
        "a.yaml: machine ABC: id 'ABC' must be lower-case hex (at most 63 digits)",
    ]


def test_an_entry_that_is_no_entity_is_reported_when_it_arrives_in_a_change() -> None:
    catalog = Catalog()
    catalog.load(skeleton().values())
    catalog.apply(upserts=[RawEntity("junk", "junk", "invalid", "junk: not a registry key")])
    assert catalog.problem_lines() == ["junk: not a registry key"]
    catalog.apply(deletes=["junk"])
    assert catalog.problem_lines() == []


# --- regions and networks change one at a time too ------------------------------------------------

PREFIX4 = {None: None, "own": "10.{i}.0.0/16", "narrow": "10.{i}.9.0/24"}  # "narrow" leaves machines' ip4 outside


def network_entity(name: str, prefix6: str, prefix4: str | None) -> RawEntity:
    i = NETWORKS.index(name) + 1 if name in NETWORKS else 4
    data: dict[str, Any] = {"name": name, "prefix6": prefix6.format(i=i)}
    if PREFIX4[prefix4] is not None:
        data["prefix4"] = str(PREFIX4[prefix4]).format(i=i)
    return RawEntity(f"networks/{name}", f"networks/{name}", "networks", data)


def region_entity(code: str, latitude: float) -> RawEntity:
    return RawEntity(f"regions/{code}", f"regions/{code}", "regions", {"code": code, "latitude": latitude, "longitude": 4.7})


structural_change = st.one_of(
    change,
    st.builds(
        lambda name, prefix6, prefix4: ("put", network_entity(name, prefix6, prefix4)),
        st.sampled_from([*NETWORKS, "delta"]),
        # its own prefix, or one inside alpha's: an overlap, which leaves the later network out
        st.sampled_from(["fdaa:0:{i}::/48", "fdaa:0:1:8000::/49"]),
        st.sampled_from(list(PREFIX4)),
    ),
    st.builds(lambda name: ("delete", f"networks/{name}"), st.sampled_from([*NETWORKS, "delta"])),
    st.builds(
        lambda code, latitude: ("put", region_entity(code, latitude)),
        st.sampled_from(["iad", "ams", "syd", "ord"]),
        st.sampled_from([1.5, 52.3]),
    ),
    st.builds(lambda code: ("delete", f"regions/{code}"), st.sampled_from(["iad", "ams", "syd", "ord"])),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(structural_change, min_size=1, max_size=25))
def test_changes_to_regions_and_networks_end_where_a_fresh_load_does(changes: list[tuple[str, Any]]) -> None:
    for live, after, fresh, expected in replayed(changes):
        # Regions and networks are settled alike whatever came before...
        assert after.regions == expected.regions
        assert after.networks.keys() == expected.networks.keys()
        # ...members may differ only where the established one keeps its place in a clash
        assert bool(live.problem_lines()) == bool(fresh.problem_lines()), (live.problem_lines(), fresh.problem_lines())
        if not fresh.problem_lines():
            assert after.counts() == expected.counts()
            for name in expected.networks:
                assert after.networks[name] == expected.networks[name], name


def test_a_region_moved_or_a_network_added_leaves_every_other_index_as_it_was() -> None:
    catalog = Catalog()
    entities = base()
    entities["machines/1"] = machine_entity(1, "alpha", "web", "started", "ams", 1, True, True)
    before = catalog.load(entities.values())
    moved = catalog.apply(upserts=[region_entity("ams", 52.4)])
    assert moved.regions["ams"].latitude == 52.4
    assert all(moved.networks[n] is before.networks[n] for n in NETWORKS)
    added = catalog.apply(upserts=[network_entity("delta", "fdaa:0:{i}::/48", "own")])
    assert "delta" in added.networks and added.networks["delta"].machines == ()
    assert all(added.networks[n] is before.networks[n] for n in NETWORKS)
    narrowed = catalog.apply(upserts=[network_entity("alpha", "fdaa:0:{i}::/48", "narrow")])
    assert narrowed.networks["alpha"].machines == ()  # its machine's ip4 now lies outside
    assert narrowed.networks["beta"] is before.networks["beta"]
    assert any("is outside network alpha's prefix 10.1.9.0/24" in line for line in catalog.problem_lines())
    gone = catalog.apply(deletes=["regions/ams"])
    assert "machines/00000000000001: machine 00000000000001: unknown region 'ams'" in catalog.problem_lines()
    assert gone.networks["beta"] is before.networks["beta"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(change, min_size=1, max_size=25))
def test_a_first_load_served_before_its_indexes_serves_what_they_then_hold(changes: list[tuple[str, Any]]) -> None:
    """load_first's snapshot makes each network's index when first asked for; index_rest's are
    the ones `load` makes, and the ones made when asked are equal to them, clashes and all."""
    entities = base()
    for op, arg in changes:
        if op == "put":
            entities[arg.key] = arg
        else:
            entities.pop(arg, None)
    fresh = Catalog()
    expected = fresh.load(entities.values())
    catalog = Catalog()
    early, lazy = catalog.load_first(entities.values(), index_later_from=0)
    assert lazy
    asked = {name: early.networks[name] for name in reversed(NETWORKS)}  # in any order
    whole = catalog.index_rest()
    assert whole.counts() == expected.counts()
    assert catalog.problem_lines() == fresh.problem_lines()  # the networks' own problems too, once indexed
    for name in NETWORKS:
        assert asked[name] == whole.networks[name] == expected.networks[name], name
        assert asked[name].owner_map() == expected.networks[name].owner_map(), name
    if not any(word in line for word in ("already used", "outside network", "no prefix4") for line in fresh.problem_lines()):
        assert early.counts() == expected.counts()  # counted from the members: the same unless an address is refused


def test_a_small_first_load_or_a_reload_is_indexed_at_once() -> None:
    catalog = Catalog()
    snapshot, lazy = catalog.load_first(base().values(), index_later_from=1)  # no machine: fewer than one
    assert not lazy and dict(snapshot.networks) == dict(catalog.snapshot().networks)
    machines = [machine_entity(1, "alpha", "web", "started", "iad", 1, True, False)]
    again, lazy = catalog.load_first([*base().values(), *machines], index_later_from=0)  # not empty: a reload
    assert not lazy and [m.id for m in again.networks["alpha"].machines] == ["00000000000001"]


def test_a_change_before_index_rest_indexes_what_the_first_load_left() -> None:
    machine = machine_entity(1, "alpha", "web", "started", "iad", 1, True, False)
    catalog = Catalog()
    _, lazy = catalog.load_first([*base().values(), machine], index_later_from=0)
    assert lazy
    other = machine_entity(2, "beta", "db", "started", "iad", 2, True, False)
    after = catalog.apply(upserts=[other])
    expected = Catalog().load([*base().values(), machine, other])
    for name in NETWORKS:
        assert after.networks[name] == expected.networks[name], name
    assert catalog.index_rest().counts() == expected.counts()  # nothing left to index
