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
        for reader in (fast, usual, failing):
            reactor.removeReader(reader)
        for a, b in pairs:
            a.close()
            b.close()
        reactor._poller.close()


def test_another_reactor_is_left_as_it_is() -> None:
    class NotEpoll:
        _poller = object()

    assert fastpoll.install(NotEpoll()) is False
