"""The `sqlite` backend (issue 6): the registry in an SQLite file, followed by real servers on
loopback while other connections write to it.

Servers here run with the live backend's longest wait made an hour: a quiet `changes` call would
only return then, so every change a test sees applied was noticed by the `PRAGMA data_version`
poll (0.1 s), not by the end of a wait. Tests wait for snapshots with `until`, which checks a
condition on the reactor thread after every publish, bounded by conftest's WAIT.

Schema versions: a database of version 1 (before `apps.services` and `machines.checks`), written
out here as version 1 created it, is served, listed, exported and checked as it is and never
written by a reader; the registry command's first write migrates it, in one transaction, while a
server follows it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet.defer import Deferred

from internal_dns.registry import edit, sqlite
from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents
from internal_dns.registry.model import NO_CHECKS, App, Machine, Service, Snapshot
from internal_dns.registry.sqlite import SCHEMA, SqliteStore, changes, connection
from internal_dns.registry.sqlite.schema import MIGRATIONS
from tests.conftest import EMBEDDED_ZONES, ROOT, RunningServer, StartSqlite, on_reactor
from tests.fake_upstream import FakeUpstream
from tests.readme_examples import README, examples, normalise, run
from tests.test_metrics import METRICS, http_get, scrape
from tests.test_registry_command import INTERNAL_DNS, NEW_MACHINE
from tests.test_reload import MY_APP

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


def until(server: RunningServer, condition: Callable[[Snapshot | None], bool]) -> None:
    """Wait until condition(current snapshot) holds, checked now and after every publish or
    rejection."""

    def watch() -> Deferred[None]:
        store = server.service.store
        done: Deferred[None] = Deferred()

        def check(*_: Any) -> None:
            if not done.called and condition(store.current):
                store.changed.unsubscribe(check)
                done.callback(None)

        store.changed.subscribe(check)
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


def checks_of(snapshot: Snapshot) -> dict[str, dict[str, str]]:
    return {m.id: dict(m.checks) for index in snapshot.networks.values() for m in index.machines}


def services_of(snapshot: Snapshot) -> dict[tuple[str, str], tuple[Service, ...]]:
    return {(name, a.app.name): a.app.services for name, index in snapshot.networks.items() for a in index.apps.values()}


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
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"regions", "networks", "apps", "machines", "peers", "changes", "sqlite_sequence"}
    assert len(conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()) == 15


def test_rows_read_as_the_yaml_format(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    SqliteStore(path).write([], [])  # creates it
    conn = writer(path)
    conn.execute("INSERT INTO networks (name, prefix6, legacy) VALUES ('n', 'fdaa:9::/48', 1)")
    conn.execute("""INSERT INTO apps VALUES ('n', 'a', '[{"ip": "fdaa:9::1:1"}]', '[{"name": "http", "port": 80}]')""")
    conn.execute(
        "INSERT INTO machines (id, app, region, ip6, metadata, dns, checks) "
        """VALUES ('ab', 'a', 'iad', 'fdaa:9::2', '{"role": "primary", "port": 8080}', 0, '{"http": "warning"}')"""
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
    assert entities[("apps", "n", "a")].data == {
        "network": "n",
        "name": "a",
        "flycast": [{"ip": "fdaa:9::1:1"}],
        "services": [{"name": "http", "port": 80}],
    }
    assert entities[("apps", "n", "a")].source == f"{path}:apps/n/a"
    assert entities["ab"].data == {
        "id": "ab",
        "app": "a",
        "region": "iad",
        "ip6": "fdaa:9::2",
        "metadata": {"role": "primary", "port": 8080},
        "dns": False,
        "checks": {"http": "warning"},
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
        from_files = build_snapshot(load_documents(EMBEDDED_ZONES))
        assert server.snapshot is not None and server.snapshot.counts() == from_files.counts()
        for kept in (checks_of, services_of):  # as the files give them
            assert kept(server.snapshot) == kept(from_files)
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
    assert status == 503 and f"{path}: schema version 7, and this internal-dns reads versions 1 to 2" in body


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


# --- schema versions: version 2 added apps.services and machines.checks --------------------------------

# Version 1 as `internal-dns registry` created it: the tables, then three triggers per table.
V1_TABLES = """\
CREATE TABLE regions (
    code TEXT NOT NULL PRIMARY KEY,
    name TEXT,
    latitude REAL,
    longitude REAL
);
CREATE TABLE networks (
    name TEXT NOT NULL PRIMARY KEY,
    prefix6 TEXT,
    prefix4 TEXT,
    dns6 TEXT,
    dns4 TEXT,
    legacy INTEGER  -- 0 or 1
);
CREATE TABLE apps (
    network TEXT NOT NULL,
    name TEXT NOT NULL,
    flycast TEXT,  -- JSON: [{"ip": "...", "network": "..."}, ...]
    PRIMARY KEY (network, name)
);
CREATE TABLE machines (
    id TEXT NOT NULL PRIMARY KEY,
    app TEXT,
    network TEXT,  -- NULL: the app's, when its name is in one network only
    region TEXT,
    state TEXT,
    process_group TEXT,
    ip6 TEXT,
    ip4 TEXT,
    metadata TEXT,  -- JSON: {"key": "value", ...}
    dns INTEGER  -- 0 or 1
);
CREATE TABLE peers (
    network TEXT NOT NULL,
    name TEXT NOT NULL,
    ip6 TEXT,
    region TEXT,
    PRIMARY KEY (network, name)
);
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,  -- a table: regions, networks, apps, machines, peers
    key TEXT NOT NULL  -- the row's primary key as a JSON array: ["148e21dad76789"], ["personal", "my-app"]
);
"""
V1_COLUMNS = {
    "regions": ("code", "name", "latitude", "longitude"),
    "networks": ("name", "prefix6", "prefix4", "dns6", "dns4", "legacy"),
    "apps": ("network", "name", "flycast"),
    "machines": ("id", "app", "network", "region", "state", "process_group", "ip6", "ip4", "metadata", "dns"),
    "peers": ("network", "name", "ip6", "region"),
}
V1_KEYS = {
    "regions": ("code",),
    "networks": ("name",),
    "apps": ("network", "name"),
    "machines": ("id",),
    "peers": ("network", "name"),
}


def v1_triggers(table: str, key: tuple[str, ...]) -> str:
    new, old = (", ".join(f"{row}.{c}" for c in key) for row in ("NEW", "OLD"))
    moved = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in key)
    return (
        f"CREATE TRIGGER {table}_insert AFTER INSERT ON {table} BEGIN\n"
        f"    INSERT INTO changes (kind, key) VALUES ('{table}', json_array({new}));\nEND;\n"
        f"CREATE TRIGGER {table}_update AFTER UPDATE ON {table} BEGIN\n"
        f"    INSERT INTO changes (kind, key) SELECT '{table}', json_array({old}) WHERE {moved};\n"
        f"    INSERT INTO changes (kind, key) VALUES ('{table}', json_array({new}));\nEND;\n"
        f"CREATE TRIGGER {table}_delete AFTER DELETE ON {table} BEGIN\n"
        f"    INSERT INTO changes (kind, key) VALUES ('{table}', json_array({old}));\nEND;\n"
    )


def v1_value(column: str, item: dict[str, Any]) -> Any:
    value = item.get(column)
    if column in ("flycast", "metadata") and value is not None:
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def v1_database(path: Path) -> Path:
    """The embedded example registry in a version 1 database (what version 1 has no column for,
    checks and services, left out as version 1 would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_TABLES + "".join(v1_triggers(table, key) for table, key in V1_KEYS.items()))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("BEGIN")
    for document in load_documents(EMBEDDED_ZONES):
        for table, columns in V1_COLUMNS.items():
            for item in document.data.get(table) or []:
                values = [v1_value(c, item) for c in columns]
                conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)
    conn.execute("COMMIT")
    conn.close()
    return path


def layout(db: Path) -> tuple[int, dict[str, list[Any]], list[str]]:
    """The schema version, each table's columns (name, type, not null, default, key) and the triggers."""
    conn = sqlite3.connect(db)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        columns = {t: [row[1:] for row in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
        triggers = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")]
        return version, columns, triggers
    finally:
        conn.close()


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in [*V1_COLUMNS, "changes"]}
    finally:
        conn.close()


def command_config(db: Path) -> Path:
    config = db.parent / "command.yaml"
    config.write_text(
        yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 0}], "registry": {"backend": "sqlite", "path": str(db)}})
    )
    return config


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERNAL_DNS, *args], capture_output=True, text=True, timeout=120)


def machines_of(snapshot: Snapshot | None) -> dict[str, Machine]:
    assert snapshot is not None
    return {m.id: m for index in snapshot.networks.values() for m in index.machines}


def apps_of(snapshot: Snapshot | None) -> dict[tuple[str, str], App]:
    assert snapshot is not None
    return {(name, key): a.app for name, index in snapshot.networks.items() for key, a in index.apps.items()}


# --- version 1 ---------------------------------------------------------------------------------------


def test_a_version_1_database_is_served_and_read_as_it_is(start_sqlite: StartSqlite, tmp_path: Path) -> None:
    db = v1_database(tmp_path / "v1.db")
    before, held = layout(db), rows(db)
    server = start_sqlite(db)
    inserted = {kind: len(held[kind]) for kind in V1_COLUMNS}
    assert server.snapshot is not None
    assert server.snapshot.counts() == {"networks": 4, "apps": 9, "machines": inserted["machines"], "peers": 4, "regions": 35}
    assert all(m.checks is NO_CHECKS for m in machines_of(server.snapshot).values())
    assert all(a.services == () for a in apps_of(server.snapshot).values())
    assert server.ask("148e21dad76789.vm.my-app.internal").addresses() == ["fdaa:0:18:a7b:7d:f066:b83b:2"]
    # the registry command reads it too, without writing
    config = command_config(db)
    listed = run_command("registry", "-c", str(config), "list", "machine")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == inserted["machines"], listed.stderr
    exported = run_command("registry", "-c", str(config), "export")
    assert exported.returncode == 0, exported.stderr
    data = yaml.safe_load(exported.stdout)
    assert not any("checks" in m for m in data["machines"]) and not any("services" in a for a in data["apps"])
    checked = run_command("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert layout(db) == before and before[0] == 1 and rows(db) == held  # nothing written


def test_the_registry_commands_first_write_migrates_it_while_a_server_follows(start_sqlite: StartSqlite, tmp_path: Path) -> None:
    db = v1_database(tmp_path / "v1.db")
    held = rows(db)
    server = start_sqlite(db)
    done = run_command("registry", "-c", str(command_config(db)), "set-check", "148e21dad76789", "http", "critical")
    assert done.returncode == 0 and done.stdout == "replaced machine 148e21dad76789\n", done.stderr
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).write([], [])  # a database version 2 creates
    assert layout(db) == layout(fresh) and layout(db)[0] == 2  # the same columns, in the same order
    until(server, lambda s: machines_of(s)["148e21dad76789"].checks == {"http": "critical"})
    assert not machines_of(server.snapshot)["148e21dad76789"].healthy
    after = rows(db)
    for table in ("regions", "networks", "apps", "peers"):
        assert [row[: len(V1_COLUMNS[table])] for row in after[table]] == held[table]  # and NULL in the new columns
    assert after["changes"][: len(held["changes"])] == held["changes"]  # the log goes on
    # another writer, after the migration: the change log brings the new column's values too
    writer(db).execute("""UPDATE apps SET services = '[{"name": "http", "port": 8080}]' WHERE name = 'my-app'""")
    until(server, lambda s: apps_of(s)[("personal", "my-app")].services == (Service("http", 8080, "tcp"),))
    # and a second write finds it migrated
    again = run_command("registry", "-c", str(command_config(db)), "set-check", "148e21dad76789", "http", "none")
    assert again.returncode == 0, again.stderr
    until(server, lambda s: machines_of(s)["148e21dad76789"].checks is NO_CHECKS)


def test_a_migration_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = v1_database(tmp_path / "v1.db")
    before, held = layout(db), rows(db)
    broken = {1: (*MIGRATIONS[1], "ALTER TABLE nowhere ADD COLUMN x TEXT")}
    monkeypatch.setattr(connection, "MIGRATIONS", broken)
    store = SqliteStore(db)
    machine = {"id": "148e21dad76789", "checks": {"http": "passing"}}
    with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
        store.write([("machines", machine, None)], [])
    store.close()
    assert layout(db) == before and rows(db) == held  # neither column added, still version 1
    monkeypatch.setattr(connection, "MIGRATIONS", MIGRATIONS)
    entities = {e.key: e for e in store.read()}
    edit.apply(store, edit.Change([("machines", {**entities["148e21dad76789"].data, "checks": {"http": "passing"}})], []))
    store.close()
    assert layout(db)[0] == 2
    assert {e.key: e for e in SqliteStore(db).read()}["148e21dad76789"].data["checks"] == {"http": "passing"}


# --- checks and services, from rows to the catalog -------------------------------------------------------


def test_checks_and_services_reach_the_catalog(start_sqlite: StartSqlite, tmp_path: Path) -> None:
    db = import_example(tmp_path / "registry.db")
    store = SqliteStore(db)
    my_app = next(e.data for e in store.read() if e.kind == "apps" and e.data["name"] == "my-app")
    services = [{"name": "http", "port": 8080}, {"name": "DNS", "port": 53, "protocol": "UDP"}]
    puts = [
        ("apps", {**my_app, "services": services}),
        ("machines", {**NEW_MACHINE, "checks": {"http": "passing", "disk": "warning"}}),
        (
            "machines",
            {
                **NEW_MACHINE,
                "id": "abcdef01234568",
                "ip6": "fdaa:0:18:a7b:99::3",
                "checks": {"disk": "warning", "http": "passing"},
            },
        ),
        ("machines", {**NEW_MACHINE, "id": "abcdef01234569", "ip6": "fdaa:0:18:a7b:99::4", "checks": {"http": "critical"}}),
    ]
    edit.apply(store, edit.Change(puts, []))
    store.close()
    server = start_sqlite(db)  # loaded whole
    machines = machines_of(server.snapshot)
    assert apps_of(server.snapshot)[("personal", "my-app")].services == (Service("http", 8080, "tcp"), Service("dns", 53, "udp"))
    assert dict(machines["abcdef01234567"].checks) == {"http": "passing", "disk": "warning"}
    assert machines["abcdef01234567"].checks is machines["abcdef01234568"].checks  # one mapping for equal checks
    assert machines["abcdef01234567"].healthy and not machines["abcdef01234569"].healthy
    # followed through the change log: a check flipped in place, checks removed, services removed
    conn = writer(db)
    conn.execute("UPDATE machines SET checks = json_set(checks, '$.http', 'critical') WHERE id = 'abcdef01234567'")
    until(server, lambda s: machines_of(s)["abcdef01234567"].checks == {"http": "critical", "disk": "warning"})
    assert not machines_of(server.snapshot)["abcdef01234567"].healthy
    conn.execute("UPDATE machines SET checks = NULL WHERE id = 'abcdef01234569'")
    until(server, lambda s: machines_of(s)["abcdef01234569"].checks is NO_CHECKS)
    assert machines_of(server.snapshot)["abcdef01234569"].healthy
    conn.execute("UPDATE apps SET services = NULL WHERE name = 'my-app'")
    until(server, lambda s: apps_of(s)[("personal", "my-app")].services == ())
    # and a row whose checks do not fit is left out, naming the machine
    conn.execute("""UPDATE machines SET checks = '{"http": "down"}' WHERE id = 'abcdef01234568'""")
    until(server, lambda s: "abcdef01234568" not in machines_of(s))
    line = f"{db}:machines/abcdef01234568: machine abcdef01234568: check 'http' is 'down': must be passing, warning or critical"
    assert server.service.store.left_out == [line]
    conn.close()
