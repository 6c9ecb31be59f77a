"""The benchmark's own machinery (bench/), on a small registry: the peers hold the same records as
internal-dns, and dnsperf runs and is read. The figures themselves are `make bench`'s business:
no test here times anything."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from bench import churn, cost, dnsperf, figures, health_flips, interference, peers, registry_size, soak, tap, workloads
from bench.etcd import etcd
from bench.generate import Size
from bench.stores import open_store
from bench.workloads import Files, prepare

SMALL = Size(apps=40, machines_per_app=3, networks=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return prepare(tmp_path_factory.mktemp("bench"), SMALL)


@pytest.fixture(scope="module")
def servers(files: Files) -> Iterator[dict[str, peers.Server]]:
    out = files.registry.parent
    started = {
        "internal-dns": peers.internal_dns(out, files.registry, cpus=None),
        "twisted-names": peers.twisted_names(out, files.baseline_data),
        "dnsmasq": peers.dnsmasq_authoritative(out, files.dnsmasq_hosts, files.dnsmasq_records),
    }
    try:
        for server in started.values():
            server.wait_ready(30)
        yield started
    finally:
        for server in started.values():
            server.stop()


def ask(server: peers.Server, line: str) -> tuple[str, list[str]]:
    name, rdtype = line.split()
    reply = dns.query.udp(
        dns.message.make_query(name, rdtype, use_edns=0, payload=1232), "127.0.0.1", port=server.port, timeout=3
    )
    if reply.flags & dns.flags.TC:
        reply = dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", port=server.port, timeout=3)
    return dns.rcode.to_text(reply.rcode()), sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def questions(files: Files) -> list[str]:
    return sorted(set(files.queries["b"].read_text().splitlines()) | set(files.queries["a"].read_text().splitlines()))


def test_the_workloads_cover_every_form_and_the_negative_shares(files: Files) -> None:
    lines = files.queries["b"].read_text().splitlines()
    assert len(lines) == workloads.QUERY_LINES
    names = {line.split()[0] for line in lines}
    for form in (
        "vms.",
        "all.vms.",
        "regions.",
        "all.regions.",
        ".vm.",
        ".process.",
        "top2.nearest.of.",
        "._metadata.",
        ".flycast",
        ".railway.internal",
        "_apps.internal",
        "_peer.internal",
        "._peer.internal",
        "_instances.internal",
    ):
        assert any(form in name for name in names), form
    assert len(files.queries["a"].read_text().splitlines()) == SMALL.apps // SMALL.networks


def test_the_peers_answer_with_the_same_records(files: Files, servers: dict[str, peers.Server]) -> None:
    compared = 0
    for line in questions(files):
        ours = ask(servers["internal-dns"], line)
        assert ask(servers["twisted-names"], line) == ours, line
        if ours[0] == "NOERROR" and ours[1]:  # dnsmasq answers NXDOMAIN where the name has no records
            theirs = ask(servers["dnsmasq"], line)
            too_long = any(len(rd) > workloads.DNSMASQ_LINE for rd in ours[1])
            assert theirs == ours or too_long, line
            compared += 1
    assert compared > 50


def test_dnsperf_runs_and_is_read(files: Files, servers: dict[str, peers.Server]) -> None:
    result = dnsperf.run(servers["internal-dns"].port, files.queries["b"], seconds=1, clients=2, outstanding=20, cpus=None)
    assert result.completed > 0 and result.qps > 0
    assert {"NOERROR", "NXDOMAIN"} <= set(result.rcodes)
    assert result.rcodes["NXDOMAIN"] > 0.05 * result.completed  # the 10% share, give or take
    paced = dnsperf.run(servers["internal-dns"].port, files.queries["a"], seconds=1, max_qps=500, verbose=True, cpus=None)
    assert set(paced.percentiles_ms) == {"p50", "p99", "p99.9"}
    assert 0 < paced.percentiles_ms["p50"] <= paced.percentiles_ms["p99"] <= paced.percentiles_ms["p99.9"]


def test_the_soak_sends_every_kind_and_reads_both_servers(tmp_path: Path) -> None:
    # A few seconds of the soak's load on a small registry: every kind answered on both servers,
    # garbage partly answered (FORMERR, NOTIMP) and partly not (replies, runts), the figures read.
    results = soak.figures(tmp_path, minutes=0.05, qps=300, sources=2, size=SMALL)
    for name in soak.SERVERS:
        kinds = results[name]["kinds"]
        for kind in soak.TIMED:
            assert kinds[kind]["sent"] > 0 and kinds[kind]["answered"] == kinds[kind]["sent"], (name, kind, kinds[kind])
            assert kinds[kind]["p50_ms"] <= kinds[kind]["max_ms"]
        assert 0 < kinds["garbage"]["answered"] <= kinds["garbage"]["sent"] or name == "dnsmasq"
        assert results[name]["rss_end_mib"] > 0
    assert set(kinds["nxdomain"]["rcodes"]) == {"NXDOMAIN"}  # dnsmasq's too: random names exist nowhere
    assert results["internal-dns"]["kinds"]["nxdomain"]["rcodes"] == {
        "NXDOMAIN": results["internal-dns"]["kinds"]["nxdomain"]["sent"]
    }
    collector = results["internal-dns"]["collector"]
    assert collector["generation_0"]["collections"] > 0 and collector["longest_pause_ms"] > 0


def test_the_flip_bench_writes_flips_and_sees_the_sampled_ones(tmp_path: Path) -> None:
    # A second of check flips through SQLite on 1,000 machines: the flips are written and reach
    # the answers (critical machines leave `<app>.internal`, passing ones come back), the probe
    # asks throughout, and the propagation figure is read on the same server.
    report = health_flips.figures(tmp_path, 1000, ["sqlite"], rate=100, seconds=1.0, changes=5)
    sqlite = report["backends"]["sqlite"]
    assert sqlite["store_keeps_checks"] is True
    assert sqlite["writes"]["flips"] >= 90 and sqlite["writes"]["failed"] == 0
    flips = sqlite["flips"]
    assert flips["sampled"] > 0 and flips["seen"] == flips["sampled"] and flips["lost"] == 0
    assert flips["to_critical_ms"]  # a sampled machine goes critical first (and back when sampled again)
    assert sqlite["probe"]["flipping"]["asked"] > 0 and sqlite["probe"]["flipping"]["lost"] == 0
    assert "health check flips" in health_flips.table(report)


def test_the_cost_figures_read_cpu_time_and_the_flood_leaves_the_other_source_answered(files: Files, tmp_path: Path) -> None:
    # A second at a fixed rate on each server: CPU time is read from /proc and divided by what
    # was answered; then a second of flood beside a moderate source, whose answers are read. /proc
    # counts CPU time in clock ticks (10 ms): 300 queries cost dnsmasq less than one, so the rate
    # is one at which every server spends several.
    # Two rounds, interleaved: each server's figure is its lower middle round, every round kept.
    figures = cost.cost_figures(tmp_path, files, 1.0, rates=(3000,), rounds=2)
    assert set(figures) == {"internal-dns", "twisted-names", "dnsmasq"}
    for name, by_rate in figures.items():
        figure = by_rate["3000"]
        assert figure["completed"] > 0 and figure["us_per_query"] > 0, name
        assert len(figure["us_per_query_rounds"]) == 2 and figure["us_per_query"] == min(figure["us_per_query_rounds"])
    flood = cost.fairness_figures(tmp_path, files, SMALL, 1.0, moderate_qps=100)
    limited = flood["servers"]["internal-dns (rate_limit default)"]
    assert limited["moderate"]["completed"] > 0 and limited["flooder"]["sent"] > 0
    assert limited["rate_limited"] is not None and limited["rate_limited"]["dropped"] > 0  # the flood met its limit
    printed = cost.table(figures, flood)
    assert "the median of 2 interleaved rounds" in printed and "each round: " in printed


def test_the_churn_figure_writes_changes_while_dnsperf_asks(files: Files, tmp_path: Path) -> None:
    # A second of each run through SQLite: the writer's changes go in at their rate and the four
    # dnsperf runs are read. The store holds the bench's full-size registry, where some of the
    # small registry's questions name other networks' apps: the machinery is what is checked.
    report = churn.figures(tmp_path, files, 1.0, backends=("sqlite",))
    sqlite = report["backends"]["sqlite"]
    assert sqlite["quiet_qps"] > 0 and sqlite["churn_qps"] > 0 and sqlite["changes_written"] >= 5
    assert set(sqlite["churn_half_ms"]) == {"p50", "p99", "p99.9"}
    assert sqlite["churn_half_interference"]["server_core_busy"] > 0  # the server answered on its core
    assert "Throughput and latency while" in churn.table(report)


def test_the_idle_store_and_writer_run_at_the_idle_scheduling_class(tmp_path: Path) -> None:
    # `etcd-idle`: etcd (every thread it starts) and the writer's thread only run on time the
    # cores have left over, standing in for a store and a control plane on other hosts.
    with etcd(tmp_path / "store", idle=True) as url:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and str(tmp_path) in _cmdline(int(p))]
        assert pids, "etcd's process not found"
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                assert os.sched_getscheduler(int(tid)) == os.SCHED_IDLE
        options = {"backend": "etcd", "endpoints": [url], "prefix": "/bench-idle/"}
        machine = {"id": "0a", "app": "web", "network": "n", "region": "iad", "ip6": "fdaa::2"}
        stop, written = threading.Event(), list[float]()
        thread = threading.Thread(target=churn._changing, args=(options, [machine], 20.0, stop, written, True))
        thread.start()
        while len(written) < 2 and thread.is_alive():
            thread.join(0.05)
        assert len(written) >= 2, "the writer stopped"
        tid = thread.native_id
        assert tid is not None and os.sched_getscheduler(tid) == os.SCHED_IDLE
        stop.set()
        thread.join()
        store = open_store(options)
        try:
            assert store.read()  # the writer's puts are there
        finally:
            store.close()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_dnsmasq_on_a_hosts_file_is_timed_or_stopped_unanswered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry-size bench's peer: answered within the wait, its load time and memory; one
    # still reading its hosts file when the wait is up (here: every answer taken as not yet
    # right), stopped, with its memory by then.
    size = registry_size.size_of(1_000)
    answered = registry_size.dnsmasq_figures(tmp_path, size)
    assert answered["answer_seconds"] > 0 and answered["rss_mb"] > 0 and answered["hosts_lines"] == 2_000
    monkeypatch.setattr(registry_size, "answered", lambda *args: False)
    stopped = registry_size.dnsmasq_figures(tmp_path, size, wait=0.5)
    assert "answer_seconds" not in stopped and stopped["gave_up_after_seconds"] == 0.5 and stopped["rss_mb"] > 0
    assert "had not answered after 0 s" not in registry_size.table(
        {"size": "test", "backends": {}, "dnsmasq": answered, "coredns_published": registry_size.coredns_figures(size)}
    )
    assert "dnsmasq had not answered after 0 s and was stopped" in registry_size.table(
        {"size": "test", "backends": {}, "dnsmasq": stopped, "coredns_published": registry_size.coredns_figures(size)}
    )


def test_a_cost_figure_is_its_median_round_with_every_round_kept() -> None:
    runs = [{"us_per_query": us, "qps": n} for n, us in enumerate((45.0, 41.0, 52.0))]
    assert cost._median_round(runs) == {"us_per_query": 45.0, "qps": 0, "us_per_query_rounds": [45.0, 41.0, 52.0]}
    assert cost._median_round(runs[:2])["us_per_query"] == 41.0  # of two, the lower


def test_the_header_names_the_interpreter_and_how_libpython_is_linked() -> None:
    # ldd reads the executable's dynamic section: another way to tell than the header's own
    # (the libraries mapped into the running process).
    needed = subprocess.run(["ldd", sys.executable], capture_output=True, text=True, check=True).stdout
    expected = "libpython shared" if "libpython" in needed else "libpython static"
    assert figures.run_header()["machine"]["interpreter"] == f"{os.path.realpath(sys.executable)} ({expected})"


def test_interference_reads_schedstat_and_proc_stat() -> None:
    assert interference.run_queue_wait_ns(["1200 3400 5\n", "10 6 1\n", ""]) == 3406
    stat = "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 0 1 10 0 0 0 0 0 0\ncpu1 5 0 3 2 0 0 0 4 0 0\n"
    assert interference.cpu_ticks(stat, 1) == [5, 0, 3, 2, 0, 0, 0, 4]
    with pytest.raises(ValueError):
        interference.cpu_ticks(stat, 2)
    # 10 ticks went by: 4 idle, 1 iowait, 1 stolen
    assert interference.busy_percent([0] * 8, [2, 0, 1, 4, 1, 0, 1, 1]) == 50.0


def test_interference_counts_the_time_another_task_held_the_servers_core() -> None:
    # Two processes that each burn CPU on core 0, then wait to be let go: while one runs, the
    # other is ready and waits. The first stands in for the server.
    burn = "n = 0\nwhile n < 5_000_000: n += 1\nprint('done', flush=True)\nimport sys; sys.stdin.read()"
    spin = [*dnsperf.taskset("0"), sys.executable, "-c", burn]
    both = [subprocess.Popen(spin, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        with interference.watching(both[0].pid, server_cpu=0, load_cpu=0) as seen:
            for process in both:
                assert process.stdout is not None and process.stdout.readline() == "done\n"
        assert seen.waited_ms > 0 and seen.server_core_busy > 0 and seen.load_core_busy == seen.server_core_busy
        assert "the server ready and not running" in seen.describe()
    finally:
        for process in both:
            process.kill()
            process.wait()


def _pcap(records: list[tuple[float, int, int, bytes]]) -> bytes:
    """A nanosecond pcap of UDP/IPv4 packets on Linux's loopback: (time, source port, destination
    port, DNS ID)."""
    out = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    for at, source, destination, ident in records:
        udp = struct.pack("!HHHH", source, destination, 20, 0) + ident + bytes(10)
        ip = bytes([0x45, 0]) + struct.pack("!H", 20 + len(udp)) + bytes(5) + bytes([17]) + bytes(10)
        packet = bytes(12) + b"\x08\x00" + ip + udp
        seconds = int(at)
        out += struct.pack("<IIII", seconds, round((at - seconds) * 1e9), len(packet), len(packet)) + packet
    return out


def test_the_tap_pairs_queries_with_replies_and_finds_the_pauses() -> None:
    port = 5300
    capture = tap.read_pcap(
        _pcap(
            [
                (10.0000, 4000, port, b"\x00\x01"),
                (10.0001, 4001, port, b"\x00\x01"),  # the same ID from another client port
                (10.0002, port, 4001, b"\x00\x01"),
                (10.0004, port, 4000, b"\x00\x01"),
                (10.0010, 4000, port, b"\x00\x02"),
                (10.0030, port, 4000, b"\x00\x02"),  # 2 ms in which a query waited and no reply went
                (10.0100, 4000, port, b"\x00\x03"),  # 6.7 ms without replies, but none waiting
                (10.0102, port, 4000, b"\x00\x03"),
                (10.0200, 4002, port, b"\x00\x09"),  # never answered
                (13.0000, 4000, port, b"\x00\x04"),
                (13.0050, port, 4000, b"\x00\x04"),  # the one given up on no longer counts as waiting
            ]
        ),
        port,
    )
    assert [round(x * 1e6) for x in capture.latencies] == [100, 400, 2000, 200, 5000]
    assert [round(x * 1e6) for x in capture.pauses] == [2000, 5000]
    assert capture.unanswered == 1
    summary = capture.summary()
    assert summary["answered"] == 5 and summary["pauses"] == 2 and summary["longest_pause_ms"] == 5.0
    with pytest.raises(ValueError):
        tap.read_pcap(bytes(24), port)


@pytest.mark.skipif(os.geteuid() != 0, reason="capturing on the loopback device needs root")
def test_the_tap_sees_every_query_dnsperf_had_answered(files: Files, servers: dict[str, peers.Server]) -> None:
    server = servers["internal-dns"]
    with tap.capturing(server.port, cpus=None) as capture:
        seen = dnsperf.run(server.port, files.queries["a"], seconds=1, max_qps=500, verbose=True, cpus=None)
    assert len(capture.latencies) == seen.completed > 0 and capture.unanswered == 0
    # Each query's time at the server is within the time dnsperf saw it take.
    assert 0 < capture.summary()["percentiles_ms"]["p50"] <= seen.percentiles_ms["p50"]
