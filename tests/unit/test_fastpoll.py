"""The reactor's poll that reads UDP listeners directly (transport/fastpoll.py), on a real epoll
reactor of its own and real sockets."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import globalLogPublisher

from internal_dns.transport import fastpoll


class Reader:
    def __init__(self, sock: socket.socket, fast: bool, fail: bool = False):
        self.sock, self.fast_read, self.fail = sock, fast, fail
        self.read: list[bytes] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "reader"

    def doRead(self) -> None:
        data = self.sock.recv(100)
        if self.fail:
            raise RuntimeError("a bug in a reader")
        self.read.append(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost = reason


def close(reactor: EPollReactor, pairs: list[tuple[socket.socket, socket.socket]], *readers: Reader) -> None:
    for reader in readers:
        reactor.removeReader(reader)
    for a, b in pairs:
        a.close()
        b.close()
    reactor._poller.close()


def test_fast_and_usual_readers_are_read_and_a_failing_fast_one_is_logged() -> None:
    reactor = EPollReactor()
    assert fastpoll.install(reactor) and not fastpoll.install(reactor)  # once
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
    fast, usual, failing = Reader(pairs[0][0], True), Reader(pairs[1][0], False), Reader(pairs[2][0], True, fail=True)
    for reader in (fast, usual, failing):
        reactor.addReader(reader)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for (_, writer), data in zip(pairs, (b"one", b"two", b"three"), strict=True):
            writer.send(data)
        for _ in range(3):
            reactor.iterate(0.1)
        assert fast.read == [b"one"] and usual.read == [b"two"]
        assert any("reading" in str(e.get("log_format")) for e in events)  # logged, not raised
        pairs[0][1].send(b"again")  # the failing reader stays registered, the others too
        reactor.iterate(0.1)
        assert fast.read == [b"one", b"again"]
    finally:
        globalLogPublisher.removeObserver(events.append)
        close(reactor, pairs, fast, usual, failing)


def test_another_reactor_is_left_as_it_is() -> None:
    class NotEpoll:
        _poller = object()

    assert fastpoll.install(NotEpoll()) is False


class Stepping:
    """reactor.seconds, one step of time further at each reading."""

    def __init__(self, *times: float):
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def polling_reactor(seconds: Stepping) -> tuple[EPollReactor, list[tuple[socket.socket, socket.socket]]]:
    reactor = EPollReactor()
    fastpoll.install(reactor)
    reactor.seconds = seconds  # type: ignore[method-assign]
    reactor.running = True  # a main loop turning (never started here)
    return reactor, [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]


def test_a_poll_that_only_read_udp_listeners_goes_on_polling_for_the_time_it_was_given() -> None:
    reactor, pairs = polling_reactor(Stepping(0.0, 1.0, 2.0, 6.0))  # given 5 s; read at 1, at 2, then past
    fast = Reader(pairs[0][0], True)
    reactor.addReader(fast)
    try:
        for data in (b"one", b"two", b"three"):
            pairs[0][1].send(data)
        reactor.doIteration(5.0)  # one call: no turn of the main loop between the datagrams
        assert fast.read == [b"one", b"two", b"three"]
    finally:
        close(reactor, pairs, fast)


def test_a_poll_returns_to_the_main_loop_when_it_has_something_to_do() -> None:
    reactor, pairs = polling_reactor(Stepping(0.0))  # time stands still: only the reasons below end the poll
    fast, usual = Reader(pairs[0][0], True), Reader(pairs[1][0], False)
    reactor.addReader(fast)
    reactor.addReader(usual)
    try:
        for data in (b"one", b"two"):
            pairs[0][1].send(data)
        reactor.doIteration(0)  # a poll that may not wait polls once
        assert fast.read == [b"one"]

        reactor.callLater(10, lambda: None)  # scheduled since the main loop's last turn
        reactor.doIteration(5.0)
        assert fast.read == [b"one", b"two"]
        reactor.runUntilCurrent()  # the main loop's turn takes the call in

        pairs[0][1].send(b"three")
        pairs[1][1].send(b"usual")  # a descriptor of the usual kind (the waker, a TCP connection)
        reactor.doIteration(5.0)
        assert usual.read == [b"usual"]

        reactor.callFromThread(lambda: None)  # a call from another thread (its waker is read too)
        pairs[0][1].send(b"four")
        reactor.doIteration(5.0)
        assert fast.read[-1] == b"four"
        reactor.runUntilCurrent()

        reactor.running = False  # stopping
        pairs[0][1].send(b"five")
        pairs[0][1].send(b"six")
        reactor.doIteration(5.0)
        assert fast.read[-1] == b"five"
    finally:
        close(reactor, pairs, fast, usual)


def test_a_poll_ends_when_the_next_timed_call_is_due() -> None:
    reactor, pairs = polling_reactor(Stepping(0.0, 0.0, 3.0))
    fast = Reader(pairs[0][0], True)
    reactor.addReader(fast)
    try:
        reactor.callLater(2.0, lambda: None)
        reactor.runUntilCurrent()  # pending now, due at 2
        for data in (b"one", b"two"):
            pairs[0][1].send(data)
        reactor.doIteration(60.0)  # read at 3: past the call, so back to the main loop
        assert fast.read == [b"one"]
    finally:
        close(reactor, pairs, fast)
