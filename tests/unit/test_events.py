"""events.py: subscribers told of every firing in order, Deferreds of the next firing only, a wait
asked for during a firing left for the next one, cancelled waits forgotten."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from internal_dns.events import Event


def results(d: Deferred[str]) -> list[object]:
    seen: list[object] = []
    d.addBoth(seen.append)
    return seen


def test_subscribers_hear_every_firing_in_the_order_they_subscribed() -> None:
    event: Event[str] = Event()
    heard: list[tuple[str, str]] = []
    event.subscribe(lambda value: heard.append(("first", value)))
    event.subscribe(lambda value: heard.append(("second", value)))
    event.fire("a")
    event.fire("b")
    assert heard == [("first", "a"), ("second", "a"), ("first", "b"), ("second", "b")]


def test_next_fires_with_the_next_firing_only() -> None:
    event: Event[str] = Event()
    one, two = event.next(), event.next()
    seen_one, seen_two = results(one), results(two)
    assert seen_one == [] and seen_two == []
    event.fire("a")
    event.fire("b")
    assert seen_one == ["a"] and seen_two == ["a"]
    assert results(event.next()) == []  # nothing fired since


def test_subscribers_are_told_before_the_waiting_deferreds() -> None:
    event: Event[str] = Event()
    order: list[str] = []
    event.next().addCallback(lambda value: order.append("waiter " + value))
    event.subscribe(lambda value: order.append("subscriber " + value))
    event.fire("a")
    assert order == ["subscriber a", "waiter a"]


def test_a_wait_asked_for_during_a_firing_waits_for_the_next() -> None:
    event: Event[str] = Event()
    later: list[Deferred[str]] = []
    event.subscribe(lambda _: later.append(event.next()) if not later else None)
    event.next().addCallback(lambda _: later.append(event.next()))
    event.fire("a")
    assert [d.called for d in later] == [False, False]
    event.fire("b")
    assert [d.result for d in later] == ["b", "b"]


def test_a_cancelled_wait_is_forgotten() -> None:
    event: Event[str] = Event()
    d = event.next()
    seen = results(d)
    d.cancel()
    assert len(seen) == 1 and isinstance(seen[0], Failure) and seen[0].check(CancelledError)
    event.fire("a")  # no AlreadyCalledError
    assert len(seen) == 1


def test_a_wait_cancelled_while_the_event_fires_is_left_alone() -> None:
    event: Event[str] = Event()
    first, second = event.next(), event.next()
    first.addCallback(lambda _: second.cancel())  # the waiters fire in the order asked for
    seen = results(second)
    event.fire("a")
    assert len(seen) == 1 and isinstance(seen[0], Failure) and seen[0].check(CancelledError)
