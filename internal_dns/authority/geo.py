"""Region coordinates and the `nearest` ordering (great-circle distance)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from internal_dns.registry.model import Machine, Region

EARTH_RADIUS_KM = 6371.0088


def distance_km(a: Region, b: Region) -> float:
    """Haversine great-circle distance; 0 for the same region."""
    if a.code == b.code:
        return 0.0
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def nearest_machines(machines: Iterable[Machine], origin: str | None, regions: Mapping[str, Region], n: int) -> list[Machine]:
    """The n machines nearest the origin region, nearest first, ties to the lower id.

    With no known origin every machine is equally far, which leaves the machine-id order.
    """
    here = regions.get(origin) if origin else None
    if here is None:
        ordered = sorted(machines, key=lambda m: m.id)
    else:
        ordered = sorted(machines, key=lambda m: (distance_km(here, regions[m.region]), m.id))
    return ordered[:n]
