"""`twistd [-n] internal-dns -c CONFIG`: the same server as `internal-dns serve`."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [["config", "c", "config.yaml", "config file"]]

    def postOptions(self) -> None:
        # Loaded here, not in makeService, so a bad config is one line and a non-zero exit (twistd
        # would print a UsageError with its usage text and exit 0, which a supervisor reads as fine).
        from internal_dns.config import ConfigError, load_config

        try:
            self.loaded = load_config(self["config"])
        except ConfigError as exc:
            raise SystemExit(f"config error: {exc}") from None


@implementer(IServiceMaker, IPlugin)
class InternalDnsServiceMaker:
    tapname = "internal-dns"
    description = "DNS for a platform's private network (.internal, .flycast, railway.internal)."
    options = Options

    def makeService(self, options: Any) -> Any:
        from twisted.internet import reactor as installed
        from twisted.internet.defer import Deferred
        from twisted.internet.error import CannotListenError

        from internal_dns.cli import log_warnings
        from internal_dns.server import DnsService

        # To mypy twisted.internet.reactor is a module without attributes (the reactor object is put
        # in its place when installed): Any, as DnsService takes it.
        reactor: Any = installed

        class TwistdDnsService(DnsService):
            def start(self) -> Deferred[None]:  # what twistd's startService() calls
                try:
                    ready = super().start()
                except CannotListenError as exc:  # a port in use: a message, not a traceback
                    raise SystemExit(f"internal-dns: cannot start: {exc}") from None
                ready.addErrback(self._cannot_start)  # the DNS listeners bind once the registry loads
                # SIGHUP reloads, as under `internal-dns serve`; twistd leaves it to end the process.
                signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(self.reload))
                return ready

            def _cannot_start(self, failure: Any) -> None:
                # twistd offers no way to end with a status of one's choosing from the reactor,
                # and a supervisor must see this failure: say why, then leave at once.
                print(f"internal-dns: cannot start: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(1)

        log_warnings(options.loaded)
        return TwistdDnsService(options.loaded, reactor)


service_maker = InternalDnsServiceMaker()
