"""DNS over UDP and TCP: sockets read by the reactor, each query handed to a `respond` callable.

Owns framing, destinations on wildcard listeners, deadlines, caps, backpressure and draining.
Its settings are its own (`settings`); it imports nothing of `config` and knows nothing of answers:
the service hands it the dispatcher's `respond` (`handoff`).
"""
