"""`twistd [-n] internal-dns -c CONFIG`: the same server as `internal-dns serve`."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [["config", "c", "config.yaml", "config file"]]


@implementer(IServiceMaker, IPlugin)
class InternalDnsServiceMaker:
    tapname = "internal-dns"
    description = "DNS for a platform's private network (.internal, .flycast, railway.internal)."
    options = Options

    def makeService(self, options: Any) -> Any:
        from twisted.internet import reactor

        from internal_dns.config import load_config
        from internal_dns.server import DnsService

        return DnsService(load_config(options["config"]), reactor)


service_maker = InternalDnsServiceMaker()
