"""Health check flips: a machine's check going critical and back, many times a second, through a
live store, while the server goes on answering.

The issue's requirement: "A check flipping is an incremental change: 1,000 flips a second across
a 100,000-machine registry are each served within the backend's propagation time without
stalling the reactor." Per backend (SQLite, etcd):

- the generated registry (`bench/generate.py`; ten machines per app, ten apps per network, at most
  1,000 networks) written into an empty store (`bench/stores.py`), and one internal-dns started
  on it, unpinned, waited for until it answers `<app>.internal` for an app of `net0000`;
- `--rate` flips a second for `--seconds`, written through the backend's Store the way
  `internal-dns registry put` writes (SQLite: one writer committing the flips due every 10 ms;
  etcd: a few threads, a transaction per flip). A flip puts one machine again with its check
  `http` set to `critical`, or back to `passing`. Only started machines are flipped, and of each
  app at most half of them, so that no app is ever all critical (SPEC §3: then every machine is
  answered, fail open);
- every `--sample-every`-th flip is of a machine of `net0000`, the view of the bench's address:
  from the moment its write returns, `<app>.internal` AAAA is asked every millisecond until the
  machine's address is gone (after critical) or back (after passing). Reported: the distribution
  of those times, how many flips were written a second, and the sampled flips never seen within
  5 s. The other flips go to machines of every other network (but the probe's);
- throughout, a probe (`bench/probe.py`, a process of its own) asks a cached name every 2 ms: an
  app's AAAA in a network no flip touches, asked from 127.0.0.2, which the config maps to that
  network. Its slowest answers and the slowest gap between two answers are what the flips stall
  the reactor by; the same probe in the second before the flips is the idle figure;
- then, on the same server and store, the backend's ordinary propagation figure
  (`bench/propagation.py`'s `measure`: a machine added, asked every millisecond until answered),
  printed beside the flips.

A store that does not keep a machine's checks (told by writing one and reading it back before the
server starts) is reported as such: its flips are written but change nothing that is served.

`python -m bench.health_flips` runs this alone (`make bench-flips`; 100,000 machines, 1,000 flips
a second for 10 s) and writes `bench/results/health-flips.json`; `make bench` runs it smaller
(`--flip-machines`) and puts it in `results.json` under `health_flips`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import queue
import random
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message

from bench import peers, propagation, registry_size, workloads
from bench.figures import OUT, RESULTS, run_header, save
from bench.generate import Size, network_document, network_name, region_codes
from bench.probe import Probe, probing
from bench.stores import open_store
from internal_dns.registry import plugins
from internal_dns.registry.etcd.store import MAX_TXN_OPS

RESULT = RESULTS / "health-flips.json"
BACKENDS = ("sqlite", "etcd")
MACHINES = 100_000
BENCH_MACHINES = 20_000  # in `make bench`, beside everything else: smaller, and shorter
BENCH_SECONDS = 5.0
MACHINES_PER_APP = 10
APPS_PER_NETWORK = 10
MOST_NETWORKS = 1_000
RATE = 1_000  # flips a second
SECONDS = 10.0
SAMPLE_EVERY = 20  # every 20th flip is of a machine of the view's network, and timed
BATCH = 0.010  # SQLite: the writer commits the flips due every 10 ms
ETCD_WRITERS = 4  # etcd: threads putting flips, a transaction each
CHANGES = 200  # machines added for the propagation figure
ASK_EVERY = 0.001  # seconds between two questions about a sampled flip
GIVE_UP = propagation.GIVE_UP  # seconds after which a sampled flip not seen counts as lost
IDLE = 1.0  # seconds the probe asks before the flips start: the idle figure
CHECK = "http"
PROBE_SOURCE = "127.0.0.2"  # the probe's address, mapped to a network no flip touches


def size_of(machines: int) -> Size:
    """Ten machines per app, ten apps per network up to 1,000 networks (100,000 machines: 10,000
    apps in 1,000 networks, as `bench/registry_size.py`); at least three networks (the view's,
    the probe's, and others)."""
    apps = max(3 * APPS_PER_NETWORK, machines // MACHINES_PER_APP)
    return Size(apps=apps, machines_per_app=MACHINES_PER_APP, networks=max(3, min(MOST_NETWORKS, apps // APPS_PER_NETWORK)))


# --- what is flipped ------------------------------------------------------------------------------


@dataclass(eq=False)
class Machine:
    data: dict[str, Any]  # as generated; a flip puts it again with its checks
    app: str
    packed: bytes  # its ip6, as it appears in an AAAA record
    critical: bool = False  # as last written
    pending: bool = False  # a sampled flip of it is being watched
    known: bool = True  # its served state is what was last written (its last sampled flip was seen)


@dataclass
class Registry:
    view: list[Machine]  # flippable machines of net0000, the view asked in
    others: list[Machine]  # flippable machines of every other network but the probe's
    probe_question: tuple[str, str, bytes]  # name, type, an address its answer holds
    probe_network: str


def flippable(size: Size) -> Registry:
    """Per app, the first half (by id) of its started machines; the probe's network's first app
    with a started machine is the probe's question."""
    regions = region_codes()
    quiet = size.networks - 1
    view: list[Machine] = []
    others: list[Machine] = []
    probe: tuple[str, str, bytes] | None = None
    for k in range(size.networks):
        doc = network_document(k, size, regions)
        started: dict[str, list[dict[str, Any]]] = {}
        for m in doc["machines"]:
            if m["state"] == "started":
                started.setdefault(m["app"], []).append(m)
        if k == quiet:
            app = min(started)
            probe = (f"{app}.internal", "AAAA", ipaddress.IPv6Address(started[app][0]["ip6"]).packed)
            continue
        for app, machines in started.items():
            chosen = sorted(machines, key=lambda m: m["id"])[: len(machines) // 2]
            (view if k == 0 else others).extend(Machine(m, app, ipaddress.IPv6Address(m["ip6"]).packed) for m in chosen)
    assert probe is not None
    return Registry(view, others, probe, network_name(quiet))


class Flips:
    """Which machine each flip is of, and what it sets (thread-safe)."""

    def __init__(self, registry: Registry, sample_every: int, seed: int = 1):
        self.registry = registry
        self.sample_every = sample_every
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.skipped = 0  # sampled turns that found no machine of the view to flip (all watched, or unknown)

    def take(self, i: int) -> tuple[Machine, dict[str, Any], bool]:
        """Flip i: (the machine, the data to put, whether it is sampled)."""
        with self.lock:
            machine: Machine | None = None
            if i % self.sample_every == 0:
                free = [m for m in self.registry.view if not m.pending and m.known]
                if free:
                    machine = self.rng.choice(free)
                    machine.pending = True
                else:
                    self.skipped += 1
            sampled = machine is not None
            if machine is None:
                machine = self.rng.choice(self.registry.others)
            machine.critical = not machine.critical
            status = "critical" if machine.critical else "passing"
            return machine, {**machine.data, "checks": {CHECK: status}}, sampled

    def done(self, machine: Machine, seen: bool) -> None:
        with self.lock:
            machine.pending = False
            machine.known = seen


# --- watching sampled flips -----------------------------------------------------------------------


@dataclass(eq=False)
class Watched:
    machine: Machine
    critical: bool
    written: float  # perf_counter when the write returned


class Watcher:
    """A thread asking `<app>.internal` AAAA every millisecond for each sampled flip until the
    answer shows it; one question per app a round, on one socket, replies told apart by ID."""

    def __init__(self, port: int, flips: Flips, give_up: float = GIVE_UP):
        self.flips = flips
        self.give_up = give_up
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.queries: dict[str, bytearray] = {}
        self.incoming: queue.SimpleQueue[Watched] = queue.SimpleQueue()
        self.seen: list[tuple[bool, float]] = []  # (to critical, seconds)
        self.lost = 0
        self.sampled = 0
        self.asked = 0
        self.asking = 0.0  # seconds with a flip watched
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def add(self, machine: Machine, critical: bool, written: float) -> None:
        self.incoming.put(Watched(machine, critical, written))

    def finish(self) -> None:
        """Wait until every sampled flip is seen or given up on."""
        self.stopping.set()
        self.thread.join()
        self.sock.close()

    def _query(self, app: str, qid: int) -> bytearray:
        wire = self.queries.get(app)
        if wire is None:
            wire = self.queries[app] = bytearray(
                dns.message.make_query(f"{app}.internal", "AAAA", use_edns=0, payload=1232).to_wire()
            )
        wire[0:2] = qid.to_bytes(2, "big")
        return wire

    def _run(self) -> None:
        waiting: list[Watched] = []
        asked: dict[int, tuple[str, float]] = {}  # ID -> (app, when sent)
        qid = random.randrange(0x10000)
        tick = time.perf_counter()
        while True:
            try:
                while True:
                    waiting.append(self.incoming.get_nowait())
                    self.sampled += 1
            except queue.Empty:
                pass
            if not waiting:
                if self.stopping.is_set():
                    return
                try:
                    waiting.append(self.incoming.get(timeout=0.05))
                    self.sampled += 1
                except queue.Empty:
                    continue
                tick = time.perf_counter()
            now = time.perf_counter()
            for w in [w for w in waiting if now - w.written > self.give_up]:
                waiting.remove(w)
                self.lost += 1
                self.flips.done(w.machine, seen=False)
            self.asking += ASK_EVERY
            for app in {w.machine.app for w in waiting}:
                self.asked += 1
                qid = (qid + 1) & 0xFFFF
                asked[qid] = (app, time.perf_counter())
                try:
                    self.sock.send(self._query(app, qid))
                except BlockingIOError:
                    pass
            tick += ASK_EVERY
            while True:  # the replies, until the next round is due
                left = tick - time.perf_counter()
                if left <= 0:
                    if left < -0.05:
                        tick = time.perf_counter()  # far behind: pace from now
                    break
                if not select.select([self.sock], [], [], left)[0]:
                    continue
                try:
                    reply = self.sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                received = time.perf_counter()
                entry = asked.pop(int.from_bytes(reply[:2], "big"), None)
                # NOERROR and not truncated: the answer is whole, so an address missing from it is gone
                if entry is None or len(reply) < 12 or reply[3] & 0x0F or reply[2] & 0x02:
                    continue
                app, sent = entry
                for w in [w for w in waiting if w.machine.app == app and sent >= w.written]:
                    if (w.machine.packed in reply) != w.critical:
                        waiting.remove(w)
                        self.seen.append((w.critical, received - w.written))
                        self.flips.done(w.machine, seen=True)

    def report(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "seen": len(self.seen),
            "lost": self.lost,
            "asked_per_second": round(self.asked / self.asking) if self.asking else 0,  # while a flip was watched
            "ms": propagation.distribution([s for _, s in self.seen]),
            "to_critical_ms": propagation.distribution([s for critical, s in self.seen if critical]),
            "to_passing_ms": propagation.distribution([s for critical, s in self.seen if not critical]),
        }


# --- writing flips --------------------------------------------------------------------------------


@dataclass
class Written:
    flips: int = 0
    failed: int = 0
    first: float = 0.0  # perf_counter of the first flip's due time
    last: float = 0.0  # perf_counter when the last write returned
    behind: float = 0.0  # the most a flip's write returned after it was due
    write_seconds: list[float] = field(default_factory=list)
    most_in_one: int = 0  # flips in the biggest write

    def report(self) -> dict[str, Any]:
        span = self.last - self.first
        writes = len(self.write_seconds)
        return {
            "flips": self.flips,
            "failed": self.failed,
            "per_second": round(self.flips / span, 1) if span > 0 else None,
            "writes": writes,
            "flips_per_write": round(self.flips / writes, 2) if writes else None,
            "most_flips_in_a_write": self.most_in_one,
            "write_ms": propagation.distribution(self.write_seconds),
            "most_behind_ms": round(self.behind * 1000, 1),
        }


def write_flips(
    open_one: Callable[[], plugins.Store],
    writers: int,
    tick: float,
    most: int,
    flips: Flips,
    watcher: Watcher,
    total: int,
    rate: float,
) -> Written:
    """`total` flips, flip i due `i / rate` seconds after the start, written by `writers` threads,
    each with a store of its own: a thread takes every flip due (at most `most`) and writes them
    in one Store.write, every `tick` seconds (SQLite: one writer committing every 10 ms), or as
    soon as one is due (tick 0; etcd: a few threads, one flip per transaction while they keep up,
    the flips due meanwhile in one transaction when they fall behind)."""
    out = Written()
    lock = threading.Lock()
    taken_up_to = 0
    stores = [open_one() for _ in range(writers)]  # a SQLite store connects on its first write, in its thread
    start = out.first = time.perf_counter() + 0.05

    def work(store: plugins.Store) -> None:
        try:
            write(store)
        finally:
            store.close()  # in the thread that used it (a SQLite connection is its thread's)

    def write(store: plugins.Store) -> None:
        nonlocal taken_up_to
        next_tick = start
        while True:
            if tick:
                next_tick += tick
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            with lock:
                first = taken_up_to
                if first >= total:
                    return
                due = min(total, first + most, int((time.perf_counter() - start) * rate) + 1)
                if due > first:
                    taken_up_to = due
                    taken = [flips.take(i) for i in range(first, due)]
            if due <= first:  # nothing due yet
                if not tick:
                    time.sleep(max(0.0, start + first / rate - time.perf_counter()))
                continue
            began = time.perf_counter()
            try:
                store.write([("machines", data, None) for _, data, _ in taken], [])
            except Exception as exc:  # a failed write loses its flips; the run goes on
                with lock:
                    out.failed += len(taken)
                    if out.failed == len(taken):
                        print(f"    a write of {len(taken)} flips failed: {exc}", flush=True)
                for machine, _, sampled in taken:
                    if sampled:
                        flips.done(machine, seen=False)
                continue
            written = time.perf_counter()
            with lock:
                out.write_seconds.append(written - began)
                out.flips += len(taken)
                out.most_in_one = max(out.most_in_one, len(taken))
                out.last = max(out.last, written)
                out.behind = max(out.behind, written - (start + first / rate))
            for machine, data, sampled in taken:
                if sampled:
                    watcher.add(machine, data["checks"][CHECK] == "critical", written)

    threads = [threading.Thread(target=work, args=(s,), name=f"writer-{n}", daemon=True) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# --- one backend ----------------------------------------------------------------------------------


def keeps_checks(store: plugins.Store, machine: Machine) -> bool:
    """Whether the store keeps a machine's checks: one machine written with a passing check and
    read back (the flips proper start from its state as written)."""
    machine_id = machine.data["id"]
    store.write([("machines", {**machine.data, "checks": {CHECK: "passing"}}, None)], [])
    for e in store.read():
        if e.kind == "machines" and isinstance(e.data, Mapping) and e.data.get("id") == machine_id:
            return bool(e.data.get("checks"))
    return False


def busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far (/proc/stat: all but idle and iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def backend_figures(
    out: Path, backend: str, size: Size, rate: float, seconds: float, sample_every: int, changes: int, writers: int
) -> dict[str, Any]:
    registry = flippable(size)
    question = registry_size.private_question(size)
    total = round(rate * seconds)
    report: dict[str, Any] = {}
    began = time.perf_counter()
    with registry_size.registry_of(out, backend, size) as (options, store):
        assert store is not None
        report["write_seconds"] = round(time.perf_counter() - began, 1)
        report["store_keeps_checks"] = keeps_checks(store, registry.view[0] if registry.view else registry.others[0])
        print(
            f"  {backend}: written in {report['write_seconds']} s"
            + (
                ""
                if report["store_keeps_checks"]
                else f"; NOTE: {store.describe()} keeps no checks, the flips change nothing served"
            )
            + "; starting internal-dns",
            flush=True,
        )
        views = [
            {"source": f"{PROBE_SOURCE}/32", "network": registry.probe_network},
            {"source": "127.0.0.0/8", "network": workloads.VIEW_NETWORK},
        ]
        started = time.perf_counter()
        server = peers.internal_dns(out, options, cpus=None, views=views)
        try:
            report["answer_seconds"] = round(registry_size.wait_answer(server, started, question), 2)
            server.wait_ready(registry_size.WAIT)
            print(f"  {backend}: answering after {report['answer_seconds']} s; {total:,} flips at {rate:,.0f}/s", flush=True)
            name, rdtype, address = registry.probe_question
            first = Probe(server.port, name, rdtype, source=PROBE_SOURCE)  # the view it is asked in, and cached from now
            try:
                if address not in first.ask()[0]:
                    raise RuntimeError(f"{name} asked from {PROBE_SOURCE} is not answered as in {registry.probe_network}")
            finally:
                first.close()
            flips = Flips(registry, sample_every)
            watcher = Watcher(server.port, flips)
            with probing(server.port, name, rdtype, source=PROBE_SOURCE) as samples:
                time.sleep(IDLE)
                cpu, ours, busy = server.cpu_seconds(), time.process_time(), busy_seconds()
                watcher.start()
                if backend == "sqlite":
                    written = write_flips(lambda: open_store(options), 1, BATCH, total, flips, watcher, total, rate)
                else:
                    written = write_flips(lambda: open_store(options), writers, 0.0, MAX_TXN_OPS, flips, watcher, total, rate)
                flipped = time.perf_counter()
                cpu, ours, busy = server.cpu_seconds() - cpu, time.process_time() - ours, busy_seconds() - busy
                watcher.finish()
            span = max(flipped - written.first, 1e-9)
            report["writes"] = written.report()
            report["cpu_percent"] = {  # while flipping, 100 a core
                "server": round(100 * cpu / span),
                "bench": round(100 * ours / span),  # the writers and the watcher (not the probe's process)
                "machine": round(100 * busy / span),  # every process, of os.cpu_count() cores
            }
            report["flips"] = {**watcher.report(), "skipped": flips.skipped}
            report["probe"] = {
                "question": f"{name} {rdtype} from {PROBE_SOURCE} ({registry.probe_network})",
                "idle": samples.summary(end=written.first),
                "flipping": samples.summary(start=written.first, end=flipped),
            }
            print(f"  {backend} flips: {describe_flips(report)}", flush=True)
            print(f"  {backend} probe: {describe_probe(report['probe'])}", flush=True)
            if changes:
                report["propagation"] = propagation.measure(store, [server], changes, propagation.APP)
                print(f"  {backend} propagation (a machine added), same server: {describe_ms(report['propagation'])}", flush=True)
        finally:
            server.stop(registry_size.STOP_WAIT)
    return report


def figures(
    out: Path,
    machines: int = MACHINES,
    backends: tuple[str, ...] | list[str] = BACKENDS,
    *,
    rate: float = RATE,
    seconds: float = SECONDS,
    sample_every: int = SAMPLE_EVERY,
    changes: int = CHANGES,
    writers: int = ETCD_WRITERS,
) -> dict[str, Any]:
    size = size_of(machines)
    print(f"  {size.describe()}; {rate:,.0f} flips/s for {seconds:g} s, every {sample_every}th timed in net0000", flush=True)
    report: dict[str, Any] = {
        "size": size.describe(),
        "machines": size.apps * size.machines_per_app,
        "networks": size.networks,
        "rate": rate,
        "seconds": seconds,
        "sample_every": sample_every,
        "etcd_writers": writers,
        "sqlite_batch_ms": BATCH * 1000,
    }
    switching = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the watcher's replies are not kept waiting behind a writer thread for 5 ms
    try:
        report["backends"] = {b: backend_figures(out, b, size, rate, seconds, sample_every, changes, writers) for b in backends}
    finally:
        sys.setswitchinterval(switching)
    return report


# --- the report -----------------------------------------------------------------------------------


def describe_ms(r: dict[str, Any]) -> str:
    ms = r.get("ms") or {}
    if not ms:
        return f"never seen (lost {r.get('lost', 0)})"
    return f"p50 {ms['p50']} ms, p90 {ms['p90']} ms, p99 {ms['p99']} ms, max {ms['max']} ms; lost {r.get('lost', 0)}"


def describe_flips(r: dict[str, Any]) -> str:
    w, f, c = r["writes"], r["flips"], r["cpu_percent"]
    return (
        f"{w['flips']:,} written ({w['per_second']}/s in {w['writes']:,} writes of {w['flips_per_write']} on average,"
        f" {w['failed']} failed, at most {w['most_behind_ms']} ms behind); {f['seen']} of {f['sampled']} sampled seen"
        f" ({f['asked_per_second']} questions/s): {describe_ms(f)}; CPU while flipping: server {c['server']}%,"
        f" bench {c['bench']}%, machine {c['machine']}% of {os.cpu_count()} cores"
    )


def describe_probe(p: dict[str, Any]) -> str:
    def one(s: dict[str, Any]) -> str:
        ms = s["ms"]
        return (
            f"p50 {ms['p50']} ms, p99 {ms['p99']} ms, max {ms['max']} ms, slowest gap {s['slowest_gap_ms']} ms, lost {s['lost']}"
        )

    return f"idle {one(p['idle'])}; flipping {one(p['flipping'])}"


def table(report: dict[str, Any]) -> str:
    def cells(ms: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
        if not ms:
            return f"{'never seen':>{9 * len(keys)}}"
        return "".join(f"{'-' if ms.get(k) is None else ms[k]:>9}" for k in keys)

    lines = [
        f"\nhealth check flips: {report['size']}; {report['rate']:,.0f} flips/s for {report['seconds']:g} s",
        f"  {'backend':<8}{'what':<40}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>7}  notes",
    ]
    for backend, r in report["backends"].items():
        w, f = r["writes"], r["flips"]
        note = f"{w['per_second']} flips/s written, {w['flips_per_write']} a write, {w['failed']} failed"
        if not r["store_keeps_checks"]:
            note += "; the store keeps no checks"
        seen = f"a flip seen ({f['seen']} of {f['sampled']} sampled)"
        lines.append(f"  {backend:<8}{seen:<40}" + cells(f["ms"], ("p50", "p90", "p99", "max")) + f"{f['lost']:>7}  {note}")
        if "propagation" in r:
            p = r["propagation"]
            lines.append(
                f"  {'':<8}{'a machine added (propagation)':<40}"
                + cells(p["ms"], ("p50", "p90", "p99", "max"))
                + f"{p['lost']:>7}"
            )
        for phase in ("idle", "flipping"):
            s = r["probe"][phase]
            lines.append(
                f"  {'':<8}{'probe every 2 ms, ' + phase:<40}"
                + cells({**s["ms"], "p90": None}, ("p50", "p90", "p99", "max"))
                + f"{s['lost']:>7}  slowest gap {s['slowest_gap_ms']} ms"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=MACHINES, help="machines (ten per app, ten apps per network)")
    parser.add_argument("--rate", type=float, default=RATE, help="flips a second")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="seconds of flipping")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite, etcd or both, comma-separated")
    parser.add_argument("--sample-every", type=int, default=SAMPLE_EVERY, help="every Nth flip is timed (of net0000)")
    parser.add_argument("--etcd-writers", type=int, default=ETCD_WRITERS, help="threads putting flips into etcd")
    parser.add_argument("--changes", type=int, default=CHANGES, help="machines added for the propagation figure (0: skip)")
    parser.add_argument("--out", type=Path, default=OUT, help="working folder (stores, configs, logs)")
    parser.add_argument("--json", type=Path, default=RESULT, help="where the figures go")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend {sorted(unknown)[0]!r} (known: {', '.join(BACKENDS)})")
    if args.rate <= 0 or args.seconds <= 0 or args.sample_every < 1 or args.etcd_writers < 1:
        parser.error("--rate and --seconds must be above 0, --sample-every and --etcd-writers at least 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print("health check flips:", flush=True)
    report = {
        **run_header(),
        **figures(
            out,
            args.machines,
            backends,
            rate=args.rate,
            seconds=args.seconds,
            sample_every=args.sample_every,
            changes=args.changes,
            writers=args.etcd_writers,
        ),
    }
    print(table(report))
    save(args.json, report)


if __name__ == "__main__":
    main()
