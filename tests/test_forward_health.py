"""Upstream failure (SPEC §7): the next upstream on a timeout, upstreams marked down and probed
back, SERVFAIL within the deadline when all fail.

Timeouts, the deadline and probes run on the server's injected clock: a test sends its query
without waiting (`Pending`), waits until the upstream has it, moves the clock, then reads the reply.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import dns.rdatatype
import pytest
from twisted.internet.defer import Deferred

from internal_dns.upstream import Upstream
from tests.conftest import RunningServer, on_reactor
from tests.fake_upstream import FakeUpstream, Pending

StartServer = Callable[..., RunningServer]


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstream]]:
    upstreams = [FakeUpstream(), FakeUpstream(), FakeUpstream()]
    yield upstreams
    for upstream in upstreams:
        upstream.close()


def forwarding(start_server: StartServer, upstreams: list[FakeUpstream], **forward: Any) -> RunningServer:
    return start_server(upstreams=[u.address for u in upstreams], forward={"enabled": True, **forward})


def upstream_state(server: RunningServer) -> list[tuple[bool, int]]:
    """(down, consecutive failures) of each upstream, read on the reactor thread."""
    return on_reactor(server.reactor, lambda: [(u.down, u.failures) for u in server.service.forwarder.upstreams])


def advance_until_health_change(server: RunningServer, seconds: float) -> Upstream:
    """Move the clock and wait (bounded) until an upstream is marked down or back up."""

    def go() -> Any:
        d = server.service.forwarder.next_health_change()
        server.clock.advance(seconds)
        return d

    return on_reactor(server.reactor, go)


def record_exchanges(server: RunningServer) -> list[Deferred[Any]]:
    """From now on, every exchange the forwarder starts (queries and probes), to wait on."""
    forwarder = server.service.forwarder
    seen: list[Deferred[Any]] = []
    real = forwarder._exchange

    def recording(*args: Any, **kwargs: Any) -> Deferred[Any]:
        d = real(*args, **kwargs)
        seen.append(d)
        return d

    forwarder._exchange = recording
    return seen


def closed_port() -> int:
    """A loopback UDP port nothing listens on: a query there is refused (ICMP) at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_timeout_moves_to_the_next_upstream(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "silent"
    server = forwarding(start_server, [first, second], timeout=1.5)
    pending = Pending.ask(server, "www.example.test", "A")
    first.wait_for(1)
    assert pending.nothing_yet() and second.received == []
    server.advance(1.4)
    assert pending.nothing_yet() and second.received == []  # not before the timeout
    server.advance(0.1)
    second.wait_for(1)
    reply = pending.reply()
    assert reply.addresses("A") == ["192.0.2.10"] and reply.flag("RA") and not reply.flag("AA")
    assert upstream_state(server) == [(False, 1), (False, 0)]


def test_refused_connection_moves_on_at_once(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    _, second, _ = fakes
    server = start_server(upstreams=[f"127.0.0.1:{closed_port()}", second.address], forward={"enabled": True})
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]  # no clock move needed
    assert upstream_state(server) == [(False, 1), (False, 0)]


def test_upstream_marked_down_after_the_threshold_then_skipped(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "silent"
    server = forwarding(start_server, [first, second], timeout=1.5, fail_threshold=3)
    for i in range(3):
        pending = Pending.ask(server, f"n{i}.example.test", "A")
        first.wait_for(i + 1)
        server.advance(1.5)
        assert pending.reply().rcode_text == "NXDOMAIN"
        assert upstream_state(server)[0] == (i == 2, i + 1)
    # Down: the next question goes straight to the second upstream, no timeout to wait out.
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert first.queries("www.example.test.") == [] and len(second.queries("www.example.test.")) == 1
    assert len(first.received) == 3


def test_success_resets_the_failure_count(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    server = forwarding(start_server, [first, second], timeout=1.5, fail_threshold=2)
    first.mode = "silent"
    pending = Pending.ask(server, "a.example.test", "A")
    first.wait_for(1)
    server.advance(1.5)
    pending.reply()
    first.mode = "answer"
    server.ask("b.example.test", "A")
    assert upstream_state(server) == [(False, 0), (False, 0)]
    first.mode = "silent"
    pending = Pending.ask(server, "c.example.test", "A")
    first.wait_for(3)
    server.advance(1.5)
    pending.reply()
    assert upstream_state(server)[0] == (False, 1)  # one failure in a row, not two


def test_probe_brings_a_down_upstream_back(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "silent"
    server = forwarding(start_server, [first, second], timeout=1.0, fail_threshold=1, probe_interval=2.0)
    pending = Pending.ask(server, "www.example.test", "A")
    first.wait_for(1)
    assert advance_until_health_change(server, 1.0).label == first.address  # marked down
    assert pending.reply().addresses("A") == ["192.0.2.10"]
    assert upstream_state(server)[0] == (True, 1)
    # Probes while it stays silent: a `. NS` each interval, and it stays down.
    server.advance(1.0)  # t = 2: the first probe
    probe = first.wait_for(2)[-1]
    assert (probe.name, probe.rdtype) == (".", dns.rdatatype.NS)
    server.advance(1.0)  # the probe times out
    assert upstream_state(server)[0][0] is True
    assert server.ask("mail.example.test", "MX").rcode_text == "NOERROR"
    assert first.queries("mail.example.test.") == []  # still skipped
    first.mode = "answer"
    assert advance_until_health_change(server, 1.0).label == first.address  # t = 4: probed, answered
    assert upstream_state(server)[0] == (False, 0)
    assert server.ask("www.example.test", "AAAA").addresses("AAAA") == ["2001:db8::10"]
    assert len(first.queries("www.example.test.")) == 2 and len(second.queries("www.example.test.")) == 1


def test_probe_answered_refused_keeps_it_down(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "refused"
    server = forwarding(start_server, [first, second], fail_threshold=1, probe_interval=2.0)
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert upstream_state(server)[0] == (True, 1)
    exchanges = record_exchanges(server)
    server.advance(2.0)
    [probe] = exchanges
    on_reactor(server.reactor, lambda: probe)  # the probe's REFUSED has been handled
    assert [r.name for r in first.received] == ["www.example.test.", "."]
    assert upstream_state(server)[0][0] is True
    assert server.ask("mail.example.test", "MX").rcode_text == "NOERROR"
    assert first.queries("mail.example.test.") == []  # still skipped


def test_all_failing_gives_servfail_at_the_deadline(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    for fake in fakes:
        fake.mode = "silent"
    server = forwarding(start_server, fakes, timeout=1.5, deadline=4.0)
    pending = Pending.ask(server, "www.example.test", "A")
    fakes[0].wait_for(1)
    server.advance(1.5)
    fakes[1].wait_for(1)
    server.advance(1.5)
    fakes[2].wait_for(1)  # the last gets what is left of the deadline: 1.0 s
    server.advance(0.9)
    assert pending.nothing_yet()
    server.advance(0.1)
    reply = pending.reply()
    assert reply.rcode_text == "SERVFAIL" and reply.flag("RA") and not reply.flag("AA")
    assert reply.msg.answer == [] and reply.msg.question[0].name.to_text() == "www.example.test."


def test_deadline_cuts_the_attempts_short(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    for fake in fakes:
        fake.mode = "silent"
    server = forwarding(start_server, fakes, timeout=1.5, deadline=2.0)
    pending = Pending.ask(server, "www.example.test", "A")
    fakes[0].wait_for(1)
    server.advance(1.5)
    fakes[1].wait_for(1)
    server.advance(0.5)
    assert pending.reply().rcode_text == "SERVFAIL"
    assert fakes[2].received == []  # no time left for the third


def test_tcp_retry_of_a_truncated_reply_ends_at_the_deadline(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, third = fakes
    first.mode = second.mode = "silent"
    third.mode, third.hold, third.tcp_mode = "truncate", True, "silent"  # TC late over UDP, then nothing over TCP
    server = forwarding(start_server, fakes)  # the defaults: timeout 1.5, deadline 4
    pending = Pending.ask(server, "www.example.test", "A")
    first.wait_for(1)
    server.advance(1.5)
    second.wait_for(1)
    server.advance(1.5)
    third.wait_for(1)  # t = 3: a second left
    server.advance(0.9)
    third.release()  # TC at t = 3.9: the TCP retry gets the 0.1 s left, not a fresh timeout
    assert [r.transport for r in third.wait_for(2)] == ["udp", "tcp"]
    assert pending.nothing_yet()
    server.advance(0.1)  # t = 4: the deadline
    reply = pending.reply()
    assert reply.rcode_text == "SERVFAIL" and reply.flag("RA")
    results = on_reactor(server.reactor, lambda: dict(server.service.forwarder.upstreams[2].results))
    assert results["truncated_retry"] == 1 and results["timeout"] == 1


def test_all_failing_over_tcp(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first = fakes[0]
    first.mode = "silent"
    server = forwarding(start_server, [first], timeout=1.5)
    pending = Pending.ask(server, "www.example.test", "A", tcp=True)
    first.wait_for(1)
    assert first.received[0].transport == "tcp"
    server.advance(1.5)
    assert pending.reply().rcode_text == "SERVFAIL"


def test_all_down_still_tried(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    only = fakes[0]
    only.mode = "silent"
    server = forwarding(start_server, [only], timeout=1.0, fail_threshold=1, probe_interval=60.0)
    pending = Pending.ask(server, "www.example.test", "A")
    only.wait_for(1)
    server.advance(1.0)
    assert pending.reply().rcode_text == "SERVFAIL"
    assert upstream_state(server) == [(True, 1)]
    only.mode = "answer"  # back, and not yet probed: a down upstream is better than none
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert upstream_state(server) == [(False, 0)]


def test_readiness_and_metrics_follow_health(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    only = fakes[0]
    only.mode = "silent"
    server = forwarding(start_server, [only], timeout=1.0, fail_threshold=1)
    assert on_reactor(server.reactor, server.service.forwarder.healthy) is True
    pending = Pending.ask(server, "www.example.test", "A")
    only.wait_for(1)
    server.advance(1.0)
    pending.reply()
    assert on_reactor(server.reactor, server.service.forwarder.healthy) is False
    results = on_reactor(server.reactor, lambda: dict(server.service.forwarder.upstreams[0].results))
    assert results["timeout"] == 1 and results["success"] == 0
