"""Per-source rate limits on UDP (`rate_limit:`): one source flooding must not starve the others.

A token bucket per source address: `qps` tokens a second, up to `burst`. A datagram from a source
with a token left is answered as ever; one without is dropped, except every `slip`-th, which gets
an empty reply with TC set (as response-rate limiting in BIND, Knot and PowerDNS does): a real
client, whose query was perhaps one of many behind a busy NAT or a burst, retries over TCP and is
answered there, while a spoofed flood's victim receives nothing larger than the queries were.
The TC replies draw on a bucket of their own, of the same rate and burst: a source flooding at
any rate is sent at most `qps` answers and `qps` TC replies a second, so what it costs the
server is bounded, not a share of its flood (a flood at 30,000 a second was otherwise sent
15,000 TC replies a second, each costing a send like an answer, and another source's queries
waited behind them: p99 8–12 ms, and 2.5–3.6 ms with this bucket; docs/speed.md).
TCP is not limited here: it cannot be spoofed, and has its own caps per source (`tcp:`).

Checked before anything else is done with the datagram, with the time read once per wake-up of
the reactor: an over-limit datagram costs a dictionary lookup and some arithmetic. Sources are
remembered up to `max_sources`; past that, those whose buckets have filled up again (idle for
`burst / qps` seconds) are forgotten, and if that is not enough, all of them.

Counted by outcome, never by client: `internal_dns_rate_limited_total{outcome}`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from internal_dns.transport.settings import RateLimitConfig
from internal_dns.wire import Malformed, skip_name

PASS, DROP, SLIP = 0, 1, 2
_ANSWER_BUCKET, _TC_BUCKET, _LIMITED = 0, 2, 4  # where in a source's list (RateLimiter.buckets)
_FLAGS = struct.Struct("!H")
_QR, _TC, _OPCODE_RD = 0x8000, 0x0200, 0x7900  # opcode and RD are echoed


class RateLimiter:
    """The buckets of every UDP listener of one server (a source is one client whichever
    address it asks)."""

    __slots__ = ("config", "buckets", "dropped", "slipped")

    def __init__(self, config: RateLimitConfig):
        self.config = config
        # source -> [tokens, when last filled, TC tokens, when those were last filled, limited
        # datagrams since the last slip]; the TC bucket is filled only when it is drawn on
        self.buckets: dict[str, list[float]] = {}
        self.dropped = 0
        self.slipped = 0

    def check(self, source: str, now: float) -> int:
        """PASS, DROP or SLIP for one datagram from `source` at `now`."""
        bucket = self.buckets.get(source)
        config = self.config
        if bucket is None:
            if len(self.buckets) >= config.max_sources:
                self._forget(now)
            self.buckets[source] = [config.burst - 1.0, now, config.burst, now, 0.0]
            return PASS
        if _draw(bucket, _ANSWER_BUCKET, now, config.qps, config.burst):
            return PASS
        slip = config.slip
        if slip > 0:
            bucket[_LIMITED] += 1
            if bucket[_LIMITED] >= slip and _draw(bucket, _TC_BUCKET, now, config.qps, config.burst):
                bucket[_LIMITED] = 0
                self.slipped += 1
                return SLIP
            # (no TC token either: dropped, and the next one limited tries again)
        self.dropped += 1
        return DROP

    def reconfigure(self, config: RateLimitConfig) -> None:
        self.config = config
        self.buckets.clear()

    def _forget(self, now: float) -> None:
        """Make room: forget the sources whose buckets are full again (remembering them changes
        nothing), and if every one is still busy, all of them (a flood of spoofed sources)."""
        qps, burst = self.config.qps, self.config.burst
        full = [
            source
            for source, bucket in self.buckets.items()
            if _filled(bucket, _ANSWER_BUCKET, now, qps, burst) >= burst and _filled(bucket, _TC_BUCKET, now, qps, burst) >= burst
        ]
        for source in full:
            del self.buckets[source]
        if len(self.buckets) >= self.config.max_sources:
            self.buckets.clear()

    def collect(self) -> Iterator[Metric]:
        limited = CounterMetricFamily(
            "internal_dns_rate_limited",
            "UDP datagrams over their source's rate limit: dropped, or answered with TC to retry over TCP.",
            labels=["outcome"],
        )
        limited.add_metric(["dropped"], self.dropped)
        limited.add_metric(["truncated"], self.slipped)
        yield limited
        sources = len(self.buckets)
        yield GaugeMetricFamily("internal_dns_rate_limit_sources", "Sources whose UDP rate is being followed.", value=sources)


def _filled(bucket: list[float], at: int, now: float, qps: float, burst: float) -> float:
    """The tokens of the bucket at `at` (its tokens, then when it was last filled) at `now`."""
    tokens = bucket[at] + (now - bucket[at + 1]) * qps
    return burst if tokens > burst else tokens


def _draw(bucket: list[float], at: int, now: float, qps: float, burst: float) -> bool:
    """Take a token from the bucket at `at`, filled first for the time since, up to `burst`;
    False when there is none."""
    tokens = _filled(bucket, at, now, qps, burst)
    bucket[at + 1] = now
    if tokens >= 1.0:
        bucket[at] = tokens - 1.0
        return True
    bucket[at] = tokens
    return False


def truncated_reply(query: bytes) -> bytes | None:
    """An empty reply with TC to a query: its ID, opcode, RD and question, no records (None for a
    datagram that is no query of one question whose name can be walked)."""
    if len(query) < 17 or query[2] & 0x80 or query[4:6] != b"\x00\x01":
        return None
    try:
        end = skip_name(query, 12, pointers=False) + 4
    except Malformed:
        return None
    if end > len(query):
        return None
    flags = _QR | _TC | (_FLAGS.unpack_from(query, 2)[0] & _OPCODE_RD)
    return query[:2] + _FLAGS.pack(flags) + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]
