"""The authority: answers for the configured zones, from the registry's snapshot.

Owns the answer rules (`answer`), the platforms' name schemes (`schemes/`), who is asking
(`views`), `nearest` (`geo`), the private reverse zones (`reverse`) and the finished replies kept
as bytes (`packetcache`), and its own settings (`settings`). May import the DNS vocabulary
(`wire`, `records`, `counting`, `lru`), `registry` and `transport.settings` (a listener's network
and region); nothing of the forwarder, the transports' sockets, operations, `config` or the service.
"""
