"""Zone `railway.internal` (SPEC §5): `<service>` → started replicas, A and AAAA (the healthy
ones, SPEC §3 Health); `_<name>._<protocol>.<service>` → SRV to `<service>` (SPEC §3 Services)."""

from __future__ import annotations

from internal_dns.authority.health import healthy
from internal_dns.authority.views import View
from internal_dns.records import AAAA, EMPTY_NON_TERMINAL, SRV, A, Extra, Node, RecordSet, srv_rdata
from internal_dns.registry.model import AppIndex, Machine, Snapshot


def lookup(snapshot: Snapshot, view: View, labels: tuple[str, ...], origin: str) -> Node | None:
    net = snapshot.networks[view.network]
    app = net.apps.get(labels[-1])
    if app is None:
        return None
    replicas, failed_open = healthy(app.started)
    legacy = net.network.legacy
    match labels[:-1]:
        case ():
            return Node(_addresses(replicas, legacy), fail_open=failed_open)
        case (protocol,) if app.app.serves(protocol):
            return EMPTY_NON_TERMINAL
        case (service, protocol):
            return _service(app, service, protocol, replicas, legacy, failed_open, origin)
    return None


def _addresses(replicas: tuple[Machine, ...], legacy: bool) -> dict[int, RecordSet]:
    records = {AAAA: RecordSet(tuple(m.packed6 for m in replicas), rotates=True)}
    if not legacy:  # legacy environments are IPv6-only: A is NODATA
        records[A] = RecordSet(tuple(m.packed4 for m in replicas if m.packed4 is not None), rotates=True)
    return records


def _service(
    app: AppIndex, service: str, protocol: str, replicas: tuple[Machine, ...], legacy: bool, failed_open: bool, origin: str
) -> Node | None:
    """One SRV to the service's own name, whose addresses (two labels below the question's)
    go in the additional section; none while no replica is started, as for the address forms."""
    port = app.app.port(service, protocol)
    if port is None:
        return None
    if not replicas:
        return Node({SRV: RecordSet(())})
    extra = tuple(Extra(2, b"", rtype, rs.rdatas) for rtype, rs in sorted(_addresses(replicas, legacy).items()) if rs.rdatas)
    return Node({SRV: RecordSet((srv_rdata(port, f"{app.app.name}.{origin}"),))}, extra, failed_open)
