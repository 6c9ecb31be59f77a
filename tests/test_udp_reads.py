"""How many datagrams a UDP listener reads on one wake-up of the reactor (udp.py, `_budget`):
one while wake-ups find one, so that a steady rate costs no EAGAIN read per query; every
PROBE_EVERY-th wake-up reads on, and once one finds several, each reads until the socket is empty
(at most READS_PER_WAKEUP) until a wake-up finds one or none again. Real sockets: the listener's
`doRead` is called as the reactor would call it when the socket is readable, and a server is
asked a burst from one socket."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from internal_dns.transport.settings import ListenConfig
from internal_dns.transport.udp import PROBE_EVERY, READS_PER_WAKEUP, UdpListener
from tests.conftest import RunningServer
from tests.test_rate_limit import blast


class Recorder:
    """A respond() that answers each datagram with itself, and keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, data: bytes, *_: Any) -> bytes:
        self.seen.append(data)
        return data


@pytest.fixture
def listener() -> Iterator[tuple[UdpListener, Recorder, socket.socket]]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect(server.getsockname())
    recorder = Recorder()
    udp = UdpListener(None, server, ListenConfig("127.0.0.1", server.getsockname()[1]), recorder, lambda _: {})
    yield udp, recorder, client
    server.close()
    client.close()


def send(client: socket.socket, count: int) -> None:
    for i in range(count):
        client.send(i.to_bytes(2, "big") + b"query")  # on loopback, queued on the listener's socket by send()


def wake(udp: UdpListener, recorder: Recorder) -> int:
    """One wake-up: the datagrams it read."""
    before = len(recorder.seen)
    udp.doRead()
    return len(recorder.seen) - before


def test_one_datagram_a_wake_up_until_a_probe_finds_more(listener: tuple[UdpListener, Recorder, socket.socket]) -> None:
    udp, recorder, client = listener
    send(client, PROBE_EVERY + 5)
    reads = [wake(udp, recorder) for _ in range(PROBE_EVERY)]
    assert reads == [1] * (PROBE_EVERY - 1) + [6]  # the probe read the rest, then found it empty
    send(client, 3)
    assert wake(udp, recorder) == 3  # it had found several: each wake-up reads on
    send(client, 1)
    assert wake(udp, recorder) == 1  # one, and then empty: back to one a wake-up
    send(client, 2)
    assert wake(udp, recorder) == 1
    assert wake(udp, recorder) == 1  # the second, on the wake-up the level-triggered poll gives at once
    assert wake(udp, recorder) == 0  # a wake-up with nothing to read reads nothing
    send(client, 2)
    assert wake(udp, recorder) == 1  # (a wake-up that found none is one a wake-up too)
    client.settimeout(1)
    answered = [client.recv(100) for _ in range(len(recorder.seen))]
    assert answered == recorder.seen  # every datagram read was answered, in order


def test_a_busy_socket_is_read_in_batches_of_at_most_reads_per_wakeup(
    listener: tuple[UdpListener, Recorder, socket.socket],
) -> None:
    udp, recorder, client = listener
    send(client, PROBE_EVERY + 1)
    assert [wake(udp, recorder) for _ in range(PROBE_EVERY)][-1] == 2  # the probe found several
    send(client, READS_PER_WAKEUP + 10)
    assert wake(udp, recorder) == READS_PER_WAKEUP  # then the reactor's other sockets get their turn
    assert wake(udp, recorder) == 10


def test_a_burst_from_one_socket_is_answered_whole(start_server: Callable[..., RunningServer]) -> None:
    server = start_server()
    replies = blast(server, 3 * READS_PER_WAKEUP)
    assert len(replies) == 3 * READS_PER_WAKEUP and all(r.answer for r in replies)
    assert server.ask("my-app.internal").addresses()  # and one alone after it
