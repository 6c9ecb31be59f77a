"""`workers: N`: N processes share the listeners (SO_REUSEPORT) under one supervisor.

The processes are real and run on the real clock: waiting is a bounded poll, as in test_cli.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from internal_dns.config import ConfigError, parse_config
from internal_dns.server import bound_socket
from tests.dnsclient import Reply
from tests.processes import STOP_WAIT, Process, ask, serve
from tests.test_cli import MY_APP, free_port, write_config

WORKERS = 2


def requests_seen(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("internal_dns_requests_total{"))


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return sorted(int(p) for p in found.stdout.split())


def metrics_ports() -> int:
    """A port p with p + 1 free too."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


def asked_with_retries(port: int) -> Reply:
    """As a stub resolver asks: again after a timeout. A query queued at a worker as it died is
    lost, and one that reaches its replacement waits for it to start, which a busy machine slows."""
    for attempt in range(4):
        try:
            return ask(port, "my-app.internal", timeout=2)
        except TimeoutError:
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


def wait_for(condition: object, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {seconds} s")


@pytest.fixture
def supervisor(tmp_path: Path, registry: Path, processes: list[Process]) -> tuple[Process, int, int]:
    metrics = {"port": 0}

    def config_for(port: int) -> Path:
        metrics["port"] = metrics_ports()
        return write_config(tmp_path, port, workers=WORKERS, metrics={"address": "127.0.0.1", "port": metrics["port"]})

    proc, port = serve(processes, tmp_path, config_for)  # stopped with its workers by `processes`
    wait_for(lambda: len(children_of(proc.pid)) == WORKERS, "both workers running")
    return proc, port, metrics["port"]


def test_workers_share_the_port_and_each_answers(supervisor: tuple[Process, int, int]) -> None:
    proc, port, metrics = supervisor
    wait_for(lambda: all(_answers_http(metrics + i) for i in range(WORKERS)), "every worker's operator listener")
    for _ in range(200):  # each query from a new socket: a new flow, spread by the kernel
        reply = ask(port, "my-app.internal")
        assert reply.rcode_text == "NOERROR" and sorted(reply.addresses()) == MY_APP
    seen = [requests_seen(metrics + i) for i in range(WORKERS)]
    assert all(n > 0 for n in seen), seen
    assert sum(seen) >= 200


def test_a_dead_worker_is_restarted_and_the_others_go_on(supervisor: tuple[Process, int, int]) -> None:
    proc, port, metrics = supervisor
    first, second = children_of(proc.pid)
    os.kill(first, signal.SIGKILL)
    # Reaped by the supervisor: wholly gone, its socket out of the group. What was queued at it
    # is lost, as on any crash; the clients ask again.
    wait_for(lambda: first not in children_of(proc.pid), "the killed worker reaped")
    for _ in range(20):  # the survivor takes every flow meanwhile (a client asks again, as stubs do)
        assert asked_with_retries(port).rcode_text == "NOERROR"
    wait_for(lambda: len(children_of(proc.pid)) == WORKERS and first not in children_of(proc.pid), "a new worker")
    assert second in children_of(proc.pid)
    wait_for(lambda: all(_answers_http(metrics + i) for i in range(WORKERS)), "every worker's operator listener")


def test_sigterm_stops_every_worker(supervisor: tuple[Process, int, int]) -> None:
    proc, port, _ = supervisor
    workers = children_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_WAIT) == 0
    for pid in workers:
        assert _gone(pid)
    with pytest.raises(OSError):
        ask(port, "my-app.internal", timeout=0.5)


def test_workers_need_fixed_ports() -> None:
    base = {"listen": [{"address": "127.0.0.1", "port": 0}], "workers": 2}
    with pytest.raises(ConfigError, match=r"listen\[0\]\.port.*fixed port"):
        parse_config(base)
    with pytest.raises(ConfigError, match=r"metrics\.port.*fixed port"):
        parse_config({**base, "listen": [{"address": "127.0.0.1", "port": 5399}], "metrics": {"port": 0}})
    assert parse_config({**base, "listen": [{"address": "127.0.0.1", "port": 5399}]}).workers == 2


def test_listener_sockets_get_big_buffers_and_reuse_port_only_for_workers() -> None:
    with bound_socket("127.0.0.1", 0, socket.SOCK_DGRAM, reuse_port=False) as plain:
        assert not plain.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 200_000
        port = plain.getsockname()[1]
        with pytest.raises(Exception, match="Address already in use|Couldn't listen"):
            bound_socket("127.0.0.1", port, socket.SOCK_DGRAM, reuse_port=True).close()
    with bound_socket("127.0.0.1", 0, socket.SOCK_DGRAM, reuse_port=True) as first:
        with bound_socket("127.0.0.1", first.getsockname()[1], socket.SOCK_DGRAM, reuse_port=True) as second:
            assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


def _answers_http(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
