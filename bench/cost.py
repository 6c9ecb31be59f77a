"""What a host pays per query, and what one flooding source does to everyone else.

- **CPU per answered query at a fixed rate** (`cost_figures`): dnsperf asks workload (a) at
  `-Q 1,000` and `-Q 10,000` from one core while the server runs pinned to the other; the
  server's CPU time (user + system, every thread, from `/proc/<pid>/stat`) over the run, divided
  by the queries answered. internal-dns, plain Twisted Names and dnsmasq, side by side, in
  `--rounds` interleaved rounds (each server started afresh in each): a shared VM's speed drifts
  by more than the differences between servers from one minute to the next, so each server's
  figure is its median over the rounds, and every round's is kept beside it.
- **Fairness under a flood** (`fairness_figures`): one source (127.0.0.2, network `net0000`)
  floods as fast as dnsperf can (workload (a), eight clients, 4,000 outstanding) while another
  (127.0.0.3, network `net0001`) asks its own apps at a moderate `-Q` rate. Reported: the share of
  the moderate source's queries answered and its latency, and what the flooder got. internal-dns
  with its default `rate_limit` and with it off, and dnsmasq (which has no per-source limit; the
  moderate source's names are not in its data, so it answers them NXDOMAIN from its local zone,
  which costs it no less than an answer).

The servers run pinned to core 1 and the load generators to core 0 (peers.py, dnsperf.py), as in
the rest of the bench.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import dnsperf, peers
from bench.figures import OUT, RESULTS, run_header, save
from bench.generate import Size, app_name
from bench.workloads import prepare

RATES = (1_000, 10_000)
ROUNDS = 3
FLOODER, MODERATE = "127.0.0.2", "127.0.0.3"
MODERATE_QPS = 1_000


def cost_figures(
    out: Path, files: Any, seconds: float, rates: tuple[int, ...] = RATES, rounds: int = ROUNDS
) -> dict[str, dict[str, Any]]:
    """server → rate → {qps, completed, lost, cpu_seconds, us_per_query, percentiles_ms} of its
    median round (by µs a query), with `us_per_query_rounds`: every round's figure, in order."""
    starts: list[Callable[[], peers.Server]] = [
        lambda: peers.internal_dns(out, files.registry),
        lambda: peers.twisted_names(out, files.baseline_data),
        lambda: peers.dnsmasq_authoritative(out, files.dnsmasq_hosts, files.dnsmasq_records),
    ]
    measured: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n in range(rounds):
        if rounds > 1:
            print(f"  round {n + 1} of {rounds}", flush=True)
        for start in starts:
            name, figures = _cost_round(start(), files, seconds, rates)
            for rate, figure in figures.items():
                measured.setdefault(name, {}).setdefault(rate, []).append(figure)
    return {name: {rate: _median_round(runs) for rate, runs in by_rate.items()} for name, by_rate in measured.items()}


def _cost_round(server: peers.Server, files: Any, seconds: float, rates: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    with peers.running(server):
        name = "dnsmasq" if server.name.startswith("dnsmasq") else server.name
        dnsperf.run(server.port, files.queries["a"], seconds=min(seconds, 2.0), max_qps=rates[0])  # warm: caches, first views
        figures: dict[str, Any] = {}
        for rate in rates:
            before = server.cpu_seconds()
            result = dnsperf.run(server.port, files.queries["a"], seconds=seconds, max_qps=rate, verbose=True)
            spent = server.cpu_seconds() - before
            figures[str(rate)] = {
                "qps": round(result.qps),
                "completed": result.completed,
                "lost": result.lost,
                "cpu_seconds": round(spent, 2),
                "us_per_query": round(spent / max(result.completed, 1) * 1e6, 1),
                "percentiles_ms": result.percentiles_ms,
            }
            print(
                f"  {name:<14} at {rate:>6,} qps: {figures[str(rate)]['us_per_query']:>6} µs of CPU a query "
                f"({spent:.2f} s for {result.completed:,}), p99 {result.percentiles_ms.get('p99', 0):.3f} ms",
                flush=True,
            )
    return name, figures


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median µs a query (the lower middle one of an even number), and every
    round's figure."""
    middle = sorted(runs, key=lambda r: r["us_per_query"])[(len(runs) - 1) // 2]
    return {**middle, "us_per_query_rounds": [r["us_per_query"] for r in runs]}


def moderate_questions(out: Path, size: Size) -> Path:
    """The apps of `net0001` (app i lives in network i % networks), AAAA."""
    path = out / "queries-moderate.txt"
    path.write_text("".join(f"{app_name(i)}.internal AAAA\n" for i in range(1, size.apps, size.networks)))
    return path


def fairness_figures(out: Path, files: Any, size: Size, seconds: float, moderate_qps: int = MODERATE_QPS) -> dict[str, Any]:
    """server → {flooder: dnsperf result, moderate: dnsperf result, answered share, limited counts}."""
    moderate_queries = moderate_questions(out, size)
    views = [{"source": f"{FLOODER}/32", "network": "net0000"}, {"source": f"{MODERATE}/32", "network": "net0001"}]
    starts: list[tuple[str, Callable[[], peers.Server]]] = [
        ("internal-dns (rate_limit default)", lambda: peers.internal_dns(out, files.registry, views=views, rate_limit={})),
        ("internal-dns (rate_limit off)", lambda: peers.internal_dns(out, files.registry, views=views, rate_limit={"qps": 0})),
        ("dnsmasq", lambda: peers.dnsmasq_authoritative(out, files.dnsmasq_hosts, files.dnsmasq_records)),
    ]
    report: dict[str, Any] = {"moderate_qps": moderate_qps, "servers": {}}
    for label, start in starts:
        with peers.running(start()) as server:
            flood: dict[str, dnsperf.Result] = {}
            flooder = threading.Thread(target=_flood, args=(server.port, files.queries["a"], seconds + 2, flood))
            flooder.start()
            try:
                threading.Event().wait(1.0)  # the flood under way before the moderate source starts
                moderate = dnsperf.run(
                    server.port,
                    moderate_queries,
                    seconds=seconds,
                    source=MODERATE,
                    clients=1,
                    outstanding=50,
                    max_qps=moderate_qps,
                    verbose=True,
                )
            finally:
                flooder.join()
            limited = _limited(server) if server.metrics_port is not None else None
            answered = moderate.completed / max(moderate.sent, 1)
            report["servers"][label] = {
                "flooder": flood["result"].as_dict(),
                "moderate": moderate.as_dict(),
                "moderate_answered": round(answered, 4),
                "rate_limited": limited,
            }
            p = moderate.percentiles_ms
            print(
                f"  {label:<34} flooder {flood['result'].qps:>8,.0f} qps answered; moderate {answered:.2%} answered, "
                f"p50 {p.get('p50', 0):.3f} ms, p99 {p.get('p99', 0):.3f} ms" + (f"; limited {limited}" if limited else ""),
                flush=True,
            )
    return report


def _flood(port: int, queries: Path, seconds: float, into: dict[str, dnsperf.Result]) -> None:
    """dnsperf from the flooding source, as fast as it can: 4,000 queries outstanding, each given
    up after 0.2 s, so that queries the server drops hold it back little."""
    into["result"] = dnsperf.run(port, queries, seconds=seconds, source=FLOODER, clients=8, outstanding=4000, timeout=0.2)


def _limited(server: peers.Server) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in server.metrics().splitlines():
        if line.startswith("internal_dns_rate_limited_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(line.rsplit(" ", 1)[1])
    return found


def table(cost: dict[str, dict[str, Any]] | None, fairness: dict[str, Any] | None) -> str:
    lines: list[str] = []
    if cost:
        rates = sorted({int(r) for figures in cost.values() for r in figures})
        rounds = max(len(figures[str(r)].get("us_per_query_rounds", [0])) for figures in cost.values() for r in rates)
        of_rounds = f"; the median of {rounds} interleaved rounds" if rounds > 1 else ""
        lines.append(f"CPU per answered query at a fixed rate (µs; workload (a), server pinned to one core{of_rounds})")
        lines.append(
            f"  {'server':<16}" + "".join(f"{f'{r:,} qps':>14}" for r in rates) + f"{'p99 ms at ' + f'{rates[-1]:,}':>18}"
        )
        for name, figures in cost.items():
            cells = "".join(f"{figures[str(r)]['us_per_query']:>14}" for r in rates)
            p99 = figures[str(rates[-1])]["percentiles_ms"].get("p99", 0.0)
            lines.append(f"  {name:<16}{cells}{p99:>18.3f}")
        if "internal-dns" in cost and "dnsmasq" in cost:
            ours, theirs = cost["internal-dns"][str(rates[-1])], cost["dnsmasq"][str(rates[-1])]
            ratio = ours["us_per_query"] / theirs["us_per_query"]
            lines.append(f"  internal-dns / dnsmasq at {rates[-1]:,} qps: {ratio:.2f}x (target: at most 1.5x)")
            paired = zip(ours.get("us_per_query_rounds", []), theirs.get("us_per_query_rounds", []), strict=True)
            each = [f"{a / b:.2f}x" for a, b in paired if b]
            if len(each) > 1:
                lines.append(f"  each round: {', '.join(each)}")
    if fairness:
        lines.append(f"One source flooding, another asking {fairness['moderate_qps']:,} qps of its own network's names")
        lines.append(f"  {'server':<36}{'flooder answered qps':>22}{'moderate answered':>19}{'p50 ms':>9}{'p99 ms':>9}")
        for label, f in fairness["servers"].items():
            p = f["moderate"]["percentiles_ms"]
            shares = f"{f['flooder']['qps']:>22,.0f}{f['moderate_answered']:>19.2%}"
            lines.append(f"  {label:<36}{shares}{p.get('p50', 0):>9.3f}{p.get('p99', 0):>9.3f}")
        lines.append("  target: the moderate source at least 99% answered, p99 at most 5 ms")
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each dnsperf run")
    parser.add_argument("--rates", default=",".join(str(r) for r in RATES), help="fixed rates of the CPU figure, comma-separated")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds of the CPU figure (its median)")
    parser.add_argument("--moderate-qps", type=int, default=MODERATE_QPS)
    parser.add_argument("--no-cost", action="store_true", help="skip the CPU figure")
    parser.add_argument("--no-fairness", action="store_true", help="skip the flood figure")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--json", type=Path, default=RESULTS / "cost.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    size = Size()
    files = prepare(args.out, size)
    report: dict[str, Any] = {
        **run_header(),
        "size": size.describe(),
        "seconds": args.seconds,
    }
    if not args.no_cost:
        print(f"CPU per query at fixed rates (the Python servers on {report['machine']['interpreter']}):", flush=True)
        report["cost"] = cost_figures(args.out, files, args.seconds, tuple(int(r) for r in args.rates.split(",")), args.rounds)
    if not args.no_fairness:
        print("one source flooding:", flush=True)
        report["fairness"] = fairness_figures(args.out, files, size, args.seconds, args.moderate_qps)
    print()
    print(table(report.get("cost"), report.get("fairness")))
    save(args.json, report)


if __name__ == "__main__":
    main()
