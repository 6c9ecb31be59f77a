"""Upstreams on loopback for the forwarding tests: a scriptable DNS server, and a real dnsmasq.

`FakeUpstream` answers `example.test.` from a small table (NXDOMAIN with SOA below it, RRSIGs for
DO queries, a TXT too big for 512 bytes) in a thread of its own, records every query it receives
(transport, ID, source port, question as sent, flags, EDNS), and can be told to misbehave:
`silent`, `slow` (hold replies until `release()`), `wrong_id`, `wrong_question`, `truncate` (TC
over UDP, whole over TCP), `servfail`, `refused`.
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

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

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
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.mode = "answer"
        self.received: list[Received] = []
        self._held: list[tuple[socket.socket | None, bytes, object]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(16)
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
        """Send the replies held back in `slow` mode."""
        with self._lock:
            held, self._held = self._held, []
        for conn, reply, addr in held:
            self._send(conn, reply, addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.udp.close()
        self.tcp.close()

    # --- serving ------------------------------------------------------------------------------
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, "udp")
        sel.register(self.tcp, selectors.EVENT_READ, "accept")
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
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
                        continue
                    self._handle(data, conn, None, conn.getpeername()[1])
        sel.close()

    def _handle(self, data: bytes, conn: socket.socket | None, addr: object, source_port: int) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        q = query.question[0]
        with self._arrived:
            self.received.append(
                Received("tcp" if conn else "udp", query.id, source_port, q.name.to_text(), q.rdtype,
                         query.flags, query.edns, query.ednsflags & dns.flags.DO != 0, query.payload)
            )
            self._arrived.notify_all()
        reply = self._reply(query, tcp=conn is not None)
        if reply is None:
            return
        if self.mode == "slow":
            with self._lock:
                self._held.append((conn, reply, addr))
            return
        self._send(conn, reply, addr)

    def _send(self, conn: socket.socket | None, reply: bytes, addr: object) -> None:
        try:
            if conn is None:
                self.udp.sendto(reply, addr)
            else:
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass

    def _reply(self, query: dns.message.Message, tcp: bool) -> bytes | None:
        mode = self.mode
        if mode == "silent":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if mode in ("servfail", "refused"):
            response.set_rcode(dns.rcode.SERVFAIL if mode == "servfail" else dns.rcode.REFUSED)
            return response.to_wire()
        q = query.question[0]
        name = q.name.to_text().lower()
        do = query.ednsflags & dns.flags.DO != 0
        found = [(rt, v) for (n, rt), v in RECORDS.items() if n == name]
        wanted = [(rt, v) for rt, v in found if dns.rdatatype.from_text(rt) == q.rdtype]
        if wanted:
            rt, (ttl, values) = wanted[0]
            response.answer.append(dns.rrset.from_text(q.name, ttl, "IN", rt, *values))
            if do:
                response.answer.append(dns.rrset.from_text(q.name, ttl, "IN", "RRSIG", FAKE_RRSIG.format(type=rt, ttl=ttl)))
        elif name.endswith(ZONE) or name == ZONE:
            if not found and name != ZONE:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text(ZONE, 300, "IN", "SOA", SOA))
        else:
            response.set_rcode(dns.rcode.REFUSED)
        wire = response.to_wire()
        if mode == "truncate" and not tcp:
            response.answer = []
            response.authority = []
            response.flags |= dns.flags.TC
            wire = response.to_wire()
        if mode == "wrong_id":
            wire = struct.pack("!H", (query.id + 1) & 0xFFFF) + wire[2:]
        if mode == "wrong_question":
            other = dns.message.make_query("other.example.test.", q.rdtype)
            other.id = query.id
            wire = dns.message.make_response(other).to_wire()
        return wire


class Dnsmasq:
    """A real dnsmasq serving a local zone on loopback (Debian package dnsmasq-base)."""

    def __init__(self, tmp: Path, port: int):
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.port = port
        self.log = tmp / "dnsmasq.log"
        self.proc = subprocess.Popen(
            [
                binary, "--keep-in-foreground", "--conf-file=/dev/null", f"--port={port}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--local=/dnsmasq.test/", "--local-ttl=300", "--user=root", "--pid-file=",
                "--host-record=www.dnsmasq.test,192.0.2.53,2001:db8::53",
                "--txt-record=txt.dnsmasq.test,served by dnsmasq",
                "--mx-host=dnsmasq.test,mx.dnsmasq.test,10",
                "--log-queries", f"--log-facility={self.log}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

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
