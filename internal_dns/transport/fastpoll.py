"""The reactor's poll, without Twisted's per-event logging context for UDP listeners.

Twisted's epoll reactor wraps every ready descriptor's read in `log.callWithLogger` (a context
pushed and popped, about 1.4 µs) and `_doReadOrWrite` (the descriptor asked for its number, the
event decoded). At a steady few thousand queries a second each wake-up finds one datagram, so
that is paid once per query. A UDP listener (`fast_read = True`) is read directly, its errors
logged as Twisted would; every other descriptor goes the usual way.
"""

from __future__ import annotations

import errno
import select
from typing import Any

from twisted.logger import Logger
from twisted.python import log as legacy_log

log = Logger()


def install(reactor: Any) -> bool:
    """Give an epoll reactor this poll (False, and nothing changed, for another reactor)."""
    poller = getattr(reactor, "_poller", None)
    if not isinstance(poller, select.epoll) or getattr(reactor, "_fast_poll", False):
        return False
    selectables = reactor._selectables
    usual = reactor._doReadOrWrite
    epollin = select.EPOLLIN

    def do_poll(timeout: float | None) -> None:
        try:
            ready = poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
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
                legacy_log.callWithLogger(selectable, usual, selectable, fd, event)

    reactor.doPoll = reactor.doIteration = do_poll
    reactor._fast_poll = True
    return True
