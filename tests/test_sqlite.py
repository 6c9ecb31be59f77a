"""The `sqlite` backend (issue 6): the registry in an SQLite file, followed by real servers on
loopback while other connections write to it.

Servers here run with the live backend's longest wait made an hour: a quiet `changes` call would
only return then, so every change a test sees applied was noticed by the `PRAGMA data_version`
poll (0.1 s), not by the end of a wait. Tests wait for snapshots with `until`, which checks a
condition on the reactor thread after every publish, bounded by conftest's WAIT.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import task
from twisted.internet.defer import Deferred

from internal_dns.config import parse_config
from internal_dns.registry import edit, sqlite
from internal_dns.registry.model import Snapshot
from internal_dns.registry.sqlite import SCHEMA, SqliteBackend, SqliteStore, changes
from tests.conftest import EMBEDDED_ZONES, ROOT, RunningServer, base_config, on_reactor
from tests.fake_upstream import FakeUpstream
from tests.readme_examples import README, examples, normalise, run
from tests.test_metrics import METRICS, http_get, scrape
from tests.test_registry_command import INTERNAL_DNS, NEW_MACHINE
from tests.test_reload import MY_APP

StartSqlite = Callable[..., RunningServer]


# --- databases and servers -------------------------------------------------------------------------


def import_example(db: Path) -> Path:
    """The embedded example registry, imported into `db` (created when missing)."""
    store = SqliteStore(db)
    try:
        edit.apply(store, edit.import_change(EMBEDDED_ZONES, False, store.read()))
    finally:
        store.close()
    return db


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return import_example(tmp_path / "registry.db")


def writer(db: Path) -> sqlite3.Connection:
    """Another writer: a plain connection of Python's sqlite3, each statement its own commit."""
    return sqlite3.connect(db, isolation_level=None, timeout=5)


@pytest.fixture
def start_sqlite(reactor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartSqlite]:
    """start_sqlite(db, **config_overrides) → a RunningServer on that database."""
    monkeypatch.setattr(SqliteBackend, "wait", 3600.0)
    running: list[RunningServer] = []

    def start(database: Path, **overrides: Any) -> RunningServer:
        raw = base_config(tmp_path, **overrides)
        raw["registry"] = {"backend": "sqlite", "path": str(database)}
        server = RunningServer(reactor, parse_config(raw, str(tmp_path / "config.yaml")), task.Clock())
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def until(server: RunningServer, condition: Callable[[Snapshot | None], bool]) -> None:
    """Wait until condition(current snapshot) holds, checked now and after every publish."""

    def watch() -> Deferred[None]:
        store = server.service.store
        done: Deferred[None] = Deferred()

        def check(*_: Any) -> None:
            if not done.called and condition(store.current):
                store.published.unsubscribe(check)
                done.callback(None)

        store.published.subscribe(check)
        check()
        return done

    on_reactor(server.reactor, watch)


def machine_ids(snapshot: Snapshot | None) -> set[str]:
    if snapshot is None:
        return set()
    return {m.id for index in snapshot.networks.values() for m in index.machines}


def started_ids(snapshot: Snapshot | None) -> set[str]:
    if snapshot is None:
        return set()
    return {m.id for index in snapshot.networks.values() for m in index.started}


def my_app(server: RunningServer) -> list[str]:
    return sorted(server.ask("my-app.internal").addresses())


# --- the schema and the rows -------------------------------------------------------------------------


def test_the_schema_is_documented_as_created(db: Path) -> None:
    assert textwrap.indent(SCHEMA, "    ") in (sqlite.__doc__ or "")
    page = (README.parent / "docs" / "registry.md").read_text()
    section = page[page.index("## SQLite") :]
    statements = re.findall(r"^CREATE TABLE .*?\);$", section, re.S | re.M)
    assert len(statements) == 6 and all(statement in SCHEMA for statement in statements)
    assert re.search(r"^CREATE TRIGGER machines_update .*?END;$", section, re.S | re.M).group(0) in SCHEMA  # type: ignore[union-attr]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"regions", "networks", "apps", "machines", "peers", "changes", "sqlite_sequence"}
    assert len(conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()) == 15


def test_rows_read_as_the_yaml_format(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    SqliteStore(path).write([], [])  # creates it
    conn = writer(path)
    conn.execute("INSERT INTO networks (name, prefix6, legacy) VALUES ('n', 'fdaa:9::/48', 1)")
    conn.execute("""INSERT INTO apps VALUES ('n', 'a', '[{"ip": "fdaa:9::1:1"}]')""")
    conn.execute(
        "INSERT INTO machines (id, app, region, ip6, metadata, dns) "
        """VALUES ('ab', 'a', 'iad', 'fdaa:9::2', '{"role": "primary", "port": 8080}', 0)"""
    )
    conn.execute(
        "INSERT INTO machines (id, app, region, ip6, metadata, dns) VALUES ('cd', 'a', 'iad', 'fdaa:9::3', '{oops', 'yes')"
    )
    entities = {e.key: e for e in SqliteStore(path).read()}
    network = entities[("networks", "n")]
    assert (network.kind, network.source, network.data) == (
        "networks",
        f"{path}:networks/n",
        {"name": "n", "prefix6": "fdaa:9::/48", "legacy": True},
    )
    assert entities[("apps", "n", "a")].data == {"network": "n", "name": "a", "flycast": [{"ip": "fdaa:9::1:1"}]}
    assert entities[("apps", "n", "a")].source == f"{path}:apps/n/a"
    assert entities["ab"].data == {
        "id": "ab",
        "app": "a",
        "region": "iad",
        "ip6": "fdaa:9::2",
        "metadata": {"role": "primary", "port": 8080},
        "dns": False,
    }
    # what is not JSON or not 0/1 is handed on as it is, for the entity's parser to refuse
    assert entities["cd"].data["metadata"] == "{oops"
    assert entities["cd"].data["dns"] == "yes"


def test_a_change_of_primary_key_logs_the_old_key_and_the_new(db: Path) -> None:
    conn = writer(db)
    (before,) = conn.execute("SELECT max(seq) FROM changes").fetchone()
    conn.execute("UPDATE machines SET id = 'abc123' WHERE id = '148e21dad76789'")
    conn.execute("UPDATE apps SET flycast = NULL WHERE name = 'api'")
    logged = conn.execute("SELECT kind, key FROM changes WHERE seq > ? ORDER BY seq", (before,)).fetchall()
    assert logged == [("machines", '["148e21dad76789"]'), ("machines", '["abc123"]'), ("apps", '["personal","api"]')]


def test_a_write_prunes_the_change_log(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "KEEP_CHANGES", 10)
    store = SqliteStore(db)
    edit.apply(store, edit.Change([("machines", {**NEW_MACHINE, "state": "stopped"})], []))
    conn = sqlite3.connect(db)
    count, oldest, newest = conn.execute("SELECT count(*), min(seq), max(seq) FROM changes").fetchone()
    assert (count, oldest) == (10, newest - 9)


def test_a_missing_database_reads_as_empty_and_the_first_write_creates_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new.db")
    assert (store.exists(), store.read()) == (False, [])
    assert not (tmp_path / "new.db").exists()  # reading creates nothing
    edit.apply(store, edit.Change([("regions", {"code": "iad", "city": "Ashburn", "latitude": 38.95, "longitude": -77.46})], []))
    assert store.exists()
    assert [e.data for e in store.read()] == [{"code": "iad", "name": "Ashburn", "latitude": 38.95, "longitude": -77.46}]


def test_check_on_a_missing_database_fails(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 0}], "registry": {"backend": "sqlite", "path": "none.db"}})
    )
    done = subprocess.run([INTERNAL_DNS, "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"registry rejected: sqlite {tmp_path / 'none.db'}: no registry there yet"
    assert not (tmp_path / "none.db").exists()


def test_a_database_with_another_schema_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE machines (x)")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 0}], "registry": {"backend": "sqlite", "path": "other.db"}})
    )
    done = subprocess.run(
        [INTERNAL_DNS, "registry", "-c", str(config), "put", "machine", json.dumps(NEW_MACHINE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"registry rejected: {other}: not an internal-dns registry (it has tables machines and no schema version)"
    )


# --- served -------------------------------------------------------------------------------------------


def test_every_readme_example_is_answered_from_sqlite(start_sqlite: StartSqlite, db: Path) -> None:
    """The README's walk through every name form, on the example registry imported into SQLite."""
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    settings = {k: v for k, v in example.items() if k not in ("listen", "registry", "metrics")}
    upstream = FakeUpstream()
    try:
        server = start_sqlite(db, **{**settings, "upstreams": [upstream.address], "forward": {"enabled": True}})
        assert server.snapshot is not None and server.snapshot.counts() == {
            "networks": 4,
            "apps": 9,
            "machines": 17,
            "peers": 4,
            "regions": 35,
        }
        for command, expected in examples(README.read_text()):
            assert normalise(run(command, server.port)) == normalise(expected), command
    finally:
        upstream.close()


def test_a_change_by_the_registry_command_is_served(start_sqlite: StartSqlite, db: Path, tmp_path: Path) -> None:
    server = start_sqlite(db)
    assert server.ask("abcdef01234567.vm.my-app.internal").rcode_text == "NXDOMAIN"
    config = tmp_path / "command.yaml"
    config.write_text(
        yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 0}], "registry": {"backend": "sqlite", "path": str(db)}})
    )
    done = subprocess.run(
        [INTERNAL_DNS, "registry", "-c", str(config), "put", "machine", json.dumps(NEW_MACHINE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    until(server, lambda s: "abcdef01234567" in started_ids(s))
    assert server.ask("abcdef01234567.vm.my-app.internal").addresses() == [NEW_MACHINE["ip6"]]
    assert my_app(server) == sorted([*MY_APP.values(), NEW_MACHINE["ip6"]])


def test_another_writer_is_served(start_sqlite: StartSqlite, db: Path) -> None:
    server = start_sqlite(db)
    assert my_app(server) == sorted(MY_APP.values())
    conn = writer(db)
    conn.execute("UPDATE machines SET state = 'stopped' WHERE id = '148e21dad76789'")
    until(server, lambda s: "148e21dad76789" not in started_ids(s))
    assert my_app(server) == sorted([MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"]])
    # a new app and its machine in one transaction
    conn.execute("BEGIN")
    conn.execute("INSERT INTO apps (network, name) VALUES ('personal', 'newapp')")
    conn.execute("INSERT INTO machines (id, app, region, ip6) VALUES ('abcdef01234567', 'newapp', 'iad', 'fdaa:0:18:a7b:99::2')")
    conn.execute("COMMIT")
    until(server, lambda s: "abcdef01234567" in started_ids(s))
    assert server.ask("newapp.internal").addresses() == ["fdaa:0:18:a7b:99::2"]
    assert server.ask("_apps.internal", "TXT").txt() == ["api,cron,docs,my-app,newapp"]
    # a machine renamed: its old id goes, its new one comes
    conn.execute("UPDATE machines SET id = '0123456789abcd' WHERE id = 'abcdef01234567'")
    until(server, lambda s: "0123456789abcd" in started_ids(s))
    assert server.ask("abcdef01234567.vm.newapp.internal").rcode_text == "NXDOMAIN"
    assert server.ask("0123456789abcd.vm.newapp.internal").addresses() == ["fdaa:0:18:a7b:99::2"]


def test_the_sqlite3_shell_is_another_writer(start_sqlite: StartSqlite, db: Path) -> None:
    server = start_sqlite(db)
    done = subprocess.run(
        ["sqlite3", str(db), "UPDATE peers SET ip6 = 'fdaa:0:18:a7b:d6b:0:d:2' WHERE name = 'my-laptop';"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    until(server, lambda s: s is not None and str(s.networks["personal"].peers["my-laptop"].ip6) == "fdaa:0:18:a7b:d6b:0:d:2")
    assert server.ask("my-laptop._peer.internal").addresses() == ["fdaa:0:18:a7b:d6b:0:d:2"]


def test_deletes_are_served(start_sqlite: StartSqlite, db: Path) -> None:
    server = start_sqlite(db)
    conn = writer(db)
    conn.execute("DELETE FROM machines WHERE id = '148e21dad76789'")
    until(server, lambda s: "148e21dad76789" not in machine_ids(s))
    assert server.ask("148e21dad76789.vm.my-app.internal").rcode_text == "NXDOMAIN"
    assert my_app(server) == sorted([MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"]])
    conn.execute("DELETE FROM peers WHERE name = 'my-laptop'")
    until(server, lambda s: s is not None and "my-laptop" not in s.networks["personal"].peers)
    assert server.ask("my-laptop._peer.internal").rcode_text == "NXDOMAIN"
    assert server.ask("_peer.internal", "TXT").txt() == ["ci-runner"]


def test_a_row_that_does_not_fit_is_left_out_and_the_rest_serves(
    start_sqlite: StartSqlite, db: Path, log_lines: list[str]
) -> None:
    server = start_sqlite(db, metrics=METRICS)
    assert scrape(server).value("internal_dns_registry_left_out") == 0
    conn = writer(db)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO machines (id, app, region, ip6) VALUES ('abcdef01234567', 'my-app', 'iad', 'not-an-address')")
    conn.execute("UPDATE machines SET state = 'stopped' WHERE id = '148e21dad76789'")
    conn.execute("COMMIT")
    until(server, lambda s: "148e21dad76789" not in started_ids(s))
    line = f"{db}:machines/abcdef01234567: machine abcdef01234567: ip6 'not-an-address' is not an IPv6 address"
    assert server.service.store.left_out == [line]
    assert scrape(server).value("internal_dns_registry_left_out") == 1
    assert f"registry sqlite {db}: left out: {line}" in log_lines
    assert my_app(server) == sorted([MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"]])  # the rest applied
    assert http_get(server, "/readyz")[0] == 200
    conn.execute("UPDATE machines SET ip6 = 'fdaa:0:18:a7b:99::2' WHERE id = 'abcdef01234567'")
    until(server, lambda s: "abcdef01234567" in started_ids(s))
    assert server.service.store.left_out == []
    assert scrape(server).value("internal_dns_registry_left_out") == 0
    assert server.ask("abcdef01234567.vm.my-app.internal").addresses() == ["fdaa:0:18:a7b:99::2"]


# --- the store away, and back ---------------------------------------------------------------------


def test_a_missing_database_is_not_ready_until_it_appears(start_sqlite: StartSqlite, tmp_path: Path) -> None:
    path = tmp_path / "later.db"
    server = start_sqlite(path, metrics=METRICS)
    status, _, body = http_get(server, "/readyz")
    assert status == 503
    assert "no registry snapshot loaded yet" in body
    assert f"registry store unreachable for 0s (no database at {path} (`internal-dns registry import` creates one))" in body
    assert scrape(server).value("internal_dns_registry_store_up") == 0
    assert server.ask("my-app.internal").rcode_text == "SERVFAIL"
    import_example(path)
    until(server, lambda s: s is not None)
    assert http_get(server, "/readyz") == (200, "text/plain; charset=utf-8", "ready\n")
    assert scrape(server).value("internal_dns_registry_store_up") == 1
    assert my_app(server) == sorted(MY_APP.values())


def test_a_database_without_the_schema_is_not_ready(start_sqlite: StartSqlite, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 7")
    server = start_sqlite(path, metrics=METRICS)
    status, _, body = http_get(server, "/readyz")
    assert status == 503 and f"{path}: schema version 7, and this internal-dns reads version 1" in body


def test_a_removed_database_keeps_serving_then_a_new_one_is_read_whole(
    start_sqlite: StartSqlite, db: Path, tmp_path: Path
) -> None:
    server = start_sqlite(db, metrics=METRICS)
    for path in tmp_path.glob("registry.db*"):  # the database, its -wal and -shm files
        path.unlink()
    until_unreachable(server)
    assert f"{db}: the database file was removed" in http_get(server, "/readyz")[2]
    assert scrape(server).value("internal_dns_registry_store_up") == 0
    assert my_app(server) == sorted(MY_APP.values())  # the last snapshot serves
    import_example(db)  # another database at the path: its change log means nothing here
    writer(db).execute("UPDATE machines SET state = 'stopped' WHERE id = '148e21dad76789'")
    until(server, lambda s: "148e21dad76789" not in started_ids(s))
    assert server.service.store.unreachable_since is None
    assert my_app(server) == sorted([MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"]])


def until_unreachable(server: RunningServer) -> None:
    """Wait (bounded) until the store says the backend lost its database."""

    def watch() -> Deferred[None]:
        from twisted.internet.task import LoopingCall

        done: Deferred[None] = Deferred()

        def check() -> None:
            if server.service.store.unreachable_since is not None:
                loop.stop()
                done.callback(None)

        loop = LoopingCall(check)
        loop.start(0.02)
        return done

    on_reactor(server.reactor, watch)


def test_a_pruned_change_log_reloads_everything(
    start_sqlite: StartSqlite, db: Path, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    server = start_sqlite(db)
    before = machine_ids(server.snapshot)
    monkeypatch.setattr(changes, "KEEP_CHANGES", 2)  # the registry command's writes keep the 2 newest
    store = SqliteStore(db)
    try:
        new = [("machines", {**NEW_MACHINE, "id": f"abcdef0123456{i}", "ip6": f"fdaa:0:18:a7b:99::{i + 2}"}) for i in range(4)]
        edit.apply(store, edit.Change(new, [("machines", ("148e21dad76789",))]))
    finally:
        store.close()
    until(server, lambda s: "abcdef01234563" in started_ids(s))
    assert any(
        re.search(rf"registry sqlite {re.escape(str(db))}: loading everything again: .*changes \d+ to \d+ were pruned", line)
        for line in log_lines
    )
    assert machine_ids(server.snapshot) == (before - {"148e21dad76789"}) | {f"abcdef0123456{i}" for i in range(4)}
    assert my_app(server) == sorted(
        [MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"], *(f"fdaa:0:18:a7b:99::{i + 2}" for i in range(4))]
    )
    # and it follows changes again from there
    writer(db).execute("DELETE FROM machines WHERE id = 'abcdef01234560'")
    until(server, lambda s: "abcdef01234560" not in machine_ids(s))
