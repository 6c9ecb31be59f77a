"""The forwarder's cache (SPEC §7): keyed by (name, type, class, DO, CD), TTLs that age on the
server's clock, negative answers per RFC 2308, a size cap, stale answers per RFC 8767.

What the upstream receives shows what the cache did: a hit sends nothing upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dns.flags
import pytest

from tests.conftest import RunningServer, on_reactor
from tests.dnsclient import Reply, make_query
from tests.fake_upstream import FakeUpstream, Pending

StartServer = Callable[..., RunningServer]


def forwarding(
    start_server: StartServer, fake: FakeUpstream, cache: dict[str, Any] | None = None, **forward: Any
) -> RunningServer:
    overrides: dict[str, Any] = {"upstreams": [fake.address], "forward": {"enabled": True, **forward}}
    if cache is not None:
        overrides["cache"] = cache
    return start_server(**overrides)


@pytest.fixture
def fwd(start_server: StartServer, fake: FakeUpstream) -> RunningServer:
    return forwarding(start_server, fake)


def ttls(reply: Reply) -> list[int]:
    return [rrset.ttl for section in (reply.msg.answer, reply.msg.authority, reply.msg.additional) for rrset in section]


def asked(fake: FakeUpstream, name: str) -> int:
    return len(fake.queries(name))


def test_hit_sends_nothing_upstream(fwd: RunningServer, fake: FakeUpstream) -> None:
    first = fwd.ask("www.example.test", "A")
    second = fwd.ask("WWW.Example.Test", "A")  # the key is case-blind; the reply keeps this case
    assert first.addresses("A") == second.addresses("A") == ["192.0.2.10"]
    assert second.msg.answer[0].name.to_text() == "WWW.Example.Test."
    assert ttls(second) == [300]
    assert asked(fake, "www.example.test.") == 1


def test_hit_keeps_each_clients_id_flags_and_edns(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("www.example.test", "A", payload=4096)
    query = make_query("www.example.test", "A", edns=False)
    query.id = 4321
    query.flags = 0  # RD off
    reply = fwd.send(query)
    assert reply.msg.id == 4321 and reply.msg.edns == -1
    assert not reply.flag("RD") and reply.flag("RA") and not reply.flag("AA")
    assert asked(fake, "www.example.test.") == 1


def test_ttl_decreases_as_the_entry_ages(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("mail.example.test", "MX")
    fwd.advance(100)
    reply = fwd.ask("mail.example.test", "MX")
    assert ttls(reply) == [200, 200]  # the MX and its glue
    fwd.advance(99.5)
    assert ttls(fwd.ask("mail.example.test", "MX")) == [101, 101]  # whole seconds elapsed: 199
    assert asked(fake, "mail.example.test.") == 1


def test_expired_entry_fetched_again(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("short.example.test", "A")
    fwd.advance(1)
    assert ttls(fwd.ask("short.example.test", "A")) == [1]
    assert asked(fake, "short.example.test.") == 1
    fwd.advance(1)  # TTL 2 reached
    fresh = fwd.ask("short.example.test", "A")
    assert ttls(fresh) == [2] and fresh.addresses("A") == ["192.0.2.20"]
    assert asked(fake, "short.example.test.") == 2


def test_negative_answer_cached_for_the_soa_minimum(fwd: RunningServer, fake: FakeUpstream) -> None:
    # SOA TTL 300, minimum 60: cached for min(300, 60) = 60 s (RFC 2308 §5).
    first = fwd.ask("nope.example.test", "A")
    assert first.rcode_text == "NXDOMAIN" and ttls(first) == [60]
    fwd.advance(59)
    cached = fwd.ask("nope.example.test", "A")
    assert cached.rcode_text == "NXDOMAIN" and ttls(cached) == [1]
    assert cached.soa() is not None and cached.soa().minimum == 60
    assert asked(fake, "nope.example.test.") == 1
    fwd.advance(1)
    assert fwd.ask("nope.example.test", "A").rcode_text == "NXDOMAIN"
    assert asked(fake, "nope.example.test.") == 2


def test_nodata_cached_like_nxdomain(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("www.example.test", "TXT")
    fwd.advance(30)
    reply = fwd.ask("www.example.test", "TXT")
    assert reply.rcode_text == "NOERROR" and reply.msg.answer == [] and ttls(reply) == [30]
    fwd.advance(30)
    fwd.ask("www.example.test", "TXT")
    assert asked(fake, "www.example.test.") == 2


def test_negative_ttl_takes_the_soa_ttl_when_smaller(fwd: RunningServer, fake: FakeUpstream) -> None:
    # Names outside example.test: NXDOMAIN with the root's SOA, TTL 900 and minimum 86400.
    first = fwd.ask("nowhere.invalid", "A")
    assert first.rcode_text == "NXDOMAIN" and ttls(first) == [900]
    fwd.advance(899)
    assert ttls(fwd.ask("nowhere.invalid", "A")) == [1]
    fwd.advance(1)
    fwd.ask("nowhere.invalid", "A")
    assert asked(fake, "nowhere.invalid.") == 2


def test_keyed_by_do_and_cd(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("www.example.test", "A")
    signed = fwd.ask("www.example.test", "A", want_dnssec=True)
    assert [rrset.rdtype for rrset in signed.msg.answer] == [1, 46]  # A and RRSIG: not the unsigned entry
    unchecked = make_query("www.example.test", "A")
    unchecked.flags |= dns.flags.CD
    assert fwd.send(unchecked).flag("CD")
    sent = fake.queries("www.example.test.")
    assert [(q.do, bool(q.flags & dns.flags.CD)) for q in sent] == [(False, False), (True, False), (False, True)]
    # Each is now cached under its own key.
    assert [rrset.rdtype for rrset in fwd.ask("www.example.test", "A", want_dnssec=True).msg.answer] == [1, 46]
    assert [rrset.rdtype for rrset in fwd.ask("www.example.test", "A").msg.answer] == [1]
    assert fwd.send(unchecked).flag("CD")
    assert asked(fake, "www.example.test.") == 3


def test_keyed_by_ad(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.validating = True  # AD in a reply depends on AD in the query (RFC 6840 §5.7)
    assert not fwd.ask("www.example.test", "A").flag("AD")
    authentic = make_query("www.example.test", "A")
    authentic.flags |= dns.flags.AD
    assert fwd.send(authentic).flag("AD")  # not the entry fetched without AD
    assert fwd.send(authentic).flag("AD")  # its own entry
    assert not fwd.ask("www.example.test", "A").flag("AD")
    sent = fake.queries("www.example.test.")
    assert [bool(r.flags & dns.flags.AD) for r in sent] == [False, True]


def test_keyed_by_type_and_class(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("www.example.test", "A")
    assert fwd.ask("www.example.test", "AAAA").addresses("AAAA") == ["2001:db8::10"]
    assert asked(fake, "www.example.test.") == 2
    # Another class is never forwarded, so never cached either.
    assert fwd.ask("www.example.test", "A", rdclass="HS").rcode_text == "REFUSED"


def test_shared_between_udp_and_tcp(fwd: RunningServer, fake: FakeUpstream) -> None:
    fwd.ask("www.example.test", "A", tcp=True)
    assert fwd.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert asked(fake, "www.example.test.") == 1


def test_size_cap_evicts_the_least_recently_used(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"max_entries": 2})
    server.ask("www.example.test", "A")
    server.ask("mail.example.test", "MX")
    server.ask("www.example.test", "A")  # a hit: www is now the most recently used
    server.ask("www.example.test", "AAAA")  # a third entry: mail goes
    assert asked(fake, "www.example.test.") == 2 and asked(fake, "mail.example.test.") == 1
    server.ask("www.example.test", "A")
    assert asked(fake, "www.example.test.") == 2  # still cached
    server.ask("mail.example.test", "MX")
    assert asked(fake, "mail.example.test.") == 2  # evicted, asked again
    assert on_reactor(server.reactor, lambda: len(server.service.forwarder.cache)) == 2


def test_max_ttl_caps_how_long_and_what_is_shown(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"max_ttl": 100})
    assert ttls(server.ask("www.example.test", "A")) == [100]
    server.advance(40)
    assert ttls(server.ask("www.example.test", "A")) == [60]
    server.advance(60)
    assert ttls(server.ask("www.example.test", "A")) == [100]
    assert asked(fake, "www.example.test.") == 2


def test_cache_off(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"enabled": False})
    for _ in range(2):
        assert ttls(server.ask("www.example.test", "A")) == [300]
        assert server.ask("nope.example.test", "A").rcode_text == "NXDOMAIN"
    assert asked(fake, "www.example.test.") == 2 and asked(fake, "nope.example.test.") == 2
    assert server.service.forwarder.cache is None


def test_failures_and_truncations_not_cached(fwd: RunningServer, fake: FakeUpstream) -> None:
    fake.mode = "servfail"
    assert fwd.ask("www.example.test", "A").rcode_text == "SERVFAIL"
    fake.mode = "answer"
    assert fwd.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert asked(fake, "www.example.test.") == 2


# --- stale answers (RFC 8767) --------------------------------------------------------------------


def expire_short_then_silence(server: RunningServer, fake: FakeUpstream) -> None:
    assert server.ask("short.example.test", "A").addresses("A") == ["192.0.2.20"]
    server.advance(3)  # TTL 2: expired
    fake.mode = "silent"


def test_stale_answer_when_every_upstream_fails(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.5, fail_threshold=3)
    expire_short_then_silence(server, fake)
    pending = Pending.ask(server, "short.example.test", "A")
    fake.wait_for(2)
    server.advance(1.5)
    stale = pending.reply()
    assert stale.rcode_text == "NOERROR" and stale.addresses("A") == ["192.0.2.20"]
    assert ttls(stale) == [30]  # stale_ttl, the RFC 8767 default
    assert stale.flag("RA") and not stale.flag("AA")


def test_stale_answer_at_once_while_all_upstreams_are_down(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"stale_ttl": 7}, timeout=1.0, fail_threshold=1, probe_interval=60.0)
    server.ask("www.example.test", "A")
    expire_short_then_silence(server, fake)
    pending = Pending.ask(server, "other.example.test", "A")
    fake.wait_for(3)
    server.advance(1.0)
    assert pending.reply().rcode_text == "SERVFAIL"  # nothing cached for it, stale or not
    fake.wait_for(4)  # the health check the timeout set off
    server.advance(1.0)  # it fails too: the only upstream is down
    assert not on_reactor(server.reactor, server.service.forwarder.healthy)
    stale = server.ask("short.example.test", "A")  # no clock move: not even an attempt
    assert stale.addresses("A") == ["192.0.2.20"] and ttls(stale) == [7]
    assert len(fake.received) == 4
    fresh = server.ask("www.example.test", "A")  # a live entry is served as it is
    assert ttls(fresh) == [295]


def test_stale_negative_answer(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.0)
    server.ask("nope.example.test", "A")
    server.advance(61)
    fake.mode = "silent"
    pending = Pending.ask(server, "nope.example.test", "A")
    fake.wait_for(2)
    server.advance(1.0)
    stale = pending.reply()
    assert stale.rcode_text == "NXDOMAIN" and ttls(stale) == [30]


def test_serve_stale_off_gives_servfail(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"serve_stale": False}, timeout=1.5)
    expire_short_then_silence(server, fake)
    pending = Pending.ask(server, "short.example.test", "A")
    fake.wait_for(2)
    server.advance(1.5)
    assert pending.reply().rcode_text == "SERVFAIL"


def test_too_stale_is_not_served(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"max_stale": 100}, timeout=1.0)
    expire_short_then_silence(server, fake)  # expired at t = 2, now t = 3
    server.advance(100)  # 101 s past expiry
    pending = Pending.ask(server, "short.example.test", "A")
    fake.wait_for(2)
    server.advance(1.0)
    assert pending.reply().rcode_text == "SERVFAIL"


def test_fresh_answer_replaces_the_stale_one(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.0)
    expire_short_then_silence(server, fake)
    fake.mode = "answer"
    reply = server.ask("short.example.test", "A")
    assert ttls(reply) == [2]  # the upstream answered: never the stale copy
    assert len(fake.queries("short.example.test.")) == 2
