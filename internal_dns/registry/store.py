"""The server's side of the backend interface: the current snapshot, swapped in one assignment."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from internal_dns.registry.model import RegistryError, Snapshot

log = Logger()


class SnapshotStore:
    """Holds the snapshot every query reads; implements SnapshotSink for the backends."""

    def __init__(self, clock: IReactorTime):
        self.clock = clock
        self.current: Snapshot | None = None
        self.generation = 0
        self.loaded_at: float | None = None
        self.confirmed_at: float | None = None
        self.rejections = 0
        self.last_error: RegistryError | None = None
        self._waiters: list[Deferred[Snapshot | RegistryError]] = []
        self.listeners: list[Callable[[Snapshot], None]] = []
        # A live store (etcd, SQLite) that cannot be reached: why, and since when.
        self.unreachable_since: float | None = None
        self.unreachable_reason: str | None = None
        self.left_out: list[str] = []  # entities a lenient backend leaves out of the snapshot, and why

    def publish(self, snapshot: Snapshot) -> None:
        previous = self.current.serial if self.current is not None else 0
        # The SOA serial grows with every snapshot, and across restarts too.
        serial = max(previous + 1, int(self.clock.seconds())) & 0xFFFFFFFF
        self.current = snapshot.with_serial(serial)
        self.generation += 1
        self.loaded_at = self.confirmed_at = self.clock.seconds()
        self.last_error = None
        self._reachable()
        counts = snapshot.counts()
        log.info(
            "registry snapshot {generation} loaded (serial {serial}): {networks} networks, {apps} apps, "
            "{machines} machines, {peers} peers, {regions} regions",
            generation=self.generation,
            serial=serial,
            **counts,
        )
        for listener in self.listeners:
            listener(self.current)
        self._wake(self.current)

    def reject(self, error: RegistryError) -> None:
        self.rejections += 1
        self.last_error = error
        keeping = "keeping the last good snapshot" if self.current is not None else "no snapshot loaded yet"
        log.error("{error} ({keeping})", error=str(error), keeping=keeping)
        self._wake(error)

    def confirm(self) -> None:
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

    def age(self) -> float | None:
        """Seconds since the backend last showed the served snapshot to be current."""
        if self.current is None or self.confirmed_at is None:
            return None
        return self.clock.seconds() - self.confirmed_at

    def next_change(self) -> Deferred[Snapshot | RegistryError]:
        """Fires with the next published snapshot or rejection (for tests and tooling)."""
        d: Deferred[Snapshot | RegistryError] = Deferred()
        self._waiters.append(d)
        return d

    def _wake(self, outcome: Snapshot | RegistryError) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(outcome)
