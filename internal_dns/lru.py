"""A store of finished bytes bounded by entries and by bytes, least recently used out first.

Made for the caches on the query path (rendered replies, forwarded answers), with Python's
collector in mind: keys are bytes and values are flat tuples of bytes, numbers and None, which the
collector stops tracking the first time it looks at them (a tuple holding another tuple may stay
tracked for a while: the collector must happen to look at the inner one first). A collection then
costs what the server's few other objects cost, however full the caches are, instead of walking
every entry. Each value's first item is its size in bytes as the store counts it.

Past either bound the least recently used entries go one at a time as new ones come in: the
cache never empties at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# What an entry costs beyond the bytes it holds: its key's and blobs' object headers, the value
# tuple, the dict slot and the order node (measured with tracemalloc on CPython 3.11: 100,000
# packet cache entries of a 34-byte key and a 70-byte reply took 411 bytes each).
ENTRY_OVERHEAD = 300


def entry_size(key: bytes, *blobs: bytes | None) -> int:
    return ENTRY_OVERHEAD + len(key) + sum(len(b) for b in blobs if b is not None)


class LruStore:
    __slots__ = ("items", "max_entries", "max_bytes", "bytes", "evictions", "on_evict")

    def __init__(self, max_entries: int, max_bytes: int, on_evict: Callable[[bytes], None] | None = None):
        self.items: OrderedDict[bytes, tuple[Any, ...]] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self.on_evict = on_evict  # told the key of each entry the bounds push out

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key: bytes) -> tuple[Any, ...] | None:
        """The value, now the most recently used; None when absent."""
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def peek(self, key: bytes) -> tuple[Any, ...] | None:
        """The value, leaving the order as it is."""
        return self.items.get(key)

    def put(self, key: bytes, value: tuple[Any, ...]) -> bool:
        """Add or replace; the entry becomes the most recently used. Evicts past the bounds.

        False, storing nothing, for an entry of more than a sixteenth of `max_bytes`: one big
        answer must not push out thousands of small ones.
        """
        if value[0] * 16 > self.max_bytes:
            self.pop(key)
            return False
        old = self.items.get(key)
        if old is not None:
            self.bytes -= old[0]
        self.items[key] = value
        self.items.move_to_end(key)
        self.bytes += value[0]
        items = self.items
        while len(items) > self.max_entries or (self.bytes > self.max_bytes and len(items) > 1):
            gone, dropped = items.popitem(last=False)
            self.bytes -= dropped[0]
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(gone)
        return True

    def pop(self, key: bytes) -> tuple[Any, ...] | None:
        value = self.items.pop(key, None)
        if value is not None:
            self.bytes -= value[0]
        return value

    def clear(self) -> None:
        self.items.clear()
        self.bytes = 0
