"""The authoritative answer: a pure function of (snapshot, view, zone, question).

Schemes say whether a name exists and what it holds; this module applies the rules shared by
every zone: apex SOA/NS, NXDOMAIN vs NODATA with the SOA in authority (RFC 2308), ANY (RFC 8482).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from internal_dns.authority.schemes import SCHEMES, Scheme
from internal_dns.authority.views import View
from internal_dns.records import (
    ANY,
    NOERROR,
    NS,
    NXDOMAIN,
    SOA,
    Answer,
    Node,
    RecordSet,
    RRset,
    name_wire,
    soa_rdata,
)
from internal_dns.registry.model import Snapshot


@dataclass(frozen=True, slots=True)
class Zone:
    name: str  # lower case, no trailing dot
    labels: tuple[str, ...]
    scheme: Scheme

    @classmethod
    def make(cls, name: str, scheme: str) -> Zone:
        return cls(name, tuple(name.split(".")), SCHEMES[scheme])


class Zones:
    """The configured zones; the longest suffix of a name wins."""

    def __init__(self, zones: dict[str, str]):
        self.by_labels = {z.labels: z for z in (Zone.make(n, s) for n, s in zones.items())}
        self.by_scheme: dict[str, str] = {}  # scheme → the first zone serving it (reverse names point there)
        for name, scheme in zones.items():
            self.by_scheme.setdefault(scheme, name)
        self._lengths = sorted({len(k) for k in self.by_labels}, reverse=True)

    def match(self, labels: tuple[str, ...]) -> Zone | None:
        n = len(labels)
        for k in self._lengths:
            if k <= n:
                zone = self.by_labels.get(labels[n - k :])
                if zone is not None:
                    return zone
        return None


def answer(snapshot: Snapshot, view: View, zone: Zone, labels: tuple[str, ...], qtype: int, ttl: int) -> Answer:
    """`labels` is the whole lower-cased query name; `zone` the zone it falls in."""
    relative = labels[: len(labels) - len(zone.labels)]
    serial = snapshot.serial
    node = apex(zone, serial, ttl) if not relative else zone.scheme(snapshot, view, relative, zone.name)
    return from_node(node, zone.name, len(relative), qtype, serial, ttl)


def private_reverse(
    labels: tuple[str, ...], zone_labels: int, qtype: int, serial: int, ttl: int, names: Callable[[tuple[str, ...]], Node | None]
) -> Answer:
    """A reverse name inside a locally served block holding a network (`reverse.py`): the zone's
    apex holds its SOA; below it only the view's own addresses have names (`names`: ptr.py), so
    that another network's addresses cannot be told from unused ones (SPEC §2, §3 Reverse)."""
    zone = ".".join(labels[len(labels) - zone_labels :])
    depth = len(labels) - zone_labels
    node = Node({SOA: RecordSet((soa_rdata(zone, serial, ttl),))}) if depth == 0 else names(labels)
    return from_node(node, zone, depth, qtype, serial, ttl)


def from_node(node: Node | None, zone: str, depth: int, qtype: int, serial: int, ttl: int) -> Answer:
    """The rules every zone shares, given what a name holds (None: it does not exist) and how
    many labels below the apex it is: NXDOMAIN or NODATA with the zone's SOA, ANY, or the records."""
    soa = RRset(depth, SOA, ttl, (soa_rdata(zone, serial, ttl),))
    if node is None:
        return Answer(NXDOMAIN, authority=(soa,))
    if qtype == ANY:
        found = tuple(RRset(0, t, ttl, rs.rdatas, rs.rotates) for t, rs in sorted(node.records.items()) if rs.rdatas)
    else:
        rs = node.records.get(qtype)
        found = (RRset(0, qtype, ttl, rs.rdatas, rs.rotates),) if rs is not None and rs.rdatas else ()
    if not found:
        return Answer(NOERROR, authority=(soa,))
    # What a node's records carry beside them, and whether its addresses failed open, go with
    # any answer of its records: a node holds one kind of them (addresses, or SRV and targets).
    additional = tuple(RRset(x.skip, x.rtype, ttl, x.rdatas, prefix=x.prefix) for x in node.additional)
    return Answer(NOERROR, answer=found, additional=additional, fail_open=node.fail_open)


def apex(zone: Zone, serial: int, ttl: int) -> Node:
    # The zone names itself as its name server; clients of this server never need to follow it.
    return Node({SOA: RecordSet((soa_rdata(zone.name, serial, ttl),)), NS: RecordSet((name_wire(zone.name),))})
