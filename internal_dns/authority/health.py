"""Which machines an address form hands out (SPEC §3, Health): the healthy ones, or, when every
one is critical, all of them — DNS is no place to take a whole app offline."""

from __future__ import annotations

from collections.abc import Iterable

from internal_dns.registry.model import Machine


def healthy(machines: Iterable[Machine]) -> tuple[tuple[Machine, ...], bool]:
    """(the machines to answer, whether that failed open: they are all critical)."""
    every = machines if isinstance(machines, tuple) else tuple(machines)
    good = tuple(m for m in every if m.healthy)
    if len(good) == len(every):
        return every, False
    return (good, False) if good else (every, True)
