"""SPEC §8: `/healthz` and `/readyz`, asked over a real HTTP socket of a running server.

`/healthz` says the process answers; `/readyz` is 200 while a snapshot is loaded, no older than
`registry.max_age`, and (forwarding on) some upstream is up, else 503 with each reason on a line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from internal_dns.config import parse_config
from tests.conftest import RunningServer, base_config, on_reactor
from tests.fake_upstream import FakeUpstream, Pending
from tests.test_metrics import METRICS, broken_registry, http_get

StartServer = Callable[..., RunningServer]
TEXT = "text/plain; charset=utf-8"


def test_healthz_and_readyz_when_all_is_well(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(metrics=METRICS, upstreams=[fake.address], forward={"enabled": True})
    assert http_get(server, "/healthz") == (200, TEXT, "ok\n")
    assert http_get(server, "/readyz") == (200, TEXT, "ready\n")


def test_not_ready_before_the_first_snapshot(start_server: StartServer, registry_dir: Path) -> None:
    broken = broken_registry(registry_dir)
    server = start_server(metrics=METRICS)
    assert http_get(server, "/healthz") == (200, TEXT, "ok\n")  # alive all the same
    status, content_type, body = http_get(server, "/readyz")
    assert (status, content_type) == (503, TEXT)
    lines = body.splitlines()
    assert lines[0] == "not ready:" and len(lines) == 2
    assert lines[1].startswith("- no registry snapshot loaded yet (last attempt: ")
    assert "zz-broken.yaml" in lines[1]  # why the last attempt failed
    broken.unlink()
    server.poll()
    assert http_get(server, "/readyz") == (200, TEXT, "ready\n")


def test_not_ready_without_any_registry_yet(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(registry=tmp_path / "not-there-yet", metrics=METRICS)
    status, _, body = http_get(server, "/readyz")
    assert status == 503 and body.startswith("not ready:\n- no registry snapshot loaded yet")


@pytest.fixture
def aging_server(reactor: Any, registry_dir: Path) -> Iterator[RunningServer]:
    """A server whose registry.max_age is 5 s (the start_server fixture keeps `registry` for the folder)."""
    raw = base_config(registry_dir, metrics=METRICS)
    raw["registry"] = {**raw["registry"], "max_age": 5}
    server = RunningServer(reactor, parse_config(raw, "test-config.yaml"), task.Clock())
    yield server
    server.stop()


def test_not_ready_with_a_snapshot_older_than_max_age(aging_server: RunningServer, registry_dir: Path) -> None:
    server = aging_server
    assert http_get(server, "/readyz")[0] == 200
    broken = broken_registry(registry_dir)  # the last good snapshot is still served, unconfirmed
    server.poll()  # t = 1: rejected
    server.advance(4)  # t = 5: at the limit, not over it
    assert http_get(server, "/readyz")[0] == 200
    server.advance(1)  # t = 6
    status, content_type, body = http_get(server, "/readyz")
    assert (status, content_type) == (503, TEXT)
    assert body == f"not ready:\n- registry snapshot is 6s old, over the 5s limit (files under {registry_dir})\n"
    assert http_get(server, "/healthz")[0] == 200
    broken.unlink()
    server.poll()
    assert http_get(server, "/readyz") == (200, TEXT, "ready\n")


def test_not_ready_while_every_upstream_is_down(start_server: StartServer, fake: FakeUpstream) -> None:
    server = start_server(
        metrics=METRICS,
        upstreams=[fake.address],
        forward={"enabled": True, "timeout": 1.0, "fail_threshold": 1, "probe_interval": 2.0},
    )
    fake.mode = "silent"
    pending = Pending.ask(server, "www.example.test", "A")
    fake.wait_for(1)
    server.advance(1.0)
    assert pending.reply().rcode_text == "SERVFAIL"
    fake.wait_for(2)  # the health check that followed
    assert http_get(server, "/readyz")[0] == 200  # a failed query alone is no verdict

    def down() -> Any:
        d = server.service.forwarder.health_changed.next()
        server.clock.advance(1.0)  # the check fails too: down
        return d

    on_reactor(server.reactor, down)
    status, content_type, body = http_get(server, "/readyz")
    assert (status, content_type, body) == (503, TEXT, f"not ready:\n- every upstream is down: {fake.address}\n")
    assert http_get(server, "/healthz")[0] == 200
    fake.mode = "answer"

    def back() -> Any:
        d = server.service.forwarder.health_changed.next()
        server.clock.advance(2.0)  # probed again, and answered
        return d

    on_reactor(server.reactor, back)
    assert http_get(server, "/readyz") == (200, TEXT, "ready\n")


def test_every_reason_at_once(start_server: StartServer, registry_dir: Path) -> None:
    broken_registry(registry_dir)
    server = start_server(metrics=METRICS, upstreams=["127.0.0.1:9"], forward={"enabled": True, "fail_threshold": 1})
    on_reactor(server.reactor, lambda: setattr(server.service.forwarder.upstreams[0], "down", True))
    status, _, body = http_get(server, "/readyz")
    lines = body.splitlines()
    assert status == 503 and len(lines) == 3
    assert lines[1].startswith("- no registry snapshot loaded yet")
    assert lines[2] == "- every upstream is down: 127.0.0.1:9"
