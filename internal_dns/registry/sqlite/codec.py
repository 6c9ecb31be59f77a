"""Rows as entities, and entities as rows: a row is an entity of SPEC §1 with the YAML format's
field names, `flycast`, `services`, `metadata` and `checks` held as JSON, `legacy` and `dns` as 0
or 1, NULL for a field not given (a database of schema version 1 has no `services` and `checks`
columns: its rows are read without them, connection.tables_of). An entity's key is (table,
*primary key), a machine's its id alone (the catalog then finds it by its id and keeps no key
beside it); its source `<db>:<table>/<key>`, which `source_of` says again from the key (the
catalog keeps no source per entity either)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.sqlite.connection import tables_of
from internal_dns.registry.sqlite.schema import TABLES, Table

Rows = Callable[[Iterable[tuple[Any, ...]]], Iterator[RawEntity]]
KEYED_BY_ID = frozenset({"machines"})  # a machine id is no key of another table: a text is no tuple


class Decoder:
    """Rows into RawEntity objects with the YAML format's values. With `share`, equal JSON texts
    (a million machines with a few metadata and checks shapes) are decoded once, to one object that every
    row with that text gets: the catalog only reads them. The registry command's read shares
    nothing, so that an export has no YAML aliases.

    Each table's rows are decoded by a loop written for that table's columns (`_source`), compiled
    once per decoder: no loop over columns, no lookup or call a row does not need (beside
    SQLite's own work, a machine's row costs about a microsecond and a half, where a general loop
    took five)."""

    CACHED = 100_000  # decoded JSON texts kept for sharing; beyond it, the memo starts anew

    def __init__(self, db: str, share: bool):
        self.db = db
        self.share = share
        self.cache: dict[str, Any] = {}  # JSON text -> decoded, with `share`
        self._decoders: dict[Table, Rows] = {}  # by table as read: a version 1 table lacks columns

    def entity(self, table: Table, row: tuple[Any, ...]) -> RawEntity:
        """One row of `table` as its entity."""
        return next(self.rows(table, (row,)))

    def rows(self, table: Table, rows: Iterable[tuple[Any, ...]]) -> Iterator[RawEntity]:
        """Rows of `table` (its columns in order, as `select_all` gives them) as entities, one by
        one as they are read."""
        decode = self._decoders.get(table)
        if decode is None:
            decode = self._decoders[table] = self._compile(table)
        return decode(rows)

    def _compile(self, table: Table) -> Rows:
        namespace: dict[str, Any] = {
            "RawEntity": RawEntity,
            "cached": self.cache.get,
            "decode": self._json,
            "kind": table.name,
            "prefix": f"{self.db}:{table.name}/",
        }
        exec(_source(table, self.share), namespace)
        decode: Rows = namespace["decode_rows"]
        return decode

    def _json(self, text: str) -> Any:
        """A JSON column's text decoded (with `share`, remembered when it is a mapping or list);
        text that is not JSON is left as it is, for the parser to refuse ("metadata must be a
        mapping ...")."""
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if self.share and isinstance(value, (dict, list)):
            if len(self.cache) >= self.CACHED:
                self.cache.clear()
            self.cache[text] = value
        return value


def _source(table: Table, share: bool) -> str:
    """The Python source of `decode_rows(rows)` for `table`: a generator of its rows' entities.

    For each column, in order: NULL leaves the field out; a JSON column's text is decoded (with
    `share`, a text seen before gives the object it gave then); a flag's 0 or 1 is False or True
    (anything else is left for the parser to refuse).
    """
    names = [f"c{i}" for i in range(len(table.columns))]
    lines = ["def decode_rows(rows):"]
    lines += [f"    for {', '.join(names)}, in rows:", "        data = {}"]
    for column, v in zip(table.columns, names, strict=True):
        lines.append(f"        if {v} is not None:")
        if column in table.json:
            lines.append(f"            if {v}.__class__ is str:")
            if share:
                lines.append(f"                found = cached({v})")
                lines.append(f"                {v} = decode({v}) if found is None else found")
            else:
                lines.append(f"                {v} = decode({v})")
        elif column in table.flags:
            lines += [
                f"            if {v}.__class__ is int and ({v} == 0 or {v} == 1):",
                f"                {v} = {v} == 1",
            ]
        lines.append(f"            data[{column!r}] = {v}")
    parts = [names[table.columns.index(c)] for c in table.key]
    lines.append(f"        key = {parts[0]}" if table.name in KEYED_BY_ID else f"        key = (kind, {', '.join(parts)})")
    path = "/".join("{" + p + "}" for p in parts)  # {c0} or {c0}/{c1}: str() of each, as the key's parts
    lines.append(f'        source = f"{{prefix}}{path}"')
    lines.append("        yield RawEntity(key, source, kind, data)")
    return "\n".join(lines) + "\n"


def stream_entities(conn: sqlite3.Connection, db: str, share: bool = False) -> Iterator[RawEntity]:
    """Every row of every entity table, table after table in kind order (regions, networks, apps,
    machines, peers), each table's in row order, as they are read: the caller holds a read
    transaction until this is exhausted or closed."""
    decoder = Decoder(db, share)
    for table in tables_of(conn).values():
        yield from decoder.rows(table, conn.execute(table.select_all))


def read_entities(conn: sqlite3.Connection, db: str, share: bool = False) -> list[RawEntity]:
    """Every row of every entity table, in one list; the caller holds a read transaction."""
    return list(stream_entities(conn, db, share))


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


def key_of(kind: str, row: tuple[Any, ...]) -> Hashable:
    """The key of the entity a row of `kind`'s table holds, as the Decoder makes it."""
    table = TABLES[kind]
    return entity_key(kind, tuple(row[table.columns.index(c)] for c in table.key))


def entity_key(kind: str, primary: tuple[Any, ...]) -> Hashable:
    """The key of the entity of `kind` with this primary key."""
    return primary[0] if kind in KEYED_BY_ID else (kind, *primary)


def source_function(db: str) -> Callable[[str, Hashable], str]:
    """The source the Decoder gives an entity, said again from its kind and key."""

    def source_of(kind: str, key: Hashable) -> str:
        parts = key[1:] if isinstance(key, tuple) else (key,)
        return f"{db}:{kind}/{'/'.join(map(str, parts))}"

    return source_of
