"""The operator's HTTP listener: /metrics (Prometheus text), /healthz (alive), /readyz (serving well)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from internal_dns.ops.metrics import Collect, registry_for

Readiness = Callable[[], list[str]]  # why the server is not ready to serve; empty when it is


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, collect: Collect):
        super().__init__()
        self.registry = registry_for(collect)

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok\n"


class _Ready(Resource):
    isLeaf = True

    def __init__(self, readiness: Readiness):
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        reasons = self.readiness()
        if reasons:
            request.setResponseCode(503)
            return ("not ready:\n" + "".join(f"- {r}\n" for r in reasons)).encode()
        return b"ready\n"


class _QuietSite(Site):
    noisy = False

    def log(self, request: Any) -> None:  # scrapes every few seconds would flood the log
        pass


def operator_site(collect: Collect, readiness: Readiness) -> Site:
    root = Resource()
    root.putChild(b"metrics", _Metrics(collect))
    root.putChild(b"healthz", _Health())
    root.putChild(b"readyz", _Ready(readiness))
    return _QuietSite(root)
