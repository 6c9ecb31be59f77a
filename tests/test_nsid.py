"""SPEC §6: NSID (RFC 5001): a query asking for it gets the server's id (`server_id`), in every
reply this server makes — authoritative, reverse, refused, forwarded — and one that does not ask
gets none, whatever the packet cache holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import dns.edns
import dns.reversename

from tests.conftest import RunningServer, on_reactor
from tests.dnsclient import make_query
from tests.fake_upstream import FakeUpstream

StartServer = Callable[..., RunningServer]
ID = b"test-server"  # the tests' config


def test_an_authoritative_answer_carries_the_id_only_when_asked(server: RunningServer) -> None:
    for _ in range(2):  # the second of each from the packet cache, where it applies
        assert server.ask("my-app.internal").nsid() is None
        asked = server.ask("my-app.internal", nsid=True)
        assert asked.nsid() == ID and len(asked.addresses()) == 3
        assert server.ask("my-app.internal", nsid=True, tcp=True).nsid() == ID
    for name, rdtype in (("no-such-app.internal", "AAAA"), ("cron.internal", "AAAA"), ("_http._tcp.api.internal", "SRV")):
        reply = server.ask(name, rdtype, nsid=True)
        assert reply.nsid() == ID, name
        assert [o.otype for o in reply.msg.options] == [dns.edns.NSID]  # one option, no more
    reverse = dns.reversename.from_address("fdaa:0:18:a7b:7d:f066:b83b:2").to_text()
    assert server.ask(reverse, "PTR", nsid=True).nsid() == ID


def test_refusals_and_errors_carry_it_too(server: RunningServer) -> None:
    assert server.ask("internal", "AXFR", nsid=True, tcp=True).nsid() == ID
    assert server.ask("version.bind", "TXT", rdclass="CH", nsid=True).nsid() == ID
    chaos = server.ask("id.server", "TXT", rdclass="CH", nsid=True)
    assert chaos.nsid() == ID and chaos.txt() == [ID.decode()]
    refused = server.ask("example.com", "A", nsid=True)  # forwarding off in the tests' config
    assert refused.rcode_text == "REFUSED" and refused.nsid() == ID
    # without EDNS there is no OPT record to carry it
    assert server.send(make_query("my-app.internal", edns=False)).msg.edns < 0


def test_a_forwarded_answer_carries_this_servers_id_not_the_upstreams(start_server: StartServer) -> None:
    upstream = FakeUpstream()  # every EDNS reply of it carries its own NSID, "fake-upstream"
    try:
        server = start_server(upstreams=[upstream.address], forward={"enabled": True})
        for _ in range(2):  # the first relayed, the second from the cache
            asked = server.ask("www.example.test", "A", nsid=True)
            assert asked.rcode_text == "NOERROR" and asked.nsid() == ID
            assert [o.otype for o in asked.msg.options] == [dns.edns.NSID]
            relayed = server.ask("www.example.test", "A")
            assert relayed.nsid() == b"fake-upstream"  # unasked, the upstream's OPT is relayed as it was
        assert server.ask("no-such.example.test", "A", nsid=True, tcp=True).nsid() == ID
    finally:
        upstream.close()


def test_the_id_follows_a_reconfiguration(start_server: StartServer) -> None:
    """`server_id` is one of the keys SIGHUP applies while serving (tests/test_signals.py sends
    the signal; here the service is handed the new config as the reload does)."""
    upstream = FakeUpstream()
    try:
        server = start_server(server_id="first-id", upstreams=[upstream.address], forward={"enabled": True})
        assert server.ask("my-app.internal", nsid=True).nsid() == b"first-id"
        assert server.ask("www.example.test", "A", nsid=True).nsid() == b"first-id"
        applied = on_reactor(
            server.reactor, server.service.reconfigure, dataclasses.replace(server.config, server_id="second-id")
        )
        assert applied == {"server_id"}
        assert server.ask("my-app.internal", nsid=True).nsid() == b"second-id"
        assert server.ask("www.example.test", "A", nsid=True).nsid() == b"second-id"
    finally:
        upstream.close()
