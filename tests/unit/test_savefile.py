"""The snapshot file (registry/savefile.py): what is restored serves exactly what was saved, and a
file that does not prove itself (damaged, cut short, of another format, Python or registry) is
refused; a save that fails or is killed leaves the previous file whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from internal_dns.registry import savefile
from internal_dns.registry.catalog import Catalog, entities_of
from internal_dns.registry.files.folder import load_documents
from internal_dns.registry.model import NO_CHECKS, Service, Snapshot
from internal_dns.registry.savefile import FORMAT, MAGIC, Refused, SnapshotFile
from internal_dns.registry.settings import RegistryConfig

ZONES = Path(__file__).resolve().parents[2] / "zones"
REGISTRY = f"files {ZONES}"


def loaded() -> Catalog:
    catalog = Catalog()
    catalog.load(e for doc in load_documents(ZONES) for e in entities_of(doc))
    return catalog


def same(a: Snapshot, b: Snapshot) -> None:
    assert a.counts() == b.counts()
    assert a.regions == b.regions
    assert dict(a.defined) == dict(b.defined)
    assert list(a.networks) == list(b.networks)
    for name in a.networks:
        assert a.networks[name] == b.networks[name], name
        assert a.networks[name].owner_map() == b.networks[name].owner_map(), name


@pytest.fixture
def saved(tmp_path: Path) -> tuple[SnapshotFile, Catalog]:
    catalog = loaded()
    file = SnapshotFile(tmp_path / "registry.snapshot", REGISTRY)
    file.save(catalog, 42, time.time() - 30)
    return file, catalog


def test_what_is_restored_serves_what_was_saved(saved: tuple[SnapshotFile, Catalog]) -> None:
    file, catalog = saved
    restored = file.open()
    assert restored.position == 42 and 29 < time.time() - restored.saved_at < 60
    same(restored.snapshot(), catalog.snapshot())  # the lazy one, network by network
    again = restored.catalog()
    same(again.snapshot(), catalog.snapshot())
    assert again.problem_lines() == catalog.problem_lines()
    assert sorted(map(repr, again.keys())) == sorted(map(repr, catalog.keys()))


def test_a_restored_catalog_goes_on_changing_as_the_saved_one_would(saved: tuple[SnapshotFile, Catalog]) -> None:
    file, catalog = saved
    again = file.open().catalog()
    documents = load_documents(ZONES)
    for doc in documents:  # a machine stopped, in both
        if doc.source.endswith("personal.yaml"):
            doc.data["machines"][0]["state"] = "stopped"
    entities = [e for doc in documents for e in entities_of(doc)]
    before = again.snapshot()
    after_saved, after_restored = catalog.load(entities), again.load(entities)
    same(after_restored, after_saved)
    assert after_restored.networks["other-org"] is before.networks["other-org"]  # untouched: kept
    assert after_restored.networks["personal"] is not before.networks["personal"]


def test_a_network_of_a_restored_snapshot_is_made_only_when_asked_for(saved: tuple[SnapshotFile, Catalog]) -> None:
    file, _ = saved
    snapshot = file.open().snapshot()
    networks = snapshot.networks
    assert "personal" in networks and len(networks) == len(snapshot.defined)
    assert not networks._made  # type: ignore[attr-defined]
    assert networks["personal"].apps["my-app"].started
    assert list(networks._made) == ["personal"]  # type: ignore[attr-defined]


def corrupt(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda p: corrupt(p, p.stat().st_size // 2), "checksum does not match"),
        (lambda p: corrupt(p, p.stat().st_size - 1), "checksum does not match"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]), "checksum does not match"),
        (lambda p: p.write_bytes(p.read_bytes()[:20]), "not a snapshot file"),
        (lambda p: p.write_bytes(b""), "not a snapshot file"),
        (lambda p: p.write_bytes(b"networks: []\n" * 10), "not a snapshot file"),
        (
            lambda p: p.write_bytes(MAGIC + (FORMAT + 1).to_bytes(4, "big") + p.read_bytes()[len(MAGIC) + 4 :]),
            f"format {FORMAT + 1}",
        ),
        (lambda p: p.write_bytes(p.read_bytes().replace(b"marshal", b"marshaL", 1)), "written by"),
        (lambda p: p.unlink(), "no saved snapshot yet"),
    ],
    ids=[
        "damaged",
        "checksum-damaged",
        "truncated",
        "cut-in-magic",
        "empty",
        "not-a-snapshot",
        "other-format",
        "other-python",
        "absent",
    ],
)
def test_a_file_that_does_not_prove_itself_is_refused(saved: tuple[SnapshotFile, Catalog], spoil, reason: str) -> None:  # type: ignore[no-untyped-def]
    file, _ = saved
    spoil(file.path)
    with pytest.raises(Refused, match=reason):
        file.open()


def test_a_file_of_another_registry_is_refused(saved: tuple[SnapshotFile, Catalog]) -> None:
    file, _ = saved
    for other in (f"files {ZONES}/other", "sqlite /srv/registry.db", "etcd http://127.0.0.1:2379 under /other/"):
        with pytest.raises(Refused, match="of another registry"):
            SnapshotFile(file.path, other).open()


def test_a_save_that_fails_leaves_the_previous_file_whole(
    saved: tuple[SnapshotFile, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    file, catalog = saved
    before = file.path.read_bytes()

    def failing_dump():  # type: ignore[no-untyped-def]
        yield from list(Catalog.dump(catalog))[:2]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(catalog, "dump", failing_dump)
    with pytest.raises(OSError, match="No space left"):
        file.save(catalog, 43, time.time())
    assert file.path.read_bytes() == before
    assert sorted(p.name for p in file.path.parent.iterdir()) == [file.path.name]  # no temporary file left
    assert file.open().position == 42


KILLED_SAVE = """
import sys, time
from pathlib import Path
from internal_dns.registry.catalog import Catalog
from internal_dns.registry.savefile import SnapshotFile
from tests.unit.test_savefile import loaded
catalog = loaded()
chunks = list(Catalog.dump(catalog))
def slow():
    yield chunks[0]
    print("writing", flush=True)
    time.sleep(60)
    yield from chunks[1:]
catalog.dump = slow
SnapshotFile(Path(sys.argv[1]), sys.argv[2]).save(catalog, 99, time.time())
"""


def test_a_save_killed_halfway_leaves_the_previous_file_and_its_leftover_goes_at_the_next_save(
    saved: tuple[SnapshotFile, Catalog],
) -> None:
    file, catalog = saved
    before = file.path.read_bytes()
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(file.path), REGISTRY], cwd=root, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    leftovers = [p for p in file.path.parent.iterdir() if p != file.path]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")  # what it had written
    assert file.path.read_bytes() == before and file.open().position == 42
    file.save(catalog, 44, time.time())
    assert [p.name for p in file.path.parent.iterdir()] == [file.path.name]
    assert file.open().position == 44


def test_the_default_place_is_the_state_directory_one_file_per_registry(tmp_path: Path) -> None:
    config = RegistryConfig()
    here = savefile.configured(config, REGISTRY, {"STATE_DIRECTORY": str(tmp_path)})
    other = savefile.configured(config, "sqlite /srv/registry.db", {"STATE_DIRECTORY": str(tmp_path)})
    assert here is not None and other is not None
    assert here.path.parent == other.path.parent == tmp_path and here.path != other.path
    assert savefile.configured(config, REGISTRY, {"STATE_DIRECTORY": str(tmp_path / "absent")}) is None
    named = RegistryConfig(snapshot_file=tmp_path / "mine.snapshot")
    assert savefile.configured(named, REGISTRY, {}).path == tmp_path / "mine.snapshot"  # type: ignore[union-attr]
    assert savefile.configured(RegistryConfig(keep_snapshot=False), REGISTRY, {"STATE_DIRECTORY": str(tmp_path)}) is None


def test_checks_and_services_are_kept(tmp_path: Path) -> None:
    documents = load_documents(ZONES)
    personal = next(doc for doc in documents if doc.source.endswith("personal.yaml"))
    machines = personal.data["machines"]
    machines[0]["checks"] = {"http": "critical"}
    machines[1]["checks"] = {"http": "passing", "disk": "warning"}
    machines[2]["checks"] = {"disk": "warning", "http": "passing"}  # equal to the one before: shared
    machines[3].pop("checks", None)
    apps = personal.data["apps"]
    apps[0]["services"] = [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "udp"}]
    apps[1].pop("services", None)
    catalog = Catalog()
    catalog.load(e for doc in documents for e in entities_of(doc))
    file = SnapshotFile(tmp_path / "registry.snapshot", REGISTRY)
    file.save(catalog, 7, time.time())
    for snapshot in (file.open().snapshot(), file.open().catalog().snapshot()):  # the lazy one, and whole
        same(snapshot, catalog.snapshot())
        network = snapshot.networks["personal"]
        by_id = {m.id: m for m in network.machines}
        ids = [str(m["id"]) for m in machines[:4]]
        assert dict(by_id[ids[0]].checks) == {"http": "critical"} and not by_id[ids[0]].healthy
        assert dict(by_id[ids[1]].checks) == {"http": "passing", "disk": "warning"} and by_id[ids[1]].healthy
        assert by_id[ids[1]].checks is by_id[ids[2]].checks  # still one mapping
        assert by_id[ids[3]].checks is NO_CHECKS
        assert network.apps[apps[0]["name"]].app.services == (Service("http", 8080, "tcp"), Service("dns", 53, "udp"))
        assert network.apps[apps[1]["name"]].app.services == ()
