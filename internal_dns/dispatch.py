"""From query bytes to reply bytes: the protocol rules of SPEC §6 and the hand-off to the schemes.

No I/O here: transports call `Dispatcher.handle` with the bytes, the peer's host and the listener,
and write back what it returns (None: stay silent).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from time import perf_counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from internal_dns.authority.answer import Zone, Zones, answer, private_reverse
from internal_dns.authority.packetcache import RENDERING, TCP, UDP, PacketCache, Rendered, turn_key
from internal_dns.authority.ptr import ReverseNames
from internal_dns.authority.reverse import PrivateReverse, is_reverse, served_prefix
from internal_dns.authority.views import View, ViewResolver
from internal_dns.config import Config, ListenConfig
from internal_dns.counting import FORWARD, INVALID, QueryCounters, rcode_label, type_label
from internal_dns.forward.forwarder import Forwarder
from internal_dns.ops.querylog import QueryLog
from internal_dns.records import (
    ANY,
    AXFR,
    BADVERS,
    CH,
    FORMERR,
    IN,
    IXFR,
    NOERROR,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    TXT,
    Answer,
    RRset,
    txt_rdata,
)
from internal_dns.registry.model import NetworkIndex, Snapshot
from internal_dns.wire import TCP_LIMIT, Malformed, Query, header_reply, opcode_of, parse_query, render

log = Logger()

_CHAOS_ID_NAMES = {("id", "server"), ("hostname", "bind")}


class Dispatcher:
    def __init__(self, config: Config, clock: IReactorTime):
        self.config = config
        self.zones = Zones(dict(config.zones))
        self.reverse_names = ReverseNames(self.zones.by_scheme)
        self.resolver: ViewResolver | None = None
        self.reverse: PrivateReverse | None = None
        self.forwarder: Forwarder | None = None
        self.counters = QueryCounters()
        self.packets = PacketCache(self.counters, clock, config.packet_cache.max_entries, config.packet_cache.max_bytes)
        self.query_log: QueryLog | None = None

    def reconfigure(self, config: Config) -> None:
        """A config whose zones, views, TTL, payload or id may differ: nothing rendered before
        can be trusted, and views are chosen anew."""
        self.config = config
        self.zones = Zones(dict(config.zones))
        self.reverse_names = ReverseNames(self.zones.by_scheme)
        self.packets.clear()
        if self.resolver is not None:
            self.resolver = ViewResolver(self.resolver.snapshot, config.views, config.region)

    def swap(self, snapshot: Snapshot) -> None:
        """Called on the reactor thread with each new snapshot; one assignment makes it live.
        What is built from the networks' definitions alone is built again only when they
        change: a change to machines (a check flipping many times a second) costs the reactor
        no walk over every network."""
        resolver = self.resolver
        before = resolver.snapshot if resolver is not None else None
        if self.reverse is None or before is None or snapshot.defined is not before.defined:
            self.reverse = PrivateReverse(
                served_prefix(p) for n in snapshot.defined.values() for p in (n.prefix6, n.prefix4) if p is not None
            )
        if resolver is None:
            self.resolver = ViewResolver(snapshot, self.config.views, self.config.region)
        else:
            self.resolver = resolver.following(snapshot)

        # Regions are every network's: `nearest` and `<region>.<app>` read them beside the index.
        regions_moved = before is None or before.regions != snapshot.regions

        def changed(network: str) -> bool | frozenset[str]:
            # The builder kept the very same index object for a network whose data is equal, and
            # for one where only machines changed in place (NetworkIndex.replacing) the same
            # definition, peers, Flycast addresses and unchanged apps' indexes: then only the
            # apps whose index is new (and the network-wide names) are rendered again.
            if regions_moved or before is None or network not in snapshot.networks:
                return True
            old, new = before.networks.get(network), snapshot.networks[network]
            if old is new:
                return False
            if old is None or not (
                old.network is new.network
                and old.peers is new.peers
                and old.flycast is new.flycast
                and old.app_names is new.app_names
            ):
                return True
            return frozenset(name for name, app in new.apps.items() if old.apps.get(name) is not app)

        self.packets.swap(snapshot.serial, changed)

    def collect(self) -> Iterator[Metric]:
        counters = self.counters
        requests = CounterMetricFamily("internal_dns_requests", "DNS requests received.", labels=["zone", "type", "transport"])
        for (zone, qtype, transport), n in sorted(counters.requests().items()):
            requests.add_metric([zone, qtype, transport], n)
        yield requests
        responses = CounterMetricFamily("internal_dns_responses", "DNS responses sent, by rcode.", labels=["zone", "rcode"])
        for (zone, rcode), n in sorted(counters.responses().items()):
            responses.add_metric([zone, rcode], n)
        yield responses
        durations = HistogramMetricFamily(
            "internal_dns_request_duration_seconds", "Time from a query's arrival to its reply.", labels=["zone", "transport"]
        )
        for (zone, transport), h in sorted(counters.durations.items()):
            durations.add_metric([zone, transport], h.buckets(), h.total)
        yield durations
        yield CounterMetricFamily(
            "internal_dns_dropped", "Packets given no reply (QR set, or shorter than a header).", value=counters.dropped
        )
        failed_open = CounterMetricFamily(
            "internal_dns_health_fail_open",
            "Answers that gave critical machines, because every machine their name would give was critical.",
            labels=["zone"],
        )
        for zone_name, n in sorted(counters.failed_open().items()):
            failed_open.add_metric([zone_name], n)
        yield failed_open
        if self.query_log is not None:
            yield from self.query_log.collect()
        yield from self.packets.collect()

    def respond(
        self, data: bytes, host: str, local: str | None, listener: ListenConfig, tcp: bool, hosts: dict[str, bytes]
    ) -> bytes | Deferred[bytes] | None:
        """What both transports call with each query: the packet cache first (`hosts` is the
        source → tag map of this listener, destination and transport), then the full path.
        `local` is the address the query was sent to, on a wildcard listener (else None)."""
        started = perf_counter()
        tag = hosts.get(host)
        if tag is not None:
            reply = self.packets.reply(tag, data, started)
            if reply is not None:
                return reply
        return self.handle(data, host, listener, tcp, started, local)

    def handle(
        self, data: bytes, host: str, listener: ListenConfig, tcp: bool, started: float | None = None, local: str | None = None
    ) -> bytes | Deferred[bytes] | None:
        started = perf_counter() if started is None else started
        try:
            q = parse_query(data)
        except Malformed:
            # Only a QUERY's shape is known here; another opcode's body may rightly differ (DSO
            # has no question, RFC 8490 §5.1), and NOTIMP is what tells that client the truth.
            refusal = header_reply(data, FORMERR if opcode_of(data) == 0 else NOTIMP)
            self.counters.observe(INVALID, 0, "tcp" if tcp else "udp", refusal[3] & 0xF, perf_counter() - started)
            return refusal
        if q is None:
            self.counters.dropped += 1
            return None
        resolver = self.resolver
        view = resolver.resolve(host, listener, local) if resolver is not None else None
        zone = self.zones.match(q.labels)
        try:
            # whether the answer failed open (SPEC §3, Health) comes with it, to be counted with it
            reply, failed_open = self._dispatch(q, view, zone, tcp, host, listener, local)
        except Exception:  # a bug must cost one answer, never the server
            log.failure("internal error answering {name}", name=q.name)
            reply, failed_open = self._refuse(q, SERVFAIL, tcp), False
        label = zone.name if zone is not None else FORWARD
        if isinstance(reply, bytes):
            self._observe(reply, q, label, view, host, tcp, started, failed_open)
        elif reply is not None:  # forwarded: counted when it comes, and never an answer that failed open
            reply.addCallback(self._observe_later, q, label, view, host, tcp, started, False)
        return reply

    def _observe(
        self, reply: bytes, q: Query, zone: str, view: View | None, host: str, tcp: bool, started: float, failed_open: bool
    ) -> None:
        seconds = perf_counter() - started
        rcode = BADVERS if q.edns is not None and q.edns.version > 0 else reply[3] & 0xF
        transport = "tcp" if tcp else "udp"
        self.counters.observe(zone, q.qtype, transport, rcode, seconds, failed_open)
        if self.query_log is not None:
            network = view.network if view is not None else None
            self.query_log.record(host, network, q.name, type_label(q.qtype), zone, rcode_label(rcode), seconds, transport)

    def _observe_later(self, reply: bytes, *context: Any) -> bytes:
        self._observe(reply, *context)
        return reply

    def _dispatch(
        self, q: Query, view: View | None, zone: Zone | None, tcp: bool, host: str, listener: ListenConfig, local: str | None
    ) -> tuple[bytes | Deferred[bytes], bool]:
        """The reply, and whether it is an answer that failed open (only an authoritative one can)."""
        if q.opcode != 0:
            return self._refuse(q, NOTIMP, tcp), False
        if q.edns is not None and q.edns.version > 0:
            return self._refuse(q, BADVERS, tcp), False
        if q.qclass != IN:
            return (self._chaos(q, tcp) if q.qclass == CH else self._refuse(q, REFUSED, tcp)), False
        if q.qtype in (AXFR, IXFR):
            return self._refuse(q, REFUSED, tcp), False
        resolver = self.resolver
        if zone is None:
            reverse = self.reverse
            if is_reverse(q.labels) and resolver is not None and reverse is not None and view is not None:
                # A reverse name inside a network's prefix stays here, forwarding on or off.
                zone_labels = reverse.zone_of(q.labels)
                if zone_labels is not None:
                    return self._private_reverse(q, view, zone_labels, resolver.snapshot, tcp), False
            # The one hand-off to the forwarder: every other name outside the configured zones.
            if self.forwarder is None:
                return self._refuse(q, REFUSED, tcp), False
            if resolver is None or reverse is None:
                # Before the first snapshot no one can tell which reverse names are private.
                return self._refuse(q, SERVFAIL, tcp), False
            if view is None:
                return self._refuse(q, REFUSED, tcp), False
            hit = self.forwarder.cached(q, tcp)
            if hit is None:
                return self.forwarder.forward(q, tcp), False
            reply, until = hit
            if self.query_log is None:  # as for authoritative answers: the transport serves it again
                transport = "tcp" if tcp else "udp"
                cell = self.counters.cell(FORWARD, q.qtype, transport, reply[3] & 0xF)
                histogram = self.counters.histogram(FORWARD, transport)
                tag = self.packets.tag(view.network, view.region, TCP if tcp else UDP)
                if self.packets.remember_forwarded(tag, q.data, tcp, reply, until, cell, histogram):
                    self.packets.bind(listener, tcp, local, host, tag)
            return reply, False
        if resolver is None:
            return self._refuse(q, SERVFAIL, tcp), False  # never NXDOMAIN before the first snapshot
        if view is None:
            return self._refuse(q, REFUSED, tcp), False
        snapshot = resolver.snapshot
        turns_at = turn_key(view.network, q.data, q.question_end)
        computed: list[Answer] = []

        def make() -> Rendered:
            result = answer(snapshot, view, zone, q.labels, q.qtype, self.config.ttl)
            computed.append(result)
            transport = "tcp" if tcp else "udp"
            return Rendered(
                result,
                lambda turn: self._render(q, result, view, tcp, turn),
                turns_at if _rotates(result) else None,
                self.counters.cell(zone.name, q.qtype, transport, result.rcode, result.fail_open),
                self.counters.histogram(zone.name, transport),
                self.packets.stamp(view.network, _app_of(q.labels, zone, snapshot.networks[view.network])),
            )

        tag = self.packets.tag(view.network, view.region, TCP if tcp else UDP)
        cached = self.packets.answer(tag, self.packets.tag(view.network, view.region, RENDERING), q.data, tcp, make)
        if cached is not None:  # and the next such question is served by the transport itself
            if self.query_log is None:  # with a query log every query takes this path, to be logged
                self.packets.bind(listener, tcp, local, host, tag)
            reply, cell = cached
            return reply, self.counters.fails_open(cell)
        result = computed[0] if computed else answer(snapshot, view, zone, q.labels, q.qtype, self.config.ttl)
        return self._render(q, result, view, tcp, self._turn(turns_at, result)), result.fail_open

    def _render(self, q: Query, result: Answer, view: View | None, tcp: bool, turn: int = 0) -> bytes:
        """Every reply but the packet cache's is rendered here: one place for RA, the size limit,
        the payload we advertise and the rotation."""
        return render(
            q,
            result,
            recursion_available=self.recursion_available(view),
            limit=self._limit(q, tcp),
            server_payload=self.config.edns_payload,
            rotation=turn,
            nsid=self.config.server_id.encode() if q.edns is not None and q.edns.nsid else None,  # only when asked
        )

    def _limit(self, q: Query, tcp: bool) -> int:
        # Over UDP never more than our own advertised payload either, even to a client offering
        # more: past ~1232 bytes replies fragment, and fragments get lost (DNS Flag Day 2020).
        return TCP_LIMIT if tcp else min(q.udp_limit(), self.config.edns_payload)

    def _private_reverse(self, q: Query, view: View, zone_labels: int, snapshot: Snapshot, tcp: bool) -> bytes:
        net = snapshot.networks[view.network]
        names = partial(self.reverse_names.lookup, net)
        result = private_reverse(q.labels, zone_labels, q.qtype, snapshot.serial, self.config.ttl, names)
        return self._render(q, result, view, tcp)

    def recursion_available(self, view: View | None) -> bool:
        return view is not None and self.forwarder is not None

    def _turn(self, turns_at: bytes, result: Answer) -> int:
        """Successive answers to the same question start one address further along."""
        if not _rotates(result):
            return 0
        turns = self.packets.turns
        turn = turns.get(turns_at, 0)
        turns[turns_at] = turn + 1
        return turn

    def _refuse(self, q: Query, rcode: int, tcp: bool) -> bytes:
        return self._render(q, Answer(rcode, authoritative=False), None, tcp)

    def _chaos(self, q: Query, tcp: bool) -> bytes:
        if q.labels not in _CHAOS_ID_NAMES or q.qtype not in (TXT, ANY):
            return self._refuse(q, REFUSED, tcp)
        record = RRset(0, TXT, 0, (txt_rdata(self.config.server_id),), rclass=CH)
        return self._render(q, Answer(NOERROR, answer=(record,)), None, tcp)


def _app_of(labels: tuple[str, ...], zone: Zone, net: NetworkIndex) -> str | None:
    """The app a name's answer depends on (the label just below the zone, when it is one of the
    network's apps), or None: a network-wide name, the apex, or a name that does not exist."""
    below = len(labels) - len(zone.labels) - 1
    return labels[below] if below >= 0 and labels[below] in net.apps else None


def _rotates(result: Answer) -> bool:
    return any(rs.rotates and len(rs.rdatas) > 1 for rs in result.answer)
