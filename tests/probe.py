"""A client asking steadily until told to stop, for the upgrade tests: every query must be answered.

    python -m tests.probe --server ADDRESS [--port 53] [--source ADDRESS] [--rate 500] RESULT.json

Each query goes out over UDP from a socket of its own (a new source port: a new flow, so that the
kernel spreads them over every socket of an SO_REUSEPORT group); every tenth goes over TCP on a
fresh connection, as a stub resolver retrying a truncated answer does; every tenth of the UDP ones
is a name the server forwards. On SIGTERM it stops sending, waits for what is outstanding (at most
`TIMEOUT` seconds) and writes: sent, answered, lost (no reply in time), rcodes, and queries whose
reply was not what it should be.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode

TIMEOUT = 3.0
ASKED = ("my-app.internal", "AAAA")  # personal's app: three started machines
FORWARDED = "upstream.test"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--source")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("result", type=Path)
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    result = probe(args.server, args.port, args.source, args.rate, stop)
    args.result.write_text(json.dumps(result, indent=2) + "\n")


def probe(server: str, port: int, source: str | None, rate: float, stop: list[bool]) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    poller = select.epoll()
    pending: dict[int, tuple[socket.socket, str, float, bytes]] = {}  # fd → (socket, kind, sent at, partial TCP reply)
    counts = {"sent": 0, "answered": 0, "lost": 0, "wrong": 0}
    rcodes: dict[str, int] = {}
    wrong: list[str] = []
    rng = random.Random(1)
    n = 0
    interval = 1.0 / rate
    next_at = time.monotonic()

    def finish(fd: int, data: bytes | None) -> None:
        sock, kind, _, _ = pending.pop(fd)
        poller.unregister(fd)
        sock.close()
        if data is None:
            counts["lost"] += 1
            return
        counts["answered"] += 1
        reply = dns.message.from_wire(data)
        rcode = dns.rcode.to_text(reply.rcode())
        rcodes[rcode] = rcodes.get(rcode, 0) + 1
        good = (
            rcode == "NXDOMAIN"
            if kind == "forwarded"
            else rcode == "NOERROR" and len(reply.answer) == 1 and len(reply.answer[0]) == 3
        )
        if not good:
            counts["wrong"] += 1
            if len(wrong) < 20:
                wrong.append(f"{kind}: {rcode} {reply.answer}")

    def send() -> None:
        nonlocal n
        n += 1
        if n % 10 == 0:
            kind, name, rdtype = "tcp", *ASKED
        elif n % 10 == 5:
            kind, name, rdtype = "forwarded", f"r{rng.getrandbits(40):x}.{FORWARDED}", "A"
        else:
            kind, name, rdtype = "udp", *ASKED
        wire = dns.message.make_query(name, rdtype).to_wire()
        sock = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
        if source is not None:
            sock.bind((source, 0))
        try:
            if kind == "tcp":  # on loopback a connection is made at once, or refused
                sock.settimeout(TIMEOUT)
                sock.connect((server, port))
                sock.sendall(struct.pack("!H", len(wire)) + wire)
            else:
                sock.sendto(wire, (server, port))
            sock.setblocking(False)
        except OSError:
            counts["sent"] += 1
            counts["lost"] += 1
            sock.close()
            return
        counts["sent"] += 1
        pending[sock.fileno()] = (sock, kind, time.monotonic(), b"")
        poller.register(sock.fileno(), select.EPOLLIN)

    def receive(wait: float) -> None:
        for fd, _ in poller.poll(wait):
            sock, kind, at, partial = pending[fd]
            try:
                chunk = sock.recv(65535)
            except OSError:
                finish(fd, None)
                continue
            if kind != "tcp":
                finish(fd, chunk)
                continue
            if not chunk:
                finish(fd, None)
                continue
            partial += chunk
            if len(partial) >= 2 and len(partial) >= 2 + struct.unpack_from("!H", partial)[0]:
                finish(fd, partial[2 : 2 + struct.unpack_from("!H", partial)[0]])
            else:
                pending[fd] = (sock, kind, at, partial)

    def expire(now: float) -> None:
        for fd in [fd for fd, (_, _, at, _) in pending.items() if now - at > TIMEOUT]:
            finish(fd, None)

    while not stop:
        now = time.monotonic()
        while next_at <= now:
            send()
            next_at += interval
        receive(max(0.0, next_at - time.monotonic()))
        expire(time.monotonic())
    deadline = time.monotonic() + TIMEOUT + 0.5
    while pending and time.monotonic() < deadline:
        receive(0.05)
        expire(time.monotonic())
    expire(float("inf"))
    return {**counts, "rcodes": rcodes, "wrong_examples": wrong}


if __name__ == "__main__":
    sys.exit(main())
