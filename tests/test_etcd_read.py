"""The etcd backend's load: the prefix read at one revision, kind after kind (each kind's keys a
range of their own, the machines' in parts read at once), streamed to the catalog, with keys of
no kind still left out as INVALID entries; and values decoded as json.loads decodes them."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from internal_dns.registry.catalog import INVALID
from internal_dns.registry.etcd import EtcdBackend, Settings
from internal_dns.registry.etcd.client import Cluster, Compacted, EtcdError, load_ranges, read_kinds, read_prefix
from internal_dns.registry.etcd.codec import _loads, catalog_key, entities_by_id, entity, key_bytes, key_of, range_end
from internal_dns.registry.kinds import SECTIONS
from internal_dns.registry.live import Resync, Unavailable
from tests.etcd_server import EtcdServer, shared_etcd
from tests.test_etcd import NEW_MACHINE, after_first_request, delete, fill, put

ORDER = {kind: i for i, kind in enumerate(SECTIONS)}

# Keys of no kind, before, between and after the kinds' ranges (in key order: apps/, machines/,
# networks/, peers/, regions/), and keys of a kind in a shape that is not theirs.
FOREIGN = ["aaa", "apps", "apps0/x", "elsewhere/x", "machines", "machinesZ", "peers.", "regions", "zzz/y", "\u00e9t\u00e9"]
MISSHAPEN = ["machines/a/b", "regions/", "apps/personal"]


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/"


def test_the_load_ranges_cover_the_prefix_once() -> None:
    for prefix in ("/internal-dns/", "/", "/a\u00ff/"):
        ranges = load_ranges(prefix)
        spans = sorted(ranges)
        start = key_bytes(prefix)
        assert spans[0][0] == start and spans[-1][1] == range_end(start)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # no gap, no overlap
        assert ranges[0][0] == key_bytes(f"{prefix}regions/")  # kind order first, then the rest
        assert sum(s.startswith(key_bytes(f"{prefix}machines/")) for s, _ in ranges) == 16


def test_a_load_is_read_kind_by_kind_at_one_revision(prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    for name in FOREIGN + MISSHAPEN:
        put(etcd, f"{prefix}{name}", {"name": "x"})
    whole, _ = read_prefix(store.cluster, prefix)  # the registry command's read, in key order

    def change() -> None:
        put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
        delete(etcd, f"{prefix}regions/ams")
        put(etcd, f"{prefix}zzz/later", {"name": "x"})

    calls = after_first_request(store, change)
    entities, revision = read_kinds(store.cluster, prefix, page=3, readers=2)
    assert len(calls) == 1  # the first page, for its revision; the rest as the entities are taken
    loaded = list(entities)
    assert etcd.revision() == revision + 3
    kinds = [e.kind for e in loaded if e.kind != INVALID]  # those may come anywhere
    assert kinds == sorted(kinds, key=ORDER.__getitem__) and set(kinds) == set(SECTIONS)
    by_key = {e.key: e for e in loaded}
    assert len(by_key) == len(loaded) and sorted(by_key) == sorted(e.key for e in whole)  # every key once, as of the revision
    for e in whole:
        assert (by_key[e.key].source, by_key[e.key].kind, by_key[e.key].data) == (e.source, e.kind, e.data)
    shape = "regions/<code>, networks/<name>, apps/<network>/<name>, machines/<id> or peers/<network>/<name>"
    for name in FOREIGN + MISSHAPEN:
        found = by_key[f"{prefix}{name}"]
        assert (found.kind, found.data) == (INVALID, f"{prefix}{name}: not a registry key (expected {prefix}{shape})")
    # each kind in key order, as etcd keeps it
    machines = [e.key for e in loaded if e.kind == "machines"]
    assert machines == sorted(machines, key=key_bytes)
    store.close()


def test_the_backend_hands_the_load_over_as_it_is_read(prefix: str) -> None:
    etcd = shared_etcd()
    fill(etcd, prefix).close()
    put(etcd, f"{prefix}elsewhere/x", {"name": "x"})
    backend = EtcdBackend(reactor=None, config=Settings((etcd.url,), prefix, 5.0))
    entities, revision = backend.load_all()
    assert not isinstance(entities, list)
    assert revision == etcd.revision()
    with pytest.raises(Resync, match="cut short"):  # not all taken yet: the catalog would lack some
        backend.changes(revision, 0.1)
    loaded = list(entities)
    assert {e.kind for e in loaded} == {*SECTIONS, INVALID} and sum(e.kind == "machines" for e in loaded) == 18
    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
    upserts: list[Any] = []
    for _ in range(50):  # followed from the revision of the load
        upserts, _, position = backend.changes(revision, 0.2)
        if upserts:
            break
    assert [e.key for e in upserts] == [NEW_MACHINE["id"]] and position == revision + 1  # a machine by its id
    backend.close()


def test_a_load_behind_a_compaction_is_read_again(etcd: EtcdServer, prefix: str) -> None:
    fill(etcd, prefix).close()
    backend = EtcdBackend(reactor=None, config=Settings((etcd.url,), prefix, 5.0))
    entities, revision = backend.load_all()
    put(etcd, key_of(prefix, "machines", NEW_MACHINE), NEW_MACHINE)
    etcd.compact()  # the load's revision is gone before its other pages are read
    with pytest.raises(Resync, match="compacted"):
        list(entities)
    with pytest.raises(Resync, match="cut short"):
        backend.changes(revision, 0.1)
    entities, revision = backend.load_all()  # once more, at a newer revision
    assert sum(e.kind == "machines" for e in entities) == 19
    backend.close()


@pytest.mark.parametrize(
    "value",
    [
        b'{"id": "ab", "metadata": {"city": "Z\xc3\xbcrich"}}',
        b'{"a":1}',
        b' {"a": 1} ',  # whitespace around
        b'{"a": 1}\n',
        b"[1, 2]",
        b'"text"',
        b"12",
        b"1e400",
        b"NaN",
        b"null",
        b"",
        b"{not json",
        b'{"a": 1} x',
        b'{"a": 1}{"b": 2}',
        b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 byte order mark: json.loads takes it
        '{"a": "\u00e9"}'.encode("utf-16"),  # so does UTF-16
        '{"a": 1}'.encode("utf-16-le"),
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": "\xed\xa0\x80"}',  # a surrogate, which json.loads lets through
        b'"\x00"',
        b'{"a": "\\ud800"}',
        b'{"a": 123456789012345678901234567890}',  # past 64 bits
        b'{"a": 1, "a": 2}',  # a name twice: the last counts
        b'{"a": -0.0, "b": 1.7976931348623157e308, "c": 0.1}',
    ],
)
def test_values_decode_as_json_loads_decodes_them(value: bytes) -> None:
    try:
        expected: Any = json.loads(value)
    except ValueError as exc:
        with pytest.raises(type(exc)) as raised:
            _loads(value)
        assert str(raised.value) == str(exc)
    else:
        got = _loads(value)
        assert type(got) is type(expected) and (got == expected or (got != got and expected != expected))  # NaN
        whole = entity("/p/", b"/p/machines/ab", value)
        assert whole.kind == ("machines" if isinstance(expected, dict) else INVALID)


def test_a_load_reads_machines_by_id_as_entity_reads_them() -> None:
    """entities_by_id's own way for the usual machine, and entity()'s for the rest, give what
    entity() gives with the catalog's key: the usual machine and whatever else lies beside it."""
    kvs = [
        (b"/p/machines/ab", b'{"id":"ab","app":"x"}'),
        (b"/p/machines/cd", b'{"app":"x"}'),  # no id: the key's
        (b"/p/machines/ef", b'{"id":7}'),  # an id that is no text: the parser says so
        (b"/p/machines/01", b'{"id":"02"}'),  # the key and the value disagree
        (b"/p/machines/02", b"[1]"),  # not an object
        (b"/p/machines/03", b"{not json"),
        (b"/p/machines/04", b'\xef\xbb\xbf{"id":"04"}'),  # a byte order mark: json.loads takes it
        (b"/p/machines/\xff", b"{}"),  # not UTF-8
        (b"/p/machines/", b"{}"),  # no id
        (b"/p/machines/a/b", b"{}"),  # a key of no kind
        (b"/p/apps/net/app", b'{"name":"App","network":"net"}'),
        (b"/p/machinesx/ab", b"{}"),
    ]
    got = list(entities_by_id("/p/", kvs))
    expected = []
    for key, value in kvs:
        e = entity("/p/", key, value)
        e.key = catalog_key("/p/machines/", e.key)  # type: ignore[arg-type]
        expected.append(e)
    assert got == expected
    assert [e.key for e in got[:3]] == ["ab", "cd", "ef"] and got[3].kind == INVALID


# --- ranges over gRPC, and through the gateway where gRPC is not spoken ----------------------------------


@contextmanager
def http1_proxy(target: str) -> Iterator[str]:
    """An endpoint that speaks HTTP/1.1 only (as some proxies do), passing requests on to etcd."""

    class Forward(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.do_POST()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))) if self.command == "POST" else None
            request = urllib.request.Request(f"{target}{self.path}", data=body, method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status, data = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, data = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def as_read(entities: list[Any]) -> list[tuple[Any, str, str, Any]]:
    return [(e.key, e.source, e.kind, e.data) for e in entities]


def test_ranges_read_over_grpc_and_through_the_gateway_are_the_same(prefix: str, log_lines: list[str]) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    for name in FOREIGN + MISSHAPEN:
        put(etcd, f"{prefix}{name}", {"name": "x"})
    over_grpc, revision = read_prefix(store.cluster, prefix, page=4)
    assert not [line for line in log_lines if "not over gRPC" in line]  # etcd speaks gRPC: nothing said
    with http1_proxy(etcd.url) as url:
        gateway_only = Cluster([url], 5.0)
        try:
            first, at = read_prefix(gateway_only, prefix, page=4)
            again, _ = read_prefix(gateway_only, prefix, page=4)
        finally:
            gateway_only.close()
    assert at == revision and as_read(first) == as_read(over_grpc) == as_read(again)
    said = [line for line in log_lines if "not over gRPC" in line]
    assert len(said) == 1 and "etcd answers through its gateway" in said[0]  # said once, not per page


def test_a_grpc_read_at_a_compacted_revision_says_so(prefix: str) -> None:
    etcd = shared_etcd()
    store = fill(etcd, prefix)
    _, revision = read_prefix(store.cluster, prefix)
    put(etcd, f"{prefix}regions/zz", {"code": "zz", "latitude": 1.0, "longitude": 2.0})
    etcd.post("/v3/kv/compaction", {"revision": str(revision + 1)})
    start = key_bytes(prefix)
    with pytest.raises(Compacted, match="compacted"):
        store.cluster.range("reading", start, range_end(start), 10, revision)


def test_no_endpoint_reachable_over_either_is_unavailable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    cluster = Cluster([f"http://127.0.0.1:{port}"], 2.0)
    try:
        with pytest.raises(Unavailable) as caught:
            cluster.range("reading /p/", b"/p/", b"/p0", 10)
        assert not isinstance(caught.value, EtcdError) and f"127.0.0.1:{port}" in str(caught.value)
    finally:
        cluster.close()
