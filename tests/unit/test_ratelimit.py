"""The per-source token buckets (transport/ratelimit.py), on an injected clock."""

from __future__ import annotations

import dns.flags
import dns.message

from internal_dns.transport.ratelimit import DROP, PASS, SLIP, RateLimiter, truncated_reply
from internal_dns.transport.settings import RateLimitConfig


def verdicts(limiter: RateLimiter, source: str, now: float, count: int) -> list[int]:
    return [limiter.check(source, now) for _ in range(count)]


def test_a_burst_passes_then_the_rest_is_limited_with_every_slip_th_truncated() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=10, burst=5, slip=3))
    assert verdicts(limiter, "10.0.0.1", 100.0, 5) == [PASS] * 5
    assert verdicts(limiter, "10.0.0.1", 100.0, 6) == [DROP, DROP, SLIP, DROP, DROP, SLIP]
    assert (limiter.dropped, limiter.slipped) == (4, 2)


def test_tokens_come_back_at_the_rate_and_no_more_than_the_burst() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=10, burst=5, slip=0))
    verdicts(limiter, "a", 0.0, 5)
    assert limiter.check("a", 0.0) == DROP
    assert verdicts(limiter, "a", 0.25, 3) == [PASS, PASS, DROP]  # 2.5 tokens in a quarter second
    assert verdicts(limiter, "a", 0.35, 2) == [PASS, DROP]  # the half token left, and one more
    assert verdicts(limiter, "a", 100.0, 6) == [PASS] * 5 + [DROP]  # idle long: the burst, no more
    assert limiter.slipped == 0


def test_sources_are_independent() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=1, burst=2, slip=0))
    assert verdicts(limiter, "flood", 0.0, 4) == [PASS, PASS, DROP, DROP]
    assert verdicts(limiter, "quiet", 0.0, 2) == [PASS, PASS]
    assert verdicts(limiter, "::1", 0.0, 1) == [PASS]


def test_slip_one_truncates_every_limited_query_while_tc_tokens_last() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=1, burst=2, slip=1))
    assert verdicts(limiter, "a", 0.0, 6) == [PASS, PASS, SLIP, SLIP, DROP, DROP]
    assert verdicts(limiter, "a", 1.0, 3) == [PASS, SLIP, DROP]


def test_a_flood_is_sent_at_most_qps_tc_replies_a_second_beside_its_answers() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=10, burst=10, slip=2))
    assert verdicts(limiter, "flood", 0.0, 10) == [PASS] * 10
    limited = verdicts(limiter, "flood", 0.0, 100)
    assert limited[:20] == [DROP, SLIP] * 10  # every second one, until the TC bucket's burst is spent
    assert set(limited[20:]) == {DROP}
    for second in (1.0, 2.0, 3.0):  # flooding on: each second, qps answers and qps TC replies, no more
        again = verdicts(limiter, "flood", second, 1000)
        assert (again.count(PASS), again.count(SLIP)) == (10, 10)
        assert again[10] == SLIP  # the first limited one after a refill, the count having reached slip
    assert (limiter.slipped, limiter.dropped) == (40, 100 - 10 + 3 * 980)
    quiet = verdicts(limiter, "quiet", 3.0, 2)  # another source has buckets of its own
    assert quiet == [PASS, PASS]


def test_tc_tokens_come_back_at_the_rate_and_no_more_than_the_burst() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=4, burst=4, slip=1))
    verdicts(limiter, "a", 0.0, 4 + 4)  # both bursts spent
    assert verdicts(limiter, "a", 0.0, 1) == [DROP]
    assert verdicts(limiter, "a", 0.5, 5) == [PASS, PASS, SLIP, SLIP, DROP]  # two of each in half a second
    assert verdicts(limiter, "a", 100.0, 10).count(SLIP) == 4  # idle long: the burst, no more


def test_past_max_sources_idle_ones_are_forgotten_then_all() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=10, burst=2, slip=0, max_sources=3))
    for source in ("a", "b", "c"):
        limiter.check(source, 0.0)
    limiter.check("c", 0.0)
    limiter.check("c", 0.0)  # c has used its burst: busy
    limiter.check("d", 1.0)  # a and b are full again by now, c too: all three forgotten
    assert set(limiter.buckets) == {"d"}
    busy = RateLimiter(RateLimitConfig(qps=1, burst=5, slip=0, max_sources=2))
    busy.check("a", 0.0)
    busy.check("b", 0.0)
    busy.check("c", 0.0)  # neither is full again: all forgotten, a spoofed flood costs no memory
    assert set(busy.buckets) == {"c"}


def test_a_source_is_remembered_while_its_tc_bucket_refills() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=10, burst=1, slip=1, max_sources=3))
    assert [limiter.check(s, 0.0) for s in ("a", "b", "c")] == [PASS] * 3
    assert limiter.check("a", 0.05) == SLIP  # half a token: limited, and the TC token spent
    limiter.check("d", 0.1)  # a's answers are full again, its TC bucket half: a stays, b and c go
    assert set(limiter.buckets) == {"a", "d"}


def test_reconfigure_starts_afresh() -> None:
    limiter = RateLimiter(RateLimitConfig(qps=1, burst=1, slip=0))
    verdicts(limiter, "a", 0.0, 3)
    limiter.reconfigure(RateLimitConfig(qps=100, burst=100, slip=0))
    assert verdicts(limiter, "a", 0.0, 100) == [PASS] * 100


def test_the_truncated_reply_echoes_the_question_with_tc() -> None:
    query = dns.message.make_query("my-app.internal", "AAAA", use_edns=0)
    query.flags |= dns.flags.CD
    wire = query.to_wire()
    reply = dns.message.from_wire(truncated_reply(wire))  # type: ignore[arg-type]
    assert reply.id == query.id and reply.flags & dns.flags.QR and reply.flags & dns.flags.TC
    assert reply.flags & dns.flags.RD and not reply.flags & dns.flags.AA
    assert reply.question == query.question and not reply.answer and reply.edns < 0
    assert truncated_reply(wire[:15]) is None  # the name runs off the end
    assert truncated_reply(b"\x00" * 11) is None
    assert truncated_reply(dns.message.make_response(query).to_wire()) is None  # a reply is no query
