"""Zone `railway.internal` (SPEC §5): `<service>` → started replicas, A and AAAA."""

from __future__ import annotations

from internal_dns.authority.views import View
from internal_dns.records import AAAA, A, Node, RecordSet
from internal_dns.registry.model import Snapshot


def lookup(snapshot: Snapshot, view: View, labels: tuple[str, ...]) -> Node | None:
    if len(labels) != 1:
        return None
    net = snapshot.networks[view.network]
    app = net.apps.get(labels[0])
    if app is None:
        return None
    records: dict[int, RecordSet] = {AAAA: RecordSet(tuple(m.packed6 for m in app.started), rotates=True)}
    if not net.network.legacy:  # legacy environments are IPv6-only: A is NODATA
        records[A] = RecordSet(tuple(m.packed4 for m in app.started if m.packed4 is not None), rotates=True)
    return Node(records)
