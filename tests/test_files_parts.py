"""A files registry's first read in parts (folder.py `Folder._read_in_parts`, files/parts.py):
real processes parse shares of a real folder, and what they hand back, put together in the files'
order, is what one process reads; a real server serves it and follows the folder after it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import task

from internal_dns.config import ConfigError, parse_config
from internal_dns.registry.files import folder
from internal_dns.registry.files.folder import Folder, registry_files
from internal_dns.registry.model import Snapshot
from tests.conftest import EMBEDDED_ZONES, RunningServer, base_config
from tests.test_reload import MY_APP

NEW_MACHINE = {"id": "aa0001", "app": "my-app", "region": "iad", "ip6": "fdaa:0:18:a7b:99::2"}


def folder_with_everything(root: Path) -> Path:
    """The embedded registry, a file of more machines whose metadata holds a date (which marshal
    cannot write), a file that is not YAML, and a name that cannot be read."""
    shutil.copytree(EMBEDDED_ZONES, root)
    more = {"machines": [{**NEW_MACHINE, "metadata": {"since": "2024-05-01"}}]}
    text = yaml.safe_dump(more).replace("'2024-05-01'", "2024-05-01")  # unquoted: YAML's date
    (root / "dated.yaml").write_text(text)
    (root / "broken.yaml").write_text("machines: [oops\n")
    os.symlink(root / "nowhere.yaml", root / "dangling.yaml")
    return root


def read(root: Path, processes: int) -> tuple[list[tuple[Any, ...]], list[str], dict[str, bytes], str | None]:
    """What a first read hands the catalog, its problems, the digests kept, and the log line."""
    reader = Folder(root, processes)
    paths = registry_files(root)
    problems: list[str] = []
    found = reader._read_in_parts(paths, problems) if processes > 1 else None  # noqa: SLF001 -- the read itself
    if found is None:
        found = reader._read(paths, problems, keep_keys=False)  # noqa: SLF001
    entities = [(e.key, e.source, e.kind, e.data) for e in found.entities()]
    return entities, problems, dict(reader.digests), reader.parted


@pytest.mark.parametrize("processes", [2, 3])
def test_the_parts_read_what_one_process_reads(tmp_path: Path, processes: int) -> None:
    root = folder_with_everything(tmp_path / "zones")
    one = read(root, 1)
    parts = read(root, processes)
    assert parts[:3] == one[:3]
    assert len(one[1]) == 2  # the file that is not YAML and the one that cannot be read
    assert any(e[2] == "machines" and isinstance(e[3], dict) and e[3].get("id") == "aa0001" for e in one[0])
    assert parts[3] is not None and f"parsed by {processes} processes" in parts[3]
    assert "1 parsed again here" in parts[3]  # the dated file


def test_auto_reads_a_small_folder_in_one_process(tmp_path: Path) -> None:
    root = folder_with_everything(tmp_path / "zones")
    reader = Folder(root)
    assert reader._read_in_parts(registry_files(root), []) is None  # noqa: SLF001
    assert reader.parted is None


def test_auto_parses_a_big_folder_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder, "PARTS_FROM_BYTES", 1)
    root = folder_with_everything(tmp_path / "zones")
    reader = Folder(root)
    found = reader._read_in_parts(registry_files(root), [])  # noqa: SLF001
    cores = min(len(os.sched_getaffinity(0)), 8)
    assert (found is not None) == (cores > 1)
    # with as many workers as cores, each server's share is one: read in one process
    assert Folder(root, loaders=cores)._read_in_parts(registry_files(root), []) is None  # noqa: SLF001


def test_a_stop_while_the_parts_run_gives_the_scan_up(tmp_path: Path) -> None:
    """Not a read in one process instead (a million machines' worth, while the server stops),
    and nothing to save: the scan is given up."""
    root = folder_with_everything(tmp_path / "zones")
    reader = Folder(root, 2)
    reader.parts.stop()  # as FilesBackend.stop does, here before the parts start
    with pytest.raises(folder.Stopped):
        reader.scan()
    assert not reader.loaded and not reader.digests


def test_a_server_serves_a_read_in_parts_then_follows_the_folder(
    reactor: Any, tmp_path: Path, registry_dir: Path, log_lines: list[str]
) -> None:
    raw = base_config(registry_dir)
    keys = {"poll_interval": 1.0, "load_processes": 2, "snapshot_file": False}
    raw["registry"] = {"backend": "files", "path": str(registry_dir), **keys}
    server = RunningServer(reactor, parse_config(raw, str(tmp_path / "config.yaml")), task.Clock())
    try:
        assert any("parsed by 2 processes" in line for line in log_lines)
        assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP.values())
        # an edit reaches the answers on the next poll (the digests of the read in parts were kept)
        with (registry_dir / "new.yaml").open("w") as out:
            yaml.safe_dump({"machines": [NEW_MACHINE]}, out)
        assert isinstance(server.poll(), Snapshot)
        assert NEW_MACHINE["ip6"] in server.ask("my-app.internal", "AAAA").addresses()
        assert sum("parsed by" in line for line in log_lines) == 1  # the later scans read in one process
    finally:
        server.stop()


@pytest.mark.parametrize("value", [0, 9, "two", True])
def test_load_processes_of_files_is_checked(tmp_path: Path, value: Any) -> None:
    raw = base_config(tmp_path)
    raw["registry"]["load_processes"] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, str(tmp_path / "config.yaml"))
    assert caught.value.key == "registry.load_processes"
