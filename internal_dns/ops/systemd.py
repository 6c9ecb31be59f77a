"""systemd's notify protocol (sd_notify(3)): READY=1 once a snapshot serves, STOPPING=1, STATUS=,
and WATCHDOG=1 fed by the reactor, so that a reactor that stops turning stops feeding it.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named by $NOTIFY_SOCKET
(a leading `@` names the abstract namespace). The maintained Python bindings (python-systemd) are
a C extension built against libsystemd, which a pip install of this package cannot count on; the
few lines are written here instead. Without $NOTIFY_SOCKET every call is a no-op. Sending never
blocks the reactor: a datagram that does not fit systemd's queue is dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class SystemdNotifier:
    def __init__(self, reactor: Any, environ: Mapping[str, str] = os.environ):
        self.reactor = reactor
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        # WATCHDOG_USEC applies to this process only if WATCHDOG_PID, when set, is its own.
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1e6 / 2 if usec and usec.isdigit() and int(usec) > 0 and mine else None
        self._watchdog: LoopingCall | None = None
        self._sock: socket.socket | None = None

    def send(self, message: str) -> bool:
        """One notification; False when there is no systemd to tell, or it could not be sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), socket.MSG_DONTWAIT, self.address)
            return True
        except OSError as exc:
            log.warn("systemd notification {message!r} not sent: {error}", message=message.split("\n", 1)[0], error=exc)
            return False

    def start_watchdog(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for, from the reactor's own timer."""
        if self.watchdog_interval is None or self._watchdog is not None:
            return
        self._watchdog = LoopingCall(self.send, "WATCHDOG=1")
        self._watchdog.clock = self.reactor
        self._watchdog.start(self.watchdog_interval, now=True)

    def stop_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
