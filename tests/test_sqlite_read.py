"""The sqlite backend's read of a whole database: rows decoded as the YAML format's mappings (the
decoder written per table gives what a plain reading of the rows gives), streamed table after
table in kind order, and read in one read transaction that stays open while they are taken."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.kinds import SECTIONS
from internal_dns.registry.live import Resync
from internal_dns.registry.sqlite import SqliteBackend, SqliteStore
from internal_dns.registry.sqlite.codec import Decoder, read_entities, stream_entities
from internal_dns.registry.sqlite.connection import connect, reading
from internal_dns.registry.sqlite.schema import TABLES, Table
from tests.test_sqlite import import_example, writer

MACHINE = {"id": "abcdef01234567", "app": "my-app", "region": "iad", "ip6": "fdaa:0:18:a7b:99::2"}


def plainly(db: str, table: Table, row: tuple[Any, ...]) -> RawEntity:
    """A row as an entity, column by column: what the decoder must give."""
    data: dict[str, Any] = {}
    for column, value in zip(table.columns, row, strict=True):
        if value is None:
            continue
        if column in table.json and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # left as text, for the parser to refuse
        elif column in table.flags and type(value) is int and value in (0, 1):
            value = value == 1
        data[column] = value
    parts = [row[table.columns.index(c)] for c in table.key]
    key = parts[0] if table.name == "machines" else (table.name, *parts)  # a machine by its id alone
    return RawEntity(key, f"{db}:{table.name}/{'/'.join(map(str, parts))}", table.name, data)


@pytest.fixture
def odd(tmp_path: Path) -> Path:
    """A database whose rows hold what the parsers refuse as well as what they take."""
    path = tmp_path / "odd.db"
    SqliteStore(path).write([], [])  # creates it
    conn = writer(path)
    conn.execute("INSERT INTO regions VALUES ('iad', 'Ashburn', 38.9, -77.0), ('AMS', NULL, 52, 4)")
    conn.execute("INSERT INTO networks VALUES ('n', 'fdaa:9::/48', NULL, NULL, NULL, 1)")
    conn.execute("INSERT INTO networks VALUES ('m', 'fdaa:8::/48', '10.0.0.0/8', '', 'x', 'yes')")
    conn.execute("INSERT INTO networks (name, legacy) VALUES ('o', 0), ('p', 2), (12, NULL)")
    http = '[{"name": "http", "port": 8080}]'
    conn.execute(
        f"""INSERT INTO apps VALUES ('n', 'a', '[{{"ip": "fdaa:9::1:1"}}]', '{http}'), ('n', 'b', 'not json', 'null'),"""
        f""" ('m', 'c', NULL, '{http}')"""
    )
    conn.execute(
        "INSERT INTO apps VALUES ('m', 'd', '\"a string\"', '{}'), ('m', 'e', X'5b5d', X'5b5d')"
    )  # a JSON string; a blob
    rows = [
        (
            "ab",
            "a",
            None,
            "iad",
            "started",
            "app",
            "fdaa:9::2",
            None,
            '{"role": "primary", "port": 8080}',
            0,
            '{"http": "passing"}',
        ),
        ("cd", "a", "n", "IAD", None, None, "fdaa:9::3", "10.0.0.3", "{oops", "yes", "{oops"),
        ("ef", None, None, None, None, None, None, None, None, None, None),
        (
            "0f",
            "a",
            "n",
            "iad",
            "stopped",
            "worker",
            "fdaa:9::4",
            None,
            '{"role": "primary", "port": 8080}',
            1,
            '{"http": "passing"}',
        ),
        ("1f", "a", "n", "iad", "stopped", "worker", "fdaa:9::5", None, "[1, 2]", 2, '"critical"'),
    ]
    conn.executemany("INSERT INTO machines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO peers VALUES ('n', 'laptop', 'fdaa:9::9', NULL), ('n', 'Other', NULL, 'ams')")
    conn.close()
    return path


@pytest.mark.parametrize("share", [True, False])
def test_the_decoder_reads_rows_as_a_plain_reading_does(odd: Path, share: bool) -> None:
    conn = connect(odd, create=False)
    with reading(conn):
        expected = [plainly(str(odd), table, row) for table in TABLES.values() for row in conn.execute(table.select_all)]
        got = read_entities(conn, str(odd), share=share)
    assert [(e.key, e.source, e.kind, e.data) for e in got] == [(e.key, e.source, e.kind, e.data) for e in expected]
    assert got == expected and all(type(e) is RawEntity for e in got)
    for a, b in zip(got, expected, strict=True):  # the same types, not only equal values (True is 1)
        assert list(a.data) == list(b.data) and [type(v) for v in a.data.values()] == [type(v) for v in b.data.values()]
    one = Decoder(str(odd), share).entity(TABLES["machines"], ("ab", None, None, None, None, None, None, None, "[]", 1, "{}"))
    assert (one.key, one.data) == ("ab", {"id": "ab", "metadata": [], "dns": True, "checks": {}})
    conn.close()


def test_equal_json_texts_are_decoded_once_when_shared(odd: Path) -> None:
    conn = connect(odd, create=False)
    with reading(conn):
        shared = {e.key: e for e in read_entities(conn, str(odd), share=True)}
        apart = {e.key: e for e in read_entities(conn, str(odd), share=False)}
    for a, b, field in [("ab", "0f", "metadata"), ("ab", "0f", "checks"), (("apps", "n", "a"), ("apps", "m", "c"), "services")]:
        assert shared[a].data[field] is shared[b].data[field], field
        assert apart[a].data[field] is not apart[b].data[field]  # no YAML aliases
        assert apart[a].data[field] == apart[b].data[field]
    assert shared["ab"].data["checks"] == {"http": "passing"}
    assert shared[("apps", "n", "a")].data["services"] == [{"name": "http", "port": 8080}]
    assert shared[("apps", "n", "b")].data["services"] is None  # JSON null: the parser takes it as not given
    conn.close()


def test_rows_stream_in_kind_order(db: Path) -> None:
    conn = connect(db, create=False)
    with reading(conn):
        kinds = [e.kind for e in stream_entities(conn, str(db))]
    assert kinds == sorted(kinds, key=SECTIONS.index) and set(kinds) == set(SECTIONS)
    conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return import_example(tmp_path / "registry.db")


def test_a_load_is_one_read_transaction_open_while_its_rows_are_taken(db: Path) -> None:
    backend = SqliteBackend(db, reactor=None)
    entities, position = backend.load_all()
    conn = backend._conn
    assert conn is not None and conn.in_transaction  # begun before the position was read
    other = writer(db)
    assert position == other.execute("SELECT max(seq) FROM changes").fetchone()[0]
    first = next(iter(entities))
    assert first.kind == "regions"
    # Written (and committed: WAL lets a writer go on beside the read) while the load is read:
    other.execute("INSERT INTO machines (id, app, region, ip6) VALUES (?, ?, ?, ?)", tuple(MACHINE.values()))
    other.execute("DELETE FROM regions WHERE code = 'ams'")
    rest = list(entities)
    assert conn.in_transaction is False  # ended once the last row was read
    keys = {e.key for e in [first, *rest]}
    assert MACHINE["id"] not in keys and ("regions", "ams") in keys  # as of the position
    assert [e.kind for e in rest] == sorted((e.kind for e in rest), key=SECTIONS.index)
    upserts, deletes, after = backend.changes(position, 0)  # ...and the writes come as changes after it
    assert [e.key for e in upserts] == [MACHINE["id"]] and deletes == [("regions", "ams")]
    assert after == position + 2
    other.close()
    backend.close()


def partly_read(db: Path) -> tuple[SqliteBackend, Iterator[Any], int, sqlite3.Connection]:
    """A backend whose load has handed over its first row: (it, the rest of the rows, the load's
    position, its connection, inside the load's read transaction)."""
    backend = SqliteBackend(db, reactor=None)
    entities, position = backend.load_all()
    reading_rows = iter(entities)
    next(reading_rows)
    conn = backend._conn
    assert conn is not None and conn.in_transaction
    return backend, reading_rows, position, conn


def test_a_load_closed_part_way_ends_its_transaction_and_is_read_again(db: Path) -> None:
    backend, reading_rows, position, conn = partly_read(db)
    reading_rows.close()  # a generator: the catalog stopped taking them
    assert not conn.in_transaction
    with pytest.raises(Resync, match="the last load was cut short"):  # the catalog lacks rows: load again
        backend.changes(position, 0)
    entities, position = backend.load_all()
    assert len(list(entities)) == len(SqliteStore(db).read()) and backend.changes(position, 0) == ([], [], position)
    backend.close()


def test_an_error_part_way_makes_the_store_unavailable_and_the_next_look_loads_again(db: Path) -> None:
    from internal_dns.registry.live import Unavailable

    backend, reading_rows, position, conn = partly_read(db)
    conn.interrupt()  # the next step of the read fails, as a broken file's would
    with pytest.raises(Unavailable):
        list(reading_rows)
    assert backend._conn is None  # closed: the next look opens the file again
    with pytest.raises(Resync):
        backend.changes(position, 0)
    backend.close()


def test_the_registry_command_still_reads_a_list(db: Path) -> None:
    entities = SqliteStore(db).read()
    assert isinstance(entities, list) and {e.kind for e in entities} == set(SECTIONS)
