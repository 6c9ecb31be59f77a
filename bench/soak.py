"""The soak: a busy host's mixed load held for minutes, on internal-dns and on dnsmasq.

From several source addresses (each the view of another network), at a steady rate: the
network's own names in every form, random unknown names (NXDOMAIN), forwarded names (most from a
fixed set, some random) and 5% garbage, sent and timed by `bench/loadgen.py` on the load core.
Both servers answer the same names and forward to the same local upstream (a dnsmasq
authoritative for `bench.test`). Printed per kind: answered, lost, p50 / p99 / p99.9 / max; and
per server: resident memory at the start and end of the load, its slope after warm-up (MiB per
minute), and for internal-dns the longest collector pause and the pauses by generation (from its
own metrics).

    python -m bench.soak [--minutes 10] [--qps 2000] [--sources 4] [--keep-awake]

On a virtual machine an idle virtual CPU is descheduled, and waking it for the next query adds
tens of microseconds to milliseconds to that query, to either server alike: with `--keep-awake`
a process of the lowest priority (SCHED_IDLE, which any runnable task preempts at once) keeps the
servers' core busy, so that the figures show the servers rather than the hypervisor.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import peers, workloads
from bench.dnsperf import LOAD_CPU, taskset
from bench.figures import OUT
from bench.generate import Size, network_name, write_registry
from internal_dns.authority.views import View
from internal_dns.registry.files import load_snapshot

MIX = {"internal": 0.55, "nxdomain": 0.20, "forwarded": 0.15, "forwarded_random": 0.05, "garbage": 0.05}
TIMED = ("internal", "nxdomain", "forwarded", "forwarded_random")
RSS_EVERY = 5.0  # seconds between two samples of the server's resident memory
WARM_UP = 0.3  # the share of the run left out of the slope: the caches fill first


def source_address(i: int) -> str:
    return f"127.0.0.{i + 1}"


def plan(snapshot: Any, sources: int, port: int, qps: float, seconds: float) -> dict[str, Any]:
    by_source: dict[str, dict[str, list[list[str]]]] = {}
    for i in range(sources):
        net = network_name(i)
        positive, _, nodata = workloads.every_form(snapshot, net)
        apps = snapshot.networks[net].app_names[:20]
        by_source[source_address(i)] = {
            "internal": [[q.name, q.rdtype] for q in positive + nodata],
            "nxdomain": [["{}.internal", "AAAA"]]
            + [[f"{{}}.vm.{a}.internal", "AAAA"] for a in apps]
            + [[f"x{{}}.{a}.internal", "AAAA"] for a in apps],
            "forwarded": [[q.name, q.rdtype] for q in workloads.forward_questions()],
            "forwarded_random": [[f"r{{}}.{workloads.FORWARD_DOMAIN}", "A"]],
        }
    return {"port": port, "qps": qps, "seconds": seconds, "seed": 1, "mix": MIX, "sources": by_source}


def peer_records(snapshot: Any, sources: int) -> dict[str, dict[str, list[object]]]:
    """Every source's own names, as internal-dns answers them in its view, for dnsmasq."""
    data: dict[str, dict[str, list[object]]] = {}
    for i in range(sources):
        net = network_name(i)
        positive, _, nodata = workloads.every_form(snapshot, net)
        data.update(workloads.records(snapshot, positive + nodata, ttl=5, view=View(net, "iad")))
    return data


class RssSampler(threading.Thread):
    def __init__(self, server: peers.Server):
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.is_set():
            try:
                self.samples.append((time.monotonic() - started, self.server.rss_mb()[0]))
            except (OSError, KeyError):
                return
            self.stopped.wait(RSS_EVERY)

    def figures(self, seconds: float) -> dict[str, Any]:
        warm = seconds * WARM_UP
        later = [(t, r) for t, r in self.samples if t >= warm]
        return {
            "rss_start_mib": round(self.samples[0][1], 1),
            "warm_up_seconds": round(warm),
            "rss_after_warm_up_mib": round(later[0][1], 1) if later else float("nan"),
            "rss_end_mib": round(self.samples[-1][1], 1),
            "rss_slope_mib_per_min": round(slope(later) * 60, 3) if len(later) >= 2 else float("nan"),
            "rss_samples": [(round(t), round(r, 1)) for t, r in self.samples],
        }


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def collector_figures(metrics: str) -> dict[str, Any]:
    """The longest pause and the pauses by generation, from internal-dns's own metrics."""
    out: dict[str, Any] = {}
    longest = re.search(r"^internal_dns_gc_longest_pause_seconds (\S+)$", metrics, re.MULTILINE)
    if longest is not None:
        out["longest_pause_ms"] = round(float(longest.group(1)) * 1000, 3)
    samples = {
        (name, labels): float(value)
        for name, labels, value in re.findall(r"^(internal_dns_gc_pause_seconds_\w+)\{([^}]*)\} (\S+)$", metrics, re.MULTILINE)
    }
    for generation in "012":
        count = samples.get(("internal_dns_gc_pause_seconds_count", f'generation="{generation}"'))
        if count is None:
            continue
        total = samples[("internal_dns_gc_pause_seconds_sum", f'generation="{generation}"')]
        within = {
            bound: samples.get(("internal_dns_gc_pause_seconds_bucket", f'generation="{generation}",le="{bound}"'), count)
            for bound in ("0.001", "0.005")
        }
        out[f"generation_{generation}"] = {
            "collections": int(count),
            "seconds": round(total, 3),
            "over_1ms": int(count - within["0.001"]),
            "over_5ms": int(count - within["0.005"]),
        }
    return out


def soak(server: peers.Server, load: dict[str, Any], out: Path) -> dict[str, Any]:
    plan_path = out / f"soak-plan-{server.port}.json"
    result_path = out / f"soak-result-{server.port}.json"
    plan_path.write_text(json.dumps({**load, "port": server.port}))
    sampler = RssSampler(server)
    sampler.start()
    command = [*taskset(LOAD_CPU), sys.executable, "-m", "bench.loadgen", str(plan_path), str(result_path)]
    subprocess.run(command, check=True, cwd=peers.ROOT, timeout=load["seconds"] + 120)
    sampler.stopped.set()
    sampler.join()
    result: dict[str, Any] = json.loads(result_path.read_text())
    result.update(sampler.figures(load["seconds"]))
    if server.metrics_port is not None:
        result["collector"] = collector_figures(server.metrics())
    return result


def report(name: str, r: dict[str, Any]) -> str:
    lines = [f"  {name}: {r['qps']:,.0f} qps for {r['seconds']:.0f} s"]
    lines.append(f"    {'kind':<18}{'sent':>9}{'answered':>10}{'lost':>7}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}")
    for kind in TIMED:
        k = r["kinds"].get(kind)
        if k:
            lines.append(
                f"    {kind:<18}{k['sent']:>9}{k['answered']:>10}{k['lost']:>7}"
                f"{k['p50_ms']:>9.3f}{k['p99_ms']:>9.3f}{k['p99.9_ms']:>10.3f}{k['max_ms']:>9.3f}"
            )
    g = r["kinds"].get("garbage")
    if g:
        lines.append(
            f"    garbage: {g['sent']} sent, {g['answered']} answered"
            f" ({', '.join(f'{k} {v}' for k, v in sorted(g['rcodes'].items()))})"
        )
    lines.append(
        f"    RSS {r['rss_start_mib']:.1f} MiB at the start,"
        f" {r['rss_after_warm_up_mib']:.1f} after warm-up ({r['warm_up_seconds']} s),"
        f" {r['rss_end_mib']:.1f} at the end: {r['rss_slope_mib_per_min']:+.3f} MiB/min after warm-up"
    )
    if r.get("collector"):
        c = r["collector"]
        gens = ", ".join(
            f"gen {k[-1]}: {v['collections']}"
            f" ({v['seconds'] * 1000:.0f} ms in all, {v['over_1ms']} over 1 ms, {v['over_5ms']} over 5 ms)"
            for k, v in sorted(c.items())
            if k.startswith("generation_")
        )
        lines.append(f"    collector: longest pause {c.get('longest_pause_ms', float('nan')):.3f} ms; {gens}")
    return "\n".join(lines)


@contextmanager
def kept_awake(enabled: bool) -> Iterator[None]:
    """A spinning process of the lowest priority on the servers' core, while enabled."""
    if not enabled:
        yield
        return
    command = ["chrt", "--idle", "0", *taskset(peers.SERVER_CPU), sys.executable, "-c", "while True: pass"]
    spinner = subprocess.Popen(command)
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


SERVERS = ("internal-dns", "dnsmasq")
DEFAULT_SIZE = Size()  # frozen: one instance serves as every call's default


def figures(
    out: Path,
    minutes: float,
    qps: float,
    sources: int,
    size: Size = DEFAULT_SIZE,
    keep_awake: bool = False,
    servers: tuple[str, ...] = SERVERS,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    registry = write_registry(out / "soak-registry", size)
    snapshot = load_snapshot(registry)
    hosts, records = workloads.write_dnsmasq_data(out, peer_records(snapshot, sources))
    forward_hosts = workloads.write_forward_hosts(out / "upstream.hosts")
    seconds = minutes * 60
    load = plan(snapshot, sources, 0, qps, seconds)
    views = [{"source": f"{source_address(i)}/32", "network": network_name(i)} for i in range(sources)]
    results: dict[str, Any] = {
        "minutes": minutes,
        "qps": qps,
        "sources": sources,
        "mix": MIX,
        "size": size.describe(),
        "keep_awake": keep_awake,
    }
    with peers.running(peers.dnsmasq_upstream(out, forward_hosts, workloads.FORWARD_DOMAIN)) as upstream:
        starts = {
            "internal-dns": lambda: peers.internal_dns(out, registry, upstream=upstream.port, views=views),
            "dnsmasq": lambda: peers.dnsmasq_both(out, hosts, records, upstream.port),
        }
        for start in (starts[name] for name in servers):
            with peers.running(start()) as server, kept_awake(keep_awake):
                name = "dnsmasq" if server.name.startswith("dnsmasq") else server.name
                awake = ", the servers' core kept awake" if keep_awake else ""
                print(f"soak: {name}, {minutes:g} min at {qps:,.0f} qps from {sources} sources{awake}", flush=True)
                results[name] = soak(server, load, out)
                print(report(name, results[name]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--qps", type=float, default=2000.0)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--keep-awake", action="store_true", help="keep the servers' core from idling (see above)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which to soak, comma-separated (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    servers = tuple(name for name in args.servers.split(",") if name)
    if not set(servers) <= set(SERVERS):
        parser.error(f"--servers: choose from {', '.join(SERVERS)}")
    args.out = args.out.resolve()  # the servers' configs name files in it, relative to themselves
    results = figures(args.out, args.minutes, args.qps, args.sources, keep_awake=args.keep_awake, servers=servers)
    name = "soak-awake.json" if args.keep_awake else "soak.json"
    (args.out / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures: {args.out / name}")


if __name__ == "__main__":
    main()
