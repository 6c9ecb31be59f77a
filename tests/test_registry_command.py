"""`internal-dns registry list | put | delete | import | export`, run as an operator runs it, on
every backend: each change is checked against the whole registry and refused (exit 1, the
catalog's own lines) when it would add a problem; what it writes, the server serves.

`Backend` fixtures give a config on an empty registry of each kind; the files backend is here,
the live ones add themselves in their own test modules through `BACKENDS`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EMBEDDED_ZONES

ROOT = Path(__file__).resolve().parent.parent
INTERNAL_DNS = str(ROOT / ".venv" / "bin" / "internal-dns")

NEW_MACHINE = {"id": "abcdef01234567", "app": "my-app", "region": "iad", "state": "started", "ip6": "fdaa:0:18:a7b:99::2"}


def files_registry(tmp_path: Path) -> Iterator[Path]:
    """A config whose `files` registry is an empty folder."""
    (tmp_path / "zones").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 0}], "registry": {"backend": "files", "path": "zones"}})
    )
    yield config


def etcd_registry(tmp_path: Path) -> Iterator[Path]:
    """A config whose `etcd` registry is an empty prefix of the test run's etcd."""
    from tests.etcd_server import shared_etcd

    yield from shared_etcd().empty_registry(tmp_path)


def sqlite_registry(tmp_path: Path) -> Iterator[Path]:
    """A config whose `sqlite` registry is a database file not created yet (the first write does)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"listen": [{"address": "127.0.0.1", "port": 0}], "registry": {"backend": "sqlite", "path": "registry.db"}}
        )
    )
    yield config


# name -> a generator of configs on an empty registry; other test modules add their backends
BACKENDS: dict[str, Callable[[Path], Iterator[Path]]] = {
    "files": files_registry,
    "etcd": etcd_registry,
    "sqlite": sqlite_registry,
}


def registry(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INTERNAL_DNS, "registry", "-c", str(config), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def listed(config: Path, kind: str = "") -> dict[str, dict[str, Any]]:
    done = registry(config, "list", *([kind] if kind else []))
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.splitlines():
        noun, ident, value = line.split(" ", 2)
        out[f"{noun} {ident}"] = json.loads(value)
    return out


@pytest.fixture(params=sorted(BACKENDS))
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    yield from BACKENDS[request.param](tmp_path)


@pytest.fixture
def example(empty: Path) -> Path:
    """The embedded example registry, imported."""
    done = registry(empty, "import", str(EMBEDDED_ZONES))
    assert done.returncode == 0, done.stderr
    return empty


def test_import_then_list_and_check(example: Path) -> None:
    machines = listed(example, "machine")
    assert len(machines) == 18 and machines["machine 148e21dad76789"]["app"] == "my-app"
    assert set(listed(example, "networks")) == {
        "network personal",
        "network other-org",
        "network shop-production",
        "network shop-staging",
    }
    assert "app web/shop-staging" in listed(example, "app")
    check = subprocess.run([INTERNAL_DNS, "check", "-c", str(example)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "4 networks, 9 apps, 18 machines, 4 peers, 35 regions" in check.stdout


def test_put_adds_then_replaces(example: Path) -> None:
    done = registry(example, "put", "machine", json.dumps(NEW_MACHINE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "added machine abcdef01234567"
    assert listed(example, "machine")["machine abcdef01234567"]["state"] == "started"
    stopped = registry(example, "put", "machine", "-", stdin=yaml.safe_dump({**NEW_MACHINE, "state": "stopped"}))
    assert stopped.returncode == 0 and stopped.stdout.strip() == "replaced machine abcdef01234567", stopped.stderr
    machines = listed(example, "machine")
    assert machines["machine abcdef01234567"]["state"] == "stopped" and len(machines) == 19


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ({**NEW_MACHINE, "app": "nope"}, "internal-dns registry: machine abcdef01234567: unknown app 'nope'"),
        (
            {**NEW_MACHINE, "ip6": "fdaa:0:18:a7b:7d:f066:b83b:2"},
            "internal-dns registry: machine abcdef01234567: address fdaa:0:18:a7b:7d:f066:b83b:2"
            " is already used by machine 148e21dad76789",
        ),
        ({**NEW_MACHINE, "region": "atlantis"}, "internal-dns registry: machine abcdef01234567: unknown region 'atlantis'"),
        (
            {**NEW_MACHINE, "ip6": "fdaa:0:99::2"},
            "internal-dns registry: machine abcdef01234567: ip6 fdaa:0:99::2 is outside network personal's prefix fdaa:0:18::/48",
        ),
    ],
    ids=["unknown-app", "address-in-use", "unknown-region", "outside-prefix"],
)
def test_put_refuses_what_would_not_fit(example: Path, value: dict[str, Any], line: str) -> None:
    before = listed(example)
    done = registry(example, "put", "machine", json.dumps(value))
    assert done.returncode == 1
    assert done.stderr == f"refused:\n  {line}\n"
    assert listed(example) == before


def test_a_duplicate_machine_id_is_a_replacement_not_a_second_machine(example: Path) -> None:
    done = registry(example, "put", "machine", json.dumps({**NEW_MACHINE, "id": "148e21dad76789"}))
    assert done.returncode == 0 and done.stdout.strip() == "replaced machine 148e21dad76789", done.stderr
    assert listed(example, "machine")["machine 148e21dad76789"]["ip6"] == NEW_MACHINE["ip6"]


def test_delete(example: Path) -> None:
    done = registry(example, "delete", "machine", "148e21dad76789")
    assert done.returncode == 0 and done.stdout.strip() == "deleted machine 148e21dad76789", done.stderr
    assert "machine 148e21dad76789" not in listed(example, "machine")
    missing = registry(example, "delete", "machine", "148e21dad76789")
    assert missing.returncode == 1 and "no machine 148e21dad76789 in " in missing.stderr
    in_use = registry(example, "delete", "app", "my-app", "--network", "personal")
    assert in_use.returncode == 1
    assert "machine 4d89699c030518: unknown app 'my-app' in network personal" not in in_use.stderr  # it names no network
    assert "machine 4d89699c030518: unknown app 'my-app'" in in_use.stderr
    assert registry(example, "delete", "app", "docs", "--network", "personal").returncode == 0
    assert registry(example, "delete", "app", "docs").returncode == 2  # an app needs its network


def test_export_round_trips(example: Path, tmp_path: Path) -> None:
    exported = tmp_path / "exported.yaml"
    done = registry(example, "export", "-o", str(exported))
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load(exported.read_text())
    assert list(data) == ["networks", "apps", "machines", "peers", "regions"]
    assert len(data["machines"]) == 18 and len(data["regions"]) == 35
    again = registry(example, "import", str(exported))
    assert again.returncode == 0 and again.stdout.count("replaced ") == 18 + 9 + 4 + 4 + 35


def test_import_replace_deletes_what_the_import_lacks(example: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.yaml"
    data = yaml.safe_load((EMBEDDED_ZONES / "regions.yaml").read_text())
    data.update(yaml.safe_load((EMBEDDED_ZONES / "railway.yaml").read_text()))
    small.write_text(yaml.safe_dump(data))
    done = registry(example, "import", "--replace", str(small))
    assert done.returncode == 0, done.stderr
    assert set(listed(example, "network")) == {"network shop-production", "network shop-staging"}
    assert len(listed(example, "machine")) == 5


def test_an_import_with_problems_writes_nothing(empty: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load((EMBEDDED_ZONES / "personal.yaml").read_text())
    bad.write_text(yaml.safe_dump(data))  # its regions are in regions.yaml, not here
    done = registry(empty, "import", str(bad))
    assert done.returncode == 1 and "unknown region 'sea'" in done.stderr
    assert listed(empty) == {}


# --- checks and services (SPEC §1) --------------------------------------------------------------------

SEARCH = {
    "name": "search",
    "network": "personal",
    "services": [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "udp"}],
}
CHECKED = {**NEW_MACHINE, "app": "search", "checks": {"http": "passing", "disk": "warning"}}


def put(config: Path, kind: str, value: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return registry(config, "put", kind, json.dumps(value))


def test_checks_and_services_travel_through_put_list_export_and_import(example: Path, tmp_path: Path) -> None:
    assert put(example, "app", SEARCH).stdout == "added app search/personal\n"
    assert put(example, "machine", CHECKED).stdout == "added machine abcdef01234567\n"
    before = listed(example)
    assert before["app search/personal"]["services"] == SEARCH["services"]
    assert before["machine abcdef01234567"]["checks"] == CHECKED["checks"]
    exported = tmp_path / "exported.yaml"
    assert registry(example, "export", "-o", str(exported)).returncode == 0
    text = exported.read_text()
    assert "&id" not in text and "*id" not in text  # no YAML aliases, even where the store's read shares values
    data = yaml.safe_load(text)
    assert next(a for a in data["apps"] if a["name"] == "search")["services"] == SEARCH["services"]
    assert next(m for m in data["machines"] if m["id"] == "abcdef01234567")["checks"] == CHECKED["checks"]
    again = registry(example, "import", "--replace", str(exported))
    assert again.returncode == 0 and "deleted" not in again.stdout, again.stderr
    assert listed(example) == before
    check = subprocess.run([INTERNAL_DNS, "check", "-c", str(example)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_set_check_changes_one_check_and_keeps_the_rest(example: Path) -> None:
    put(example, "app", SEARCH)
    put(example, "machine", CHECKED)
    done = registry(example, "set-check", "abcdef01234567", "http", "critical")
    assert done.returncode == 0 and done.stdout == "replaced machine abcdef01234567\n", done.stderr
    assert listed(example, "machine")["machine abcdef01234567"] == {**CHECKED, "checks": {"http": "critical", "disk": "warning"}}
    assert registry(example, "set-check", "abcdef01234567", "disk", "none").returncode == 0
    assert registry(example, "set-check", "abcdef01234567", "ready", "passing").returncode == 0
    assert listed(example, "machine")["machine abcdef01234567"]["checks"] == {"http": "critical", "ready": "passing"}
    registry(example, "set-check", "abcdef01234567", "http", "none")
    registry(example, "set-check", "abcdef01234567", "ready", "none")
    assert "checks" not in listed(example, "machine")["machine abcdef01234567"]  # none left: no empty mapping
    before = listed(example)
    refused = registry(example, "set-check", "abcdef01234567", "http", "down")
    assert refused.returncode == 1
    assert refused.stderr == f"refused:\n  internal-dns registry: {BAD[0][2]}\n"
    missing = registry(example, "set-check", "ffffffffffffff", "http", "passing")
    assert missing.returncode == 1 and missing.stderr.startswith("refused:\n  no machine ffffffffffffff in ")
    assert listed(example) == before


BAD = [
    (
        "machine",
        {**CHECKED, "checks": {"http": "down"}},
        "machine abcdef01234567: check 'http' is 'down': must be passing, warning or critical",
    ),
    (
        "machine",
        {**CHECKED, "checks": "passing"},
        "machine abcdef01234567: checks must be a mapping of check name to passing, warning or critical",
    ),
    (
        "app",
        {**SEARCH, "services": [{"name": "_http", "port": 80}]},
        "app search: service name '_http' is not a DNS label (give it without the leading '_')",
    ),
    (
        "app",
        {**SEARCH, "services": [{"name": "http", "port": 0}]},
        "app search: service http: port must be a number from 1 to 65535, not 0",
    ),
    (
        "app",
        {**SEARCH, "services": [{"name": "http", "port": 80, "protocol": "sctp"}]},
        "app search: service http: protocol must be tcp or udp, not 'sctp'",
    ),
    (
        "app",
        {**SEARCH, "services": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]},
        "app search: service http/tcp is listed twice",
    ),
]


def test_bad_checks_and_services_are_refused_naming_the_entity(example: Path, tmp_path: Path) -> None:
    put(example, "app", SEARCH)
    put(example, "machine", CHECKED)
    before = listed(example)
    for kind, value, line in BAD:
        done = put(example, kind, value)
        assert (done.returncode, done.stderr) == (1, f"refused:\n  internal-dns registry: {line}\n"), line
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({f"{kind}s": [value]}))
        imported = registry(example, "import", str(bad))
        assert (imported.returncode, imported.stderr) == (1, f"refused:\n  {bad}: {line}\n"), line
    assert listed(example) == before
