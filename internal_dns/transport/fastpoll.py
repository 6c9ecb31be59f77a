"""The reactor's poll, without Twisted's per-event logging context for UDP listeners, and
without a turn of its main loop between two wake-ups that only read them.

Twisted's epoll reactor wraps every ready descriptor's read in `log.callWithLogger` (a context
pushed and popped, about 1.4 µs) and `_doReadOrWrite` (the descriptor asked for its number, the
event decoded). At a steady few thousand queries a second each wake-up finds one datagram, so
that is paid once per query. A UDP listener (`fast_read = True`) is read directly, its errors
logged as Twisted would; every other descriptor goes the usual way.

Each wake-up also costs a turn of the main loop: its timed calls looked at (`runUntilCurrent`)
and the time to the next one worked out (`timeout`), a few µs of Python that change nothing
while wake-ups only read datagrams. So a poll goes on polling, for the rest of the time it was
given, for as long as every wake-up only read UDP listeners and nothing new is waiting for the
main loop: no call from another thread (which also wakes the poll through the reactor's waker,
a descriptor of the usual kind), no call scheduled meanwhile, the reactor not stopping.
"""

from __future__ import annotations

import errno
import select
from typing import Any

from twisted.logger import Logger
from twisted.python import log as legacy_log

log = Logger()

LONGEST = 2**31 / 1000  # seconds: the longest wait epoll takes (Twisted's own bound)


def main_loop_waits(reactor: Any) -> bool:
    """Whether the reactor's main loop has something to do now besides polling: calls from other
    threads, calls scheduled since its last turn, or stopping."""
    return bool(reactor.threadCallQueue or reactor._newTimedCalls or reactor._justStopped or not reactor.running)


def install(reactor: Any) -> bool:
    """Give an epoll reactor this poll (False, and nothing changed, for another reactor)."""
    poller = getattr(reactor, "_poller", None)
    if not isinstance(poller, select.epoll) or getattr(reactor, "_fast_poll", False):
        return False
    selectables = reactor._selectables
    usual = reactor._doReadOrWrite
    epollin = select.EPOLLIN

    def do_poll(timeout: float | None) -> None:
        seconds = reactor.seconds
        until = None if timeout is None else seconds() + timeout  # what the caller gave, at most
        while True:
            try:
                ready = poller.poll(-1 if timeout is None else timeout, len(selectables))
            except OSError as err:
                if err.errno == errno.EINTR:
                    return
                raise
            only_fast = True
            for fd, event in ready:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                if event == epollin and getattr(selectable, "fast_read", False):  # readable, nothing else
                    try:
                        selectable.doRead()
                    except Exception:
                        log.failure("reading {fd}", fd=fd)
                else:
                    only_fast = False
                    legacy_log.callWithLogger(selectable, usual, selectable, fd, event)
            if not (ready and only_fast and (timeout is None or timeout > 0)) or main_loop_waits(reactor):
                return
            # Until the next timed call (one moved sooner stays in place: read anew each time).
            pending = reactor._pendingTimedCalls
            end = pending[0].time if pending else until
            if end is None:
                timeout = None
            else:
                if until is not None and until < end:
                    end = until
                timeout = min(end - seconds(), LONGEST)
                if timeout <= 0:
                    return

    reactor.doPoll = reactor.doIteration = do_poll
    reactor._fast_poll = True
    return True
