"""Events: something that happens again and again in one part (an upstream marked down, a probe's
outcome counted), and the parts that want to hear of it.

The part that owns an event fires it; others subscribe a callable, told every time, or ask for a
Deferred that fires the next time only. The owner needs no list of waiters or hooks of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


class Event(Generic[T]):
    __slots__ = ("_subscribers", "_waiters")

    def __init__(self) -> None:
        self._subscribers: list[Callable[[T], object]] = []
        self._waiters: list[Deferred[T]] = []

    def subscribe(self, subscriber: Callable[[T], object]) -> None:
        """Call `subscriber` with the value of every firing from now on, in the order subscribed."""
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Callable[[T], object]) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def next(self) -> Deferred[T]:
        """A Deferred that fires with the value of the next firing; cancelled, it is forgotten."""
        d: Deferred[T] = Deferred(self._forget)
        self._waiters.append(d)
        return d

    def fire(self, value: T) -> None:
        """Tell the subscribers, then fire the Deferreds waiting for this firing (one asked for
        while it goes on waits for the next)."""
        waiters, self._waiters = self._waiters, []
        for subscriber in list(self._subscribers):
            subscriber(value)
        for d in waiters:
            if not d.called:  # not cancelled by an earlier one's callbacks
                d.callback(value)

    def _forget(self, d: Deferred[T]) -> None:
        if d in self._waiters:
            self._waiters.remove(d)
