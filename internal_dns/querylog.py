"""The optional query log: one JSON line per query, to a file or standard output.

Lines are queued on the reactor thread and written by a worker thread on a timer, so the disk
never blocks a query; when the writer falls behind past `max_queue` lines, lines are dropped and
counted rather than memory growing. Off (no object at all) by default.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class QueryLog:
    def __init__(
        self,
        target: str,
        clock: IReactorTime,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        defer_to_thread: Callable[..., Deferred[Any]] = threads.deferToThread,
    ):
        self.target = target
        self.clock = clock
        self.max_queue = max_queue
        self.dropped = 0
        self._queue: list[str] = []
        self._defer_to_thread = defer_to_thread
        self._stream: IO[str] | None = None
        self._writing: Deferred[Any] | None = None
        self._loop = LoopingCall(self.flush)
        self._loop.clock = clock
        self._flush_interval = flush_interval

    def start(self) -> None:
        self._stream = sys.stdout if self.target == "-" else open(self.target, "a", encoding="utf-8")  # noqa: SIM115
        self._loop.start(self._flush_interval, now=False)

    def record(
        self, client: str, view: str | None, name: str, qtype: str, zone: str, rcode: str, seconds: float, transport: str
    ) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(
            json.dumps(
                {
                    "time": datetime.fromtimestamp(self.clock.seconds(), timezone.utc).isoformat(timespec="milliseconds"),
                    "client": client,
                    "view": view,
                    "name": name,
                    "type": qtype,
                    "zone": zone,
                    "rcode": rcode,
                    "duration_ms": round(seconds * 1000, 3),
                    "transport": transport,
                },
                separators=(",", ":"),
            )
        )

    def flush(self) -> Deferred[Any]:
        """Hand the queued lines to the writer thread (one batch at a time)."""
        if self._writing is not None or not self._queue or self._stream is None:
            return self._writing or succeed(None)
        batch, self._queue = self._queue, []
        d = self._defer_to_thread(self._write, self._stream, batch)
        d.addErrback(lambda f: log.failure("query log {target}: write failed", f, target=self.target))
        d.addBoth(self._written)
        self._writing = d
        return d

    def _written(self, _: Any) -> None:
        self._writing = None

    @staticmethod
    def _write(stream: IO[str], batch: list[str]) -> None:
        stream.write("\n".join(batch) + "\n")
        stream.flush()

    def stop(self) -> Deferred[Any]:
        if self._loop.running:
            self._loop.stop()
        d = self._writing or succeed(None)
        d.addCallback(lambda _: self.flush())
        d.addCallback(lambda _: self._close())
        return d

    def _close(self) -> None:
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        self._stream = None
