"""The database's layout: the entity tables, the `changes` log and the triggers that keep it, as
`internal-dns registry` creates them (schema version 2, `PRAGMA user_version`), and what takes an
older version to this one.

A table per kind (kinds.py), named after its section, its primary key the kind's identity; its
columns are the fields of SPEC §1's YAML format that are kept. A column a later version added
comes last in its table, where `ALTER TABLE ... ADD COLUMN` puts it: a migrated database and a
new one have the same columns in the same order (a writer's `INSERT ... VALUES` fits both).

Versions: 1, the first; 2 added `apps.services` and `machines.checks` (SPEC §1's optional fields).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

from internal_dns.registry.kinds import APPS, MACHINES, NETWORKS, PEERS, REGIONS, Kind

SCHEMA_VERSION = 2

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
    services TEXT,  -- JSON: [{"name": "http", "port": 8080, "protocol": "tcp"}, ...] (version 2)
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
    dns INTEGER,  -- 0 or 1
    checks TEXT  -- JSON: {"http": "passing", ...}: passing, warning or critical (version 2)
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

# What takes a database of each version to the next: run by connection.migrate, in the writer's
# transaction. Each added column must be last in its CREATE TABLE above, and in its Table's
# `added` below.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE apps ADD COLUMN services TEXT",
        "ALTER TABLE machines ADD COLUMN checks TEXT",
    ),
}


@dataclass(frozen=True)
class Table:
    kind: Kind  # the table is named after its section, and keyed by its identity
    columns: tuple[str, ...]
    json: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # booleans, stored as 0 or 1
    added: tuple[tuple[str, int], ...] = ()  # (column, the schema version that added it)

    @property
    def name(self) -> str:
        return self.kind.section

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key's columns."""
        return self.kind.identity

    def at(self, version: int) -> Table:
        """The table as a database of that schema version has it: without the columns a later
        version added."""
        later = {column for column, since in self.added if since > version}
        if not later:
            return self
        return replace(
            self,
            columns=tuple(c for c in self.columns if c not in later),
            json=tuple(c for c in self.json if c not in later),
            added=tuple((c, v) for c, v in self.added if c not in later),
        )

    @property
    def select_all(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.name} ORDER BY rowid"

    @property
    def select_one(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.name} WHERE {' AND '.join(f'{c} = ?' for c in self.key)}"

    @property
    def delete(self) -> str:
        return f"DELETE FROM {self.name} WHERE {' AND '.join(f'{c} = ?' for c in self.key)}"

    @property
    def upsert(self) -> str:
        rest = [c for c in self.columns if c not in self.key]
        return (
            f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES ({', '.join('?' * len(self.columns))}) "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}"
        )


TABLES = {
    t.name: t
    for t in (
        Table(REGIONS, ("code", "name", "latitude", "longitude")),
        Table(NETWORKS, ("name", "prefix6", "prefix4", "dns6", "dns4", "legacy"), flags=("legacy",)),
        Table(APPS, ("network", "name", "flycast", "services"), json=("flycast", "services"), added=(("services", 2),)),
        Table(
            MACHINES,
            ("id", "app", "network", "region", "state", "process_group", "ip6", "ip4", "metadata", "dns", "checks"),
            json=("metadata", "checks"),
            flags=("dns",),
            added=(("checks", 2),),
        ),
        Table(PEERS, ("network", "name", "ip6", "region")),
    )
}


@cache
def tables_at(version: int) -> dict[str, Table]:
    """The entity tables as a database of that schema version has them (a version 1 database is
    read as it is: its rows lack only what version 2 added, which is optional)."""
    return {name: table.at(version) for name, table in TABLES.items()}


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


SCHEMA = TABLES_SQL + "".join(_triggers(t.name, t.key) for t in TABLES.values())
