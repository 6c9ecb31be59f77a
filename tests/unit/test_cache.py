"""cache.py: the forwarder's reply cache: keys by (name, type, class, DO, CD, AD), fresh entries on the
injected clock, RFC 2308 negative TTLs, `max_ttl`, stale entries within `max_stale` (RFC 8767)."""

from __future__ import annotations

from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from internal_dns.forward.cache import ReplyCache, cache_key
from internal_dns.forward.relay import UpstreamReply, parse_reply
from internal_dns.wire import Query, parse_query


def q(name: str = "www.example.com", rdtype: str = "A", flags: int = dns.flags.RD, **kwargs: Any) -> Query:
    msg = dns.message.make_query(name, rdtype, **kwargs)
    msg.flags = flags
    query = parse_query(msg.to_wire())
    assert query is not None
    return query


def reply(
    ttl: int = 300, rcode: int = dns.rcode.NOERROR, soa: tuple[int, int] | None = None, name: str = "www.example.com"
) -> UpstreamReply:
    msg = dns.message.make_response(dns.message.make_query(name, "A"))
    msg.set_rcode(dns.rcode.Rcode(rcode))
    if rcode == dns.rcode.NOERROR and soa is None:
        msg.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", "192.0.2.1"))
    if soa is not None:
        soa_ttl, minimum = soa
        text = f"ns.example.com. admin.example.com. 1 7200 900 1209600 {minimum}"
        msg.authority.append(dns.rrset.from_text("example.com.", soa_ttl, "IN", "SOA", text))
    return parse_reply(msg.to_wire())


def cache(max_entries: int = 100, max_bytes: int = 1 << 20, max_ttl: int = 86400, max_stale: float = 60.0) -> ReplyCache:
    return ReplyCache(max_entries, max_bytes, max_ttl, max_stale)


# --- keys -----------------------------------------------------------------------------------------------


def test_the_key_ignores_the_id_and_the_names_case() -> None:
    a = q("WWW.Example.COM")
    b = q("www.example.com")
    assert cache_key(a) == cache_key(b)
    assert cache_key(b) == b.data[12 : b.question_end] + b"\x00"


def test_the_key_tells_apart_type_class_do_cd_and_ad() -> None:
    keys = {
        cache_key(q()),
        cache_key(q(rdtype="AAAA")),
        cache_key(q(rdclass="CH")),
        cache_key(q(use_edns=0, want_dnssec=True)),
        cache_key(q(flags=dns.flags.RD | dns.flags.CD)),
        cache_key(q(flags=dns.flags.RD | dns.flags.AD)),
        cache_key(q(flags=dns.flags.RD | dns.flags.AD | dns.flags.CD, use_edns=0, want_dnssec=True)),
    }
    assert len(keys) == 7


def test_the_key_ignores_what_does_not_go_upstream() -> None:
    base = cache_key(q())
    assert cache_key(q(flags=0)) == base  # RD: the server always asks with RD
    assert cache_key(q(use_edns=0)) == base  # EDNS without DO
    assert cache_key(q(use_edns=0, payload=4096)) == base


# --- fresh ----------------------------------------------------------------------------------------------


def test_a_fresh_entry_until_its_ttl() -> None:
    c = cache()
    key = cache_key(q())
    stored = reply(ttl=30)
    c.put(key, stored, now=100.0)
    entry = c.fresh(key, 100.0)
    assert entry is not None and entry.ttl == 30 and entry.stored_at == 100.0 and entry.age(112.9) == 12
    assert entry.reply == stored  # indexed again from the stored bytes
    assert c.fresh(key, 129.99) is not None
    assert c.fresh(key, 130.0) is None
    assert (c.stats.hits, c.stats.misses) == (2, 1)
    assert len(c) == 1  # an expired entry stays, for serving stale


def test_a_miss_is_counted() -> None:
    c = cache()
    assert c.fresh(cache_key(q()), 0.0) is None
    assert c.stats.misses == 1 and c.stats.hits == 0


def test_max_ttl_caps_the_entry() -> None:
    c = cache(max_ttl=10)
    key = cache_key(q())
    c.put(key, reply(ttl=3600), now=0.0)
    assert c.fresh(key, 9.5) is not None and c.fresh(key, 10.0) is None


def test_negative_answers_last_as_rfc_2308_says() -> None:
    c = cache()
    nx, nodata = cache_key(q("nx.example.com")), cache_key(q("nodata.example.com"))
    c.put(nx, reply(rcode=dns.rcode.NXDOMAIN, soa=(900, 60)), now=0.0)
    c.put(nodata, reply(soa=(20, 60)), now=0.0)
    assert c.fresh(nx, 59.0) is not None and c.fresh(nx, 60.0) is None
    assert c.fresh(nodata, 19.0) is not None and c.fresh(nodata, 20.0) is None


def test_what_must_not_be_cached_is_not() -> None:
    c = cache()
    for i, r in enumerate(
        [
            reply(ttl=0),
            reply(rcode=dns.rcode.NXDOMAIN),  # no SOA
            reply(rcode=dns.rcode.SERVFAIL),
            reply(rcode=dns.rcode.REFUSED),
            reply(rcode=dns.rcode.NXDOMAIN, soa=(0, 60)),
        ]
    ):
        c.put(bytes((i,)), r, now=0.0)
    assert len(c) == 0


def test_a_put_replaces_the_entry() -> None:
    c = cache()
    key = cache_key(q())
    c.put(key, reply(ttl=5), now=0.0)
    c.put(key, reply(ttl=50), now=10.0)
    entry = c.fresh(key, 40.0)
    assert entry is not None and entry.ttl == 50 and len(c) == 1


# --- stale -------------------------------------------------------------------------------------------


def test_stale_within_max_stale_then_gone() -> None:
    c = cache(max_stale=60.0)
    key = cache_key(q())
    c.put(key, reply(ttl=30), now=0.0)
    entry = c.stale(key, 90.0)  # 60 s past its expiry
    assert entry is not None and entry.ttl == 30 and c.stats.stale == 1
    assert c.stale(key, 90.5) is None
    assert len(c) == 0  # dropped once too old
    assert c.fresh(key, 0.0) is None
    assert c.stale(key, 0.0) is None


def test_stale_of_an_unknown_key() -> None:
    c = cache()
    assert c.stale(b"nothing", 0.0) is None and c.stats.stale == 0


# --- bounds ------------------------------------------------------------------------------------------------


def test_the_least_recently_used_entry_goes_first() -> None:
    c = cache(max_entries=2)
    a, b, d = cache_key(q("a.example")), cache_key(q("b.example")), cache_key(q("d.example"))
    c.put(a, reply(name="a.example"), now=0.0)
    c.put(b, reply(name="b.example"), now=0.0)
    assert c.fresh(a, 1.0) is not None  # a hit makes a the most recently used
    c.put(d, reply(name="d.example"), now=1.0)
    assert c.fresh(b, 1.0) is None and c.fresh(a, 1.0) is not None and c.fresh(d, 1.0) is not None
    assert c.evictions == 1 and len(c) == 2


def test_a_reply_too_big_for_the_bytes_bound_is_not_kept() -> None:
    c = cache(max_bytes=16 * 350)
    c.put(cache_key(q()), reply(), now=0.0)
    assert len(c) == 0
