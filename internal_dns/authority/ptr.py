"""Reverse names of a view's own addresses (SPEC §3, Reverse): PTR to the name each answers by.

A machine (any state, dns:true) is named `<id>.vm.<app>.<fly zone>`, or `<app>.<railway zone>`
where only a Railway zone is served; a peer `<peer>._peer.<fly zone>`; a Flycast address
`<app>.<flycast zone>`. A name above whole addresses exists (NODATA) while one of the view's named
addresses lies below it, so resolvers that walk down a name (RFC 9156) find them; everything else
in the block does not exist, as another network's addresses do not.
"""

from __future__ import annotations

from collections.abc import Mapping

from internal_dns.authority.reverse import octet
from internal_dns.records import EMPTY_NON_TERMINAL, PTR, Node, RecordSet, name_wire
from internal_dns.registry.model import Holder, Machine, NetworkIndex, Peer

_HEX = frozenset("0123456789abcdef")


class ReverseNames:
    def __init__(self, zones_by_scheme: Mapping[str, str]):
        """`zones_by_scheme`: scheme → the zone serving it (the first configured, per scheme)."""
        self.fly = zones_by_scheme.get("fly")
        self.railway = zones_by_scheme.get("railway")
        self.flycast = zones_by_scheme.get("flycast")

    def target(self, holder: Holder) -> str | None:
        if isinstance(holder, Machine):
            if self.fly is not None:
                return f"{holder.id}.vm.{holder.app}.{self.fly}"
            return None if self.railway is None else f"{holder.app}.{self.railway}"
        if isinstance(holder, Peer):
            return None if self.fly is None else f"{holder.name}._peer.{self.fly}"
        return None if self.flycast is None else f"{holder}.{self.flycast}"

    def lookup(self, net: NetworkIndex, labels: tuple[str, ...]) -> Node | None:
        """The node of a reverse name (a whole `ip6.arpa`/`in-addr.arpa` name, lower case) in
        the view of `net`; None where nothing of the view's is named."""
        bits, size = (4, 16) if labels[-2] == "ip6" else (8, 4)
        value = 0
        digits = labels[-3::-1]  # most significant first
        if len(digits) * bits > size * 8:
            return None
        for digit in digits:
            if bits == 4 and digit not in _HEX or bits == 8 and not octet(digit):
                return None
            value = (value << bits) | int(digit, 16 if bits == 4 else 10)
        free = size * 8 - len(digits) * bits
        table = net.named()
        if free == 0:
            holder = table.get(value.to_bytes(size, "big"))
            target = None if holder is None else self.target(holder)
            return None if target is None else Node({PTR: RecordSet((name_wire(target),))})
        low, high = value << free, (value << free) | ((1 << free) - 1)
        below = table.within(low.to_bytes(size, "big"), high.to_bytes(size, "big"))
        return EMPTY_NON_TERMINAL if any(self.target(h) is not None for h in below) else None
