"""The forwarder's cache: upstream replies kept as bytes, keyed by (name, type, class, DO, CD, AD).

AD is in the key because it is sent upstream and changes the reply: a validating resolver sets AD
in its answer only for a query with AD or DO (RFC 6840 §5.7, §5.8), so an answer fetched for a
query with AD must not be served to one without, nor the other way round.

Entries age on the injected clock; an expired entry stays, for serving stale (RFC 8767) while no
upstream answers, until `max_stale` seconds past its expiry. The store is bounded by entries and
by bytes, least recently used out first (lru.py); each entry is a tuple of numbers and the
reply's bytes, out of the collector's sight, and the reply is indexed again when it is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from internal_dns.forward.relay import UpstreamReply, parse_reply
from internal_dns.lru import LruStore, entry_size
from internal_dns.wire import AD, CD, Query

CacheKey = bytes
_DO, _CD, _AD = 1, 2, 4
_STORED, _TTL, _WIRE = 1, 2, 3  # an entry: (size, stored at, TTL, the reply's bytes)


def cache_key(q: Query) -> CacheKey:
    """Also the key of a question in flight: what makes two queries' upstream queries differ.

    The question's bytes with the name lower-cased (its type and class are numbers), and a byte
    of the DO, CD and AD bits.
    """
    name_end = q.question_end - 4
    bits = (_DO if q.edns is not None and q.edns.do else 0) | (_CD if q.flags & CD else 0) | (_AD if q.flags & AD else 0)
    return q.data[12:name_end].lower() + q.data[name_end : q.question_end] + bytes((bits,))


@dataclass(slots=True)
class Entry:
    reply: UpstreamReply
    stored_at: float
    ttl: int

    def age(self, now: float) -> int:
        return int(now - self.stored_at)


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0


class ReplyCache:
    def __init__(self, max_entries: int, max_bytes: int, max_ttl: int, max_stale: float):
        self.max_ttl = max_ttl
        self.max_stale = max_stale
        self.store = LruStore(max_entries, max_bytes)
        self.stats = CacheStats()

    def collect(self) -> Iterator[Metric]:
        st = self.stats
        yield CounterMetricFamily("internal_dns_cache_hits", "Forwarded questions answered from the cache.", value=st.hits)
        yield CounterMetricFamily("internal_dns_cache_misses", "Forwarded questions not in the cache.", value=st.misses)
        yield CounterMetricFamily(
            "internal_dns_cache_evictions", "Cache entries dropped for the size caps (entries, bytes).", value=self.evictions
        )
        yield CounterMetricFamily(
            "internal_dns_cache_stale", "Stale answers served while upstreams failed (RFC 8767).", value=st.stale
        )
        yield GaugeMetricFamily("internal_dns_cache_entries", "Answers in the cache.", value=len(self))
        yield GaugeMetricFamily(
            "internal_dns_cache_bytes", "Bytes the cache holds, as counted against cache.max_bytes.", value=self.store.bytes
        )

    def __len__(self) -> int:
        return len(self.store)

    @property
    def evictions(self) -> int:
        return self.store.evictions

    def fresh(self, key: CacheKey, now: float) -> Entry | None:
        """A live entry (counted as a hit), or None (a miss)."""
        value = self.store.peek(key)
        if value is not None and now - value[_STORED] < value[_TTL]:
            self.store.get(key)  # now the most recently used
            self.stats.hits += 1
            return Entry(parse_reply(value[_WIRE]), value[_STORED], value[_TTL])
        self.stats.misses += 1
        return None

    def stale(self, key: CacheKey, now: float) -> Entry | None:
        """An expired entry still within `max_stale`, for when no upstream answers."""
        value = self.store.peek(key)
        if value is None:
            return None
        if now - value[_STORED] - value[_TTL] > self.max_stale:
            self.store.pop(key)
            return None
        self.stats.stale += 1
        return Entry(parse_reply(value[_WIRE]), value[_STORED], value[_TTL])

    def put(self, key: CacheKey, reply: UpstreamReply, now: float) -> None:
        ttl = reply.cache_ttl()
        if ttl is None or ttl <= 0:
            return
        self.store.put(key, (entry_size(key, reply.wire), now, min(ttl, self.max_ttl), reply.wire))
