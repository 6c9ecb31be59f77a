"""Upstream resolvers: where they are, whether they answer, and one exchange with one of them.

Each UDP exchange uses a socket of its own, so every query leaves from a fresh random port with a
fresh random ID; a datagram from elsewhere, with another ID or another question is ignored and
the exchange goes on waiting until its timeout.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IReadDescriptor, ITransport
from twisted.internet.protocol import ClientFactory, Protocol
from zope.interface import implementer

from internal_dns.counting import Histogram
from internal_dns.forward.relay import UpstreamReply, parse_reply, same_question
from internal_dns.forward.settings import parse_hostport
from internal_dns.wire import Malformed, skip_name

RESULTS = ("success", "timeout", "error", "servfail", "refused", "truncated_retry", "noedns_retry")
PROBE_RESULTS = ("success", "failure")  # health checks: answered (not REFUSED), or not


class UpstreamError(Exception):
    """One exchange failed: timeout, refused connection, unusable reply."""

    def __init__(self, result: str, detail: str = ""):
        self.result = result
        super().__init__(detail or result)


@dataclass(eq=False)
class Upstream:
    host: str
    port: int
    failures: int = 0  # failed health checks in a row
    down: bool = False
    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))  # queries
    probes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBE_RESULTS, 0))  # health checks
    durations: Histogram = field(default_factory=Histogram)  # seconds to each reply

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def sockaddr(self) -> tuple[Any, ...]:
        """The address to connect a socket to. A zone index (`fe80::1%eth0`) must become the
        scope ID of a 4-tuple: in a (host, port) pair Python drops it."""
        return _sockaddr(self.host, self.port)


def resolv_conf_upstreams(path: Path, own: list[tuple[str, int]]) -> list[Upstream]:
    """The nameservers of resolv.conf, each once, leaving out this server's own listening addresses."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found: dict[tuple[str, int], Upstream] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                host, port = parse_hostport(parts[1])
            except ValueError:
                continue
            upstream = Upstream(host, port)
            if (host, port) not in found and not _is_own(upstream, own):
                found[(host, port)] = upstream
    return list(found.values())


def _is_own(upstream: Upstream, own: list[tuple[str, int]]) -> bool:
    """Whether asking this nameserver would ask ourselves: a listener on its address and port,
    or a wildcard listener on its port when the address is one of this machine's."""
    ip = ipaddress.ip_address(upstream.host)
    for address, port in own:
        if port != upstream.port:
            continue
        mine = ipaddress.ip_address(address)
        if mine == ip:
            return True
        # `::` takes IPv4 too (our listeners are dual stack); `0.0.0.0` only IPv4.
        if mine.is_unspecified and (mine.version == 6 or ip.version == 4) and _is_local(ip):
            return True
    return False


def _is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address of this machine: loopback, unspecified, or one a socket can bind to."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(_sockaddr(str(ip), 0))
        except OSError:
            return False
    return True


def _sockaddr(host: str, port: int) -> tuple[Any, ...]:
    if "%" not in host:
        return (host, port)
    try:
        return socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]
    except OSError:  # an interface that is not there: connecting will say so
        return (host, port)


@implementer(IReadDescriptor)
class _DatagramExchange:
    """One query over a connected UDP socket of its own, read by the reactor.

    A plain socket rather than a Twisted port: ports log their opening and closing, which here
    would be two log lines for every forwarded query.
    """

    def __init__(self, reactor: Any, upstream: Upstream, query: bytes, done: defer.Deferred[UpstreamReply]):
        self.reactor = reactor
        self.done = done
        self.expect_id = struct.unpack_from("!H", query)[0]
        self.question = _question(query)
        family = socket.AF_INET6 if ":" in upstream.host else socket.AF_INET
        self.sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.connect(upstream.sockaddr())  # the kernel drops datagrams from others
            self.sock.send(query)
        except OSError:
            self.sock.close()  # not yet the reactor's: nothing else would close it
            raise
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def doRead(self) -> None:
        while self.sock is not None and not self.done.called:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP port unreachable arrives as ECONNREFUSED
                self.done.errback(UpstreamError("error", exc.strerror or str(exc)))
                return
            reply = _matching(data, self.expect_id, self.question)
            if reply is not None:
                self.done.callback(reply)

    def connectionLost(self, reason: Any) -> None:
        # The reactor calls this, not doRead, when the socket holds only an error (epoll reports
        # ICMP port unreachable as EPOLLERR alone): fail now rather than wait out the timeout.
        if self.sock is not None and not self.done.called:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.done.errback(UpstreamError("error", os.strerror(code) if code else "socket closed"))
        self.close()

    def logPrefix(self) -> str:
        return "upstream"

    def close(self) -> None:
        if self.sock is not None:
            self.reactor.removeReader(self)
            self.sock.close()
            self.sock = None


class _StreamExchange(Protocol):
    transport: ITransport  # set (by makeConnection) before any method below is called

    def __init__(self, query: bytes, done: defer.Deferred[UpstreamReply]):
        self.query = query
        self.done = done
        self.buffer = b""
        self.expect_id = struct.unpack_from("!H", query)[0]
        self.question = _question(query)

    def connectionMade(self) -> None:
        self.transport.write(struct.pack("!H", len(self.query)) + self.query)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) < 2 + length:
                return
            message, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            reply = _matching(message, self.expect_id, self.question)
            if reply is not None and not self.done.called:
                self.done.callback(reply)
                self.transport.loseConnection()
                return

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(UpstreamError("error", "connection closed before a reply"))


class _StreamFactory(ClientFactory):
    noisy = False

    def __init__(self, query: bytes, done: defer.Deferred[UpstreamReply]):
        self.query = query
        self.done = done

    def buildProtocol(self, addr: Any) -> _StreamExchange:
        return _StreamExchange(self.query, self.done)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.done.called:
            self.done.errback(UpstreamError("error", f"cannot connect: {reason.getErrorMessage()}"))


def _question(query: bytes) -> bytes:
    return query[12 : skip_name(query, 12, pointers=False) + 4]


def _matching(data: bytes, expect_id: int, question: bytes) -> UpstreamReply | None:
    try:
        reply = parse_reply(data)
    except Malformed:
        return None
    if reply.id != expect_id or not same_question(reply.question, question):
        return None  # not ours: a late, spoofed or confused datagram
    return reply


def exchange(
    reactor: Any, clock: IReactorTime, upstream: Upstream, query: bytes, *, tcp: bool, timeout: float
) -> defer.Deferred[UpstreamReply]:
    """Send one query to one upstream; the reply, or UpstreamError after `timeout` (on `clock`)."""
    done: defer.Deferred[UpstreamReply] = defer.Deferred()
    if tcp:
        connector = reactor.connectTCP(upstream.host, upstream.port, _StreamFactory(query, done), timeout=timeout)
        close = connector.disconnect
    else:
        try:
            close = _DatagramExchange(reactor, upstream, query, done).close
        except OSError as exc:
            return defer.fail(UpstreamError("error", exc.strerror or str(exc)))

    def expire() -> None:
        if not done.called:
            done.errback(UpstreamError("timeout"))

    timer = clock.callLater(timeout, expire)

    def finish(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        close()
        return result

    done.addBoth(finish)
    return done
