"""The `files` backend: every *.yaml file under a folder, merged, re-read when one changes.

The folder is polled on a timer (an injected clock, so tests advance time instead of sleeping);
each poll runs in a worker thread: it stats the files, and only when the set of names, sizes or
modification times has changed does it read them, parse those whose content changed and hand
their entities to the catalog (folder.py).

With a snapshot file (savefile.py) the backend first serves the snapshot saved there, and then
scans the folder as on a cold start: what the files hold now replaces it (or, if the files do not
validate, the saved snapshot keeps serving, as a last good one does). Its catalog is not restored
from the file: a first scan parses every file whatever it holds, and a restored catalog beside
the one the reactor serves cost a million machines' restart 140 MiB that stayed (the pages its
objects and the comparison's garbage freed among the new catalog's). It saves the catalog after
every scan it publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from internal_dns.registry.backend import SnapshotSink
from internal_dns.registry.files import folder
from internal_dns.registry.files.folder import Fingerprint
from internal_dns.registry.heap import build_frozen
from internal_dns.registry.model import RegistryError, Snapshot
from internal_dns.registry.savefile import Refused, Saved, SnapshotFile

log = Logger()


class FilesBackend:
    def __init__(
        self,
        root: Path,
        clock: IReactorTime,
        poll_interval: float = 1.0,
        defer_to_thread: Callable[..., Deferred[Any]] = threads.deferToThread,
        load_processes: int | None = None,
        loaders: int = 1,
    ):
        self.root = root
        self.clock = clock
        self.poll_interval = poll_interval
        self._defer_to_thread = defer_to_thread
        self._seen: Fingerprint | None = None
        self._sink: SnapshotSink | None = None
        self._rejected = False  # the folder holds a registry that failed validation
        self._folder = folder.Folder(root, load_processes, loaders)
        self._loop: LoopingCall | None = None
        self._running: Deferred[None] | None = None
        self._followers: list[Deferred[None]] = []  # callers of check() while a scan was running
        self.saves: SnapshotFile | None = None

    def describe(self) -> str:
        return f"files under {self.root}"

    def registry(self) -> str:
        return f"files {self.root.resolve()}"

    def start(self, sink: SnapshotSink) -> Deferred[None]:
        self._sink = sink
        if self.saves is None:
            return self._follow()
        opened = self._defer_to_thread(self._open_saved)
        opened.addCallback(self._restored)
        return opened

    def _follow(self, _: object = None) -> Deferred[None]:
        first = self.check()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.poll_interval, now=False)
        return first

    # --- the snapshot file ------------------------------------------------------------------------
    def _open_saved(self) -> tuple[Saved, Snapshot] | str:
        """In a worker thread: the saved snapshot, served while its catalog is restored."""
        assert self.saves is not None
        try:
            saved = self.saves.open()
            return saved, saved.snapshot()
        except Refused as exc:
            return str(exc)

    def _restored(self, opened: tuple[Saved, Snapshot] | str) -> Deferred[None]:
        """On the reactor: serve what was saved, then restore its catalog and scan (the caller
        waits for the first only: the server answers from the file meanwhile)."""
        assert self.saves is not None
        if isinstance(opened, str):
            log.info("registry snapshot file {path} not used: {reason}", path=self.saves.path, reason=opened)
            return self._follow()
        saved, snapshot = opened
        if self._sink is not None:
            self._sink.restored(snapshot, saved.saved_at, str(self.saves.path))
        self._follow()  # the first scan reads every file whatever it holds: the saved catalog would not spare it
        return succeed(None)

    def _save(self) -> None:
        """In the scan's thread, after a scan that is published."""
        if self.saves is None:
            return
        failed = self.saves.try_save(self._folder.catalog, None)
        if failed is not None:
            log.warn("{problem}", problem=failed)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._sink = None
        self._folder.parts.stop()  # a first read's parts, if they are still parsing

    def reload(self) -> Deferred[None]:
        """Scan now (SIGHUP), and publish what is found even if the files look unchanged."""
        self._seen = None
        return self.check()

    def check(self) -> Deferred[None]:
        """One poll: rescan in a thread, publish or reject if anything changed."""
        if self._running is not None:  # a slow scan is still going; let it finish
            # A Deferred of their own: a caller's callbacks or timeout must not touch the scan's.
            follower: Deferred[None] = Deferred()
            self._followers.append(follower)
            return follower
        seen = self._seen
        d = self._defer_to_thread(self._scan, seen)
        self._running = d  # before the callbacks: a synchronous defer_to_thread has fired already
        d.addCallbacks(self._scanned, self._failed)
        d.addBoth(self._done)
        return d

    def _scan(self, seen: Fingerprint | None) -> tuple[Fingerprint, Snapshot | RegistryError | None]:
        """Runs in a worker thread: the reactor never waits on the disk."""
        try:
            fp = folder.fingerprint(self.root, seen)
        except (RegistryError, OSError) as exc:
            error = exc if isinstance(exc, RegistryError) else RegistryError([f"{self.root}: {exc}"])
            return ((("!", 0, 0, 0, (0, 0, 0), str(error)),), error)
        if folder.unchanged(seen, fp):
            return fp, None
        try:
            outcome = build_frozen(self._folder.scan)
        except folder.Stopped:  # nothing read, nothing saved: the backend is gone
            return fp, None
        if self._folder.parted is not None:
            log.info("registry files under {root}: {parted}", root=self.root, parted=self._folder.parted)
            self._folder.parted = None
        if isinstance(outcome, Snapshot):
            self._save()
        return fp, outcome

    def _scanned(self, result: tuple[Fingerprint, Snapshot | RegistryError | None]) -> None:
        fp, outcome = result
        if self._sink is None:  # stopped while the scan ran
            return
        self._seen = fp  # even when unchanged: it may have dropped the hashes of settled files
        if isinstance(outcome, RegistryError):
            self._rejected = True
            self._sink.reject(outcome)
        elif outcome is not None:
            self._rejected = False
            self._sink.publish(outcome)
        elif not self._rejected:
            self._sink.confirm()  # the folder still holds what is being served

    def _failed(self, failure: Any) -> None:
        log.failure("registry scan of {root} failed", failure, root=self.root)

    def _done(self, _: Any) -> None:
        self._running = None
        followers, self._followers = self._followers, []
        for follower in followers:
            follower.callback(None)
