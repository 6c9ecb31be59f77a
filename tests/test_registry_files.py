"""SPEC §9: a registry file that cannot be read, for any reason, rejects the snapshot with a line
naming it; it is never taken as deleted, and the last good snapshot keeps serving.

Broken symbolic links and a directory where a file was are made in a server's own registry folder;
a file that may not be read needs a process whom its mode bits stop, which root is not, so that
case runs a real `internal-dns serve`, as root without the capabilities that override file modes
(`setpriv`) when the tests run as root.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
import yaml

from bench.peers import free_port
from internal_dns.registry.model import RegistryError, Snapshot
from tests.conftest import EMBEDDED_ZONES, RunningServer
from tests.processes import INTERNAL_DNS, Process, serve
from tests.test_cli import run

BILLING = {"fdaa:0:22:a7b:10:4c1d:2e3f:2", "fdaa:0:22:a7b:11:9a8b:7c6d:2"}


def billing(server: RunningServer) -> set[str]:
    """other-org's app, as other-org sees it: served only while other-org.yaml's content is."""
    return set(server.ask("billing.internal", "AAAA", source="127.0.0.2").addresses())


def break_file(path: Path, how: str) -> None:
    path.unlink()
    if how == "dangling symlink":
        path.symlink_to(path.parent / "moved-away.yaml")
    elif how == "symlink loop":
        path.symlink_to(path.name)  # a link to itself
    elif how == "directory":
        path.mkdir()
        (path / "inside.yaml").write_text("apps: []\n")  # whatever it holds, it is not the file
    else:
        raise ValueError(how)


REASONS = {
    "dangling symlink": "a dangling symbolic link (to {folder}/moved-away.yaml, which does not exist)",
    "symlink loop": "a symbolic link that loops (to other-org.yaml)",
    "directory": "a directory, not a file",
}


@pytest.mark.parametrize("how", list(REASONS))
def test_an_unreadable_file_rejects_the_snapshot_and_the_last_one_serves(
    server: RunningServer, registry_dir: Path, log_lines: list[str], how: str
) -> None:
    assert billing(server) == BILLING
    path = registry_dir / "other-org.yaml"
    content = path.read_bytes()
    break_file(path, how)
    outcome = server.poll()
    assert isinstance(outcome, RegistryError)
    line = f"{path}: file: cannot be read: {REASONS[how].format(folder=registry_dir)}"
    assert outcome.problems == [line]
    assert any(line in logged for logged in log_lines)
    assert billing(server) == BILLING  # its networks were not dropped
    assert server.service.store.rejections == 1
    # Mended: served from the file again.
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.write_bytes(content)
    assert isinstance(server.poll(), Snapshot)
    assert billing(server) == BILLING


@pytest.mark.parametrize("how", list(REASONS))
def test_check_names_an_unreadable_file(tmp_path: Path, how: str) -> None:
    registry = tmp_path / "zones"
    shutil.copytree(EMBEDDED_ZONES, registry)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 5353}], "registry": {"path": "zones"}}))
    break_file(registry / "other-org.yaml", how)
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode == 1
    assert f"{registry / 'other-org.yaml'}: file: cannot be read: {REASONS[how].format(folder=registry)}" in result.stderr


# --- a file the server may not read -------------------------------------------------------------


def without_file_override(command: list[str]) -> list[str]:
    """The command, unable to read what file modes forbid: as it is for a user, and for root
    with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from its bounding set."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.fail("running as root, and setpriv (util-linux) is not installed to drop root's file-mode override")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *command]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name}")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, dns.exception.DNSException):  # not up yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_file_or_folder_the_server_may_not_read_is_named_and_nothing_is_dropped(
    tmp_path: Path, processes: list[Process]
) -> None:
    registry = tmp_path / "zones"
    shutil.copytree(EMBEDDED_ZONES, registry)
    more = registry / "more"
    more.mkdir()
    (registry / "other-org.yaml").rename(more / "other-org.yaml")  # in a folder of its own
    config = tmp_path / "config.yaml"
    chosen = {}

    def config_for(port: int) -> Path:
        chosen["metrics"] = free_port()  # a port of its own on each attempt: either may be taken
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": [{"address": "127.0.0.1", "port": port}],
                    "registry": {"path": "zones", "poll_interval": 0.1},
                    "views": [
                        {"source": "127.0.0.2/32", "network": "other-org"},
                        {"source": "127.0.0.0/8", "network": "personal"},
                    ],
                    "metrics": {"address": "127.0.0.1", "port": chosen["metrics"]},
                    "forward": {"enabled": False},
                }
            )
        )
        return config

    proc, port = serve(
        processes, tmp_path, config_for, lambda config: without_file_override([INTERNAL_DNS, "serve", "-c", str(config)])
    )
    metrics = chosen["metrics"]
    wait_for(lambda: _billing(port) == BILLING, "the first answers")
    path = more / "other-org.yaml"
    for broken, line, rejections in (
        (path, f"{path}: file: cannot be read: Permission denied", 1),
        (more, f"{more}: folder: cannot be read (Permission denied)", 2),
    ):
        broken.chmod(0o000)
        wait_for(lambda n=rejections: metric(metrics, "internal_dns_registry_rejected_total") >= n, f"the rejection of {broken}")
        assert _billing(port) == BILLING  # still served
        assert line in proc.stderr()
        broken.chmod(0o755 if broken.is_dir() else 0o644)  # a chmod alone, the content as it was
        wait_for(lambda n=rejections: metric(metrics, "internal_dns_registry_generation") >= n + 1, "the snapshot after the mend")
        assert _billing(port) == BILLING


def _billing(port: int) -> set[str]:
    reply = dns.query.udp(
        dns.message.make_query("billing.internal", "AAAA"), "127.0.0.1", port=port, source="127.0.0.2", timeout=2
    )
    return {rd.address for rrset in reply.answer for rd in rrset}
