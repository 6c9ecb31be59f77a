"""The operator's HTTP listener: /metrics (Prometheus text), /healthz (alive), /readyz (serving well)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from internal_dns.ops.metrics import registry_for

if TYPE_CHECKING:
    from internal_dns.server import DnsService


def readiness(service: DnsService) -> list[str]:
    """Why the server is not ready to serve; empty when it is."""
    reasons = []
    store = service.store
    if store.current is None:
        reason = "no registry snapshot loaded yet"
        if store.last_error is not None:
            reason += f" (last attempt: {store.last_error})"
        reasons.append(reason)
    else:
        age = store.age()
        limit = service.config.registry.max_age
        if age is not None and age > limit:
            reasons.append(f"registry snapshot is {age:.0f}s old, over the {limit:.0f}s limit ({service.backend.describe()})")
    if store.unreachable_since is not None:
        down = service.clock.seconds() - store.unreachable_since
        reasons.append(f"registry store unreachable for {down:.0f}s ({store.unreachable_reason}); serving the last snapshot")
    forwarder = service.forwarder
    if forwarder is not None and not forwarder.healthy():
        reasons.append("every upstream is down: " + ", ".join(u.label for u in forwarder.upstreams))
    return reasons


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, service: DnsService):
        super().__init__()
        self.registry = registry_for(service)

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

    def __init__(self, service: DnsService):
        super().__init__()
        self.service = service

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        reasons = readiness(self.service)
        if reasons:
            request.setResponseCode(503)
            return ("not ready:\n" + "".join(f"- {r}\n" for r in reasons)).encode()
        return b"ready\n"


class _QuietSite(Site):
    noisy = False

    def log(self, request: Any) -> None:  # scrapes every few seconds would flood the log
        pass


def operator_site(service: DnsService) -> Site:
    root = Resource()
    root.putChild(b"metrics", _Metrics(service))
    root.putChild(b"healthz", _Health())
    root.putChild(b"readyz", _Ready(service))
    return _QuietSite(root)
