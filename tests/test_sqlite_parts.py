"""A first load in parts (registry/parts.py, registry/sqlite/parts.py): real processes reading a
real database, put together into exactly what one catalog holding everything dumps, and real
servers serving it, following the database after it, and loading in one process when the parts
do not fit together.

The registry here is the embedded example with rows that do not fit spread over its networks,
whose shares fall to different parts (with two parts: other-org and shop-production to the
first, personal and shop-staging to the second; flycast addresses cross between the two)."""

from __future__ import annotations

import marshal
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from internal_dns.config import ConfigError, parse_config
from internal_dns.ops.workers import worker_config
from internal_dns.registry import plugins
from internal_dns.registry.catalog import Catalog
from internal_dns.registry.live import LiveBackend
from internal_dns.registry.parts import NotMerged, ResultWriter, Runner, read_result
from internal_dns.registry.sqlite import SqliteBackend
from internal_dns.registry.sqlite import backend as sqlite_backend
from tests.conftest import RunningServer, StartSqlite, base_config
from tests.test_metrics import scrape
from tests.test_reload import MY_APP
from tests.test_sqlite import import_example, machine_ids, until, writer

# rows that do not fit, each left out by the part that reads it, or by the first part
LEFT_OUT = [
    # personal (the second part): an address outside the network's prefix
    "INSERT INTO machines (id, app, region, ip6) VALUES ('aa01', 'my-app', 'iad', 'fdaa:0:99::1')",
    # shop-staging (the second part): an address another machine holds (the network's problem)
    "INSERT INTO machines (id, app, network, region, ip6) VALUES ('aa02', 'web', 'shop-staging', 'iad', 'fd12:3456:7900:1::a')",
    # other-org (the first part): an unknown region
    "INSERT INTO machines (id, app, region, ip6) VALUES ('aa03', 'billing', 'xyz', 'fdaa:0:22::3')",
    # no network to tell: an unknown app, an app name in two networks, a network that is none
    "INSERT INTO machines (id, app, region, ip6) VALUES ('aa04', 'ghost', 'iad', 'fdaa:0:18::4')",
    "INSERT INTO machines (id, app, region, ip6) VALUES ('aa05', 'web', 'iad', 'fd12:3456:7800::5')",
    "INSERT INTO machines (id, app, network, region, ip6) VALUES ('aa06', 'web', 'nowhere', 'iad', 'fdaa:0:18::6')",
    # an app that is not one, and the machines of its name
    "INSERT INTO apps (network, name) VALUES ('shop-staging', 'Bad App')",
    # peers: in no network; outside their network's prefix (the second part)
    "INSERT INTO peers (network, name, ip6) VALUES ('nowhere', 'p1', 'fdaa:0:18::7')",
    "INSERT INTO peers (network, name, ip6) VALUES ('personal', 'p2', 'fdaa:0:99::8')",
    # and one that fits, in a network of the second part, after them in the table's order
    "INSERT INTO machines (id, app, region, ip6) VALUES ('aa09', 'cron', 'iad', 'fdaa:0:18::9')",
]


def with_rows(db: Path, statements: list[str]) -> Path:
    import_example(db)
    conn = writer(db)
    for statement in statements:
        conn.execute(statement)
    conn.close()
    return db


def loaded_in_one_process(db: Path) -> tuple[Catalog, Any]:
    """The catalog of the database loaded in this process, and the position it is of."""
    backend = SqliteBackend(db, None)
    entities, position = backend.load_all()
    catalog = Catalog(backend.source_of)
    catalog.load(entities)
    backend.close()
    return catalog, position


def one_process_problems(db: Path) -> list[str]:
    return loaded_in_one_process(db)[0].problem_lines()


def one_process(db: Path) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The first chunk and the networks' chunks of the catalog loaded in this process."""
    catalog, position = loaded_in_one_process(db)
    dump = catalog.dump()
    head = next(dump)
    return head, {chunk[0]: chunk for chunk in dump}, position


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("rows", [[], LEFT_OUT], ids=["example", "left-out"])
def test_the_parts_put_together_are_the_catalog_of_one_process(tmp_path: Path, parts: int, rows: list[str]) -> None:
    db = with_rows(tmp_path / "registry.db", rows)
    head, chunks, position = one_process(db)
    merged = SqliteBackend(db, None, load_processes=parts).load_parts()
    assert merged is not None and merged.parts == parts
    assert merged.position == position
    assert merged.head == head  # the same entries left out, in the same order, and the same counts
    assert list(merged.chunks) == list(chunks)
    assert {name: marshal.loads(data) for name, data in merged.chunks.items()} == chunks
    if rows:  # six left out as read, three by their network's index (in its chunk)
        assert len([e for e in head["entries"] if e[2] not in ("regions", "networks")]) == 6
        assert sum(len(chunk[5]) for chunk in chunks.values()) == 3


def test_a_machine_placed_outside_its_parts_networks_makes_the_load_one_process(tmp_path: Path) -> None:
    """`dup` is an app of personal and a row of shop-staging that is no app: the first part, which
    takes a machine of an app name in two networks, finds it an app of personal, not its own."""
    db = with_rows(
        tmp_path / "registry.db",
        [
            "INSERT INTO apps (network, name, flycast) VALUES ('shop-staging', 'dup', 'nonsense')",
            "INSERT INTO apps (network, name) VALUES ('personal', 'dup')",
            "INSERT INTO machines (id, app, region, ip6) VALUES ('bb01', 'dup', 'iad', 'fdaa:0:18::b1')",
        ],
    )
    with pytest.raises(NotMerged, match="placed outside their part's networks"):
        SqliteBackend(db, None, load_processes=2).load_parts()


def test_auto_loads_a_small_database_in_one_process(tmp_path: Path) -> None:
    assert SqliteBackend(with_rows(tmp_path / "registry.db", []), None).load_parts() is None


# --- the parts' processes ---------------------------------------------------------------------------


def test_a_part_that_fails_is_said_with_its_last_line(tmp_path: Path) -> None:
    fails = [sys.executable, "-c", "import sys; print('a first line\\nthe reason', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(NotMerged, match="part 2 of 2 exited with 3: the reason"):
        Runner().run([[sys.executable, "-c", "pass"], fails])


def test_a_part_that_writes_no_result_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotMerged, match="part 1 of 1 wrote no result"):
        Runner().run([[sys.executable, "-c", "print('hello')"]])


def test_stopping_kills_the_parts_running_and_starts_no_more() -> None:
    runner = Runner()
    failed: list[str] = []

    def run() -> None:
        try:
            runner.run([[sys.executable, "-c", "import time; time.sleep(60)"]] * 2)
        except NotMerged as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=run)
    started = time.monotonic()
    thread.start()
    while not runner._running:  # noqa: SLF001 -- the processes started
        time.sleep(0.01)
    runner.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 10
    assert failed and "exited with -9" in failed[0]
    with pytest.raises(NotMerged, match="stopping"):
        runner.run([[sys.executable, "-c", "pass"]])


def test_a_result_cut_short_or_padded_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "result"
    with path.open("wb") as out:
        writer_ = ResultWriter(out)
        writer_.chunk("a", ("a", [1, 2]))
        writer_.chunk("b", ("b", [3]))
        writer_.finish({"position": 7})
    data = path.read_bytes()
    result = read_result(data)
    assert result["position"] == 7 and {k: marshal.loads(v) for k, v in result["chunks"].items()} == {
        "a": ("a", [1, 2]),
        "b": ("b", [3]),
    }
    for spoiled in (data[:-1], data[1:], b"x" + data, data[:5], b""):
        with pytest.raises((ValueError, EOFError, TypeError, KeyError)):
            read_result(spoiled)


# --- servers ------------------------------------------------------------------------------------------


def parts_server(start_sqlite: StartSqlite, db: Path, **registry: Any) -> RunningServer:
    return start_sqlite(db, registry={"snapshot_file": False, **registry}, metrics={"address": "127.0.0.1", "port": 0})


def test_a_server_serves_a_load_in_parts_then_follows_the_database(
    start_sqlite: StartSqlite, tmp_path: Path, log_lines: list[str]
) -> None:
    db = with_rows(tmp_path / "registry.db", LEFT_OUT)
    server = parts_server(start_sqlite, db, load_processes=2)
    assert any("loaded by 2 processes" in line for line in log_lines), "\n".join(log_lines)
    assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP.values())
    assert server.ask("cron.internal", "AAAA").addresses() == ["fdaa:0:18::9"]  # its other machine is stopped
    assert server.ask("web.internal", "AAAA", source="127.0.0.4").addresses() == ["fd12:3456:7900:1::a"]
    # the catalog made behind the first answers says what it left out, as a load in one process does
    until(server, lambda snapshot: server.service.store.generation >= 2)
    left_out = server.service.store.left_out
    assert left_out == one_process_problems(db)
    assert scrape(server).value("internal_dns_registry_left_out") == len(left_out) == 9
    assert any("left out" in line and "aa04" in line and "ghost" in line for line in log_lines)
    # and then follows the database from where the parts read it
    conn = writer(db)
    conn.execute("INSERT INTO machines (id, app, region, ip6) VALUES ('aa10', 'cron', 'iad', 'fdaa:0:18::10')")
    until(server, lambda snapshot: "aa10" in machine_ids(snapshot))
    assert "fdaa:0:18::10" in server.ask("cron.internal", "AAAA").addresses()


def test_a_big_first_load_in_one_process_is_served_before_its_networks_are_indexed(
    start_sqlite: StartSqlite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first load of `index_later_from` machines or more is served at once, each network's
    index made when first asked for; the whole snapshot, with what the indexes leave out,
    follows; changes are followed after it."""
    monkeypatch.setattr(LiveBackend, "index_later_from", 1)
    indexing, release = threading.Event(), threading.Event()
    index_rest = Catalog.index_rest

    def held_index_rest(self: Catalog) -> Any:
        indexing.set()
        release.wait(30)  # the networks still being indexed behind the first answers
        return index_rest(self)

    monkeypatch.setattr(Catalog, "index_rest", held_index_rest)
    db = with_rows(tmp_path / "registry.db", LEFT_OUT)
    server = parts_server(start_sqlite, db, load_processes=1)
    assert indexing.wait(10) and server.service.store.generation == 1
    assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP.values())
    assert server.ask("cron.internal", "AAAA").addresses() == ["fdaa:0:18::9"]
    # aa02 claims an address web holds: left out by the index made when asked, as by the catalog's
    assert server.ask("web.internal", "AAAA", source="127.0.0.4").addresses() == ["fd12:3456:7900:1::a"]
    assert server.ask("aa02.vm.web.internal", "AAAA", source="127.0.0.4").rcode_text == "NXDOMAIN"
    release.set()
    until(server, lambda snapshot: server.service.store.generation >= 2)
    assert server.service.store.left_out == one_process_problems(db)
    assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP.values())
    conn = writer(db)
    conn.execute("INSERT INTO machines (id, app, region, ip6) VALUES ('aa10', 'cron', 'iad', 'fdaa:0:18::10')")
    until(server, lambda snapshot: "aa10" in machine_ids(snapshot))
    assert "fdaa:0:18::10" in server.ask("cron.internal", "AAAA").addresses()


def test_a_server_whose_parts_do_not_fit_loads_in_one_process(
    start_sqlite: StartSqlite, tmp_path: Path, log_lines: list[str]
) -> None:
    db = with_rows(
        tmp_path / "registry.db",
        [
            "INSERT INTO apps (network, name, flycast) VALUES ('shop-staging', 'dup', 'nonsense')",
            "INSERT INTO apps (network, name) VALUES ('personal', 'dup')",
            "INSERT INTO machines (id, app, region, ip6) VALUES ('bb01', 'dup', 'iad', 'fdaa:0:18::b1')",
        ],
    )
    server = parts_server(start_sqlite, db, load_processes=2)
    assert any("loading in one process: members placed outside" in line for line in log_lines)
    assert server.ask("dup.internal", "AAAA").addresses() == ["fdaa:0:18::b1"]


def test_a_default_server_loads_a_small_database_in_one_process(
    start_sqlite: StartSqlite, tmp_path: Path, log_lines: list[str]
) -> None:
    server = parts_server(start_sqlite, with_rows(tmp_path / "registry.db", []))
    assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP.values())
    assert not any("processes" in line for line in log_lines)


@pytest.mark.parametrize("value", [0, 9, "two", True, 1.5])
def test_load_processes_is_checked(tmp_path: Path, value: Any) -> None:
    raw = base_config(tmp_path)
    raw["registry"] = {"backend": "sqlite", "path": "r.db", "load_processes": value}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, str(tmp_path / "config.yaml"))
    assert caught.value.key == "registry.load_processes"
    assert "auto or a number from 1 to 8" in str(caught.value)


def test_auto_takes_the_cores_for_a_big_database_shared_among_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "PARTS_FROM", 10)  # the example's 19 machines count as big
    db = with_rows(tmp_path / "registry.db", [])
    cores = len(os.sched_getaffinity(0))
    merged = SqliteBackend(db, None).load_parts()
    assert (merged.parts if merged is not None else 1) == min(cores, 8)
    # `workers: N` processes each load the registry at once: each takes its share of the cores
    raw = base_config(tmp_path, workers=cores, listen=[{"address": "127.0.0.1", "port": 5353}])
    raw["registry"] = {"backend": "sqlite", "path": str(db)}
    config = worker_config(parse_config(raw, str(tmp_path / "config.yaml")), 1)
    assert config.registry.loaders == cores
    backend = plugins.make_backend(config.registry, None, task.Clock())
    assert isinstance(backend, SqliteBackend) and backend.load_parts() is None
