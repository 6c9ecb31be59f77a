"""Twisted carries the bytes: UDP and TCP listeners around the Dispatcher, and the service that runs them."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from internal_dns.config import Config, ConfigError, ListenConfig, load_config
from internal_dns.crosscheck import cross_check
from internal_dns import __version__
from internal_dns.dispatch import Dispatcher
from internal_dns.http import operator_site
from internal_dns.querylog import QueryLog
from internal_dns.forward import Forwarder
from internal_dns.gcwatch import CollectorWatch
from internal_dns.malloc import fix_mmap_threshold
from internal_dns.registry.backend import Backend
from internal_dns.registry.plugins import make_backend
from internal_dns.registry.model import Snapshot
from internal_dns.registry.store import SnapshotStore
from internal_dns.tcp import DnsStreamFactory, TcpConnections
from internal_dns.upstream import Upstream, resolv_conf_upstreams

log = Logger()

_EPHEMERAL_ATTEMPTS = 20
# What SIGHUP applies while serving; the rest (listeners, the registry backend, forwarding, the
# caches' sizes, metrics, workers) takes a restart, which the log says.
LIVE_KEYS = frozenset({"zones", "views", "region", "ttl", "edns_payload", "tcp", "server_id", "query_log"})
_BACKLOG = 1024
_SOCKET_BUFFER = 4 * 1024 * 1024


class DnsDatagramProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, dispatcher: Dispatcher, listener: ListenConfig):
        self.respond = dispatcher.respond
        self.listener = listener
        self.hosts = dispatcher.packets.for_listener(listener, False)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        reply = self.respond(data, addr[0], self.listener, False, self.hosts)
        if isinstance(reply, bytes):
            self._send(reply, addr)
        elif reply is not None:  # forwarded: the reply comes later
            reply.addCallback(self._send_later, addr)

    def _send(self, reply: bytes, addr: Any) -> None:
        try:
            # The socket directly: Twisted's write() re-validates the address string, which
            # recvfrom() has just produced, at a cost of microseconds.
            self.transport.socket.sendto(reply, addr)
        except OSError:
            pass  # a full send buffer drops the reply, as a lost datagram; the client retries

    def _send_later(self, reply: bytes, addr: Any) -> None:
        if self.transport is not None:  # the listener may have closed meanwhile
            self._send(reply, addr)


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
        self.store.listeners.append(self.dispatcher.swap)
        self.store.listeners.append(self._cross_check)
        self._config_problems: list[str] = []
        self.backend = backend if backend is not None else make_backend(config.registry, reactor, self.clock)
        self.forwarder = self._make_forwarder()
        self.dispatcher.forwarder = self.forwarder
        if self.forwarder is not None and self.forwarder.cache is not None:
            self.dispatcher.packets.forward_stats = self.forwarder.cache.stats
        self.tcp = TcpConnections(config.tcp, self.clock)
        self.collector_watch = CollectorWatch()
        self.ports: list[Any] = []
        self.http_port: Any = None
        self.ready: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.ready = self.start()

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
            log.warn("the {backend} backend cannot be told to reload; it goes on as it does", backend=self.config.registry.backend)

    def reconfigure(self, new: Config) -> set[str]:
        """Apply the keys of a new config that can change while serving, and return them; log
        the others."""
        old = self.config
        changed = [f.name for f in dataclasses.fields(Config) if f.name not in ("path", "warnings") and getattr(old, f.name) != getattr(new, f.name)]
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
        if self.forwarder is not None:
            self.forwarder.server_payload = applied.edns_payload
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
            log.error("query log {target} cannot be opened: {error}; queries are not logged", target=self.config.query_log, error=exc)
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
        return Forwarder(
            upstreams,
            settings,
            self.config.cache,
            reactor=self.reactor,
            clock=self.clock,
            server_payload=self.config.edns_payload,
        )

    def start(self) -> defer.Deferred[None]:
        log.info(
            "internal-dns {version} starting: zones {zones}",
            version=__version__,
            zones=", ".join(f"{z} ({scheme})" for z, scheme in self.config.zones.items()),
        )
        self.collector_watch.install(self.clock)
        fix_mmap_threshold()  # process-wide, and idempotent
        for listener in self.config.listen:
            self._listen(listener)
        if self.config.metrics is not None:
            m = self.config.metrics
            self.http_port = self.reactor.listenTCP(m.port, operator_site(self), interface=m.address)
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
        return self.backend.start(self.store)

    def _listen(self, listener: ListenConfig) -> None:
        # A port of 0 lets UDP pick one and TCP takes the same number; that number can already be
        # in use on the TCP side (another socket's ephemeral port), so pick again a few times.
        attempts = _EPHEMERAL_ATTEMPTS if listener.port == 0 else 1
        for attempt in range(attempts):
            udp = self._listen_udp(listener, listener.port)
            port = udp.getHost().port
            hosts = self.dispatcher.packets.for_listener(listener, True)
            factory = DnsStreamFactory(self.dispatcher.respond, hosts, listener, self.tcp, self.clock)
            try:
                tcp = self._listen_tcp(listener, port, factory)
            except CannotListenError:
                udp.stopListening()
                if attempt + 1 == attempts:
                    raise
                continue
            except Exception:
                udp.stopListening()
                raise
            break
        self.ports += [udp, tcp]
        log.info("listening on {address} port {port} (UDP and TCP)", address=listener.address, port=port)

    def _listen_udp(self, listener: ListenConfig, port: int) -> Any:
        protocol = DnsDatagramProtocol(self.dispatcher, listener)
        with bound_socket(listener.address, port, socket.SOCK_DGRAM, self.config.workers > 1) as sock:
            return self.reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, maxPacketSize=65535)

    def _listen_tcp(self, listener: ListenConfig, port: int, factory: DnsStreamFactory) -> Any:
        with bound_socket(listener.address, port, socket.SOCK_STREAM, self.config.workers > 1) as sock:
            sock.listen(_BACKLOG)
            return self.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)

    def bound_ports(self) -> list[tuple[str, int]]:
        return [(p.getHost().host, p.getHost().port) for p in self.ports[::2]]

    def stop(self) -> defer.Deferred[None]:
        log.info("stopping: closing listeners")
        # Listeners first, so no query arrives at a half-stopped server.
        stops = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports = []
        if self.http_port is not None:
            stops.append(defer.maybeDeferred(self.http_port.stopListening))
            self.http_port = None
        # Open TCP connections would otherwise go on answering from a stopped service.
        self.tcp.abort_all()
        if self.forwarder is not None:
            self.forwarder.stop()
        d = defer.gatherResults(stops, consumeErrors=True)
        d.addCallback(lambda _: self.backend.stop())
        query_log, self.dispatcher.query_log = self.dispatcher.query_log, None
        if query_log is not None:
            d.addCallback(lambda _: query_log.stop())
        d.addCallback(lambda _: self.collector_watch.uninstall())
        d.addCallback(lambda _: log.info("stopped"))
        return d


def bound_socket(address: str, port: int, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    """A socket bound for a listener, made here rather than by Twisted so that it can have:

    - IPv4 too on `::` (SPEC §6), whatever the host's bindv6only default;
    - SO_REUSEPORT when `workers:` processes share the port (the kernel spreads queries by flow);
    - generous UDP buffers, so a burst waits in the kernel rather than being dropped.

    The caller adopts it into the reactor (which keeps a duplicate) and closes this one.
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
    for option, forced in ((socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None)), (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None))):
        for opt in (forced, option):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
                break
            except OSError:
                continue
