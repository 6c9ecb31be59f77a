"""The optional query log: one JSON line per query, to a file or standard output.

Lines are queued on the reactor thread and written by a worker thread on a timer, so the disk
never blocks a query; when the writer falls behind past `max_queue` lines, lines are dropped and
counted rather than memory growing. Off (no object at all) by default.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prometheus_client.core import CounterMetricFamily, Metric
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def unwritable(target: str) -> str | None:
    """Why the query log could not be written at `target` (a file path), or None when it can."""
    path = Path(target)
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    folder = path.parent
    if not folder.exists():
        return f"directory {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"directory {folder} is not writable"
    return None


class QueryLog:
    def collect(self) -> Iterator[Metric]:
        # lines the log drops rather than grow memory must not go unseen
        yield CounterMetricFamily(
            "internal_dns_query_log_dropped", "Query log lines dropped: the writer fell too far behind.", value=self.dropped
        )

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
        self._stream = sys.stdout if self.target == "-" else open(self.target, "a", encoding="utf-8")
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
                    "time": datetime.fromtimestamp(self.clock.seconds(), UTC).isoformat(timespec="milliseconds"),
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

    def flush(self) -> Deferred[None]:
        """Write every line queued so far; fires once they are written.

        One batch is in the writer thread at a time: lines queued meanwhile go in the next batch,
        after it. Each caller (the timer, `stop`, a test) gets a Deferred of its own, so that its
        callbacks or timeout never touch the write itself.
        """
        done: Deferred[None] = Deferred()
        if self._writing is not None:
            self._writing.addBoth(self._flush_after, done)
        elif not self._queue or self._stream is None:
            done.callback(None)
        else:
            batch, self._queue = self._queue, []
            d = self._defer_to_thread(self._write, self._stream, batch)
            self._writing = d  # before the callbacks: a synchronous defer_to_thread has fired already
            d.addErrback(lambda f: log.failure("query log {target}: write failed", f, target=self.target))
            d.addBoth(self._written)
            d.addBoth(lambda _: done.callback(None))
        return done

    def _flush_after(self, result: Any, done: Deferred[None]) -> Any:
        self.flush().chainDeferred(done)  # the batch before has gone: write what came since
        return result

    def _written(self, _: Any) -> None:
        self._writing = None

    @staticmethod
    def _write(stream: IO[str], batch: list[str]) -> None:
        stream.write("\n".join(batch) + "\n")
        stream.flush()

    def reopen(self) -> Deferred[None]:
        """Write what is queued, then open the file anew: after logrotate has moved it away, the
        lines go to a new file of the same name (SIGHUP). If it cannot be opened, the old one
        goes on."""
        d = self.flush()
        d.addCallback(lambda _: self._reopen())
        return d

    def _reopen(self) -> None:
        if self._stream is None or self._stream is sys.stdout:
            return
        try:
            stream = open(self.target, "a", encoding="utf-8")
        except OSError as exc:
            log.error(
                "query log {target} cannot be opened again: {error}; writing on to the file already open",
                target=self.target,
                error=exc,
            )
            return
        old, self._stream = self._stream, stream
        old.close()

    def stop(self) -> Deferred[None]:
        if self._loop.running:
            self._loop.stop()
        d = self.flush()
        d.addCallback(lambda _: self._close())
        return d

    def _close(self) -> None:
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        self._stream = None
