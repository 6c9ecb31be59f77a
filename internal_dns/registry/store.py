"""The server's side of the backend interface: the current snapshot, swapped in one assignment."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from internal_dns.events import Event
from internal_dns.registry.model import RegistryError, Snapshot

log = Logger()


class SnapshotStore:
    """Holds the snapshot every query reads; implements SnapshotSink for the backends."""

    def __init__(self, clock: IReactorTime, wall: Callable[[], float] = time.time):
        self.clock = clock
        self.wall = wall  # the clock a snapshot file's time is written in
        self.current: Snapshot | None = None
        self.generation = 0
        self.confirmed_at: float | None = None
        self.rejections = 0
        self.last_error: RegistryError | None = None
        # each publish or rejection, as it happens (tests and tooling wait on it)
        self.changed: Event[Snapshot | RegistryError] = Event()
        self.published: Event[Snapshot] = Event()  # each snapshot swapped in, as it is
        # A live store (etcd, SQLite) that cannot be reached: why, and since when.
        self.unreachable_since: float | None = None
        self.unreachable_reason: str | None = None
        self.left_out: list[str] = []  # entities a lenient backend leaves out of the snapshot, and why
        # Serving a snapshot restored from its file while the backend catches up: from which file.
        self.catching_up: str | None = None

    def publish(self, snapshot: Snapshot) -> None:
        self.catching_up = None
        self._swap(snapshot)
        counts = snapshot.counts()
        log.info(
            "registry snapshot {generation} loaded (serial {serial}): {networks} networks, {apps} apps, "
            "{machines} machines, {peers} peers, {regions} regions",
            generation=self.generation,
            serial=self.current.serial if self.current is not None else 0,
            **counts,
        )
        self._fire()

    def restored(self, snapshot: Snapshot, saved_at: float, path: str) -> None:
        """A snapshot from the file the backend saved it to, as old as it is: served while the
        backend catches up (the next publish, reject or confirm ends that)."""
        age = max(0.0, self.wall() - saved_at)
        first = self.catching_up is None
        self._swap(snapshot)
        self.confirmed_at = self.clock.seconds() - age
        self.catching_up = path
        if first:
            log.info(
                "registry snapshot restored from {path}, saved {age:.0f}s ago: {networks} networks, {apps} apps, "
                "{machines} machines, {peers} peers, {regions} regions; catching up with the store",
                path=path,
                age=age,
                **snapshot.counts(),
            )
        self._fire()

    def _swap(self, snapshot: Snapshot) -> None:
        previous = self.current.serial if self.current is not None else 0
        # The SOA serial grows with every snapshot, and across restarts too.
        serial = max(previous + 1, int(self.clock.seconds())) & 0xFFFFFFFF
        self.current = snapshot.with_serial(serial)
        self.generation += 1
        self.confirmed_at = self.clock.seconds()
        self.last_error = None
        self._reachable()

    def _fire(self) -> None:
        assert self.current is not None
        self.published.fire(self.current)
        self.changed.fire(self.current)

    def reject(self, error: RegistryError) -> None:
        self.catching_up = None  # the store has been read: what it holds cannot be served
        self.rejections += 1
        self.last_error = error
        keeping = "keeping the last good snapshot" if self.current is not None else "no snapshot loaded yet"
        log.error("{error} ({keeping})", error=str(error), keeping=keeping)
        self.changed.fire(error)

    def confirm(self) -> None:
        if self.catching_up is not None:
            log.info("registry caught up with the store: the restored snapshot was current")
            self.catching_up = None
        self.confirmed_at = self.clock.seconds()
        self._reachable()

    def unreachable(self, reason: str) -> None:
        """The backend lost its store: the last snapshot keeps serving, /readyz says why."""
        if self.unreachable_since is None:
            self.unreachable_since = self.clock.seconds()
            log.warn("registry store unreachable, serving the last snapshot: {reason}", reason=reason)
        self.unreachable_reason = reason

    def _reachable(self) -> None:
        if self.unreachable_since is not None:
            log.info("registry store reachable again after {s:.1f}s", s=self.clock.seconds() - self.unreachable_since)
            self.unreachable_since = self.unreachable_reason = None

    def leave_out(self, problems: list[str]) -> None:
        """A lenient backend's entities that are not served (each logged by the backend once)."""
        self.left_out = problems

    def collect(self) -> Iterator[Metric]:
        snapshot = self.current
        entities = GaugeMetricFamily("internal_dns_registry_entities", "Entities in the served snapshot.", labels=["kind"])
        if snapshot is not None:
            for kind, n in snapshot.counts().items():
                entities.add_metric([kind], n)
        yield entities
        yield GaugeMetricFamily("internal_dns_registry_generation", "Snapshots loaded since start.", value=self.generation)
        yield GaugeMetricFamily(
            "internal_dns_registry_serial", "SOA serial of the served snapshot.", value=snapshot.serial if snapshot else 0
        )
        age = self.age()
        yield GaugeMetricFamily(
            "internal_dns_registry_snapshot_age_seconds",
            "Seconds since the registry was last known to match the served snapshot (NaN before the first).",
            value=age if age is not None else float("nan"),
        )
        yield CounterMetricFamily("internal_dns_registry_rejected", "Snapshots rejected by validation.", value=self.rejections)
        yield GaugeMetricFamily(
            "internal_dns_registry_store_up",
            "1 while the registry's store can be read, 0 while it cannot.",
            value=0 if self.unreachable_since is not None else 1,
        )
        yield GaugeMetricFamily(
            "internal_dns_registry_catching_up",
            "1 while serving a snapshot restored from its file, before the backend has caught up with its store.",
            value=0 if self.catching_up is None else 1,
        )
        yield GaugeMetricFamily(
            "internal_dns_registry_left_out",
            "Entities a live store holds that do not fit and are not served.",
            value=len(self.left_out),
        )

    def age(self) -> float | None:
        """Seconds since the backend last showed the served snapshot to be current."""
        if self.current is None or self.confirmed_at is None:
            return None
        return self.clock.seconds() - self.confirmed_at
