"""Naming schemes: pure functions of (snapshot, view, labels below the zone, the zone's name)
→ Node or None.

None means the name does not exist in the view (NXDOMAIN); a Node lists the records it holds.
The zone's name is for names written in records (SRV targets).
"""

from __future__ import annotations

from collections.abc import Callable

from internal_dns.authority.schemes import fly, flycast, railway
from internal_dns.authority.views import View
from internal_dns.records import Node
from internal_dns.registry.model import Snapshot

Scheme = Callable[[Snapshot, View, tuple[str, ...], str], Node | None]

SCHEMES: dict[str, Scheme] = {"fly": fly.lookup, "flycast": flycast.lookup, "railway": railway.lookup}
