"""SPEC §9: the commands, run as an operator runs them (the venv's `internal-dns` and `twistd`).

`check` validates the config and the registry; `serve` and `twistd -n internal-dns` answer on
their listeners and stop cleanly on SIGTERM/SIGINT; a bad config or a port in use is a message
and a non-zero exit, never a traceback. Waiting for a started process is a bounded poll with a
query (the process is real and runs on the real clock).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest
import yaml

from bench.peers import free_port
from tests.dnsclient import Reply

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
INTERNAL_DNS = str(BIN / "internal-dns")
TWISTD = str(BIN / "twistd")
START_WAIT = 20.0  # seconds a started process may take to answer
STOP_WAIT = 15.0

MY_APP = sorted(["fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"])


def port_is_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
            return True
    except OSError:
        return False


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    target = tmp_path / "zones"
    shutil.copytree(ROOT / "zones", target)
    return target


def write_config(folder: Path, port: int, **overrides: Any) -> Path:
    raw: dict[str, Any] = {
        "listen": [{"address": "127.0.0.1", "port": port}],
        "registry": {"backend": "files", "path": "zones/"},  # relative to the config file
        "zones": {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"},
        "views": [{"source": "127.0.0.0/8", "network": "personal"}],
        "region": "iad",
        "ttl": 5,
        "server_id": "cli-test",
    }
    raw.update(overrides)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


def ask(port: int, name: str, rdtype: str = "AAAA", timeout: float = 0.5) -> Reply:
    query = dns.message.make_query(name, rdtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        wire, _ = sock.recvfrom(65535)
    return Reply.decode(wire)


def wait_until_answering(proc: subprocess.Popen[str], port: int) -> Reply:
    """Poll with a query until the process answers (bounded); fail early if it exits."""
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited with {proc.returncode} before answering:\n{out}\n{err}")
        try:
            reply = ask(port, "my-app.internal")
        except (OSError, dns.exception.DNSException):  # not bound yet: refused or no reply
            time.sleep(0.1)
            continue
        if reply.rcode_text != "SERVFAIL":  # SERVFAIL until the first snapshot has loaded
            return reply
        time.sleep(0.1)
    pytest.fail(f"no answer on port {port} within {START_WAIT}s")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Started processes; any still running after the test is killed (by its own pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_WAIT)


def start(processes: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(proc)
    return proc


# --- check ---------------------------------------------------------------------------------


def test_check_the_example_config() -> None:
    result = run(INTERNAL_DNS, "check", "-c", "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "config.example.yaml: ok; registry zones: 4 networks, 9 apps, 17 machines, 4 peers, 35 regions\n"
    )
    assert result.stderr == ""


def test_check_a_broken_registry_names_every_fault(tmp_path: Path, registry: Path) -> None:
    config = write_config(tmp_path, 5353)
    (registry / "zz-broken.yaml").write_text(
        "apps:\n"
        "  - {name: bad_app, network: personal}\n"
        "machines:\n"
        "  - {id: \"148e21dad76789\", app: api, region: iad, ip6: \"fdaa:0:18:a7b:99::1\"}\n"
        "  - {id: \"99aa\", app: api, region: xyz, ip6: \"fdaa:0:18:a7b:99::2\"}\n"
        "  - {id: \"99ab\", app: api, region: iad, ip6: \"fdaa:0:99::3\"}\n"
        "peers:\n"
        "  - {name: vpn, network: nowhere, ip6: \"fdaa:0:18:a7b:99::4\"}\n"
    )
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    broken = registry / "zz-broken.yaml"
    expected = [
        f"{broken}: app bad_app: name 'bad_app' is not a DNS label",
        f"{broken}: machine 148e21dad76789: duplicate machine id (first in {registry / 'personal.yaml'})",
        f"{broken}: machine 99aa: unknown region 'xyz'",
        f"{broken}: machine 99ab: ip6 fdaa:0:99::3 is outside network personal's prefix fdaa:0:18::/48",
        f"{broken}: peer vpn: unknown network 'nowhere'",
    ]
    for line in expected:
        assert line in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_check_a_registry_yaml_error_names_the_file_and_line(tmp_path: Path, registry: Path) -> None:
    config = write_config(tmp_path, 5353)
    (registry / "personal.yaml").write_text((registry / "personal.yaml").read_text() + "peers: [unclosed\n")
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode == 1
    assert f"{registry / 'personal.yaml'}: line " in result.stderr and "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ttl": -1}, "ttl: must be an integer from 0"),
        ({"zones": {"internal": "dnsmasq"}}, "zones.internal: unknown scheme 'dnsmasq'"),
        ({"listen": [{"address": "127.0.0.1", "port": 70000}]}, "listen[0].port: must be an integer from 0 to 65535"),
        ({"verbose": True}, "verbose: unknown key"),
    ],
    ids=["ttl", "scheme", "port", "unknown-key"],
)
def test_check_a_bad_config_names_the_key(tmp_path: Path, registry: Path, overrides: dict[str, Any], message: str) -> None:
    config = write_config(tmp_path, 5353, **overrides)
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode != 0
    assert f"{config}: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_a_missing_config(tmp_path: Path) -> None:
    result = run(INTERNAL_DNS, "check", "-c", str(tmp_path / "nowhere.yaml"))
    assert result.returncode != 0
    assert f"{tmp_path / 'nowhere.yaml'}: cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"views": [{"source": "127.0.0.0/8", "network": "nowhere"}]}, "views[0].network: unknown network 'nowhere'"),
        ({"listen": [{"address": "127.0.0.1", "port": 5353, "network": "nowhere"}]}, "listen[0].network: unknown network 'nowhere'"),
        ({"region": "xyz"}, "region: unknown region 'xyz'"),
    ],
    ids=["view-network", "listener-network", "region"],
)
def test_check_a_config_naming_what_the_registry_lacks(tmp_path: Path, registry: Path, overrides: dict[str, Any], message: str) -> None:
    config = write_config(tmp_path, 5353, **overrides)
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode != 0
    assert f"{config}: {message}" in result.stderr


# --- serve ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_and_stops_cleanly(tmp_path: Path, registry: Path, processes: list[subprocess.Popen[str]], signum: int) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    proc = start(processes, INTERNAL_DNS, "serve", "-c", str(config))
    reply = wait_until_answering(proc, port)
    assert (reply.rcode_text, reply.flag("AA"), sorted(reply.addresses())) == ("NOERROR", True, MY_APP)
    over_tcp = dns.query.tcp(dns.message.make_query("_apps.internal", "TXT"), "127.0.0.1", port=port, timeout=5)
    assert [b"".join(rd.strings) for rrset in over_tcp.answer for rd in rrset] == [b"api,cron,docs,my-app"]

    proc.send_signal(signum)
    out, err = proc.communicate(timeout=STOP_WAIT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"UDP Port {port} Closed" in err and f"TCP Port {port} Closed" in err
    assert port_is_free(port)


def test_serve_with_a_broken_config_exits_with_the_message(tmp_path: Path, registry: Path) -> None:
    config = write_config(tmp_path, free_port(), listen=[{"address": "localhost", "port": 53}])
    result = run(INTERNAL_DNS, "serve", "-c", str(config))
    assert result.returncode != 0
    assert f"{config}: listen[0].address: not an IP address: 'localhost'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_missing_config_exits_with_the_message(tmp_path: Path) -> None:
    result = run(INTERNAL_DNS, "serve", "-c", str(tmp_path / "nowhere.yaml"))
    assert result.returncode != 0
    assert f"{tmp_path / 'nowhere.yaml'}: cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["udp-taken", "tcp-taken"])
def test_serve_on_a_port_in_use_exits_with_a_clear_message(tmp_path: Path, registry: Path, kind: int) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port)
        result = run(INTERNAL_DNS, "serve", "-c", str(config))
    assert result.returncode != 0
    assert f"cannot start: Couldn't listen on 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert port_is_free(port)  # the half that did bind was let go


# --- twistd --------------------------------------------------------------------------------


def test_twistd_plugin_answers_and_stops_on_sigterm(tmp_path: Path, registry: Path, processes: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    proc = start(processes, TWISTD, "-n", "--pidfile=", "internal-dns", "-c", str(config))
    reply = wait_until_answering(proc, port)
    assert (reply.rcode_text, reply.flag("AA"), sorted(reply.addresses())) == ("NOERROR", True, MY_APP)

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=STOP_WAIT)
    # twistd ends by re-raising the signal it stopped on, so its status is "killed by SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM), (out, err)
    log = out + err
    assert "Traceback" not in log
    assert f"UDP Port {port} Closed" in log and "Server Shut Down." in log
    assert port_is_free(port)


def test_twistd_plugin_with_a_bad_config_exits_non_zero_with_the_reason(tmp_path: Path, registry: Path) -> None:
    config = write_config(tmp_path, free_port(), ttl=-5)
    result = run(TWISTD, "-n", "--pidfile=", "internal-dns", "-c", str(config))
    log = result.stdout + result.stderr
    assert result.returncode != 0  # a supervisor must see the failure
    assert f"config error: {config}: ttl: must be an integer from 0" in log
    assert "Traceback" not in log
    assert "starting up" not in log  # never got as far as the reactor


def test_twistd_plugin_on_a_port_in_use_exits_with_a_clear_message(tmp_path: Path, registry: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port)
        result = run(TWISTD, "-n", "--pidfile=", "internal-dns", "-c", str(config))
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"cannot start: Couldn't listen on 127.0.0.1:{port}" in log
    assert "Traceback" not in log
