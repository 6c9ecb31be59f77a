"""The packet cache: authoritative replies rendered once, served as bytes (after PowerDNS's).

The reply to a question in a view is always the same but for the ID, the question's letter case,
the turn of a rotating address set and the SOA serial. So:

- an `Entry`, found by a canonical key (the RD and CD bits, the question with its name lower-cased,
  the OPT record's bytes, the transport), keeps the reply's header and one body per turn; owner
  names in a body point into the question, so any spelling of the name can be put in front;
- an `Alias` is one exact spelling of that question, found by the query's own bytes after the ID
  (`message[2:]`), and keeps whole replies but for the ID. A query the server has seen before,
  byte for byte, costs one slice, one dict lookup and one concatenation.

Only queries of the ordinary shape get in (one question, no compression, no records but at most a
bare OPT); everything else takes the full path, which is also what fills the cache.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from internal_dns.cache import CacheStats
from internal_dns.metrics import Histogram
from internal_dns.records import SOA, Answer

_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
MAX_TURNS = 64  # address sets larger than this are rendered per answer, not kept per turn
MAX_ENTRIES = 50_000  # per table; a flood of random names clears it rather than grow it

Table = dict[bytes, "Entry"]
ExactTable = dict[bytes, "Alias | ForwardedAlias"]


def canonical_key(data: bytes, tcp: bool) -> tuple[bytes, int] | None:
    """(key, end of the question) for a query of the ordinary shape, or None."""
    if len(data) < 17 or data[2] & 0xF8 or data[4:10] != _COUNTS or data[10]:
        return None
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


class Entry:
    __slots__ = ("header", "bodies", "turns", "serial", "soa_at", "cell", "histogram", "render", "end")

    def __init__(
        self,
        first: bytes,
        end: int,
        turns: list[int],
        count: int,
        serial: int,
        soa_at: int,
        cell: list[int],
        histogram: Histogram,
        render: Callable[[int], bytes],
    ):
        self.header = first[2:12]  # flags and counts
        self.end = end  # where the question ends (the same for every spelling)
        self.bodies: list[bytes | None] = [None] * count  # one per turn of a rotating set
        self.bodies[0] = first[end:]
        self.turns = turns  # shared by every entry (and the full path) for this view's question
        self.serial = serial  # the SOA serial the bodies carry
        self.soa_at = soa_at  # where that serial sits in each body, or -1
        self.cell = cell  # the metrics counter this reply adds to
        self.histogram = histogram
        self.render = render  # turn → whole reply, for bodies not rendered yet

    def next_turn(self) -> int:
        turns = self.turns
        turn = turns[0] % len(self.bodies)
        turns[0] += 1
        return turn

    def body(self, turn: int, serial: int) -> bytes:
        if serial != self.serial:  # a new snapshot left this view's answers as they were
            self._reserial(serial)
        body = self.bodies[turn]
        if body is None:
            body = self.bodies[turn] = self.render(turn)[self.end :]
        return body

    def _reserial(self, serial: int) -> None:
        if self.soa_at >= 0:
            packed = struct.pack("!I", serial)
            at = self.soa_at
            self.bodies = [b if b is None else b[:at] + packed + b[at + 4 :] for b in self.bodies]
        self.serial = serial


class Alias:
    """One exact spelling of a cached question: whole replies but for the ID, per turn."""

    __slots__ = ("entry", "question", "rests", "serial", "cell", "histogram")

    def __init__(self, entry: Entry, question: bytes):
        self.entry = entry
        self.question = question
        self.rests: list[bytes | None] = [None] * len(entry.bodies)
        self.serial = entry.serial
        self.cell = entry.cell
        self.histogram = entry.histogram

    def rest(self, serial: int) -> bytes | None:
        """The reply from byte 2 on, for the next turn (never None: that is ForwardedAlias's)."""
        if serial != self.serial:
            self.rests = [None] * len(self.rests)
            self.serial = serial
        entry = self.entry
        turn = entry.next_turn()
        found = self.rests[turn]
        if found is None:
            found = self.rests[turn] = entry.header + self.question + entry.body(turn, serial)
        return found


class ForwardedAlias:
    """A forwarded answer from the forwarder's cache, kept as the reply to one exact spelling of a
    question for as long as its bytes stay right: until its TTLs count down one more second."""

    __slots__ = ("reply", "until", "clock", "cell", "histogram", "stats")

    def __init__(self, reply: bytes, until: float, clock: IReactorTime, cell: list[int], histogram: Histogram, stats: CacheStats):
        self.reply = reply[2:]
        self.until = until
        self.clock = clock
        self.cell = cell
        self.histogram = histogram
        self.stats = stats  # the forwarder's cache: a hit here is a hit there

    def rest(self, serial: int) -> bytes | None:
        if self.clock.seconds() >= self.until:
            return None  # the full path renders it again, with the TTLs one second lower
        self.stats.hits += 1
        return self.reply


class PacketCache:
    def __init__(self) -> None:
        self.tables: dict[object, Table] = {}  # view → canonical key → entry
        self.exact: dict[tuple[object, bool], ExactTable] = {}  # (view, tcp) → message[2:] → alias
        self.sources: dict[tuple[object, bool], dict[str, ExactTable]] = {}  # (listener, tcp) → host → table
        self.serial = 0
        self.invalidated = 0  # entries dropped because a reload changed their view's network

    def entries(self) -> int:
        return sum(len(table) for table in self.tables.values())

    def for_listener(self, listener: object, tcp: bool) -> dict[str, ExactTable]:
        """The source → exact table map a transport's protocol looks in first."""
        return self.sources.setdefault((listener, tcp), {})

    def answer(
        self,
        view: object,
        data: bytes,
        tcp: bool,
        make: Callable[[], tuple[Answer, Callable[[int], bytes], list[int], list[int], Histogram]],
    ) -> tuple[bytes, Alias] | None:
        """The reply from the cache, filling it with `make()` when the question is new to it.

        None when the query is not of the ordinary shape or its answer too big to keep.
        """
        found = canonical_key(data, tcp)
        if found is None:
            return None
        key, end = found
        table = self.tables.setdefault(view, {})
        entry = table.get(key)
        if entry is None:
            entry = self._store(table, key, end, *make())
            if entry is None:
                return None
        exact = self.exact.setdefault((view, tcp), {})
        if len(exact) >= MAX_ENTRIES:
            exact.clear()
        alias = exact[data[2:]] = Alias(entry, data[12:end])
        return data[:2] + alias.rest(self.serial), alias  # type: ignore[operator]

    def remember_forwarded(
        self, view: object, data: bytes, tcp: bool, reply: bytes, until: float, clock: IReactorTime,
        cell: list[int], histogram: Histogram, stats: CacheStats,
    ) -> bool:
        """Keep a forwarded reply for this exact query; False for a query of an unusual shape."""
        if canonical_key(data, tcp) is None:
            return False
        exact = self.exact.setdefault((view, tcp), {})
        if len(exact) >= MAX_ENTRIES:
            exact.clear()
        exact[data[2:]] = ForwardedAlias(reply, until, clock, cell, histogram, stats)  # type: ignore[assignment]
        return True

    def bind(self, host: str, listener: object, view: object, tcp: bool) -> None:
        """Queries from this source on this listener look in this view's exact table first."""
        hosts = self.for_listener(listener, tcp)
        if len(hosts) >= MAX_ENTRIES:  # a view over a wide CIDR: bound the sources remembered
            hosts.clear()
        hosts[host] = self.exact.setdefault((view, tcp), {})

    def _store(
        self,
        table: Table,
        key: bytes,
        end: int,
        answer: Answer,
        render: Callable[[int], bytes],
        turns: list[int],
        cell: list[int],
        histogram: Histogram,
    ) -> Entry | None:
        # Every rotating set (ANY can hold A and AAAA) is back at its start after `count` turns.
        count = math.lcm(1, *(len(rs.rdatas) for rs in answer.answer if rs.rotates))
        if count > MAX_TURNS:
            return None
        first = render(0)
        entry = Entry(first, end, turns, count, self.serial, _serial_offset(first, end, answer), cell, histogram, render)
        if len(table) >= MAX_ENTRIES:
            table.clear()
        table[key] = entry
        return entry

    def swap(self, serial: int, unchanged: Callable[[object], bool]) -> None:
        """A new snapshot: keep what was rendered for views whose network did not change."""
        self.serial = serial
        kept = {view: t for view, t in self.tables.items() if unchanged(view)}
        self.invalidated += sum(len(t) for view, t in self.tables.items() if view not in kept)
        self.tables = kept
        self.exact = {key: t for key, t in self.exact.items() if unchanged(key[0])}
        for hosts in self.sources.values():
            hosts.clear()  # sources may now belong elsewhere; they find their table again


def _serial_offset(reply: bytes, end: int, answer: Answer) -> int:
    """Where the SOA serial sits in the body, so a new snapshot can update it in place."""
    for rrset in answer.answer + answer.authority:
        if rrset.rtype == SOA:
            rdata = rrset.rdatas[0]
            at = reply.find(rdata, end)
            if at >= 0:
                return at + len(rdata) - 20 - end  # the serial follows the two names
    return -1
