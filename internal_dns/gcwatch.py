"""Python's collector timed: every collection's pause, by generation, for the metrics.

A collection stops every thread, the reactor's too, for as long as it walks the objects it
tracks; its pauses are part of the latency budget, and an operator should see them grow before
the answers slow down. `gc.callbacks` is told when each collection starts and stops.
"""

from __future__ import annotations

import gc
from time import perf_counter
from typing import Any

from internal_dns.metrics import Histogram

# Seconds: a young collection takes tens of microseconds; a full one over a big heap, hundreds of ms.
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class CollectorWatch:
    def __init__(self) -> None:
        self.pauses = [Histogram(PAUSE_BUCKETS) for _ in range(3)]  # by generation
        self.longest = 0.0
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter()
            return
        pause = perf_counter() - self._started
        self.pauses[info["generation"]].observe(pause)
        if pause > self.longest:
            self.longest = pause
