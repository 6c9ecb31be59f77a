"""The common part of backends over live stores, the ones that say what changed (etcd, SQLite).

A thread of the backend's own follows the store: it loads everything once, then waits for
changes and applies each batch to a lenient `Catalog`, which re-indexes only the networks a
change touches, and hands every new snapshot to the reactor thread. The reactor never waits on
the store. When the store cannot be read the thread tells the sink (`unreachable`: the last
snapshot keeps serving, /readyz and the metrics say so) and tries again, waiting longer each time
(up to `retry_max`); when it is back it goes on from where it was, or loads everything again if
the store can no longer say what changed since (`Resync`).

With a snapshot file (savefile.py), the thread first serves the snapshot saved there (at once:
each network's index is made when first asked for), then restores the catalog from it and
follows the store from the position saved with it, as if it had never stopped; it saves the
catalog again after its first load and every `SAVE_EVERY` seconds while the registry changes
(each save written from a copy of the catalog by a thread of its own, while the changes go on),
and once more when it stops.

A subclass supplies, all called on the backend's thread:
- `load_all()`: every entity (an iterable read once, in kind order), and a position to follow
  changes from (a revision, a sequence);
- `changes(position, timeout)`: the changes after `position`, waiting up to `timeout` seconds for
  some: (upserts, deleted keys, new position); nothing when the store is known to be unchanged;
- `interrupt()` (any thread): make a waiting `changes` return at once, for `stop`;
- `close()`;
- `registry()`: what the snapshot file must say it is of (the store's kind and where it is);
- optionally `saved_position(position)` / `resume(saved)`: the
  position as saved, and the position to follow from once restored (None: load everything);
- optionally `load_parts()`: the first load (nothing restored) made by several processes at once
  (parts.py), served at once as a restored snapshot is and its catalog made behind it; None to
  load with `load_all`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable, Iterator
from functools import partial
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from internal_dns.registry.backend import SnapshotSink
from internal_dns.registry.catalog import Catalog, CatalogCopy, RawEntity, SourceOf
from internal_dns.registry.heap import build_frozen
from internal_dns.registry.model import Snapshot
from internal_dns.registry.parts import Merged, NotMerged
from internal_dns.registry.savefile import SAVE_EVERY, Refused, Saved, SnapshotFile

log = Logger()


class Unavailable(Exception):
    """The store cannot be read now; try again later."""


class Resync(Exception):
    """The store can no longer say what changed since our position: load everything again."""


class LiveBackend:
    retry_first = 0.25  # seconds before trying an unreachable store again, doubled each time...
    retry_max = 10.0  # ...up to this
    wait = 1.0  # the longest one `changes` call waits; each quiet one confirms the snapshot
    # machines from which a first load in one process is served before its networks are indexed
    # (as `load_processes: auto` loads in parts from this size): 1.5–2 s sooner at a million
    index_later_from = 200_000

    def __init__(self, reactor: Any, source_of: SourceOf | None = None, saves: SnapshotFile | None = None):
        self.reactor = reactor
        self.source_of = source_of  # a store whose sources follow from its keys (catalog.py)
        self.saves = saves
        self.catalog = Catalog(self.source_of)
        self._unsaved = False  # delivered since the file was last written
        self._writing: threading.Thread | None = None  # the save being written, if one is
        self._saved_at = float("-inf")  # time.monotonic() of the last save
        self._whole = True  # the catalog took every entity of the last load (or restored them all)
        self._sink: SnapshotSink | None = None
        self._stopping = threading.Event()
        self._reload = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: Deferred[None] | None = None
        self._reported: set[str] = set()  # problem lines already logged

    # --- for subclasses -----------------------------------------------------------------------
    def describe(self) -> str:
        raise NotImplementedError

    def load_all(self) -> tuple[Iterable[RawEntity], Any]:
        raise NotImplementedError

    def registry(self) -> str:
        raise NotImplementedError

    def taken_whole(self, entities: Iterator[RawEntity]) -> Iterator[RawEntity]:
        """A load's entities, noting whether the catalog takes them all (`load_all` returns this)."""
        self._whole = False

        def take() -> Iterator[RawEntity]:
            yield from entities
            self._whole = True

        return take()

    def require_whole_load(self, where: object) -> None:
        """Changes after a load cut short would leave the catalog without what it did not take."""
        if not self._whole:
            raise Resync(f"{where}: the last load was cut short")

    def saved_position(self, position: Any) -> Any:
        return position

    def resume(self, saved: Any) -> Any:
        return saved

    def changes(self, position: Any, timeout: float) -> tuple[list[RawEntity], list[Hashable], Any]:
        raise NotImplementedError

    def load_parts(self) -> Merged | None:
        """The store loaded in parts (parts.py), or None to load it with `load_all`; NotMerged
        when the parts failed."""
        return None

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass

    # --- the Backend interface ------------------------------------------------------------------
    def start(self, sink: SnapshotSink) -> Deferred[None]:
        self._sink = sink
        self._first = Deferred()
        self._thread = threading.Thread(target=self._follow, name=f"registry {self.describe()}", daemon=True)
        self._thread.start()
        return self._first

    def reload(self) -> None:
        """Load everything again (SIGHUP), after the change being waited for (at most `wait`)."""
        self._reload.set()

    def stop(self) -> Deferred[None]:
        self._sink = None  # nothing reaches the server after this
        self._stopping.set()
        self.interrupt()
        thread = self._thread
        if thread is None:
            return succeed(None)
        return threads.deferToThread(thread.join, 10.0)

    # --- the backend's thread ---------------------------------------------------------------------
    def _follow(self) -> None:
        position: Any = self._restore()
        delay = self.retry_first
        while not self._stopping.is_set():
            try:
                if self._reload.is_set():
                    self._reload.clear()
                    self._to_reactor(
                        lambda: log.info("registry {store}: loading everything again, as asked", store=self.describe())
                    )
                    position = None
                if position is None:
                    position = self._first_load_in_parts() if not any(self.catalog.keys()) else None
                    if position is None:
                        if self._stopping.is_set():  # the parts were stopped: no load in one process now
                            break
                        entities, position = self.load_all()
                        self._load(entities)
                    self._save(position, now=True)
                upserts, deletes, position = self.changes(position, self.wait)
                if self._stopping.is_set():
                    break
                if upserts or deletes:
                    self._deliver(build_frozen(partial(self.catalog.apply, upserts, deletes)))
                else:
                    self._to_reactor(self._confirm)
                self._save(position)
                delay = self.retry_first
            except Resync as exc:
                self._to_reactor(
                    lambda reason=str(exc): log.info(
                        "registry {store}: loading everything again: {reason}", store=self.describe(), reason=reason
                    )
                )
                position = None
            except Exception as exc:  # Unavailable, or anything the client library raises
                reason = str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
                self._to_reactor(self._unreachable, reason)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.retry_max)
        if position is not None:
            self._save(position, now=True, last=True)
        self.close()

    def _load(self, entities: Iterable[RawEntity]) -> None:
        """Everything, from `load_all`'s entities. A first load of `index_later_from` machines or
        more is served before its networks are indexed (each index made when first asked for,
        as from a snapshot file); the whole snapshot, with what the indexes leave out, follows
        (`problems` None until then, as for a load in parts)."""
        snapshot, lazy = build_frozen(partial(self.catalog.load_first, entities, self.index_later_from))
        if not lazy:
            self._deliver(snapshot)
            return
        self._to_reactor(self._publish, snapshot, None, [])
        self._deliver(build_frozen(self.catalog.index_rest))
        # The first snapshot's indexes are made from the catalog's members: no change to them
        # until the reactor has taken the whole snapshot (its calls run in order).
        taken = threading.Event()
        self._to_reactor(taken.set)
        while not taken.wait(0.1) and not self._stopping.is_set():
            pass

    # --- a cold load in parts (parts.py; on the backend's thread) -------------------------------
    def _first_load_in_parts(self) -> Any:
        """The store loaded by several processes at once, if the backend can and the store is
        big enough to be worth it: served at once, each network's index made when first asked
        for, then the catalog made from it behind that (as from a snapshot file); the position.
        None: load it here (said in the log when the parts failed)."""
        started = time.monotonic()
        try:
            merged = self.load_parts()
        except NotMerged as exc:
            reason = str(exc)
            if not self._stopping.is_set():  # (stopping kills the parts: nothing to say then)
                self._to_reactor(
                    lambda: log.info("registry {store}: loading in one process: {reason}", store=self.describe(), reason=reason)
                )
            return None
        if merged is None:
            return None
        saved = Saved({"position": merged.position, "saved_at": time.time()}, merged.head, merged.chunks)
        snapshot = saved.snapshot()
        seconds = time.monotonic() - started
        # Said before it is served, in the reactor's order: whoever sees the parts' answers finds the line.
        self._to_reactor(
            lambda: log.info(
                "registry {store}: loaded by {parts} processes in {seconds:.2f} s; making the catalog from it",
                store=self.describe(),
                parts=merged.parts,
                seconds=seconds,
            )
        )
        self._to_reactor(self._publish, snapshot, None, [])
        try:
            self.catalog = build_frozen(lambda: saved.catalog(self.source_of))
        except Refused as exc:  # the parts' work does not fit together after all: served until loaded anew
            reason = str(exc)
            self._to_reactor(
                lambda: log.warn("registry {store}: loading in one process: {reason}", store=self.describe(), reason=reason)
            )
            return None
        self._deliver(self.catalog.snapshot())
        return merged.position

    # --- the snapshot file (on the backend's thread) ----------------------------------------------
    def _restore(self) -> Any:
        """Serve the saved snapshot and take up its catalog; the position to follow from (None:
        load everything, into the restored catalog if there is one)."""
        if self.saves is None:
            return None
        path = self.saves.path
        try:
            saved = self.saves.open()
            self._to_reactor(self._restored, saved.snapshot(), saved.saved_at, str(path))
            self.catalog = build_frozen(lambda: saved.catalog(self.source_of))
        except Refused as exc:
            reason = str(exc)
            self._to_reactor(lambda: log.info("registry snapshot file {path} not used: {reason}", path=path, reason=reason))
            return None
        self._deliver(self.catalog.snapshot(), restored_at=saved.saved_at)
        self._unsaved = False
        position = self.resume(saved.position)
        if position is None:
            self._to_reactor(
                lambda: log.info(
                    "registry {store}: the saved position cannot be followed: loading everything", store=self.describe()
                )
            )
        return position

    def _save(self, position: Any, now: bool = False, last: bool = False) -> None:
        """Write the snapshot file, from a copy of the catalog taken here, in a thread of its own
        (a million machines take a second or two to write: the changes after a load must not wait
        for it). A save still being written when the next is due makes that one wait for its turn;
        the `last`, at stop, waits for it and is written on this thread."""
        if self.saves is None:
            return
        writing = self._writing
        if writing is not None and writing.is_alive():
            if not last:
                return
            writing.join()
        if not self._unsaved or (not now and time.monotonic() - self._saved_at < SAVE_EVERY):
            return
        copy, saved_position = self.catalog.copy(), self.saved_position(position)
        first = self._saved_at == float("-inf")
        self._saved_at = time.monotonic()  # after a failure too: tried again after the interval
        self._unsaved = False  # until a change is delivered, or this save fails
        if last:
            self._write(copy, saved_position, first)
            return
        self._writing = threading.Thread(
            target=self._write, args=(copy, saved_position, first), name=f"snapshot file {self.saves_path}", daemon=True
        )
        self._writing.start()

    def _write(self, copy: CatalogCopy, position: Any, first: bool) -> None:
        assert self.saves is not None
        failed = self.saves.try_save(copy, position)
        if failed is not None:
            self._to_reactor(lambda: log.warn("{problem}", problem=failed))
        if self.saves.problem is not None:
            self._unsaved = True
        elif first:
            self._to_reactor(lambda: log.info("registry snapshot saved to {path}", path=self.saves_path))

    @property
    def saves_path(self) -> str:
        return str(self.saves.path) if self.saves is not None else ""

    def _deliver(self, snapshot: Snapshot, restored_at: float | None = None) -> None:
        problems = self.catalog.problem_lines()
        new = [line for line in problems if line not in self._reported]
        self._reported = set(problems)
        self._unsaved = True
        self._to_reactor(self._publish, snapshot, problems, new, restored_at)

    def _to_reactor(self, fn: Any, *args: Any) -> None:
        self.reactor.callFromThread(fn, *args)

    # --- on the reactor thread ------------------------------------------------------------------
    def _publish(self, snapshot: Snapshot, problems: list[str] | None, new: list[str], restored_at: float | None = None) -> None:
        """`problems` None: not known yet (a load in parts, before its catalog is made)."""
        if self._sink is None:
            return
        for line in new:
            log.warn("registry {store}: left out: {problem}", store=self.describe(), problem=line)
        if problems is not None:
            self._sink.leave_out(problems)
        if restored_at is None:
            self._sink.publish(snapshot)
        else:
            self._sink.restored(snapshot, restored_at, self.saves_path)
        self._fired()

    def _restored(self, snapshot: Snapshot, saved_at: float, path: str) -> None:
        if self._sink is not None:
            self._sink.restored(snapshot, saved_at, path)
            self._fired()

    def _confirm(self) -> None:
        if self._sink is not None:
            self._sink.confirm()

    def _unreachable(self, reason: str) -> None:
        if self._sink is not None:
            self._sink.unreachable(reason)
        self._fired()

    def _fired(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            first.callback(None)
