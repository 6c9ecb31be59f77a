"""Twisted carries the bytes: UDP and TCP listeners around the Dispatcher, and the service that runs them."""

from __future__ import annotations

import struct
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from internal_dns.config import Config, ListenConfig
from internal_dns.dispatch import Dispatcher
from internal_dns.registry.backend import Backend
from internal_dns.registry.backends import make_backend
from internal_dns.registry.store import SnapshotStore

log = Logger()

_LENGTH = struct.Struct("!H")


class DnsDatagramProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, dispatcher: Dispatcher, listener: ListenConfig):
        self.dispatcher = dispatcher
        self.listener = listener

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        reply = self.dispatcher.handle(data, addr[0], self.listener, False)
        if reply is not None:
            self.transport.write(reply, addr)


class DnsStreamProtocol(Protocol):
    """Length-prefixed queries, several per connection; closed when idle or over the cap."""

    factory: DnsStreamFactory

    def __init__(self) -> None:
        self._buffer = b""
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.factory.open += 1
        if self.factory.open > self.factory.max_connections:
            log.warn("TCP connection cap {cap} reached; closing a new connection", cap=self.factory.max_connections)
            self.transport.abortConnection()
            return
        self._arm()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open -= 1
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
            reply = dispatcher.handle(message, host, listener, True)
            if reply is not None:
                self.transport.write(_LENGTH.pack(len(reply)) + reply)

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


class DnsService(service.Service):
    """The whole server: registry backend → store → dispatcher → listeners."""

    def __init__(self, config: Config, reactor: Any, clock: IReactorTime | None = None, backend: Backend | None = None):
        self.config = config
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.store = SnapshotStore(self.clock)
        self.dispatcher = Dispatcher(config)
        self.store.listeners.append(self.dispatcher.swap)
        self.backend = backend if backend is not None else make_backend(config.registry, reactor, self.clock)
        self.ports: list[Any] = []
        self.tcp_factories: list[DnsStreamFactory] = []
        self.ready: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.ready = self.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.stop()

    def start(self) -> defer.Deferred[None]:
        for listener in self.config.listen:
            self._listen(listener)
        log.info("registry: {backend}", backend=self.backend.describe())
        return self.backend.start(self.store)

    def _listen(self, listener: ListenConfig) -> None:
        udp = self.reactor.listenUDP(listener.port, DnsDatagramProtocol(self.dispatcher, listener), interface=listener.address, maxPacketSize=65535)
        port = udp.getHost().port  # a port of 0 picks one; TCP then takes the same number
        factory = DnsStreamFactory(self.dispatcher, listener, self.clock, self.config.tcp.idle_timeout, self.config.tcp.max_connections)
        try:
            tcp = self.reactor.listenTCP(port, factory, interface=listener.address, backlog=1024)
        except Exception:
            udp.stopListening()
            raise
        self.ports += [udp, tcp]
        self.tcp_factories.append(factory)
        log.info("listening on {address} port {port} (UDP and TCP)", address=listener.address, port=port)

    def bound_ports(self) -> list[tuple[str, int]]:
        return [(p.getHost().host, p.getHost().port) for p in self.ports[::2]]

    def stop(self) -> defer.Deferred[None]:
        # Listeners first, so no query arrives at a half-stopped server.
        stops = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports = []
        d = defer.gatherResults(stops, consumeErrors=True)
        d.addCallback(lambda _: self.backend.stop())
        d.addCallback(lambda _: None)
        return d
