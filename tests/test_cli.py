"""SPEC §9: the commands, run as an operator runs them (the venv's `internal-dns` and `twistd`).

`check` validates the config and the registry; `serve` and `twistd -n internal-dns` answer on
their listeners and stop cleanly on SIGTERM/SIGINT; a bad config or a port in use is a message
and a non-zero exit, never a traceback. Waiting for a started process is a bounded poll with a
query (the process is real and runs on the real clock).
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest
import yaml

from bench.peers import free_port
from tests.processes import INTERNAL_DNS, ROOT, STOP_WAIT, TWISTD, Process, ask, serve

MY_APP = sorted(["fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"])


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


# --- check ---------------------------------------------------------------------------------


def test_check_the_example_config() -> None:
    result = run(INTERNAL_DNS, "check", "-c", "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("config.example.yaml: ok; registry zones: 4 networks, 9 apps, 18 machines, 4 peers, 35 regions\n")
    assert result.stderr == ""


def test_check_a_broken_registry_names_every_fault(tmp_path: Path, registry: Path) -> None:
    config = write_config(tmp_path, 5353)
    (registry / "zz-broken.yaml").write_text(
        "apps:\n"
        "  - {name: bad_app, network: personal}\n"
        "machines:\n"
        '  - {id: "148e21dad76789", app: api, region: iad, ip6: "fdaa:0:18:a7b:99::1"}\n'
        '  - {id: "99aa", app: api, region: xyz, ip6: "fdaa:0:18:a7b:99::2"}\n'
        '  - {id: "99ab", app: api, region: iad, ip6: "fdaa:0:99::3"}\n'
        "peers:\n"
        '  - {name: vpn, network: nowhere, ip6: "fdaa:0:18:a7b:99::4"}\n'
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
        (
            {"listen": [{"address": "127.0.0.1", "port": 5353, "network": "nowhere"}]},
            "listen[0].network: unknown network 'nowhere'",
        ),
        ({"region": "xyz"}, "region: unknown region 'xyz'"),
    ],
    ids=["view-network", "listener-network", "region"],
)
def test_check_a_config_naming_what_the_registry_lacks(
    tmp_path: Path, registry: Path, overrides: dict[str, Any], message: str
) -> None:
    config = write_config(tmp_path, 5353, **overrides)
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode != 0
    assert f"{config}: {message}" in result.stderr


# --- serve ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_and_stops_cleanly(tmp_path: Path, registry: Path, processes: list[Process], signum: int) -> None:
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port))
    reply = ask(port, "my-app.internal", timeout=3)
    assert (reply.rcode_text, reply.flag("AA"), sorted(reply.addresses())) == ("NOERROR", True, MY_APP)
    over_tcp = dns.query.tcp(dns.message.make_query("_apps.internal", "TXT"), "127.0.0.1", port=port, timeout=5)
    assert [b"".join(rd.strings) for rrset in over_tcp.answer for rd in rrset] == [b"api,cron,docs,my-app"]

    proc.send_signal(signum)
    out, err = proc.communicate(timeout=STOP_WAIT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"UDP Port {port} Closed" in err and f"TCP Port {port} Closed" in err


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


# --- twistd --------------------------------------------------------------------------------


def test_twistd_plugin_answers_and_stops_on_sigterm(tmp_path: Path, registry: Path, processes: list[Process]) -> None:
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port), twistd)
    reply = ask(port, "my-app.internal", timeout=3)
    assert (reply.rcode_text, reply.flag("AA"), sorted(reply.addresses())) == ("NOERROR", True, MY_APP)

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=STOP_WAIT)
    # twistd ends by re-raising the signal it stopped on, so its status is "killed by SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM), (out, err)
    log = out + err
    assert "Traceback" not in log
    assert f"UDP Port {port} Closed" in log and "Server Shut Down." in log


def twistd(config: Path) -> list[str]:
    return [TWISTD, "-n", "--pidfile=", "internal-dns", "-c", str(config)]


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
