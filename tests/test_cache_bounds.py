"""Bounded caches without cliffs (SPEC §6, §8): the packet cache and the forwarder's cache keep at
most their entries and bytes, push out the least recently used one entry at a time, never empty
at once, and hold nothing Python's collector has to walk. Asked over real sockets; what the caches
hold is read from the server afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from internal_dns.lru import LruStore
from internal_dns.ops.gcwatch import FULL_EVERY, MIDDLE_EVERY, TICK
from internal_dns.registry.heap import collector_paused
from tests.conftest import RunningServer, on_reactor
from tests.fake_upstream import FakeUpstream

StartServer = Callable[..., RunningServer]


def inserted(server: RunningServer, ask: Callable[[], object]) -> int:
    """How many entries the packet cache took in while `ask` ran (0: it was answered from it)."""
    store = server.service.dispatcher.packets.store
    before = store.evictions + len(store)
    ask()
    return store.evictions + len(store) - before


def test_the_packet_cache_keeps_its_entry_cap_one_eviction_at_a_time(start_server: StartServer) -> None:
    server = start_server(packet_cache={"max_entries": 20})
    store = server.service.dispatcher.packets.store
    for i in range(50):  # each new question: a rendering and an exact spelling
        server.ask(f"nope{i}.internal", "AAAA")
        assert len(store) == min(2 * (i + 1), 20)  # full, then full: never emptied
    assert store.evictions == 100 - 20


def test_the_packet_cache_evicts_the_least_recently_used(start_server: StartServer) -> None:
    server = start_server(packet_cache={"max_entries": 20})

    def ask(i: int) -> Callable[[], object]:
        return lambda: server.ask(f"q{i}.internal", "AAAA")

    for i in range(10):
        assert inserted(server, ask(i)) == 2
    assert inserted(server, ask(0)) == 0  # asked again: from the cache, and now the most recent
    for i in (10, 11):
        assert inserted(server, ask(i)) == 2  # each pushes out the two least recently used entries
    assert inserted(server, ask(0)) == 0  # kept: it was used after the others
    assert inserted(server, ask(1)) > 0  # gone: the least recently used


def test_the_packet_cache_keeps_its_byte_cap(start_server: StartServer) -> None:
    server = start_server(packet_cache={"max_entries": 1_000_000, "max_bytes": 65536})
    store = server.service.dispatcher.packets.store
    for i in range(400):
        server.ask(f"some-rather-long-name-to-fill-the-cache-{i}.internal", "AAAA")
        assert store.bytes <= 65536
    assert store.evictions > 0 and len(store) > 50


def test_the_forwarders_cache_keeps_its_byte_cap(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(
        upstreams=[fake.address], forward={"enabled": True}, cache={"max_bytes": 65536, "max_entries": 1_000_000}
    )
    cache = server.service.forwarder.cache
    for i in range(300):  # NXDOMAIN with an SOA: cached as negative answers
        assert server.ask(f"nothing-{i}.example.test", "A").rcode_text == "NXDOMAIN"
        assert cache.store.bytes <= 65536
    assert cache.evictions > 0 and len(cache) > 50
    # The latest answer is still cached: asked again, it does not go upstream.
    before = len(fake.queries("nothing-299.example.test."))
    server.ask("nothing-299.example.test", "A")
    assert len(fake.queries("nothing-299.example.test.")) == before


def test_what_the_caches_hold_is_out_of_the_collectors_sight(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(upstreams=[fake.address], forward={"enabled": True})
    for _ in range(2):
        for name, rdtype in (
            ("my-app.internal", "AAAA"),
            ("nope.internal", "AAAA"),
            ("vms.my-app.internal", "TXT"),
            ("web.railway.internal", "A"),
        ):
            server.ask(name, rdtype)
            server.ask(name.upper(), rdtype)  # another spelling
            server.ask(name, rdtype, tcp=True)
        server.ask("www.example.test", "A")
        server.ask("nothing.example.test", "A")
    packets = server.service.dispatcher.packets
    forwarded = server.service.forwarder.cache.store

    def tracked() -> list[object]:
        gc.collect()  # a collection is when tuples of untracked things stop being tracked
        values = [*packets.store.items.values(), *forwarded.items.values()]
        return [v for v in values if gc.is_tracked(v)] + [
            d for d in (packets.turns, *packets.sources.values()) if gc.is_tracked(d)
        ]

    assert len(packets.store) > 10 and len(forwarded) >= 2
    assert on_reactor(server.reactor, tracked) == []


def test_collector_pauses_are_counted(start_server: StartServer) -> None:
    server = start_server()
    watch = server.service.collector_watch
    before = [sum(h.counts) for h in watch.pauses]
    on_reactor(server.reactor, gc.collect)
    after = [sum(h.counts) for h in watch.pauses]
    assert after[2] == before[2] + 1 and watch.longest > 0


# --- the store itself -------------------------------------------------------------------------------


def test_an_entry_too_big_for_the_store_is_not_kept() -> None:
    store = LruStore(100, 16 * 1000)
    for i in range(10):
        assert store.put(bytes([i]), (200, b"x" * 100))
    assert not store.put(b"big", (1001, b"y"))  # over a sixteenth of the bytes: would push out many
    assert len(store) == 10 and store.peek(b"big") is None and store.evictions == 0


def test_collections_run_on_a_timer_taking_the_older_generations_in_turn(start_server: StartServer) -> None:
    server = start_server()
    watch = server.service.collector_watch

    def counts() -> list[int]:
        return [sum(h.counts) for h in watch.pauses]

    before = counts()
    for _ in range(FULL_EVERY):  # a minute of ticks on the server's clock
        server.advance(TICK)
    after = counts()
    young, middle, full = (a - b for a, b in zip(after, before, strict=True))
    assert young >= FULL_EVERY * 0.9 - 1  # the tick's own (each middle or full one is instead of a young one)
    assert middle >= FULL_EVERY // MIDDLE_EVERY - 1
    assert full >= 1


def test_no_timed_collection_while_the_collector_is_paused(start_server: StartServer) -> None:
    server = start_server()
    watch = server.service.collector_watch

    def paused_ticks() -> int:
        before = sum(sum(h.counts) for h in watch.pauses)
        with collector_paused():
            for _ in range(5):
                server.clock.advance(TICK)
        return sum(sum(h.counts) for h in watch.pauses) - before

    assert on_reactor(server.reactor, paused_ticks) == 0


def test_glibc_takes_the_fixed_mmap_threshold() -> None:
    # Debian's C library is glibc, which has mallopt; the call is idempotent, as a server's start is.
    from internal_dns.ops.malloc import fix_mmap_threshold

    assert fix_mmap_threshold() and fix_mmap_threshold()
