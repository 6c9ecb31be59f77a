"""Connections to a registry database: opening the file, telling whether it holds the schema
(giving a new one the schema, and an older one what it lacks), which columns it has, and the read
transactions everything is read in.

An older schema version is read as it is (`tables_of`: the columns that version has) and only a
writer migrates it (`create_schema`): a reader never writes, so the server can follow a file that
a replicator or another writer owns, and a version 1 file keeps serving until its next write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from internal_dns.registry.model import RegistryError
from internal_dns.registry.sqlite.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, Table, tables_at

BUSY_TIMEOUT = 5.0  # seconds a connection waits for another's lock


def connect(path: Path, create: bool) -> sqlite3.Connection:
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


def _unreadable(version: int) -> str:
    return f"schema version {version}, and this internal-dns reads versions 1 to {SCHEMA_VERSION}"


def schema_problem(conn: sqlite3.Connection, path: Path) -> str | None:
    """Why this database cannot be read as a registry (None: it can; an older version too)."""
    version = _user_version(conn)
    if 1 <= version <= SCHEMA_VERSION:
        return None
    if version == 0:
        tables = _tables(conn)
        if tables:
            return f"{path}: not an internal-dns registry (it has tables {', '.join(tables)} and no schema version)"
        return f"{path}: an empty database, without the internal-dns schema (`internal-dns registry import` creates it)"
    return f"{path}: {_unreadable(version)}"


def tables_of(conn: sqlite3.Connection) -> Mapping[str, Table]:
    """The entity tables with the columns this database has, as of the caller's read transaction
    (a writer may migrate the file between two of them). A version this code cannot read (the
    file replaced meanwhile) is an sqlite3 error, as a broken file's would be."""
    version = _user_version(conn)
    if not 1 <= version <= SCHEMA_VERSION:
        raise sqlite3.DatabaseError(_unreadable(version))
    return tables_at(version)


def is_empty(conn: sqlite3.Connection) -> bool:
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
    """Give a new (or empty) database the schema, and one of an older version what it lacks
    (`migrate`); leave one that has it as it is."""
    if _user_version(conn) == SCHEMA_VERSION:
        return
    refuse_foreign(conn, path)
    conn.execute("PRAGMA journal_mode = WAL")  # kept in the file; not possible inside a transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another writer may have created or migrated it meanwhile.
        if is_empty(conn):
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        refuse_foreign(conn, path)
        migrate(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection) -> None:
    """Take a database of an older schema version to this one, version by version, inside the
    caller's write transaction: the columns and the new user_version commit together or not at
    all. Readers in a transaction meanwhile go on with the version they began with."""
    version = _user_version(conn)
    while version < SCHEMA_VERSION:
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        version += 1
        conn.execute(f"PRAGMA user_version = {version}")


def refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Raise RegistryError for a database with another schema (an empty one is ours to fill)."""
    problem = None if is_empty(conn) else schema_problem(conn, path)
    if problem is not None:
        raise RegistryError([problem])


@contextmanager
def reading(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: in WAL mode, a consistent view of the database while writers go on."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
