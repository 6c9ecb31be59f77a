"""Upstream failure (SPEC §7): the next upstream on a timeout, health checks after a failed
query, upstreams marked down after failed checks and probed back, SERVFAIL within the deadline
when all fail.

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

from internal_dns.forward.upstream import Upstream
from tests.conftest import RunningServer, on_reactor
from tests.fake_upstream import FakeUpstream, Pending
from tests.test_metrics import http_get

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
        d = server.service.forwarder.health_changed.next()
        server.clock.advance(seconds)
        return d

    return on_reactor(server.reactor, go)


def advance_until_probed(server: RunningServer, seconds: float) -> Upstream:
    """Move the clock and wait (bounded) until a probe's outcome has been counted."""

    def go() -> Any:
        d = server.service.forwarder.probe_counted.next()
        server.clock.advance(seconds)
        return d

    return on_reactor(server.reactor, go)


def expect_probe(server: RunningServer) -> Callable[[], Upstream]:
    """Start waiting for the next probe's outcome now; the returned call waits (bounded) for it."""
    waiting: list[Deferred[Upstream]] = []
    on_reactor(server.reactor, lambda: waiting.append(server.service.forwarder.probe_counted.next()))
    return lambda: on_reactor(server.reactor, lambda: waiting[0])


def probes(server: RunningServer) -> list[dict[str, int]]:
    return on_reactor(server.reactor, lambda: [dict(u.probes) for u in server.service.forwarder.upstreams])


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
    # The timeout is no verdict on the first upstream: it sets off a health check of it.
    probe = first.wait_for(2)[-1]
    assert (probe.name, probe.rdtype, probe.transport) == (".", dns.rdatatype.NS, "udp")
    assert upstream_state(server) == [(False, 0), (False, 0)]
    assert advance_until_probed(server, 1.5).label == first.address  # the probe times out too
    assert upstream_state(server) == [(False, 1), (False, 0)]
    assert probes(server) == [{"success": 0, "failure": 1}, {"success": 0, "failure": 0}]


def test_refused_connection_moves_on_at_once(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    _, second, _ = fakes
    closed = f"127.0.0.1:{closed_port()}"
    server = start_server(upstreams=[closed, second.address], forward={"enabled": True})
    probed = expect_probe(server)
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]  # no clock move needed
    assert probed().label == closed  # its probe is refused at once as well: one failed check
    assert upstream_state(server) == [(False, 1), (False, 0)]


def test_one_broken_domain_never_marks_an_upstream_down(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    names = [f"broken{i}.example.test." for i in range(4)]
    first.broken = set(names)  # times out for these names, answers everything else
    server = start_server(
        upstreams=[first.address, second.address],
        forward={"enabled": True, "timeout": 1.0, "fail_threshold": 2, "probe_interval": 2.0},
        metrics={"address": "127.0.0.1", "port": 0},
    )
    for i, name in enumerate(names):  # more timeouts in a row than fail_threshold
        pending = Pending.ask(server, name, "A")
        assert first.wait_for(2 * i + 1)[-1].name == name  # after each earlier question and its probe
        probed = expect_probe(server)
        server.advance(1.0)
        assert pending.reply().rcode_text == "NXDOMAIN"  # from the second upstream
        assert probed().label == first.address  # the health check that followed was answered
        assert upstream_state(server)[0] == (False, 0)
    assert probes(server)[0] == {"success": 4, "failure": 0}
    results = on_reactor(server.reactor, lambda: dict(server.service.forwarder.upstreams[0].results))
    assert results["timeout"] == 4
    assert http_get(server, "/readyz")[:2] == (200, "text/plain; charset=utf-8")
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert len(first.queries("www.example.test.")) == 1  # still first in line


def test_upstream_marked_down_after_failed_checks_then_skipped(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "silent"
    server = forwarding(start_server, [first, second], timeout=1.5, fail_threshold=3, probe_interval=2.0)
    pending = Pending.ask(server, "www.example.test", "A")
    first.wait_for(1)
    server.advance(1.5)
    assert pending.reply().addresses("A") == ["192.0.2.10"]
    # A probe at 1.5 s, timed out at 3; the next at 5, timed out at 6.5; the next at 8.5, at 10.
    assert upstream_state(server)[0] == (False, 0)  # a failed query is no verdict
    for checks in (1, 2, 3):
        if checks > 1:
            server.advance(2.0)  # the next probe, an interval after the last one failed
        probe = first.wait_for(checks + 1)[-1]
        assert (probe.name, probe.rdtype) == (".", dns.rdatatype.NS)
        assert advance_until_probed(server, 1.5).label == first.address
        assert upstream_state(server)[0] == (checks == 3, checks)  # down at the third failed check
    # Down: the next question goes straight to the second upstream, no timeout to wait out.
    assert server.ask("mail.example.test", "MX").rcode_text == "NOERROR"
    assert first.queries("mail.example.test.") == [] and len(second.queries("mail.example.test.")) == 1
    assert [r.name for r in first.received] == ["www.example.test.", ".", ".", "."]
    assert probes(server)[0] == {"success": 0, "failure": 3}


def test_an_answered_probe_resets_the_count_and_ends_the_checks(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    server = forwarding(start_server, [first, second], timeout=1.0, fail_threshold=3, probe_interval=2.0)
    first.mode = "silent"
    pending = Pending.ask(server, "a.example.test", "A")
    first.wait_for(1)
    server.advance(1.0)
    pending.reply()
    advance_until_probed(server, 1.0)  # t = 2: the first probe times out
    assert upstream_state(server)[0] == (False, 1)
    first.mode = "answer"
    advance_until_probed(server, 2.0)  # t = 4: the second is answered
    assert upstream_state(server)[0] == (False, 0)
    assert probes(server)[0] == {"success": 1, "failure": 1}
    server.advance(10.0)  # no more probes: the check is over
    assert server.ask("b.example.test", "A").rcode_text == "NXDOMAIN"
    assert [r.name for r in first.received] == ["a.example.test.", ".", ".", "b.example.test."]


def test_probe_brings_a_down_upstream_back(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "silent"
    server = forwarding(start_server, [first, second], timeout=1.0, fail_threshold=1, probe_interval=2.0)
    pending = Pending.ask(server, "www.example.test", "A")
    first.wait_for(1)
    server.advance(1.0)  # t = 1: timed out; the second answers, the first is probed
    assert pending.reply().addresses("A") == ["192.0.2.10"]
    probe = first.wait_for(2)[-1]
    assert (probe.name, probe.rdtype) == (".", dns.rdatatype.NS)
    assert upstream_state(server)[0] == (False, 0)
    assert advance_until_health_change(server, 1.0).label == first.address  # t = 2: marked down
    assert upstream_state(server)[0] == (True, 1)
    # Probed every interval while it stays silent, and down all the while.
    server.advance(2.0)  # t = 4: the next probe
    first.wait_for(3)
    server.advance(1.0)  # t = 5: timed out
    assert upstream_state(server)[0] == (True, 2)
    assert server.ask("mail.example.test", "MX").rcode_text == "NOERROR"
    assert first.queries("mail.example.test.") == []  # still skipped
    first.mode = "answer"
    assert advance_until_health_change(server, 2.0).label == first.address  # t = 7: probed, answered
    assert upstream_state(server)[0] == (False, 0)
    assert probes(server)[0] == {"success": 1, "failure": 2}
    assert server.ask("www.example.test", "AAAA").addresses("AAAA") == ["2001:db8::10"]
    assert len(first.queries("www.example.test.")) == 2 and len(second.queries("www.example.test.")) == 1


def test_probe_answered_refused_keeps_it_down(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    first, second, _ = fakes
    first.mode = "refused"
    server = forwarding(start_server, [first, second], fail_threshold=1, probe_interval=2.0)
    probed = expect_probe(server)
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    probed()  # refused as well: a failed check
    assert upstream_state(server)[0] == (True, 1)
    assert advance_until_probed(server, 2.0).label == first.address
    assert [r.name for r in first.received] == ["www.example.test.", ".", "."]
    assert upstream_state(server)[0] == (True, 2)
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
    only.wait_for(2)  # the probe
    server.advance(1.0)  # timed out: down
    assert upstream_state(server) == [(True, 1)]
    only.mode = "answer"  # back, and not probed again for a minute: a down upstream is better than none
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert upstream_state(server) == [(False, 0)]
    server.advance(60.0)  # an answer ended the checks: no more probes
    assert [r.name for r in only.received] == ["www.example.test.", ".", "www.example.test."]


def test_readiness_and_metrics_follow_health(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    only = fakes[0]
    only.mode = "silent"
    server = forwarding(start_server, [only], timeout=1.0, fail_threshold=1)
    assert on_reactor(server.reactor, server.service.forwarder.healthy) is True
    pending = Pending.ask(server, "www.example.test", "A")
    only.wait_for(1)
    server.advance(1.0)
    pending.reply()
    assert on_reactor(server.reactor, server.service.forwarder.healthy) is True  # a timeout is no verdict
    only.wait_for(2)
    server.advance(1.0)  # the probe failed too
    assert on_reactor(server.reactor, server.service.forwarder.healthy) is False
    results = on_reactor(server.reactor, lambda: dict(server.service.forwarder.upstreams[0].results))
    assert results["timeout"] == 1 and results["success"] == 0
    assert probes(server) == [{"success": 0, "failure": 1}]


def test_stop_ends_the_checks(start_server: StartServer, fakes: list[FakeUpstream]) -> None:
    only = fakes[0]
    only.mode = "silent"
    server = forwarding(start_server, [only], timeout=1.0, fail_threshold=5, probe_interval=2.0)
    pending = Pending.ask(server, "www.example.test", "A")
    only.wait_for(1)
    server.advance(1.0)
    pending.reply()
    only.wait_for(2)  # a probe in flight
    server.stop()
    server.advance(10.0)
    assert [r.name for r in only.received] == ["www.example.test.", "."]
    assert probes(server) == [{"success": 0, "failure": 0}]  # the probe in flight was dropped
