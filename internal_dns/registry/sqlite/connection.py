"""Connections to a registry database: opening the file, telling whether it holds the schema
(giving a new one the schema), and the read transactions everything is read in."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from internal_dns.registry.model import RegistryError
from internal_dns.registry.sqlite.schema import SCHEMA, SCHEMA_VERSION

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
    """Give a new (or empty) database the schema; leave one that has it as it is."""
    if _user_version(conn) == SCHEMA_VERSION:
        return
    refuse_foreign(conn, path)
    conn.execute("PRAGMA journal_mode = WAL")  # kept in the file; not possible inside a transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another writer may have created it meanwhile.
        if is_empty(conn):
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        refuse_foreign(conn, path)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
