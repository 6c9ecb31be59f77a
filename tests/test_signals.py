"""SPEC §9: SIGHUP reloads the registry at once and applies what config can change while serving,
logging what takes a restart; it never ends the process. Run as an operator runs it: a real
`internal-dns serve` (and `twistd`), signalled, its log read from a file.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest
import yaml

from tests.processes import STOP_WAIT, Process, ask, serve
from tests.processes import eventually as processes_eventually
from tests.test_cli import twistd, write_config

WAIT = 15.0


def eventually(condition: Callable[[], Any], what: str) -> Any:
    return processes_eventually(condition, what, WAIT)


def stop_machine(registry: Path, mid: str) -> None:
    path = registry / "personal.yaml"
    data = yaml.safe_load(path.read_text())
    for machine in data["machines"]:
        if machine["id"] == mid:
            machine["state"] = "stopped"
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def hangup(proc: Process, count: int) -> None:
    """SIGHUP, then wait until the server has logged its `count`th reload."""
    proc.send_signal(signal.SIGHUP)
    eventually(lambda: output(proc).count("reloading: the config from") >= count, f"reload {count}")
    assert proc.poll() is None, output(proc)


def output(proc: Process) -> str:
    """What it logged: twistd logs to standard output, `internal-dns serve` to standard error."""
    return proc.stdout() + proc.stderr()


def server_id(port: int) -> str:
    query = dns.message.make_query("id.server", "TXT", rdclass="CH")
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    return b"".join(rd.strings[0] for rrset in reply.answer for rd in rrset).decode()


def addresses(port: int) -> set[str]:
    return set(ask(port, "my-app.internal", timeout=2).addresses())


@pytest.mark.parametrize("runner", ["serve", "twistd"])
def test_sighup_reloads_the_registry_at_once_and_never_ends_the_process(
    tmp_path: Path, registry: Path, processes: list[Process], runner: str
) -> None:
    # A poll so rare that only the signal can explain a reload within the test.
    rare_polls = {"backend": "files", "path": "zones/", "poll_interval": 3600}
    proc, port = serve(
        processes,
        tmp_path,
        lambda port: write_config(tmp_path, port, registry=rare_polls),
        twistd if runner == "twistd" else None,
    )
    before = addresses(port)
    assert len(before) == 3
    stop_machine(registry, "148e21dad76789")
    hangup(proc, 1)
    eventually(lambda: len(addresses(port)) == 2, "the stopped machine to leave the answer")
    for n in (2, 3, 4):  # again and again: still serving
        hangup(proc, n)
        assert len(addresses(port)) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_WAIT) in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
    assert "Traceback" not in proc.stdout() + proc.stderr()


def test_sighup_applies_the_config_keys_that_can_change_and_names_the_others(
    tmp_path: Path, registry: Path, processes: list[Process]
) -> None:
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port))
    assert ask(port, "my-app.internal").msg.answer[0].ttl == 5
    assert server_id(port) == "cli-test"
    write_config(tmp_path, port, ttl=30, server_id="renamed", listen=[{"address": "127.0.0.1", "port": port + 1}])
    hangup(proc, 1)
    text = eventually(lambda: "config: applied" in proc.stderr() and proc.stderr(), "the config to be applied")
    assert "config: applied server_id, ttl" in text
    assert "config: listen changed: takes effect when the server is restarted" in text
    assert ask(port, "my-app.internal").msg.answer[0].ttl == 30  # rendered again, with the new TTL
    assert server_id(port) == "renamed"
    assert proc.poll() is None


def test_sighup_with_a_broken_config_keeps_the_running_one(tmp_path: Path, registry: Path, processes: list[Process]) -> None:
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port))
    config = tmp_path / "config.yaml"
    config.write_text("listen: [{address: nowhere}]\nttl: 99\n")
    hangup(proc, 1)
    eventually(lambda: "config not reloaded, the running one stays" in proc.stderr(), "the refusal")
    assert f"{config}: listen[0].address: not an IP address: 'nowhere'" in proc.stderr()
    reply = ask(port, "my-app.internal")
    assert reply.msg.answer[0].ttl == 5 and len(reply.addresses()) == 3
    assert proc.poll() is None


def test_sighup_reopens_the_query_log(tmp_path: Path, registry: Path, processes: list[Process]) -> None:
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port, query_log="queries.log"))
    queries = tmp_path / "queries.log"
    ask(port, "before.internal")
    eventually(lambda: queries.exists() and "before.internal." in queries.read_text(), "the first line")
    rotated = tmp_path / "queries.log.1"
    queries.rename(rotated)  # as logrotate does, then it signals
    hangup(proc, 1)
    eventually(queries.exists, "the new file")
    ask(port, "after.internal")
    eventually(lambda: "after.internal." in queries.read_text(), "the line in the new file")
    assert "after.internal." not in rotated.read_text()


def test_the_workers_supervisor_passes_sighup_on(tmp_path: Path, registry: Path, processes: list[Process]) -> None:
    rare_polls = {"backend": "files", "path": "zones/", "poll_interval": 3600}
    proc, port = serve(processes, tmp_path, lambda port: write_config(tmp_path, port, workers=2, registry=rare_polls))
    eventually(lambda: proc.stderr().count("listening on 127.0.0.1") >= 2, "both workers")
    stop_machine(registry, "148e21dad76789")
    proc.send_signal(signal.SIGHUP)
    eventually(lambda: proc.stderr().count("reloading: the config from") >= 2, "both workers to reload")
    # Each worker answers a share of the queries (by flow): every one of them now has two addresses.
    eventually(lambda: all(len(addresses(port)) == 2 for _ in range(20)), "both workers' answers")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_WAIT) == 0
