"""Talking to etcd: the endpoints' clients used in turn, the reasons of their errors, and the
whole prefix read at one revision.

etcd is reached through etcd3gw (etcd's own v3 API over its grpc-gateway), imported where it is
used, so that reading a config does not need it.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.etcd.codec import Compact, entity, key_bytes, range_end
from internal_dns.registry.live import Unavailable

# Keys per range request of a load. Big pages, because etcd 3.4 walks the index of every key left
# in the range for each page (to count them), whatever its limit: loading a million keys takes
# three times as long in pages of 5,000 as in pages of 50,000 (a page of 50,000 machines is
# about 20 MB of JSON).
PAGE = 50_000


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
    end = _encode(range_end(key_bytes(prefix)))

    def fetch(start: bytes, revision: int | None) -> Any:
        # Keys come in key order unasked: asking for a sort order makes etcd 3.4 fetch every
        # value left in the range, for each page, before applying the limit.
        payload: dict[str, Any] = {"key": _encode(start), "range_end": end, "limit": page}
        if revision is not None:
            payload["revision"] = revision
        return cluster.post(f"reading {prefix}", "/kv/range", payload)

    result = fetch(key_bytes(prefix), None)
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
