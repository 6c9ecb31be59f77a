"""Zone `flycast` (SPEC §4): `<app>.flycast` → the app's Flycast addresses on the view's network."""

from __future__ import annotations

from internal_dns.authority.views import View
from internal_dns.records import AAAA, Node, aaaa
from internal_dns.registry.model import Snapshot


def lookup(snapshot: Snapshot, view: View, labels: tuple[str, ...], origin: str) -> Node | None:
    if len(labels) != 1:
        return None
    addresses = snapshot.networks[view.network].flycast.get(labels[0])
    if addresses is None:  # neither the view's app nor one with an address on its network
        return None
    return Node({AAAA: aaaa(addresses)})
