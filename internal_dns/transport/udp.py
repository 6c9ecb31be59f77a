"""DNS over UDP: one socket per listener, read by the reactor itself, several datagrams a wake-up.

A host has many addresses, and a stub resolver drops a reply that comes from any address but the
one it asked. On a wildcard listener (`::`, `0.0.0.0`) the kernel would pick the reply's source
by routing, so there each datagram is read with its destination (IPV6_PKTINFO, or IP_PKTINFO on
an IPv4 socket) and answered from it (sendmsg with that address). The destination also chooses
the view of a source that no prefix or `views:` entry claims: the network whose `dns6`/`dns4` it
is (SPEC §2). Listeners on a given address need neither, and read with plain recvfrom.

Stopping (`drain`) loses nothing: the socket is connected to an address no client has, which
takes it out of its SO_REUSEPORT group's choices at once (the kernel sends a connected socket only
its peer's datagrams), so a server started to replace this one gets every new query; what is
already queued is read and answered, and the socket stays open for the replies of forwarded
queries still in flight.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from internal_dns.transport.handoff import HostsFor, Respond
from internal_dns.transport.ratelimit import SLIP, RateLimiter, truncated_reply
from internal_dns.transport.settings import ListenConfig, unmapped

log = Logger()

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's number; Python's socket module leaves it out
READS_PER_WAKEUP = 64  # then the reactor's other sockets get their turn
PROBE_EVERY = 8  # while wake-ups find one datagram, every 8th still reads on to see if more wait
DRAIN_GRACE = 0.25  # seconds a stepped-aside socket is still read
_IN_PKTINFO = struct.Struct("@i4s4s")  # ifindex, local (spec_dst), header destination


@implementer(IReadDescriptor)
class UdpListener:
    """A bound UDP socket the reactor reads; `respond` answers each query."""

    fast_read = True  # read without Twisted's logging context around it (fastpoll.py)

    def __init__(
        self,
        reactor: Any,
        sock: socket.socket,
        listener: ListenConfig,
        respond: Respond,
        hosts_for: HostsFor,
        limiter: RateLimiter | None = None,
        clock: IReactorTime | None = None,
    ):
        self.reactor = reactor
        self.limiter = limiter  # per-source limits (ratelimit.py), shared by the server's listeners
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.sock: socket.socket | None = sock
        self.listener = listener
        self.respond = respond
        self.hosts_for = hosts_for
        self.family = sock.family
        self.port: int = sock.getsockname()[1]
        self.wildcard = listener.wildcard
        self.hosts = hosts_for(None)
        # destination → (its text, the ancillary data that sends from it, the packet cache's host map)
        self._locals: dict[bytes, tuple[str, list[tuple[int, int, bytes]], dict[str, bytes]]] = {}
        self.in_flight = 0  # forwarded queries whose replies are still to be sent
        # One datagram a wake-up, while that is all a wake-up finds (_budget): reading on until the
        # socket says EAGAIN costs a system call and an exception per query at a steady few
        # thousand a second, about 2 µs of a query's 40; the epoll is level-triggered, so a
        # datagram left unread wakes the reactor again at once.
        self._single = True
        self._wakeups = 0
        self.draining = False
        self._drained: Deferred[None] | None = None
        if self.wildcard:
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                self._space = socket.CMSG_SPACE(20)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                self._space = socket.CMSG_SPACE(_IN_PKTINFO.size)

    # --- the reactor's side -------------------------------------------------------------------
    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def logPrefix(self) -> str:
        return "udp"

    def start(self) -> None:
        self.reactor.addReader(self)

    def connectionLost(self, reason: Any) -> None:
        self.close()

    def doRead(self) -> None:
        sock = self.sock
        if sock is None:
            return
        if self.wildcard:
            self._read_with_destinations(sock)
            return
        respond, listener, hosts = self.respond, self.listener, self.hosts
        check, now = self._limits()
        budget = self._budget()
        for n in range(budget):
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                self._single = n <= 1
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket: not a query
                log.debug("UDP read on {address}: {error}", address=self.listener.address, error=exc)
                return
            if check is not None:
                verdict = check(addr[0], now)
                if verdict:
                    if verdict == SLIP:
                        self._slip(data, addr, None)
                    continue
            reply = respond(data, addr[0], None, listener, False, hosts)
            if isinstance(reply, bytes):
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    pass  # a full send buffer drops the reply, as a lost datagram; the client retries
            elif reply is not None:  # forwarded: the reply comes later
                self.in_flight += 1
                reply.addBoth(self._landed, addr, None)
        self._single = budget == 1

    def _read_with_destinations(self, sock: socket.socket) -> None:
        respond, listener, space, known = self.respond, self.listener, self._space, self._locals
        check, now = self._limits()
        budget = self._budget()
        for n in range(budget):
            try:
                data, ancillary, _, addr = sock.recvmsg(65535, space)
            except BlockingIOError:
                self._single = n <= 1
                return
            except OSError as exc:
                log.debug("UDP read on {address}: {error}", address=self.listener.address, error=exc)
                return
            verdict = check(addr[0], now) if check is not None else 0
            # The whole PKTINFO (destination and interface) is the key: no slicing per datagram.
            found: tuple[str | None, list[tuple[int, int, bytes]], dict[str, bytes]] | None
            found = known.get(ancillary[0][2]) if len(ancillary) == 1 else None
            if found is None:
                found = self._local(ancillary)
            local, send_from, hosts = found
            if verdict:
                if verdict == SLIP:
                    self._slip(data, addr, send_from)
                continue
            reply = respond(data, addr[0], local, listener, False, hosts)
            if isinstance(reply, bytes):
                try:
                    sock.sendmsg((reply,), send_from, 0, addr)
                except OSError:
                    pass
            elif reply is not None:
                self.in_flight += 1
                reply.addBoth(self._landed, addr, send_from)
        self._single = budget == 1

    def _budget(self) -> int:
        """The datagrams this wake-up may read: one while wake-ups find one (every PROBE_EVERY-th
        reads on, to notice a rising rate), else up to READS_PER_WAKEUP until a wake-up finds
        one or none again."""
        if self._single:
            self._wakeups += 1
            if self._wakeups % PROBE_EVERY:
                return 1
        return READS_PER_WAKEUP

    def _limits(self) -> tuple[Callable[[str, float], int] | None, float]:
        """The rate limiter's check, if limits are on, and the time for this wake-up's datagrams
        (read once: they arrive together)."""
        limiter = self.limiter
        if limiter is None or not limiter.config.enabled:
            return None, 0.0
        return limiter.check, self.clock.seconds()

    # --- replies ------------------------------------------------------------------------------
    def _slip(self, data: bytes, addr: Any, send_from: list[tuple[int, int, bytes]] | None) -> None:
        """A limited query's empty TC reply: retry over TCP."""
        reply = truncated_reply(data)
        if reply is not None:
            self._send(reply, addr, send_from)

    def _send(self, reply: bytes, addr: Any, send_from: list[tuple[int, int, bytes]] | None) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            if send_from is None:
                sock.sendto(reply, addr)
            else:
                sock.sendmsg([reply], send_from, 0, addr)
        except OSError:
            pass  # a full send buffer drops the reply, as a lost datagram; the client retries

    def _landed(self, reply: Any, addr: Any, send_from: list[tuple[int, int, bytes]] | None) -> None:
        self.in_flight -= 1
        if isinstance(reply, bytes):
            self._send(reply, addr, send_from)
        else:  # a bug on the way: the client asks again
            log.failure("forwarded query from {addr} failed", reply, addr=addr)
        if self.draining and not self.in_flight and self._drained is not None:
            done, self._drained = self._drained, None
            done.callback(None)

    def _local(
        self, ancillary: list[tuple[int, int, bytes]]
    ) -> tuple[str | None, list[tuple[int, int, bytes]], dict[str, bytes]]:
        """The destination of a datagram: as text (for views), as what sends a reply from it,
        and the packet cache's source map for it; remembered by the PKTINFO bytes themselves."""
        for level, kind, data in ancillary:
            if kind == socket.IPV6_PKTINFO and level == socket.IPPROTO_IPV6:
                text = unmapped(socket.inet_ntop(socket.AF_INET6, data[:16]))
                # The interface index comes back too: it matters for link-local addresses.
                return self._remember(data, text, [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data[:20])])
            if kind == IP_PKTINFO and level == socket.IPPROTO_IP:
                _, _, destination = _IN_PKTINFO.unpack_from(data)
                # No interface index: with one, Linux would send from that interface's primary
                # address instead of the one asked (ip(7), IP_PKTINFO).
                send_from = [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, destination, b"\x00" * 4))]
                return self._remember(data, socket.inet_ntop(socket.AF_INET, destination), send_from)
        return None, [], self.hosts  # no destination given: answered as by a plain listener

    def _remember(
        self, key: bytes, text: str, send_from: list[tuple[int, int, bytes]]
    ) -> tuple[str, list[tuple[int, int, bytes]], dict[str, bytes]]:
        if len(self._locals) >= 65536:  # addresses come and go with networks; start afresh
            self._locals.clear()
        found = self._locals[key] = (text, send_from, self.hosts_for(text))
        return found

    # --- stopping -----------------------------------------------------------------------------
    def drain(self, clock: IReactorTime, grace: float = DRAIN_GRACE) -> Deferred[None]:
        """Take new queries elsewhere, answer those already queued and in flight; fires when done.

        Datagrams the kernel was delivering as the socket stepped aside may still land in its
        queue, so it is read for `grace` seconds more before it counts as drained.
        """
        done: Deferred[None] = Deferred()
        sock = self.sock
        if sock is None:
            done.callback(None)
            return done
        self.draining = True
        try:
            # A peer no client has: the kernel now gives this socket that peer's datagrams only.
            sock.connect(("::1", 9) if self.family == socket.AF_INET6 else ("127.0.0.1", 9))
        except OSError as exc:
            log.warn("UDP listener {address}: could not step aside ({error}); closing", address=self.listener.address, error=exc)
        self.doRead()  # what the kernel queued before
        clock.callLater(grace, self._after_grace, done)
        return done

    def _after_grace(self, done: Deferred[None]) -> None:
        self.doRead()
        if self.in_flight:
            self._drained = done  # fired by the last forwarded reply
        else:
            done.callback(None)

    def close(self) -> None:
        if self.sock is not None:
            self.reactor.removeReader(self)
            self.sock.close()
            self.sock = None
