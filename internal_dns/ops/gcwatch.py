"""Python's collector, timed and kept short.

A collection stops every thread, the reactor's too, for as long as it walks the objects it
tracks; its pauses are part of the latency budget, and an operator should see them grow before
the answers slow down. `gc.callbacks` is told when each collection starts and stops.

Collections also run on a timer. CPython starts a young collection after so many *allocations*
of tracked objects, but a tuple taken from its free list is tracked without counting as one: a
full cache that evicts an entry for each one it adds reuses the evicted entry's tuple, and young
collections grow rarer and longer (thousands of new entries each, past 5 ms). Collected every
`TICK` seconds, the young generation never holds more than that long's worth of new objects, and
each cache entry leaves the collector's sight at its first collection. A timed young collection
resets the count that would start CPython's own, so the timer also takes the older generations in
turn as CPython would (the middle one every tenth time, everything every `FULL_EVERY` ticks):
what becomes garbage after a while is still found. The snapshot is frozen out of sight
(registry/heap.py) and the caches untracked, so a full collection walks only the server's few
other objects.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from time import perf_counter
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from internal_dns.counting import Histogram

# Seconds: a young collection takes tens of microseconds; a full one over a big heap, hundreds of ms.
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


TICK = 0.1  # seconds between two timed collections
MIDDLE_EVERY = 10  # ticks: the middle generation, as CPython's default threshold (700, 10, 10)
FULL_EVERY = 600  # ticks: once a minute, everything


class TimedCollections:
    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> None:
        # Not while a snapshot is being built with the collector paused (registry/heap.py): its
        # new objects are about to be frozen out of the collector's sight, not walked now.
        if not gc.isenabled():
            return
        self.ticks += 1
        gc.collect(2 if self.ticks % FULL_EVERY == 0 else 1 if self.ticks % MIDDLE_EVERY == 0 else 0)


class CollectorWatch:
    def __init__(self) -> None:
        self.pauses = [Histogram(PAUSE_BUCKETS) for _ in range(3)]  # by generation
        self.longest = 0.0
        self._started = 0.0

        self._timed: LoopingCall | None = None

    def collect(self) -> Iterator[Metric]:
        pauses = HistogramMetricFamily(
            "internal_dns_gc_pause_seconds",
            "Pauses of Python's garbage collector (every thread stops), by generation.",
            labels=["generation"],
        )
        for generation, h in enumerate(self.pauses):
            pauses.add_metric([str(generation)], h.buckets(), h.total)
        yield pauses
        yield GaugeMetricFamily(
            "internal_dns_gc_longest_pause_seconds", "The longest collector pause since the server started.", value=self.longest
        )

    def install(self, clock: IReactorTime) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        if self._timed is None:
            self._timed = LoopingCall(TimedCollections())
            self._timed.clock = clock
            self._timed.start(TICK, now=False)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._timed is not None and self._timed.running:
            self._timed.stop()
        self._timed = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter()
            return
        pause = perf_counter() - self._started
        self.pauses[info["generation"]].observe(pause)
        if pause > self.longest:
            self.longest = pause
