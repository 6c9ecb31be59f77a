"""Real servers on loopback for the tests, driven by a reactor in a background thread.

Time is a `twisted.internet.task.Clock` handed to the server: the registry poll and the TCP idle
timeout run on it, and tests move it forward instead of sleeping.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import pytest
import yaml
from twisted.internet import task
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from internal_dns.config import Config, parse_config
from internal_dns.registry.model import RegistryError, Snapshot
from internal_dns.registry.sqlite import SqliteBackend
from internal_dns.server import DnsService
from tests.dnsclient import Reply, exchange, make_query
from tests.etcd_server import EtcdServer
from tests.fake_upstream import FakeUpstream
from tests.processes import Process

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_ZONES = ROOT / "zones"
WAIT = 10.0  # seconds a test waits on the reactor before failing instead of hanging


@pytest.fixture(scope="session")
def reactor() -> Iterator[Any]:
    from twisted.internet import reactor as the_reactor

    thread = threading.Thread(target=the_reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    yield the_reactor
    the_reactor.callFromThread(the_reactor.stop)
    thread.join(5)


def on_reactor(reactor: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn on the reactor thread and wait for its (possibly deferred) result, bounded."""

    def call() -> Any:
        from twisted.internet import defer

        d = defer.maybeDeferred(fn, *args)
        d.addTimeout(WAIT, reactor)
        return d

    return blockingCallFromThread(reactor, call)


def base_config(registry: Path, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "registry": {"backend": "files", "path": str(registry), "poll_interval": 1.0},
        "zones": {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"},
        "views": [
            {"source": "127.0.0.2/32", "network": "other-org"},
            {"source": "127.0.0.3/32", "network": "shop-production"},
            {"source": "127.0.0.4/32", "network": "shop-staging"},
            {"source": "127.0.0.0/8", "network": "personal"},
            {"source": "::1/128", "network": "personal"},
        ],
        "region": "iad",
        "ttl": 5,
        "server_id": "test-server",
        # Off unless a test turns it on with loopback upstreams: tests never reach the
        # machine's own resolvers.
        "forward": {"enabled": False},
    }
    raw.update(overrides)
    return raw


class RunningServer:
    def __init__(self, reactor: Any, config: Config, clock: task.Clock):
        self.reactor = reactor
        self.config = config
        self.clock = clock
        self.service = DnsService(config, reactor, clock=clock)
        on_reactor(reactor, self.service.start)
        ports = self.service.bound_ports()
        self.host, self.port = ports[0]

    # --- asking -----------------------------------------------------------------------------
    def ask(
        self,
        name: str,
        rdtype: str | int = "AAAA",
        *,
        source: str | None = "127.0.0.1",
        tcp: bool = False,
        host: str | None = None,
        port: int | None = None,
        **query_options: Any,
    ) -> Reply:
        return self.send(make_query(name, rdtype, **query_options), source=source, tcp=tcp, host=host, port=port)

    def send(
        self,
        query: dns.message.Message | bytes,
        *,
        source: str | None = "127.0.0.1",
        tcp: bool = False,
        host: str | None = None,
        port: int | None = None,
    ) -> Reply:
        wire = query if isinstance(query, bytes) else query.to_wire()
        return Reply.decode(self.raw(wire, source=source, tcp=tcp, host=host, port=port))

    def raw(
        self,
        wire: bytes,
        *,
        source: str | None = "127.0.0.1",
        tcp: bool = False,
        host: str | None = None,
        port: int | None = None,
        timeout: float = 3.0,
    ) -> bytes:
        return exchange(wire, port or self.port, host=host or self.host, source=source, tcp=tcp, timeout=timeout)

    # --- time and the registry --------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot | None:
        return self.service.store.current

    def advance(self, seconds: float) -> None:
        on_reactor(self.reactor, self.clock.advance, seconds)

    def poll(self) -> Snapshot | RegistryError:
        """Move the clock one poll interval and wait for the snapshot or rejection it brings."""

        def go() -> Any:
            d = self.service.store.changed.next()
            self.clock.advance(self.config.registry.poll_interval)
            return d

        return on_reactor(self.reactor, go)

    def rescan(self) -> None:
        """One scan of the registry now, whether or not anything changed."""
        on_reactor(self.reactor, self.service.backend.check)

    def stop(self) -> None:
        stop_service(self.reactor, self.service, self.clock)


def stop_service(reactor: Any, service: DnsService, clock: task.Clock) -> None:
    """Stop a server as SIGTERM does, moving its clock on while it drains (the grace its UDP
    sockets are read for after stepping aside, the deadlines of forwarded queries). Between two
    steps it waits a little for the stop itself: what a stop waits for on real threads (a
    snapshot file being written and synced) takes real time, which steps alone do not give."""
    stopped: list[object] = []  # not Deferred.called: that is set while the chain still waits
    done = threading.Event()

    def record(result: object) -> None:
        stopped.append(result)
        done.set()

    on_reactor(reactor, lambda: [service.stop().addBoth(record)])  # a list: not waited for
    for _ in range(400):
        if done.wait(0.01):
            if isinstance(stopped[0], Failure):
                stopped[0].raiseException()
            return
        on_reactor(reactor, clock.advance, 0.25)
    raise AssertionError("the server did not stop within 100 s of its clock")


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    """A private copy of the embedded registry that a test may edit."""
    target = tmp_path / "zones"
    shutil.copytree(EMBEDDED_ZONES, target)
    return target


@pytest.fixture
def registry(registry_dir: Path) -> Path:
    """The same copy, under the name the tests of the commands (test_cli.py and others) use."""
    return registry_dir


@pytest.fixture
def start_server(reactor: Any, registry_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    """start_server(**config_overrides) → a RunningServer; each is stopped after the test."""
    running: list[RunningServer] = []

    def start(registry: Path | None = None, clock: task.Clock | None = None, **overrides: Any) -> RunningServer:
        config = parse_config(base_config(registry or registry_dir, **overrides), "test-config.yaml")
        server = RunningServer(reactor, config, clock or task.Clock())
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """A server on the embedded example registry, the test config's views."""
    return start_server()


def write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log line emitted while the test runs, formatted, in order."""
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


StartSqlite = Callable[..., RunningServer]


@pytest.fixture
def start_sqlite(reactor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartSqlite]:
    """start_sqlite(db, registry={more registry keys}, **config_overrides) → a RunningServer on
    that database."""
    monkeypatch.setattr(SqliteBackend, "wait", 3600.0)
    running: list[RunningServer] = []

    def start(database: Path, registry: dict[str, Any] | None = None, **overrides: Any) -> RunningServer:
        raw = base_config(tmp_path, **overrides)
        raw["registry"] = {"backend": "sqlite", "path": str(database), **(registry or {})}
        server = RunningServer(reactor, parse_config(raw, str(tmp_path / "config.yaml")), task.Clock())
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts (tests/processes.py); each is stopped afterwards, with whatever it
    started."""
    started: list[Process] = []
    yield started
    for proc in started:
        proc.kill_all()


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    """A scriptable upstream on loopback (tests/fake_upstream.py), closed after the test."""
    upstream = FakeUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, which it may stop, start again and compact."""
    folder = tmp_path / "etcd"
    folder.mkdir()
    server = EtcdServer(folder)
    server.start()
    yield server
    server.stop()
