"""The servers under test, each started as a process of its own: internal-dns, the plain Twisted
Names baseline, and dnsmasq (answering from a hosts file, or forwarding with its cache)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import yaml

from bench.dnsperf import taskset

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = "1"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port free for both UDP and TCP on loopback, for a process started next to bind.

    Drawn at random from below the kernel's ephemeral range: a port handed out by bind(0) or an
    outgoing connection could be taken again by another program's next one before the process
    binds it, while one below the range is only ever taken by a program that asks for it by
    number.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(max(1024, low - 20000), low)
        if _is_free(port):
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    metrics_port: int | None = None
    config: Path | None = None  # internal-dns's config file, to start the same server again

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident set size in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def tree_rss_mb(self) -> float:
        """Resident set size in MiB of the process and every process it started that still runs
        (a load in parts' processes): 0 once it has exited."""
        total, pids = 0.0, [self.pid]
        while pids:
            pid = pids.pop()
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids.extend(int(child) for child in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue  # exited meanwhile
        return total

    def cpu_seconds(self) -> float:
        """User and system time of the process so far, every thread of it (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: stat(5) fields 14, 15

    def metrics(self) -> str:
        assert self.metrics_port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def ready(self) -> bool:
        if self.metrics_port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        try:
            dns.query.udp(dns.message.make_query("ready.check.", "A"), "127.0.0.1", port=self.port, timeout=0.5)
            return True
        except (OSError, dns.exception.Timeout):
            return False

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from now until the server answers (or its /readyz says ready)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            if self.ready():
                return time.perf_counter() - started
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `timeout` seconds."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _spawn(command: list[str], log: Path, cpus: str | None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*taskset(cpus), *command], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def internal_dns(
    out: Path,
    registry: Path | dict[str, object],
    *,
    upstream: int | None = None,
    workers: int = 1,
    cpus: str | None = SERVER_CPU,
    views: list[dict[str, str]] | None = None,
    address: str = "127.0.0.1",
    rate_limit: dict[str, float] | None = None,
) -> Server:
    """internal-dns on a files registry folder, or on the `registry:` config given, listening on
    `address` (asked on 127.0.0.1 all the same); every loopback source is asked in the view of
    `net0000` unless `views` says otherwise. The per-source rate limit stays on, its cost counted,
    but above any one load generator's rate unless `rate_limit` says otherwise (the bench asks
    from one or two addresses, a host's machines each from its own)."""
    port, metrics = free_port(), free_port()
    config: dict[str, object] = {
        "listen": [{"address": address, "port": port}],
        "registry": {"backend": "files", "path": str(registry)} if isinstance(registry, Path) else registry,
        "zones": {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"},
        "views": views if views is not None else [{"source": "127.0.0.0/8", "network": "net0000"}],
        "region": "iad",
        "ttl": 5,
        "metrics": {"address": "127.0.0.1", "port": metrics},
        "server_id": "bench",
        "rate_limit": rate_limit if rate_limit is not None else {"qps": 10_000_000},
    }
    if upstream is not None:
        config["upstreams"] = [f"127.0.0.1:{upstream}"]
    else:
        config["forward"] = {"enabled": False}
    if workers > 1:
        config["workers"] = workers
    path = out / f"internal-dns-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = _spawn([str(VENV_BIN / "internal-dns"), "serve", "-c", str(path)], out / f"internal-dns-{port}.log", cpus)
    return Server("internal-dns", port, process, metrics, path)


def internal_dns_again(out: Path, server: Server, *, cpus: str | None = SERVER_CPU) -> Server:
    """internal-dns started once more on the config (and so the ports) of `server`, once stopped."""
    assert server.config is not None and server.process.poll() is not None
    log = out / f"internal-dns-{server.port}-again.log"
    process = _spawn([str(VENV_BIN / "internal-dns"), "serve", "-c", str(server.config)], log, cpus)
    return Server(server.name, server.port, process, server.metrics_port, server.config)


def twisted_names(out: Path, data: Path, *, upstream: int | None = None) -> Server:
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "twisted_names_server.py"), "--port", str(port), "--data", str(data)]
    if upstream is not None:
        command += ["--upstream", f"127.0.0.1:{upstream}"]
    return Server("twisted-names", port, _spawn(command, out / f"twisted-{port}.log", SERVER_CPU))


def dnsmasq(out: Path, lines: list[str], name: str = "dnsmasq", cpus: str | None = SERVER_CPU) -> Server:
    port = free_port()
    conf = out / f"{name}-{port}.conf"
    common = [
        f"port={port}",
        "listen-address=127.0.0.1",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "pid-file=",
        "user=root",
        "group=root",
    ]
    conf.write_text("\n".join(common + lines) + "\n")
    return Server(name, port, _spawn(["dnsmasq", "-k", f"--conf-file={conf}"], out / f"{name}-{port}.log", cpus))


def dnsmasq_authoritative(out: Path, hosts: Path, records: Path) -> Server:
    return dnsmasq(out, [f"addn-hosts={hosts}", f"conf-file={records}", "local=/internal/", "local=/flycast/", "local-ttl=5"])


def dnsmasq_upstream(out: Path, hosts: Path, domain: str) -> Server:
    """The upstream of workload (c); it shares the servers' core only while caches are cold."""
    return dnsmasq(out, [f"addn-hosts={hosts}", f"local=/{domain}/", "local-ttl=3600"], name="upstream", cpus=None)


def dnsmasq_forwarding(out: Path, upstream: int) -> Server:
    return dnsmasq(out, [f"server=127.0.0.1#{upstream}", "cache-size=10000"], name="dnsmasq-forward")


def dnsmasq_both(out: Path, hosts: Path, records: Path, upstream: int) -> Server:
    """dnsmasq as a host's resolver: the private names from a hosts file, the rest forwarded."""
    return dnsmasq(
        out,
        [
            f"addn-hosts={hosts}",
            f"conf-file={records}",
            "local=/internal/",
            "local=/flycast/",
            "local-ttl=5",
            f"server=127.0.0.1#{upstream}",
            "cache-size=10000",
        ],
        name="dnsmasq-both",
    )
