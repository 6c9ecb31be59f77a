"""The change log the triggers keep in `changes`: where it stands, what changed after a position
(as the rows are now), and its pruning after a write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Hashable
from pathlib import Path

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.live import Resync
from internal_dns.registry.sqlite.codec import Decoder, entity_key
from internal_dns.registry.sqlite.connection import reading, tables_of

KEEP_CHANGES = 100_000  # `changes` rows a write leaves in place


def last_seq(conn: sqlite3.Connection) -> int:
    """The last sequence number `changes` ever gave (AUTOINCREMENT keeps it in sqlite_sequence)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row is not None else 0


def read_changes(conn: sqlite3.Connection, path: Path, position: int) -> tuple[list[RawEntity], list[Hashable], int] | None:
    """What changed after `position`, as the rows are now, and the new position; None when
    nothing did. Resync when the log cannot say (it starts over, or was pruned past `position`)."""
    with reading(conn):
        last = last_seq(conn)
        if last < position:
            raise Resync(f"{path}: the change log starts over (last change {last}, applied up to {position})")
        if last == position:
            return None
        logged = conn.execute("SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq", (position,)).fetchall()
        oldest = conn.execute("SELECT min(seq) FROM changes").fetchone()[0]
        if not logged or oldest > position + 1:
            raise Resync(f"{path}: changes {position + 1} to {(oldest or last + 1) - 1} were pruned from the log")
        decoder = Decoder(str(path), share=False)
        tables = tables_of(conn)  # as of this transaction: a writer may have migrated the file since the last
        upserts: list[RawEntity] = []
        deletes: list[Hashable] = []
        for kind, text in dict.fromkeys((kind, text) for _, kind, text in logged):
            table = tables.get(kind)
            try:
                value = json.loads(text)
            except (TypeError, ValueError):
                value = None
            key = tuple(value) if isinstance(value, list) else ()
            if table is None or len(key) != len(table.key):
                continue  # not a row of ours: a change log edited by hand
            row = conn.execute(table.select_one, key).fetchone()
            if row is None:
                deletes.append(entity_key(kind, key))
            else:
                upserts.append(decoder.entity(table, row))
        return upserts, deletes, last


def prune(conn: sqlite3.Connection) -> None:
    """Delete the `changes` rows beyond the newest KEEP_CHANGES."""
    conn.execute("DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (KEEP_CHANGES,))
