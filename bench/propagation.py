"""Propagation: how long after a change is written to a live store every server following it
answers with it, over many changes.

The registry is the benchmark's (`bench/generate.py`), imported into the store with the registry
command's own code. Each change adds a started machine to an app of `net0000` (a new id and
address each time) through the backend's Store, the way `internal-dns registry put` writes; from
the moment the write returns, the bench asks every server `<id>.vm.<app>.internal` every
millisecond until each answers NOERROR with the address. Reported: the distribution over all
servers and changes (p50, p90, p99, max) and how long the writes took.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode

from bench import peers, workloads
from bench.generate import Size, app_name, prefix6, write_registry
from internal_dns.registry import edit, plugins

GIVE_UP = 5.0  # seconds after which a server that has not answered counts as lost
APP = app_name(0)  # an app of net0000, the network the load generator's address is in


def fill(store: plugins.Store, registry: Path) -> None:
    """The generated registry into an empty store, checked as `registry import` checks it."""
    edit.apply(store, edit.import_change(registry, replace=False, current=store.read()))


def answered(sock: socket.socket, port: int, wire: bytes, address: str) -> bool:
    sock.sendto(wire, ("127.0.0.1", port))
    try:
        reply = dns.message.from_wire(sock.recv(4096))
    except (TimeoutError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and any(rd.address == address for rrset in reply.answer for rd in rrset)


def measure(store: plugins.Store, servers: Sequence[peers.Server], changes: int, app: str) -> dict[str, Any]:
    latencies: list[float] = []
    writes: list[float] = []
    lost = 0
    rng = random.Random(1)
    base = int(prefix6(0).network_address) + (9 << 64)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.005)
        for i in range(changes):
            mid = f"{0xFEED00000000 + i:014x}"
            address = str(type(prefix6(0).network_address)(base + i + 1))
            data = {"id": mid, "app": app, "network": workloads.VIEW_NETWORK, "region": "iad", "state": "started", "ip6": address}
            wire = dns.message.make_query(f"{mid}.vm.{app}.internal", "AAAA").to_wire()
            started = time.perf_counter()
            store.write([("machines", data, None)], [])
            written = time.perf_counter()
            writes.append(written - started)
            waiting = list(servers)
            while waiting:
                now = time.perf_counter()
                if now - written > GIVE_UP:
                    lost += len(waiting)
                    break
                for server in list(waiting):
                    if answered(sock, server.port, wire, address):
                        latencies.append(time.perf_counter() - written)
                        waiting.remove(server)
                time.sleep(0.001)
            time.sleep(rng.uniform(0.02, 0.05))  # changes come one at a time, not in a burst
    return {
        "changes": changes,
        "servers": len(servers),
        "ms": distribution(latencies),
        "write_ms": distribution(writes),
        "lost": lost,
    }


def distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 2)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(ordered[-1] * 1000, 2)}


def run(out: Path, options: dict[str, Any], store: plugins.Store, servers: int, changes: int) -> dict[str, Any]:
    """Fill the (empty) store with the benchmark's registry, start `servers` internal-dns
    processes on it (`options`: their `registry:` config), and measure."""
    fill(store, write_registry(out / "propagation-registry", Size()))
    started = [peers.internal_dns(out, options, cpus=None) for _ in range(servers)]
    try:
        for server in started:
            server.wait_ready()
        return measure(store, started, changes, APP)
    finally:
        for server in started:
            server.stop()
