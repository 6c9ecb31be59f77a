"""packetcache.py: renderings per view and question, exact spellings served as bytes, rotation turns,
the SOA serial patched on a snapshot swap, views of changed networks retired, forwarded answers that
expire on the injected clock, and the bounds. Driven the way the dispatcher drives it, with
`wire.render` as the renderer and plain numbers as the clock."""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import dns.flags
import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st

from internal_dns.authority.packetcache import (
    MAX_TURNS,
    RENDERING,
    TCP,
    UDP,
    PacketCache,
    Rendered,
    canonical_key,
    turn_key,
)
from internal_dns.counting import QueryCounters
from internal_dns.records import AAAA, NOERROR, NXDOMAIN, SOA, TXT, A, Answer, RRset, soa_rdata, txt_rdata
from internal_dns.wire import Malformed, parse_query, render, skip_name

SIX = tuple(IPv6Address(f"fdaa::{i:x}").packed for i in range(1, 7))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def seconds(self) -> float:
        return self.now


class Counter:
    hits = 0


def query(name: str = "my-app.internal", rdtype: str = "AAAA", qid: int = 1, **kwargs: Any) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kwargs)
    msg.id = qid
    return msg.to_wire()


class Harness:
    """What the dispatcher does around the cache, for one zone `internal` whose serial is the cache's."""

    def __init__(self, max_entries: int = 1000, max_bytes: int = 1 << 22) -> None:
        self.clock = Clock()
        self.counters = QueryCounters()
        self.cache = PacketCache(self.counters, self.clock, max_entries, max_bytes)
        self.made = 0
        self.answers: dict[str, Callable[[int], Answer]] = {
            "my-app.internal.": lambda _: Answer(NOERROR, answer=(RRset(0, AAAA, 5, SIX[:3], True),)),
            "_apps.internal.": lambda _: Answer(NOERROR, answer=(RRset(0, TXT, 5, (txt_rdata("a,b"),)),)),
            "nope.internal.": lambda serial: Answer(NXDOMAIN, authority=(soa(1, serial),)),
            "internal.": lambda serial: Answer(NOERROR, answer=(soa(0, serial),)),
        }

    def tags(self, network: str = "net", region: str | None = None, tcp: bool = False) -> tuple[bytes, bytes]:
        return self.cache.tag(network, region, TCP if tcp else UDP), self.cache.tag(network, region, RENDERING)

    def full(self, data: bytes, network: str = "net", tcp: bool = False) -> bytes | None:
        q = parse_query(data)
        assert q is not None
        exact, rendering = self.tags(network, tcp=tcp)

        def make() -> Rendered:
            self.made += 1
            result = self.answers[q.name](self.cache.serial)
            rotates = any(rs.rotates and len(rs.rdatas) > 1 for rs in result.answer)
            return Rendered(
                result,
                lambda turn: render(
                    q,
                    result,
                    recursion_available=False,
                    limit=65535 if tcp else q.udp_limit(),
                    server_payload=1232,
                    rotation=turn,
                ),
                turn_key(network, data, q.question_end) if rotates else None,
                self.counters.cell("internal", q.qtype, "tcp" if tcp else "udp", result.rcode),
                self.counters.histogram("internal", "tcp" if tcp else "udp"),
            )

        found = self.cache.answer(exact, rendering, data, tcp, make)
        return None if found is None else found[0]

    def fast(self, data: bytes, network: str = "net", tcp: bool = False) -> bytes | None:
        return self.cache.reply(self.tags(network, tcp=tcp)[0], data, 0.0)

    def ask(self, data: bytes, network: str = "net", tcp: bool = False) -> bytes:
        """The transport's fast path first, then the full path."""
        reply = self.fast(data, network, tcp)
        if reply is None:
            reply = self.full(data, network, tcp)
        assert reply is not None
        return reply


def soa(skip: int, serial: int) -> RRset:
    return RRset(skip, SOA, 5, (soa_rdata("internal", serial, 5),))


def first_address(reply: bytes) -> str:
    return dns.message.from_wire(reply).answer[0][0].address


def soa_serial(reply: bytes) -> int:
    msg = dns.message.from_wire(reply)
    return msg.authority[0][0].serial if msg.authority else msg.answer[0][0].serial


# --- keys ----------------------------------------------------------------------------------------------


def test_canonical_key_ignores_id_and_case_of_the_name_only() -> None:
    key, end = canonical_key(query("My-App.Internal", qid=1), False) or (b"", 0)
    assert end == 12 + 17 + 4
    assert canonical_key(query("my-app.internal", qid=2), False) == (key, end)
    assert key[0] == 0x01  # RD
    assert key[1:] == query()[12:]


def test_canonical_key_tells_apart_what_changes_the_reply() -> None:
    base = canonical_key(query(), False)
    others = [
        canonical_key(query(), True),  # the transport
        canonical_key(query(rdtype="A"), False),
        canonical_key(query(use_edns=0), False),
        canonical_key(query(use_edns=0, want_dnssec=True), False),
        canonical_key(query(use_edns=0, payload=4096), False),
        canonical_key(dns.message.make_query("my-app.internal", "AAAA", flags=0).to_wire(), False),  # no RD
        canonical_key(dns.message.make_query("my-app.internal", "AAAA", flags=dns.flags.RD | dns.flags.CD).to_wire(), False),
    ]
    keys = [base] + others
    assert None not in keys and len({k for k in keys if k is not None}) == len(keys)


def header(flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 9, flags, qd, an, ns, ar)


QUESTION = b"\x06my-app\x08internal\x00\x00\x1c\x00\x01"
BARE_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    "data",
    [
        header(flags=0x8000) + QUESTION,  # QR
        header(flags=4 << 11) + QUESTION,  # NOTIFY
        header(qd=2) + QUESTION + QUESTION,
        header(an=1) + QUESTION,
        header(ns=1) + QUESTION,
        header(ar=2) + QUESTION + BARE_OPT + BARE_OPT,
        header(ar=1) + QUESTION + BARE_OPT[:-2] + b"\x00\x04" + b"\x00\x0a\x00\x00",  # an option
        header(ar=1) + QUESTION + b"\xc0\x0c" + BARE_OPT[1:],  # not a bare OPT
        header() + QUESTION + b"\x00",  # trailing bytes
        header(ar=1) + QUESTION,  # OPT missing
        header() + b"\xc0\x0c\x00\x1c\x00\x01",  # compression
        header() + b"\x06my-app\x08inte",  # runs past the end
        header() + b"\x00\x00\x1c",  # too short
    ],
)
def test_unusual_queries_have_no_canonical_key(data: bytes) -> None:
    assert canonical_key(data, False) is None


def test_canonical_key_takes_a_bare_opt() -> None:
    found = canonical_key(header(ar=1) + QUESTION + BARE_OPT, False)
    assert found is not None and found[1] == 12 + len(QUESTION)


# canonical_key walks the question name itself (a call to wire.skip_name costs too much there):
# its rules must be the walker's without compression. Each question here is the name and, when the
# name can end, a type and class after it.
TYPE_CLASS = b"\x00\x1c\x00\x01"
NAME_CASES = {
    "root": b"\x00" + TYPE_CLASS,
    "two labels": QUESTION,
    "letter case": b"\x06My-App\x08INTERNAL\x00" + TYPE_CLASS,
    "a label of 63": b"\x3f" + b"a" * 63 + b"\x00" + TYPE_CLASS,
    "over 255 bytes": (b"\x3c" + b"a" * 60) * 5 + b"\x00" + TYPE_CLASS,  # the walker's rule; parse_query's is 255
    "a pointer": b"\xc0\x0c" + TYPE_CLASS,
    "a label, then a pointer": b"\x03www\xc0\x0c" + TYPE_CLASS,
    "top bits all set": b"\xff\xff" + TYPE_CLASS,
    "a pointer with room for a label of 192 after it": b"\xc0" + b"a" * 192 + b"\x00" + TYPE_CLASS,
    "label type 0x40": b"\x40" + b"a" * 64 + b"\x00" + TYPE_CLASS,
    "label type 0x80": b"\x80\x00" + TYPE_CLASS,
    "label type 0xbf": b"\xbf\x00" + TYPE_CLASS,
    "past the end in a label": b"\x06my-app\x08inte",
    "a label longer than what is left": b"\x06my-app\x3fshort",
    "no root label": b"\x06my-app",
    "a length byte last": b"\x06my-app\x05",
}


def walker_says(data: bytes) -> int | None:
    """Where the question ends by wire.skip_name, when it ends where the query does; else None."""
    try:
        end = skip_name(data, 12, pointers=False) + 4
    except Malformed:
        return None
    return end if end == len(data) else None


def key_says(data: bytes) -> int | None:
    found = canonical_key(data, False)
    return None if found is None else found[1]


@pytest.mark.parametrize("question", NAME_CASES.values(), ids=NAME_CASES.keys())
def test_canonical_key_walks_names_by_the_walkers_rules(question: bytes) -> None:
    data = header() + question
    assert key_says(data) == walker_says(data)


def test_the_name_cases_cover_both_answers() -> None:
    ends = [walker_says(header() + question) for question in NAME_CASES.values()]
    assert None in ends and any(end is not None for end in ends)


_LABEL = st.binary(min_size=0, max_size=70).map(lambda b: bytes((len(b),)) + b)  # lengths 64 to 70 too
_ODD_BYTE = st.sampled_from([b"\x00", b"\x01", b"\x3f", b"\x40", b"\x80", b"\xbf", b"\xc0", b"\xc0\x0c", b"\xff"])


@given(
    parts=st.lists(st.one_of(_LABEL, _ODD_BYTE), max_size=8),
    tail=st.sampled_from([b"", b"\x00", TYPE_CLASS, b"\x00" + TYPE_CLASS]),
)
def test_canonical_key_and_the_walker_agree_on_any_name(parts: list[bytes], tail: bytes) -> None:
    data = header() + b"".join(parts) + tail
    assert key_says(data) == walker_says(data)


def test_turn_key_is_per_network_name_and_type() -> None:
    q = query("My-App.Internal")
    end = 12 + 17 + 4
    assert turn_key("net", q, end) == b"net\x00" + b"\x06my-app\x08internal\x00" + b"\x00\x1c"
    assert turn_key("net", query(), end) == turn_key("net", q, end)
    assert turn_key("other", q, end) != turn_key("net", q, end)


def test_tags_are_per_view_and_kind() -> None:
    cache = Harness().cache
    tags = {cache.tag(n, r, k) for n in ("a", "b") for r in (None, "iad") for k in (UDP, TCP, RENDERING)}
    assert len(tags) == 12 and all(len(t) == 4 for t in tags)
    assert cache.tag("a", None, UDP) == cache.tag("a", None, UDP)


# --- answering ----------------------------------------------------------------------------------------


def test_a_question_is_rendered_once_and_then_served_as_bytes_with_each_id() -> None:
    h = Harness()
    first = h.full(query("_apps.internal", "TXT", qid=1))
    assert first is not None and h.made == 1
    assert h.cache.entries() == 1 and h.cache.exact_entries() == 1
    for qid in (2, 0xFFFF, 0):
        again = h.fast(query("_apps.internal", "TXT", qid=qid))
        assert again is not None and again[:2] == struct.pack("!H", qid) and again[2:] == first[2:]
    assert h.made == 1
    assert sum(h.counters.counts) == 3  # the fast path counts its own answers
    assert sum(h.counters.histograms[0].counts) == 3


def test_the_full_path_returns_what_render_made() -> None:
    h = Harness()
    data = query("nope.internal", qid=77)
    q = parse_query(data)
    assert q is not None
    expected = render(q, Answer(NXDOMAIN, authority=(soa(1, 0),)), recursion_available=False, limit=512, server_payload=1232)
    assert h.full(data) == expected


def test_another_spelling_reuses_the_rendering_and_keeps_its_case() -> None:
    h = Harness()
    h.full(query("nope.internal"))
    assert h.fast(query("NOPE.Internal")) is None  # not seen byte for byte yet
    reply = h.full(query("NOPE.Internal"))
    assert reply is not None and h.made == 1
    assert h.cache.entries() == 1 and h.cache.exact_entries() == 2
    msg = dns.message.from_wire(reply)
    assert msg.question[0].name.to_text() == "NOPE.Internal."
    assert msg.authority[0].name.to_text() == "Internal."
    assert h.fast(query("NOPE.Internal")) == reply


def test_views_and_transports_are_kept_apart() -> None:
    h = Harness()
    h.full(query("_apps.internal", "TXT"))
    assert h.fast(query("_apps.internal", "TXT"), network="other") is None
    assert h.fast(query("_apps.internal", "TXT"), tcp=True) is None
    h.full(query("_apps.internal", "TXT"), tcp=True)
    assert h.made == 2  # a rendering per transport
    h.full(query("_apps.internal", "TXT"), network="other")
    assert h.made == 3 and h.cache.entries() == 3


def test_a_rotating_set_turns_by_one_across_both_paths_and_spellings() -> None:
    h = Harness()
    spellings = ["my-app.internal", "MY-APP.internal", "My-App.Internal"]
    firsts = [first_address(h.ask(query(spellings[i % 3]))) for i in range(7)]
    assert firsts == ["fdaa::1", "fdaa::2", "fdaa::3", "fdaa::1", "fdaa::2", "fdaa::3", "fdaa::1"]
    assert h.made == 3  # one rendering per turn, the first time the turn comes
    assert h.cache.entries() == 1


def test_a_turn_not_yet_rendered_is_a_miss_of_the_fast_path() -> None:
    h = Harness()
    h.full(query())
    assert h.fast(query()) is None  # turn 1 not rendered yet
    h.full(query())
    h.full(query())
    assert [first_address(h.fast(query()) or b"") for _ in range(4)] == ["fdaa::1", "fdaa::2", "fdaa::3", "fdaa::1"]


def test_sets_of_several_sizes_come_back_to_the_start_together() -> None:
    h = Harness()
    h.answers["any.internal."] = lambda _: Answer(
        NOERROR,
        answer=(RRset(0, A, 5, (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"), True), RRset(0, AAAA, 5, SIX[:3], True)),
    )
    seen = []
    for _ in range(7):
        msg = dns.message.from_wire(h.ask(query("any.internal", "ANY")))
        seen.append((msg.answer[0][0].address, msg.answer[1][0].address))
    assert seen[6] == seen[0] and len(set(seen)) == 6  # lcm(2, 3) turns
    assert h.made == 6


def test_a_set_of_more_than_max_turns_is_not_kept() -> None:
    h = Harness()
    many = tuple(IPv6Address(f"fdaa::{i:x}").packed for i in range(1, MAX_TURNS + 2))
    h.answers["big.internal."] = lambda _: Answer(NOERROR, answer=(RRset(0, AAAA, 5, many, True),))
    assert h.full(query("big.internal", use_edns=0, payload=4096)) is None
    assert len(h.cache.store) == 0


def test_an_unusual_query_is_not_kept() -> None:
    h = Harness()
    data = header(ar=1) + QUESTION + BARE_OPT[:-2] + b"\x00\x04" + b"\x00\x0a\x00\x00"
    assert h.full(data) is None and h.made == 0 and len(h.cache.store) == 0


# --- snapshot swaps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope.internal", "internal"])
def test_a_swap_that_leaves_the_network_keeps_its_replies_with_the_new_serial(name: str) -> None:
    h = Harness()
    rdtype = "SOA" if name == "internal" else "AAAA"
    before = h.full(query(name, rdtype))
    assert before is not None and soa_serial(before) == 0
    h.cache.swap(1795314157, lambda network: False)
    fast = h.fast(query(name, rdtype))
    assert fast is not None and soa_serial(fast) == 1795314157
    assert len(fast) == len(before) and h.made == 1
    other = h.full(query(name.upper(), rdtype))  # the rendering is patched too
    assert other is not None and soa_serial(other) == 1795314157 and h.made == 1
    assert h.cache.retired == 0 and h.cache.entries() == 1


def test_a_swap_that_changes_the_network_retires_its_views() -> None:
    h = Harness()
    h.full(query("_apps.internal", "TXT"))
    h.full(query("_apps.internal", "TXT"), network="other")
    old_tag = h.cache.tag("net", None, UDP)
    h.cache.swap(2, lambda network: network == "net")
    assert h.cache.tag("net", None, UDP) != old_tag
    assert h.cache.tag("other", None, UDP) == h.tags("other")[0]
    assert h.cache.reply(old_tag, query("_apps.internal", "TXT"), 0.0) is not None  # only a stale tag finds it
    assert h.fast(query("_apps.internal", "TXT")) is None
    assert h.cache.retired == 2 and h.cache.invalidated == 1
    assert h.cache.entries() == 1 and h.cache.exact_entries() == 1
    h.full(query("_apps.internal", "TXT"))
    assert h.made == 3 and h.cache.entries() == 2


def test_a_swap_forgets_which_tag_each_source_had() -> None:
    h = Harness()
    hosts = h.cache.for_listener("listener", False)
    h.cache.bind("listener", False, None, "127.0.0.1", b"tag!")
    assert hosts == {"127.0.0.1": b"tag!"}
    assert h.cache.for_listener("listener", True) == {}
    assert h.cache.for_listener("listener", False, "10.0.0.3") == {}
    h.cache.swap(1, lambda network: False)
    assert hosts == {} and h.cache.for_listener("listener", False) is hosts


def test_retired_entries_leave_with_the_least_recently_used() -> None:
    h = Harness(max_entries=4)
    h.full(query("_apps.internal", "TXT"))
    h.full(query("nope.internal"))
    h.cache.swap(1, lambda network: True)
    assert h.cache.retired == 4 and len(h.cache.store) == 4
    h.full(query("internal", "SOA"))
    assert len(h.cache.store) == 4 and h.cache.retired == 2
    assert h.cache.entries() == 1 and h.cache.exact_entries() == 1


def test_clear_empties_everything() -> None:
    h = Harness()
    h.full(query("_apps.internal", "TXT"))
    h.cache.swap(1, lambda network: True)
    h.full(query("_apps.internal", "TXT"))
    h.cache.clear()
    assert len(h.cache.store) == 0 and h.cache.retired == 0 and h.cache.entries() == 0
    assert h.cache.exact_entries() == 0
    assert h.fast(query("_apps.internal", "TXT")) is None


# --- bounds ---------------------------------------------------------------------------------------------


def test_the_least_recently_used_go_first_and_counts_follow() -> None:
    h = Harness(max_entries=4)
    h.full(query("_apps.internal", "TXT"))  # 2 entries
    h.full(query("nope.internal"))  # 4
    assert h.fast(query("_apps.internal", "TXT")) is not None  # now the most recently used exact entry
    h.full(query("internal", "SOA"))  # 2 more: _apps' rendering and nope's rendering go
    assert len(h.cache.store) == 4 and h.cache.store.evictions == 2
    assert h.cache.entries() == 1 and h.cache.exact_entries() == 3
    assert h.fast(query("_apps.internal", "TXT")) is not None
    assert h.fast(query("nope.internal")) is not None
    h.full(query("_apps.internal", "TXT"))  # the rendering is made again
    assert h.made == 4


def test_a_reply_too_big_for_the_bounds_is_not_kept() -> None:
    h = Harness(max_bytes=16 * 400)
    h.answers["huge.internal."] = lambda _: Answer(NOERROR, answer=(RRset(0, TXT, 5, (txt_rdata("x" * 300),)),))
    assert h.full(query("huge.internal", "TXT", use_edns=0)) is None
    assert len(h.cache.store) == 0 and h.cache.entries() == 0


# --- forwarded answers -------------------------------------------------------------------------------------


def test_a_forwarded_reply_is_served_until_its_time() -> None:
    h = Harness()
    stats = Counter()
    h.cache.forward_stats = stats
    tag = h.cache.tag("net", None, UDP)
    data = query("example.com", "A", qid=5)
    reply = b"\x00\x05" + b"upstream reply bytes"
    cell = h.counters.cell("forward", 1, "udp", 0)
    assert h.cache.remember_forwarded(tag, data, False, reply, 1001.0, cell, h.counters.histogram("forward", "udp"))
    assert h.cache.reply(tag, query("example.com", "A", qid=6), 0.0) == b"\x00\x06" + reply[2:]
    assert h.cache.reply(tag, query("Example.com", "A", qid=6), 0.0) is None  # exact bytes only
    assert stats.hits == 1 and h.counters.counts[cell] == 1
    h.clock.now = 1001.0
    assert h.cache.reply(tag, data, 0.0) is None
    assert stats.hits == 1


def test_a_forwarded_reply_keeps_its_bytes_across_swaps() -> None:
    h = Harness()
    tag = h.cache.tag("net", None, UDP)
    h.cache.remember_forwarded(tag, query("example.com"), False, b"\x00\x01xyz", 2000.0, 0, 0)
    h.counters.cell("forward", 1, "udp", 0)
    h.counters.histogram("forward", "udp")
    h.cache.swap(7, lambda network: False)
    assert h.cache.reply(tag, query("example.com"), 0.0) == b"\x00\x01xyz"


def test_an_unusual_forwarded_query_is_not_kept() -> None:
    h = Harness()
    tag = h.cache.tag("net", None, UDP)
    assert not h.cache.remember_forwarded(tag, header(qd=2) + QUESTION + QUESTION, False, b"\x00\x01", 2000.0, 0, 0)
    assert len(h.cache.store) == 0
