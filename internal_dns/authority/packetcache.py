"""The packet cache: authoritative replies rendered once, served as bytes (after PowerDNS's).

The reply to a question in a view is always the same but for the ID, the question's letter case,
the turn of a rotating address set and the SOA serial. So the cache keeps two kinds of entry, in
one store bounded by entries and bytes (lru.py), least recently used out first:

- a *rendering* of a question in a view, found by a canonical key (the RD and CD bits, the
  question with its name lower-cased, the OPT record's bytes, the transport): the reply's header
  and one body per turn of its rotating set; owner names in a body point into the question, so
  any spelling of the name can be put in front;
- an *exact* entry: one spelling of that question as a client sent it, found by the query's own
  bytes after the ID (`message[2:]`), holding whole replies but for the ID, one per turn. A query
  the server has seen before, byte for byte, costs one slice, one lookup and one concatenation:
  `reply()`, which both transports call before anything else. The forwarder's cached answers are
  kept here too, as exact entries that hold while their TTLs do.

Entries are flat tuples of bytes and numbers, which Python's collector stops tracking the first
time it looks at them, so a full cache costs a collection nothing. Keys start with a tag naming the
view (and, for exact entries, the transport): a reload that changes a network retires its views'
tags, and what was rendered under them is never found again and leaves with the least recently
used. A change to some machines only (a check flipping, a machine stopped) leaves the rest of the
network's index the very same objects, and retires less: each entry carries the *stamp* of its
scope — the app its name belongs to, or the network as a whole for the network-wide names — and
such a change moves the stamps of the apps whose index changed and of the network, so that what
those entries hold is rendered again when next asked while every other app's stays. Turns are
counted per network and question in a dict shared by every entry and the full path,
so a set rotates by one between successive answers whichever spelling or transport asks. A turn not
yet rendered is a miss, which the full path renders and keeps.

Only queries of the ordinary shape get in (one question, no compression, no records but at most a
bare OPT); everything else takes the full path.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from internal_dns.counting import QueryCounters
from internal_dns.lru import LruStore, entry_size
from internal_dns.records import SOA, Answer

_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_TAG = struct.Struct("!I")
_SERIAL_BYTES = struct.Struct("!I")
UDP, TCP, RENDERING = 0, 1, 2  # what a tag is for
MAX_TURNS = 64  # address sets larger than this are rendered per answer, not kept per turn
MAX_SOURCES = 65536  # sources remembered per listener and transport (a view over a wide CIDR)
MAX_TURN_COUNTERS = 65536  # names of old snapshots linger among the turn counters; start afresh

# An exact entry: (size, turn key, serial, where the serial sits in each reply or -1, valid until
# (forwarded answers; None for ours), counter index, histogram index, scope stamp (0: none), then
# the reply from byte 2 on for each turn (None: not made yet)).
_SERIAL, _SERIAL_AT, _UNTIL = 2, 3, 4
EXACT = 8  # where the replies start
# A rendering: (size, turn key, serial, where the serial sits in each body or -1, the reply's
# header, where the question ends, counter index, histogram index, scope stamp, then the body for
# each turn (or None)). The serial and where it sits are at the same places in both.
RENDERED = 9  # where the bodies start
_STAMP_BITS = 32  # a stamp is (scope index << 32) | that scope's generation


class Clock(Protocol):
    def seconds(self) -> float: ...


class HitCounter(Protocol):
    hits: int


@dataclass(frozen=True, slots=True)
class Rendered:
    """What the full path hands the cache for a question it has answered."""

    answer: Answer
    render: Callable[[int], bytes]  # turn → the whole reply
    turn_key: bytes | None  # the question's turn counter when its answer rotates
    cell: int  # counter index
    histogram: int  # histogram index
    stamp: int = 0  # the scope's stamp when it was answered (PacketCache.stamp); 0: kept until its tag retires


def canonical_key(data: bytes, tcp: bool) -> tuple[bytes, int] | None:
    """(key, end of the question) for a query of the ordinary shape, or None."""
    if len(data) < 17 or data[2] & 0xF8 or data[4:10] != _COUNTS or data[10]:
        return None
    # The question name, walked here rather than by wire.skip_name(data, 12, pointers=False): that
    # call made this function some 150-200 ns (about 20%) slower under timeit on a 33- and a
    # 44-byte query, and every query answered from a rendering, or kept as a forwarded answer,
    # runs it. The rules are the walker's (labels up to 63 bytes, no compression, a name running
    # past the end refused), a refusal being None here; tests/unit/test_packetcache.py checks
    # that the two give the same answers.
    pos = 12
    try:
        length = data[pos]
        while length:
            if length > 63:
                return None
            pos += length + 1
            length = data[pos]
    except IndexError:
        return None
    end = pos + 5
    arcount = data[11]
    if arcount == 0:
        if len(data) != end:
            return None
    elif arcount != 1 or len(data) != end + 11 or data[end : end + 3] != _OPT_HEAD or data[end + 9 : end + 11] != b"\x00\x00":
        return None  # options, several records, trailing bytes: the full path decides
    bits = (data[2] & 0x01) | (data[3] & 0x10) | (0x80 if tcp else 0)
    # Only the name is lower-cased: type and class bytes are numbers.
    return bytes((bits,)) + data[12:pos].lower() + data[pos:], end


def turn_key(network: str, data: bytes, question_end: int) -> bytes:
    """The turn counter of a question in a network: its name lower-cased, and its type."""
    return network.encode() + b"\x00" + data[12 : question_end - 4].lower() + data[question_end - 4 : question_end - 2]


class PacketCache:
    def __init__(self, counters: QueryCounters, clock: Clock, max_entries: int, max_bytes: int):
        self.counters = counters
        self.clock = clock
        self.store = LruStore(max_entries, max_bytes, on_evict=self._evicted)
        self.serial = 0
        self.turns: dict[bytes, int] = {}
        self.sources: dict[
            tuple[object, bool, str | None], dict[str, bytes]
        ] = {}  # (listener, tcp, destination) → host → exact tag
        self.forward_stats: HitCounter | None = None  # the forwarder's cache: a hit here is a hit there
        self._tags: dict[tuple[str, str | None, int], bytes] = {}  # (network, region, 0 udp / 1 tcp / 2 rendering) → tag
        self._live: dict[bytes, int] = {}  # tag → entries under it
        self._next_tag = 0
        self.retired = 0  # entries under retired tags, still in the store until evicted
        self.invalidated = 0  # renderings dropped for a reload that changed their network (or app)
        # Scopes: (network, app label, or None for the network's other names) → index; the current
        # stamp of each index (index 0: no scope, never moves). Bounded by the apps ever served.
        self._scopes: dict[tuple[str, str | None], int] = {}
        self.stamps: list[int] = [0]

    # --- the fast path ------------------------------------------------------------------------
    def reply(self, tag: bytes, data: bytes, started: float) -> bytes | None:
        """The reply to a query seen before byte for byte in this view, or None (a miss)."""
        key = tag + data[2:]
        value = self.store.items.get(key)
        if value is None:
            return None
        _, turns_at, serial, _, until, cell, histogram, stamp = value[:EXACT]
        if stamp and self.stamps[stamp >> _STAMP_BITS] != stamp:
            return None  # its app changed: the full path renders it again
        if until is not None:  # a forwarded answer: right until its TTLs count down a second
            if self.clock.seconds() >= until:
                return None
            if self.forward_stats is not None:
                self.forward_stats.hits += 1
        elif serial != self.serial:  # a reload that left this view's network as it was
            value = self._reserial(key, value, EXACT)
        if turns_at is None:
            rest = value[EXACT]
        else:
            turn = self.turns.get(turns_at, 0)
            rest = value[EXACT + turn % (len(value) - EXACT)]
            if rest is None:
                return None  # this turn is not rendered yet: the full path renders it
            self.turns[turns_at] = turn + 1
        self.store.items.move_to_end(key)
        self.counters.counts[cell] += 1
        self.counters.histograms[histogram].observe(perf_counter() - started)
        return data[:2] + rest

    def for_listener(self, listener: object, tcp: bool, local: str | None = None) -> dict[str, bytes]:
        """The source → exact tag map a transport looks in first: one per listener and transport,
        and on wildcard listeners per destination too (which may choose the view)."""
        return self.sources.setdefault((listener, tcp, local), {})

    # --- the full path ------------------------------------------------------------------------
    def tag(self, network: str, region: str | None, kind: int) -> bytes:
        """The tag of a view's exact entries (kind UDP or TCP) or its renderings (RENDERING)."""
        key = (network, region, kind)
        found = self._tags.get(key)
        if found is None:
            found = self._tags[key] = _TAG.pack(self._next_tag)
            self._next_tag = (self._next_tag + 1) & 0xFFFFFFFF
            self._live[found] = 0
        return found

    def bind(self, listener: object, tcp: bool, local: str | None, host: str, tag: bytes) -> None:
        """Queries from this source on this listener (to this destination) look under this tag first."""
        hosts = self.for_listener(listener, tcp, local)
        if len(hosts) >= MAX_SOURCES:
            hosts.clear()
        hosts[host] = tag

    def answer(
        self, exact_tag: bytes, rendering_tag: bytes, data: bytes, tcp: bool, make: Callable[[], Rendered]
    ) -> tuple[bytes, int] | None:
        """The reply from the cache, rendering with `make()` what it lacks, and keeping the
        result, with the counter cell it is counted in (the full path counts it); None when the
        query is not of the ordinary shape or its answer is not kept."""
        found = canonical_key(data, tcp)
        if found is None:
            return None
        canonical, end = found
        rkey = rendering_tag + canonical
        rendering = self.store.get(rkey)
        made: Rendered | None = None
        stamp = rendering[RENDERED - 1] if rendering is not None else 0
        if stamp and self.stamps[stamp >> _STAMP_BITS] != stamp:
            rendering = None  # rendered before its app changed: made again, in its place
            self.invalidated += 1
        if rendering is None:
            made = make()
            rendering = self._new_rendering(rkey, end, made)
            if rendering is None:
                return None
        if rendering[_SERIAL] != self.serial:
            rendering = self._reserial(rkey, rendering, RENDERED)
        _, turns_at, _, soa_at, header, _, cell, histogram, stamp = rendering[:RENDERED]
        count = len(rendering) - RENDERED
        turn = self.turns.get(turns_at, 0) % count if turns_at is not None else 0
        body = rendering[RENDERED + turn]
        if body is None:
            made = made or make()
            body = made.render(turn)[end:]
            bodies = _with(rendering[RENDERED:], turn, body)
            self._put(rkey, (entry_size(rkey, header, *bodies), *rendering[1:RENDERED], *bodies))
        if turns_at is not None:
            self.turns[turns_at] = self.turns.get(turns_at, 0) + 1
        question = data[12:end]
        rest = header + question + body
        ekey = exact_tag + data[2:]
        exact = self.store.peek(ekey)
        if (
            exact is not None
            and exact[_UNTIL] is None
            and exact[_SERIAL] == self.serial
            and exact[EXACT - 1] == stamp
            and len(exact) - EXACT == count
        ):
            rests: tuple[bytes | None, ...] = exact[EXACT:]  # other turns of this spelling, already made
        else:
            rests = (None,) * count
        rests = _with(rests, turn, rest)
        at = soa_at + 10 + len(question) if soa_at >= 0 else -1
        self._put(ekey, (entry_size(ekey, *rests), turns_at, self.serial, at, None, cell, histogram, stamp, *rests))
        return data[:2] + rest, cell

    def remember_forwarded(
        self, exact_tag: bytes, data: bytes, tcp: bool, reply: bytes, until: float, cell: int, histogram: int
    ) -> bool:
        """Keep a forwarded reply for this exact query; False for a query of an unusual shape."""
        if canonical_key(data, tcp) is None:
            return False
        key = exact_tag + data[2:]
        rest = reply[2:]
        return self._put(key, (entry_size(key, rest), None, 0, -1, until, cell, histogram, 0, rest))

    # --- reloads ------------------------------------------------------------------------------
    def stamp(self, network: str, app: str | None) -> int:
        """The current stamp of an app of a network (None: the network's other names)."""
        index = self._scopes.get((network, app))
        if index is None:
            index = self._scopes[(network, app)] = len(self.stamps)
            self.stamps.append(index << _STAMP_BITS)
        return self.stamps[index]

    def swap(self, serial: int, changed: Callable[[str], bool | frozenset[str]]) -> None:
        """A new snapshot: views of networks it changed start afresh, or, where only some apps'
        machines changed (`changed` gives their names), those apps and the network's other names
        do; the others keep what was rendered for them, with the new serial patched in when next
        asked."""
        self.serial = serial
        verdicts: dict[str, bool | frozenset[str]] = {}
        for key in list(self._tags):
            verdict = verdicts.get(key[0])
            if verdict is None:
                verdict = verdicts[key[0]] = changed(key[0])
            if verdict is True:
                tag = self._tags.pop(key)
                entries = self._live.pop(tag)
                self.retired += entries
                if key[2] == RENDERING:
                    self.invalidated += entries
        for network, verdict in verdicts.items():
            if isinstance(verdict, frozenset):
                for app in (None, *verdict):
                    index = self._scopes.get((network, app))
                    if index is not None:  # the next generation, wrapping within its 32 bits
                        self.stamps[index] = (index << _STAMP_BITS) | ((self.stamps[index] + 1) & 0xFFFFFFFF)
        for hosts in self.sources.values():
            hosts.clear()  # sources may now belong elsewhere; they find their tag again
        if len(self.turns) > MAX_TURN_COUNTERS:
            self.turns.clear()

    def clear(self) -> None:
        """Everything out (the config changed what answers look like)."""
        self.store.clear()
        self._tags.clear()
        self._live.clear()
        self.retired = 0
        for hosts in self.sources.values():
            hosts.clear()

    # --- counts -------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "internal_dns_packet_cache_entries", "Authoritative replies kept rendered, all views.", value=self.entries()
        )
        yield GaugeMetricFamily(
            "internal_dns_packet_cache_bytes",
            "Bytes the packet cache holds, as counted against packet_cache.max_bytes.",
            value=self.store.bytes,
        )
        yield CounterMetricFamily(
            "internal_dns_packet_cache_evictions",
            "Packet cache entries dropped for the size caps (entries, bytes).",
            value=self.store.evictions,
        )
        yield CounterMetricFamily(
            "internal_dns_packet_cache_invalidated",
            "Rendered replies dropped because a reload changed their network, or their app's machines.",
            value=self.invalidated,
        )

    def entries(self) -> int:
        """Questions rendered, in every view (each may have several exact spellings)."""
        return sum(self._live.get(tag, 0) for (_, _, kind), tag in self._tags.items() if kind == RENDERING)

    def exact_entries(self) -> int:
        """Exact spellings (and forwarded answers) that can still be found."""
        return len(self.store) - self.retired - self.entries()

    # --- inside -------------------------------------------------------------------------------
    def _put(self, key: bytes, value: tuple[Any, ...]) -> bool:
        tag = key[:4]
        new = key not in self.store.items
        if not self.store.put(key, value):
            if not new:
                self._forget(tag)
            return False
        if new:
            if tag in self._live:
                self._live[tag] += 1
            else:  # a tag retired while its entry was being made
                self.retired += 1
        return True

    def _evicted(self, key: bytes) -> None:
        self._forget(key[:4])

    def _forget(self, tag: bytes) -> None:
        if tag in self._live:
            self._live[tag] -= 1
        else:
            self.retired -= 1

    def _new_rendering(self, rkey: bytes, end: int, made: Rendered) -> tuple[Any, ...] | None:
        # Every rotating set (ANY can hold A and AAAA) is back at its start after `count` turns.
        count = math.lcm(1, *(len(rs.rdatas) for rs in made.answer.answer if rs.rotates)) if made.turn_key is not None else 1
        if count > MAX_TURNS:
            return None
        first = made.render(0)
        soa_at = _serial_offset(first, end, made.answer)
        value: tuple[Any, ...] = (
            entry_size(rkey, first),
            made.turn_key,
            self.serial,
            soa_at,
            first[2:12],
            end,
            made.cell,
            made.histogram,
            made.stamp,
            first[end:],
        )
        value += (None,) * (count - 1)
        return value if self._put(rkey, value) else None

    def _reserial(self, key: bytes, value: tuple[Any, ...], start: int) -> tuple[Any, ...]:
        """The entry with the current serial in its SOA (from `start` on, the blobs holding it)."""
        at = value[_SERIAL_AT]
        blobs = value[start:]
        if at >= 0:
            packed = _SERIAL_BYTES.pack(self.serial & 0xFFFFFFFF)
            blobs = tuple(b if b is None else b[:at] + packed + b[at + 4 :] for b in blobs)
        value = (*value[:_SERIAL], self.serial, *value[_SERIAL + 1 : start], *blobs)
        self.store.items[key] = value  # in place: the same size, the same place in the order
        return value


def _with(blobs: tuple[bytes | None, ...], i: int, blob: bytes) -> tuple[bytes | None, ...]:
    return blobs[:i] + (blob,) + blobs[i + 1 :]


def _serial_offset(reply: bytes, end: int, answer: Answer) -> int:
    """Where the SOA serial sits in the body, so a new snapshot can update it in place."""
    for rrset in answer.answer + answer.authority:
        if rrset.rtype == SOA:
            rdata = rrset.rdatas[0]
            at = reply.find(rdata, end)
            if at >= 0:
                return at + len(rdata) - 20 - end  # the serial follows the two names
    return -1
