"""The etcd backend against a real etcd (Debian's etcd-server, started here on free ports): the
registry loaded from a key prefix and answered, changes followed through the watch, bad keys
left out while the rest serves, several servers on one etcd, etcd going away and coming back,
and a backend that falls behind a compaction loading everything again.

Nothing here measures time: a test waits for what it expects with a bounded poll.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from internal_dns.config import ConfigError, parse_config
from internal_dns.registry import edit
from internal_dns.registry.catalog import INVALID
from internal_dns.registry.etcd import EtcdStore, settings
from internal_dns.registry.etcd.client import read_prefix
from internal_dns.registry.etcd.codec import Compact, entity, key_of
from internal_dns.registry.etcd.store import MAX_TXN_OPS
from internal_dns.registry.model import NO_CHECKS, Machine, Service
from tests.conftest import EMBEDDED_ZONES, RunningServer, base_config, on_reactor
from tests.dnsclient import Reply
from tests.etcd_server import EtcdServer, free_port, shared_etcd
from tests.test_metrics import METRICS, http_get, scrape

NEW_MACHINE = {"id": "abcdef01234567", "app": "my-app", "region": "iad", "state": "started", "ip6": "fdaa:0:18:a7b:99::2"}
SECOND_MACHINE = {"id": "abcdef01234568", "app": "api", "region": "fra", "state": "started", "ip6": "fdaa:0:18:a7b:99::3"}
WITHIN = 30.0  # seconds a test waits for what it expects before failing


def eventually(check: Callable[[], Any], what: str, within: float = WITHIN) -> Any:
    """Poll `check` until it returns something true (an AssertionError counts as not yet)."""
    deadline = time.monotonic() + within
    last: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f}s: {what}" + (f" ({last})" if last else ""))
        time.sleep(0.02)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/"


def fill(etcd: EtcdServer, prefix: str, url: str | None = None) -> EtcdStore:
    """The embedded example registry, imported under the prefix."""
    store = etcd.store(prefix, url)
    edit.apply(store, edit.import_change(EMBEDDED_ZONES, False, store.read()))
    return store


def put(etcd: EtcdServer, key: str, value: Any, url: str | None = None) -> None:
    """One key, as any etcd client would write it; a value that is not text is written as JSON."""
    text = value if isinstance(value, str) else json.dumps(value)
    etcd.post("/v3/kv/put", {"key": b64(key), "value": b64(text)}, url=url)


def delete(etcd: EtcdServer, key: str, url: str | None = None) -> None:
    etcd.post("/v3/kv/deleterange", {"key": b64(key)}, url=url)


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


StartServer = Callable[..., RunningServer]


@pytest.fixture
def start_etcd_server(reactor: Any) -> Iterator[StartServer]:
    """start(etcd, prefix, **config_overrides) → a RunningServer on that registry."""
    running: list[RunningServer] = []

    def start(etcd: EtcdServer, prefix: str, **overrides: Any) -> RunningServer:
        raw = base_config(Path("unused"), metrics=METRICS, **overrides)
        raw["registry"] = etcd.registry(prefix)
        server = RunningServer(reactor, parse_config(raw, "test-config.yaml"), task.Clock())
        server.service.backend.retry_max = 0.5  # back soon after etcd is
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def addresses(server: RunningServer, name: str, rdtype: str = "AAAA") -> list[str]:
    reply = server.ask(name, rdtype)
    return sorted(reply.addresses(rdtype))


def seen(reply: Reply) -> tuple[str, list[str]]:
    """An answer as a client sees it, apart from rotation and the SOA serial."""
    lines = sorted(line for rrset in reply.msg.answer for line in rrset.to_text().splitlines())
    return reply.rcode_text, lines


# --- loading and following ----------------------------------------------------------------------

QUERIES = [
    ("my-app.internal", "AAAA", "127.0.0.1"),
    ("my-app.internal", "A", "127.0.0.1"),
    ("global.my-app.internal", "AAAA", "127.0.0.1"),
    ("sea.my-app.internal", "AAAA", "127.0.0.1"),
    ("148e21dad76789.vm.my-app.internal", "AAAA", "127.0.0.1"),
    ("d8dd5d4b2a6e68.vm.my-app.internal", "AAAA", "127.0.0.1"),
    ("worker.process.my-app.internal", "AAAA", "127.0.0.1"),
    ("top2.nearest.of.my-app.internal", "AAAA", "127.0.0.1"),
    ("primary.role.kv._metadata.my-app.internal", "AAAA", "127.0.0.1"),
    ("vms.my-app.internal", "TXT", "127.0.0.1"),
    ("all.regions.my-app.internal", "TXT", "127.0.0.1"),
    ("cron.internal", "AAAA", "127.0.0.1"),
    ("docs.internal", "AAAA", "127.0.0.1"),
    ("_apps.internal", "TXT", "127.0.0.1"),
    ("_peer.internal", "TXT", "127.0.0.1"),
    ("my-laptop._peer.internal", "AAAA", "127.0.0.1"),
    ("interactive-1669ba3d9._peer.internal", "AAAA", "127.0.0.1"),
    ("all._instances.internal", "TXT", "127.0.0.1"),
    ("billing.internal", "AAAA", "127.0.0.1"),
    ("billing.internal", "AAAA", "127.0.0.2"),
    ("office-vpn._peer.internal", "AAAA", "127.0.0.2"),
    ("api.flycast", "AAAA", "127.0.0.1"),
    ("api.flycast", "AAAA", "127.0.0.2"),
    ("billing.flycast", "AAAA", "127.0.0.1"),
    ("web.railway.internal", "A", "127.0.0.3"),
    ("web.railway.internal", "AAAA", "127.0.0.3"),
    ("web.railway.internal", "AAAA", "127.0.0.4"),
    ("postgres.railway.internal", "AAAA", "127.0.0.4"),
    ("nothing-here.internal", "AAAA", "127.0.0.1"),
]


def test_the_registry_loads_from_etcd_and_answers_as_from_files(
    start_server: StartServer, start_etcd_server: StartServer, prefix: str
) -> None:
    etcd = shared_etcd()
    fill(etcd, prefix)
    on_etcd = start_etcd_server(etcd, prefix)
    on_files = start_server()
    assert on_etcd.snapshot is not None and on_files.snapshot is not None
    assert (
        on_etcd.snapshot.counts()
        == on_files.snapshot.counts()
        == {"networks": 4, "apps": 9, "machines": 18, "peers": 4, "regions": 35}
    )
    for name, rdtype, source in QUERIES:
        assert seen(on_etcd.ask(name, rdtype, source=source)) == seen(on_files.ask(name, rdtype, source=source)), (
            name,
            rdtype,
            source,
        )
    assert http_get(on_etcd, "/readyz")[0] == 200
    assert on_etcd.service.backend.describe() == f"etcd {etcd.url} under {prefix}"


def test_a_put_and_a_delete_reach_the_answers(start_etcd_server: StartServer, prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    server = start_etcd_server(etcd, prefix)
    assert server.ask("abcdef01234567.vm.my-app.internal").rcode_text == "NXDOMAIN"

    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
    eventually(lambda: addresses(server, "abcdef01234567.vm.my-app.internal") == [NEW_MACHINE["ip6"]], "the new machine answered")
    assert NEW_MACHINE["ip6"] in addresses(server, "my-app.internal")

    delete(etcd, f"{prefix}machines/148e21dad76789")
    eventually(lambda: server.ask("148e21dad76789.vm.my-app.internal").rcode_text == "NXDOMAIN", "the deleted machine gone")
    assert "fdaa:0:18:a7b:7d:f066:b83b:2" not in addresses(server, "my-app.internal")

    # A change of a region (which everything refers to) and one through the registry command.
    edit.apply(store, edit.Change([("machines", {**NEW_MACHINE, "state": "stopped"})], [("apps", ("personal", "docs"))]))
    eventually(lambda: server.ask("docs.internal").rcode_text == "NXDOMAIN", "the deleted app gone")
    assert NEW_MACHINE["ip6"] not in addresses(server, "my-app.internal")
    put(
        etcd,
        f"{prefix}regions/iad",
        {"code": "iad", "name": "Ashburn", "latitude": 38.95, "longitude": -77.46, "note": "changed"},
    )
    eventually(lambda: server.snapshot is not None and server.snapshot.regions["iad"].name == "Ashburn", "the region replaced")
    assert server.service.store.left_out == []


def test_a_bad_value_is_left_out_and_the_rest_applies(start_etcd_server: StartServer, prefix: str, log_lines: list[str]) -> None:
    etcd = shared_etcd()
    fill(etcd, prefix)
    put(etcd, f"{prefix}machines/0a", "{not json")  # there before the server starts
    server = start_etcd_server(etcd, prefix)
    assert server.snapshot is not None and server.snapshot.machine_count == 18
    not_json = server.service.store.left_out
    assert len(not_json) == 1 and not_json[0].startswith(f"{prefix}machines/0a: machine: the value is not JSON (")

    # Written while the server runs: a value the catalog refuses, and one that is no object,
    # next to a good machine.
    put(etcd, f"{prefix}machines/0b", {"id": "0b", "app": "my-app", "region": "atlantis", "ip6": "fdaa:0:18:a7b:99::9"})
    put(etcd, f"{prefix}machines/0c", [1, 2])
    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
    eventually(
        lambda: addresses(server, "abcdef01234567.vm.my-app.internal") == [NEW_MACHINE["ip6"]], "the good machine answered"
    )
    expected = [
        not_json[0],
        f"{prefix}machines/0c: machine: the value must be a JSON object, not an array",
        f"{prefix}machines/0b: machine 0b: unknown region 'atlantis'",
    ]
    eventually(lambda: server.service.store.left_out == expected, f"left out: {expected}")
    assert scrape(server).value("internal_dns_registry_left_out") == 3
    assert server.ask("0b.vm.my-app.internal").rcode_text == "NXDOMAIN"
    for line in expected:
        assert sum(line in logged and "left out:" in logged for logged in log_lines) == 1, line  # logged once
    assert http_get(server, "/readyz")[0] == 200  # the rest serves

    # Fixed, and gone: nothing is left out any more.
    put(etcd, f"{prefix}machines/0b", {"id": "0b", "app": "my-app", "region": "iad", "ip6": "fdaa:0:18:a7b:99::9"})
    delete(etcd, f"{prefix}machines/0a")
    delete(etcd, f"{prefix}machines/0c")
    eventually(lambda: server.service.store.left_out == [], "nothing left out")
    assert addresses(server, "0b.vm.my-app.internal") == ["fdaa:0:18:a7b:99::9"]
    assert scrape(server).value("internal_dns_registry_left_out") == 0


def test_keys_that_disagree_with_their_values_or_have_no_place_are_left_out(start_etcd_server: StartServer, prefix: str) -> None:
    etcd = shared_etcd()
    fill(etcd, prefix)
    put(etcd, f"{prefix}machines/abc", {**NEW_MACHINE, "id": "def"})
    put(etcd, f"{prefix}apps/personal/foo", {"name": "bar", "network": "personal"})
    put(etcd, f"{prefix}apps/personal/Fine", {"name": "fine", "network": "personal"})  # names compare ignoring case
    server = start_etcd_server(etcd, prefix)
    first = [
        f"{prefix}apps/personal/foo: app bar: the key and the value disagree: the key names name 'foo', the value 'bar'",
        f"{prefix}machines/abc: machine def: the key and the value disagree: the key names id 'abc', the value 'def'",
    ]
    assert server.service.store.left_out == first
    assert server.ask("fine.internal", "TXT").rcode_text == "NOERROR"

    put(etcd, f"{prefix}peers/other-org/vpn", {"name": "vpn", "network": "personal", "ip6": "fdaa:0:18:a7b:d6b:0:f:2"})
    put(etcd, f"{prefix}elsewhere/x", {"name": "x"})
    put(etcd, f"{prefix}machines/a/b", NEW_MACHINE)
    put(etcd, f"{prefix}regions/", {"code": "", "latitude": 0, "longitude": 0})
    shape = "regions/<code>, networks/<name>, apps/<network>/<name>, machines/<id> or peers/<network>/<name>"
    expected = [
        *first,
        f"{prefix}peers/other-org/vpn: peer vpn: the key and the value disagree:"
        " the key names network 'other-org', the value 'personal'",
        f"{prefix}elsewhere/x: not a registry key (expected {prefix}{shape})",
        f"{prefix}machines/a/b: not a registry key (expected {prefix}{shape})",
        f"{prefix}regions/: not a registry key (expected {prefix}{shape})",
    ]
    eventually(lambda: sorted(server.service.store.left_out) == sorted(expected), f"left out: {expected}")
    assert server.ask("vpn._peer.internal").rcode_text == "NXDOMAIN"


def test_entity_and_key_of_agree() -> None:
    for kind, data in [
        ("regions", {"code": "IAD", "latitude": 1, "longitude": 2}),
        ("networks", {"name": "Personal", "prefix6": "fdaa:0:18::/48"}),
        ("apps", {"name": "My-App", "network": "Personal"}),
        ("machines", {"id": "0abc", "app": "x"}),
        ("peers", {"name": "Laptop", "network": "Personal", "ip6": "fdaa::1"}),
    ]:
        key = key_of("/p/", kind, data)
        e = entity("/p/", key.encode(), json.dumps(data).encode())
        assert (e.key, e.source, e.kind, e.data) == (key, key, kind, data)
    assert key_of("/p/", "apps", {"name": "My-App", "network": "Personal"}) == "/p/apps/Personal/my-app"
    bad = entity("/p/", b"/p/machines/\xff", b"{}")
    assert bad.kind == INVALID and bad.data == "/p/machines/\\xff: the key is not UTF-8"
    assert entity("/p/", b"/p/machines/ab", '{"id": "ab", "metadata": {"city": "Zürich"}}'.encode()).data["metadata"] == {
        "city": "Zürich"
    }
    with pytest.raises(ValueError, match="network a/b: 'name' must be a text without '/'"):
        key_of("/p/", "networks", {"name": "a/b"})


# --- several servers, and etcd going away ------------------------------------------------------------


def ready(server: RunningServer) -> tuple[int, str]:
    status, _, body = http_get(server, "/readyz")
    return status, body


def test_three_servers_follow_one_etcd_through_an_outage(etcd: EtcdServer, start_etcd_server: StartServer, prefix: str) -> None:
    fill(etcd, prefix)
    servers = [start_etcd_server(etcd, prefix) for _ in range(3)]
    new_vm = "abcdef01234567.vm.my-app.internal"

    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
    for server in servers:
        eventually(lambda s=server: addresses(s, new_vm) == [NEW_MACHINE["ip6"]], "every server answers the change")

    etcd.stop()
    for server in servers:
        eventually(lambda s=server: ready(s)[0] == 503, "/readyz fails while etcd is away")
        _, body = ready(server)
        assert "registry store unreachable for " in body and "serving the last snapshot" in body and etcd.url in body, body
        assert scrape(server).value("internal_dns_registry_store_up") == 0
        # The last snapshot keeps serving.
        assert addresses(server, new_vm) == [NEW_MACHINE["ip6"]]
        assert addresses(server, "148e21dad76789.vm.my-app.internal") == ["fdaa:0:18:a7b:7d:f066:b83b:2"]
        assert server.ask("web.railway.internal", "A", source="127.0.0.3").rcode_text == "NOERROR"

    etcd.start()
    for server in servers:
        eventually(lambda s=server: ready(s) == (200, "ready\n"), "/readyz recovers with etcd")
        assert scrape(server).value("internal_dns_registry_store_up") == 1

    put(etcd, key_of(prefix, "machines", SECOND_MACHINE), SECOND_MACHINE)
    delete(etcd, key_of(prefix, "machines", NEW_MACHINE))
    for server in servers:
        eventually(
            lambda s=server: addresses(s, "abcdef01234568.vm.api.internal") == [SECOND_MACHINE["ip6"]],
            "every server answers after the outage",
        )
        eventually(lambda s=server: s.ask(new_vm).rcode_text == "NXDOMAIN", "every server sees the delete")


def test_a_server_started_while_etcd_is_away_loads_once_it_is_back(
    etcd: EtcdServer, start_etcd_server: StartServer, prefix: str
) -> None:
    fill(etcd, prefix)
    etcd.stop()
    server = start_etcd_server(etcd, prefix)
    status, body = ready(server)
    assert status == 503 and "no registry snapshot loaded yet" in body and "registry store unreachable" in body, body
    assert server.ask("my-app.internal").rcode_text == "SERVFAIL"
    etcd.start()
    eventually(lambda: ready(server) == (200, "ready\n"), "loaded once etcd is back")
    assert len(addresses(server, "my-app.internal")) == 3


def test_a_backend_behind_a_compaction_loads_everything_again(
    etcd: EtcdServer, start_etcd_server: StartServer, prefix: str, log_lines: list[str]
) -> None:
    fill(etcd, prefix)
    server = start_etcd_server(etcd, prefix)
    backend = server.service.backend
    loads: list[int] = []
    load_all = backend.load_all

    def counted() -> Any:
        loads.append(1)
        return load_all()

    backend.load_all = counted

    # Away from the server (etcd answers on another port for a while): changes, then a
    # compaction of the history the server would need to catch up through its watch.
    etcd.stop()
    eventually(lambda: ready(server)[0] == 503, "the server notices etcd is away")
    elsewhere = f"http://127.0.0.1:{free_port()}"
    etcd.start(client_port=int(elsewhere.rsplit(":", 1)[1]))
    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE, url=elsewhere)
    delete(etcd, f"{prefix}machines/148e21dad76789", url=elsewhere)
    put(etcd, f"{prefix}machines/0b", {"id": "0b", "app": "my-app", "region": "iad", "ip6": "fdaa:0:18:a7b:99::9"}, url=elsewhere)
    delete(etcd, f"{prefix}machines/0b", url=elsewhere)
    compacted = etcd.compact(url=elsewhere)
    etcd.stop()
    etcd.start()

    eventually(lambda: ready(server) == (200, "ready\n"), "the server is back")
    eventually(
        lambda: addresses(server, "abcdef01234567.vm.my-app.internal") == [NEW_MACHINE["ip6"]], "the change made while away"
    )
    assert server.ask("148e21dad76789.vm.my-app.internal").rcode_text == "NXDOMAIN"
    assert server.ask("0b.vm.my-app.internal").rcode_text == "NXDOMAIN"
    assert loads == [1], "loaded everything again"
    assert any("loading everything again" in line and f"etcd keeps revisions from {compacted}" in line for line in log_lines), (
        log_lines
    )
    assert server.snapshot is not None and server.snapshot.machine_count == 18

    # ...and follows changes from there on.
    put(etcd, key_of(prefix, "machines", SECOND_MACHINE), SECOND_MACHINE)
    eventually(
        lambda: addresses(server, "abcdef01234568.vm.api.internal") == [SECOND_MACHINE["ip6"]], "a change after the reload"
    )


def test_endpoints_are_tried_in_turn(start_etcd_server: StartServer, prefix: str, reactor: Any) -> None:
    etcd = shared_etcd()
    fill(etcd, prefix)
    raw = base_config(Path("unused"), metrics=METRICS)
    raw["registry"] = {**etcd.registry(prefix), "endpoints": [f"http://127.0.0.1:{free_port()}", etcd.url]}
    server = RunningServer(reactor, parse_config(raw, "test-config.yaml"), task.Clock())
    try:
        assert server.snapshot is not None and server.snapshot.machine_count == 18
        put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
        eventually(
            lambda: addresses(server, "abcdef01234567.vm.my-app.internal") == [NEW_MACHINE["ip6"]],
            "followed on the second endpoint",
        )
        assert ready(server) == (200, "ready\n")
    finally:
        server.stop()


def test_stop_ends_the_watch_at_once(start_etcd_server: StartServer, prefix: str) -> None:
    etcd = shared_etcd()
    fill(etcd, prefix)
    server = start_etcd_server(etcd, prefix)
    backend = server.service.backend
    backend.wait = 3600.0  # a watch that would wait an hour for a change
    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
    eventually(lambda: addresses(server, "abcdef01234567.vm.my-app.internal") == [NEW_MACHINE["ip6"]], "following")
    on_reactor(server.reactor, backend.stop)  # its Deferred fires once the thread has ended, or after 10 s
    assert backend._thread is not None and not backend._thread.is_alive()


def after_first_request(store: Any, change: Callable[[], None]) -> list[int]:
    """Have the store's client make `change` once, right after its first request returns (after
    the first page: a change a load at one revision must not see); the requests made, one entry
    each."""
    read = store.cluster.range
    calls: list[int] = []

    def read_then_change(*args: Any) -> Any:
        result = read(*args)
        if not calls:
            change()
        calls.append(1)
        return result

    store.cluster.range = read_then_change
    return calls


def test_a_load_in_pages_is_one_revision(prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    whole, _ = read_prefix(store.cluster, prefix)

    def change() -> None:
        put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
        delete(etcd, f"{prefix}regions/ams")

    calls = after_first_request(store, change)
    paged, revision = read_prefix(store.cluster, prefix, page=7)
    assert len(calls) == -(-len(whole) // 7) and [(e.key, e.data) for e in paged] == [(e.key, e.data) for e in whole]
    assert etcd.revision() == revision + 2
    assert len(read_prefix(store.cluster, prefix)[0]) == len(whole)  # one more machine, one region less
    store.close()


def test_values_read_share_what_they_repeat() -> None:
    compact = Compact()
    a = entity(
        "/p/",
        b"/p/machines/0a",
        json.dumps({"id": "0a", "app": "web", "state": "started", "metadata": {"role": "db"}}).encode(),
        compact,
    )
    b = entity(
        "/p/",
        b"/p/machines/0b",
        json.dumps({"id": "0b", "app": "web", "state": "started", "metadata": {"role": "db"}}).encode(),
        compact,
    )
    assert a.data == {"id": "0a", "app": "web", "state": "started", "metadata": {"role": "db"}}
    assert a.data["app"] is b.data["app"] and a.data["metadata"] is b.data["metadata"]
    assert [k for k in a.data] == [k for k in b.data] and all(x is y for x, y in zip(a.data, b.data, strict=True))


def test_checks_and_services_read_are_shared_as_metadata_is() -> None:
    compact = Compact()

    def read(key: str, value: dict[str, Any]) -> dict[str, Any]:
        data = entity("/p/", f"/p/{key}".encode(), json.dumps(value).encode(), compact).data
        assert isinstance(data, dict) and data == value  # equal to what json.loads gives
        return data

    a = read("machines/0a", {"id": "0a", "checks": {"http": "passing", "disk": "warning"}})
    b = read("machines/0b", {"id": "0b", "checks": {"http": "passing", "disk": "warning"}})
    assert a["checks"] is b["checks"]
    web = read(
        "apps/n/web", {"name": "web", "network": "n", "services": [{"name": "http", "port": 8080}, {"name": "x", "port": 1}]}
    )
    api = read("apps/n/api", {"name": "api", "network": "n", "services": [{"name": "http", "port": 8080}]})
    assert web["services"][0] is api["services"][0]  # entry by entry
    # equal in Python, not to the parsers: a port of true is refused, metadata true reads as "true"
    flag = read("apps/n/flag", {"name": "flag", "network": "n", "services": [{"name": "x", "port": True}]})
    assert flag["services"][0]["port"] is True
    one = read("machines/0c", {"id": "0c", "metadata": {"debug": 1}})
    true = read("machines/0d", {"id": "0d", "metadata": {"debug": True}})
    assert one["metadata"]["debug"] == 1 and true["metadata"]["debug"] is True


def test_checks_and_services_reach_the_catalog_and_follow_the_watch(start_etcd_server: StartServer, prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    search = {
        "name": "search",
        "network": "personal",
        "services": [{"name": "http", "port": 8080}, {"name": "DNS", "port": 53, "protocol": "udp"}],
    }
    checked = {**NEW_MACHINE, "app": "search", "checks": {"http": "passing", "disk": "warning"}}
    second = {**SECOND_MACHINE, "app": "search", "checks": {"disk": "warning", "http": "passing"}}
    edit.apply(store, edit.Change([("apps", search), ("machines", checked), ("machines", second)], []))
    server = start_etcd_server(etcd, prefix)

    def machine(mid: str) -> Machine:
        assert server.snapshot is not None
        return server.snapshot.networks["personal"].apps["search"].by_id[mid]

    assert server.snapshot is not None
    app = server.snapshot.networks["personal"].apps["search"].app
    assert app.services == (Service("http", 8080, "tcp"), Service("dns", 53, "udp"))
    assert dict(machine(checked["id"]).checks) == {"http": "passing", "disk": "warning"} and machine(checked["id"]).healthy
    assert machine(checked["id"]).checks is machine(second["id"]).checks  # one mapping for equal checks
    # a check flipped by another writer, through the watch
    put(etcd, key_of(prefix, "machines", checked), {**checked, "checks": {"http": "critical"}})
    eventually(lambda: not machine(checked["id"]).healthy, "the check flipped")
    assert dict(machine(checked["id"]).checks) == {"http": "critical"}
    put(etcd, key_of(prefix, "machines", checked), {k: v for k, v in checked.items() if k != "checks"})
    eventually(lambda: machine(checked["id"]).checks is NO_CHECKS, "the checks removed")
    # a bad value is left out, naming the machine
    put(etcd, key_of(prefix, "machines", second), {**second, "checks": {"http": "down"}})
    line = (
        f"{prefix}machines/{second['id']}: machine {second['id']}: check 'http' is 'down': must be passing, warning or critical"
    )
    eventually(lambda: server.service.store.left_out == [line], "the bad checks left out")


# --- the registry command's store, and the config -------------------------------------------------------


def test_a_write_of_more_than_128_keys_is_several_transactions(prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    machines = [
        {"id": f"f{i:05x}", "app": "cron", "region": "ord", "state": "stopped", "ip6": f"fdaa:0:18:a7b:aa::{i + 1:x}"}
        for i in range(300)
    ]
    before = etcd.revision()
    store.write([("machines", m, None) for m in machines], [])
    assert etcd.revision() - before == -(-300 // MAX_TXN_OPS)  # one revision per transaction: 3
    assert sum(e.kind == "machines" for e in store.read()) == 18 + 300
    # The same through the registry command: checked, then written.
    deletes = [("machines", (m["id"],)) for m in machines]
    assert len(edit.apply(store, edit.Change([], deletes))) == 300
    assert sum(e.kind == "machines" for e in store.read()) == 18
    store.close()


def test_a_replaced_entity_whose_key_changes_leaves_no_old_key(prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    put(etcd, f"{prefix}apps/personal/Extra", {"name": "Extra", "network": "personal"})  # written by hand
    done = edit.apply(store, edit.Change([("apps", {"name": "extra", "network": "personal"})], []))
    assert done == ["replaced app extra/personal"]
    keys = [e.key for e in store.read() if e.kind == "apps" and e.data["network"] == "personal"]
    assert f"{prefix}apps/personal/extra" in keys and f"{prefix}apps/personal/Extra" not in keys
    store.close()


def test_check_reads_the_prefix_and_fails_on_an_empty_one(tmp_path: Path) -> None:
    etcd = shared_etcd()
    config = next(etcd.empty_registry(tmp_path))
    internal_dns = str(Path(sys.executable).parent / "internal-dns")
    empty = subprocess.run([internal_dns, "check", "-c", str(config)], capture_output=True, text=True, timeout=120, check=False)
    assert empty.returncode == 1 and "no registry there yet" in empty.stderr, empty.stderr
    assert (
        subprocess.run(
            [internal_dns, "registry", "-c", str(config), "import", str(EMBEDDED_ZONES)],
            capture_output=True,
            timeout=120,
            check=False,
        ).returncode
        == 0
    )
    done = subprocess.run([internal_dns, "check", "-c", str(config)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "registry etcd: 4 networks, 9 apps, 18 machines, 4 peers, 35 regions" in done.stdout, (
        done.stderr
    )


def registry_section(**options: Any) -> dict[str, Any]:
    raw = base_config(Path("unused"))
    raw["registry"] = {"backend": "etcd", **options}
    return raw


def test_options_and_their_defaults() -> None:
    config = parse_config(registry_section(), "c.yaml").registry
    assert settings(config.options) == settings({})
    assert (
        settings({}).endpoints == ("http://127.0.0.1:2379",)
        and settings({}).prefix == "/internal-dns/"
        and settings({}).timeout == 5.0
    )
    config = parse_config(
        registry_section(endpoints=["https://etcd-1:2379/", "http://[::1]:2379"], prefix="/dns/", timeout=2), "c.yaml"
    ).registry
    assert settings(config.options).endpoints == ("https://etcd-1:2379", "http://[::1]:2379")
    for options, error in [
        ({"endpoints": []}, "registry.endpoints: must be a list of http(s) URLs"),
        ({"endpoints": ["127.0.0.1:2379"]}, "registry.endpoints: '127.0.0.1:2379' is not an http(s) URL"),
        ({"endpoints": ["http://h:99999"]}, "registry.endpoints: 'http://h:99999' has a bad port"),
        ({"endpoints": ["http://h:2379/v3/"]}, "registry.endpoints: 'http://h:2379/v3/': give only scheme, host and port"),
        ({"endpoints": [2379]}, "registry.endpoints: entry 1 must be an http(s) URL, not int"),
        ({"prefix": "/no-slash"}, "registry.prefix: must be a key prefix ending in '/'"),
        ({"prefix": ""}, "registry.prefix: must be a key prefix ending in '/'"),
        ({"timeout": 0}, "registry.timeout: must be a number of seconds above 0"),
        ({"timeout": "5"}, "registry.timeout: must be a number of seconds above 0"),
        ({"endpoint": "http://h:2379"}, "endpoint"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_config(registry_section(**options), "c.yaml")
        assert error in str(caught.value), (options, str(caught.value))


def test_reading_a_config_does_not_import_etcd3gw() -> None:
    code = (
        "import sys\n"
        "from internal_dns.config import parse_config\n"
        "parse_config({'listen': [{'address': '127.0.0.1', 'port': 0}],"
        " 'registry': {'backend': 'etcd', 'prefix': '/x/'}}, 'c.yaml')\n"
        "assert 'etcd3gw' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
