"""Throughput and latency while the registry changes under the load.

Each change to a machine gives its network a new index, and the packet cache drops what it had
rendered for that network: the next answers are rendered again. Per live store (SQLite, etcd):
the benchmark's registry written into an empty store, one internal-dns on it (pinned to its core,
dnsperf on the other), then workload (a) — every question in the view of `net0000` — at full
speed and at half that rate, first quiet, then while a writer changes `--rate` machines a second
of `net0000` itself (a metadata value, a put like `internal-dns registry put`): throughput beside
the quiet figure, and the latency at half load.

On this one machine the store and the writer share the two cores with the server and dnsperf:
an etcd, and the control plane writing to it, would run on other hosts. So etcd is measured a
second time as `etcd-idle`: etcd and the writer at the idle scheduling class, running only on
time the cores have left over, as if elsewhere (SQLite's writer is on the server's host by
nature, and stays as it is).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench import dnsperf, interference, peers
from bench.figures import OUT, RESULTS, run_header, save
from bench.generate import Size, network_document, region_codes
from bench.stores import fill_generated, open_store, store_options
from bench.workloads import prepare

BACKENDS = ("sqlite", "etcd", "etcd-idle")
IDLE = "-idle"  # a backend measured with its store and writer at the idle scheduling class
RATE = 10.0  # changes a second


def _changing(
    options: dict[str, Any],
    machines: list[dict[str, Any]],
    rate: float,
    stop: threading.Event,
    written: list[float],
    idle: bool = False,
) -> None:
    """Put a machine of the asked network again with a new metadata value, `rate` times a second,
    through a store of this thread's own (an SQLite connection stays in its thread); `idle`: this
    thread at the idle scheduling class."""
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread, on Linux
    store = open_store(options)
    try:
        started = time.perf_counter()
        for n in itertools.count():
            due = started + n / rate
            if stop.wait(max(0.0, due - time.perf_counter())):
                return
            machine = machines[n % len(machines)]
            store.write([("machines", {**machine, "metadata": {"role": f"turn-{n}"}}, None)], [])
            written.append(time.perf_counter())
    finally:
        store.close()


def backend_figures(out: Path, files: Any, backend: str, seconds: float, rate: float) -> dict[str, Any]:
    size = Size()
    machines = network_document(0, size, region_codes())["machines"]
    idle = backend.endswith(IDLE)
    with store_options(out, backend.removesuffix(IDLE), idle=idle) as options:
        store = open_store(options)
        try:
            fill_generated(store, size)
            with peers.running(peers.internal_dns(out, options)) as server:
                queries = files.queries["a"]
                dnsperf.run(server.port, queries, seconds=2)  # warm: every question rendered once
                quiet = dnsperf.run(server.port, queries, seconds=seconds)
                half = int(quiet.qps / 2)
                with interference.watching(server.pid) as quiet_machine:
                    quiet_half = dnsperf.run(server.port, queries, seconds=seconds, max_qps=half, verbose=True)
                stop, written = threading.Event(), list[float]()
                writer = threading.Thread(target=_changing, args=(options, machines, rate, stop, written, idle), daemon=True)
                writer.start()
                try:
                    churn = dnsperf.run(server.port, queries, seconds=seconds)
                    with interference.watching(server.pid) as churn_machine:
                        churn_half = dnsperf.run(server.port, queries, seconds=seconds, max_qps=half, verbose=True)
                finally:
                    stop.set()
                    writer.join()
        finally:
            store.close()
    span = (written[-1] - written[0]) if len(written) > 1 else 0.0
    report = {
        "quiet_qps": round(quiet.qps),
        "churn_qps": round(churn.qps),
        "ratio": round(churn.qps / quiet.qps, 3) if quiet.qps else None,
        "half_load_qps": half,
        "quiet_half_ms": quiet_half.percentiles_ms,
        "churn_half_ms": churn_half.percentiles_ms,
        "quiet_half_interference": quiet_machine.as_dict(),
        "churn_half_interference": churn_machine.as_dict(),
        "changes_written": len(written),
        "changes_per_second": round((len(written) - 1) / span, 1) if span else None,
    }
    print(
        f"  {backend}: quiet {quiet.qps:,.0f} qps, with {report['changes_per_second']} changes/s {churn.qps:,.0f} qps "
        f"({report['ratio']:.0%}); at {half:,} qps p99 {quiet_half.percentiles_ms['p99']:.3f} ms quiet, "
        f"{churn_half.percentiles_ms['p99']:.3f} ms churning\n"
        f"    quiet: {quiet_machine.describe()}\n    churning: {churn_machine.describe()}",
        flush=True,
    )
    return report


def figures(out: Path, files: Any, seconds: float, rate: float = RATE, backends: tuple[str, ...] = BACKENDS) -> dict[str, Any]:
    return {"rate": rate, "backends": {b: backend_figures(out, files, b, seconds, rate) for b in backends}}


def table(report: dict[str, Any]) -> str:
    lines = [
        f"Throughput and latency while {report['rate']:g} machines a second of the asked network change",
        f"  {'backend':<10}{'quiet qps':>11}{'churn qps':>11}{'ratio':>8}{'half load':>11}{'p99 quiet':>11}{'p99 churn':>11}"
        f"{'p99.9 churn':>13}",
    ]
    for backend, r in report["backends"].items():
        lines.append(
            f"  {backend:<10}{r['quiet_qps']:>11,}{r['churn_qps']:>11,}{r['ratio']:>8.0%}{r['half_load_qps']:>11,}"
            f"{r['quiet_half_ms']['p99']:>11.3f}{r['churn_half_ms']['p99']:>11.3f}{r['churn_half_ms']['p99.9']:>13.3f}"
        )
    lines.append("  target: with churn, throughput at least 80% of quiet and p99 at most 2 ms")
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=RATE, help="changes a second")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--json", type=Path, default=RESULTS / "churn.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = prepare(args.out, Size())
    backends = tuple(b for b in args.backends.split(",") if b)
    report = {**run_header(), **figures(args.out, files, args.seconds, args.rate, backends)}
    print()
    print(table(report))
    save(args.json, report)


if __name__ == "__main__":
    main()
