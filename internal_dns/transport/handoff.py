"""What a transport is handed by the service: the two callables that connect it to the answers."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

from internal_dns.transport.settings import ListenConfig

# (data, host, local address or None, listener, tcp, hosts) → the reply, a Deferred of it, or None
Respond = Callable[[bytes, str, "str | None", ListenConfig, bool, dict[str, bytes]], "bytes | Deferred[bytes] | None"]
# the destination address (None on a listener bound to one) → the packet cache's source → tag map
HostsFor = Callable[["str | None"], dict[str, bytes]]
