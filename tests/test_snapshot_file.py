"""Restarts from the snapshot file (registry/savefile.py), with real servers on loopback: the
saved snapshot answers before the store has been read (here: while it cannot be read at all),
the server then catches up with what changed while it was down, and a file that does not prove
itself is never served."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from internal_dns.config import parse_config
from internal_dns.registry.etcd.codec import key_of
from internal_dns.registry.files import FilesBackend
from internal_dns.registry.savefile import SnapshotFile
from internal_dns.registry.sqlite import SqliteBackend
from tests.conftest import EMBEDDED_ZONES, RunningServer, base_config
from tests.etcd_server import EtcdServer
from tests.test_etcd import delete, eventually, fill, put
from tests.test_metrics import scrape
from tests.test_registry_command import NEW_MACHINE
from tests.test_reload import MY_APP
from tests.test_sqlite import import_example, until, writer

Start = Callable[..., RunningServer]
MY_APP_STARTED = sorted(MY_APP.values())


@pytest.fixture
def start(reactor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    """start(registry_config, snapshot_file) → a RunningServer; each stopped after the test."""
    monkeypatch.setattr(SqliteBackend, "wait", 3600.0)  # changes are seen by the 0.1 s poll
    running: list[RunningServer] = []

    def go(registry: dict[str, Any], snapshot: Path | None) -> RunningServer:
        raw = base_config(tmp_path, metrics={"address": "127.0.0.1", "port": 0})
        raw["registry"] = {**registry, "snapshot_file": str(snapshot) if snapshot else False}
        server = RunningServer(reactor, parse_config(raw, str(tmp_path / "config.yaml")), task.Clock())
        running.append(server)
        return server

    yield go
    for server in running:
        if server.service.serving:
            server.stop()


def answers(server: RunningServer) -> list[str]:
    return sorted(server.ask("my-app.internal", "AAAA").addresses())


def saved_once(start: Start, registry: dict[str, Any], snapshot: Path) -> None:
    """A server that loads the registry, saves it, and stops."""
    first = start(registry, snapshot)
    assert answers(first) == MY_APP_STARTED
    first.stop()
    assert snapshot.exists()


def test_a_restart_answers_from_the_file_while_the_store_cannot_be_read(start: Start, tmp_path: Path) -> None:
    db = import_example(tmp_path / "registry.db")
    snapshot = tmp_path / "state" / "registry.snapshot"
    saved_once(start, {"backend": "sqlite", "path": str(db)}, snapshot)
    db.rename(tmp_path / "elsewhere.db")  # the store is gone: only the file can answer
    second = start({"backend": "sqlite", "path": str(db)}, snapshot)
    assert answers(second) == MY_APP_STARTED
    assert second.service.store.catching_up == str(snapshot)
    reasons = second.service.readiness()
    assert any(r.startswith("catching up with the registry store (sqlite ") and str(snapshot) in r for r in reasons)
    assert scrape(second).value("internal_dns_registry_catching_up") == 1


def test_after_a_restart_what_changed_meanwhile_is_caught_up(start: Start, tmp_path: Path, log_lines: list[str]) -> None:
    db = import_example(tmp_path / "registry.db")
    snapshot = tmp_path / "registry.snapshot"
    saved_once(start, {"backend": "sqlite", "path": str(db)}, snapshot)
    with writer(db) as conn:  # while no server runs: one of my-app's machines stops
        conn.execute("UPDATE machines SET state = 'stopped' WHERE ip6 = ?", (MY_APP_STARTED[0],))
    second = start({"backend": "sqlite", "path": str(db)}, snapshot)
    until(second, lambda s: second.service.store.catching_up is None)
    assert answers(second) == MY_APP_STARTED[1:]
    assert not any("loading everything" in line for line in log_lines)  # from the change log
    assert second.service.readiness() == []
    assert scrape(second).value("internal_dns_registry_catching_up") == 0


def test_a_change_is_served_while_the_snapshot_file_is_still_being_written(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save after a load is written by a thread of its own: a change that comes while it is
    being written is served without waiting for it; stopping waits for it and saves the change."""
    db = import_example(tmp_path / "registry.db")
    snapshot = tmp_path / "registry.snapshot"
    writing, release = threading.Event(), threading.Event()
    try_save = SnapshotFile.try_save

    def slow_save(self: SnapshotFile, catalog: Any, position: Any) -> str | None:
        writing.set()
        release.wait(30)  # a disk that takes its time
        return try_save(self, catalog, position)

    monkeypatch.setattr(SnapshotFile, "try_save", slow_save)
    server = start({"backend": "sqlite", "path": str(db)}, snapshot)
    assert answers(server) == MY_APP_STARTED
    assert writing.wait(10) and not snapshot.exists()  # the first save is being written
    before = server.service.store.current
    with writer(db) as conn:
        conn.execute("UPDATE machines SET state = 'stopped' WHERE ip6 = ?", (MY_APP_STARTED[0],))
    until(server, lambda current: current is not before)
    assert answers(server) == MY_APP_STARTED[1:] and not snapshot.exists()
    release.set()
    server.stop()  # waits for the save being written, then saves what changed since
    monkeypatch.setattr(SnapshotFile, "try_save", try_save)
    with writer(db) as conn:
        conn.execute("DELETE FROM machines")  # what is answered next can only come from the file
    db.rename(tmp_path / "elsewhere.db")
    again = start({"backend": "sqlite", "path": str(db)}, snapshot)
    assert answers(again) == MY_APP_STARTED[1:]


def test_a_database_replaced_while_down_is_read_whole(start: Start, tmp_path: Path, log_lines: list[str]) -> None:
    db = import_example(tmp_path / "registry.db")
    snapshot = tmp_path / "registry.snapshot"
    saved_once(start, {"backend": "sqlite", "path": str(db)}, snapshot)
    (tmp_path / "restored").mkdir()
    replacement = import_example(tmp_path / "restored" / "registry.db")  # say, from a backup
    conn = writer(replacement)
    conn.execute("UPDATE machines SET state = 'stopped' WHERE ip6 = ?", (MY_APP_STARTED[1],))
    conn.close()
    for path in tmp_path.glob("registry.db*"):  # the database, its -wal and -shm files
        path.unlink()
    replacement.rename(db)  # another file at the path: its change log says nothing of the saved one
    second = start({"backend": "sqlite", "path": str(db)}, snapshot)
    until(second, lambda s: second.service.store.catching_up is None)
    assert answers(second) == [MY_APP_STARTED[0], MY_APP_STARTED[2]]
    assert any("the saved position cannot be followed: loading everything" in line for line in log_lines)


def damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (damage, "damaged or cut short"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged or cut short"),
        (lambda p: p.write_bytes(p.read_bytes()[:32] + b"\0\0\0\x07" + p.read_bytes()[36:]), "format"),
    ],
    ids=["damaged", "truncated", "other-version"],
)
def test_a_file_that_does_not_prove_itself_is_never_served(
    start: Start, tmp_path: Path, log_lines: list[str], spoil: Callable[[Path], None], reason: str
) -> None:
    db = import_example(tmp_path / "registry.db")
    snapshot = tmp_path / "registry.snapshot"
    saved_once(start, {"backend": "sqlite", "path": str(db)}, snapshot)
    spoil(snapshot)
    db.rename(tmp_path / "elsewhere.db")
    second = start({"backend": "sqlite", "path": str(db)}, snapshot)
    assert second.ask("my-app.internal", "AAAA").rcode_text == "SERVFAIL"  # nothing to serve: not the file
    assert any(f"registry snapshot file {snapshot} not used" in line and reason in line for line in log_lines)


def test_a_file_of_another_database_is_not_served(start: Start, tmp_path: Path, log_lines: list[str]) -> None:
    db = import_example(tmp_path / "registry.db")
    snapshot = tmp_path / "registry.snapshot"
    saved_once(start, {"backend": "sqlite", "path": str(db)}, snapshot)
    other = tmp_path / "other.db"
    second = start({"backend": "sqlite", "path": str(other)}, snapshot)  # no such database either
    assert second.ask("my-app.internal", "AAAA").rcode_text == "SERVFAIL"
    assert any("of another registry" in line for line in log_lines)


def test_the_files_backend_restarts_from_the_file_and_scans(start: Start, tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    shutil.copytree(EMBEDDED_ZONES, zones)
    snapshot = tmp_path / "registry.snapshot"
    saved_once(start, {"backend": "files", "path": str(zones)}, snapshot)
    personal = zones / "personal.yaml"
    personal.write_text(personal.read_text().replace(f'ip6: "{MY_APP_STARTED[0]}"', f'ip6: "{MY_APP_STARTED[0]}", dns: false'))
    second = start({"backend": "files", "path": str(zones)}, snapshot)
    assert isinstance(second.service.backend, FilesBackend)
    until(second, lambda s: second.service.store.catching_up is None)
    assert answers(second) == MY_APP_STARTED[1:]


def test_a_files_restart_onto_files_that_do_not_validate_keeps_serving_the_saved_snapshot(
    start: Start, tmp_path: Path, log_lines: list[str]
) -> None:
    zones = tmp_path / "zones"
    shutil.copytree(EMBEDDED_ZONES, zones)
    snapshot = tmp_path / "registry.snapshot"
    saved_once(start, {"backend": "files", "path": str(zones)}, snapshot)
    (zones / "personal.yaml").write_text("machines: [oops\n")  # not YAML: the folder is refused whole
    second = start({"backend": "files", "path": str(zones)}, snapshot)
    until(second, lambda current: second.service.store.last_error is not None)  # a reject publishes nothing
    assert second.service.store.catching_up is None  # the folder has been read: it is the news
    assert any("keeping the last good snapshot" in line for line in log_lines)
    assert answers(second) == MY_APP_STARTED  # the saved snapshot, as a last good one


# --- etcd: from the saved revision, or everything again when etcd no longer keeps it -----------


@pytest.mark.parametrize("compacted", [False, True], ids=["from-the-revision", "compacted"])
def test_etcd_catches_up_from_the_saved_revision(
    start: Start, tmp_path: Path, etcd: EtcdServer, compacted: bool, log_lines: list[str]
) -> None:
    prefix = "/restart/"
    fill(etcd, prefix)
    snapshot = tmp_path / "registry.snapshot"
    registry = etcd.registry(prefix)
    saved_once(start, registry, snapshot)
    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)  # while no server runs
    delete(etcd, f"{prefix}machines/148e21dad76789")
    if compacted:
        etcd.compact()
    second = start(registry, snapshot)
    eventually(lambda: second.service.store.catching_up is None, "caught up")
    assert sorted(second.ask("abcdef01234567.vm.my-app.internal").addresses()) == [NEW_MACHINE["ip6"]]
    assert second.ask("148e21dad76789.vm.my-app.internal").rcode_text == "NXDOMAIN"
    # a watch from the saved revision, unless etcd no longer keeps it
    assert any("loading everything again" in line and "keeps revisions from" in line for line in log_lines) == compacted
    assert any("registry snapshot restored from" in line for line in log_lines)
