"""The server's side of the sqlite backend: the file read whole, then `PRAGMA data_version`
asked every poll interval and the change log read when another connection has committed (a
`LiveBackend`, live.py)."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, cast

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.live import LiveBackend, Resync, Unavailable
from internal_dns.registry.parts import Merged, NotMerged, Runner, how_many, merge
from internal_dns.registry.sqlite.changes import last_seq, read_changes
from internal_dns.registry.sqlite.codec import source_function, stream_entities
from internal_dns.registry.sqlite.connection import connect, schema_problem

DEFAULT_POLL_INTERVAL = 0.1  # seconds between two looks at PRAGMA data_version
PARTS_FROM = 200_000  # machines from which a first load is made in parts by default (at 100,000 it gains nothing)


class SqliteBackend(LiveBackend):
    retry_max = 2.0  # a local file: looking again costs nothing

    def __init__(
        self,
        path: Path,
        reactor: Any,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        load_processes: int | None = None,
        loaders: int = 1,
    ):
        super().__init__(reactor, source_function(str(path)))
        self.path = path
        self.poll_interval = poll_interval
        self.load_processes = load_processes  # None: as many as there are cores, for a big database
        self.loaders = loaders  # server processes loading at the same time, sharing the cores
        self._parts = Runner()
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file the position is of
        self._data_version: int | None = None
        self._interrupted = threading.Event()

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def registry(self) -> str:
        return f"sqlite {self.path.resolve()}"

    def saved_position(self, position: Any) -> Any:
        return [position, *(self._file or (0, 0))]  # the change log's position is of this file

    def resume(self, saved: Any) -> Any:
        """The saved position, if the path still names the file it is of; else load everything."""
        seq, *identity = saved
        if tuple(identity) != self._stat():
            return None
        self._file = (identity[0], identity[1])
        return seq

    # --- on the backend's thread --------------------------------------------------------------
    def load_all(self) -> tuple[Iterator[RawEntity], int]:
        """Every entity, streamed, and the position they are as of: both read in one read
        transaction, which stays open while the entities are consumed (on this thread, as the
        catalog loads them) and ends once they are all read, or when the reading is closed or
        dropped."""
        self.close()
        conn, self._file = self._open()
        self._conn = conn
        try:
            self._data_version = self._version(conn)  # before reading: a commit after it is seen
            rows = self._read_all(conn)
            position = next(rows)  # the transaction begun and the position read
        except sqlite3.Error as exc:
            self.close()
            raise Unavailable(f"{self.path}: {exc}") from exc
        assert isinstance(position, int)
        return self.taken_whole(cast(Iterator[RawEntity], rows)), position

    def load_parts(self) -> Merged | None:
        """The first load, by several processes at once (registry/parts.py): as many as
        `load_processes` says, or else this server's share of the cores (`workers: N` load at
        the same time) when the database holds `PARTS_FROM` machines or more."""
        if self.load_processes == 1:  # without opening the file to count its machines
            return None
        self.close()
        conn, self._file = self._open()
        self._conn = conn
        try:
            self._data_version = self._version(conn)  # before the parts read: a commit after it is seen
            machines = int(conn.execute("SELECT count(*) FROM machines").fetchone()[0])
        except sqlite3.Error as exc:
            self.close()
            raise Unavailable(f"{self.path}: {exc}") from exc
        parts = how_many(self.load_processes, self.loaders, machines >= PARTS_FROM)
        if parts < 2:
            return None
        command = [sys.executable, "-m", "internal_dns.registry.sqlite.parts", str(self.path)]
        merged = merge(self._parts.run([[*command, str(i), str(parts)] for i in range(parts)]))
        if tuple(merged.identity) != self._file:
            raise NotMerged("the parts read another database file")
        return merged

    def _read_all(self, conn: sqlite3.Connection) -> Iterator[int | RawEntity]:
        """The position (the change log's last sequence number), then every entity, in one read
        transaction."""
        conn.execute("BEGIN")
        try:
            yield last_seq(conn)
            try:
                yield from stream_entities(conn, str(self.path), share=True)
            except sqlite3.Error as exc:
                if self._conn is conn:
                    self.close()
                raise Unavailable(f"{self.path}: {exc}") from exc
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except sqlite3.Error:
                pass  # closed meanwhile (an error, a new load): the transaction ended with it

    def changes(self, position: int, timeout: float) -> tuple[list[RawEntity], list[Hashable], int]:
        self.require_whole_load(self.path)
        deadline = time.monotonic() + timeout
        try:
            while not self._interrupted.is_set():
                conn = self._connection()
                version = self._version(conn)
                if version != self._data_version:
                    self._data_version = version
                    found = read_changes(conn, self.path, position)
                    if found is not None:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._interrupted.wait(min(self.poll_interval, remaining))
        except sqlite3.Error as exc:
            self.close()
            raise Unavailable(f"{self.path}: {exc}") from exc
        except (Unavailable, Resync):
            self.close()
            raise
        return [], [], position

    def _connection(self) -> sqlite3.Connection:
        """The open connection, if the path still names the file it reads (a stat: cheap); else
        the file is opened again, and must be the one the position is of."""
        now = self._stat()
        if now is None:
            raise Unavailable(f"{self.path}: the database file was removed")
        if now != self._file:
            raise Resync(f"{self.path}: the database file was replaced")
        if self._conn is None:  # closed after an error: open it again and look at the log at once
            conn, opened = self._open()
            if opened != self._file:
                conn.close()
                raise Resync(f"{self.path}: the database file was replaced")
            self._conn, self._data_version = conn, None
        return self._conn

    def _open(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """A connection to the file at the path, and the file's identity."""
        before = self._stat()
        if before is None:
            raise Unavailable(f"no database at {self.path} (`internal-dns registry import` creates one)")
        if self.path.is_dir():
            raise Unavailable(f"{self.path} is a folder: registry.path names the database file")
        try:
            conn = connect(self.path, create=False)
            try:
                problem = schema_problem(conn, self.path)
            except sqlite3.Error:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise Unavailable(f"{self.path}: {exc}") from exc
        if problem is not None or self._stat() != before:
            conn.close()
            raise Unavailable(problem or f"{self.path}: replaced while being opened")
        return conn, before

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def interrupt(self) -> None:
        self._interrupted.set()
        self._parts.stop()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
