"""The authority: answers for the configured zones, from the registry's snapshot.

Owns the answer rules (`answer`), the platforms' name schemes (`schemes/`), who is asking
(`views`), `nearest` (`geo`), the private reverse zones (`reverse`) and the finished replies kept
as bytes (`packetcache`). May import the DNS vocabulary (`wire`, `records`, `counting`, `lru`),
`config` and `registry`; nothing of the forwarder, the transports, operations or the service.
"""
