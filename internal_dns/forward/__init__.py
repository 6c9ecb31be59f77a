"""The forwarder: every name outside the zones, asked of the upstreams and cached.

Owns the forwarder (`forwarder`: in-flight sharing, upstream order and health), one exchange with
one upstream (`upstream`), the byte surgery on upstream replies (`relay`) and the reply cache
(`cache`), and its own settings (`settings`). May import the DNS vocabulary; nothing of the
authority, the transports, operations, `config` or the service.
"""
