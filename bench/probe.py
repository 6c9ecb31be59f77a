"""A probe of a server's reactor: one UDP socket asking one question again and again, every 2 ms,
timing each answer. A server whose reactor is held up (a change applied on it, a collector pause,
the interpreter lock held by a thread) answers the probe late: its slowest answer, and the
slowest gap between two answers, say how long the reactor stalled at most.

`Probe.ask` asks once (`bench/registry_size.py`'s network and region changes ask the SOA of
`internal` between their own steps); `probing` asks throughout a `with` block from a process of
its own, so that the bench's own threads (writers, watchers) holding its interpreter lock cannot
delay the probe and be counted against the server.
"""

from __future__ import annotations

import multiprocessing
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import dns.message

PROBE_EVERY = 0.002  # seconds between two probe questions
TIMEOUT = 1.0  # seconds after which a probe question counts as lost


class Probe:
    """A question asked of a server on 127.0.0.1 from `source`, from a socket of its own."""

    def __init__(self, port: int, name: str, rdtype: str, *, source: str = "127.0.0.1", timeout: float = TIMEOUT):
        self.wire = bytearray(dns.message.make_query(name, rdtype).to_wire())
        self.id = random.randrange(0x10000)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(timeout)

    def ask(self) -> tuple[bytes, float]:
        """The question once, under a new ID: (its reply, seconds it took). TimeoutError when no
        reply comes within the timeout; replies to earlier questions are skipped."""
        self.id = (self.id + 1) & 0xFFFF
        self.wire[0:2] = self.id.to_bytes(2, "big")
        sent = time.perf_counter()
        self.sock.send(self.wire)
        while True:
            reply = self.sock.recv(65535)
            if reply[:2] == self.wire[:2]:
                return reply, time.perf_counter() - sent

    def close(self) -> None:
        self.sock.close()


@dataclass
class Samples:
    """What a probe saw: per question, when it was sent (perf_counter, the same clock in every
    process of the machine) and the seconds its answer took, None for a lost one."""

    sent: list[float] = field(default_factory=list)
    took: list[float | None] = field(default_factory=list)

    def summary(self, start: float = float("-inf"), end: float = float("inf")) -> dict[str, Any]:
        """Answers of the questions sent within [start, end): percentiles and maximum in ms, the
        slowest gap between two answers, and the questions lost."""
        took = [t for s, t in zip(self.sent, self.took, strict=True) if start <= s < end]
        answered = [t for t in took if t is not None]
        gap = 0.0
        last: float | None = None
        for s, t in zip(self.sent, self.took, strict=True):
            if start <= s < end and t is not None:
                if last is not None:
                    gap = max(gap, s + t - last)
                last = s + t
        ordered = sorted(answered)

        def at(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 2) if ordered else None

        return {
            "asked": len(took),
            "lost": len(took) - len(answered),
            "ms": {"p50": at(50), "p99": at(99), "max": round(ordered[-1] * 1000, 2) if ordered else None},
            "slowest_gap_ms": round(gap * 1000, 2),
        }


def _ask_until_told(port: int, name: str, rdtype: str, source: str, every: float, conn: Connection) -> None:
    """The probe process: ask every `every` seconds until a message comes on `conn`, then send back
    the samples."""
    probe = Probe(port, name, rdtype, source=source)
    samples = Samples()
    conn.send("asking")
    next_at = time.perf_counter()
    while not conn.poll():
        sent = time.perf_counter()
        try:
            _, took = probe.ask()
        except TimeoutError:
            samples.sent.append(sent)
            samples.took.append(None)
        else:
            samples.sent.append(sent)
            samples.took.append(took)
        next_at += every
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.perf_counter()  # behind (a slow answer): ask at once, and pace from now
    probe.close()
    conn.send(samples)


@contextmanager
def probing(port: int, name: str, rdtype: str, *, source: str = "127.0.0.1", every: float = PROBE_EVERY) -> Iterator[Samples]:
    """Ask `name` every `every` seconds from a process of its own for the length of the block;
    the Samples yielded are filled in when the block ends."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    ours, theirs = context.Pipe()
    process = context.Process(target=_ask_until_told, args=(port, name, rdtype, source, every, theirs), daemon=True)
    process.start()
    samples = Samples()
    try:
        if not ours.poll(30) or ours.recv() != "asking":
            raise RuntimeError("the probe process did not start")
        yield samples
    finally:
        ours.send("stop")
        if ours.poll(10 + TIMEOUT):
            got: Samples = ours.recv()
            samples.sent, samples.took = got.sent, got.took
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
