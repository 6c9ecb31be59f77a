"""Prometheus metrics (SPEC §8), counted cheaply: plain integers on the query path, turned into
metric families only when Prometheus scrapes (a custom collector).

Labels stay bounded: a configured zone or `forward` (or `invalid` for what does not parse), a
fixed list of types plus `other`, rcode names, upstream addresses from the config.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from internal_dns import __version__

if TYPE_CHECKING:
    from internal_dns.server import DnsService

TYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
    43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY", 257: "CAA",
}
RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS",
}
# Seconds: from a cached answer (tens of microseconds) to an upstream at its deadline.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FORWARD = "forward"
INVALID = "invalid"


def type_label(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, "other")


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[0 if seconds <= self.bounds[0] else bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class QueryCounters:
    """Everything the query path counts: one counter per (zone, type, transport, rcode) and one
    duration histogram per (zone, transport), each known by its index in a flat list, so that
    the packet cache's entries (tuples the collector does not track) can name the ones they add
    to; requests and responses are sums of the counters, made at scrape time."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.histograms: list[Histogram] = []
        self._cells: dict[tuple[str, str, str, str], int] = {}
        self._durations: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def cell(self, zone: str, qtype: int, transport: str, rcode: int) -> int:
        key = (zone, TYPE_NAMES.get(qtype, "other"), transport, RCODE_NAMES.get(rcode, "other"))
        found = self._cells.get(key)
        if found is None:
            found = self._cells[key] = len(self.counts)
            self.counts.append(0)
        return found

    def histogram(self, zone: str, transport: str) -> int:
        found = self._durations.get((zone, transport))
        if found is None:
            found = self._durations[(zone, transport)] = len(self.histograms)
            self.histograms.append(Histogram())
        return found

    def observe(self, zone: str, qtype: int, transport: str, rcode: int, seconds: float) -> None:
        self.counts[self.cell(zone, qtype, transport, rcode)] += 1
        self.histograms[self.histogram(zone, transport)].observe(seconds)

    @property
    def durations(self) -> dict[tuple[str, str], Histogram]:
        return {key: self.histograms[i] for key, i in self._durations.items()}

    def requests(self) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = {}
        for (zone, qtype, transport, _), i in self._cells.items():
            out[(zone, qtype, transport)] = out.get((zone, qtype, transport), 0) + self.counts[i]
        return out

    def responses(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for (zone, _, _, rcode), i in self._cells.items():
            out[(zone, rcode)] = out.get((zone, rcode), 0) + self.counts[i]
        return out


class ServiceCollector(Collector):
    """Reads the service's counters at scrape time."""

    def __init__(self, service: DnsService):
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        counters = s.dispatcher.counters
        yield _gauge("internal_dns_build_info", "Version of the running server.", [(("version",), (__version__,), 1)])

        requests = CounterMetricFamily("internal_dns_requests", "DNS requests received.", labels=["zone", "type", "transport"])
        for (zone, qtype, transport), n in sorted(counters.requests().items()):
            requests.add_metric([zone, qtype, transport], n)
        yield requests
        responses = CounterMetricFamily("internal_dns_responses", "DNS responses sent, by rcode.", labels=["zone", "rcode"])
        for (zone, rcode), n in sorted(counters.responses().items()):
            responses.add_metric([zone, rcode], n)
        yield responses
        durations = HistogramMetricFamily("internal_dns_request_duration_seconds", "Time from a query's arrival to its reply.", labels=["zone", "transport"])
        for (zone, transport), h in sorted(counters.durations.items()):
            durations.add_metric([zone, transport], h.buckets(), h.total)
        yield durations
        yield CounterMetricFamily("internal_dns_dropped", "Packets given no reply (QR set, or shorter than a header).", value=counters.dropped)
        query_log = s.dispatcher.query_log
        if query_log is not None:  # lines the log drops rather than grow memory must not go unseen
            yield CounterMetricFamily(
                "internal_dns_query_log_dropped", "Query log lines dropped: the writer fell too far behind.", value=query_log.dropped
            )

        packets = s.dispatcher.packets
        yield GaugeMetricFamily(
            "internal_dns_packet_cache_entries", "Authoritative replies kept rendered, all views.", value=packets.entries()
        )
        yield GaugeMetricFamily(
            "internal_dns_packet_cache_bytes", "Bytes the packet cache holds, as counted against packet_cache.max_bytes.", value=packets.store.bytes
        )
        yield CounterMetricFamily(
            "internal_dns_packet_cache_evictions", "Packet cache entries dropped for the size caps (entries, bytes).", value=packets.store.evictions
        )
        yield CounterMetricFamily(
            "internal_dns_packet_cache_invalidated", "Rendered replies dropped because a reload changed their network.", value=packets.invalidated
        )

        yield from self._collector()
        yield from self._tcp()
        yield from self._registry()
        yield from self._forwarder()

    def _collector(self) -> Iterator[Metric]:
        watch = self.service.collector_watch
        pauses = HistogramMetricFamily(
            "internal_dns_gc_pause_seconds", "Pauses of Python's garbage collector (every thread stops), by generation.", labels=["generation"]
        )
        for generation, h in enumerate(watch.pauses):
            pauses.add_metric([str(generation)], h.buckets(), h.total)
        yield pauses
        yield GaugeMetricFamily("internal_dns_gc_longest_pause_seconds", "The longest collector pause since the server started.", value=watch.longest)

    def _tcp(self) -> Iterator[Metric]:
        tcp = self.service.tcp
        yield GaugeMetricFamily("internal_dns_tcp_connections", "TCP connections open.", value=len(tcp.open))
        rejected = CounterMetricFamily(
            "internal_dns_tcp_rejected", "TCP connections closed at once: every connection busy (cap), or too many from one address (per_source).", labels=["reason"]
        )
        for reason, n in tcp.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected
        closed = CounterMetricFamily(
            "internal_dns_tcp_closed",
            "TCP connections the server closed: idle, a query not whole in time (message_timeout), replies not read (not_draining), or given way to a new connection (evicted).",
            labels=["reason"],
        )
        for reason, n in tcp.closed.items():
            closed.add_metric([reason], n)
        yield closed

    def _registry(self) -> Iterator[Metric]:
        store = self.service.store
        snapshot = store.current
        entities = GaugeMetricFamily("internal_dns_registry_entities", "Entities in the served snapshot.", labels=["kind"])
        if snapshot is not None:
            for kind, n in snapshot.counts().items():
                entities.add_metric([kind], n)
        yield entities
        yield GaugeMetricFamily("internal_dns_registry_generation", "Snapshots loaded since start.", value=store.generation)
        yield GaugeMetricFamily("internal_dns_registry_serial", "SOA serial of the served snapshot.", value=snapshot.serial if snapshot else 0)
        age = store.age()
        yield GaugeMetricFamily(
            "internal_dns_registry_snapshot_age_seconds",
            "Seconds since the registry was last known to match the served snapshot (NaN before the first).",
            value=age if age is not None else float("nan"),
        )
        yield CounterMetricFamily("internal_dns_registry_rejected", "Snapshots rejected by validation.", value=store.rejections)
        yield GaugeMetricFamily(
            "internal_dns_registry_store_up", "1 while the registry's store can be read, 0 while it cannot.", value=0 if store.unreachable_since is not None else 1
        )
        yield GaugeMetricFamily(
            "internal_dns_registry_left_out", "Entities a live store holds that do not fit and are not served.", value=len(store.left_out)
        )

    def _forwarder(self) -> Iterator[Metric]:
        fwd = self.service.forwarder
        if fwd is None:
            return
        results = CounterMetricFamily("internal_dns_forward_requests", "Queries sent upstream, by upstream and result.", labels=["upstream", "result"])
        healthy = GaugeMetricFamily("internal_dns_upstream_healthy", "1 while an upstream is up, 0 while marked down.", labels=["upstream"])
        durations = HistogramMetricFamily("internal_dns_forward_request_duration_seconds", "Time an upstream took to answer.", labels=["upstream"])
        probes = CounterMetricFamily(
            "internal_dns_upstream_probes", "Health checks (`. NS` probes) of upstreams, by result.", labels=["upstream", "result"]
        )
        for u in fwd.upstreams:
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
        yield CounterMetricFamily("internal_dns_forward_shared", "Queries that joined an identical one in flight.", value=fwd.stats.deduplicated)
        yield CounterMetricFamily("internal_dns_forward_over_capacity", "Queries answered SERVFAIL at once: too many in flight.", value=fwd.stats.in_flight_rejected)
        yield GaugeMetricFamily("internal_dns_forward_in_flight", "Distinct questions waiting on an upstream.", value=len(fwd.flights))
        cache = fwd.cache
        if cache is None:
            return
        st = cache.stats
        yield CounterMetricFamily("internal_dns_cache_hits", "Forwarded questions answered from the cache.", value=st.hits)
        yield CounterMetricFamily("internal_dns_cache_misses", "Forwarded questions not in the cache.", value=st.misses)
        yield CounterMetricFamily("internal_dns_cache_evictions", "Cache entries dropped for the size caps (entries, bytes).", value=cache.evictions)
        yield CounterMetricFamily("internal_dns_cache_stale", "Stale answers served while upstreams failed (RFC 8767).", value=st.stale)
        yield GaugeMetricFamily("internal_dns_cache_entries", "Answers in the cache.", value=len(cache))
        yield GaugeMetricFamily("internal_dns_cache_bytes", "Bytes the cache holds, as counted against cache.max_bytes.", value=cache.store.bytes)


def _gauge(name: str, doc: str, rows: Iterable[tuple[tuple[str, ...], tuple[str, ...], float]]) -> Metric:
    family: Any = None
    for labels, values, value in rows:
        if family is None:
            family = GaugeMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(values), value)
    return family


def registry_for(service: DnsService) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    return registry
