"""Who is asking (SPEC §2): a query's source address and listener → the view it is answered in."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from internal_dns.authority.settings import ViewConfig
from internal_dns.registry.model import Snapshot
from internal_dns.transport.settings import ListenConfig

Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class View:
    network: str
    region: str | None  # the querier's region, for `nearest`; None when unknown


class PrefixTable:
    """Longest-prefix match over a handful of prefix lengths, one dict probe per length."""

    def __init__(self, entries: Iterable[tuple[IPv4Network | IPv6Network, str]]):
        by_len: dict[tuple[int, int], dict[int, str]] = {}
        for net, value in entries:
            bits = net.max_prefixlen - net.prefixlen
            table = by_len.setdefault((net.version, net.prefixlen), {})
            table.setdefault(int(net.network_address) >> bits, value)  # first entry wins a tie
        self._lengths = {
            v: [
                (plen, (32 if v == 4 else 128) - plen, by_len[(v, plen)])
                for (ver, plen) in sorted(by_len, key=lambda k: -k[1])
                if ver == v
            ]
            for v in (4, 6)
        }

    def lookup(self, ip: Address) -> str | None:
        value = int(ip)
        for _, shift, table in self._lengths[ip.version]:
            hit = table.get(value >> shift)
            if hit is not None:
                return hit
        return None


def parse_source(host: str) -> Address | None:
    """A transport's peer host string → address; v4-mapped IPv6 becomes IPv4."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ViewResolver:
    """Chooses views for one snapshot; rebuilt whenever a snapshot is swapped in."""

    def __init__(self, snapshot: Snapshot, views: Iterable[ViewConfig], server_region: str | None):
        self.snapshot = snapshot
        prefixes: list[tuple[IPv4Network | IPv6Network, str]] = []
        resolver_addresses: dict[Address, str] = {}
        for name, net in snapshot.defined.items():
            prefixes.append((net.prefix6, name))
            if net.prefix4 is not None:
                prefixes.append((net.prefix4, name))
            if net.dns6 is not None:
                resolver_addresses[net.dns6] = name
            if net.dns4 is not None:
                resolver_addresses[net.dns4] = name
        self._networks = PrefixTable(prefixes)
        # config views: most specific wins, so a /32 inside a /8 overrides it
        self._views_config = tuple(views)
        self._configured = PrefixTable((v.source, v.network) for v in self._views_config)
        self._resolver_addresses = resolver_addresses
        self.server_region = server_region
        # (listener, destination) → source → view. One View object per (network, region), shared
        # by all the sources that have it, so that remembering many sources adds no objects for
        # the collector.
        self._cache: dict[tuple[ListenConfig, str | None], dict[str, View | None]] = {}
        self._views: dict[tuple[str, str | None], View] = {}

    def following(self, snapshot: Snapshot) -> ViewResolver:
        """The resolver for the next snapshot: while the networks' definitions are the same
        object (catalog.snapshot hands them on while equal), their prefix tables are kept, and
        only what depends on machines (the querier's region) starts afresh."""
        if snapshot.defined is not self.snapshot.defined:
            return ViewResolver(snapshot, self._views_config, self.server_region)
        follower = copy.copy(self)
        follower.snapshot = snapshot
        follower._cache = {}
        follower._views = {}
        return follower

    def resolve(self, host: str, listener: ListenConfig, local: str | None = None) -> View | None:
        """The view of a query from `host` on `listener`; `local` is the address it was sent to
        when the listener is a wildcard one (None on a listener bound to one address)."""
        sources = self._cache.get((listener, local))
        if sources is None:
            if len(self._cache) > 65536:  # destinations come and go with networks; start afresh
                self._cache.clear()
            sources = self._cache[(listener, local)] = {}
        try:
            return sources[host]
        except KeyError:
            pass
        view = self._resolve(host, listener, local)
        if view is not None:
            view = self._views.setdefault((view.network, view.region), view)
        if len(sources) > 65536:  # sources are bounded by the network, but be safe
            sources.clear()
        sources[host] = view
        return view

    def _resolve(self, host: str, listener: ListenConfig, local: str | None) -> View | None:
        ip = parse_source(host)
        if ip is None:
            return None
        network = self._networks.lookup(ip) or self._configured.lookup(ip) or self.listener_network(listener, local)
        if network is None or network not in self.snapshot.networks:
            return None
        region = self.snapshot.networks[network].region_of(ip.packed)  # the querier's own, if it is one of the network's
        return View(network, region or listener.region or self.server_region)

    def listener_network(self, listener: ListenConfig, local: str | None = None) -> str | None:
        """The network of a query no source claims: on a wildcard listener the one whose resolver
        address it was sent to, else the listener's own `network`; on a listener bound to one
        address its `network`, else the network whose resolver address that is."""
        if local is not None:
            ip = parse_source(local)
            found = self._resolver_addresses.get(ip) if ip is not None else None
            return found or listener.network
        if listener.network is not None:
            return listener.network
        ip = parse_source(listener.address)
        return self._resolver_addresses.get(ip) if ip is not None else None
