"""Python's cyclic garbage collector and big registries.

A snapshot of a large registry is millions of small objects. Built with the collector running,
young-generation passes keep walking the growing heap (a third of the load time), and now and
then a full collection holds the interpreter lock for hundreds of milliseconds, on whichever
thread happens to allocate: the reactor's too. So a snapshot is built with the collector paused,
and then frozen (`gc.freeze`): everything alive moves out of the collector's sight for good. So is
each change a live store applies (live.py): a check flipping a thousand times a second re-makes
index objects that, left to the collector, were walked again and again by collections the
backend's thread set off, holding the interpreter lock for 10–40 ms each (bench/health_flips.py:
the reactor's slowest answer fell from 160–250 ms to under 20 ms).
A snapshot holds no reference cycles, so reference counting frees it when the next replaces it,
frozen or not. The price: a reference cycle that became garbage while the collector was paused,
or that was alive at a freeze (the reactor's in-flight forwarded queries at that instant, say)
and became garbage later, is never collected; the query paths keep no cycles, so that is little,
but it is not nothing on a server whose registry changes all day.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pausers = 0
_enabled_before = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside (nests, and works from any thread)."""
    global _pausers, _enabled_before
    with _lock:
        if _pausers == 0:
            _enabled_before = gc.isenabled()
        _pausers += 1
        gc.disable()
    try:
        yield
    finally:
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _enabled_before:
                gc.enable()


def build_frozen(build: Callable[[], T]) -> T:
    """`build()` with the collector paused, and what it built frozen before the collector resumes."""
    with collector_paused():
        result = build()
        gc.freeze()
    return result
