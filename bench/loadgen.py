"""A paced, mixed UDP load from several source addresses, timing every reply (for the soak).

dnsperf sends from one address and reports one latency distribution for everything; the soak needs
several sources (several views), a mix of kinds (internal names, random unknown names, forwarded
names, garbage) and percentiles per kind. This runs as a process of its own, pinned to the load
core, with Python's collector off so that its own pauses do not count against the server:

    python -m bench.loadgen PLAN.json RESULT.json

The plan: {"port", "qps", "seconds", "seed", "mix": {kind: share}, "sources": {address:
{kind: [[name, type], ...]}}}. Kinds `nxdomain` and `forwarded_random` take a name template with
`{}` for a random label; `garbage` needs no names. Queries go out at an even pace, round-robin
over the sources; a reply is matched to its query by source and ID, and a query unanswered
after `timeout` seconds is lost. The result: per kind, sent, answered, lost, the rcodes, and the
latency percentiles and maximum in milliseconds.
"""

from __future__ import annotations

import gc
import json
import random
import select
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode

GARBAGE = "garbage"
TIMEOUT = 2.0
PERCENTILES = (50.0, 99.0, 99.9)


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def summary(latencies: list[float], sent: int, lost: int, rcodes: dict[str, int]) -> dict[str, Any]:
    ordered = sorted(latencies)
    out: dict[str, Any] = {"sent": sent, "answered": len(ordered), "lost": lost, "rcodes": rcodes}
    for p in PERCENTILES:
        out[f"p{p:g}_ms"] = round(percentile(ordered, p) * 1000, 3)
    out["max_ms"] = round(ordered[-1] * 1000, 3) if ordered else float("nan")
    return out


class Source:
    def __init__(self, address: str, port: int, questions: dict[str, list[list[str]]]):
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((address, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.questions = questions
        self.next_id = 0
        self.wires: dict[tuple[str, str], bytes] = {}  # queries of fixed names, built once

    def query(self, kind: str, rng: random.Random) -> tuple[int, bytes]:
        qid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFF
        if kind == GARBAGE:
            return qid, garbage(qid, rng)
        name, rdtype = rng.choice(self.questions[kind])
        wire: bytes | None
        if "{}" in name:
            wire = dns.message.make_query(name.format(f"{rng.getrandbits(48):012x}"), rdtype).to_wire()
        else:
            wire = self.wires.get((name, rdtype))
            if wire is None:
                wire = self.wires[(name, rdtype)] = dns.message.make_query(name, rdtype).to_wire()
        return qid, struct.pack("!H", qid) + wire[2:]


def garbage(qid: int, rng: random.Random) -> bytes:
    """Bytes that are no proper query: random lengths and contents behind a real ID, headers with
    impossible counts, names running past the end, and a few replies (QR set)."""
    shape = rng.randrange(4)
    if shape == 0:
        body = rng.randbytes(rng.randrange(0, 120))
    elif shape == 1:  # a header claiming records that are not there
        body = struct.pack("!HHHHH", 0x0100, rng.randrange(2, 9), rng.randrange(0, 5), 0, rng.randrange(0, 3)) + rng.randbytes(
            rng.randrange(0, 40)
        )
    elif shape == 2:  # a name that runs past the end of the packet
        body = struct.pack("!HHHHH", 0x0100, 1, 0, 0, 0) + bytes([63]) + rng.randbytes(20)
    else:  # a reply, which gets no reply
        body = struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + rng.randbytes(rng.randrange(0, 30))
    return struct.pack("!H", qid) + body


def run(plan: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(plan.get("seed", 1))
    busy = plan.get("busy_poll", True)
    port, qps, seconds = plan["port"], float(plan["qps"]), float(plan["seconds"])
    sources = [Source(address, port, questions) for address, questions in plan["sources"].items()]
    by_fd = {s.sock.fileno(): (i, s) for i, s in enumerate(sources)}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    kinds = list(plan["mix"])
    weights = [plan["mix"][k] for k in kinds]
    # A long precomputed sequence of kinds keeps the sending loop cheap and the shares exact.
    sequence = rng.choices(kinds, weights, k=100_000)

    pending: dict[tuple[int, int], tuple[str, float]] = {}
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    sent = dict.fromkeys(kinds, 0)
    lost = dict.fromkeys(kinds, 0)
    rcodes: dict[str, dict[str, int]] = {k: {} for k in kinds}
    interval = 1.0 / qps
    started = time.perf_counter()
    end = started + seconds
    next_send = started
    n = 0
    last_sweep = started

    def receive(now_limit: float) -> None:
        # Polled without blocking: a generator asleep in epoll_wait would add its own wake-up
        # (tens to hundreds of microseconds on a virtual machine) to every latency it measures.
        for fd, _ in poller.poll(0 if busy else max(0.0, now_limit - time.perf_counter())):
            i, source = by_fd[fd]
            while True:
                try:
                    data = source.sock.recv(65535)
                except BlockingIOError:
                    break
                arrived = time.perf_counter()
                if len(data) < 4:
                    continue
                found = pending.pop((i, struct.unpack_from("!H", data)[0]), None)
                if found is None:
                    continue  # late: already counted lost
                kind, at = found
                latencies[kind].append(arrived - at)
                name = dns.rcode.Rcode.to_text(data[3] & 0xF)  # what dns.rcode.to_text does, for any int
                rcodes[kind][name] = rcodes[kind].get(name, 0) + 1

    def sweep(now: float) -> None:
        for key, (kind, at) in list(pending.items()):
            if now - at > TIMEOUT:
                del pending[key]
                if kind != GARBAGE:  # garbage is often rightly unanswered
                    lost[kind] += 1

    while True:
        now = time.perf_counter()
        if now >= end:
            break
        while next_send <= now:
            i = n % len(sources)
            source = sources[i]
            kind = sequence[n % len(sequence)]
            qid, wire = source.query(kind, rng)
            pending[(i, qid)] = (kind, time.perf_counter())
            try:
                source.sock.send(wire)
            except OSError:
                pass  # counted lost by the sweep
            sent[kind] += 1
            n += 1
            next_send += interval
        if now - last_sweep > 0.5:
            sweep(now)
            last_sweep = now
        receive(next_send)
    drain_until = time.perf_counter() + TIMEOUT
    while pending and time.perf_counter() < drain_until:
        receive(min(drain_until, time.perf_counter() + 0.05))
    sweep(float("inf"))
    elapsed = time.perf_counter() - started
    return {
        "seconds": round(elapsed, 1),
        "qps": round(n / seconds, 1),
        "kinds": {k: summary(latencies[k], sent[k], lost[k], rcodes[k]) for k in kinds},
    }


def main() -> None:
    gc.disable()  # the generator's own pauses would be counted as the server's latency
    plan = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(run(plan), indent=2) + "\n")


if __name__ == "__main__":
    main()
