"""The `etcd` backend: the registry as JSON values under a key prefix of an etcd cluster, one key
per entity, followed live through a watch.

Under `prefix` ("/internal-dns/" by default):

    <prefix>regions/<code>
    <prefix>networks/<name>
    <prefix>apps/<network>/<name>
    <prefix>machines/<id>
    <prefix>peers/<network>/<name>

Each value is a JSON object with the fields SPEC §1's YAML format gives that entity (an app's
value holds its `name` and `network`, as in YAML). The key's names must be the value's (region
codes and app and peer names compared ignoring case, as the registry compares them); a key that
disagrees with its value, a key of another shape under the prefix, or a value that is not a JSON
object is left out with a line saying why, and the rest is served.

The server's side, `EtcdBackend` (a `LiveBackend`), reads the whole prefix at one revision, page
by page, then follows a watch from the next revision, applying each batch of events to a lenient
catalog. The registry command's side, `EtcdStore`, reads the same way and writes in transactions.
etcd is reached through etcd3gw (etcd's own v3 API over its grpc-gateway), imported where it is
used, so that reading a config does not need it.
"""

from __future__ import annotations

import binascii
import json
import queue
import re
import socket
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import methodcaller
from typing import Any, ClassVar
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from internal_dns.registry.catalog import INVALID, RawEntity
from internal_dns.registry.live import LiveBackend, Resync, Unavailable
from internal_dns.registry.model import SECTIONS, describe

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)
DEFAULT_PREFIX = "/internal-dns/"
DEFAULT_TIMEOUT = 5.0
# Keys per range request of a load. Big pages, because etcd 3.4 walks the index of every key left
# in the range for each page (to count them), whatever its limit: loading a million keys takes
# three times as long in pages of 5,000 as in pages of 50,000 (a page of 50,000 machines is
# about 20 MB of JSON).
PAGE = 50_000
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: a write of more is several transactions

# kind -> the value's fields its key names, in key order, and whether they compare ignoring case
LAYOUT: dict[str, tuple[tuple[str, bool], ...]] = {
    "regions": (("code", True),),
    "networks": (("name", False),),
    "apps": (("network", False), ("name", True)),
    "machines": (("id", False),),
    "peers": (("network", False), ("name", True)),
}
SHAPES = "regions/<code>, networks/<name>, apps/<network>/<name>, machines/<id> or peers/<network>/<name>"


# --- options -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT


def settings(options: Mapping[str, Any]) -> Settings:
    """The backend's own `registry:` keys, checked; ValueError('<key>: <reason>') names a bad one."""
    endpoints = options.get("endpoints", list(DEFAULT_ENDPOINTS))
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not isinstance(endpoints, list) or not endpoints:
        raise ValueError("endpoints: must be a list of http(s) URLs, such as [http://127.0.0.1:2379]")
    for i, url in enumerate(endpoints):
        if not isinstance(url, str):
            # the config's own error, not a TypeError
            raise ValueError(f"endpoints: entry {i + 1} must be an http(s) URL, not {type(url).__name__}")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
        except ValueError:
            raise ValueError(f"endpoints: {url!r} has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoints: {url!r} is not an http(s) URL such as http://127.0.0.1:2379")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"endpoints: {url!r}: give only scheme, host and port (the API path is found by asking etcd)")
    prefix = options.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix.endswith("/"):
        raise ValueError(f"prefix: must be a key prefix ending in '/', such as {DEFAULT_PREFIX!r}")
    timeout = options.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError("timeout: must be a number of seconds above 0")
    return Settings(tuple(url.rstrip("/") for url in endpoints), prefix, float(timeout))


# --- keys and values ---------------------------------------------------------------------------


def key_of(prefix: str, kind: str, data: Mapping[str, Any]) -> str:
    """The key an entity is stored under."""
    names = []
    for name, folded in LAYOUT[kind]:
        value = data.get(name)
        if not isinstance(value, str) or not value or "/" in value:
            raise ValueError(f"{describe(kind, data)}: '{name}' must be a text without '/' to be stored under a key")
        names.append(value.lower() if folded else value)
    return f"{prefix}{kind}/{'/'.join(names)}"


def value_of(kind: str, data: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(data), ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{describe(kind, data)}: cannot be stored as JSON ({exc})") from None


class Compact:
    """Shares, among the values read, the texts and mappings that many entities repeat.

    The catalog keeps every entity's mapping as read; a million machines parsed from JSON each
    with their own copies of the field names, of `app`, `region`, `state`, and of the metadata,
    take twice the memory of the same machines sharing them.
    """

    FIELDS = frozenset(("app", "network", "region", "state", "process_group"))  # values repeated
    MAPPINGS = 100_000  # distinct mappings kept for sharing; beyond it, the memo starts anew

    def __init__(self) -> None:
        self.mappings: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        intern, fields = sys.intern, self.FIELDS
        out = {}
        for name, value in data.items():
            if type(value) is str:
                if name in fields:
                    value = intern(value)
            elif type(value) is dict:
                value = self.mapping(value)
            out[intern(name)] = value
        return out

    def mapping(self, value: dict[str, Any]) -> dict[str, Any]:
        """An equal mapping read before (metadata), or this one, remembered."""
        try:
            key = tuple(value.items())
            found = self.mappings.get(key)
        except TypeError:  # a value that is a list or a mapping itself
            return value
        if found is None:
            if len(self.mappings) >= self.MAPPINGS:
                self.mappings.clear()
            found = self.mappings[key] = {
                sys.intern(k): sys.intern(v) if type(v) is str and len(v) <= 64 else v for k, v in value.items()
            }
        return found


def entity(prefix: str, raw_key: bytes, value: bytes, compact: Compact | None = None) -> RawEntity:
    """One key and its value as the catalog takes them: key and source are the etcd key; a key
    or value that is no entity is an INVALID entry whose data is the line saying why."""
    try:
        key = raw_key.decode()
    except UnicodeDecodeError:
        key = raw_key.decode("utf-8", "surrogateescape")  # the catalog's key: back to the same bytes
        source = raw_key.decode("utf-8", "backslashreplace")  # printable, for messages
        return RawEntity(key, source, INVALID, f"{source}: the key is not UTF-8")
    kind, _, rest = key[len(prefix) :].partition("/")
    fields = LAYOUT.get(kind)
    names = rest.split("/")
    if fields is None or len(names) != len(fields) or not all(names):
        return RawEntity(key, key, INVALID, f"{key}: not a registry key (expected {prefix}{SHAPES})")
    try:
        data = json.loads(value)
    except ValueError as exc:  # not JSON, or not UTF-8
        return RawEntity(key, key, INVALID, f"{key}: {kind[:-1]}: the value is not JSON ({exc})")
    if not isinstance(data, dict):
        return RawEntity(key, key, INVALID, f"{key}: {kind[:-1]}: the value must be a JSON object, not {_json_type(data)}")
    for (name, folded), part in zip(fields, names, strict=True):
        given = data.get(name)
        if isinstance(given, str) and ((given.lower() != part.lower()) if folded else (given != part)):
            # Which of the two is meant cannot be told: neither is served.
            line = (
                f"{key}: {describe(kind, data)}: the key and the value disagree:"
                f" the key names {name} '{part}', the value '{given}'"
            )
            return RawEntity(key, key, INVALID, line)
    return RawEntity(key, key, kind, compact(data) if compact is not None else data)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def range_end(prefix: bytes) -> bytes:
    """The end of etcd's range of every key starting with `prefix`."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"  # every key


def txn_ops(
    prefix: str, puts: Iterable[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: Iterable[RawEntity]
) -> list[dict[str, Any]]:
    """The registry command's change as etcd transaction operations: puts (networks and regions
    first, so that the entities referring to them find them), then deletes (the referring ones
    first). A replaced entity whose key changed has its old key deleted."""
    from etcd3gw.utils import _encode

    values: dict[str, tuple[int, bytes]] = {}
    gone: dict[str, int] = {}
    order = {kind: i for i, kind in enumerate(SECTIONS)}
    for kind, data, old in puts:
        key = key_of(prefix, kind, data)
        values[key] = (order[kind], value_of(kind, data))
        if old is not None and old.key != key:
            gone[str(old.key)] = order.get(old.kind, 0)
    for e in deletes:
        gone[str(e.key)] = order.get(e.kind, 0)
    ops: list[dict[str, Any]] = []
    for key, (_, value) in sorted(values.items(), key=lambda kv: kv[1][0]):
        ops.append({"request_put": {"key": _encode(_key_bytes(key)), "value": _encode(value)}})
    for key, _ in sorted(((k, o) for k, o in gone.items() if k not in values), key=lambda ko: -ko[1]):
        ops.append({"request_delete_range": {"key": _encode(_key_bytes(key))}})
    return ops


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


# --- talking to etcd ---------------------------------------------------------------------------


class EtcdError(Unavailable):
    """etcd answered a request with an error."""


class Compacted(EtcdError):
    """The revision asked for is compacted away."""


class Cluster:
    """The endpoints' etcd3gw clients, used in turn: a request goes to the endpoint that answered
    last, and on to the next one when that one cannot be reached."""

    def __init__(self, endpoints: Iterable[str], timeout: float):
        import etcd3gw

        self.timeout = timeout
        self.clients = []
        for url in endpoints:
            parts = urlsplit(url)
            assert parts.hostname is not None
            self.clients.append(
                etcd3gw.client(host=parts.hostname, port=parts.port or 2379, protocol=parts.scheme, timeout=timeout)
            )
        self.current = 0

    @property
    def client(self) -> Any:
        return self.clients[self.current]

    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """fn(client) on the endpoints in turn until one can be reached: its result; Unavailable
        when none can, EtcdError when etcd answers with an error."""
        import requests
        from etcd3gw import exceptions

        failures = []
        for step in range(len(self.clients)):
            i = (self.current + step) % len(self.clients)
            client = self.clients[i]
            try:
                result = fn(client)
            except (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError, requests.RequestException) as exc:
                failures.append(f"{client.base_url}: {reason(exc)}")
                continue
            except exceptions.Etcd3Exception as exc:
                self.current = i
                message = reason(exc)
                error = Compacted if "required revision has been compacted" in message else EtcdError
                raise error(f"{what}: {client.base_url}: {message}") from None
            self.current = i
            return result
        raise Unavailable(f"{what}: {'; '.join(failures)}")

    def post(self, what: str, path: str, payload: dict[str, Any]) -> Any:
        return self.call(what, lambda client: client.post(client.get_url(path), json=payload))

    def close(self) -> None:
        for client in self.clients:
            client.session.close()


def reason(exc: BaseException) -> str:
    """A short reason for an etcd3gw or requests error."""
    text = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):  # an error the gateway answered with
        text = str(body.get("message") or body.get("error") or text)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]*", text)  # "[Errno 111] Connection refused"
    if errno:
        return errno.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text if len(text) <= 300 else text[:300] + "..."


def read_prefix(cluster: Cluster, prefix: str, compact: Compact | None = None, page: int = PAGE) -> tuple[list[RawEntity], int]:
    """Every entity under the prefix as of one revision (the first page's), and that revision.

    While the entities of one page are parsed, the next page is on its way (etcd takes about as
    long to serve a page as Python to parse it)."""
    from etcd3gw.utils import _encode

    compact = compact if compact is not None else Compact()
    decode = binascii.a2b_base64  # etcd3gw's _decode, without its conversions: a million calls
    end = _encode(range_end(_key_bytes(prefix)))

    def fetch(start: bytes, revision: int | None) -> Any:
        # Keys come in key order unasked: asking for a sort order makes etcd 3.4 fetch every
        # value left in the range, for each page, before applying the limit.
        payload: dict[str, Any] = {"key": _encode(start), "range_end": end, "limit": page}
        if revision is not None:
            payload["revision"] = revision
        return cluster.post(f"reading {prefix}", "/kv/range", payload)

    result = fetch(_key_bytes(prefix), None)
    revision = int(result["header"]["revision"])
    out: list[RawEntity] = []
    with ThreadPoolExecutor(1, thread_name_prefix="etcd range") as ahead:
        while True:
            kvs = result.get("kvs") or []
            following = None
            if result.get("more") and kvs:
                following = ahead.submit(fetch, decode(kvs[-1]["key"]) + b"\0", revision)
            for kv in kvs:
                out.append(entity(prefix, decode(kv["key"]), decode(kv.get("value", "")), compact))
            if following is None:
                return out, revision
            result = following.result()


# --- the watch -----------------------------------------------------------------------------------

_EVENTS, _RESYNC, _DOWN = "events", "resync", "down"


class Watch:
    """One watch on the prefix from a revision, read by a thread of its own into a queue.

    etcd3gw's Watcher would do the reading, but it drops the gateway's cancellation (the start
    revision is compacted: we must load everything again) and never tells that the stream ended
    or broke (etcd is gone: we must say so and reconnect), so the stream is read here, over the
    etcd3gw client's own session and URL, with etcd3gw's encoding.
    """

    def __init__(self, client: Any, prefix: str, start_revision: int, timeout: float):
        from etcd3gw.utils import _encode

        self.client = client
        self.start_revision = start_revision
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._ended: Exception | None = None
        start = _key_bytes(prefix)
        # Not `fragment`: a revision's events then come whole, so a watch resumed after the last
        # revision handed out misses none.
        body = {
            "create_request": {"key": _encode(start), "range_end": _encode(range_end(start)), "start_revision": start_revision}
        }
        response = client.session.post(client.get_url("/watch"), json=body, stream=True, timeout=(timeout, timeout))
        if response.status_code != 200:
            text = response.text
            response.close()
            from etcd3gw import exceptions

            raise exceptions.ConnectionFailedError(text)
        self.response = response
        # The timeout bounded the answer's headers; a quiet watch is no error (changes() checks
        # that etcd answers), so reads wait as long as it takes, until close() shuts the socket.
        self._sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
        if self._sock is not None:
            self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, name=f"etcd watch {client.base_url}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        why = "etcd ended the watch stream"
        try:
            buffer = bytearray()
            for chunk in self.response.iter_content(chunk_size=None):
                scanned = len(buffer)
                buffer += chunk
                while (end := buffer.find(b"\n", scanned)) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    scanned = 0
                    if line.strip() and not self._message(json.loads(line)):
                        return
        except Exception as exc:  # the connection broke (etcd stopped, or close()): said below
            why = f"the watch stream broke ({reason(exc)})"
        finally:
            self.response.close()
        self.queue.put((_DOWN, f"{self.client.base_url}: {why}"))

    def _message(self, message: Mapping[str, Any]) -> bool:
        """Queue what one message of the stream says; False when it ends the watch."""
        from etcd3gw.utils import _decode

        if "error" in message:
            error = message["error"]
            text = error.get("message", error) if isinstance(error, Mapping) else error
            self.queue.put((_DOWN, f"{self.client.base_url}: the watch failed: {text}"))
            return False
        result = message.get("result") or {}
        if result.get("canceled"):
            compacted = int(result.get("compact_revision") or 0)
            if compacted:
                self.queue.put((_RESYNC, f"revision {self.start_revision} is compacted (etcd keeps revisions from {compacted})"))
            else:
                why = result.get("cancel_reason") or "no reason given"
                self.queue.put((_DOWN, f"{self.client.base_url}: etcd canceled the watch ({why})"))
            return False
        events = result.get("events")
        if events:  # else `created`, or a progress notification: nothing to apply
            batch = []
            for event in events:
                kv = event["kv"]
                batch.append(
                    (event.get("type", "PUT"), _decode(kv["key"]), _decode(kv.get("value", "")), int(kv["mod_revision"]))
                )
            self.queue.put((_EVENTS, batch))
        return True

    def next_batch(self, timeout: float) -> list[tuple[str, bytes, bytes, int]]:
        """The events that arrive within `timeout`, with all those already queued; nothing when
        none came. Raises Resync or Unavailable when the watch has ended (after handing out the
        events that came before the end)."""
        if self._ended is not None:
            raise self._ended
        try:
            kind, payload = self.queue.get(timeout=timeout)
        except queue.Empty:
            return []
        events: list[tuple[str, bytes, bytes, int]] = []
        while True:
            if kind == _EVENTS:
                events.extend(payload)
            else:
                self._ended = Resync(payload) if kind == _RESYNC else Unavailable(payload)
                if events:
                    return events
                raise self._ended
            try:
                kind, payload = self.queue.get_nowait()
            except queue.Empty:
                return events

    def close(self) -> None:
        """End the watch; a next_batch waiting on another thread returns at once."""
        self.queue.put((_DOWN, "the watch was closed"))
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
            except OSError:
                pass
        else:
            self.response.close()


# --- the server's side -----------------------------------------------------------------------------


class EtcdBackend(LiveBackend):
    def __init__(self, reactor: Any, config: Settings, wait: float | None = None):
        super().__init__(reactor)
        self.settings = config
        self.prefix = config.prefix
        if wait:
            self.wait = wait  # how long a quiet watch waits before checking that etcd answers
        self._cluster: Cluster | None = None
        self._watch: Watch | None = None
        self._at: int | None = None  # the revision the open watch has delivered up to
        self._compact = Compact()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"etcd {', '.join(self.settings.endpoints)} under {self.prefix}"

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster(self.settings.endpoints, self.settings.timeout)
        return self._cluster

    def load_all(self) -> tuple[list[RawEntity], int]:
        self._close_watch()
        try:
            self._compact = Compact()  # what the last load shared, the changes share too
            return read_prefix(self.cluster, self.prefix, self._compact)
        except Compacted as exc:  # compacted between two pages: start again at a newer revision
            raise Resync(str(exc)) from None

    def changes(self, position: int, timeout: float) -> tuple[list[RawEntity], list[Hashable], int]:
        watch = self._watch
        if watch is None or self._at != position:
            self._close_watch()
            watch = self.cluster.call("watching", lambda client: Watch(client, self.prefix, position + 1, self.settings.timeout))
            with self._lock:
                self._watch, self._at = watch, position
            if self._stopping.is_set():  # stop() came while the watch was being opened
                self._close_watch()
                return [], [], position
        try:
            events = watch.next_batch(timeout)
        except (Resync, Unavailable):
            self._close_watch()
            raise
        if not events:
            self._check(watch)  # nothing came: is that because nothing changed?
            return [], [], position
        upserts: dict[str, RawEntity] = {}
        deleted: dict[str, None] = {}
        for kind, raw_key, value, revision in events:
            key = raw_key.decode("utf-8", "surrogateescape")
            if kind == "DELETE":
                upserts.pop(key, None)
                deleted[key] = None
            else:
                deleted.pop(key, None)
                upserts[key] = entity(self.prefix, raw_key, value, self._compact)
            position = revision
        self._at = position
        return list(upserts.values()), list(deleted), position

    def _check(self, watch: Watch) -> None:
        """etcd answers, and the watch is on the endpoint that does; else Unavailable."""
        status = self.cluster.call("checking etcd", lambda client: client.status())
        if self.cluster.client is not watch.client:  # its endpoint no longer answers: move the watch
            self._close_watch()
            raise Unavailable(f"{watch.client.base_url} stopped answering; going on with {self.cluster.client.base_url}")
        if str(status.get("leader", "0")) == "0":
            self._close_watch()
            raise Unavailable(f"{watch.client.base_url}: the etcd member has no leader")

    def interrupt(self) -> None:
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.close()

    def _close_watch(self) -> None:
        with self._lock:
            watch, self._watch, self._at = self._watch, None, None
        if watch is not None:
            watch.close()

    def close(self) -> None:
        self._close_watch()
        if self._cluster is not None:
            self._cluster.close()


# --- the registry command's side ------------------------------------------------------------------


class EtcdStore:
    """The registry command's view of an etcd registry.

    A write is one transaction when it changes at most 128 keys (etcd's default --max-txn-ops);
    a bigger one (an import) is several transactions in turn, and servers may see it part-way.
    """

    def __init__(self, config: Settings):
        self.settings = config
        self.prefix = config.prefix
        self.cluster = Cluster(config.endpoints, config.timeout)

    def describe(self) -> str:
        return f"etcd {', '.join(self.settings.endpoints)} under {self.prefix}"

    def exists(self) -> bool:
        """Whether any key lies under the prefix (`check` fails on an empty one: a wrong prefix)."""
        from etcd3gw.utils import _encode

        start = _key_bytes(self.prefix)
        payload = {"key": _encode(start), "range_end": _encode(range_end(start)), "limit": 1, "keys_only": True}
        return bool(self.cluster.post(f"reading {self.prefix}", "/kv/range", payload).get("kvs"))

    def read(self) -> list[RawEntity]:
        for _ in range(2):
            try:
                return read_prefix(self.cluster, self.prefix)[0]
            except Compacted:  # compacted between two pages: once more, at a newer revision
                continue
        return read_prefix(self.cluster, self.prefix)[0]

    def write(self, puts: list[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: list[RawEntity]) -> None:
        ops = txn_ops(self.prefix, puts, deletes)
        for i in range(0, len(ops), MAX_TXN_OPS):
            txn = {"compare": [], "success": ops[i : i + MAX_TXN_OPS], "failure": []}
            self.cluster.call("writing", methodcaller("transaction", txn))  # client.transaction(txn)

    def close(self) -> None:
        self.cluster.close()


class EtcdPlugin:
    """The `etcd` backend as an entry point of `internal_dns.backends`."""

    options: ClassVar[dict[str, str]] = {
        "endpoints": "etcd client URLs, tried in turn (default [http://127.0.0.1:2379])",
        "prefix": f"the key prefix the registry lives under (default {DEFAULT_PREFIX})",
        "timeout": f"seconds one request to etcd may take (default {DEFAULT_TIMEOUT:g})",
    }

    def check(self, options: Mapping[str, Any]) -> None:
        settings(options)

    def backend(self, config: Any, reactor: Any, clock: IReactorTime) -> EtcdBackend:
        return EtcdBackend(reactor, settings(config.options), config.poll_interval)

    def store(self, config: Any) -> EtcdStore:
        return EtcdStore(settings(config.options))


PLUGIN = EtcdPlugin()
