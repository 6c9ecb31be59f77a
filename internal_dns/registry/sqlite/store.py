"""The registry command's side of the sqlite backend: blocking calls, one transaction each."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.sqlite.changes import prune
from internal_dns.registry.sqlite.codec import encode, key_of, read_entities
from internal_dns.registry.sqlite.connection import connect, create_schema, is_empty, reading, refuse_foreign
from internal_dns.registry.sqlite.schema import TABLES


class SqliteStore:
    """`internal-dns registry` and `check` on a database file: blocking calls, one transaction each.
    A read takes the file as it is (an older schema version too); a write first gives a new file
    the schema, or migrates an older one (connection.create_schema)."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _open(self, create: bool) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, create)
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
        if is_empty(conn):
            return []  # an empty file: the first write gives it the schema
        refuse_foreign(conn, self.path)
        with reading(conn):
            return read_entities(conn, str(self.path))

    def write(self, puts: list[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: list[RawEntity]) -> None:
        """One transaction: deletes, then puts (an entity whose key changed, a name's letter case
        say, replaces its old row), then the pruning of `changes`."""
        conn = self._open(create=True)
        rows = [(kind, encode(kind, data), old) for kind, data, old in puts]
        gone = [(e.kind, e.key) for e in deletes]
        gone += [(kind, old.key) for kind, row, old in rows if old is not None and old.key != key_of(kind, row)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, key in gone:
                # this store's keys, as the Decoder makes them: (table, *primary key), or a machine's id
                conn.execute(TABLES[kind].delete, key[1:] if isinstance(key, tuple) else (key,))
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
