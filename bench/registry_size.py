"""Registry size: one registry of `--registry-machines` machines (ten per app, in 1,000 networks)
loaded by internal-dns from each backend, against dnsmasq on the same addresses and CoreDNS's
published sizing.

Per backend (files, SQLite, etcd), one internal-dns on the registry:

- cold: seconds from starting the process until the first private answer (`<app>.internal` AAAA
  for an app of `net0000`, asked from loopback, which the config maps to `net0000`'s view,
  answered NOERROR with one of the app's addresses), and until /readyz says ready;
- the resident memory while serving (VmRSS, once the server has settled: under 5% of a core
  over half a second, which a load in parts or a restart reaches when its catalog is made
  behind the first answers; that time is `settled_seconds`) and the peak while loading (VmHWM),
  and the former per machine; and the peak of the server and the processes it loads with,
  together (`peak_tree_rss_mb`, sampled every 50 ms);
- propagation at that size (SQLite and etcd: `bench/propagation.py`'s changes, on this server);
- restart: the same server stopped with SIGTERM and started again on the same config: seconds
  to the first private answer and to /readyz, and memory once more. The config sets
  `registry.snapshot_file` (a file under the output folder) when the server knows the key (the
  config parser rejects keys it does not know, so the bench asks it first); without it a restart
  is a cold start.

dnsmasq: the same machines' addresses in a hosts file (`addn-hosts`; per machine a line for its
IPv6 and one for its IPv4 address, each naming `<id>.vm.<app>.internal` and `<app>.internal`):
seconds from starting it until it answers for the file's last name, and its memory (one that
has not answered within 5 minutes is stopped and its memory by then reported).

CoreDNS: no run; its published memory sizing for the kubernetes plugin (see `COREDNS_SOURCE`)
evaluated at as many objects (machines as pods, apps as services).

`python -m bench.registry_size --registry-machines 1000000` runs this alone and writes
`registry-size.json` to the output folder; `make bench` runs it too (`--registry-machines`,
default 100,000) and puts it in `results.json` under `registry_size`.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import yaml

from bench import peers, propagation
from bench.figures import OUT, run_header, save
from bench.generate import REGIONS_FILE, Size, network_document, region_codes, write_registry
from bench.probe import PROBE_EVERY, Probe
from bench.stores import fill_generated, fmt, open_store, store_options
from internal_dns.config import ConfigError, parse_config
from internal_dns.registry import plugins

BACKENDS = ("files", "sqlite", "etcd")
MACHINES = 100_000  # the default size; `--registry-machines 1000000` for a million
MACHINES_PER_APP = 10
NETWORKS = 1_000
WAIT = 4 * 3600.0  # seconds a start may take before the run fails: a files load of a million machines takes minutes
DNSMASQ_WAIT = 300.0  # seconds dnsmasq may take to load the hosts file before it is stopped unanswered
STOP_WAIT = 600.0  # seconds a SIGTERM may take (a server may write its snapshot file on the way out)
POLL = 0.02  # seconds between two questions while waiting for the first answer
MIB = 1024 * 1024

Question = tuple[str, str, set[str]]  # (name, type, the addresses any of which makes an answer right)

# CoreDNS's published sizing of its kubernetes plugin, default settings (1.2.5 on Kubernetes 1.12,
# fitted to the e2e scale tests' clusters of up to 150,000 pods and 8,200 services), in
# coredns/deployment, kubernetes/Scaling_CoreDNS.md, section "Memory and Pods":
#   "MB required (default settings) = (Pods + Services) / 1000 + 54"
# with 30 MB of it a full answer cache (10,000 entries) and 5 MB a buffer for ~30K qps; the same
# formula is on the CoreDNS blog (https://coredns.io/2018/11/15/scaling-coredns-in-kubernetes-clusters/).
# A draft of that page (commit 0704381, 2018-10-26) read "(Pods + Services) * 0.000858 + 49.1";
# the next commit (d17f4a2, "simplify math a bit, and correct offsets") replaced it with the above.
COREDNS_SOURCE = "https://github.com/coredns/deployment/blob/master/kubernetes/Scaling_CoreDNS.md#memory-and-pods"
COREDNS_MB_PER_OBJECT = 1 / 1000
COREDNS_BASE_MB = 54.0


def size_of(machines: int) -> Size:
    return Size(apps=max(1, machines // MACHINES_PER_APP), machines_per_app=MACHINES_PER_APP, networks=NETWORKS)


def machines_of(size: Size) -> int:
    return size.apps * size.machines_per_app


# --- what is asked --------------------------------------------------------------------------------


def private_question(size: Size) -> Question:
    """`<app>.internal` AAAA for an app of `net0000` with a started machine, other than the one
    propagation adds machines to when the network has another."""
    doc = network_document(0, size, region_codes())
    apps = sorted(doc["apps"], key=lambda app: app["name"] == propagation.APP)
    for app in apps:
        started = {m["ip6"] for m in doc["machines"] if m["app"] == app["name"] and m["state"] == "started"}
        if started:
            return f"{app['name']}.internal", "AAAA", started
    raise RuntimeError("no app of net0000 has a started machine")


def write_hosts(path: Path, size: Size) -> tuple[Path, Question]:
    """dnsmasq's hosts file of every machine; returns it and the question for its last line."""
    regions = region_codes()
    last: dict[str, Any] = {}
    with path.open("w") as out:
        for k in range(size.networks):
            lines = []
            for m in network_document(k, size, regions)["machines"]:
                names = f"{m['id']}.vm.{m['app']}.internal {m['app']}.internal"
                lines.append(f"{m['ip6']} {names}\n{m['ip4']} {names}\n")
                last = m
            out.write("".join(lines))
    return path, (f"{last['id']}.vm.{last['app']}.internal", "A", {last["ip4"]})


def answered(sock: socket.socket, port: int, query: dns.message.Message, expected: set[str]) -> bool:
    try:
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        reply = dns.message.from_wire(sock.recv(65535))
        if reply.flags & dns.flags.TC:  # too many addresses for a datagram: over TCP, as a resolver would
            reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    except (OSError, dns.exception.DNSException):  # not listening yet, or a timeout
        return False
    return reply.rcode() == dns.rcode.NOERROR and any(
        getattr(rd, "address", None) in expected for rrset in reply.answer for rd in rrset
    )


def wait_answer(server: peers.Server, started: float, question: Question, timeout: float = WAIT) -> float:
    """Seconds from `started` until the server answers the question rightly."""
    name, rdtype, expected = question
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        while not answered(sock, server.port, query, expected):
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.process.returncode} before answering {name}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{server.name} did not answer {name} {rdtype} within {timeout:.0f} s")
            time.sleep(POLL)
    return time.perf_counter() - started


def wait_ready(server: peers.Server, started: float, timeout: float = WAIT) -> float:
    """Seconds from `started` until /readyz says ready."""
    while not server.ready():
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode} before /readyz")
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{server.name}: /readyz not ready within {timeout:.0f} s")
        time.sleep(POLL)
    return time.perf_counter() - started


def timed_start(start: Callable[[], peers.Server], question: Question, machines: int) -> tuple[peers.Server, dict[str, Any]]:
    """Start a server and time it to its first right answer (and to /readyz for internal-dns, in
    a thread of its own so that neither wait slows the other); then, once it has settled, its
    memory, and the peak of the server's and its children's together (a load in parts) sampled
    every 50 ms until then."""
    started = time.perf_counter()
    server = start()
    ready: dict[str, Any] = {}
    tree_peak = [0.0]
    sampled = threading.Event()

    def sample() -> None:
        while not sampled.wait(0.05):
            tree_peak[0] = max(tree_peak[0], server.tree_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def readyz() -> None:
        try:
            ready["seconds"] = wait_ready(server, started)
        except RuntimeError as exc:
            ready["error"] = exc

    thread = threading.Thread(target=readyz, daemon=True) if server.metrics_port is not None else None
    try:
        if thread is not None:
            thread.start()
        result: dict[str, Any] = {"answer_seconds": round(wait_answer(server, started, question), 2)}
        if thread is not None:
            thread.join()
            if "error" in ready:
                raise ready["error"]
            result["readyz_seconds"] = round(ready["seconds"], 2)
        result["settled_seconds"] = round(settle(server, started), 2)
        sampled.set()
        sampler.join()
        result.update(memory(server, machines))
        result["peak_tree_rss_mb"] = round(max(tree_peak[0], result["peak_rss_mb"]), 1)
        return server, result
    except BaseException:
        server.stop()
        raise
    finally:
        sampled.set()


def settle(server: peers.Server, started: float, quiet: float = 0.05, timeout: float = WAIT) -> float:
    """Seconds from `started` until the server has settled after its first answer: at least a
    second, then until it spends under 5% of a core over half a second (a load in parts, or a
    restart, makes its catalog behind the first answers; the memory is taken once that is done)."""
    time.sleep(1.0)
    before = server.cpu_seconds()
    while time.perf_counter() - started < timeout:
        time.sleep(0.5)
        now = server.cpu_seconds()
        if now - before < quiet * 0.5:
            break
        before = now
    return time.perf_counter() - started


def memory(server: peers.Server, machines: int) -> dict[str, Any]:
    rss, peak = server.rss_mb()
    return {"rss_mb": round(rss, 1), "peak_rss_mb": round(peak, 1), "bytes_per_machine": round(rss * MIB / machines)}


# --- internal-dns on each backend -----------------------------------------------------------------


def snapshot_file_known(registry: dict[str, Any]) -> bool:
    """Whether this server's config takes `registry.snapshot_file` (the parser refuses unknown keys)."""
    raw = {"listen": [{"address": "127.0.0.1", "port": 53}], "registry": {**registry, "snapshot_file": "snapshot"}}
    try:
        parse_config(raw)
    except ConfigError as exc:
        if exc.key == "registry.snapshot_file":
            return False
        raise
    return True


@contextmanager
def registry_of(out: Path, backend: str, size: Size) -> Iterator[tuple[dict[str, Any], plugins.Store | None]]:
    """The `registry:` config of the generated registry in this backend (and its store, written
    to by propagation), made from nothing."""
    if backend == "files":
        yield {"backend": "files", "path": str(write_registry(out / "size-files", size))}, None
        return
    with store_options(out, backend) as options:
        store = open_store(options)
        try:
            fill_generated(store, size)
            yield options, store
        finally:
            store.close()


def backend_figures(out: Path, backend: str, size: Size, changes: int, question: Question) -> dict[str, Any]:
    machines = machines_of(size)
    report: dict[str, Any] = {}
    started = time.perf_counter()
    with registry_of(out, backend, size) as (options, store):
        report["write_seconds"] = round(time.perf_counter() - started, 1)
        snapshot = out / f"size-{backend}.snapshot"
        for stale in out.glob(f"{snapshot.name}*"):
            stale.unlink()
        if snapshot_file_known(options):
            options = {**options, "snapshot_file": str(snapshot)}
            report["snapshot_file"] = str(snapshot)
        print(f"  {backend}: written in {report['write_seconds']} s; starting internal-dns", flush=True)

        server, report["cold"] = timed_start(lambda: peers.internal_dns(out, options, cpus=None), question, machines)
        try:
            print(f"  {backend} cold: {describe(report['cold'])}", flush=True)
            if store is not None and changes:
                report["propagation"] = propagation.measure(store, [server], changes, propagation.APP)
                print(f"  {backend} propagation at that size: {fmt(report['propagation'])}", flush=True)
                report["structural"] = structural_changes(store, server)
                print(f"  {backend} network and region changes at that size: {report['structural']}", flush=True)
        finally:
            stopping = time.perf_counter()
            server.stop(STOP_WAIT)
        report["stop_seconds"] = round(time.perf_counter() - stopping, 2)
        report["stop_exit_code"] = server.process.returncode  # -9: killed after STOP_WAIT
        if snapshot.exists():
            report["snapshot_bytes"] = snapshot.stat().st_size

        again, report["restart"] = timed_start(lambda: peers.internal_dns_again(out, server, cpus=None), question, machines)
        again.stop(STOP_WAIT)
        print(
            f"  {backend} restart (stopped in {report['stop_seconds']} s"
            + (f", snapshot file {report['snapshot_bytes'] / MIB:.0f} MiB" if "snapshot_bytes" in report else "")
            + f"): {describe(report['restart'])}",
            flush=True,
        )
    return report


def describe(r: dict[str, Any]) -> str:
    ready = f", /readyz {r['readyz_seconds']} s" if "readyz_seconds" in r else ""
    ready += f", settled {r['settled_seconds']} s" if "settled_seconds" in r else ""
    return (
        f"first answer {r['answer_seconds']} s{ready}; RSS {r['rss_mb']:.0f} MiB (peak {r['peak_rss_mb']:.0f},"
        f" with its load processes {r.get('peak_tree_rss_mb', r['peak_rss_mb']):.0f}),"
        f" {r['bytes_per_machine']:,} B/machine"
    )


# --- the peers ------------------------------------------------------------------------------------


def dnsmasq_figures(out: Path, size: Size, wait: float = DNSMASQ_WAIT) -> dict[str, Any]:
    """dnsmasq on the hosts file: its load time and memory; one still reading the file after
    `wait` seconds (two million lines take it longer than that) is stopped, with its memory by
    then and no load time."""
    hosts, question = write_hosts(out / "size-dnsmasq.hosts", size)
    lines = 2 * machines_of(size)
    print(f"  dnsmasq: {lines:,} lines in {hosts.name}; starting it", flush=True)
    conf = [f"addn-hosts={hosts}", "local=/internal/"]
    started = time.perf_counter()
    server = peers.dnsmasq(out, conf, name="dnsmasq-size", cpus=None)
    try:
        try:
            result: dict[str, Any] = {"answer_seconds": round(wait_answer(server, started, question, wait), 2)}
            time.sleep(1.0)  # as timed_start: the memory once serving
        except RuntimeError:
            if server.process.poll() is not None:
                raise
            result = {"gave_up_after_seconds": wait}
        result.update(memory(server, machines_of(size)))
    finally:
        server.stop()
    if "answer_seconds" in result:
        print(f"  dnsmasq: {describe(result)}", flush=True)
    else:
        print(f"  dnsmasq: no answer within {wait:.0f} s, stopped; RSS by then {result['rss_mb']:.0f} MiB", flush=True)
    return {"hosts_lines": lines, **result}


def coredns_figures(size: Size) -> dict[str, Any]:
    objects = machines_of(size) + size.apps  # pods and services
    mb = objects * COREDNS_MB_PER_OBJECT + COREDNS_BASE_MB
    return {
        "objects": objects,
        "mb": round(mb, 1),
        "bytes_per_machine": round(mb * MIB / machines_of(size)),  # its MB taken as MiB
        "formula": f"(pods + services) / 1000 + {COREDNS_BASE_MB:g} MB",
        "source": COREDNS_SOURCE,
    }


# --- the section ----------------------------------------------------------------------------------


def figures(out: Path, machines: int, backends: list[str], changes: int) -> dict[str, Any]:
    size = size_of(machines)
    question = private_question(size)
    print(f"  {size.describe()}; asked {question[0]} {question[1]} in the view of net0000", flush=True)
    report: dict[str, Any] = {"size": size.describe(), "machines": machines_of(size), "apps": size.apps, "networks": NETWORKS}
    report["backends"] = {b: backend_figures(out, b, size, changes, question) for b in backends}
    report["dnsmasq"] = dnsmasq_figures(out, size)
    report["coredns_published"] = coredns_figures(size)
    return report


def structural_changes(store: plugins.Store, server: peers.Server) -> dict[str, Any]:
    """A network added, then a region moved, through the store, while a probe asks the SOA of
    `internal` every 2 ms: for each, milliseconds until the SOA serial shows the new snapshot, and
    the slowest probe answer from the write until 100 ms after that (what the change stalls the
    reactor by, at most)."""
    regions = {r["code"]: r for r in yaml.safe_load(REGIONS_FILE.read_text())["regions"]}
    changes: list[tuple[str, dict[str, Any]]] = [
        ("networks", {"name": "zz-probe", "prefix6": "fdff:ffff:1::/48", "prefix4": "100.127.0.0/16"}),
        ("regions", {**regions["ams"], "latitude": regions["ams"]["latitude"] + 0.01}),
    ]
    probe = Probe(server.port, "internal", "SOA")
    report: dict[str, Any] = {}

    def serial() -> tuple[int, float]:
        reply, took = probe.ask()
        return dns.message.from_wire(reply).answer[0][0].serial, took

    try:
        for kind, data in changes:
            before, _ = serial()
            written = time.perf_counter()
            store.write([(kind, data, None)], [])
            served: float | None = None
            slowest = 0.0
            while time.perf_counter() - written < 10.0:
                now, took = serial()
                slowest = max(slowest, took)
                if served is None and now != before:
                    served = time.perf_counter() - written
                if served is not None and time.perf_counter() - written > served + 0.1:
                    break
                time.sleep(PROBE_EVERY)
            what = "network added" if kind == "networks" else "region moved"
            report[what] = {
                "served_ms": None if served is None else round(served * 1000, 1),
                "slowest_probe_ms": round(slowest * 1000, 1),
            }
    finally:
        probe.close()
    return report


def table(report: dict[str, Any]) -> str:
    def s(r: dict[str, Any] | None, key: str) -> str:
        return "-" if r is None or key not in r else f"{r[key]:.1f}"

    def mib(r: dict[str, Any] | None, key: str) -> str:
        return "-" if r is None or key not in r else f"{r[key]:,.0f}"

    head = (
        f"  {'':<22}{'cold':>19}{'restart':>19}{'serving':>30}{'loading':>11}{'restart':>18}\n"
        f"  {'server':<22}{'answer s':>10}{'readyz s':>9}{'answer s':>10}{'readyz s':>9}"
        f"{'RSS MiB':>10}{'peak MiB':>10}{'B/machine':>10}{'+parts':>11}{'RSS MiB':>9}{'peak MiB':>9}"
    )
    lines = [f"\nregistry size: {report['size']}", head]

    def row(name: str, cold: dict[str, Any] | None, restart: dict[str, Any] | None) -> str:
        per = "-" if cold is None else f"{cold['bytes_per_machine']:,}"
        return (
            f"  {name:<22}{s(cold, 'answer_seconds'):>10}{s(cold, 'readyz_seconds'):>9}"
            f"{s(restart, 'answer_seconds'):>10}{s(restart, 'readyz_seconds'):>9}"
            f"{mib(cold, 'rss_mb'):>10}{mib(cold, 'peak_rss_mb'):>10}{per:>10}{mib(cold, 'peak_tree_rss_mb'):>11}"
            f"{mib(restart, 'rss_mb'):>9}{mib(restart, 'peak_rss_mb'):>9}"
        )

    for backend, r in report["backends"].items():
        mark = " *" if "snapshot_file" not in r else "" if "snapshot_bytes" in r else " +"
        lines.append(row(f"internal-dns {backend}{mark}", r["cold"], r["restart"]))
    lines.append(row("dnsmasq addn-hosts", report["dnsmasq"], None))
    if "gave_up_after_seconds" in report["dnsmasq"]:
        lines.append(f"  dnsmasq had not answered after {report['dnsmasq']['gave_up_after_seconds']:.0f} s and was stopped")
    c = report["coredns_published"]
    lines.append(row("CoreDNS (published)", {"rss_mb": c["mb"], "bytes_per_machine": c["bytes_per_machine"]}, None))
    lines.append("  +parts: the peak of the server and the processes it loads with, together (sampled every 50 ms)")
    if any("snapshot_file" not in r for r in report["backends"].values()):
        lines.append("  * no registry.snapshot_file: this server's config does not know the key, so a restart loads cold")
    if any("snapshot_file" in r and "snapshot_bytes" not in r for r in report["backends"].values()):
        lines.append("  + registry.snapshot_file set, but no file was there after the stop: the restart loaded cold")
    lines.append(
        f"  CoreDNS: its kubernetes plugin's published sizing {c['formula']} at {c['objects']:,} objects"
        f" (machines as pods, apps as services; MB taken as MiB): {c['mb']:,.0f} MB; {c['source']}"
    )
    for backend, r in report["backends"].items():
        if "propagation" in r:
            lines.append(f"  propagation at this size, {backend}: {fmt(r['propagation'])}")
        for what, figures in r.get("structural", {}).items():
            lines.append(
                f"  {what}, {backend}: served in {figures['served_ms']} ms;"
                f" slowest probe answer (every 2 ms) {figures['slowest_probe_ms']} ms"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry-machines", type=int, default=MACHINES, help="machines (ten per app, 1,000 networks)")
    parser.add_argument("--registry-backends", default=",".join(BACKENDS), help="internal-dns backends, comma-separated")
    parser.add_argument("--store-changes", type=int, default=200, help="changes timed for propagation (0: skip it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    backends = [b for b in args.registry_backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend {sorted(unknown)[0]!r} (known: {', '.join(BACKENDS)})")
    print("registry size:", flush=True)
    report = {**run_header(), **figures(out, args.registry_machines, backends, args.store_changes)}
    print(table(report))
    save(out / "registry-size.json", report)


if __name__ == "__main__":
    main()
