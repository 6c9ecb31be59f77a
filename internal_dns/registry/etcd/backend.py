"""The server's side of the etcd backend: the whole prefix read at one revision, kind after kind
and page by page, handed to the catalog as it comes; then a watch followed from the next
revision, each batch of events applied to a lenient catalog (a `LiveBackend`, live.py)."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from typing import Any

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.etcd.client import Cluster, Compacted, read_kinds
from internal_dns.registry.etcd.codec import catalog_key, entity
from internal_dns.registry.etcd.options import Settings
from internal_dns.registry.etcd.watch import Watch
from internal_dns.registry.live import LiveBackend, Resync, Unavailable


class EtcdBackend(LiveBackend):
    def __init__(self, reactor: Any, config: Settings, wait: float | None = None):
        # A machine's key is its id, not its etcd key: a text of its own per machine, the largest
        # part of a million machines' memory after the machines themselves. Its source (for
        # messages) is said again from the id. Other keys hold a '/', an id never does.
        self._machines = f"{config.prefix}machines/"
        super().__init__(reactor, self._source_of if config.prefix else None)
        self.settings = config
        self.prefix = config.prefix
        if wait:
            self.wait = wait  # how long a quiet watch waits before checking that etcd answers
        self._cluster: Cluster | None = None
        self._watch: Watch | None = None
        self._at: int | None = None  # the revision the open watch has delivered up to
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"etcd {', '.join(self.settings.endpoints)} under {self.prefix}"

    def registry(self) -> str:
        return f"etcd {','.join(sorted(self.settings.endpoints))} under {self.prefix}"

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster(self.settings.endpoints, self.settings.timeout)
        return self._cluster

    def load_all(self) -> tuple[Iterator[RawEntity], int]:
        """Every entity, streamed in kind order, and the revision they are all read at: the first
        page is read now, the rest while the entities are taken (on this thread, as the catalog
        loads them)."""
        self._close_watch()
        try:
            # Not compacted (codec.Compact): the catalog keeps what it parses, not the mappings
            # as read, so sharing their texts would cost a third of the decoding for nothing.
            entities, revision = read_kinds(self.cluster, self.prefix, by_id=self.source_of is not None)
        except Compacted as exc:
            raise Resync(str(exc)) from None
        return self.taken_whole(self._loading(entities)), revision

    def _key(self, key: str) -> str:
        """The catalog's key of the entity under this etcd key."""
        return catalog_key(self._machines, key) if self.source_of is not None else key

    def _source_of(self, kind: str, key: Hashable) -> str:
        return key if isinstance(key, str) and "/" in key else f"{self._machines}{key}"

    def _loading(self, entities: Iterator[RawEntity]) -> Iterator[RawEntity]:
        try:
            yield from entities
        except Compacted as exc:  # compacted between two pages: start again at a newer revision
            raise Resync(str(exc)) from None

    def changes(self, position: int, timeout: float) -> tuple[list[RawEntity], list[Hashable], int]:
        self.require_whole_load(self.describe())
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
            key = self._key(raw_key.decode("utf-8", "surrogateescape"))
            if kind == "DELETE":
                upserts.pop(key, None)
                deleted[key] = None
            else:
                deleted.pop(key, None)
                upserts[key] = made = entity(self.prefix, raw_key, value)
                made.key = key
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
