"""Twisted carries the bytes: UDP and TCP listeners around the Dispatcher, and the service that runs them."""

from __future__ import annotations

import ipaddress
import socket
import struct
from time import perf_counter
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from internal_dns.config import Config, ListenConfig
from internal_dns.crosscheck import cross_check
from internal_dns import __version__
from internal_dns.dispatch import Dispatcher
from internal_dns.http import operator_site
from internal_dns.querylog import QueryLog
from internal_dns.forward import Forwarder
from internal_dns.registry.backend import Backend
from internal_dns.registry.plugins import make_backend
from internal_dns.registry.model import Snapshot
from internal_dns.registry.store import SnapshotStore
from internal_dns.upstream import Upstream, resolv_conf_upstreams

log = Logger()

_LENGTH = struct.Struct("!H")
_EPHEMERAL_ATTEMPTS = 20
_BACKLOG = 1024
_SOCKET_BUFFER = 4 * 1024 * 1024


class DnsDatagramProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, dispatcher: Dispatcher, listener: ListenConfig):
        self.dispatcher = dispatcher
        self.listener = listener
        self.packets = dispatcher.packets
        self.sources = dispatcher.packets.for_listener(listener, False)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        started = perf_counter()
        table = self.sources.get(addr[0])
        if table is not None:  # the packet cache: a question asked before, byte for byte
            alias = table.get(data[2:])
            rest = alias.rest(self.packets.serial) if alias is not None else None
            if rest is not None:
                try:
                    # The socket directly: Twisted's write() re-validates the address string,
                    # which recvfrom() has just produced, at a cost of microseconds.
                    self.transport.socket.sendto(data[:2] + rest, addr)
                except OSError:
                    pass  # a full send buffer drops the reply, as a lost datagram; the client retries
                alias.cell[0] += 1  # type: ignore[union-attr]
                alias.histogram.observe(perf_counter() - started)  # type: ignore[union-attr]
                return
        reply = self.dispatcher.handle(data, addr[0], self.listener, False)
        if isinstance(reply, bytes):
            self.transport.write(reply, addr)
        elif reply is not None:  # forwarded: the reply comes later
            reply.addCallback(self._send_later, addr)

    def _send_later(self, reply: bytes, addr: Any) -> None:
        if self.transport is not None:  # the listener may have closed meanwhile
            self.transport.write(reply, addr)


class DnsStreamProtocol(Protocol):
    """Length-prefixed queries, several per connection; closed when idle or over the cap."""

    factory: DnsStreamFactory

    def __init__(self) -> None:
        self._buffer = b""
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.factory.open += 1
        self.factory.connections.add(self)
        if self.factory.open > self.factory.max_connections:
            self.factory.rejected += 1
            if self.factory.rejected % 1000 == 1:  # a flood must not flood the log too
                log.warn(
                    "TCP connection cap {cap} reached: new connections are closed ({n} so far)",
                    cap=self.factory.max_connections,
                    n=self.factory.rejected,
                )
            self.transport.abortConnection()
            return
        self._arm()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open -= 1
        self.factory.connections.discard(self)
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._arm()
        dispatcher, listener = self.factory.dispatcher, self.factory.listener
        host = self.transport.getPeer().host
        while len(self._buffer) >= 2:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message, self._buffer = self._buffer[2 : 2 + length], self._buffer[2 + length :]
            reply = self._from_cache(message, host) or dispatcher.handle(message, host, listener, True)
            if isinstance(reply, bytes):
                self.transport.write(_LENGTH.pack(len(reply)) + reply)
            elif reply is not None:  # forwarded: answered when it comes, in any order
                reply.addCallback(self._send_later)

    def _from_cache(self, message: bytes, host: str) -> bytes | None:
        started = perf_counter()
        table = self.factory.sources.get(host)
        alias = table.get(message[2:]) if table is not None else None
        rest = alias.rest(self.factory.dispatcher.packets.serial) if alias is not None else None
        if rest is None:
            return None
        reply = message[:2] + rest
        alias.cell[0] += 1  # type: ignore[union-attr]
        alias.histogram.observe(perf_counter() - started)  # type: ignore[union-attr]
        return reply

    def _send_later(self, reply: bytes) -> None:
        if self.connected:
            self.transport.write(_LENGTH.pack(len(reply)) + reply)
            self._arm()

    def _arm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.idle_timeout)
        else:
            self._idle = self.factory.clock.callLater(self.factory.idle_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._idle = None
        self.transport.loseConnection()


class DnsStreamFactory(Factory):
    protocol = DnsStreamProtocol
    noisy = False

    def __init__(self, dispatcher: Dispatcher, listener: ListenConfig, clock: IReactorTime, idle_timeout: float, max_connections: int):
        self.dispatcher = dispatcher
        self.listener = listener
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.open = 0
        self.rejected = 0
        self.sources = dispatcher.packets.for_listener(listener, True)
        self.connections: set[DnsStreamProtocol] = set()


class DnsService(service.Service):
    """The whole server: registry backend → store → dispatcher → listeners."""

    def __init__(self, config: Config, reactor: Any, clock: IReactorTime | None = None, backend: Backend | None = None):
        self.config = config
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.store = SnapshotStore(self.clock)
        self.dispatcher = Dispatcher(config)
        self.store.listeners.append(self.dispatcher.swap)
        self.store.listeners.append(self._cross_check)
        self._config_problems: list[str] = []
        self.backend = backend if backend is not None else make_backend(config.registry, reactor, self.clock)
        self.forwarder = self._make_forwarder()
        self.dispatcher.forwarder = self.forwarder
        self.ports: list[Any] = []
        self.http_port: Any = None
        self.tcp_factories: list[DnsStreamFactory] = []
        self.ready: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.ready = self.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.stop()

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
        for listener in self.config.listen:
            self._listen(listener)
        if self.config.metrics is not None:
            m = self.config.metrics
            self.http_port = self.reactor.listenTCP(m.port, operator_site(self), interface=m.address)
            host = self.http_port.getHost()
            log.info("metrics on http://{address}:{port}/metrics (and /healthz, /readyz)", address=host.host, port=host.port)
        if self.config.query_log is not None:
            self.dispatcher.query_log = QueryLog(self.config.query_log, self.clock)
            self.dispatcher.query_log.start()
            log.info("query log: {target}", target="standard output" if self.config.query_log == "-" else self.config.query_log)
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
            factory = DnsStreamFactory(self.dispatcher, listener, self.clock, self.config.tcp.idle_timeout, self.config.tcp.max_connections)
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
        self.tcp_factories.append(factory)
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
        for factory in self.tcp_factories:
            for protocol in list(factory.connections):
                protocol.transport.abortConnection()
        self.tcp_factories = []
        if self.forwarder is not None:
            self.forwarder.stop()
        d = defer.gatherResults(stops, consumeErrors=True)
        d.addCallback(lambda _: self.backend.stop())
        query_log, self.dispatcher.query_log = self.dispatcher.query_log, None
        if query_log is not None:
            d.addCallback(lambda _: query_log.stop())
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
