"""Scale figures: a registry of 100,000 machines in 10,000 apps across 1,000 networks.

- load: seconds from starting the process until /readyz says ready, and its resident memory;
- throughput of workload (a) on it, against the same figure on the default registry;
- reloads that change one machine: how long until the change is served, which rendered replies
  were dropped (only those of the changed machine's network should be), and how long the reactor
  stalled meanwhile, seen by a probe asking every 2 ms.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import dns.message
import yaml

from bench import dnsperf, peers, workloads
from bench.generate import Size, network_name, write_registry
from internal_dns.registry.files import load_snapshot

SCALE = Size(apps=10_000, machines_per_app=10, networks=1_000)
PROBE_INTERVAL = 0.002


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {name} in the scrape")
    return float(found.group(1))


class Probe(threading.Thread):
    """Asks one question every 2 ms and keeps each answer's latency."""

    def __init__(self, port: int, name: str):
        super().__init__(daemon=True)
        self.port = port
        self.wire = dns.message.make_query(name, "AAAA").to_wire()
        self.samples: list[tuple[float, float]] = []  # (sent at, seconds to the answer)
        self.lost = 0
        self.running = True

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)
            sock.connect(("127.0.0.1", self.port))
            while self.running:
                sent = time.perf_counter()
                sock.send(self.wire)
                try:
                    sock.recv(4096)
                    self.samples.append((sent, time.perf_counter() - sent))
                except TimeoutError:
                    self.lost += 1
                time.sleep(PROBE_INTERVAL)

    def worst_between(self, start: float, end: float) -> float:
        return max((lat for sent, lat in self.samples if start <= sent <= end), default=0.0) * 1000

    def stop(self) -> None:
        self.running = False
        self.join()


def edit_one_machine(registry: Path, network: str) -> str:
    """Stop the first started machine of `network`; returns its id."""
    path = registry / f"{network}.yaml"
    data = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    machine = next(m for m in data["machines"] if m["state"] == "started")
    machine["state"] = "stopped"
    path.write_text(yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=None, width=200))
    return str(machine["id"])


def reload(server: peers.Server, registry: Path, network: str, probe: Probe) -> dict[str, Any]:
    before = server.metrics()
    generation = metric(before, "internal_dns_registry_generation")
    started = time.perf_counter()
    machine = edit_one_machine(registry, network)
    while metric(text := server.metrics(), "internal_dns_registry_generation") == generation:
        if time.perf_counter() - started > 120:
            raise RuntimeError("the reload never came")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    time.sleep(0.2)
    return {
        "changed": f"machine {machine} of {network}",
        "seconds_to_serve": round(seconds, 2),
        "worst_probe_ms": round(probe.worst_between(started, time.perf_counter()), 2),
        "packet_cache_before": metric(before, "internal_dns_packet_cache_entries"),
        "packet_cache_after": metric(text, "internal_dns_packet_cache_entries"),
        "invalidated": metric(text, "internal_dns_packet_cache_invalidated_total")
        - metric(before, "internal_dns_packet_cache_invalidated_total"),
    }


def figures(out: Path, seconds: float, base_qps: float) -> dict[str, Any]:
    registry = write_registry(out / "scale-registry", SCALE)
    queries = workloads.write_queries(out / "scale-queries-a.txt", workloads.app_questions(load_snapshot(registry)))
    report: dict[str, Any] = {"size": SCALE.describe()}
    server = peers.internal_dns(out, registry)
    try:
        report["load_seconds"] = round(server.wait_ready(), 2)
        rss, peak = server.rss_mb()
        report["rss_mb"], report["peak_rss_mb"] = round(rss), round(peak)
        print(f"  loaded {SCALE.describe()} in {report['load_seconds']} s, RSS {rss:.0f} MiB (peak {peak:.0f} MiB)", flush=True)
        result = dnsperf.run(server.port, queries, seconds=seconds)
        report["a"] = result.as_dict()
        report["a_ratio_to_default_registry"] = round(result.qps / base_qps, 3)
        print(f"  (a) {result.qps:,.0f} qps: {report['a_ratio_to_default_registry']:.2f} of the default registry's", flush=True)
        probe = Probe(server.port, f"{workloads.app_questions(load_snapshot(registry))[0].name}.")
        probe.start()
        time.sleep(0.5)
        report["reloads"] = [
            reload(server, registry, network_name(SCALE.networks // 2), probe),
            reload(server, registry, workloads.VIEW_NETWORK, probe),
        ]
        probe.stop()
        report["probe_lost"] = probe.lost
        for r in report["reloads"]:
            print(
                f"  reload ({r['changed']}): served after {r['seconds_to_serve']} s;"
                f" worst probe answer {r['worst_probe_ms']} ms; "
                f"rendered replies {r['packet_cache_before']:.0f} -> {r['packet_cache_after']:.0f}",
                flush=True,
            )
        report["rss_after_reloads_mb"] = round(server.rss_mb()[0])
    finally:
        server.stop()
    return report
