"""The `sqlite` backend: the registry in one SQLite database file.

For one host: the server and every writer (`internal-dns registry`, a program using SQLite, the
`sqlite3` shell) on the same machine, or a store that a replicator keeps as a local copy. The
server reads the file in a thread of its own (live.py), never on the reactor.

The schema, version 1 (`PRAGMA user_version`), exactly as `internal-dns registry` creates it:

{schema}

and the database in WAL mode (`PRAGMA journal_mode=WAL`), so that the server reads while a
writer writes. A row is an entity of SPEC §1 with the YAML format's field names: `flycast` and
`metadata` hold JSON, `legacy` and `dns` 0 or 1, and NULL stands for a field not given (its
default). There are no foreign keys and no checks: whether a row fits is the catalog's call, row
by row (catalog.py, leniently: a row that does not fit is left out and logged, the rest serves).
Fields beyond the columns are not kept.

Change detection: the triggers log every insert, update and delete of every entity table in
`changes`, whoever writes (an update that changes a primary key logs the old key and the new).
The server's thread asks `PRAGMA data_version` every `registry.poll_interval` (0.1 s by default:
a read of a shared-memory counter, no disk access), which changes when another connection has
committed; then it reads the `changes` rows after the last one it applied and the current rows
of the keys they name (a row that is gone is a delete), in one read transaction, and applies
them to the catalog as a new snapshot. A quiet second confirms the snapshot (its age, /readyz).

Pruning: `internal-dns registry` deletes the `changes` rows beyond the newest 100,000 after each
write (other writers may do the same: `DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM
changes) - 100000`). A server that fell further behind than that (or finds the log started over,
or the file replaced) cannot tell what changed and reads every table again (`Resync`). A missing
file, a missing or newer schema, or any SQLite error makes the store unavailable: the last
snapshot keeps serving, /readyz and `internal_dns_registry_store_up` say why, and the server
tries again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.heap import collector_paused
from internal_dns.registry.live import LiveBackend, Resync, Unavailable
from internal_dns.registry.model import RegistryError

SCHEMA_VERSION = 1
DEFAULT_POLL_INTERVAL = 0.1  # seconds between two looks at PRAGMA data_version
KEEP_CHANGES = 100_000  # `changes` rows a write leaves in place
BUSY_TIMEOUT = 5.0  # seconds a connection waits for another's lock

TABLES_SQL = """\
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


@dataclass(frozen=True)
class Table:
    kind: str  # the table's name is the section's: regions, networks, apps, machines, peers
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns
    json: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # booleans, stored as 0 or 1

    @property
    def select_all(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.kind} ORDER BY rowid"

    @property
    def select_one(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.kind} WHERE {' AND '.join(f'{c} = ?' for c in self.key)}"

    @property
    def delete(self) -> str:
        return f"DELETE FROM {self.kind} WHERE {' AND '.join(f'{c} = ?' for c in self.key)}"

    @property
    def upsert(self) -> str:
        rest = [c for c in self.columns if c not in self.key]
        return (
            f"INSERT INTO {self.kind} ({', '.join(self.columns)}) VALUES ({', '.join('?' * len(self.columns))}) "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}"
        )


TABLES = {
    t.kind: t
    for t in (
        Table("regions", ("code", "name", "latitude", "longitude"), ("code",)),
        Table("networks", ("name", "prefix6", "prefix4", "dns6", "dns4", "legacy"), ("name",), flags=("legacy",)),
        Table("apps", ("network", "name", "flycast"), ("network", "name"), json=("flycast",)),
        Table(
            "machines",
            ("id", "app", "network", "region", "state", "process_group", "ip6", "ip4", "metadata", "dns"),
            ("id",),
            json=("metadata",),
            flags=("dns",),
        ),
        Table("peers", ("network", "name", "ip6", "region"), ("network", "name")),
    )
}


def _triggers(kind: str, key: tuple[str, ...]) -> str:
    """The three triggers that log a table's changes to `changes` (an update that changes the
    primary key logs the old key too)."""
    new, old = (", ".join(f"{row}.{c}" for c in key) for row in ("NEW", "OLD"))
    moved = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in key)
    old_if_moved = f"SELECT '{kind}', json_array({old})" + (f"\n        WHERE {moved};" if len(key) > 1 else f" WHERE {moved};")
    return (
        f"CREATE TRIGGER {kind}_insert AFTER INSERT ON {kind} BEGIN\n"
        f"    INSERT INTO changes (kind, key) VALUES ('{kind}', json_array({new}));\nEND;\n"
        f"CREATE TRIGGER {kind}_update AFTER UPDATE ON {kind} BEGIN\n"
        f"    INSERT INTO changes (kind, key) {old_if_moved}\n"
        f"    INSERT INTO changes (kind, key) VALUES ('{kind}', json_array({new}));\nEND;\n"
        f"CREATE TRIGGER {kind}_delete AFTER DELETE ON {kind} BEGIN\n"
        f"    INSERT INTO changes (kind, key) VALUES ('{kind}', json_array({old}));\nEND;\n"
    )


SCHEMA = TABLES_SQL + "".join(_triggers(t.kind, t.key) for t in TABLES.values())
__doc__ = (__doc__ or "").replace("{schema}", textwrap.indent(SCHEMA, "    ").rstrip("\n"))  # the docstring shows it as created


# --- rows and entities ---------------------------------------------------------------------------


class _Decoder:
    """Rows into RawEntity objects with the YAML format's values. With `share`, equal JSON texts
    (a million machines with a few metadata shapes) decode to one object, and the values of the
    columns many rows repeat (app, region, state...) are one string each: the catalog only reads
    them. The registry command's read shares nothing, so that an export has no YAML aliases."""

    SHARED = frozenset(("app", "network", "region", "state", "process_group"))

    def __init__(self, db: str, share: bool):
        self.db = db
        self.share = share
        self.cache: dict[str, Any] = {}  # JSON text -> decoded, with `share`
        self.values: dict[Any, Any] = {}  # a repeated value -> its one copy, with `share`
        self._makers: dict[str, Callable[[tuple[Any, ...]], RawEntity]] = {}

    def entity(self, table: Table, row: tuple[Any, ...]) -> RawEntity:
        make = self._makers.get(table.kind)
        if make is None:
            make = self._makers[table.kind] = self.maker(table)
        return make(row)

    def maker(self, table: Table) -> Callable[[tuple[Any, ...]], RawEntity]:
        """A function of one row of `table` to its RawEntity (a million calls: kept lean)."""
        kind, columns, json_columns, flags = table.kind, table.columns, table.json, table.flags
        prefix = f"{self.db}:{kind}/"
        key_at = [columns.index(c) for c in table.key]
        shared = [c for c in columns if c in self.SHARED and c not in table.key] if self.share else []
        values = self.values
        decode = self._json

        def make(row: tuple[Any, ...]) -> RawEntity:
            data = {c: v for c, v in zip(columns, row, strict=True) if v is not None}  # a row of SELECT columns
            for c in shared:
                v = data.get(c)
                if v is not None:
                    data[c] = values.setdefault(v, v)
            for c in json_columns:
                text = data.get(c)
                if text.__class__ is str:  # anything else is left for the entity's parser to refuse
                    data[c] = decode(text)
            for c in flags:
                v = data.get(c)
                if v is not None and (v.__class__ is int) and (v == 0 or v == 1):
                    data[c] = v == 1  # 'yes', 2: left as they are, for the parser to refuse
            if len(key_at) == 1:
                key: tuple[Any, ...] = (kind, row[key_at[0]])
                source = prefix + str(row[key_at[0]])
            else:
                parts = tuple(row[i] for i in key_at)
                key = (kind, *parts)
                source = prefix + "/".join(map(str, parts))
            return RawEntity(key, source, kind, data)

        return make

    def _json(self, text: str) -> Any:
        if self.share and text in self.cache:
            return self.cache[text]
        try:
            value = json.loads(text)
        except ValueError:
            return text  # not JSON: the parser names the field ("metadata must be a mapping ...")
        if self.share and isinstance(value, (dict, list)):
            self.cache[text] = value
        return value


def read_entities(conn: sqlite3.Connection, db: str, share: bool = False) -> list[RawEntity]:
    """Every row of every entity table; the caller holds a read transaction."""
    decoder = _Decoder(db, share)
    out: list[RawEntity] = []
    for table in TABLES.values():
        out.extend(map(decoder.maker(table), conn.execute(table.select_all)))
    return out


def encode(kind: str, data: Mapping[str, Any]) -> tuple[Any, ...]:
    """An entity's mapping as its table's row."""
    table = TABLES[kind]
    if kind == "regions" and data.get("name") is None and data.get("city") is not None:
        data = {**data, "name": data["city"]}  # a region's name may be given as `city`
    row = []
    for c in table.columns:
        value = data.get(c)
        if value is not None and c in table.json:
            value = json.dumps(value, separators=(",", ":"), default=str)
        elif isinstance(value, bool) and c in table.flags:
            value = int(value)
        row.append(value)
    return tuple(row)


def _key_of(kind: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    table = TABLES[kind]
    return (kind, *(row[table.columns.index(c)] for c in table.key))


# --- connections -----------------------------------------------------------------------------------


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]


def schema_problem(conn: sqlite3.Connection, path: Path) -> str | None:
    """Why this database cannot be read as a registry (None: it can)."""
    version = _user_version(conn)
    if version == SCHEMA_VERSION:
        return None
    if version == 0:
        tables = _tables(conn)
        if tables:
            return f"{path}: not an internal-dns registry (it has tables {', '.join(tables)} and no schema version)"
        return f"{path}: an empty database, without the internal-dns schema (`internal-dns registry import` creates it)"
    return f"{path}: schema version {version}, and this internal-dns reads version {SCHEMA_VERSION}"


def _empty(conn: sqlite3.Connection) -> bool:
    return _user_version(conn) == 0 and not _tables(conn)


def _statements(script: str) -> list[str]:
    out, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    return out


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Give a new (or empty) database the schema; leave one that has it as it is."""
    if _user_version(conn) == SCHEMA_VERSION:
        return
    _refuse_foreign(conn, path)
    conn.execute("PRAGMA journal_mode = WAL")  # kept in the file; not possible inside a transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another writer may have created it meanwhile.
        if _empty(conn):
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _refuse_foreign(conn, path)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Raise RegistryError for a database with another schema (an empty one is ours to fill)."""
    problem = None if _empty(conn) else schema_problem(conn, path)
    if problem is not None:
        raise RegistryError([problem])


@contextmanager
def _reading(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: in WAL mode, a consistent view of the database while writers go on."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _last_seq(conn: sqlite3.Connection) -> int:
    """The last sequence number `changes` ever gave (AUTOINCREMENT keeps it in sqlite_sequence)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row is not None else 0


# --- the registry command's store ----------------------------------------------------------------


class SqliteStore:
    """`internal-dns registry` and `check` on a database file: blocking calls, one transaction each."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _open(self, create: bool) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _connect(self.path, create)
        if create:
            create_schema(self._conn, self.path)
        return self._conn

    def exists(self) -> bool:
        """Whether there is a database file yet (`read` takes a missing one for an empty registry,
        so that `registry import` can create it; `check` may want to say there is none)."""
        return self.path.is_file()

    def read(self) -> list[RawEntity]:
        """Every entity; a database that does not exist yet is an empty registry."""
        if self._conn is None and not self.path.exists():
            return []
        conn = self._open(create=False)
        if _empty(conn):
            return []  # an empty file: the first write gives it the schema
        _refuse_foreign(conn, self.path)
        with _reading(conn):
            return read_entities(conn, str(self.path))

    def write(self, puts: list[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: list[RawEntity]) -> None:
        """One transaction: deletes, then puts (an entity whose key changed, a name's letter case
        say, replaces its old row), then the pruning of `changes`."""
        conn = self._open(create=True)
        rows = [(kind, encode(kind, data), old) for kind, data, old in puts]
        gone = [e.key for e in deletes]
        gone += [old.key for kind, row, old in rows if old is not None and old.key != _key_of(kind, row)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for key in gone:
                assert isinstance(key, tuple)  # this store's keys: (table, *primary key), as `maker` makes them
                conn.execute(TABLES[key[0]].delete, key[1:])
            for kind, row, _ in rows:
                conn.execute(TABLES[kind].upsert, row)
            prune(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def prune(conn: sqlite3.Connection, keep: int | None = None) -> None:
    """Delete the `changes` rows beyond the newest `keep` (KEEP_CHANGES)."""
    keep = KEEP_CHANGES if keep is None else keep
    conn.execute("DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (keep,))


# --- the server's backend ------------------------------------------------------------------------


class SqliteBackend(LiveBackend):
    retry_max = 2.0  # a local file: looking again costs nothing

    def __init__(self, path: Path, reactor: Any, poll_interval: float = DEFAULT_POLL_INTERVAL):
        super().__init__(reactor)
        self.path = path
        self.poll_interval = poll_interval
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file the position is of
        self._data_version: int | None = None
        self._interrupted = threading.Event()

    def describe(self) -> str:
        return f"sqlite {self.path}"

    # --- on the backend's thread --------------------------------------------------------------
    def load_all(self) -> tuple[list[RawEntity], int]:
        self.close()
        conn, self._file = self._open()
        self._conn = conn
        try:
            self._data_version = self._version(conn)  # before reading: a commit after it is seen
            with collector_paused(), _reading(conn):
                position = _last_seq(conn)
                entities = read_entities(conn, str(self.path), share=True)
        except sqlite3.Error as exc:
            self.close()
            raise Unavailable(f"{self.path}: {exc}") from exc
        return entities, position

    def changes(self, position: int, timeout: float) -> tuple[list[RawEntity], list[Hashable], int]:
        deadline = time.monotonic() + timeout
        try:
            while not self._interrupted.is_set():
                conn = self._connection()
                version = self._version(conn)
                if version != self._data_version:
                    self._data_version = version
                    found = self._read_changes(conn, position)
                    if found is not None:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._interrupted.wait(min(self.poll_interval, remaining))
        except sqlite3.Error as exc:
            self.close()
            raise Unavailable(f"{self.path}: {exc}") from exc
        except (Unavailable, Resync):
            self.close()
            raise
        return [], [], position

    def _connection(self) -> sqlite3.Connection:
        """The open connection, if the path still names the file it reads (a stat: cheap); else
        the file is opened again, and must be the one the position is of."""
        now = self._stat()
        if now is None:
            raise Unavailable(f"{self.path}: the database file was removed")
        if now != self._file:
            raise Resync(f"{self.path}: the database file was replaced")
        if self._conn is None:  # closed after an error: open it again and look at the log at once
            conn, opened = self._open()
            if opened != self._file:
                conn.close()
                raise Resync(f"{self.path}: the database file was replaced")
            self._conn, self._data_version = conn, None
        return self._conn

    def _read_changes(self, conn: sqlite3.Connection, position: int) -> tuple[list[RawEntity], list[Hashable], int] | None:
        """What changed after `position`, as the rows are now; None when nothing did."""
        with _reading(conn):
            last = _last_seq(conn)
            if last < position:
                raise Resync(f"{self.path}: the change log starts over (last change {last}, applied up to {position})")
            if last == position:
                return None
            logged = conn.execute("SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq", (position,)).fetchall()
            oldest = conn.execute("SELECT min(seq) FROM changes").fetchone()[0]
            if not logged or oldest > position + 1:
                raise Resync(f"{self.path}: changes {position + 1} to {(oldest or last + 1) - 1} were pruned from the log")
            decoder = _Decoder(str(self.path), share=False)
            upserts: list[RawEntity] = []
            deletes: list[Hashable] = []
            for kind, text in dict.fromkeys((kind, text) for _, kind, text in logged):
                table = TABLES.get(kind)
                try:
                    value = json.loads(text)
                except (TypeError, ValueError):
                    value = None
                key = tuple(value) if isinstance(value, list) else ()
                if table is None or len(key) != len(table.key):
                    continue  # not a row of ours: a change log edited by hand
                row = conn.execute(table.select_one, key).fetchone()
                if row is None:
                    deletes.append((kind, *key))
                else:
                    upserts.append(decoder.entity(table, row))
            return upserts, deletes, last

    def _open(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """A connection to the file at the path, and the file's identity."""
        before = self._stat()
        if before is None:
            raise Unavailable(f"no database at {self.path} (`internal-dns registry import` creates one)")
        if self.path.is_dir():
            raise Unavailable(f"{self.path} is a folder: registry.path names the database file")
        try:
            conn = _connect(self.path, create=False)
            try:
                problem = schema_problem(conn, self.path)
            except sqlite3.Error:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise Unavailable(f"{self.path}: {exc}") from exc
        if problem is not None or self._stat() != before:
            conn.close()
            raise Unavailable(problem or f"{self.path}: replaced while being opened")
        return conn, before

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --- the plugin --------------------------------------------------------------------------------------


class SqlitePlugin:
    """The `sqlite` backend as an entry point of `internal_dns.backends`. Its keys are the common
    ones: `path` is the database file, `poll_interval` how often `PRAGMA data_version` is asked."""

    options: dict[str, str] = {}

    def check(self, options: Mapping[str, Any]) -> None:
        pass

    def backend(self, config: Any, reactor: Any, clock: IReactorTime) -> SqliteBackend:
        return SqliteBackend(Path(config.path), reactor, config.poll_interval or DEFAULT_POLL_INTERVAL)

    def store(self, config: Any) -> SqliteStore:
        return SqliteStore(Path(config.path))


PLUGIN = SqlitePlugin()
