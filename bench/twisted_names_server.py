"""The baseline: a plain Twisted Names server, as one would write it with Twisted's own DNS server.

An `IResolver` authority over a dict (name → type → records) behind `DNSServerFactory`, on UDP and
TCP; with `--upstream`, names outside the dict go to that resolver through Twisted's client and
`CacheResolver`. No views, no rotation, no EDNS handling beyond what Twisted Names does itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as installed
from twisted.names import cache, client, dns, error, server
from twisted.names.common import ResolverBase

TTL = 5


class DictAuthority(ResolverBase):
    def __init__(self, data: dict[str, dict[str, list[Any]]], zones: tuple[bytes, ...]):
        super().__init__()
        self.zones = zones
        self.records: dict[tuple[bytes, int], list[dns.RRHeader]] = {}
        self.names: set[bytes] = set()
        for name, types in data.items():
            owner = name.encode()
            self.names.add(owner)
            for rdtype, values in types.items():
                self.records[(owner, dns.REV_TYPES[rdtype])] = [
                    dns.RRHeader(owner, dns.REV_TYPES[rdtype], dns.IN, TTL, _payload(rdtype, v), auth=True) for v in values
                ]

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> defer.Deferred[Any]:
        key = name.lower()
        found = self.records.get((key, type))
        if found is not None:
            return defer.succeed((found, [], []))
        if key in self.names:
            return defer.succeed(([], [], []))
        if any(key == z or key.endswith(b"." + z) for z in self.zones):
            return defer.fail(error.AuthoritativeDomainError(name))
        return defer.fail(error.DomainError(name))  # not ours: the next resolver in the chain


def _payload(rdtype: str, value: Any) -> Any:
    if rdtype == "AAAA":
        return dns.Record_AAAA(value, TTL)
    if rdtype == "A":
        return dns.Record_A(value, TTL)
    return dns.Record_TXT(*(s.encode() for s in value), ttl=TTL)


def main() -> None:
    # To mypy twisted.internet.reactor is a module without attributes (the reactor object is put in
    # its place when installed), and the calls below span several reactor interfaces: Any, once.
    reactor: Any = installed
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--upstream", help="host:port to forward other names to, with a cache")
    args = parser.parse_args()
    authority = DictAuthority(json.loads(args.data.read_text()), (b"internal", b"flycast"))
    clients = []
    caches = []
    if args.upstream:
        host, port = args.upstream.rsplit(":", 1)
        caches.append(cache.CacheResolver())
        clients.append(client.Resolver(servers=[(host, int(port))]))
    factory = server.DNSServerFactory(authorities=[authority], caches=caches, clients=clients)
    factory.noisy = False
    protocol = dns.DNSDatagramProtocol(controller=factory)
    protocol.noisy = False
    reactor.listenUDP(args.port, protocol, interface="127.0.0.1")
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    print(f"twisted names baseline on 127.0.0.1:{args.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
