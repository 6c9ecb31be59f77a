"""Talking to etcd: the endpoints' clients used in turn, the reasons of their errors, and the
whole prefix read at one revision.

etcd is reached through etcd3gw (etcd's own v3 API over its grpc-gateway), and the reads of
ranges, which a load of a million keys makes, over gRPC itself (grpcio, with kvpb.py's bytes):
etcd's gateway costs it four times the CPU of the read. A range that cannot be read over gRPC
(a proxy of HTTP/1.1 only) is read through the gateway. Both are imported where they are used,
so that reading a config needs neither.
"""

from __future__ import annotations

import binascii
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from twisted.logger import Logger

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.etcd import kvpb
from internal_dns.registry.etcd.codec import Compact, entities_by_id, entity, key_bytes, range_end
from internal_dns.registry.etcd.kvpb import RangePage
from internal_dns.registry.kinds import KINDS, MACHINES
from internal_dns.registry.live import Unavailable

# Keys per range request. etcd 3.4 walks the index of every key left in the range for each page
# (to count them), whatever its limit, so a range of a million keys read in small pages costs
# more each page; a load splits the machines' range sixteen ways (below), which keeps the walk
# short and lets pages be small: a page of 10,000 machines is about 3.5 MB of JSON, well within
# a request's timeout, and several are asked for at once.
PAGE = 10_000
# Range requests a load keeps in flight at once, each range read page by page by one of them: etcd
# serves them in parallel (turning its values into the gateway's JSON costs it more than reading
# them), while this thread decodes what has come. At most two pages wait per request.
READERS = 4
# Where a load splits the machines' range: machine ids are lower-case hex (SPEC §1), so by their
# first digit; keys of any other shape still fall in one of the parts, which cover the whole range.
MACHINE_SPLITS = "123456789abcdef"
GRPC_MESSAGE = 512 * 1024 * 1024  # the largest range response taken over gRPC (a page of big values)

log = Logger()


class EtcdError(Unavailable):
    """etcd answered a request with an error."""


class Compacted(EtcdError):
    """The revision asked for is compacted away."""


class Cluster:
    """The endpoints' etcd3gw clients, used in turn: a request goes to the endpoint that answered
    last, and on to the next one when that one cannot be reached."""

    def __init__(self, endpoints: Iterable[str], timeout: float):
        import etcd3gw

        self.clients = []
        for url in endpoints:
            parts = urlsplit(url)
            assert parts.hostname is not None
            self.clients.append(
                etcd3gw.client(host=parts.hostname, port=parts.port or 2379, protocol=parts.scheme, timeout=timeout)
            )
        self.current = 0
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self._grpc_refused: str | None = None  # why the last range was not read over gRPC
        self._channels: dict[int, Any] = {}  # endpoint -> its gRPC channel's Range call, once made
        self._lock = threading.Lock()

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

    def range(self, what: str, start: bytes, end: bytes, limit: int, revision: int = 0) -> RangePage:
        """The keys from `start` up to `end`, at most `limit` (0: all), as of `revision` (0: now):
        over gRPC, or through the gateway when no endpoint can be reached over gRPC (etcd down,
        or an endpoint that is a proxy of HTTP/1.1 only: said once in the log)."""
        try:
            page = self._grpc_range(what, kvpb.range_request(start, end, limit, revision))
            self._grpc_refused = None
            return page
        except Unavailable as exc:
            if isinstance(exc, EtcdError):
                raise
            refused = str(exc)
        page = self._gateway_range(what, start, end, limit, revision)  # Unavailable when etcd is down
        if self._grpc_refused is None:
            log.warn("{what}: etcd answers through its gateway, not over gRPC ({reason})", what=what, reason=refused)
        self._grpc_refused = refused
        return page

    def _gateway_range(self, what: str, start: bytes, end: bytes, limit: int, revision: int) -> RangePage:
        from etcd3gw.utils import _encode

        # Keys come in key order unasked: asking for a sort order makes etcd 3.4 fetch every
        # value left in the range, for each page, before applying the limit.
        payload: dict[str, Any] = {"key": _encode(start), "range_end": _encode(end), "limit": limit}
        if revision:
            payload["revision"] = revision
        answer = self.post(what, "/kv/range", payload)
        decode = binascii.a2b_base64  # etcd3gw's _decode, without its conversions: a million calls
        kvs = [(decode(kv["key"]), decode(kv.get("value", ""))) for kv in answer.get("kvs") or ()]
        return RangePage(int(answer["header"]["revision"]), kvs, bool(answer.get("more")))

    def _grpc_range(self, what: str, request: bytes) -> RangePage:
        """One Range call over gRPC, on the endpoints in turn (as `call` does)."""
        import grpc

        failures = []
        for step in range(len(self.endpoints)):
            i = (self.current + step) % len(self.endpoints)
            try:
                page: RangePage = self._range_call(i)(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or str(exc.code())
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    failures.append(f"{self.endpoints[i]}: timed out")
                    continue
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                    failures.append(f"{self.endpoints[i]}: {details}")
                    continue
                self.current = i
                error = Compacted if "required revision has been compacted" in details else EtcdError
                raise error(f"{what}: {self.endpoints[i]}: {details}") from None
            except kvpb.Malformed as exc:
                raise EtcdError(f"{what}: {self.endpoints[i]}: a range response that cannot be read: {exc}") from None
            self.current = i
            return page
        raise Unavailable(f"{what}: {'; '.join(failures)}")

    def _range_call(self, i: int) -> Any:
        with self._lock:
            call = self._channels.get(i)
            if call is None:
                import grpc

                parts = urlsplit(self.endpoints[i])
                target = f"{parts.hostname}:{parts.port or 2379}"
                options = [
                    ("grpc.max_receive_message_length", GRPC_MESSAGE),
                    # etcd back after a failure is used again within a second (grpc's default waits up to two minutes)
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ]
                if parts.scheme == "https":  # the authorities requests trusts (REQUESTS_CA_BUNDLE, else certifi's)
                    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(_ca_bundle()), options)
                else:
                    channel = grpc.insecure_channel(target, options)
                call = channel.unary_unary(kvpb.RANGE, request_serializer=bytes, response_deserializer=kvpb.range_response)
                self._channels[i] = (channel, call)
            return self._channels[i][1]

    def close(self) -> None:
        for client in self.clients:
            client.session.close()
        with self._lock:
            channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            channel.close()


def _ca_bundle() -> bytes:
    path = os.environ.get("REQUESTS_CA_BUNDLE")
    if not path:
        import certifi

        path = certifi.where()
    with open(path, "rb") as f:
        return f.read()


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


def load_ranges(prefix: str) -> list[tuple[bytes, bytes]]:
    """The key ranges a load reads, in the order their entities are handed on: each kind's
    (`<prefix><section>/`) in the order of KINDS (what is referred to first), the machines' split
    by the first digit of their id; then what lies under the prefix between and after them, keys
    of no kind, which become INVALID entries."""
    base = key_bytes(prefix)
    ranges: list[tuple[bytes, bytes]] = []
    spans: list[tuple[bytes, bytes]] = []
    for kind in KINDS:
        start = key_bytes(f"{prefix}{kind.section}/")
        end = range_end(start)
        spans.append((start, end))
        if kind is MACHINES:
            cuts = [start, *(start + digit.encode() for digit in MACHINE_SPLITS), end]
            ranges += zip(cuts, cuts[1:], strict=False)
        else:
            ranges.append((start, end))
    at, last = base, range_end(base)
    for start, end in sorted(spans):  # the kinds' ranges do not overlap: no section name ends another's
        if at < start:
            ranges.append((at, start))
        at = end
    if at < last:
        ranges.append((at, last))
    return ranges


def read_ranges(
    cluster: Cluster, prefix: str, ranges: list[tuple[bytes, bytes]], page: int = PAGE, readers: int = READERS
) -> tuple[Iterator[list[tuple[bytes, bytes]]], int]:
    """The keys of these ranges as of one revision: the pages of (key, value) etcd answers (range
    after range, each in key order), and that revision, the first answer's (asked at once; the
    rest as the pages are taken; taking them raises Compacted when etcd no longer has that
    revision, and whatever else reading a page raised)."""
    what = f"reading {prefix}"

    def fetch(start: bytes, end: bytes, revision: int) -> RangePage:
        return cluster.range(what, start, end, page, revision)

    first = fetch(*ranges[0], 0)
    return _pages(fetch, ranges, first, first.revision, readers), first.revision


_END = object()  # a range's last page has been handed over


def _pages(
    fetch: Callable[[bytes, bytes, int], RangePage],
    ranges: list[tuple[bytes, bytes]],
    first: RangePage,
    revision: int,
    readers: int,
) -> Iterator[list[tuple[bytes, bytes]]]:
    """The ranges' pages in order. `readers` threads each read one range at a time, page after
    page, a page ahead of the one being taken: ranges are started in order and a range's thread
    is free again only once its last page has been taken, so the next range to be taken is
    always being read, and at most two pages per thread wait. Closing this stops them (daemon
    threads: one left waiting never holds up the end of the process)."""
    stop = threading.Event()
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=1) for _ in ranges]
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(ranges)):
        todo.put(i)

    def put(q: queue.Queue[Any], item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(i: int) -> None:
        q = queues[i]
        start, end = ranges[i]
        result = first if i == 0 else None
        try:
            while not stop.is_set():
                if result is None:
                    result = fetch(start, end, revision)
                kvs = result.kvs
                more = result.more and bool(kvs)
                if more:
                    start = kvs[-1][0] + b"\0"
                result = None
                if not put(q, kvs) or not more:
                    break
            put(q, _END)
        except BaseException as exc:  # handed on, raised where the range is taken
            put(q, exc)

    def work() -> None:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            read(i)

    for n in range(min(readers, len(ranges))):
        threading.Thread(target=work, name=f"etcd range {n + 1}", daemon=True).start()
    try:
        for q in queues:
            while (item := q.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        stop.set()


def decode_pages(
    prefix: str, pages: Iterator[list[tuple[bytes, bytes]]], compact: Compact | None = None, by_id: bool = False
) -> Iterator[RawEntity]:
    """The entities of pages of key-values, one by one as they are taken; with `by_id`, each
    machine keyed by its id (codec.entities_by_id; its mappings not compacted)."""
    try:
        for kvs in pages:
            if by_id:
                yield from entities_by_id(prefix, kvs)
            else:
                for key, value in kvs:
                    yield entity(prefix, key, value, compact)
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def read_kinds(
    cluster: Cluster,
    prefix: str,
    compact: Compact | None = None,
    page: int = PAGE,
    readers: int = READERS,
    by_id: bool = False,
) -> tuple[Iterator[RawEntity], int]:
    """Every entity under the prefix as of one revision, streamed in the order of KINDS (regions,
    networks, apps, machines, peers; then keys of no kind, as INVALID entries), and that revision:
    the first page is asked at once, the rest as the entities are taken (a load's read, which
    never holds more than a few pages). `by_id`: as decode_pages."""
    pages, revision = read_ranges(cluster, prefix, load_ranges(prefix), page, readers)
    return decode_pages(prefix, pages, compact, by_id), revision


def read_prefix(cluster: Cluster, prefix: str, compact: Compact | None = None, page: int = PAGE) -> tuple[list[RawEntity], int]:
    """Every entity under the prefix as of one revision (the first page's), in key order, and
    that revision (the registry command's read). While the entities of one page are parsed, the
    next page is on its way."""
    start = key_bytes(prefix)
    pages, revision = read_ranges(cluster, prefix, [(start, range_end(start))], page, readers=1)
    return list(decode_pages(prefix, pages, compact if compact is not None else Compact())), revision
