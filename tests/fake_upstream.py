"""Upstreams on loopback for the forwarding tests: a scriptable DNS server, and a real dnsmasq.

`FakeUpstream` answers `example.test.` from a small table (NXDOMAIN with SOA below it, RRSIGs for
DO queries, a TXT too big for 512 bytes, glue for the MX; other names NXDOMAIN with the root's
SOA, `. NS` as a resolver would) in a thread of its own, records every query it receives
(transport, ID, source port, question as sent, flags, EDNS), and can be told to misbehave:
`silent`, `slow` (hold replies until `release()`), `wrong_id` and `wrong_question` (a spoofed
answer; with `then_answer`, the right reply after it), `truncate` (TC over UDP, whole over TCP),
`servfail`, `refused`, `formerr` (with its OPT: it knows EDNS), `noedns` (a server from before
EDNS: `noedns_rcode`, FORMERR by default, without OPT to a query with EDNS; answers to one
without). Names in `broken` are never answered, whatever the mode (a broken domain, where a resolver
times out). With `validating` on it sets AD on answers from `example.test.` to
queries with AD or DO, as a validating resolver does (RFC 6840 §5.8). `tcp_mode`, when set, is the
mode for queries over TCP; `hold` holds the replies of any mode until `release()`, as `slow` does.
Like a real server it cuts UDP replies at the query's payload (512 without EDNS) with TC, and an
EDNS reply carries an NSID option and echoes DO (unless `echo_do` is off).

`Pending` sends a query now and reads its reply later, for tests that move the server's clock in
between; `Dnsmasq` runs a real dnsmasq on loopback.
"""

from __future__ import annotations

import selectors
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bench.peers import free_port  # noqa: F401  (dnsmasq needs a fixed number)
from tests.dnsclient import Reply, make_query

ZONE = "example.test."
SOA = "ns.example.test. hostmaster.example.test. 2026112101 3600 600 86400 60"
RECORDS: dict[tuple[str, str], tuple[int, list[str]]] = {
    ("www.example.test.", "A"): (300, ["192.0.2.10"]),
    ("www.example.test.", "AAAA"): (300, ["2001:db8::10"]),
    ("short.example.test.", "A"): (2, ["192.0.2.20"]),
    ("mail.example.test.", "MX"): (300, ["10 mx.example.test."]),
    ("big.example.test.", "TXT"): (300, [f'"{i:03d} {"x" * 60}"' for i in range(30)]),
    ("example.test.", "SOA"): (300, [SOA]),
}
FAKE_RRSIG = "{type} 13 3 {ttl} 20270101000000 20260101000000 12345 example.test. c2lnbmF0dXJlIGJ5dGVz"
ADDITIONAL = {"mail.example.test.": ("mx.example.test.", 300, "A", "192.0.2.25")}  # glue for the MX
NSID = b"fake-upstream"
ROOT_SOA = "a.root-servers.net. nstld.verisign-grs.com. 2026112100 1800 900 604800 86400"
SPOOFED = "198.51.100.66"  # the address in `wrong_id` replies


@dataclass
class Received:
    transport: str  # "udp" or "tcp"
    id: int
    source_port: int
    name: str  # as sent, letter case kept
    rdtype: int
    flags: int
    edns: int
    do: bool
    payload: int


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.mode = "answer"
        self.then_answer = False  # wrong_id / wrong_question: send the right reply after the wrong one
        self.echo_do = True
        self.validating = False  # AD on example.test. answers to queries with AD or DO
        self.broken: set[str] = set()  # names (lower case, final dot) never answered
        self.noedns_rcode = dns.rcode.FORMERR  # what `noedns` answers a query with EDNS
        self.tcp_mode: str | None = None  # the mode over TCP, when it differs from `mode`
        self.hold = False  # hold replies until release(), whatever the mode
        self.received: list[Received] = []
        self.errors: list[BaseException] = []  # the fake's own failures, raised by close()
        self._held: list[tuple[socket.socket | None, bytes, object]] = []
        self._handled = 0  # queries received whose replies are sent, held or never to be sent
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.udp, self.tcp = _bind_pair(host, port)
        self.port = self.udp.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # --- what the tests look at ---------------------------------------------------------------
    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until `count` queries have arrived in all (bounded); return them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"upstream got {len(self.received)} queries, expected {count}")
                self._arrived.wait(left)
            return list(self.received)

    def names(self) -> list[str]:
        with self._lock:
            return [r.name.lower() for r in self.received]

    def release(self) -> None:
        """Send the replies held back in `slow` mode: those of every query received by now (a
        query just received may not have its reply made yet: that is waited for, bounded)."""
        deadline = time.monotonic() + 5.0
        with self._arrived:
            while self._handled < len(self.received) and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
            held, self._held = self._held, []
        for conn, reply, addr in held:
            self._send(conn, reply, addr)

    def queries(self, name: str) -> list[Received]:
        """The queries received for one name (any letter case): probes and others left out."""
        with self._lock:
            return [r for r in self.received if r.name.lower() == name.lower()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.udp.close()
        self.tcp.close()
        if self.errors:
            raise AssertionError(f"the fake upstream failed: {self.errors[0]!r}") from self.errors[0]

    # --- serving ------------------------------------------------------------------------------
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, "udp")
        sel.register(self.tcp, selectors.EVENT_READ, "accept")
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                try:
                    self._ready(sel, key)
                except Exception as exc:  # keep serving; close() reports it
                    self.errors.append(exc)
        for key in list(sel.get_map().values()):
            if key.data == "conn":
                key.fileobj.close()  # type: ignore[union-attr]
        sel.close()

    def _ready(self, sel: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        if key.data == "udp":
            data, addr = self.udp.recvfrom(65535)
            self._handle(data, None, addr, addr[1])
        elif key.data == "accept":
            conn, addr = self.tcp.accept()
            conn.settimeout(2)
            sel.register(conn, selectors.EVENT_READ, "conn")
        else:
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                head = conn.recv(2)
                if len(head) < 2:
                    raise ConnectionError
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = conn.recv(length - len(data))
                    if not chunk:
                        raise ConnectionError
                    data += chunk
            except (OSError, ConnectionError):
                sel.unregister(conn)
                conn.close()
                return
            self._handle(data, conn, None, conn.getpeername()[1])

    def _handle(self, data: bytes, conn: socket.socket | None, addr: object, source_port: int) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        q = query.question[0]
        with self._arrived:
            self.received.append(
                Received(
                    "tcp" if conn else "udp",
                    query.id,
                    source_port,
                    q.name.to_text(),
                    q.rdtype,
                    query.flags,
                    query.edns,
                    query.ednsflags & dns.flags.DO != 0,
                    query.payload,
                )
            )
            self._arrived.notify_all()
        try:
            self._answer(query, q, conn, addr)
        finally:
            with self._arrived:
                self._handled += 1
                self._arrived.notify_all()

    def _answer(self, query: dns.message.Message, q: Any, conn: socket.socket | None, addr: object) -> None:
        mode = self.tcp_mode if conn is not None and self.tcp_mode is not None else self.mode
        if q.name.to_text().lower() in self.broken:
            mode = "silent"
        reply = self._reply(query, tcp=conn is not None, mode=mode)
        if reply is None:
            return
        replies = [reply]
        if mode in ("wrong_id", "wrong_question") and self.then_answer:
            replies.append(self._reply(query, tcp=conn is not None, mode="answer") or b"")
        for wire in replies:
            if mode == "slow" or self.hold:
                with self._lock:
                    self._held.append((conn, wire, addr))
            else:
                self._send(conn, wire, addr)

    def _send(self, conn: socket.socket | None, reply: bytes, addr: object) -> None:
        try:
            if conn is None:
                self.udp.sendto(reply, addr)
            else:
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass

    def _reply(self, query: dns.message.Message, tcp: bool, mode: str | None = None) -> bytes | None:
        mode = mode or self.mode
        if mode == "silent":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        do = query.ednsflags & dns.flags.DO != 0
        if mode == "noedns" and query.edns >= 0:  # an OPT record it cannot parse
            response.use_edns(False)
            response.set_rcode(self.noedns_rcode)
            return response.to_wire()
        if query.edns >= 0:
            response.use_edns(
                0, dns.flags.DO if do and self.echo_do else 0, 1232, query.payload, options=[dns.edns.NSIDOption(NSID)]
            )
        # Like a real server: a UDP reply stops at the asker's payload (512 without EDNS), with TC.
        limit = 65535 if tcp else max(512, query.payload if query.edns >= 0 else 512)
        if mode in ("servfail", "refused", "formerr"):
            response.set_rcode({"servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED, "formerr": dns.rcode.FORMERR}[mode])
            return response.to_wire(max_size=limit)
        q = query.question[0]
        name = q.name.to_text().lower()
        if name == "." and q.rdtype == dns.rdatatype.NS:  # what a resolver answers (and a probe asks)
            response.answer.append(dns.rrset.from_text(".", 518400, "IN", "NS", "a.root-servers.net."))
            return response.to_wire(max_size=limit)
        if name.endswith(ZONE) or name == ZONE:
            response.flags |= dns.flags.AA  # it serves example.test. itself
            if self.validating and (query.flags & dns.flags.AD or do):
                response.flags |= dns.flags.AD
        found = [(rt, v) for (n, rt), v in RECORDS.items() if n == name]
        wanted = [(rt, v) for rt, v in found if dns.rdatatype.from_text(rt) == q.rdtype]
        if wanted:
            rt, (ttl, values) = wanted[0]
            response.answer.append(dns.rrset.from_text(q.name, ttl, "IN", rt, *values))
            if do:
                response.answer.append(dns.rrset.from_text(q.name, ttl, "IN", "RRSIG", FAKE_RRSIG.format(type=rt, ttl=ttl)))
            if name in ADDITIONAL:
                glue, glue_ttl, glue_type, glue_value = ADDITIONAL[name]
                response.additional.append(dns.rrset.from_text(glue, glue_ttl, "IN", glue_type, glue_value))
        elif name.endswith(ZONE) or name == ZONE:
            if not found and name != ZONE:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text(ZONE, 300, "IN", "SOA", SOA))
        else:  # like a resolver, for a name it cannot find
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text(".", 900, "IN", "SOA", ROOT_SOA))
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        if mode == "truncate" and not tcp:
            response.answer = []
            response.authority = []
            response.flags |= dns.flags.TC
            wire = response.to_wire()
        if mode == "wrong_id":  # another ID, and an answer a spoofer would like believed
            spoof = dns.message.make_response(query)
            spoof.answer.append(dns.rrset.from_text(q.name, 300, "IN", "A", SPOOFED))
            wire = struct.pack("!H", (query.id + 1) & 0xFFFF) + spoof.to_wire()[2:]
        if mode == "wrong_question":  # the right ID, an answer to another question
            other = dns.message.make_response(dns.message.make_query("other.example.test.", "A"))
            other.id = query.id
            other.answer.append(dns.rrset.from_text("other.example.test.", 300, "IN", "A", SPOOFED))
            wire = other.to_wire()
        return wire


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on one port; for port 0, the UDP port's number may be taken on the TCP
    side (another connection's ephemeral port), so pick again a few times."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # A 4-tuple for IPv6, so that a zone index (`fe80::53%veth0`) becomes the scope ID.
    address = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]
    for _ in range(20 if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind(address)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((address[0], udp.getsockname()[1], *address[2:]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise AssertionError(f"no port free for both UDP and TCP on {host}")


class Pending:
    """A query sent now on a socket of its own, its reply read later: for tests that move the
    server's clock between the two (a timeout, a deadline, a held upstream reply)."""

    def __init__(self, host: str, port: int, query: dns.message.Message | bytes, *, source: str = "127.0.0.1", tcp: bool = False):
        self.query = query
        self.tcp = tcp
        wire = query if isinstance(query, bytes) else query.to_wire()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock.sendall(struct.pack("!H", len(wire)) + wire if tcp else wire)

    @classmethod
    def ask(
        cls, server: Any, name: str, rdtype: str = "A", *, source: str = "127.0.0.1", tcp: bool = False, **options: Any
    ) -> Pending:
        """Like `RunningServer.ask`, without waiting for the reply."""
        return cls(server.host, server.port, make_query(name, rdtype, **options), source=source, tcp=tcp)

    def reply(self, timeout: float = 3.0) -> Reply:
        try:
            self.sock.settimeout(timeout)
            if self.tcp:
                (length,) = struct.unpack("!H", _recv_exact(self.sock, 2))
                return Reply.decode(_recv_exact(self.sock, length))
            return Reply.decode(self.sock.recv(65535))
        finally:
            self.sock.close()

    def nothing_yet(self, timeout: float = 0.2) -> bool:
        """True when no reply has come within `timeout` (a bound for what must not happen)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


class Dnsmasq:
    """A real dnsmasq serving a local zone on loopback (Debian package dnsmasq-base)."""

    def __init__(self, tmp: Path, port: int):
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.port = port
        self.log = tmp / "dnsmasq.log"
        self.proc = subprocess.Popen(
            [
                binary,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/dnsmasq.test/",
                "--local-ttl=300",
                "--user=root",
                "--pid-file=",
                "--host-record=www.dnsmasq.test,192.0.2.53,2001:db8::53",
                "--txt-record=txt.dnsmasq.test,served by dnsmasq",
                "--mx-host=dnsmasq.test,mx.dnsmasq.test,10",
                "--log-queries",
                f"--log-facility={self.log}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Block until dnsmasq answers (it binds after starting); its own probe name is `ready.dnsmasq.test`."""
        deadline = time.monotonic() + timeout
        query = make_query("ready.dnsmasq.test", "A").to_wire()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dnsmasq exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                try:
                    sock.sendto(query, ("127.0.0.1", self.port))
                    sock.recv(65535)
                    return
                except OSError:
                    continue
        raise AssertionError("dnsmasq did not answer")

    def wait_logged(self, name: str, count: int, timeout: float = 5.0) -> list[str]:
        """Block until dnsmasq has logged `count` queries for `name` (it writes its log as it goes)."""
        deadline = time.monotonic() + timeout
        while True:
            logged = [n for n in self.queries_logged() if n == name.lower()]
            if len(logged) >= count or time.monotonic() > deadline:
                return logged
            time.sleep(0.02)  # waiting on another process's log file, not on the server under test

    def queries_logged(self) -> list[str]:
        """The names dnsmasq logged as asked (`query[TYPE] name from ...`)."""
        if not self.log.exists():
            return []
        names = []
        for line in self.log.read_text().splitlines():
            words = line.split()
            for i, word in enumerate(words[:-1]):
                if word.startswith("query["):
                    names.append(words[i + 1].lower())
        return names

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
