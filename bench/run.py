"""`make bench`: internal-dns against a plain Twisted Names server and dnsmasq, in one run, on the
same registry and query files, each under the same dnsperf load.

Workloads: (a) `<app>.internal` AAAA; (b) a mix of every SPEC form with 10% NXDOMAIN and 10%
NODATA; (c) forwarded names answered from a cache (the upstream: a local dnsmasq); (d) (a) over
TCP. Then latency at a fixed load (half of internal-dns's peak on (a)), (a) on a wildcard listener
against one bound to the address asked, the scale figures
(`bench/scale.py`), `workers:`, the live stores (`bench/stores.py`: propagation of changes
through SQLite and etcd), and registry size (`bench/registry_size.py`: `--registry-machines`
loaded by internal-dns from each backend, cold and restarted, against dnsmasq on a hosts file of
the same addresses and CoreDNS's published sizing), and health check flips (`bench/health_flips.py`:
1,000 flips a second through SQLite and etcd on `--flip-machines`, each timed until served, with a
2 ms probe of the reactor), and what a query costs (`bench/cost.py`: the server's CPU per answered
query at 1,000 and 10,000 qps, and one source flooding beside another at a moderate rate). Prints a
table per workload and writes JSON (and a PNG chart
when matplotlib is installed: the `bench` extra) to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import churn, cost, dnsperf, health_flips, interference, peers, registry_size, scale, stores, workloads
from bench.figures import OUT, run_header
from bench.generate import Size
from bench.workloads import Files, prepare

INTERNAL, TWISTED, DNSMASQ = "internal-dns", "twisted-names", "dnsmasq"
WORKLOADS = {
    "a": "<app>.internal AAAA",
    "b": "every form, 10% NXDOMAIN, 10% NODATA",
    "c": "forwarded, from the cache",
    "d": "(a) over TCP",
}
SHORT = {"a": "<app>.internal\nAAAA", "b": "every form\n(20% negative)", "c": "forwarded,\nfrom the cache", "d": "(a) over TCP"}
# (workload, peer, least ratio internal-dns / peer): the targets
TARGETS = [("a", TWISTED, 4.0), ("a", DNSMASQ, 0.5), ("b", TWISTED, 3.0), ("c", DNSMASQ, 0.5)]
P99_TARGET_MS, P999_TARGET_MS = 1.0, 3.0  # at half of the peak, workload (a)
WILDCARD_TARGET = 0.9


def measure(server: peers.Server, files: Files, which: list[str], seconds: float) -> dict[str, dnsperf.Result]:
    results = {}
    for workload in which:
        queries = files.queries["a" if workload == "d" else workload]
        if workload == "c":  # answered from the cache: fill it first, one pass over the names
            dnsperf.run(server.port, queries, seconds=seconds, passes=1, clients=1, outstanding=20)
        results[workload] = dnsperf.run(server.port, queries, seconds=seconds, tcp=workload == "d")
        print(f"  {server.name:<16} ({workload}) {results[workload].qps:>10,.0f} qps", flush=True)
    return results


def peak_figures(out: Path, files: Files, seconds: float) -> dict[str, dict[str, dnsperf.Result]]:
    """workload → server → result."""
    by_workload: dict[str, dict[str, dnsperf.Result]] = {w: {} for w in WORKLOADS}
    with ExitStack() as stack:
        upstream = stack.enter_context(peers.running(peers.dnsmasq_upstream(out, files.forward_hosts, workloads.FORWARD_DOMAIN)))
        starts: list[tuple[Callable[[], peers.Server], list[str]]] = [
            (lambda: peers.internal_dns(out, files.registry, upstream=upstream.port), ["a", "b", "c", "d"]),
            (lambda: peers.twisted_names(out, files.baseline_data, upstream=upstream.port), ["a", "b", "c", "d"]),
            (lambda: peers.dnsmasq_authoritative(out, files.dnsmasq_hosts, files.dnsmasq_records), ["a", "b", "d"]),
            (lambda: peers.dnsmasq_forwarding(out, upstream.port), ["c"]),
        ]
        for start, which in starts:
            with peers.running(start()) as server:
                name = DNSMASQ if server.name.startswith("dnsmasq") else server.name
                for workload, result in measure(server, files, which, seconds).items():
                    by_workload[workload][name] = result
    return by_workload


def latency_figures(
    out: Path, files: Files, qps: int, seconds: float
) -> tuple[dict[str, dnsperf.Result], dict[str, interference.Interference]]:
    """Workload (a) at a fixed rate on every server: p50, p99, p99.9, and what else had the
    server's core meanwhile."""
    results, machine = {}, {}
    for start in (
        lambda: peers.internal_dns(out, files.registry),
        lambda: peers.twisted_names(out, files.baseline_data),
        lambda: peers.dnsmasq_authoritative(out, files.dnsmasq_hosts, files.dnsmasq_records),
    ):
        with peers.running(start()) as server:
            with interference.watching(server.pid) as machine[server.name]:
                results[server.name] = dnsperf.run(server.port, files.queries["a"], seconds=seconds, max_qps=qps, verbose=True)
            p = results[server.name].percentiles_ms
            print(
                f"  {server.name:<16} at {qps:,} qps: p50 {p['p50']:.3f} ms, p99 {p['p99']:.3f} ms, p99.9 {p['p99.9']:.3f} ms\n"
                f"  {'':<16} {machine[server.name].describe()}",
                flush=True,
            )
    return results, machine


def wildcard_figures(out: Path, files: Files, seconds: float) -> dict[str, dnsperf.Result]:
    """Workload (a) on a listener bound to 127.0.0.1 and on wildcard ones (0.0.0.0, and :: taking
    IPv4 as mapped addresses; every query read with its destination and answered from it), all
    asked on 127.0.0.1."""
    results = {}
    for address in ("127.0.0.1", "0.0.0.0", "::"):
        with peers.running(peers.internal_dns(out, files.registry, address=address)) as server:
            results[address] = dnsperf.run(server.port, files.queries["a"], seconds=seconds)
            print(f"  listening on {address:<10} {results[address].qps:>10,.0f} qps", flush=True)
    return results


def workers_figures(out: Path, files: Files, seconds: float, workers: int) -> dict[str, dnsperf.Result]:
    """Workload (a) with 1 and with N processes, neither pinned to a core."""
    results = {}
    for n in (1, workers):
        with peers.running(peers.internal_dns(out, files.registry, workers=n, cpus=None)) as server:
            results[str(n)] = dnsperf.run(server.port, files.queries["a"], seconds=seconds, cpus=None)
            print(f"  workers: {n:<8} {results[str(n)].qps:>10,.0f} qps", flush=True)
    return results


# --- the report ------------------------------------------------------------------------------------


def table(by_workload: dict[str, dict[str, dnsperf.Result]]) -> str:
    lines = []
    for workload, results in by_workload.items():
        ours = results.get(INTERNAL)
        lines.append(f"\n({workload}) {WORKLOADS[workload]}")
        lines.append(f"  {'server':<16}{'qps':>12}{'mean ms':>10}{'max ms':>10}{'lost':>8}  internal-dns / server")
        for name, r in results.items():
            ratio = f"{ours.qps / r.qps:.2f}x" if ours is not None and r.qps else "-"
            lines.append(f"  {name:<16}{r.qps:>12,.0f}{r.mean_ms:>10.3f}{r.max_ms:>10.3f}{r.lost:>8}  {ratio}")
    return "\n".join(lines)


def targets(
    by_workload: dict[str, dict[str, dnsperf.Result]],
    latency: dict[str, dnsperf.Result],
    wildcard: dict[str, dnsperf.Result] | None = None,
) -> list[dict[str, Any]]:
    checks = []
    for workload, peer, least in TARGETS:
        ratio = by_workload[workload][INTERNAL].qps / by_workload[workload][peer].qps
        checks.append({"target": f"({workload}) >= {least}x {peer}", "value": round(ratio, 2), "met": ratio >= least})
    if INTERNAL in latency:
        p99, p999 = latency[INTERNAL].percentiles_ms["p99"], latency[INTERNAL].percentiles_ms["p99.9"]
        checks.append({"target": f"p99 <= {P99_TARGET_MS} ms at half load", "value": round(p99, 3), "met": p99 <= P99_TARGET_MS})
        checks.append(
            {"target": f"p99.9 <= {P999_TARGET_MS} ms at half load", "value": round(p999, 3), "met": p999 <= P999_TARGET_MS}
        )
    if wildcard:
        for address in ("0.0.0.0", "::"):
            ratio = wildcard[address].qps / wildcard["127.0.0.1"].qps
            target = f"(a) on a wildcard listener ({address}) >= {WILDCARD_TARGET}x on 127.0.0.1"
            checks.append({"target": target, "value": round(ratio, 2), "met": ratio >= WILDCARD_TARGET})
    return checks


def chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    servers = [INTERNAL, TWISTED, DNSMASQ]
    names = list(WORKLOADS)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, server in enumerate(servers):
        values = [report["workloads"][w].get(server, {}).get("qps", 0) / 1000 for w in names]
        ax.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=server)
    ax.set_xticks(range(len(names)), [f"({w}) {SHORT[w]}" for w in names], fontsize=8)
    ax.set_ylabel("thousand queries per second")
    ax.set_title(f"dnsperf on loopback, {report['size']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=Size.apps)
    parser.add_argument("--machines-per-app", type=int, default=Size.machines_per_app)
    parser.add_argument("--networks", type=int, default=Size.networks)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each dnsperf run")
    parser.add_argument("--workers", type=int, default=2, help="processes for the workers: figure (1 = skip)")
    parser.add_argument("--no-scale", action="store_true", help="skip the 100,000-machine figures")
    parser.add_argument("--no-stores", action="store_true", help="skip the SQLite and etcd propagation figures")
    parser.add_argument(
        "--registry-machines",
        type=int,
        default=registry_size.MACHINES,
        help="machines of the registry size figures, ten per app in 1,000 networks (0: skip them)",
    )
    parser.add_argument(
        "--registry-backends",
        default=",".join(registry_size.BACKENDS),
        help="internal-dns backends of the registry size figures, comma-separated",
    )
    parser.add_argument("--store-changes", type=int, default=200, help="changes timed for propagation")
    parser.add_argument(
        "--flip-machines",
        type=int,
        default=health_flips.BENCH_MACHINES,
        help=f"machines of the health check flip figures ({health_flips.MACHINES:,} alone: make bench-flips; 0: skip them)",
    )
    parser.add_argument("--flip-seconds", type=float, default=health_flips.BENCH_SECONDS, help="seconds of flips per backend")
    parser.add_argument("--no-cost", action="store_true", help="skip CPU per query at fixed rates and the flood figures")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    size = Size(args.apps, args.machines_per_app, args.networks)
    print(f"registry: {size.describe()}; queries asked in the view of {workloads.VIEW_NETWORK}", flush=True)
    files = prepare(out, size)

    print("peak throughput, each server pinned to one core, dnsperf on the other:", flush=True)
    by_workload = peak_figures(out, files, args.seconds)
    half = int(by_workload["a"][INTERNAL].qps / 2)
    print(f"latency at half of internal-dns's peak on (a): {half:,} qps", flush=True)
    latency, machine = latency_figures(out, files, half, args.seconds)
    print("a wildcard listener against one bound to the address asked, workload (a):", flush=True)
    wildcard = wildcard_figures(out, files, args.seconds)

    report: dict[str, Any] = {
        **run_header(),
        "size": size.describe(),
        "seconds": args.seconds,
        "workloads": {w: {name: r.as_dict() for name, r in results.items()} for w, results in by_workload.items()},
        "latency_at_half_load": {
            "qps": half,
            **{name: {**r.as_dict(), "interference": machine[name].as_dict()} for name, r in latency.items()},
        },
        "wildcard": {address: r.as_dict() for address, r in wildcard.items()},
        "targets": targets(by_workload, latency, wildcard),
    }
    if args.workers > 1:
        print(f"workers (neither run pinned; dnsperf shares the {os.cpu_count()} cores):", flush=True)
        report["workers"] = {n: r.as_dict() for n, r in workers_figures(out, files, args.seconds, args.workers).items()}
    if not args.no_scale:
        print("scale:", flush=True)
        report["scale"] = scale.figures(out, args.seconds, by_workload["a"][INTERNAL].qps)

    if not args.no_cost:
        on = report["machine"]["interpreter"]
        print(f"CPU per query at fixed rates (server pinned to one core, dnsperf on the other; {on}):", flush=True)
        report["cost"] = cost.cost_figures(out, files, args.seconds)
        print("one source flooding, another asking at a moderate rate:", flush=True)
        report["fairness"] = cost.fairness_figures(out, files, size, args.seconds)
    if not args.no_stores:
        print("live stores: propagation:", flush=True)
        report["stores"] = stores.figures(out, args.store_changes)
        print(f"live stores: speed while {churn.RATE:g} machines a second change:", flush=True)
        report["churn"] = churn.figures(out, files, args.seconds)
    if args.registry_machines:
        print("registry size:", flush=True)
        backends = [b for b in args.registry_backends.split(",") if b]
        report["registry_size"] = registry_size.figures(out, args.registry_machines, backends, args.store_changes)
    if args.flip_machines:
        print("health check flips:", flush=True)
        report["health_flips"] = health_flips.figures(
            out, args.flip_machines, seconds=args.flip_seconds, changes=args.store_changes
        )

    print(table(by_workload))
    if "cost" in report:
        print(cost.table(report["cost"], report["fairness"]))
    if "churn" in report:
        print(churn.table(report["churn"]))
    if "registry_size" in report:
        print(registry_size.table(report["registry_size"]))
    if "health_flips" in report:
        print(health_flips.table(report["health_flips"]))
    print()
    for check in report["targets"]:
        print(f"  {'met    ' if check['met'] else 'NOT MET'} {check['target']}: {check['value']}")
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    drawn = chart(report, out / "bench.png")
    print(
        f"\nfigures: {out / 'results.json'}"
        + (f", chart: {out / 'bench.png'}" if drawn else " (pip install '.[bench]' for the chart)")
    )


if __name__ == "__main__":
    main()
