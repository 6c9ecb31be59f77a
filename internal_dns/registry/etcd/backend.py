"""The server's side of the etcd backend: the whole prefix read at one revision, page by page,
then a watch followed from the next revision, each batch of events applied to a lenient catalog
(a `LiveBackend`, live.py)."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.etcd.client import Cluster, Compacted, read_prefix
from internal_dns.registry.etcd.codec import Compact, entity
from internal_dns.registry.etcd.options import Settings
from internal_dns.registry.etcd.watch import Watch
from internal_dns.registry.live import LiveBackend, Resync, Unavailable


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
