"""The service: registry backend → store → dispatcher → listeners, started and stopped in an order
that lets a new server take over from a running one without losing a query (SPEC §9).

Starting, the registry is loaded first and only then are the listeners bound: with SO_REUSEPORT
(`reuse_port`, on by default) a server started beside a running one on the same config shares
its sockets, and must not answer SERVFAIL for its share while its registry loads. Stopping, every
UDP socket steps aside (udp.py) and TCP stops accepting, what was received is answered (from the
upstreams too), and only then does the rest stop.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import Metric
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from internal_dns import __version__
from internal_dns.config import Config, ConfigError, ListenConfig, load_config
from internal_dns.crosscheck import cross_check
from internal_dns.dispatch import Dispatcher
from internal_dns.forward.forwarder import Forwarder
from internal_dns.forward.upstream import Upstream, resolv_conf_upstreams
from internal_dns.ops.gcwatch import CollectorWatch
from internal_dns.ops.http import operator_site
from internal_dns.ops.malloc import fix_mmap_threshold
from internal_dns.ops.querylog import QueryLog
from internal_dns.ops.systemd import SystemdNotifier
from internal_dns.registry.backend import Backend
from internal_dns.registry.model import Snapshot
from internal_dns.registry.plugins import make_backend
from internal_dns.registry.store import SnapshotStore
from internal_dns.transport.ratelimit import RateLimiter
from internal_dns.transport.tcp import DnsStreamFactory, TcpConnections
from internal_dns.transport.udp import DRAIN_GRACE, UdpListener

log = Logger()

_EPHEMERAL_ATTEMPTS = 20
# What SIGHUP applies while serving; the rest (listeners, the registry backend, forwarding, the
# caches' sizes, metrics, workers) takes a restart, which the log says.
LIVE_KEYS = frozenset({"zones", "views", "region", "ttl", "edns_payload", "tcp", "rate_limit", "server_id", "query_log"})
_BACKLOG = 1024
_SOCKET_BUFFER = 4 * 1024 * 1024


class DnsService(service.Service):
    """The whole server: registry backend → store → dispatcher → listeners."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        clock: IReactorTime | None = None,
        backend: Backend | None = None,
        load: Callable[[], Config] | None = None,
    ):
        self.config = config
        # How SIGHUP reads the config again (a worker's has its own metrics port and log file).
        self.load_config = load if load is not None else (lambda: load_config(config.path))
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.store = SnapshotStore(self.clock)
        self.dispatcher = Dispatcher(config, self.clock)
        self.store.published.subscribe(self.dispatcher.swap)
        self.store.published.subscribe(self._cross_check)
        self._config_problems: list[str] = []
        self.backend = backend if backend is not None else make_backend(config.registry, reactor, self.clock)
        self.forwarder = self._make_forwarder()
        self.dispatcher.forwarder = self.forwarder
        if self.forwarder is not None and self.forwarder.cache is not None:
            self.dispatcher.packets.forward_stats = self.forwarder.cache.stats
        self.tcp = TcpConnections(config.tcp, self.clock)
        self.limiter = RateLimiter(config.rate_limit)  # every UDP listener's, as a source is one client
        self.collector_watch = CollectorWatch()
        self.udp: list[UdpListener] = []
        self.tcp_ports: list[Any] = []
        self.http_port: Any = None
        self.serving = False  # listeners bound, a snapshot loaded: what systemd is told as READY=1
        self._notify = SystemdNotifier(self.reactor)

    def startService(self) -> None:
        super().startService()
        self.start()  # a failure to start is watched where start() is called (cli.py) or overridden (twistd's plugin)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.stop()

    def reload(self) -> None:
        """SIGHUP: read the config again and apply what can change while running, then have
        the backend read the registry again now. A config that does not load changes nothing."""
        log.info("reloading: the config from {path}, then the registry", path=self.config.path)
        applied: set[str] = set()
        try:
            new = self.load_config()
        except ConfigError as exc:
            log.error("config not reloaded, the running one stays: {error}", error=str(exc))
        else:
            applied = self.reconfigure(new)
        if "query_log" not in applied and self.dispatcher.query_log is not None:
            self.dispatcher.query_log.reopen()  # logrotate moved it away: a new file of that name
        reload = getattr(self.backend, "reload", None)
        if reload is not None:
            reload()
        else:
            log.warn(
                "the {backend} backend cannot be told to reload; it goes on as it does", backend=self.config.registry.backend
            )

    def reconfigure(self, new: Config) -> set[str]:
        """Apply the keys of a new config that can change while serving, and return them; log
        the others."""
        old = self.config
        changed = [
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in ("path", "warnings") and getattr(old, f.name) != getattr(new, f.name)
        ]
        for key in changed:
            if key not in LIVE_KEYS:
                log.warn("config: {key} changed: takes effect when the server is restarted", key=key)
        live = {key: getattr(new, key) for key in changed if key in LIVE_KEYS}
        if not live:
            log.info("config: nothing to change while running")
            return set()
        self.config = applied = dataclasses.replace(old, **live)
        self.dispatcher.reconfigure(applied)
        self.tcp.settings = applied.tcp
        if "rate_limit" in live:
            self.limiter.reconfigure(applied.rate_limit)
        if self.forwarder is not None:
            self.forwarder.server_payload = applied.edns_payload
            self.forwarder.server_id = applied.server_id.encode()
        if "query_log" in live:
            self._restart_query_log()
        if self.store.current is not None:
            self._cross_check(self.store.current)
        log.info("config: applied {keys}", keys=", ".join(sorted(live)))
        return set(live)

    def _restart_query_log(self) -> None:
        old, self.dispatcher.query_log = self.dispatcher.query_log, None
        if old is not None:
            old.stop()
        self._start_query_log()

    def _start_query_log(self) -> None:
        if self.config.query_log is None:
            return
        self.dispatcher.query_log = QueryLog(self.config.query_log, self.clock)
        try:
            self.dispatcher.query_log.start()
        except OSError as exc:
            self.dispatcher.query_log = None
            log.error(
                "query log {target} cannot be opened: {error}; queries are not logged", target=self.config.query_log, error=exc
            )
            return
        log.info("query log: {target}", target="standard output" if self.config.query_log == "-" else self.config.query_log)

    def _cross_check(self, snapshot: Snapshot) -> None:
        """Say when the registry stops (or starts) having what the config names."""
        problems = cross_check(self.config, snapshot)
        if problems != self._config_problems:
            for line in problems:
                log.warn("{problem}: sources it covers get no view", problem=line)
            if not problems:
                log.info("the registry has every network and region the config names")
        self._config_problems = problems

    def _make_forwarder(self) -> Forwarder | None:
        settings = self.config.forward
        if not settings.enabled:
            log.info("forwarding is off: names outside the zones are REFUSED")
            return None
        if self.config.upstreams is not None:
            upstreams = [Upstream(host, port) for host, port in self.config.upstreams]
        else:
            own = [(listener.address, listener.port) for listener in self.config.listen]
            upstreams = resolv_conf_upstreams(settings.resolv_conf, own)
        if not upstreams:
            log.warn("no upstreams configured or in {path}: names outside the zones are REFUSED", path=settings.resolv_conf)
            return None
        forwarder = Forwarder(
            upstreams,
            settings,
            self.config.cache,
            reactor=self.reactor,
            clock=self.clock,
            server_payload=self.config.edns_payload,
        )
        forwarder.server_id = self.config.server_id.encode()
        return forwarder

    def start(self) -> defer.Deferred[None]:
        """Fires once the listeners are bound: after the registry's first load (or its failure)."""
        log.info(
            "internal-dns {version} starting: zones {zones}",
            version=__version__,
            zones=", ".join(f"{z} ({scheme})" for z, scheme in self.config.zones.items()),
        )
        self.collector_watch.install(self.clock)
        fix_mmap_threshold()  # process-wide, and idempotent
        if self.config.metrics is not None:
            m = self.config.metrics
            with bound_socket(m.address, m.port, socket.SOCK_STREAM, self.config.reuse_port) as sock:
                sock.listen(_BACKLOG)
                self.http_port = self.reactor.adoptStreamPort(
                    sock.fileno(), sock.family, operator_site(self.collect, self.readiness)
                )
            host = self.http_port.getHost()
            log.info("metrics on http://{address}:{port}/metrics (and /healthz, /readyz)", address=host.host, port=host.port)
        self._start_query_log()
        log.info("registry: {backend}", backend=self.backend.describe())
        if self.forwarder is not None:
            self.forwarder.start()
            log.info(
                "forwarding to {upstreams}; cache {cache}",
                upstreams=", ".join(u.label for u in self.forwarder.upstreams),
                cache=f"up to {self.config.cache.max_entries} answers" if self.config.cache.enabled else "off",
            )
        self._notify.send("STATUS=loading the registry")
        d = self.backend.start(self.store)
        d.addCallback(lambda _: self._open_listeners())
        return d

    def _open_listeners(self) -> None:
        if self.store.current is None:
            log.warn("the registry has not loaded: listening anyway; private names answer SERVFAIL until it does")
        for listener in self.config.listen:
            self._listen(listener)
        self.store.published.subscribe(self._serving)
        if self.store.current is not None:
            self._serving(self.store.current)
        self._notify.start_watchdog()

    def _serving(self, snapshot: Snapshot) -> None:
        """A snapshot is being served on bound listeners: ready, for systemd (once)."""
        if not self.serving and self.udp:
            self.serving = True
            self._notify.send(f"READY=1\nSTATUS=serving {snapshot.counts()['machines']} machines")

    def _listen(self, listener: ListenConfig) -> None:
        # A port of 0 has a free UDP port picked and TCP takes the same number; that number can
        # already be in use on the TCP side (another socket's ephemeral port), or taken on the UDP
        # side since it was found free, so pick again a few times.
        attempts = _EPHEMERAL_ATTEMPTS if listener.port == 0 else 1
        packets = self.dispatcher.packets
        factory = DnsStreamFactory(
            self.dispatcher.respond,
            lambda local: packets.for_listener(listener, True, local),
            listener,
            self.tcp,
            self.clock,
        )
        for attempt in range(attempts):
            port = listener.port or free_udp_port(listener.address)
            try:
                sock, tcp = self._bind(listener.address, port, factory)
            except CannotListenError:
                if attempt + 1 == attempts:
                    raise
                continue
            break
        udp = UdpListener(
            self.reactor,
            sock,
            listener,
            self.dispatcher.respond,
            lambda local: packets.for_listener(listener, False, local),
            self.limiter,
            self.clock,
        )
        udp.start()
        self.udp.append(udp)
        self.tcp_ports.append(tcp)
        log.info("listening on {address} port {port} (UDP and TCP)", address=listener.address, port=port)

    def _bind(self, address: str, port: int, factory: DnsStreamFactory) -> tuple[socket.socket, Any]:
        """UDP and TCP on one port: the UDP socket, and the TCP port the reactor serves; the UDP
        socket closed again when TCP cannot have the port."""
        sock = bound_socket(address, port, socket.SOCK_DGRAM, self.config.reuse_port)
        try:
            with bound_socket(address, port, socket.SOCK_STREAM, self.config.reuse_port) as stream:
                stream.listen(_BACKLOG)
                return sock, self.reactor.adoptStreamPort(stream.fileno(), stream.family, factory)
        except BaseException:
            sock.close()
            raise

    def collect(self) -> Iterator[Metric]:
        """Every part's metric families, for the operator's /metrics."""
        yield from self.dispatcher.collect()
        yield from self.collector_watch.collect()
        yield from self.tcp.collect()
        yield from self.limiter.collect()
        yield from self.store.collect()
        if self.forwarder is not None:
            yield from self.forwarder.collect()

    def readiness(self) -> list[str]:
        """Why the server is not ready to serve (/readyz); empty when it is."""
        reasons = []
        store = self.store
        if store.current is None:
            reason = "no registry snapshot loaded yet"
            if store.last_error is not None:
                reason += f" (last attempt: {store.last_error})"
            reasons.append(reason)
        else:
            age = store.age()
            if store.catching_up is not None:
                reasons.append(
                    f"catching up with the registry store ({self.backend.describe()}): serving the snapshot"
                    f" restored from {store.catching_up}, {age or 0:.0f}s old"
                )
            limit = self.config.registry.max_age
            if age is not None and age > limit:
                reasons.append(f"registry snapshot is {age:.0f}s old, over the {limit:.0f}s limit ({self.backend.describe()})")
        if store.unreachable_since is not None:
            down = self.clock.seconds() - store.unreachable_since
            reasons.append(f"registry store unreachable for {down:.0f}s ({store.unreachable_reason}); serving the last snapshot")
        forwarder = self.forwarder
        if forwarder is not None and not forwarder.healthy():
            reasons.append("every upstream is down: " + ", ".join(u.label for u in forwarder.upstreams))
        return reasons

    def bound_ports(self) -> list[tuple[str, int]]:
        return [(str(u.listener.address), u.port) for u in self.udp]

    def stop(self) -> defer.Deferred[None]:
        """Step aside, answer what was received, then stop; fires when stopped."""
        log.info("stopping: new queries go elsewhere; answering those received")
        self._notify.send("STOPPING=1")
        self._notify.stop_watchdog()
        self.serving = False
        self.store.published.unsubscribe(self._serving)
        for port in self.tcp_ports:
            port.doRead()  # accept what completed its handshake (when the kernel does not hand it on)
        stops = [defer.maybeDeferred(port.stopListening) for port in self.tcp_ports]
        self.tcp_ports = []
        if self.http_port is not None:
            stops.append(defer.maybeDeferred(self.http_port.stopListening))
            self.http_port = None
        drains = [udp.drain(self.clock) for udp in self.udp] + [self.tcp.drain(DRAIN_GRACE)]
        d = defer.gatherResults(stops + drains, consumeErrors=True)
        d.addCallback(lambda _: self._close())
        d.addCallback(lambda _: self.backend.stop())
        query_log, self.dispatcher.query_log = self.dispatcher.query_log, None
        if query_log is not None:
            d.addCallback(lambda _: query_log.stop())
        d.addCallback(lambda _: self.collector_watch.uninstall())

        def stopped(_: object) -> None:
            log.info("stopped")

        return d.addCallback(stopped)  # the same Deferred, typed as firing None

    def _close(self) -> None:
        for udp in self.udp:
            log.info("(UDP Port {port} Closed)", port=udp.port)
            udp.close()
        self.udp = []
        self.tcp.abort_all()  # none should be left; a client that never reads is
        if self.forwarder is not None:
            self.forwarder.stop()


def free_udp_port(address: str) -> int:
    """A UDP port no socket holds on `address`, for a listener on port 0. Not the port Linux
    gives a socket with SO_REUSEPORT bound to port 0: that may be one another SO_REUSEPORT socket
    of the same user already holds (the kernel counts a port it could share as free), and the
    listener would then get a share of that socket's queries and it a share of the listener's."""
    with bound_socket(address, 0, socket.SOCK_DGRAM, reuse_port=False) as probe:
        port: int = probe.getsockname()[1]
    return port


def bound_socket(address: str, port: int, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    """A socket bound for a listener, made here rather than by Twisted so that it can have:

    - IPv4 too on `::` (SPEC §6), whatever the host's bindv6only default;
    - SO_REUSEPORT, so that a new server can take over from a running one on the same config,
      and `workers:` processes share the port (the kernel spreads queries by flow);
    - generous UDP buffers, so a burst waits in the kernel rather than being dropped.

    A TCP socket is adopted into the reactor (which keeps a duplicate) and closed by the caller;
    a UDP one is read by a UdpListener, which owns it.
    """
    ip = ipaddress.ip_address(address)
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, kind)
    try:
        if ip.version == 6 and ip.is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted does for TCP
        else:
            _grow_buffers(sock)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise CannotListenError(address, port, exc) from exc
    return sock


def _grow_buffers(sock: socket.socket) -> None:
    # Past net.core.rmem_max only the FORCE options get through, and only with CAP_NET_ADMIN.
    for option, forced in (
        (socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None)),
        (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None)),
    ):
        for opt in (forced, option):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
                break
            except OSError:
                continue
