"""DNS over TCP (RFC 1035 §4.2.2, RFC 7766): length-prefixed queries, several per connection,
answered in any order, and the limits that keep one client from taking the service.

- **Caps**: `max_connections` in all (every listener together) and `max_per_source` from one
  address. At the cap in all, a new connection is not refused while another sits idle: the one
  idle longest (no query arriving, none being answered, nothing unsent) gives way, then one
  stalled in the middle of a query; only when every connection is busy is the new one closed.
- **Deadlines**: a started query must arrive whole within `message_timeout`; a connection with
  neither a whole query nor a reply for `idle_timeout` is closed. Bytes that do not complete a
  query do not count as activity, so trickling one byte at a time holds a slot for seconds, not
  forever.
- **Backpressure**: while more than `max_unsent` bytes of replies wait for the client to read
  them, or `max_pipelined` of its queries wait on an upstream, the connection is not read from;
  queries already read wait in its buffer. A client that does not drain its replies within
  `idle_timeout` is cut off (abort: a close would wait for the flush forever).
- **Half-close**: after the client's FIN, every query it sent before is answered (from the
  upstreams too), and then the connection is closed. Stopping the server (`drain`) does the same
  to every connection: nothing more is read, what was read is answered, then it closes.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from internal_dns.transport.handoff import HostsFor, Respond
from internal_dns.transport.settings import ListenConfig, TcpConfig, unmapped

if TYPE_CHECKING:
    from twisted.internet.tcp import Server

log = Logger()

_LENGTH = struct.Struct("!H")
REJECTED = ("cap", "per_source")  # why a new connection was closed at once
CLOSED = ("idle", "message_timeout", "not_draining", "evicted")  # why the server closed an open one


class TcpConnections:
    """Every open TCP connection of the server, least recently active first: the caps in all
    and per source, and the counts of connections refused and closed."""

    def __init__(self, settings: TcpConfig, clock: IReactorTime):
        self.settings = settings
        self.clock = clock
        self.open: OrderedDict[DnsStreamProtocol, None] = OrderedDict()
        self.per_source: dict[str, int] = {}
        self.rejected = dict.fromkeys(REJECTED, 0)
        self.closed = dict.fromkeys(CLOSED, 0)

    def admit(self, conn: DnsStreamProtocol) -> bool:
        host = conn.host
        if self.per_source.get(host, 0) >= self.settings.max_per_source:
            self._refuse("per_source", host)
            return False
        if len(self.open) >= self.settings.max_connections:
            victim = self._give_way()
            if victim is None:
                self._refuse("cap", host)
                return False
            self.closed["evicted"] += 1
            victim.abort()  # its connectionLost releases its slot now
        self.open[conn] = None
        self.per_source[host] = self.per_source.get(host, 0) + 1
        return True

    def release(self, conn: DnsStreamProtocol) -> None:
        if self.open.pop(conn, False) is None:
            left = self.per_source[conn.host] - 1
            if left:
                self.per_source[conn.host] = left
            else:
                del self.per_source[conn.host]

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("internal_dns_tcp_connections", "TCP connections open.", value=len(self.open))
        rejected = CounterMetricFamily(
            "internal_dns_tcp_rejected",
            "TCP connections closed at once: every connection busy (cap), or too many from one address (per_source).",
            labels=["reason"],
        )
        for reason, n in self.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected
        closed = CounterMetricFamily(
            "internal_dns_tcp_closed",
            "TCP connections the server closed: idle, a query not whole in time (message_timeout), "
            "replies not read (not_draining), or given way to a new connection (evicted).",
            labels=["reason"],
        )
        for reason, n in self.closed.items():
            closed.add_metric([reason], n)
        yield closed

    def active(self, conn: DnsStreamProtocol) -> None:
        if conn in self.open:
            self.open.move_to_end(conn)

    def abort_all(self) -> None:
        for conn in list(self.open):
            conn.abort()

    def drain(self, grace: float) -> Deferred[None]:
        """After `grace` seconds (a connection accepted as the listener closed has its query on
        the way), stop reading every connection, answer what each has read, and close them; fires
        when all have closed. One still open `idle_timeout` later (a client not reading its
        replies) is cut off."""
        done: Deferred[None] = Deferred()
        if not self.open:
            done.callback(None)  # nothing accepted: nothing can arrive any more
            return done
        self.clock.callLater(grace, self._drain_now, done)
        return done

    def _drain_now(self, done: Deferred[None]) -> None:
        waiting = [conn.drain() for conn in list(self.open)]
        if not waiting:
            done.callback(None)
            return
        timer = self.clock.callLater(self.settings.idle_timeout, self.abort_all)

        def closed(_: object) -> None:
            if timer.active():
                timer.cancel()
            done.callback(None)

        gatherResults(waiting, consumeErrors=True).addBoth(closed)

    def _give_way(self) -> DnsStreamProtocol | None:
        """The connection idle longest; else the one stalled longest inside a query."""
        stalled = None
        for conn in self.open:
            if conn.idle():
                return conn
            if stalled is None and conn.stalled():
                stalled = conn
        return stalled

    def _refuse(self, reason: str, host: str) -> None:
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if total % 1000 == 1:  # a flood must not flood the log too
            s = self.settings
            log.warn(
                "TCP connection from {host} closed at once: {why} ({n} so far)",
                host=host,
                why=f"{s.max_per_source} connections from it already"
                if reason == "per_source"
                else f"all {s.max_connections} connections busy",
                n=total,
            )


@implementer(IHalfCloseableProtocol, IPushProducer)
class DnsStreamProtocol(Protocol):
    factory: DnsStreamFactory
    # What the reactor gives a protocol of a listening TCP port (listenTCP, adoptStreamPort): the
    # flow control below uses more of it (bufferSize, startReading, disconnecting) than ITCPTransport.
    transport: Server

    def __init__(self) -> None:
        self.host = ""
        self.local: str | None = None  # the address the client connected to, on a wildcard listener
        self.hosts: dict[str, bytes] = {}
        self._closed: Deferred[None] | None = None
        self._buffer = b""
        self._timer: IDelayedCall | None = None
        self._last_active = 0.0
        self._message_since: float | None = None  # when the query now arriving began
        self._unread_since: float | None = None  # when replies began to wait for the client to read them
        self._outstanding = 0  # queries waiting on an upstream
        self._write_paused = False
        self._read_closed = False  # the client's FIN
        self._reading = True
        self._admitted = False

    # --- the connection's life ----------------------------------------------------------------
    def connectionMade(self) -> None:
        self.host = self.transport.getPeer().host
        if self.factory.wildcard:
            self.local = unmapped(self.transport.getHost().host)
        self.hosts = self.factory.hosts_for(self.local)
        connections = self.factory.connections
        if not connections.admit(self):
            self.transport.abortConnection()
            return
        self._admitted = True
        settings = connections.settings
        self.transport.bufferSize = settings.max_unsent  # past it the transport pauses us
        self.transport.registerProducer(self, True)
        self._last_active = self.factory.clock.seconds()
        self._schedule()

    def connectionLost(self, reason: Any = None) -> None:
        if self._admitted:
            self.factory.connections.release(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        closed, self._closed = self._closed, None
        if closed is not None:
            closed.callback(None)

    def drain(self) -> Deferred[None]:
        """As after the client's FIN: read nothing more, answer what was read, then close."""
        self._closed = Deferred()
        closed = self._closed
        self.readConnectionLost()
        return closed

    def abort(self) -> None:
        self.transport.abortConnection()

    def idle(self) -> bool:
        return not self._buffer and not self._outstanding and not self._write_paused

    def stalled(self) -> bool:
        return self._message_since is not None and not self._outstanding and not self._write_paused

    # --- reading queries ----------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def readConnectionLost(self) -> None:
        if self._read_closed:
            return
        self._read_closed = True
        self._process()

    def writeConnectionLost(self) -> None:
        pass  # the server never half-closes

    def _process(self) -> None:
        """Answer the whole queries in the buffer, as long as the client keeps up."""
        factory = self.factory
        respond, listener, hosts, local = factory.respond, factory.listener, self.hosts, self.local
        while not self._blocked() and len(self._buffer) >= 2:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message, self._buffer = self._buffer[2 : 2 + length], self._buffer[2 + length :]
            self._message_since = None
            self._active()
            reply = respond(message, self.host, local, listener, True, hosts)
            if isinstance(reply, bytes):
                self._write(reply)
            elif reply is not None:  # forwarded: answered when it comes, in any order
                self._outstanding += 1
                reply.addCallback(self._answered)
        if self._buffer and self._message_since is None and not self._blocked():
            self._message_since = self.factory.clock.seconds()  # the next query has begun to arrive
        self._update_reading()
        self._maybe_close()
        self._schedule()

    def _blocked(self) -> bool:
        return self._write_paused or self._outstanding >= self.factory.connections.settings.max_pipelined

    def _update_reading(self) -> None:
        want = not self._read_closed and not self._blocked()
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.startReading()
            else:
                self.transport.stopReading()

    # --- writing replies ----------------------------------------------------------------------
    def _write(self, reply: bytes) -> None:
        self.transport.write(_LENGTH.pack(len(reply)) + reply)

    def _answered(self, reply: bytes) -> None:
        self._outstanding -= 1
        if not self.connected:
            return
        self._write(reply)
        self._active()
        self._process()  # queries held back for the pipeline limit may go on now

    def pauseProducing(self) -> None:
        """The transport holds more than `max_unsent` bytes the client has not read."""
        self._write_paused = True
        self._unread_since = self.factory.clock.seconds()
        self._update_reading()
        self._schedule()

    def resumeProducing(self) -> None:
        """Everything written has gone to the client."""
        self._write_paused = False
        self._unread_since = None
        self._active()
        self._process()

    def stopProducing(self) -> None:
        pass

    def _maybe_close(self) -> None:
        """After the client's FIN, close once every query it sent is answered."""
        if self._read_closed and not self._outstanding and not self._write_paused and not self._whole_query_buffered():
            self._close()

    def _whole_query_buffered(self) -> bool:
        return len(self._buffer) >= 2 and len(self._buffer) >= 2 + _LENGTH.unpack_from(self._buffer)[0]

    def _close(self) -> None:
        """Close once the replies are flushed; cut off a client that never reads them."""
        if self.transport.disconnecting:
            return
        self.transport.loseConnection()
        self.factory.clock.callLater(self.factory.connections.settings.idle_timeout, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.connected:
            self.factory.connections.closed["not_draining"] += 1
            self.transport.abortConnection()

    # --- deadlines ----------------------------------------------------------------------------
    def _active(self) -> None:
        self._last_active = self.factory.clock.seconds()
        self.factory.connections.active(self)

    def _deadline(self) -> tuple[float, str]:
        settings = self.factory.connections.settings
        if self._write_paused and self._unread_since is not None:
            return self._unread_since + settings.idle_timeout, "not_draining"
        if self._outstanding:
            # Waiting on an upstream, which has a deadline of its own; then idle as usual.
            return self._last_active + settings.idle_timeout + settings.message_timeout, "idle"
        idle = self._last_active + settings.idle_timeout
        if self._message_since is not None and self._message_since + settings.message_timeout < idle:
            return self._message_since + settings.message_timeout, "message_timeout"
        return idle, "idle"

    def _schedule(self) -> None:
        if not self.connected or self.transport.disconnecting:
            return
        clock = self.factory.clock
        at, _ = self._deadline()
        delay = max(0.0, at - clock.seconds())
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - at) > 1e-6:
                self._timer.reset(delay)
        else:
            self._timer = clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        at, reason = self._deadline()
        if self.factory.clock.seconds() < at:  # moved later meanwhile
            self._schedule()
            return
        self.factory.connections.closed[reason] += 1
        if reason == "idle":
            self._close()
        else:
            self.transport.abortConnection()


class DnsStreamFactory(Factory):
    protocol = DnsStreamProtocol
    noisy = False

    def __init__(
        self, respond: Respond, hosts_for: HostsFor, listener: ListenConfig, connections: TcpConnections, clock: IReactorTime
    ):
        self.respond = respond
        self.hosts_for = hosts_for  # destination → the packet cache's source → tag map, over TCP
        self.listener = listener
        self.wildcard = listener.wildcard
        self.connections = connections
        self.clock = clock
