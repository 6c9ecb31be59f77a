"""geo.py: great-circle distance between regions and the `nearest` ordering (ties to the lower id)."""

from __future__ import annotations

import math
from ipaddress import IPv6Address

import pytest

from internal_dns.authority.geo import EARTH_RADIUS_KM, distance_km, nearest_machines
from internal_dns.registry.model import Machine, Region

REGIONS = {
    "iad": Region("iad", 38.95, -77.46),
    "ewr": Region("ewr", 40.69, -74.17),
    "lhr": Region("lhr", 51.47, -0.45),
    "syd": Region("syd", -33.95, 151.18),
    "zero": Region("zero", 0.0, 0.0),
    "east": Region("east", 0.0, 90.0),
    "anti": Region("anti", 0.0, 180.0),
    "north": Region("north", 90.0, 0.0),
    "twin": Region("twin", 38.95, -77.46),  # iad's coordinates under another code
}


def machine(mid: str, region: str) -> Machine:
    return Machine(mid, "app", "net", region, IPv6Address(f"fdaa::{mid}"))


def test_the_same_region_is_zero_away() -> None:
    assert distance_km(REGIONS["iad"], REGIONS["iad"]) == 0.0


def test_known_distances() -> None:
    quarter = EARTH_RADIUS_KM * math.pi / 2
    assert distance_km(REGIONS["zero"], REGIONS["east"]) == pytest.approx(quarter)
    assert distance_km(REGIONS["zero"], REGIONS["north"]) == pytest.approx(quarter)
    assert distance_km(REGIONS["zero"], REGIONS["anti"]) == pytest.approx(2 * quarter)  # antipodes, no domain error
    assert distance_km(REGIONS["iad"], REGIONS["lhr"]) == pytest.approx(5900, rel=0.01)
    assert distance_km(REGIONS["iad"], REGIONS["ewr"]) == pytest.approx(340, rel=0.03)
    assert distance_km(REGIONS["iad"], REGIONS["twin"]) == pytest.approx(0.0, abs=1e-9)


def test_distance_is_symmetric() -> None:
    for a in REGIONS.values():
        for b in REGIONS.values():
            assert distance_km(a, b) == pytest.approx(distance_km(b, a))


def test_nearest_first_and_ties_to_the_lower_id() -> None:
    places = [("d4", "syd"), ("c3", "lhr"), ("b2", "ewr"), ("a1", "ewr"), ("e5", "iad")]
    machines = [machine(mid, region) for mid, region in places]
    ordered = nearest_machines(machines, "iad", REGIONS, 10)
    assert [m.id for m in ordered] == ["e5", "a1", "b2", "c3", "d4"]
    assert [m.id for m in nearest_machines(machines, "iad", REGIONS, 2)] == ["e5", "a1"]
    assert [m.id for m in nearest_machines(machines, "syd", REGIONS, 1)] == ["d4"]


def test_equal_coordinates_under_another_code_tie_by_id() -> None:
    machines = [machine("b2", "iad"), machine("a1", "twin")]
    assert [m.id for m in nearest_machines(machines, "iad", REGIONS, 2)] == ["a1", "b2"]


@pytest.mark.parametrize("origin", [None, "", "nowhere"])
def test_without_a_known_origin_the_order_is_by_id(origin: str | None) -> None:
    machines = [machine("c3", "iad"), machine("a1", "syd"), machine("b2", "lhr")]
    assert [m.id for m in nearest_machines(machines, origin, REGIONS, 3)] == ["a1", "b2", "c3"]


def test_n_beyond_the_count_and_no_machines() -> None:
    assert [m.id for m in nearest_machines([machine("a1", "iad")], "iad", REGIONS, 99)] == ["a1"]
    assert nearest_machines([], "iad", REGIONS, 3) == []
    assert nearest_machines(iter([machine("a1", "iad")]), "lhr", REGIONS, 1)[0].id == "a1"
