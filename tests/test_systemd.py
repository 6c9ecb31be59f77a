"""Running under systemd: the unit in deploy/ (checked by `systemd-analyze verify`), and the notify
protocol, against a real AF_UNIX datagram socket standing in for systemd's: READY=1 once a
snapshot serves (not before), WATCHDOG=1 fed from the reactor, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import INTERNAL_DNS, ROOT, STOP_WAIT, Process, ask, serve
from tests.test_cli import write_config

UNIT = ROOT / "deploy" / "internal-dns@.service"


def test_the_unit_asks_for_what_a_host_needs() -> None:
    unit = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30",
        "Restart=on-failure",
        "DynamicUser=yes",
        "User=internal-dns",  # one dynamic user for every instance: SO_REUSEPORT shares only within a user
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "KillMode=mixed",
    ):
        assert line in unit.splitlines(), line


def test_the_unit_is_valid(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: `make test` installs it (the systemd package)")
    # Its ExecStart names an installed copy; verify checks that the program exists, so point it here.
    unit = UNIT.read_text().replace("/opt/internal-dns/.venv/bin/internal-dns", INTERNAL_DNS)
    (tmp_path / UNIT.name).write_text(unit)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "internal-dns@a.service")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", str(tmp_path / "internal-dns@a.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = float(security.stdout.rsplit("Overall exposure level for internal-dns@a.service:", 1)[1].split()[0])
    assert exposure <= 2.5, security.stdout  # systemd's own scale: 2.0 is "OK", 10 "UNSAFE"


class FakeSystemd:
    """The socket systemd listens on for notifications: a path, or a name in the abstract namespace."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[str] = []

    def read(self, seconds: float) -> list[str]:
        """What came within `seconds`, each message's lines joined by `|`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recv(4096).decode().replace("\n", "|"))
            except TimeoutError:
                break
        return self.received

    def wait_for(self, prefix: str, seconds: float = 60.0) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self.received:
                if message.startswith(prefix):
                    return message
            self.read(0.1)
        pytest.fail(f"systemd was never told {prefix}: {self.received}")


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@internal-dns-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = FakeSystemd(address)
    yield fake
    fake.sock.close()


def test_ready_once_a_snapshot_serves_then_the_watchdog_then_stopping(
    tmp_path: Path, registry: Path, processes: list[Process], systemd: FakeSystemd
) -> None:
    broken = registry / "zz-broken.yaml"
    broken.write_text("apps: [{name: x, network: nowhere}]\n")  # the registry does not load at first
    env = {**os.environ, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "200000"}
    quick = {"backend": "files", "path": "zones/", "poll_interval": 0.1}
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port, registry=quick), env=env, answering=False)
    systemd.wait_for("STATUS=loading the registry")
    systemd.read(1.0)
    assert not any(m.startswith("READY=1") for m in systemd.received), systemd.received  # listening, but no snapshot
    assert any(m == "WATCHDOG=1" for m in systemd.received)  # the reactor is alive all the same
    assert ask(port, "my-app.internal", timeout=2).rcode_text == "SERVFAIL"
    broken.unlink()
    ready = systemd.wait_for("READY=1")
    assert ready.startswith("READY=1|STATUS=serving 18 machines")
    assert ask(port, "my-app.internal", timeout=2).rcode_text == "NOERROR"
    before = len(systemd.received)
    systemd.read(1.0)
    fed = [m for m in systemd.received[before:] if m == "WATCHDOG=1"]
    assert 5 <= len(fed) <= 15, fed  # every 0.1 s: half of WATCHDOG_USEC
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_WAIT) == 0
    systemd.read(0.5)
    assert "STOPPING=1" in systemd.received


def test_without_systemd_nothing_is_sent(tmp_path: Path, registry: Path, processes: list[Process]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port), env=env)
    assert ask(port, "my-app.internal", timeout=2).rcode_text == "NOERROR"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_WAIT) == 0
    assert "systemd notification" not in proc.stderr()


def test_a_watchdog_meant_for_another_process_is_left_alone(
    tmp_path: Path, registry: Path, processes: list[Process], systemd: FakeSystemd
) -> None:
    env = {**os.environ, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    serve(processes, tmp_path, lambda port: write_config(tmp_path, port), env=env)
    systemd.wait_for("READY=1")
    systemd.read(0.5)
    assert "WATCHDOG=1" not in systemd.received
