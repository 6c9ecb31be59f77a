"""The server as a host runs it (SPEC §2, §6, §9): on port 53 of a wildcard address, in a network
namespace whose loopback holds several networks' resolver and machine addresses, asked by `dig`,
by glibc's and musl's getaddrinfo through resolv.conf, and taken over by a second server without
a lost query.

These need root (network namespaces, port 53) and tools `make test` installs: ip (iproute2), dig,
dnsmasq, gcc and musl-gcc (musl-tools). Without root they are skipped, saying why; as root a
missing tool fails them, since CI runs as root and must run them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EMBEDDED_ZONES
from tests.processes import INTERNAL_DNS, ROOT, STOP_WAIT, Process, eventually

TOOLS = ("ip", "dig", "dnsmasq", "gcc", "musl-gcc")

if os.geteuid() != 0:
    pytestmark = pytest.mark.skip(reason="needs root: network namespaces and port 53 (CI runs as root, and runs these)")

# Addresses on the namespace's loopback: two Fly networks' resolvers and machines, and a Railway
# environment's (dual stack, with a dns4 the test gives it).
PERSONAL_DNS6, OTHER_DNS6 = "fdaa:0:18::3", "fdaa:0:22::3"
LAPTOP = "fdaa:0:18:a7b:d6b:0:a:2"  # personal's peer
OFFICE_VPN = "fdaa:0:22:a7b:d6b:0:a:2"  # other-org's peer
PERSONAL_DNS4, SHOP_DNS4 = "10.18.0.3", "10.250.0.3"
MY_APP_MACHINE4 = "10.18.0.2"
SHOP_WEB4 = "10.250.1.10"
MY_APP = {"fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"}
BILLING = {"fdaa:0:22:a7b:10:4c1d:2e3f:2", "fdaa:0:22:a7b:11:9a8b:7c6d:2"}
WEB4 = {"10.250.1.10", "10.250.1.11"}
UPSTREAM = ("127.0.0.53", 5300)  # a dnsmasq in the namespace, for names the server forwards


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (DEBIAN_PACKAGES in the Makefile)")
    return found


class Namespace:
    """A network namespace of the test's own, with its own /etc/resolv.conf (`ip netns exec`
    puts /etc/netns/NAME/resolv.conf in place of the host's for the commands it runs)."""

    def __init__(self) -> None:
        for name in TOOLS:
            tool(name)
        self.name = f"idns-{uuid.uuid4().hex[:8]}"
        self.etc = Path("/etc/netns") / self.name
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.etc.mkdir(parents=True)
        self.sh("ip link set lo up")
        self.sh("sysctl -q -w net.ipv4.tcp_migrate_req=1")  # as the systemd unit sets it

    def sh(self, command: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.name, "sh", "-c", command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"{command}: {done.stderr or done.stdout}")
        return done.stdout

    def add(self, *addresses: str) -> None:
        for address in addresses:
            self.sh(f"ip addr add {address}/{128 if ':' in address else 32} dev lo nodad")

    def resolv_conf(self, nameserver: str) -> None:
        (self.etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:2\n")

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture
def host() -> Iterator[Namespace]:
    ns = Namespace()
    try:
        ns.add(PERSONAL_DNS6, OTHER_DNS6, LAPTOP, OFFICE_VPN, PERSONAL_DNS4, SHOP_DNS4, MY_APP_MACHINE4, SHOP_WEB4, UPSTREAM[0])
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="module")
def resolvers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """tests/resolve.c built against glibc (gcc) and musl (musl-gcc, static)."""
    out = tmp_path_factory.mktemp("resolve")
    built = {}
    for libc, compiler, flags in (("glibc", "gcc", []), ("musl", "musl-gcc", ["-static"])):
        target = out / f"resolve-{libc}"
        subprocess.run(
            [tool(compiler), *flags, "-O2", "-o", str(target), str(ROOT / "tests" / "resolve.c")], check=True, capture_output=True
        )
        built[libc] = str(target)
    return built


def registry(folder: Path) -> Path:
    """The example registry, with resolver addresses on IPv4 too (dns4) for two networks."""
    target = folder / "zones"
    shutil.copytree(EMBEDDED_ZONES, target)
    for file, network, dns4 in (("personal.yaml", "personal", PERSONAL_DNS4), ("railway.yaml", "shop-production", SHOP_DNS4)):
        data = yaml.safe_load((target / file).read_text())
        for entry in data["networks"]:
            if entry["name"] == network:
                entry["dns4"] = dns4
        (target / file).write_text(yaml.safe_dump(data, sort_keys=False))
    return target


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    return registry(tmp_path)


def host_config(folder: Path, address: str, zones: Path, **overrides: Any) -> Path:
    raw: dict[str, Any] = {
        "listen": [{"address": address, "port": 53}],  # a wildcard: every network's resolver address
        "registry": {"backend": "files", "path": str(zones)},
        "zones": {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"},
        "upstreams": [f"{UPSTREAM[0]}:{UPSTREAM[1]}"],
        "server_id": "host-test",
    }
    raw.update(overrides)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def start(ns: Namespace, processes: list[Process], folder: Path, config: Path, name: str = "server") -> Process:
    proc = Process(ns.command(INTERNAL_DNS, "serve", "-c", str(config)), folder, name=name)
    processes.append(proc)
    return proc


def wait_listening(server: Process, address: str, what: str, count: int = 1) -> None:
    """Until the server (each of its `count` workers) says it listens on `address` port 53."""
    wait_for(lambda: server.stderr().count(f"listening on {address} port 53") == count, what)


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 60.0) -> Any:
    return eventually(condition, what, seconds, every=0.1)


def dig(ns: Namespace, server: str, source: str, name: str, rdtype: str = "AAAA", tcp: bool = False) -> tuple[str, set[str]]:
    """(rcode, the answer's addresses) as dig sees them: dig drops a reply from another address."""
    command = f"dig +tries=1 +time=2 {'+tcp' if tcp else ''} -b {source} @{server} {name} {rdtype}"
    out = ns.sh(command)
    status = next(line.split("status: ")[1].split(",")[0] for line in out.splitlines() if "status: " in line)
    answer = set()
    for line in out.split("ANSWER SECTION:")[1].split("\n\n")[0].splitlines()[1:] if "ANSWER SECTION:" in out else []:
        answer.add(line.split()[-1])
    return status, answer


def resolve(ns: Namespace, program: str, nameserver: str, name: str, family: str = "") -> tuple[int, set[str]]:
    """(exit status, addresses) of a C library's getaddrinfo, with this nameserver in resolv.conf."""
    ns.resolv_conf(nameserver)
    done = subprocess.run(ns.command(program, name, *([family] if family else [])), capture_output=True, text=True, timeout=30)
    return done.returncode, set(done.stdout.split())


@pytest.fixture
def upstream(host: Namespace, tmp_path: Path, processes: list[Process]) -> Process:
    """dnsmasq in the namespace: `upstream.test` names, NXDOMAIN for the rest of that zone."""
    proc = Process(
        host.command(
            tool("dnsmasq"),
            "-k",
            "--conf-file=/dev/null",
            f"--port={UPSTREAM[1]}",
            f"--listen-address={UPSTREAM[0]}",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/upstream.test/",
            "--host-record=www.upstream.test,192.0.2.7",
            "--user=root",
            "--pid-file=",
        ),
        tmp_path,
        name="dnsmasq",
    )
    processes.append(proc)
    wait_for(lambda: _answers(host), "the upstream")
    return proc


def _answers(ns: Namespace) -> bool:
    try:
        return ns.sh(f"dig +tries=1 +time=1 -p {UPSTREAM[1]} @{UPSTREAM[0]} www.upstream.test A +short").strip() == "192.0.2.7"
    except AssertionError:
        return False


# --- a wildcard listener answers from the address asked --------------------------------------------


def test_a_wildcard_ipv6_listener_serves_every_networks_resolver_address(
    host: Namespace, tmp_path: Path, zones: Path, processes: list[Process], resolvers: dict[str, str]
) -> None:
    server = start(host, processes, tmp_path, host_config(tmp_path, "::", zones))
    wait_listening(server, "::", "the server to listen")
    # dig from each network's own machine, to each network's resolver address: its own answers.
    for tcp in (False, True):
        assert dig(host, PERSONAL_DNS6, LAPTOP, "my-app.internal", tcp=tcp) == ("NOERROR", MY_APP)
        assert dig(host, OTHER_DNS6, OFFICE_VPN, "billing.internal", tcp=tcp) == ("NOERROR", BILLING)
        # ...and never another's: the source's network decides first.
        assert dig(host, PERSONAL_DNS6, OFFICE_VPN, "my-app.internal", tcp=tcp)[0] == "NXDOMAIN"
        assert dig(host, OTHER_DNS6, LAPTOP, "billing.internal", tcp=tcp)[0] == "NXDOMAIN"
        # A source no network holds (a WireGuard peer's tunnel address, here ::1) is answered in
        # the view of the resolver address it asked.
        assert dig(host, OTHER_DNS6, "::1", "billing.internal", tcp=tcp) == ("NOERROR", BILLING)
        assert dig(host, PERSONAL_DNS6, "::1", "billing.internal", tcp=tcp)[0] == "NXDOMAIN"
    # IPv4 on the same socket, to a network's dns4, from outside every network.
    assert dig(host, SHOP_DNS4, "127.0.0.1", "web.railway.internal", "A") == ("NOERROR", WEB4)
    # glibc and musl through resolv.conf: the kernel picks the source, the reply must come back
    # from the address asked, and each network's resolver gives that network's names.
    for libc, program in resolvers.items():
        assert resolve(host, program, PERSONAL_DNS6, "my-app.internal", "6") == (0, MY_APP), libc
        assert resolve(host, program, OTHER_DNS6, "billing.internal", "6") == (0, BILLING), libc
        assert resolve(host, program, PERSONAL_DNS6, "billing.internal", "6")[0] != 0, libc
        assert resolve(host, program, OTHER_DNS6, "my-app.internal", "6")[0] != 0, libc
        # Both families at once (musl drops the whole lookup if either answer is NXDOMAIN).
        assert resolve(host, program, PERSONAL_DNS6, "my-app.internal") == (0, MY_APP), libc


def test_a_wildcard_ipv4_listener_serves_every_networks_resolver_address(
    host: Namespace, tmp_path: Path, zones: Path, processes: list[Process], resolvers: dict[str, str]
) -> None:
    server = start(host, processes, tmp_path, host_config(tmp_path, "0.0.0.0", zones))
    wait_listening(server, "0.0.0.0", "the server to listen")
    for tcp in (False, True):
        assert dig(host, PERSONAL_DNS4, MY_APP_MACHINE4, "my-app.internal", tcp=tcp) == ("NOERROR", MY_APP)
        assert dig(host, SHOP_DNS4, SHOP_WEB4, "web.railway.internal", "A", tcp=tcp) == ("NOERROR", WEB4)
        assert dig(host, SHOP_DNS4, MY_APP_MACHINE4, "web.railway.internal", "A", tcp=tcp)[0] == "NXDOMAIN"
        assert dig(host, SHOP_DNS4, "127.0.0.1", "web.railway.internal", "A", tcp=tcp) == ("NOERROR", WEB4)
    for libc, program in resolvers.items():
        assert resolve(host, program, SHOP_DNS4, "web.railway.internal", "4") == (0, WEB4), libc
        assert resolve(host, program, PERSONAL_DNS4, "my-app.internal", "6") == (0, MY_APP), libc
        assert resolve(host, program, PERSONAL_DNS4, "web.railway.internal", "4")[0] != 0, libc


def test_a_network_added_later_is_served_on_its_resolver_address(
    host: Namespace, tmp_path: Path, zones: Path, processes: list[Process]
) -> None:
    config = host_config(tmp_path, "::", zones, registry={"backend": "files", "path": str(zones), "poll_interval": 0.2})
    server = start(host, processes, tmp_path, config)
    wait_listening(server, "::", "the server to listen")
    lab_dns = "fdaa:0:99::3"
    host.add(lab_dns)
    assert dig(host, lab_dns, "::1", "probe.internal")[0] == "REFUSED"  # no network has that address yet
    (zones / "lab.yaml").write_text(
        yaml.safe_dump(
            {
                "networks": [{"name": "lab", "prefix6": "fdaa:0:99::/48"}],
                "apps": [{"name": "probe", "network": "lab"}],
                "machines": [{"id": "ab", "app": "probe", "region": "iad", "ip6": "fdaa:0:99:1::2"}],
            }
        )
    )
    wait_for(lambda: dig(host, lab_dns, "::1", "probe.internal") == ("NOERROR", {"fdaa:0:99:1::2"}), "the new network's answers")


# --- upgrades that lose nothing --------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers"])
def test_a_second_server_takes_over_without_a_lost_query(
    host: Namespace, tmp_path: Path, zones: Path, processes: list[Process], upstream: Process, workers: int
) -> None:
    config = host_config(tmp_path, "::", zones, workers=workers, metrics={"address": "::1", "port": 9153})
    old = start(host, processes, tmp_path, config, name="old")
    wait_listening(old, "::", "the old server", workers)
    result = tmp_path / "probe.json"
    probe = Process(
        host.command(
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "tests.probe",
            "--server",
            PERSONAL_DNS6,
            "--source",
            LAPTOP,
            str(result),
        ),
        tmp_path,
        name="probe",
    )
    processes.append(probe)
    # Real processes on the real clock: each pause is a second of the probe's traffic (500 queries)
    # before the new server, while both serve, and after the old one has gone.
    time.sleep(1.0)
    new = start(host, processes, tmp_path, config, name="new")
    # The new one loads its registry, then binds beside the old one: from then on both answer.
    wait_listening(new, "::", "the new server to listen", workers)
    time.sleep(1.0)
    old.send_signal(signal.SIGTERM)  # steps aside, answers what it received, exits
    assert old.wait(STOP_WAIT) == 0, old.stderr()
    time.sleep(1.0)
    probe.send_signal(signal.SIGTERM)
    assert probe.wait(30) == 0, probe.stderr()
    found = json.loads(result.read_text())
    assert found["sent"] > 1500 and found["lost"] == 0 and found["wrong"] == 0, found
    assert found["answered"] == found["sent"] and set(found["rcodes"]) <= {"NOERROR", "NXDOMAIN"}, found
    assert "SERVFAIL" not in found["rcodes"]
    # The new server had its share before the old one went, and all of it after.
    served = metric_sum(host, "internal_dns_requests_total", workers)
    assert served > found["sent"] / 4, (served, found)
    assert "stopping: new queries go elsewhere" in old.stderr() and "stopped" in old.stderr()


def metric_sum(ns: Namespace, name: str, workers: int) -> float:
    total = 0.0
    for i in range(workers):
        out = ns.sh(
            f'{ROOT / ".venv" / "bin" / "python"} -c "import urllib.request;'
            f" print(urllib.request.urlopen('http://[::1]:{9153 + i}/metrics').read().decode())\""
        )
        total += sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(name + "{"))
    return total
