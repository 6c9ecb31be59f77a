"""The backend interface: how a registry store hands whole snapshots to the server.

A backend knows nothing about DNS. It reads its store off the reactor thread, builds a validated
`Snapshot` with `build_snapshot`, and calls the sink on the reactor thread: `publish` with each new
snapshot, `reject` with the `RegistryError` of one that failed validation (the server keeps the
last good one), and `confirm` whenever it has checked that its store still matches the snapshot it
last published (a poll that found nothing new, a live watch). The time since the last publish or
confirm is the snapshot's age, which /readyz compares with `registry.max_age`. The server never
calls a backend per query.

Backends over live stores (etcd, SQLite; live.py) are lenient: an entity that does not fit is
left out (`leave_out` lists them) and the rest is published; and they say when their store cannot
be reached (`unreachable`), which /readyz and the metrics pass on while the last snapshot serves.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from internal_dns.registry.model import RegistryError, Snapshot


class SnapshotSink(Protocol):
    def publish(self, snapshot: Snapshot) -> None: ...

    def reject(self, error: RegistryError) -> None: ...

    def confirm(self) -> None: ...

    def restored(self, snapshot: Snapshot, saved_at: float, path: str) -> None:
        """A snapshot saved to `path` at `saved_at` (wall-clock seconds), served while the backend
        catches up with its store (until the next publish, reject or confirm)."""
        ...

    def unreachable(self, reason: str) -> None:
        """The store cannot be read (until the next publish or confirm)."""
        ...

    def leave_out(self, problems: list[str]) -> None:
        """A lenient backend serves without these entities: one line each, why."""
        ...


class Backend(Protocol):
    def describe(self) -> str:
        """A short human description for logs, e.g. 'files under /srv/zones'."""
        ...

    def start(self, sink: SnapshotSink) -> Deferred[None]:
        """Begin delivering; the Deferred fires once the first load has been attempted."""
        ...

    def stop(self) -> Deferred[None] | None:
        """Stop watching; no publish or reject happens after the result fires."""
        ...

    # Optional: `reload()`, read the whole store again now (SIGHUP); the server asks for it by name.
