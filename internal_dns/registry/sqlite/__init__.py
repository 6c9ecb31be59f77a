"""The `sqlite` backend: the registry in one SQLite database file.

For one host: the server and every writer (`internal-dns registry`, a program using SQLite, the
`sqlite3` shell) on the same machine, or a store that a replicator keeps as a local copy. The
server reads the file in a thread of its own (live.py), never on the reactor.

The schema, version 2 (`PRAGMA user_version`), exactly as `internal-dns registry` creates it:

{schema}

and the database in WAL mode (`PRAGMA journal_mode=WAL`), so that the server reads while a
writer writes. A row is an entity of SPEC §1 with the YAML format's field names: `flycast`,
`services`, `metadata` and `checks` hold JSON, `legacy` and `dns` 0 or 1, and NULL stands for a
field not given (its default). There are no foreign keys and no checks: whether a row fits is the catalog's call, row
by row (catalog.py, leniently: a row that does not fit is left out and logged, the rest serves).
Fields beyond the columns are not kept.

Versions and migration: version 1 lacked `apps.services` and `machines.checks`. A version 1 file
is read as it is, by the server and by the registry command alike: only the columns it has are
selected (connection.tables_of, asked in each read transaction), so its apps have no services and
its machines no checks, as a row with NULL there would. The server never migrates: it is a reader,
and the file may be a replicator's copy or another program's; a write of `internal-dns registry`
(put, delete, import) migrates it where it gives a new file the schema (connection.create_schema):
`ALTER TABLE ... ADD COLUMN` for each missing column and the new user_version, in one write
transaction, under the write lock. A server following the file sees the new columns from its
next read transaction on (the change log goes on: adding columns changes no row). A version newer
than this code reads is refused, as a missing schema is.

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

The package, by layer: `schema` (the tables, the log and its triggers), `codec` (rows as
entities and back), `connection` (opening the file, its schema, read transactions), `changes`
(the change log: what changed after a position, pruning), `backend` (the server's side,
`SqliteBackend`) and `store` (the registry command's side, `SqliteStore`). This module is the
backend's entry point of `internal_dns.backends`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime

from internal_dns.registry import savefile
from internal_dns.registry.parts import processes_help, processes_option
from internal_dns.registry.sqlite.backend import DEFAULT_POLL_INTERVAL, PARTS_FROM, SqliteBackend
from internal_dns.registry.sqlite.schema import SCHEMA
from internal_dns.registry.sqlite.store import SqliteStore

__all__ = ["PLUGIN", "SCHEMA", "SqliteBackend", "SqliteStore"]
__doc__ = (__doc__ or "").replace("{schema}", textwrap.indent(SCHEMA, "    ").rstrip("\n"))  # the docstring shows it as created


class SqlitePlugin:
    """The `sqlite` backend as an entry point of `internal_dns.backends`. Beside the common keys
    (`path` is the database file, `poll_interval` how often `PRAGMA data_version` is asked) it
    takes `load_processes`."""

    options: dict[str, str] = {
        "load_processes": processes_help(f"a database of {PARTS_FROM:,} machines or more"),
    }

    def check(self, options: Mapping[str, Any]) -> None:
        processes_option(options)

    def backend(self, config: Any, reactor: Any, clock: IReactorTime) -> SqliteBackend:
        backend = SqliteBackend(
            Path(config.path),
            reactor,
            config.poll_interval or DEFAULT_POLL_INTERVAL,
            processes_option(config.options),
            config.loaders,
        )
        backend.saves = savefile.configured(config, backend.registry())
        return backend

    def store(self, config: Any) -> SqliteStore:
        return SqliteStore(Path(config.path))


PLUGIN = SqlitePlugin()
