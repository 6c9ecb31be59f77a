"""SPEC §1 (files backend): edits to the registry folder reach the answers on the next poll, a
rejected edit leaves the last good snapshot serving, and the scan never runs on the reactor.

Time is the server's injected Clock: `server.poll()` advances one poll interval and waits for the
snapshot or rejection the scan brings; `server.rescan()` forces one scan and waits for it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import internal_dns.registry.files.folder as files
from internal_dns.registry.model import RegistryError, Snapshot
from tests.conftest import RunningServer, on_reactor, write_yaml

MY_APP = {
    "148e21dad76789": "fdaa:0:18:a7b:7d:f066:b83b:2",
    "4d89699c030518": "fdaa:0:18:a7b:c4:5b1:8f2e:2",
    "6e82933c1d7e48": "fdaa:0:18:a7b:9f:3c21:44d0:2",
}
NEW_MACHINE_IP = "fdaa:0:18:a7b:99::2"


def new_app_file(state: str = "started") -> dict[str, Any]:
    return {
        "apps": [{"name": "newapp", "network": "personal"}],
        "machines": [{"id": "abcdef01234567", "app": "newapp", "region": "iad", "state": state, "ip6": NEW_MACHINE_IP}],
    }


def edit_machine(registry_dir: Path, mid: str, **fields: Any) -> None:
    path = registry_dir / "personal.yaml"
    data = yaml.safe_load(path.read_text())
    (machine,) = [m for m in data["machines"] if m["id"] == mid]
    machine.update(fields)
    write_yaml(path, data)


def soa_serial(server: RunningServer) -> int:
    reply = server.ask("no-such-app.internal", "AAAA")
    assert reply.rcode_text == "NXDOMAIN"
    soa = reply.soa()
    assert soa is not None
    return int(soa.serial)


def observe(server: RunningServer) -> dict[str, Any]:
    """What a client sees of the registry, independent of address rotation."""
    seen: dict[str, Any] = {}
    for name in (
        "my-app.internal",
        "api.internal",
        "148e21dad76789.vm.my-app.internal",
        "newapp.internal",
        "web.railway.internal",
    ):
        reply = server.ask(name, "AAAA")
        seen[name] = (reply.rcode_text, reply.flag("AA"), sorted(reply.addresses()))
    for name in ("vms.my-app.internal", "_apps.internal", "_instances.internal", "regions.my-app.internal"):
        reply = server.ask(name, "TXT")
        seen[name] = (reply.rcode_text, reply.txt())
    seen["serial"] = soa_serial(server)
    return seen


# --- changes reach the answers --------------------------------------------------------------


def test_a_changed_file_changes_the_answer(server: RunningServer, registry_dir: Path) -> None:
    assert sorted(server.ask("my-app.internal").addresses()) == sorted(MY_APP.values())
    assert server.ask("vms.my-app.internal", "TXT").txt() == ["148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad"]
    edit_machine(registry_dir, "148e21dad76789", state="stopped")
    assert isinstance(server.poll(), Snapshot)
    reply = server.ask("my-app.internal")
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    assert sorted(reply.addresses()) == sorted([MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"]])
    assert server.ask("vms.my-app.internal", "TXT").txt() == ["4d89699c030518 ams,6e82933c1d7e48 iad"]
    # a known id of a stopped machine: NODATA, not NXDOMAIN
    vm = server.ask("148e21dad76789.vm.my-app.internal")
    assert (vm.rcode_text, vm.addresses(), vm.soa() is not None) == ("NOERROR", [], True)
    # started again: back in the answers
    edit_machine(registry_dir, "148e21dad76789", state="started")
    assert isinstance(server.poll(), Snapshot)
    assert sorted(server.ask("my-app.internal").addresses()) == sorted(MY_APP.values())


def test_an_added_file_adds_an_app_and_a_removed_file_removes_it(server: RunningServer, registry_dir: Path) -> None:
    assert server.ask("newapp.internal").rcode_text == "NXDOMAIN"
    assert server.ask("_apps.internal", "TXT").txt() == ["api,cron,docs,my-app"]

    write_yaml(registry_dir / "newapp.yaml", new_app_file())
    assert isinstance(server.poll(), Snapshot)
    reply = server.ask("newapp.internal")
    assert (reply.rcode_text, reply.flag("AA"), reply.addresses()) == ("NOERROR", True, [NEW_MACHINE_IP])
    assert server.ask("_apps.internal", "TXT").txt() == ["api,cron,docs,my-app,newapp"]

    (registry_dir / "newapp.yaml").unlink()
    assert isinstance(server.poll(), Snapshot)
    reply = server.ask("newapp.internal")
    assert reply.rcode_text == "NXDOMAIN" and reply.soa() is not None
    assert server.ask("_apps.internal", "TXT").txt() == ["api,cron,docs,my-app"]


def test_a_file_in_a_subfolder_is_read(server: RunningServer, registry_dir: Path) -> None:
    (registry_dir / "teams" / "new").mkdir(parents=True)
    write_yaml(registry_dir / "teams" / "new" / "newapp.yml", new_app_file())
    assert isinstance(server.poll(), Snapshot)
    assert server.ask("newapp.internal").addresses() == [NEW_MACHINE_IP]


# --- a rejected edit changes nothing --------------------------------------------------------


def test_a_rejected_edit_keeps_the_last_good_snapshot_then_a_fix_recovers(
    server: RunningServer, registry_dir: Path, log_lines: list[str]
) -> None:
    store = server.service.store
    good = observe(server)
    good_snapshot = store.current
    # One edit that would change the answers, and one fault that rejects it whole.
    edit_machine(registry_dir, "148e21dad76789", state="stopped", ip6="fdaa:0:19::2")
    write_yaml(registry_dir / "newapp.yaml", new_app_file())

    outcome = server.poll()
    path = registry_dir / "personal.yaml"
    assert isinstance(outcome, RegistryError)
    assert outcome.problems == [
        f"{path}: machine 148e21dad76789: ip6 fdaa:0:19::2 is outside network personal's prefix fdaa:0:18::/48"
    ]
    assert store.rejections == 1 and store.last_error is outcome
    assert store.current is good_snapshot
    assert observe(server) == good  # exactly as before, SOA serial included
    rejected_lines = [line for line in log_lines if str(path) in line]
    assert len(rejected_lines) == 1, log_lines
    assert "machine 148e21dad76789" in rejected_lines[0]
    assert "ip6 fdaa:0:19::2 is outside network personal's prefix" in rejected_lines[0]
    assert "keeping the last good snapshot" in rejected_lines[0]

    # the same broken folder polled again is not rejected again
    server.rescan()
    assert store.rejections == 1 and observe(server) == good

    edit_machine(registry_dir, "148e21dad76789", ip6=MY_APP["148e21dad76789"])  # fixed, still stopped
    assert isinstance(server.poll(), Snapshot)
    assert store.last_error is None and store.rejections == 1
    now = observe(server)
    assert now["my-app.internal"] == ("NOERROR", True, sorted([MY_APP["4d89699c030518"], MY_APP["6e82933c1d7e48"]]))
    assert now["newapp.internal"] == ("NOERROR", True, [NEW_MACHINE_IP])
    assert now["serial"] > good["serial"]


def test_a_yaml_syntax_error_is_rejected_with_file_and_line(
    server: RunningServer, registry_dir: Path, log_lines: list[str]
) -> None:
    good = observe(server)
    path = registry_dir / "broken.yaml"
    path.write_text("apps:\n  - {name: x, network: personal\n")
    outcome = server.poll()
    assert isinstance(outcome, RegistryError)
    (problem,) = outcome.problems
    assert problem.startswith(f"{path}: line ") and "not valid YAML" in problem
    assert any(f"{path}: line " in line for line in log_lines)
    assert observe(server) == good
    path.unlink()
    assert isinstance(server.poll(), Snapshot)
    assert observe(server)["my-app.internal"] == good["my-app.internal"]


def test_a_removed_registry_folder_is_rejected_and_a_restored_one_recovers(
    server: RunningServer, registry_dir: Path, tmp_path: Path
) -> None:
    good = observe(server)
    shutil.move(registry_dir, tmp_path / "elsewhere")
    outcome = server.poll()
    assert isinstance(outcome, RegistryError)
    assert outcome.problems == [f"{registry_dir}: registry folder does not exist"]
    assert observe(server) == good
    shutil.move(tmp_path / "elsewhere", registry_dir)
    assert isinstance(server.poll(), Snapshot)
    assert observe(server)["serial"] > good["serial"]


def test_a_broken_registry_at_start_answers_servfail_until_fixed(
    start_server: Callable[..., RunningServer], registry_dir: Path
) -> None:
    write_yaml(
        registry_dir / "zz-dup.yaml",
        {"machines": [{"id": "148e21dad76789", "app": "api", "region": "iad", "ip6": "fdaa:0:18:a7b:99::9"}]},
    )
    server = start_server()
    store = server.service.store
    assert store.current is None and store.rejections == 1
    assert store.last_error is not None
    assert store.last_error.problems[0].startswith(
        f"{registry_dir / 'zz-dup.yaml'}: machine 148e21dad76789: duplicate machine id"
    )
    for name, rdtype in (
        ("my-app.internal", "AAAA"),
        ("nope.internal", "AAAA"),
        ("web.railway.internal", "A"),
        ("api.flycast", "AAAA"),
    ):
        assert server.ask(name, rdtype).rcode_text == "SERVFAIL"  # never NXDOMAIN before the first snapshot
    (registry_dir / "zz-dup.yaml").unlink()
    assert isinstance(server.poll(), Snapshot)
    assert sorted(server.ask("my-app.internal").addresses()) == sorted(MY_APP.values())


# --- snapshots and their serials ------------------------------------------------------------


def test_the_soa_serial_grows_with_each_new_snapshot(server: RunningServer, registry_dir: Path) -> None:
    serials = [soa_serial(server)]
    for state in ("stopped", "started", "suspended"):
        edit_machine(registry_dir, "148e21dad76789", state=state)
        assert isinstance(server.poll(), Snapshot)
        serials.append(soa_serial(server))
    assert serials == sorted(set(serials)), serials  # strictly increasing
    assert server.ask("internal", "SOA").msg.answer[0][0].serial == serials[-1]


def test_an_unchanged_folder_publishes_nothing(server: RunningServer) -> None:
    store = server.service.store
    generation, serial = store.generation, soa_serial(server)
    for _ in range(3):
        server.rescan()
    server.advance(server.config.registry.poll_interval * 3)
    server.rescan()
    assert (store.generation, store.rejections, soa_serial(server)) == (generation, 0, serial)


def test_a_fresh_file_settling_out_of_the_racy_window_publishes_nothing(
    server: RunningServer, registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file written just now is hashed on each scan; once its mtime is old enough to be trusted
    # the hash is dropped, and that alone must not count as a change.
    write_yaml(registry_dir / "newapp.yaml", new_app_file())
    assert isinstance(server.poll(), Snapshot)
    store = server.service.store
    generation = store.generation
    server.rescan()
    assert store.generation == generation
    monkeypatch.setattr(files, "time", _Later(60.0))
    server.rescan()
    server.rescan()
    assert (store.generation, store.rejections) == (generation, 0)


def test_a_same_size_edit_right_after_a_scan_is_noticed(server: RunningServer, registry_dir: Path) -> None:
    # Coarse file-system timestamps: an edit in the same tick as the last scan keeps mtime and
    # size; only the content differs. Simulated by putting the old mtime back.
    path = registry_dir / "newapp.yaml"
    write_yaml(path, new_app_file("started"))
    assert isinstance(server.poll(), Snapshot)
    assert server.ask("newapp.internal").addresses() == [NEW_MACHINE_IP]
    before = path.stat()
    write_yaml(path, new_app_file("stopped"))  # "started" and "stopped" have the same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert isinstance(server.poll(), Snapshot)
    reply = server.ask("newapp.internal")
    assert (reply.rcode_text, reply.addresses()) == ("NOERROR", [])


def test_a_same_size_edit_is_noticed_when_the_file_leaves_the_racy_window(
    server: RunningServer, registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The edit lands after the last scan that hashed the file, and the next scan comes when the
    # mtime is already old enough to be trusted: the scan that drops the hash compares it first.
    path = registry_dir / "newapp.yaml"
    write_yaml(path, new_app_file("started"))
    assert isinstance(server.poll(), Snapshot)
    before = path.stat()
    write_yaml(path, new_app_file("stopped"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    monkeypatch.setattr(files, "time", _Later(60.0))
    assert isinstance(server.poll(), Snapshot)
    assert server.ask("newapp.internal").addresses() == []
    generation = server.service.store.generation
    server.rescan()
    assert server.service.store.generation == generation


class _Later:
    """A stand-in for the `time` module whose wall clock runs `ahead` seconds in the future."""

    def __init__(self, ahead: float):
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead


# --- off the reactor thread -----------------------------------------------------------------


def test_the_scan_runs_off_the_reactor_thread(
    reactor: Any, start_server: Callable[..., RunningServer], registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, list[threading.Thread]] = {"fingerprint": [], "scan": []}
    real_fingerprint, real_scan = files.fingerprint, files.Folder.scan

    def recording_fingerprint(*args: Any) -> Any:
        threads["fingerprint"].append(threading.current_thread())
        return real_fingerprint(*args)

    def recording_scan(*args: Any) -> Any:
        threads["scan"].append(threading.current_thread())
        return real_scan(*args)

    monkeypatch.setattr(files, "fingerprint", recording_fingerprint)
    monkeypatch.setattr(files.Folder, "scan", recording_scan)
    server = start_server()
    edit_machine(registry_dir, "148e21dad76789", state="stopped")
    assert isinstance(server.poll(), Snapshot)
    server.rescan()

    reactor_thread = on_reactor(reactor, threading.current_thread)
    assert len(threads["fingerprint"]) == 3 and len(threads["scan"]) == 2, threads
    for seen in threads.values():
        assert all(t is not reactor_thread for t in seen), (reactor_thread, threads)
        assert all(t is not threading.main_thread() for t in seen)


def test_a_reload_parses_only_the_files_that_changed(
    server: RunningServer, registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_load = files.yaml.load

    def recording_load(text: str, Loader: Any) -> Any:
        data = real_load(text, Loader=Loader)
        parsed.append(next(iter(n["name"] for n in (data or {}).get("networks", [])), "other"))
        return data

    edit_machine(registry_dir, "148e21dad76789", state="stopped")
    monkeypatch.setattr(files.yaml, "load", recording_load)
    assert isinstance(server.poll(), Snapshot)
    assert parsed == ["personal"]  # other-org, railway and regions were taken from the last parse
    assert sorted(server.ask("my-app.internal").addresses()) == sorted(set(MY_APP.values()) - {MY_APP["148e21dad76789"]})
    assert server.ask("billing.internal", source="127.0.0.2").rcode_text == "NOERROR"
    (registry_dir / "railway.yaml").unlink()
    assert isinstance(server.poll(), Snapshot)
    assert parsed == ["personal"]  # a removed file is dropped, nothing parsed again
    assert server.ask("web.railway.internal", source="127.0.0.3").rcode_text == "REFUSED"  # its networks are gone
    assert server.ask("billing.internal", source="127.0.0.2").rcode_text == "NOERROR"


def test_snapshots_are_built_with_the_collector_paused_and_then_frozen(server: RunningServer, registry_dir: Path) -> None:
    import gc

    frozen = gc.get_freeze_count()
    edit_machine(registry_dir, "148e21dad76789", state="stopped")
    snapshot = server.poll()
    assert isinstance(snapshot, Snapshot)
    assert gc.get_freeze_count() > frozen and gc.isenabled()
