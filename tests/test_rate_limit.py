"""Per-source UDP rate limits (`rate_limit:`): a source over its rate is dropped, every `slip`-th
of its queries answered with an empty TC reply so a real client retries over TCP; other sources,
and TCP, are answered as ever; counted by outcome. The server's clock is injected: time moves
only when the test moves it."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from collections.abc import Callable

import dns.flags
import dns.message
import pytest

from internal_dns.config import ConfigError, parse_config
from internal_dns.transport.settings import RateLimitConfig
from tests.conftest import RunningServer, base_config, on_reactor
from tests.dnsclient import make_query
from tests.test_metrics import scrape, with_metrics

StartServer = Callable[..., RunningServer]
LIMITED = {"qps": 5, "burst": 10, "slip": 2}


def blast(
    server: RunningServer, count: int, source: str = "127.0.0.1", name: str = "my-app.internal"
) -> list[dns.message.Message]:
    """`count` queries from one socket, then every reply that comes back (each ID once)."""
    replies: dict[int, dns.message.Message] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.connect((server.host, server.port))
        for i in range(count):
            query = make_query(name)
            query.id = i
            sock.send(query.to_wire())
        sock.settimeout(0.5)  # how long to wait for replies that are not coming (dropped)
        try:
            while len(replies) < count:
                reply = dns.message.from_wire(sock.recv(65535))
                replies[reply.id] = reply
        except TimeoutError:
            pass
    return [replies[i] for i in sorted(replies)]


def test_a_source_over_its_rate_is_dropped_and_now_and_then_told_to_use_tcp(start_server: StartServer) -> None:
    server = with_metrics(start_server, rate_limit=LIMITED)
    replies = blast(server, 20)
    answered = [r for r in replies if not r.flags & dns.flags.TC]
    truncated = [r for r in replies if r.flags & dns.flags.TC]
    assert [r.id for r in answered] == list(range(10)) and all(len(r.answer) == 1 for r in answered)  # the burst
    assert [r.id for r in truncated] == [11, 13, 15, 17, 19]  # every second limited one
    assert all(not r.answer and r.question == answered[0].question for r in truncated)
    # another source is its own bucket; TCP is not limited
    assert len([r for r in blast(server, 10, source="127.0.0.2", name="billing.internal") if r.answer]) == 10
    assert server.ask("my-app.internal", tcp=True).addresses()
    s = scrape(server)
    assert s.value("internal_dns_rate_limited_total", outcome="dropped") == 5
    assert s.value("internal_dns_rate_limited_total", outcome="truncated") == 5
    assert s.value("internal_dns_rate_limit_sources") == 2
    # tokens come back with time: a second gives five
    server.advance(1.0)
    again = blast(server, 7)
    assert len([r for r in again if not r.flags & dns.flags.TC]) == 5


def test_dig_retries_a_truncated_reply_over_tcp_and_gets_its_answer(start_server: StartServer) -> None:
    server = start_server(rate_limit={"qps": 1, "burst": 1, "slip": 1})
    blast(server, 1)  # the one token
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.port), "+tries=1", "+time=2", "my-app.internal", "AAAA"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    assert "Truncated, retrying in TCP mode" in out
    assert "status: NOERROR" in out and "fdaa:0:18:a7b:7d:f066:b83b:2" in out


def test_the_limits_follow_a_reconfiguration(start_server: StartServer) -> None:
    server = start_server(rate_limit={"qps": 1, "burst": 2, "slip": 0})
    assert len(blast(server, 4)) == 2
    generous = dataclasses.replace(server.config, rate_limit=RateLimitConfig(qps=1000, burst=1000, slip=0))
    assert on_reactor(server.reactor, server.service.reconfigure, generous) == {"rate_limit"}
    assert len(blast(server, 50)) == 50
    off = dataclasses.replace(server.config, rate_limit=RateLimitConfig(qps=0))
    on_reactor(server.reactor, server.service.reconfigure, off)
    assert len(blast(server, 100)) == 100  # no limit at all


def test_the_defaults_are_generous_and_settings_are_checked(tmp_path: object) -> None:
    config = parse_config(base_config(tmp_path), "c.yaml")  # type: ignore[arg-type]
    assert (
        config.rate_limit == RateLimitConfig()
        and config.rate_limit.qps >= 1000
        and config.rate_limit.burst >= config.rate_limit.qps
    )
    assert parse_config(base_config(tmp_path, rate_limit={"qps": 50000}), "c.yaml").rate_limit.burst == 50000  # type: ignore[arg-type]
    for bad, key in (
        ({"qps": -1}, "rate_limit.qps"),
        ({"burst": 0}, "rate_limit.burst"),
        ({"slip": "2"}, "rate_limit.slip"),
        ({"rps": 1}, "rps"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(base_config(tmp_path, rate_limit=bad), "c.yaml")  # type: ignore[arg-type]
