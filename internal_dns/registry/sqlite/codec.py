"""Rows as entities, and entities as rows: a row is an entity of SPEC §1 with the YAML format's
field names, `flycast` and `metadata` held as JSON, `legacy` and `dns` as 0 or 1, NULL for a
field not given. An entity's key is (table, *primary key); its source `<db>:<table>/<key>`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.sqlite.schema import TABLES, Table


class Decoder:
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
        make = self._makers.get(table.name)
        if make is None:
            make = self._makers[table.name] = self.maker(table)
        return make(row)

    def maker(self, table: Table) -> Callable[[tuple[Any, ...]], RawEntity]:
        """A function of one row of `table` to its RawEntity (a million calls: kept lean)."""
        kind, columns, json_columns, flags = table.name, table.columns, table.json, table.flags
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
    decoder = Decoder(db, share)
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


def key_of(kind: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The key of the entity a row of `kind`'s table holds, as the Decoder makes it."""
    table = TABLES[kind]
    return (kind, *(row[table.columns.index(c)] for c in table.key))
