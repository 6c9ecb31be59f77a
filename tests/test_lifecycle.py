"""SPEC §8: what the server logs when it starts (listeners, registry size, upstreams), and that
on stop it closes its listeners before anything behind them stops.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from internal_dns import __version__
from tests.conftest import RunningServer, on_reactor
from tests.fake_upstream import FakeUpstream
from tests.test_metrics import METRICS

StartServer = Callable[..., RunningServer]


def is_free(host: str, port: int, kind: socket.SocketKind) -> bool:
    """Whether a socket of this kind can bind host:port, that is, no listener holds it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, never past a listener
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def test_startup_logs_listeners_registry_and_upstreams(
    start_server: StartServer, fake: FakeUpstream, log_lines: list[str], tmp_path: Path
) -> None:
    other = FakeUpstream()
    try:
        server = start_server(
            listen=[{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0}],
            upstreams=[fake.address, other.address],
            forward={"enabled": True},
            metrics=METRICS,
            query_log=str(tmp_path / "queries.log"),
        )
    finally:
        other.close()
    (v4, port4), (v6, port6) = server.service.bound_ports()
    http = server.service.http_port.getHost().port
    counts = server.snapshot.counts()
    assert counts["networks"] > 0 and counts["machines"] == 18
    expected = [
        f"internal-dns {__version__} starting: zones internal (fly), flycast (flycast), railway.internal (railway)",
        f"metrics on http://127.0.0.1:{http}/metrics (and /healthz, /readyz)",
        f"query log: {tmp_path / 'queries.log'}",
        f"registry: files under {server.config.registry.path}",
        f"forwarding to {fake.address}, {other.address}; cache up to 10000 answers",
        f"registry snapshot 1 loaded (serial {server.snapshot.serial}): {counts['networks']} networks, "
        f"{counts['apps']} apps, {counts['machines']} machines, {counts['peers']} peers, {counts['regions']} regions",
        # the listeners only once the registry serves: a second server never answers SERVFAIL
        f"listening on 127.0.0.1 port {port4} (UDP and TCP)",
        f"listening on ::1 port {port6} (UDP and TCP)",
    ]
    assert [line for line in log_lines if line in expected] == expected  # each once, in this order


def test_startup_log_says_when_forwarding_is_off(start_server: StartServer, log_lines: list[str]) -> None:
    start_server()
    assert "forwarding is off: names outside the zones are REFUSED" in log_lines
    assert not any(line.startswith("forwarding to ") for line in log_lines)


def test_stop_closes_the_listeners_before_the_backend_stops(
    start_server: StartServer, fake: FakeUpstream, log_lines: list[str], tmp_path: Path
) -> None:
    server = start_server(metrics=METRICS, upstreams=[fake.address], forward={"enabled": True}, query_log=str(tmp_path / "q.log"))
    host, port = server.service.bound_ports()[0]
    http = server.service.http_port.getHost().port
    with socket.create_connection((host, port), timeout=5) as connection:  # an open TCP connection too
        assert server.ask("my-app.internal").rcode_text == "NOERROR"
        assert not is_free(host, port, socket.SOCK_DGRAM) and not is_free(host, port, socket.SOCK_STREAM)
        seen: dict[str, Any] = {}
        backend = server.service.backend
        real_stop = backend.stop

        def stop() -> Any:  # what the backend finds when it is told to stop
            seen["udp"] = is_free(host, port, socket.SOCK_DGRAM)
            seen["tcp"] = is_free(host, port, socket.SOCK_STREAM)
            seen["http"] = is_free("127.0.0.1", http, socket.SOCK_STREAM)
            seen["logged"] = list(log_lines)
            return real_stop()

        backend.stop = stop  # type: ignore[method-assign]
        server.stop()
        try:  # the open connection was closed too
            assert connection.recv(1) == b""
        except ConnectionResetError:
            pass
    assert seen["udp"] and seen["tcp"] and seen["http"]  # every listener closed already
    assert "stopping: new queries go elsewhere; answering those received" in seen["logged"] and "stopped" not in seen["logged"]
    assert log_lines[-1] == "stopped"
    assert on_reactor(server.reactor, lambda: (server.service.udp, server.service.tcp_ports)) == ([], [])
