"""The optional query log (SPEC §8): one JSON line per query with every field, to a file or to
standard output, nothing when off; a relative path is relative to the config file, and `check`
refuses a log that could not be written.

The file cases run a server in-process (its clock injected, so `time` is known); standard
output, and the path relative to the config file, are shown with `internal-dns serve` run as an
operator runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from internal_dns.config import load_config
from tests.conftest import ROOT, RunningServer, on_reactor
from tests.fake_upstream import FakeUpstream
from tests.processes import INTERNAL_DNS, STOP_WAIT, Process, ask, serve
from tests.test_cli import run, write_config

StartServer = Callable[..., RunningServer]
FIELDS = ["time", "client", "view", "name", "type", "zone", "rcode", "duration_ms", "transport"]
NOW = 1_795_000_000.25  # 2026-11-18T11:06:40.250Z: the injected clock's time


def logged(server: RunningServer, path: Path) -> list[dict[str, Any]]:
    """Every line written so far, once the lines queued have been written."""
    on_reactor(server.reactor, server.service.dispatcher.query_log.flush)
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_duration(line: dict[str, Any]) -> None:
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 5000
    assert round(line["duration_ms"], 3) == line["duration_ms"]


# --- to a file -------------------------------------------------------------------------------------


def test_every_field_of_an_authoritative_and_a_forwarded_query(
    start_server: StartServer, fake: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "queries.log"
    clock = task.Clock()
    clock.advance(NOW)
    server = start_server(clock=clock, query_log=str(path), upstreams=[fake.address], forward={"enabled": True})
    assert server.ask("My-App.Internal", "AAAA").rcode_text == "NOERROR"
    assert server.ask("www.example.test", "A", tcp=True, source="127.0.0.2").addresses("A") == ["192.0.2.10"]
    assert server.ask("nope.internal", "TXT", source="127.0.0.3").rcode_text == "NXDOMAIN"
    lines = logged(server, path)
    assert [list(line) for line in lines] == [FIELDS] * 3  # every field, in this order
    for line in lines:
        check_duration(line)
    time = datetime.fromtimestamp(NOW, UTC).isoformat(timespec="milliseconds")
    assert time == "2026-11-18T11:06:40.250+00:00"
    assert [{k: v for k, v in line.items() if k != "duration_ms"} for line in lines] == [
        {
            "time": time,
            "client": "127.0.0.1",
            "view": "personal",
            "name": "my-app.internal.",
            "type": "AAAA",
            "zone": "internal",
            "rcode": "NOERROR",
            "transport": "udp",
        },
        {
            "time": time,
            "client": "127.0.0.2",
            "view": "other-org",
            "name": "www.example.test.",
            "type": "A",
            "zone": "forward",
            "rcode": "NOERROR",
            "transport": "tcp",
        },
        {
            "time": time,
            "client": "127.0.0.3",
            "view": "shop-production",
            "name": "nope.internal.",
            "type": "TXT",
            "zone": "internal",
            "rcode": "NXDOMAIN",
            "transport": "udp",
        },
    ]


def test_lines_are_appended_and_timed_by_the_clock(start_server: StartServer, tmp_path: Path) -> None:
    path = tmp_path / "queries.log"
    path.write_text('{"earlier":"line"}\n')
    server = start_server(query_log=str(path))
    server.ask("my-app.internal", "AAAA")
    server.advance(90.5)
    server.ask("my-app.internal", "AAAA")  # the same question: the log still sees it
    lines = logged(server, path)
    assert lines[0] == {"earlier": "line"}
    assert [line["time"] for line in lines[1:]] == ["1970-01-01T00:00:00.000+00:00", "1970-01-01T00:01:30.500+00:00"]


def test_no_query_log_when_off(start_server: StartServer) -> None:
    server = start_server()
    assert server.ask("my-app.internal", "AAAA").rcode_text == "NOERROR"
    assert server.service.dispatcher.query_log is None


# --- as an operator runs it --------------------------------------------------------------------------


def serve_and_ask(processes: list[Process], folder: Path, **overrides: Any) -> tuple[str, str, float, float]:
    """Start `internal-dns serve` on a config of these overrides, ask one authoritative and one
    forwarded question, stop it: (its standard output, its standard error, and the wall-clock
    span of the questions)."""
    proc, port = serve(processes, folder, lambda port: write_config(folder, port, **overrides))
    before = datetime.now(UTC).timestamp()
    assert ask(port, "my-app.internal").rcode_text == "NOERROR"
    assert ask(port, "www.example.test", "A", timeout=3).addresses("A") == ["192.0.2.10"]
    after = datetime.now(UTC).timestamp()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=STOP_WAIT)
    assert proc.returncode == 0, err
    return out, err, before, after


def test_query_log_to_standard_output(tmp_path: Path, registry: Path, processes: list[Process], fake: FakeUpstream) -> None:
    out, err, before, after = serve_and_ask(processes, tmp_path, query_log="-", upstreams=[fake.address])
    assert "query log: standard output" in err
    lines = [json.loads(line) for line in out.splitlines()]  # standard output holds nothing else
    assert all(list(line) == FIELDS for line in lines)
    # The server's own readiness polls came first; the last two lines are the two questions.
    authoritative, forwarded = lines[-2:]
    for line in (authoritative, forwarded):
        check_duration(line)
        assert before - 1 <= datetime.fromisoformat(line["time"]).timestamp() <= after + 1
        assert (line["client"], line["view"], line["transport"]) == ("127.0.0.1", "personal", "udp")
    assert (authoritative["name"], authoritative["type"], authoritative["zone"], authoritative["rcode"]) == (
        "my-app.internal.",
        "AAAA",
        "internal",
        "NOERROR",
    )
    assert (forwarded["name"], forwarded["type"], forwarded["zone"], forwarded["rcode"]) == (
        "www.example.test.",
        "A",
        "forward",
        "NOERROR",
    )


def test_no_query_log_on_standard_output_when_off(
    tmp_path: Path, registry: Path, processes: list[Process], fake: FakeUpstream
) -> None:
    out, err, _, _ = serve_and_ask(processes, tmp_path, upstreams=[fake.address])
    assert out == ""
    assert "query log" not in err


def test_relative_path_is_relative_to_the_config_file(
    tmp_path: Path, registry: Path, processes: list[Process], fake: FakeUpstream
) -> None:
    (tmp_path / "logs").mkdir()
    config = write_config(tmp_path, 5353, query_log="logs/queries.log", upstreams=[fake.address])
    target = tmp_path / "logs" / "queries.log"
    assert load_config(config).query_log == str(target)
    checked = run(INTERNAL_DNS, "check", "-c", str(config))  # run from the repository, not tmp_path
    assert checked.returncode == 0, checked.stderr
    _, err, _, _ = serve_and_ask(
        processes, tmp_path, query_log="logs/queries.log", upstreams=[fake.address]
    )  # also from the repository
    assert f"query log: {target}" in err
    names = [json.loads(line)["name"] for line in target.read_text().splitlines()]
    assert names[-2:] == ["my-app.internal.", "www.example.test."]
    assert not (ROOT / "logs").exists()


# --- check --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("nowhere/queries.log", "directory {base}/nowhere does not exist"),
        ("logs", "{base}/logs is a directory, not a file"),
        ("a-file/queries.log", "{base}/a-file is not a directory"),
    ],
    ids=["missing-directory", "a-directory", "under-a-file"],
)
def test_check_refuses_a_query_log_it_could_not_write(tmp_path: Path, registry: Path, setting: str, reason: str) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "a-file").write_text("")
    config = write_config(tmp_path, 5353, query_log=setting)
    result = run(INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode != 0
    assert f"config error: {config}: query_log: {reason.format(base=tmp_path)}" in result.stderr
    assert "Traceback" not in result.stderr


def read_only(folder: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` while `folder` may not be written: by mode bits for a user, and for root
    (whom they do not stop) by a read-only bind mount in a mount namespace of the command's own."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return run(*command)
        finally:
            folder.chmod(0o755)
    # as root (CI), a missing tool fails the test, as the host tests do: a skip would check nothing
    assert shutil.which("unshare"), "unshare (util-linux) is needed to make a folder read-only for root"
    made = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    assert made.returncode == 0, f"root, but no mount namespace to make a folder read-only in: {made.stderr}"
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return run("unshare", "--mount", "sh", "-c", script, "sh", str(folder), *command)


def test_check_refuses_a_query_log_directory_it_may_not_write(tmp_path: Path, registry: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    config = write_config(tmp_path, 5353, query_log="logs/queries.log")
    result = read_only(logs, INTERNAL_DNS, "check", "-c", str(config))
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"config error: {config}: query_log: directory {logs} is not writable" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(INTERNAL_DNS, "check", "-c", str(config))  # writable again
    assert result.returncode == 0 and "query_log" not in result.stderr, result.stderr


def test_check_accepts_standard_output(tmp_path: Path, registry: Path) -> None:
    result = run(INTERNAL_DNS, "check", "-c", str(write_config(tmp_path, 5353, query_log="-")))
    assert result.returncode == 0, result.stderr
