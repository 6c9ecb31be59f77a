"""One part of a cold load of a big database (registry/parts.py), run as
`python -m internal_dns.registry.sqlite.parts DATABASE PART PARTS`: every region, network and app,
and the machines and peers of the part's share of the networks, loaded into a catalog in one read
transaction; its result written to standard output.

A machine's network is its `network` column, or else its app's when the app's name is in one
network only (SPEC §1): worked out here from the apps' rows into two small tables that SQLite's
scan of the machines tests each row against, so that the rows of other parts are never made into
Python values. A machine whose network this cannot tell (an unknown app, a name in several
networks, a network that is not one; a name SQLite's `lower()`, which folds ASCII only, folds
otherwise than Python's) is the first part's: the catalog then leaves it out, or places it where
it belongs, which the merge checks.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import IO, Any

from internal_dns.registry.catalog import Catalog, RawEntity
from internal_dns.registry.kinds import SECTIONS
from internal_dns.registry.parts import ResultWriter, share_of
from internal_dns.registry.sqlite.changes import last_seq
from internal_dns.registry.sqlite.codec import Decoder, source_function
from internal_dns.registry.sqlite.connection import connect, schema_problem, tables_of

_SHARED = ("regions", "networks", "apps")  # read whole by every part
_RANK = {kind: i for i, kind in enumerate(SECTIONS)}
_KEPT: list[Catalog] = []  # freed by the process's exit, not object by object


def load_part(path: Path, part: int, parts: int, out: IO[bytes]) -> None:
    """Load this part and write its result (registry/parts.py); raises sqlite3.Error or
    RuntimeError."""
    st = os.stat(path)
    conn = connect(path, create=False)
    problem = schema_problem(conn, path)
    if problem is not None:
        raise RuntimeError(problem)
    now = os.stat(path)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise RuntimeError("the database file was replaced while being opened")
    conn.execute("BEGIN")
    position = last_seq(conn)
    tables = tables_of(conn)
    owner = {name: share_of(i, parts) for i, (name,) in enumerate(conn.execute("SELECT name FROM networks ORDER BY rowid"))}
    app_network: dict[str, Any] = {}  # an app's lower-cased name -> its network, None when in several
    for network, name in conn.execute("SELECT network, name FROM apps"):
        if name.__class__ is str:
            lname = name.lower()
            app_network[lname] = network if app_network.get(lname, network) == network else None
    # What this part reads, as SQLite's own test of each row (a Python function called per row
    # costs a part 0.2 s more at a million): the first part reads what no other part does.
    conn.execute("CREATE TEMP TABLE part_networks (name TEXT PRIMARY KEY) WITHOUT ROWID")
    conn.execute("CREATE TEMP TABLE part_apps (lname TEXT PRIMARY KEY) WITHOUT ROWID")
    if part == 0:
        others = {name for name, p in owner.items() if p != 0}
        conn.executemany("INSERT INTO part_networks VALUES (?)", [(name,) for name in others])
        conn.executemany("INSERT INTO part_apps VALUES (?)", [(lname,) for lname, n in app_network.items() if n in others])
        machines = "coalesce(CASE WHEN network IS NULL THEN lower(app) NOT IN part_apps ELSE network NOT IN part_networks END, 1)"
        peers = "coalesce(network NOT IN part_networks, 1)"
    else:
        owned = {name for name, p in owner.items() if p == part}
        conn.executemany("INSERT INTO part_networks VALUES (?)", [(name,) for name in owned])
        conn.executemany("INSERT INTO part_apps VALUES (?)", [(lname,) for lname, n in app_network.items() if n in owned])
        machines = "coalesce(CASE WHEN network IS NULL THEN lower(app) IN part_apps ELSE network IN part_networks END, 0)"
        peers = "coalesce(network IN part_networks, 0)"
    decoder = Decoder(str(path), share=True)

    def entities() -> Iterator[RawEntity]:
        for name, table in tables.items():
            if name in _SHARED:
                yield from decoder.rows(table, conn.execute(table.select_all))
                continue
            where = f" WHERE {machines if name == 'machines' else peers} ORDER BY rowid"
            yield from decoder.rows(table, conn.execute(table.select_all.replace(" ORDER BY rowid", where)))

    catalog = Catalog(source_function(str(path)))
    _KEPT.append(catalog)
    catalog.load(entities())
    mine = {name for name in catalog.networks if owner.get(name, 0) == part}
    misplaced = [n for n, members in catalog.members.items() if n not in mine and (members.machines or members.peers)]
    writer = ResultWriter(out)
    dump = catalog.dump()
    head = next(dump)
    for chunk in dump:
        if chunk[0] in mine:
            writer.chunk(chunk[0], chunk)
    # the members this part left out, each with its place in the store's order
    order: dict[Hashable, tuple[int, int]] = {}
    for key, _source, kind, _data in head["entries"]:
        if kind in ("machines", "peers"):  # the rest is every part's: the first part's is kept
            primary = (key,) if kind == "machines" else key[1:]
            where = " AND ".join(f"{c} = ?" for c in tables[kind].key)
            row = conn.execute(f"SELECT rowid FROM {kind} WHERE {where}", primary).fetchone()
            order[key] = (_RANK[kind], row[0] if row else 0)
    conn.execute("COMMIT")
    conn.close()
    writer.finish(
        {"position": position, "identity": [st.st_dev, st.st_ino], "head": head, "pending": order, "misplaced": misplaced}
    )


def main(argv: list[str]) -> int:
    gc.disable()  # a short-lived process that frees nothing it makes: the collector would only walk it
    path, part, parts = Path(argv[0]), int(argv[1]), int(argv[2])
    try:
        load_part(path, part, parts, sys.stdout.buffer)
    except Exception as exc:  # said on standard error, which the server logs
        print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # without freeing a catalog of half a million machines object by object
