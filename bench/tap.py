"""`make bench-tap`: where a latency at half load is spent, the server's side or dnsperf's.

dnsperf times a query from its send to its receive, so its figure holds its own waits too: on
its core, which at half load on a 2-core VM is near full. A capture on the loopback device sees
each query as dnsperf sends it and each reply as the server sends it (both stamped by the kernel
as the packet passes the device), so the time between the two is the server's whole share:
waiting in its socket and being answered. Per server, alternately, workload (a) at a fixed rate:
dnsperf's percentiles, the capture's, the pauses in the replies (a millisecond or more without a
reply while a query waited), and what else had the server's core (bench/interference.py).

Needs tcpdump (a Debian package of `make system-deps`) and the right to capture (root).
"""

from __future__ import annotations

import argparse
import getpass
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import dnsperf, interference, peers
from bench.figures import OUT, RESULTS, run_header, save
from bench.generate import Size
from bench.workloads import Files, prepare

PAUSE = 0.001  # seconds without a reply, a query waiting, that count as a pause
GIVEN_UP = 2.0  # seconds after which dnsperf gives a query up (its -t): no longer waiting
RING_TIMEOUT = 1.0  # seconds: tcpdump's read timeout, after which the kernel hands over a part-filled block
SNAPLEN = 64  # enough for the link, IPv4 and UDP headers and the DNS ID
_NANO_MAGIC, _MICRO_MAGIC = 0xA1B23C4D, 0xA1B2C3D4
_RECORD = struct.Struct("<IIII")  # seconds, fraction, captured length, length on the wire
_LINK = {1: 14, 113: 16}  # bytes before the IP header: Ethernet (Linux's lo), Linux cooked (-i any)


@dataclass
class Capture:
    """What a capture shows of one server port's queries and replies."""

    latencies: list[float] = field(default_factory=list)  # seconds, query seen → reply seen
    pauses: list[float] = field(default_factory=list)  # seconds without a reply, a query waiting
    unanswered: int = 0  # queries seen with no reply seen

    def summary(self) -> dict[str, Any]:
        return {
            "answered": len(self.latencies),
            "unanswered": self.unanswered,
            "percentiles_ms": dnsperf.percentiles(self.latencies),
            "pauses": len(self.pauses),
            "paused_ms": round(sum(self.pauses) * 1000, 1),
            "longest_pause_ms": round(max(self.pauses, default=0.0) * 1000, 2),
        }


def read_pcap(data: bytes, port: int, pause: float = PAUSE) -> Capture:
    """Pair each UDP/IPv4 query to `port` with the reply to it (by client port and DNS ID: a
    client can use an ID again only once it has its answer), in a pcap file's bytes."""
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    if magic not in (_NANO_MAGIC, _MICRO_MAGIC):
        raise ValueError(f"not a little-endian pcap file (magic {magic:#x})")
    scale = 1e-9 if magic == _NANO_MAGIC else 1e-6
    ip = _LINK.get(linktype)
    if ip is None:
        raise ValueError(f"link type {linktype} is not one this reads")
    found = Capture()
    waiting: dict[tuple[int, bytes], float] = {}  # in the order they came: the first is the oldest
    last_reply: float | None = None
    offset = 24
    while offset + _RECORD.size <= len(data):
        seconds, fraction, length, _ = _RECORD.unpack_from(data, offset)
        packet = data[offset + _RECORD.size : offset + _RECORD.size + length]
        offset += _RECORD.size + length
        udp = ip + (packet[ip] & 0x0F) * 4 if len(packet) > ip else 0
        if len(packet) < udp + 10 or packet[ip] >> 4 != 4 or packet[ip + 9] != 17:
            continue  # not UDP over IPv4, or cut short
        at = seconds + fraction * scale
        source, destination = struct.unpack_from("!HH", packet, udp)
        ident = packet[udp + 8 : udp + 10]
        if destination == port:
            waiting[(source, ident)] = at
        elif source == port:
            while waiting:  # queries dnsperf has given up on wait no more
                oldest, asked = next(iter(waiting.items()))
                if at - asked < GIVEN_UP:
                    break
                del waiting[oldest]
                found.unanswered += 1
            # A pause: nothing sent for `pause` or more while a query waited (the oldest one, since
            # the later of its arrival and the last reply).
            if waiting and last_reply is not None:
                idle = at - max(last_reply, next(iter(waiting.values())))
                if idle >= pause:
                    found.pauses.append(idle)
            last_reply = at
            if (destination, ident) in waiting:
                found.latencies.append(at - waiting.pop((destination, ident)))
    found.unanswered += len(waiting)
    return found


@contextmanager
def capturing(port: int, cpus: str | None = dnsperf.LOAD_CPU) -> Iterator[Capture]:
    """tcpdump on the loopback device for UDP to and from `port` while the block runs (on the
    load generator's core: the server's is the one measured); what it saw, filled in when the
    block is done."""
    if shutil.which("tcpdump") is None:
        raise RuntimeError("tcpdump is not installed (make system-deps installs it)")
    with tempfile.TemporaryDirectory(prefix="bench-tap-") as folder:
        path = Path(folder) / "tap.pcap"
        # -Z: write the file as this user (tcpdump would drop to its own, who may not write here).
        # -U: each packet written as it comes out of the kernel's ring, so that the file's growth
        # shows when the last ones are in (_settled).
        command = [*dnsperf.taskset(cpus), "tcpdump", "-i", "lo", "-n", "-U", "-Z", getpass.getuser()]
        command += ["-s", str(SNAPLEN), "-B", "65536"]
        command += ["--time-stamp-precision=nano", "-w", str(path), f"udp port {port}"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found = Capture()
        try:
            _wait_listening(process)
            yield found
            _settled(path)
        finally:
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=30)
        dropped = [line for line in errors.splitlines() if "dropped by kernel" in line]
        if dropped and not dropped[0].startswith("0 "):
            print(f"  tcpdump: {dropped[0]}", flush=True)
        vars(found).update(vars(read_pcap(path.read_bytes(), port)))


def _wait_listening(process: subprocess.Popen[str]) -> None:
    """Until tcpdump says it captures (its first line), or why it does not."""
    assert process.stderr is not None
    line = process.stderr.readline()
    if "listening on" not in line:
        process.wait(10)
        raise RuntimeError(f"tcpdump did not start: {line.strip()} {process.stderr.read().strip()}")


def _settled(path: Path, still: float = RING_TIMEOUT + 0.5, timeout: float = 30.0) -> None:
    """Until the capture file has not grown for `still` seconds: the kernel hands a part-filled
    block of its ring over only when its timeout is up, and tcpdump stopped before would lose it."""
    deadline, size, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        time.sleep(0.1)


def server_share(out: Path, files: Files, qps: int, seconds: float, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """internal-dns and dnsmasq, `rounds` times, each round in the other order than the last:
    dnsperf's percentiles beside the capture's."""
    starts: dict[str, Callable[[], peers.Server]] = {
        "internal-dns": lambda: peers.internal_dns(out, files.registry),
        "dnsmasq": lambda: peers.dnsmasq_authoritative(out, files.dnsmasq_hosts, files.dnsmasq_records),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in starts}
    for n in range(rounds):
        for name in list(starts) if n % 2 == 0 else list(starts)[::-1]:
            with peers.running(starts[name]()) as server:
                dnsperf.run(server.port, files.queries["a"], seconds=2.0, max_qps=qps)  # warm: every question rendered once
                with capturing(server.port) as captured, interference.watching(server.pid) as machine:
                    seen = dnsperf.run(server.port, files.queries["a"], seconds=seconds, max_qps=qps, verbose=True)
                tap = captured.summary()
            print(f"  {name:<13}{describe(seen, tap, machine)}", flush=True)
            runs[name].append({"dnsperf": seen.as_dict(), "tap": tap, "interference": machine.as_dict()})
    return runs


def describe(seen: dnsperf.Result, tap: dict[str, Any], machine: interference.Interference) -> str:
    mine, theirs = seen.percentiles_ms, tap["percentiles_ms"]
    return (
        f"dnsperf p99 {mine['p99']:.3f} / p99.9 {mine['p99.9']:.3f} ms; at the server p99 {theirs['p99']:.3f} / "
        f"p99.9 {theirs['p99.9']:.3f} ms; {tap['pauses']} pauses of {PAUSE * 1000:g} ms or more "
        f"({tap['paused_ms']:.0f} ms, longest {tap['longest_pause_ms']:.1f})\n"
        f"  {'':<13}{machine.describe()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qps", type=int, default=60_000, help="the fixed rate (half load on the 2-core VM of docs/speed.md)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--json", type=Path, default=RESULTS / "tap.json")
    args = parser.parse_args()
    files = prepare(args.out, Size())
    print(f"workload (a) at {args.qps:,} qps, {args.rounds} rounds, seen by dnsperf and on the loopback device:", flush=True)
    runs = server_share(args.out, files, args.qps, args.seconds, args.rounds)
    save(args.json, {**run_header(), "qps": args.qps, "seconds": args.seconds, "runs": runs})


if __name__ == "__main__":
    main()
