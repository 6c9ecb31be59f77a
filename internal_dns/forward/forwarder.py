"""The forwarder (SPEC §7): names outside the configured zones go to the upstream resolvers.

A question is answered from the cache when it can be; otherwise identical questions in flight
share one upstream query (per transport: a TCP client's reply may be bigger). Upstreams are tried
in their configured order, healthy ones first, each exchange (a retry over TCP too) for at most
`timeout` and never past `deadline`. A failed query sets off a health check of its upstream;
`fail_threshold` failed checks in a row mark it down, and it is probed every `probe_interval`
until it answers. When every upstream fails the client gets a stale cached answer if there is one
(RFC 8767), else an upstream's SERVFAIL or our own: an upstream's REFUSED is that upstream failing
(it will not serve us), never relayed, since a client would read it as this server refusing it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from internal_dns.events import Event
from internal_dns.forward.cache import CacheKey, Entry, ReplyCache, cache_key
from internal_dns.forward.relay import UpstreamReply, fit_for_udp, for_client, upstream_query
from internal_dns.forward.settings import CacheConfig, ForwardConfig
from internal_dns.forward.upstream import Upstream, UpstreamError, exchange
from internal_dns.records import FORMERR, NOTIMP, NS, REFUSED, SERVFAIL, Answer
from internal_dns.wire import TCP_LIMIT, Query, parse_query, render

log = Logger()

# What a flight ends with: a reply to relay, a stale entry to serve, or nothing (SERVFAIL).
Outcome = UpstreamReply | Entry | None


@dataclass(slots=True)
class ForwardStats:
    in_flight_rejected: int = 0
    deduplicated: int = 0


class Forwarder:
    def __init__(
        self,
        upstreams: list[Upstream],
        config: ForwardConfig,
        cache_config: CacheConfig,
        *,
        reactor: Any,
        clock: IReactorTime,
        server_payload: int,
        exchange_fn: Callable[..., defer.Deferred[UpstreamReply]] = exchange,
    ):
        self.upstreams = upstreams
        self.config = config
        self.cache = (
            ReplyCache(cache_config.max_entries, cache_config.max_bytes, cache_config.max_ttl, cache_config.max_stale)
            if cache_config.enabled
            else None
        )
        self.serve_stale = cache_config.enabled and cache_config.serve_stale
        self.stale_ttl = cache_config.stale_ttl
        self.reactor = reactor
        self.clock = clock
        self.server_payload = server_payload
        self.server_id = b""  # NSID (RFC 5001): what a query that asks is told (the server sets it)
        self._exchange = exchange_fn
        self.flights: dict[tuple[CacheKey, bool], defer.Deferred[Outcome]] = {}
        # Upstreams under a health check: the probe in flight, or the call that sends the next.
        self._checks: dict[Upstream, defer.Deferred[UpstreamReply] | IDelayedCall] = {}
        self._stopped = False
        self.stats = ForwardStats()
        # An upstream marked down or back up (the operator's log subscribes), and a health
        # check's outcome counted.
        self.health_changed: Event[Upstream] = Event()
        self.probe_counted: Event[Upstream] = Event()
        self.health_changed.subscribe(self._log_health)

    # --- lifecycle ----------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "internal_dns_forward_requests", "Queries sent upstream, by upstream and result.", labels=["upstream", "result"]
        )
        healthy = GaugeMetricFamily(
            "internal_dns_upstream_healthy", "1 while an upstream is up, 0 while marked down.", labels=["upstream"]
        )
        durations = HistogramMetricFamily(
            "internal_dns_forward_request_duration_seconds", "Time an upstream took to answer.", labels=["upstream"]
        )
        probes = CounterMetricFamily(
            "internal_dns_upstream_probes",
            "Health checks (`. NS` probes) of upstreams, by result.",
            labels=["upstream", "result"],
        )
        for u in self.upstreams:
            for result, n in sorted(u.results.items()):
                results.add_metric([u.label, result], n)
            for result, n in sorted(u.probes.items()):
                probes.add_metric([u.label, result], n)
            healthy.add_metric([u.label], 0 if u.down else 1)
            durations.add_metric([u.label], u.durations.buckets(), u.durations.total)
        yield results
        yield durations
        yield healthy
        yield probes
        yield CounterMetricFamily(
            "internal_dns_forward_shared", "Queries that joined an identical one in flight.", value=self.stats.deduplicated
        )
        yield CounterMetricFamily(
            "internal_dns_forward_over_capacity",
            "Queries answered SERVFAIL at once: too many in flight.",
            value=self.stats.in_flight_rejected,
        )
        yield GaugeMetricFamily(
            "internal_dns_forward_in_flight", "Distinct questions waiting on an upstream.", value=len(self.flights)
        )
        if self.cache is not None:
            yield from self.cache.collect()

    def start(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
        checks, self._checks = self._checks, {}
        for check in checks.values():
            if isinstance(check, defer.Deferred):
                check.cancel()  # the probe's socket is closed; its outcome is dropped
            elif check.active():
                check.cancel()

    def healthy(self) -> bool:
        return any(not u.down for u in self.upstreams)

    # --- the query path -----------------------------------------------------------------------
    def cached(self, q: Query, tcp: bool) -> tuple[bytes, float] | None:
        """A fresh cache hit: the client's reply, and the time until which these very bytes stay
        right (TTLs count down in whole seconds), so a transport may serve them again as they are."""
        if self.cache is None:
            return None
        now = self.clock.seconds()
        entry = self.cache.fresh(cache_key(q), now)
        if entry is None:
            return None
        age = entry.age(now)
        until = entry.stored_at + min(age + 1, entry.ttl)
        return self._shape(q, tcp, entry.reply, age=age), until

    def forward(self, q: Query, tcp: bool) -> bytes | defer.Deferred[bytes]:
        """The question from an upstream (a stale answer, or SERVFAIL, when none answers)."""
        now = self.clock.seconds()
        key = cache_key(q)
        flight_key = (key, tcp)
        flight = self.flights.get(flight_key)
        if flight is not None:
            self.stats.deduplicated += 1
        else:
            if not self.healthy() and self.serve_stale and self.cache is not None:
                stale = self.cache.stale(key, now)
                if stale is not None:  # every upstream is down: do not make the client wait
                    return self._shape(q, tcp, stale.reply, stale=True)
            if len(self.flights) >= self.config.max_in_flight:
                self.stats.in_flight_rejected += 1
                return self._servfail(q, tcp)
            flight = self._fly(q, key, tcp)
            self.flights[flight_key] = flight
            flight.addErrback(self._crashed, q)
            flight.addBoth(self._landed, flight_key)
        waiter: defer.Deferred[Outcome] = defer.Deferred()
        flight.addBoth(_pass_to, waiter)
        return waiter.addCallback(self._deliver, q, tcp)

    def _crashed(self, failure: Any, q: Query) -> None:
        log.failure("forwarding {name} failed", failure, name=q.name)
        return None

    def _landed(self, outcome: Outcome, flight_key: tuple[CacheKey, bool]) -> Outcome:
        self.flights.pop(flight_key, None)
        return outcome

    def _deliver(self, outcome: Outcome, q: Query, tcp: bool) -> bytes:
        if isinstance(outcome, UpstreamReply):
            return self._shape(q, tcp, outcome)
        if isinstance(outcome, Entry):
            return self._shape(q, tcp, outcome.reply, stale=True)
        return self._servfail(q, tcp)

    def _shape(self, q: Query, tcp: bool, reply: UpstreamReply, age: int = 0, stale: bool = False) -> bytes:
        cap = reply.ttl_limit()
        if self.cache is not None:  # no record outlives its cache entry in a downstream cache
            cap = min(cap, self.cache.max_ttl) if cap is not None else self.cache.max_ttl
        wire = for_client(
            reply,
            q,
            server_payload=self.server_payload,
            age=age,
            cap=cap,
            stale_ttl=self.stale_ttl if stale else None,
            nsid=self.server_id,
        )
        return wire if tcp else fit_for_udp(wire, min(q.udp_limit(), self.server_payload))

    def _servfail(self, q: Query, tcp: bool) -> bytes:
        return render(
            q,
            Answer(SERVFAIL, authoritative=False),
            recursion_available=True,
            limit=TCP_LIMIT if tcp else q.udp_limit(),
            server_payload=self.server_payload,
            nsid=self.server_id,
        )

    @defer.inlineCallbacks
    def _fly(self, q: Query, key: CacheKey, tcp: bool) -> Any:
        started = self.clock.seconds()
        deadline = started + self.config.deadline
        fallback: UpstreamReply | None = None  # an upstream's SERVFAIL, relayed if nothing better comes
        for upstream in self._order():
            if deadline - self.clock.seconds() <= 0:
                break
            try:
                reply = yield self._ask(upstream, q, tcp, deadline)
            except UpstreamError as exc:
                self._failed(upstream, exc.result)
                continue
            if reply.rcode == REFUSED:  # it will not serve us: as good as down
                self._failed(upstream, "refused")
                continue
            if reply.rcode == SERVFAIL:
                # A working server that could not resolve this name: try the next, keep this in reserve.
                upstream.results["servfail"] += 1
                fallback = fallback or reply
                continue
            self._succeeded(upstream)
            if self.cache is not None:
                self.cache.put(key, reply, self.clock.seconds())
            return reply
        if self.serve_stale and self.cache is not None:
            stale = self.cache.stale(key, self.clock.seconds())
            if stale is not None:
                return stale
        return fallback

    @defer.inlineCallbacks
    def _ask(self, upstream: Upstream, q: Query, tcp: bool, deadline: float) -> Any:
        """One upstream's reply, every exchange with it (a retry too) ending by `deadline`.

        A FORMERR or NOTIMP without an OPT record is how a server that does not know EDNS answers
        a query with one: it is asked once more without EDNS (RFC 6891 §7). With an OPT record the
        server knows EDNS, and its answer stands.
        """
        started = perf_counter()
        for edns in (True, False):
            reply = yield self._within(upstream, upstream_query(q, edns=edns), tcp, deadline)
            if reply.truncated and not tcp:  # the whole answer is to be had over TCP
                upstream.results["truncated_retry"] += 1
                reply = yield self._within(upstream, upstream_query(q, edns=edns), True, deadline)
            if not edns or reply.rcode not in (FORMERR, NOTIMP) or reply.opt is not None:
                break
            upstream.results["noedns_retry"] += 1
        upstream.durations.observe(perf_counter() - started)
        return reply

    def _within(self, upstream: Upstream, wire: bytes, tcp: bool, deadline: float) -> defer.Deferred[UpstreamReply]:
        """One exchange, for at most `timeout` and never past `deadline`."""
        timeout = min(self.config.timeout, deadline - self.clock.seconds())
        if timeout <= 0:
            return defer.fail(UpstreamError("timeout", "no time left before the deadline"))
        return self._exchange(self.reactor, self.clock, upstream, wire, tcp=tcp, timeout=timeout)

    def _order(self) -> list[Upstream]:
        healthy = [u for u in self.upstreams if not u.down]
        return healthy or list(self.upstreams)  # all down: try them anyway, one may be back

    # --- health -------------------------------------------------------------------------------
    # After CoreDNS's forward plugin: a failed query is no verdict on an upstream (one broken
    # domain times out anywhere), it only sets off a health check of it, a `. NS` probe. Failed
    # probes in a row are what mark it down (`fail_threshold`), and an upstream whose probe failed
    # is probed every `probe_interval` until one is answered.

    def _succeeded(self, upstream: Upstream) -> None:
        upstream.results["success"] += 1
        if upstream.down:  # tried because every upstream was down, and it answered: it is back
            check = self._checks.get(upstream)
            if check is not None and not isinstance(check, defer.Deferred):  # no more probes
                check.cancel()
                del self._checks[upstream]
            self._up(upstream)

    def _failed(self, upstream: Upstream, result: str) -> None:
        upstream.results[result] += 1
        if upstream not in self._checks and not self._stopped:  # one health check at a time
            self._probe(upstream)

    def _probe(self, upstream: Upstream) -> None:
        d = self._exchange(self.reactor, self.clock, upstream, upstream_query(PROBE), tcp=False, timeout=self.config.timeout)
        self._checks[upstream] = d  # before the callbacks: a failure to send has fired already
        d.addCallbacks(self._probe_answered, self._probe_failed, callbackArgs=(upstream,), errbackArgs=(upstream,))

    def _probe_answered(self, reply: UpstreamReply, upstream: Upstream) -> None:
        # Any answer shows it works (a SERVFAIL too: its own upstreams may not), but a REFUSED
        # says it will not serve us.
        if reply.rcode == REFUSED:
            self._probe_failed(None, upstream)
            return
        upstream.probes["success"] += 1
        self._checks.pop(upstream, None)
        upstream.failures = 0
        if upstream.down:
            self._up(upstream)
        self.probe_counted.fire(upstream)

    def _probe_failed(self, failure: Any, upstream: Upstream) -> None:
        if failure is not None and failure.check(defer.CancelledError):
            return  # stopped
        upstream.probes["failure"] += 1
        upstream.failures += 1
        if not upstream.down and upstream.failures >= self.config.fail_threshold:
            upstream.down = True
            self.health_changed.fire(upstream)
        if self._stopped:
            self._checks.pop(upstream, None)
        else:
            self._checks[upstream] = self.clock.callLater(self.config.probe_interval, self._probe, upstream)
        self.probe_counted.fire(upstream)

    def _up(self, upstream: Upstream) -> None:
        upstream.down = False
        upstream.failures = 0
        self.health_changed.fire(upstream)

    def _log_health(self, upstream: Upstream) -> None:
        if upstream.down:
            log.warn(
                "upstream {upstream} marked down after {n} failed health checks; probing every {interval}s",
                upstream=upstream.label,
                n=upstream.failures,
                interval=self.config.probe_interval,
            )
        else:
            log.info("upstream {upstream} answers again", upstream=upstream.label)


def _pass_to(outcome: Outcome, waiter: defer.Deferred[Outcome]) -> Outcome:
    waiter.callback(outcome)
    return outcome


def _probe_query() -> Query:
    # ". NS": any reply at all shows the upstream is back.
    q = parse_query(struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0) + b"\x00" + struct.pack("!HH", NS, 1))
    assert q is not None
    return q


PROBE = _probe_query()
