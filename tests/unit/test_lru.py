"""lru.py: a store bounded by entries and bytes, least recently used out first, one at a time."""

from __future__ import annotations

from typing import Any

from internal_dns.lru import ENTRY_OVERHEAD, LruStore, entry_size


def value(size: int, tag: object = None) -> tuple[Any, ...]:
    return (size, tag)


def test_entry_size_counts_the_key_the_blobs_and_the_overhead() -> None:
    assert entry_size(b"key", b"12345", None, b"") == ENTRY_OVERHEAD + 3 + 5
    assert entry_size(b"") == ENTRY_OVERHEAD


def test_get_peek_and_pop() -> None:
    store = LruStore(10, 1000)
    assert store.get(b"a") is None and store.peek(b"a") is None and store.pop(b"a") is None
    assert store.put(b"a", value(10, "x"))
    assert store.get(b"a") == (10, "x") and store.peek(b"a") == (10, "x")
    assert len(store) == 1 and store.bytes == 10
    assert store.pop(b"a") == (10, "x")
    assert len(store) == 0 and store.bytes == 0 and store.evictions == 0


def test_replacing_counts_the_new_size_only() -> None:
    store = LruStore(10, 1000)
    store.put(b"a", value(10))
    store.put(b"a", value(30))
    assert len(store) == 1 and store.bytes == 30


def test_past_max_entries_the_least_recently_used_goes() -> None:
    evicted: list[bytes] = []
    store = LruStore(3, 1000, on_evict=evicted.append)
    for key in (b"a", b"b", b"c"):
        store.put(key, value(1))
    store.get(b"a")  # a is now the most recently used
    store.peek(b"b")  # peek leaves the order
    store.put(b"d", value(1))
    assert evicted == [b"b"] and list(store.items) == [b"c", b"a", b"d"]
    store.put(b"c", value(1))  # a put refreshes too
    store.put(b"e", value(1))
    assert evicted == [b"b", b"a"] and list(store.items) == [b"d", b"c", b"e"]
    assert store.evictions == 2 and store.bytes == 3


def test_past_max_bytes_entries_go_one_at_a_time_until_it_fits() -> None:
    evicted: list[bytes] = []
    store = LruStore(100, 1600, on_evict=evicted.append)
    keys = [bytes((65 + i,)) for i in range(16)]
    for key in keys:
        store.put(key, value(100))
    assert store.bytes == 1600 and evicted == []
    store.put(b"x", value(10))
    assert evicted == keys[:1] and store.bytes == 1510
    store.put(b"y", value(10))
    assert evicted == keys[:1] and store.bytes == 1520  # no eviction while within bounds
    store.put(b"z", value(100))
    assert evicted == keys[:2] and store.bytes == 1520
    store.put(b"w", value(100))
    store.put(b"v", value(100))
    assert evicted == keys[:4] and store.bytes == 1520
    assert store.evictions == 4 and len(store) == 17


def test_an_entry_over_a_sixteenth_of_max_bytes_is_refused_and_drops_the_old_one() -> None:
    store = LruStore(100, 1600)
    assert store.put(b"a", value(100))  # exactly a sixteenth
    assert not store.put(b"b", value(101))
    assert store.peek(b"b") is None and store.bytes == 100
    assert not store.put(b"a", value(101))  # a too-big replacement leaves no stale value behind
    assert store.peek(b"a") is None and store.bytes == 0 and len(store) == 0


def test_pop_and_replace_are_no_evictions() -> None:
    evicted: list[bytes] = []
    store = LruStore(2, 1000, on_evict=evicted.append)
    store.put(b"a", value(1))
    store.put(b"a", value(2))
    store.pop(b"a")
    assert evicted == [] and store.evictions == 0


def test_clear() -> None:
    store = LruStore(10, 1000)
    store.put(b"a", value(10))
    store.put(b"b", value(10))
    store.clear()
    assert len(store) == 0 and store.bytes == 0 and store.get(b"a") is None
    store.put(b"c", value(5))
    assert store.bytes == 5


def test_a_store_of_one_entry() -> None:
    store = LruStore(1, 1000)
    store.put(b"a", value(1))
    store.put(b"b", value(1))
    assert list(store.items) == [b"b"] and store.bytes == 1
