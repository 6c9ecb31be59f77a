"""Addresses in order, with what holds each: found by address, and by any address within a range
(a reverse name above a whole address: is anything named below it?). Two sorted tuples per
family and a bisection, so a network's table costs little beside its machines."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class AddressTable(Generic[T]):
    __slots__ = ("_keys", "_holders")

    def __init__(self, pairs: Iterable[tuple[bytes, T]]):
        ordered = sorted(pairs, key=lambda pair: pair[0])
        self._keys = tuple(k for k, _ in ordered)
        self._holders = tuple(h for _, h in ordered)

    def get(self, packed: bytes) -> T | None:
        keys = self._keys
        i = bisect_left(keys, packed)
        return self._holders[i] if i < len(keys) and keys[i] == packed else None

    def within(self, low: bytes, high: bytes) -> Iterable[T]:
        """The holders of addresses from `low` to `high` (both included, of one length), in order."""
        keys, holders, size = self._keys, self._holders, len(low)
        i = bisect_left(keys, low)
        while i < len(keys) and keys[i] <= high:
            if len(keys[i]) == size:  # IPv4 keys sort among IPv6 ones with the same first bytes
                yield holders[i]
            i += 1
