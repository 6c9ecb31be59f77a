"""The files backend's read: YAML parsed by libyaml's loader when PyYAML has it, to the very values
the pure-Python loader gives; a folder that keeps only a digest per file between scans, hands the
catalog every entity of a changed file and deletes what it no longer holds; a first load handed
over in kind order."""

from __future__ import annotations

import math
import shutil
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.generate import Size, network_document, region_codes
from internal_dns.registry.catalog import INVALID, Catalog, build_snapshot
from internal_dns.registry.files import folder as files
from internal_dns.registry.files.folder import Folder, load_documents
from internal_dns.registry.kinds import SECTIONS
from internal_dns.registry.model import Machine, RegistryError, Snapshot
from tests.conftest import EMBEDDED_ZONES, write_yaml

# What YAML 1.1 (PyYAML's resolver) makes of plain scalars, and the other forms a registry file
# might hold: both loaders must give the same values, of the same types.
TRICKY = """\
base: &base {region: iad, state: started}
networks:
- {name: n, prefix6: 'fdaa:9::/48', prefix4: 10.0.0.0/8, legacy: no}
machines:
- <<: *base
  id: 0123
  app: 12345678901234
  dns: yes
  ip6: fdaa:9::2
  metadata:
    since: 2024-05-01
    at: 2024-05-01T10:20:30Z
    local: 2001-12-14 21:59:43.10 -5
    hex: 0x1F
    octal: 0o17
    sexagesimal: 1:20
    float: 1.5e3
    dot: 1.
    inf: .inf
    minus_inf: -.INF
    nan: .nan
    on: on
    off: Off
    Y: Y
    n: null
    tilde: ~
    empty:
    quoted: '0123'
    double: "tab\\there \\u00e9"
    big: 123456789012345678901234567890
    under: 1_000
    plus: +12
    unicode: Zürich
    multi: |
      two
      lines
    folded: >
      a
      b
    binary: !!binary aGVsbG8=
    set: !!set {a, b}
    omap: !!omap [{a: 1}, {b: 2}]
    pairs: !!pairs [{a: 1}, {a: 2}]
    str: !!str 12
    list: [1, '1', 1.0, true, ~, [nested, {deep: 2024-01-01}]]
- *base
peers: []
"""


def shape(value: Any) -> Any:
    """A value with its types spelled out, NaN made comparable."""
    if isinstance(value, dict):
        return ("dict", [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(map(repr, value)))
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def test_the_c_loader_is_used_when_there_is_one() -> None:
    # PyYAML's wheels carry libyaml: without it a million machines parse ten times slower, which
    # CI must see as a failure, not a skip
    assert files._LOADER is yaml.CSafeLoader


def documents() -> list[str]:
    texts = [TRICKY, *(path.read_text() for path in sorted(EMBEDDED_ZONES.glob("*.yaml")))]
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    generated = network_document(3, Size(apps=200, machines_per_app=3, networks=5), region_codes())
    texts.append(yaml.dump(generated, Dumper=dumper, sort_keys=False, default_flow_style=None, width=200))
    return texts


@pytest.mark.parametrize("text", documents(), ids=lambda text: text.split("\n", 1)[0][:20])
def test_the_c_loader_reads_the_values_the_python_loader_reads(text: str) -> None:
    c, python = yaml.load(text, Loader=yaml.CSafeLoader), yaml.load(text, Loader=yaml.SafeLoader)
    assert shape(c) == shape(python)


def test_the_tricky_document_reads_as_yaml_1_1_says() -> None:
    data = yaml.load(TRICKY, Loader=files._LOADER)
    first, second = data["machines"]
    assert second == {"region": "iad", "state": "started"} and first["region"] == "iad"  # the merge key
    assert (first["id"], first["app"], first["dns"]) == (83, 12345678901234, True)
    meta = first["metadata"]
    assert meta["since"] == date(2024, 5, 1) and isinstance(meta["at"], datetime)
    assert (meta["hex"], meta["sexagesimal"], meta["under"], meta["quoted"]) == (31, 80, 1000, "0123")
    assert meta[True] is True and meta[False] is False and meta["Y"] == "Y"  # on: on, off: Off
    assert meta["octal"] == "0o17"  # YAML 1.1 has no 0o: a text
    assert meta["binary"] == b"hello" and meta["set"] == {"a", "b"} and meta["str"] == "12"


@pytest.mark.parametrize("broken", ["a: [1, 2\nb: 3\n", "a: b: c\n", "- a\nb: c\n", "{a: 1, a"])
def test_both_loaders_refuse_what_is_not_yaml(broken: str) -> None:
    for loader in {files._LOADER, yaml.SafeLoader}:
        with pytest.raises(yaml.YAMLError):
            yaml.load(broken, Loader=loader)


# --- the folder between scans -------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(EMBEDDED_ZONES, tmp_path / "registry")
    return tmp_path / "registry"


def scanned(folder: Folder) -> Snapshot:
    outcome = folder.scan()
    assert isinstance(outcome, Snapshot), outcome
    return outcome


def seen(folder: Folder, snapshot: Snapshot | RegistryError) -> Any:
    """What a scan amounts to: the catalog's keys, what it serves, what it leaves out."""
    if isinstance(snapshot, RegistryError):
        served: Any = snapshot.problems
    else:
        served = {
            name: (sorted(m.id for m in index.machines), sorted(index.apps), sorted(index.peers))
            for name, index in snapshot.networks.items()
        }
    return (
        sorted(map(repr, map(partial(as_file_key, folder), folder.catalog.keys()))),
        served,
        (snapshot.counts() if isinstance(snapshot, Snapshot) else None),
    )


def as_file_key(folder: Folder, key: Any) -> Any:
    """A key as `entities_of` makes it: a machine keyed by its id (the first of that id the folder
    read, which depends on the order the files came in) is (file, "machines", (id,), 0)."""
    return key if isinstance(key, tuple) else (folder.catalog.source_of_key(key), "machines", (key,), 0)


def as_if_read_anew(folder: Folder, root: Path) -> None:
    """The folder's state after its scans is what one scan of the files as they are gives."""
    fresh = Folder(root)
    assert seen(folder, folder.scan()) == seen(fresh, fresh.scan())


def test_the_folder_keeps_a_digest_per_file_and_nothing_it_read(root: Path) -> None:
    folder = Folder(root)
    scanned(folder)
    settings = {"load_processes", "loaders", "parts", "parted"}  # how a first read is made: nothing it read
    assert set(vars(folder)) == {"root", "catalog", "digests", "loaded", *settings}
    assert folder.parted is None
    assert sorted(folder.digests) == sorted(str(p) for p in root.glob("*.yaml"))
    assert all(isinstance(d, bytes) and len(d) == 20 for d in folder.digests.values())


def test_a_changed_file_is_read_again_whole_and_what_it_no_longer_holds_goes(root: Path) -> None:
    folder = Folder(root)
    scanned(folder)
    path = root / "personal.yaml"
    data = yaml.safe_load(path.read_text())
    gone = data["machines"].pop(0)["id"]
    data["machines"][0]["state"] = "stopped"
    data["machines"].append({"id": "abcdef01234567", "app": "my-app", "region": "iad", "ip6": "fdaa:0:18:a7b:99::2"})
    data["peers"].append(dict(data["peers"][0]))  # the same name twice: a second key, and a problem
    write_yaml(path, data)
    outcome = folder.scan()
    assert isinstance(outcome, RegistryError) and any("duplicate peer" in line for line in outcome.problems)
    assert not any(isinstance(k, tuple) and k[2] == (gone,) for k in folder.catalog.keys())
    as_if_read_anew(folder, root)
    data["peers"].pop()
    write_yaml(path, data)
    snapshot = scanned(folder)
    assert "abcdef01234567" in {m.id for m in snapshot.networks["personal"].machines}
    as_if_read_anew(folder, root)


def test_a_file_removed_or_moved_takes_its_entities_with_it(root: Path) -> None:
    folder = Folder(root)
    scanned(folder)
    (root / "railway.yaml").rename(root / "moved.yaml")  # the same entities under other keys
    scanned(folder)
    assert not any(as_file_key(folder, k)[0] == str(root / "railway.yaml") for k in folder.catalog.keys())
    as_if_read_anew(folder, root)
    networks = set(scanned(folder).networks)
    (root / "moved.yaml").unlink()
    snapshot = scanned(folder)
    assert str(root / "moved.yaml") not in folder.digests and len(snapshot.networks) < len(networks)
    as_if_read_anew(folder, root)
    (root / "other-org.yaml").unlink()  # personal.yaml refers to it: a problem now
    outcome = folder.scan()
    assert isinstance(outcome, RegistryError) and "unknown network 'other-org'" in str(outcome)
    as_if_read_anew(folder, root)


def test_machines_are_keyed_by_their_id_and_a_second_of_an_id_by_its_file(root: Path) -> None:
    folder = Folder(root)
    snapshot = scanned(folder)
    held = folder.catalog
    assert all(m.key == m.id for m in held.machines.values())  # found by id: no key kept beside
    assert not any(isinstance(e, Machine) for e in held.entities.values())
    path = root / "personal.yaml"
    data = yaml.safe_load(path.read_text())
    twice = dict(data["machines"][0])
    write_yaml(root / "zz-copy.yaml", {"machines": [twice]})  # the same id in a file read later
    outcome = folder.scan()
    assert isinstance(outcome, RegistryError)
    assert any(f"duplicate machine id (first in {path})" in line for line in outcome.problems)
    copy_key = (str(root / "zz-copy.yaml"), "machines", (twice["id"],), 0)
    assert copy_key in set(held.keys()) and held.machines[twice["id"]].key == twice["id"]
    as_if_read_anew(folder, root)
    data["machines"].pop(0)  # the first goes: the second, under its file's key, is served
    write_yaml(path, data)
    served = scanned(folder)
    assert held.machines[twice["id"]].key == copy_key and served.machine_count == snapshot.machine_count
    as_if_read_anew(folder, root)
    (root / "zz-copy.yaml").unlink()
    assert scanned(folder).machine_count == snapshot.machine_count - 1 and twice["id"] not in held.machines
    as_if_read_anew(folder, root)


def test_a_file_that_cannot_be_parsed_keeps_its_entities_as_last_read(root: Path) -> None:
    folder = Folder(root)
    before = seen(folder, scanned(folder))
    path = root / "personal.yaml"
    good = path.read_bytes()
    path.write_text("machines: [oops\n")
    outcome = folder.scan()
    assert isinstance(outcome, RegistryError) and outcome.problems[0].startswith(f"{path}: line ")
    assert seen(folder, folder.catalog.snapshot())[:2] == before[:2]  # still held, as last read
    path.write_bytes(good)  # back as it was: nothing to read again
    assert seen(folder, scanned(folder)) == before


def test_a_first_load_is_handed_over_in_kind_order(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: list[str] = []
    real_load = Catalog.load

    def recording_load(self: Catalog, entities: Any) -> Snapshot:
        def passing() -> Any:
            for e in entities:
                kinds.append(e.kind)
                yield e

        return real_load(self, passing())

    monkeypatch.setattr(Catalog, "load", recording_load)
    write_yaml(root / "zz-broken.yaml", {"machines": [1], "apps": "nope"})  # entries that are no entity
    outcome = Folder(root).scan()
    assert isinstance(outcome, RegistryError)
    members = [kind for kind in kinds if kind != INVALID]
    assert members == sorted(members, key=SECTIONS.index) and set(members) == set(SECTIONS)
    assert kinds.count(INVALID) == 2


def test_values_marshal_cannot_hold_are_held_as_they_are(root: Path) -> None:
    path = root / "personal.yaml"
    data = yaml.safe_load(path.read_text())
    data["machines"][0]["created"] = date(2024, 5, 1)  # a field of no meaning, as YAML reads a date
    write_yaml(path, data)
    folder = Folder(root)
    snapshot = scanned(folder)
    assert seen(folder, snapshot)[1:] == seen(folder, build_snapshot(load_documents(root)))[1:]
