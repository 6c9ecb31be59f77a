"""The forwarder's cache: upstream replies kept as bytes, keyed by (name, type, class, DO, CD, AD).

AD is in the key because it is sent upstream and changes the reply: a validating resolver sets AD
in its answer only for a query with AD or DO (RFC 6840 §5.7, §5.8), so an answer fetched for a
query with AD must not be served to one without, nor the other way round.

Entries age on the injected clock; an expired entry stays, for serving stale (RFC 8767) while no
upstream answers, until `max_stale` seconds past its expiry. Least recently used entries go first
when the cap is reached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from internal_dns.relay import UpstreamReply
from internal_dns.wire import AD, CD, Query

CacheKey = tuple[tuple[str, ...], int, int, bool, bool, bool]


def cache_key(q: Query) -> CacheKey:
    """Also the key of a question in flight: what makes two queries' upstream queries differ."""
    return (q.labels, q.qtype, q.qclass, q.edns is not None and q.edns.do, bool(q.flags & CD), bool(q.flags & AD))


@dataclass(slots=True)
class Entry:
    reply: UpstreamReply
    stored_at: float
    ttl: int

    def age(self, now: float) -> int:
        return int(now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return now - self.stored_at < self.ttl


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    stale: int = 0
    inserts: int = 0


class ReplyCache:
    def __init__(self, max_entries: int, max_ttl: int, max_stale: float):
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_stale = max_stale
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: CacheKey, now: float) -> Entry | None:
        """A live entry (counted as a hit), or None (a miss)."""
        entry = self._entries.get(key)
        if entry is not None and entry.fresh(now):
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry
        self.stats.misses += 1
        return None

    def stale(self, key: CacheKey, now: float) -> Entry | None:
        """An expired entry still within `max_stale`, for when no upstream answers."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry.stored_at - entry.ttl > self.max_stale:
            del self._entries[key]
            return None
        self.stats.stale += 1
        return entry

    def put(self, key: CacheKey, reply: UpstreamReply, now: float) -> None:
        ttl = reply.cache_ttl()
        if ttl is None or ttl <= 0:
            return
        self._entries[key] = Entry(reply, now, min(ttl, self.max_ttl))
        self._entries.move_to_end(key)
        self.stats.inserts += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
