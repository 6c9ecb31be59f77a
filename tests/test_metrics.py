"""SPEC §8: Prometheus metrics, scraped over a real HTTP socket from a running server and parsed
with prometheus-client's own parser.

Each family is shown to move with the traffic that drives it, and its labels to stay within
fixed lists: a configured zone (or `forward`, or `invalid`), a fixed list of types plus `other`,
rcode names, configured upstreams; never a query name or a client address.
"""

from __future__ import annotations

import math
import random
import socket
import struct
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.opcode
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from internal_dns.counting import DURATION_BUCKETS, RCODE_NAMES, TYPE_NAMES
from internal_dns.forward.upstream import PROBE_RESULTS, RESULTS
from internal_dns.ops.gcwatch import PAUSE_BUCKETS
from internal_dns.transport.tcp import CLOSED, REJECTED
from tests.conftest import RunningServer, on_reactor, write_yaml
from tests.dnsclient import Reply, make_query
from tests.fake_upstream import FakeUpstream, Pending

StartServer = Callable[..., RunningServer]
METRICS = {"address": "127.0.0.1", "port": 0}  # an ephemeral port, read back from the listener
ZONES = ("internal", "flycast", "railway.internal")

# Every family the server exposes, by its name as the parser gives it (counters without `_total`).
FAMILIES = {
    "internal_dns_build_info": "gauge",
    "internal_dns_requests": "counter",
    "internal_dns_responses": "counter",
    "internal_dns_request_duration_seconds": "histogram",
    "internal_dns_dropped": "counter",
    "internal_dns_health_fail_open": "counter",
    "internal_dns_packet_cache_entries": "gauge",
    "internal_dns_packet_cache_bytes": "gauge",
    "internal_dns_packet_cache_evictions": "counter",
    "internal_dns_packet_cache_invalidated": "counter",
    "internal_dns_gc_pause_seconds": "histogram",
    "internal_dns_gc_longest_pause_seconds": "gauge",
    "internal_dns_tcp_connections": "gauge",
    "internal_dns_tcp_rejected": "counter",
    "internal_dns_tcp_closed": "counter",
    "internal_dns_rate_limited": "counter",
    "internal_dns_rate_limit_sources": "gauge",
    "internal_dns_registry_entities": "gauge",
    "internal_dns_registry_generation": "gauge",
    "internal_dns_registry_serial": "gauge",
    "internal_dns_registry_snapshot_age_seconds": "gauge",
    "internal_dns_registry_rejected": "counter",
    "internal_dns_registry_store_up": "gauge",
    "internal_dns_registry_left_out": "gauge",
    "internal_dns_registry_catching_up": "gauge",
}
FORWARD_FAMILIES = {
    "internal_dns_forward_requests": "counter",
    "internal_dns_forward_request_duration_seconds": "histogram",
    "internal_dns_upstream_healthy": "gauge",
    "internal_dns_upstream_probes": "counter",
    "internal_dns_forward_shared": "counter",
    "internal_dns_forward_over_capacity": "counter",
    "internal_dns_forward_in_flight": "gauge",
    "internal_dns_cache_hits": "counter",
    "internal_dns_cache_misses": "counter",
    "internal_dns_cache_evictions": "counter",
    "internal_dns_cache_stale": "counter",
    "internal_dns_cache_entries": "gauge",
    "internal_dns_cache_bytes": "gauge",
}


# --- scraping -------------------------------------------------------------------------------------


def http_get(server: RunningServer, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of one GET on the server's operator listener."""
    port = server.service.http_port.getHost().port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


@dataclass
class Scrape:
    types: dict[str, str]  # family name → type
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when the series does not exist (yet)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in self.samples if s.name == name}

    def histogram(self, name: str, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
        """(buckets as (upper bound, cumulative count) in order, count, sum)."""
        buckets = sorted(
            (float(s.labels["le"]), s.value)
            for s in self.samples
            if s.name == f"{name}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
        )
        return buckets, self.value(f"{name}_count", **labels), self.value(f"{name}_sum", **labels)


def scrape(server: RunningServer) -> Scrape:
    status, content_type, text = http_get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    families = list(text_string_to_metric_families(text))
    return Scrape({f.name: f.type for f in families}, [s for f in families for s in f.samples])


def assert_histogram_sound(buckets: list[tuple[float, float]], count: float, total: float) -> None:
    assert [b for b, _ in buckets] == [*DURATION_BUCKETS, math.inf]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), buckets  # cumulative: never decreasing
    assert counts[-1] == count
    assert total >= 0


# --- fixtures -------------------------------------------------------------------------------------


def with_metrics(start_server: StartServer, **overrides: Any) -> RunningServer:
    return start_server(metrics=METRICS, **overrides)


def forwarding(
    start_server: StartServer, fake: FakeUpstream, cache: dict[str, Any] | None = None, **forward: Any
) -> RunningServer:
    overrides: dict[str, Any] = {"upstreams": [fake.address], "forward": {"enabled": True, **forward}}
    if cache is not None:
        overrides["cache"] = cache
    return with_metrics(start_server, **overrides)


def broken_registry(registry_dir: Path) -> Path:
    broken = registry_dir / "zz-broken.yaml"
    broken.write_text("peers: [unclosed\n")
    return broken


# --- the families ---------------------------------------------------------------------------------


def test_every_family_is_exposed_with_its_type(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake)
    s = scrape(server)
    assert s.types == {**FAMILIES, **FORWARD_FAMILIES}
    assert [(x.name, x.labels, x.value) for x in s.samples if x.name == "internal_dns_build_info"] == [
        ("internal_dns_build_info", {"version": __import__("internal_dns").__version__}, 1.0)
    ]


def test_forward_families_absent_when_forwarding_is_off(start_server: StartServer) -> None:
    assert scrape(with_metrics(start_server)).types == FAMILIES


def test_query_log_family_only_when_the_log_is_on(start_server: StartServer, tmp_path: Path) -> None:
    s = scrape(with_metrics(start_server, query_log=str(tmp_path / "queries.log")))
    assert s.types == {**FAMILIES, "internal_dns_query_log_dropped": "counter"}
    assert s.value("internal_dns_query_log_dropped_total") == 0


def test_requests_by_zone_type_and_transport(start_server: StartServer) -> None:
    server = with_metrics(start_server)  # forwarding off: names outside the zones are REFUSED
    assert scrape(server).series("internal_dns_requests_total") == {}
    server.ask("my-app.internal", "AAAA")
    server.ask("my-app.internal", "AAAA")
    server.ask("vms.my-app.internal", "TXT", tcp=True)
    server.ask("api.flycast", "AAAA")
    server.ask("web.railway.internal", "A", source="127.0.0.3", tcp=True)
    server.ask("my-app.internal", "NAPTR")  # a type outside the fixed list
    server.ask("my-app.internal", 65280, tcp=True)  # a private-use type number
    assert server.ask("www.example.com", "A").rcode_text == "REFUSED"
    server.ask("www.example.com", "AAAA", tcp=True)
    s = scrape(server)
    assert s.series("internal_dns_requests_total") == {
        (("transport", "udp"), ("type", "AAAA"), ("zone", "internal")): 2,
        (("transport", "tcp"), ("type", "TXT"), ("zone", "internal")): 1,
        (("transport", "udp"), ("type", "AAAA"), ("zone", "flycast")): 1,
        (("transport", "tcp"), ("type", "A"), ("zone", "railway.internal")): 1,
        (("transport", "udp"), ("type", "other"), ("zone", "internal")): 1,
        (("transport", "tcp"), ("type", "other"), ("zone", "internal")): 1,
        (("transport", "udp"), ("type", "A"), ("zone", "forward")): 1,
        (("transport", "tcp"), ("type", "AAAA"), ("zone", "forward")): 1,
    }
    server.ask("my-app.internal", "AAAA")
    assert scrape(server).value("internal_dns_requests_total", zone="internal", type="AAAA", transport="udp") == 3


def test_forwarded_requests_count_under_forward(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake)
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    assert server.ask("www.example.test", "A", tcp=True).addresses("A") == ["192.0.2.10"]  # from the cache
    s = scrape(server)
    assert s.value("internal_dns_requests_total", zone="forward", type="A", transport="udp") == 1
    assert s.value("internal_dns_requests_total", zone="forward", type="A", transport="tcp") == 1
    assert s.value("internal_dns_responses_total", zone="forward", rcode="NOERROR") == 2


def malformed_query() -> bytes:
    """A header announcing two questions: FORMERR, and no question to take a zone from."""
    return struct.pack("!HHHHHH", 0x4242, 0x0100, 2, 0, 0, 0) + b"\x03foo\x00\x00\x01\x00\x01" * 2


def test_responses_by_rcode(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake)
    assert server.ask("my-app.internal", "AAAA").rcode_text == "NOERROR"
    assert server.ask("nope.internal", "AAAA").rcode_text == "NXDOMAIN"
    assert server.ask("nope.flycast", "AAAA").rcode_text == "NXDOMAIN"
    assert server.ask("my-app.internal", "AXFR", tcp=True).rcode_text == "REFUSED"
    assert server.ask("my-app.internal", "TXT", rdclass="CH").rcode_text == "REFUSED"
    formerr = server.raw(malformed_query())
    assert formerr[:2] == b"\x42\x42" and formerr[3] & 0xF == 1  # FORMERR
    fake.mode = "servfail"
    assert server.ask("www.example.test", "A").rcode_text == "SERVFAIL"
    status = make_query("my-app.internal", "AAAA")
    status.set_opcode(dns.opcode.STATUS)
    assert server.send(status).rcode_text == "NOTIMP"
    assert server.ask("my-app.internal", "AAAA", edns=1).rcode_text == "BADVERS"
    s = scrape(server)
    assert s.series("internal_dns_responses_total") == {
        (("rcode", "NOERROR"), ("zone", "internal")): 1,
        (("rcode", "NXDOMAIN"), ("zone", "internal")): 1,
        (("rcode", "NXDOMAIN"), ("zone", "flycast")): 1,
        (("rcode", "REFUSED"), ("zone", "internal")): 2,
        (("rcode", "FORMERR"), ("zone", "invalid")): 1,
        (("rcode", "SERVFAIL"), ("zone", "forward")): 1,
        (("rcode", "NOTIMP"), ("zone", "internal")): 1,
        (("rcode", "BADVERS"), ("zone", "internal")): 1,
    }
    # The packet that does not parse is a request too, of no known type.
    assert s.value("internal_dns_requests_total", zone="invalid", type="other", transport="udp") == 1
    server.raw(malformed_query(), tcp=True)
    assert scrape(server).value("internal_dns_responses_total", zone="invalid", rcode="FORMERR") == 2


def test_servfail_before_the_first_snapshot_is_counted(start_server: StartServer, registry_dir: Path) -> None:
    broken_registry(registry_dir)
    server = with_metrics(start_server)
    assert server.ask("my-app.internal", "AAAA").rcode_text == "SERVFAIL"
    assert scrape(server).value("internal_dns_responses_total", zone="internal", rcode="SERVFAIL") == 1


def test_request_duration_histogram(start_server: StartServer) -> None:
    server = with_metrics(start_server)
    for _ in range(5):
        server.ask("my-app.internal", "AAAA")
    server.ask("_apps.internal", "TXT", tcp=True)
    s = scrape(server)
    udp = s.histogram("internal_dns_request_duration_seconds", zone="internal", transport="udp")
    assert_histogram_sound(*udp)
    assert udp[1] == 5 and udp[2] > 0
    tcp = s.histogram("internal_dns_request_duration_seconds", zone="internal", transport="tcp")
    assert_histogram_sound(*tcp)
    assert tcp[1] == 1
    for _ in range(3):
        server.ask("my-app.internal", "AAAA")
    later = scrape(server).histogram("internal_dns_request_duration_seconds", zone="internal", transport="udp")
    assert_histogram_sound(*later)
    assert later[1] == 8 and later[2] > udp[2]
    assert all(after >= before for (_, before), (_, after) in zip(udp[0], later[0], strict=True))


def test_dropped_packets(start_server: StartServer) -> None:
    server = with_metrics(start_server)
    response = make_query("my-app.internal", "AAAA")
    response.flags |= 0x8000  # QR: a response, not a query
    response.id = 1
    query = make_query("my-app.internal", "AAAA")
    query.id = 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((server.host, server.port))
        sock.send(response.to_wire())
        sock.send(b"\x00\x03abc")  # shorter than a header
        sock.send(query.to_wire())
        # The listener reads datagrams in order: the first reply is the query's, and by then the
        # two before it have been handled (and given none).
        assert Reply.decode(sock.recv(65535)).msg.id == 2
    s = scrape(server)
    assert s.value("internal_dns_dropped_total") == 2
    assert sum(s.series("internal_dns_requests_total").values()) == 1


# --- forwarding -----------------------------------------------------------------------------------


def test_forward_requests_by_upstream_and_result(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.0, fail_threshold=10)
    up = fake.address

    def results() -> dict[str, float]:
        s = scrape(server)
        return {r: s.value("internal_dns_forward_requests_total", upstream=up, result=r) for r in RESULTS}

    assert results() == dict.fromkeys(RESULTS, 0)
    assert server.ask("www.example.test", "A").rcode_text == "NOERROR"
    assert results() == {**dict.fromkeys(RESULTS, 0), "success": 1}
    fake.mode = "servfail"
    assert server.ask("mail.example.test", "MX").rcode_text == "SERVFAIL"
    fake.mode = "refused"
    assert server.ask("refused.example.test", "A").rcode_text == "SERVFAIL"  # ours: never relayed
    fake.mode = "truncate"
    # Cut by the upstream over UDP, fetched whole over TCP, then cut again at our 1232 bytes.
    assert server.ask("big.example.test", "TXT").flag("TC")
    assert [r.transport for r in fake.queries("big.example.test.")] == ["udp", "tcp"]
    fake.mode = "noedns"  # FORMERR to EDNS: asked again without it
    assert server.ask("old.example.test", "A").rcode_text == "NXDOMAIN"
    fake.mode = "silent"
    pending = Pending.ask(server, "silent.example.test", "A")
    assert fake.wait_for(9)[-1].name == "silent.example.test."  # after 8 queries, the REFUSED one's probe among them
    server.advance(1.0)
    assert pending.reply().rcode_text == "SERVFAIL"
    assert results() == {
        "success": 3,
        "timeout": 1,
        "error": 0,
        "servfail": 1,
        "refused": 1,
        "truncated_retry": 1,
        "noedns_retry": 1,
    }


def test_forward_error_result_for_a_refused_port(start_server: StartServer, fake: FakeUpstream) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    server = with_metrics(start_server, upstreams=[f"127.0.0.1:{closed}", fake.address], forward={"enabled": True})
    assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
    s = scrape(server)
    assert s.value("internal_dns_forward_requests_total", upstream=f"127.0.0.1:{closed}", result="error") == 1
    assert s.value("internal_dns_forward_requests_total", upstream=f"127.0.0.1:{closed}", result="success") == 0
    assert s.value("internal_dns_forward_requests_total", upstream=fake.address, result="success") == 1


def test_forward_duration_histogram(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake)
    name = "internal_dns_forward_request_duration_seconds"
    before = scrape(server).histogram(name, upstream=fake.address)
    assert_histogram_sound(*before)
    assert before[1] == 0
    server.ask("www.example.test", "A")
    server.ask("www.example.test", "A")  # a cache hit: no upstream time
    server.ask("mail.example.test", "MX", tcp=True)
    after = scrape(server).histogram(name, upstream=fake.address)
    assert_histogram_sound(*after)
    assert after[1] == 2 and after[2] > 0
    # The whole request, upstream included, is timed under zone="forward" as well.
    total = scrape(server).histogram("internal_dns_request_duration_seconds", zone="forward", transport="udp")
    assert_histogram_sound(*total)
    assert total[1] == 2


def test_upstream_healthy_drops_after_failed_health_checks(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.0, fail_threshold=2, probe_interval=2.0)

    def healthy() -> float:
        return scrape(server).value("internal_dns_upstream_healthy", upstream=fake.address)

    def probes() -> dict[str, float]:
        s = scrape(server)
        return {r: s.value("internal_dns_upstream_probes_total", upstream=fake.address, result=r) for r in PROBE_RESULTS}

    assert healthy() == 1 and probes() == {"success": 0, "failure": 0}
    fake.mode = "silent"
    pending = Pending.ask(server, "n.example.test", "A")
    fake.wait_for(1)
    server.advance(1.0)
    assert pending.reply().rcode_text == "SERVFAIL"
    fake.wait_for(2)  # the health check the timeout set off
    assert healthy() == 1  # a failed query is no verdict
    server.advance(1.0)  # the first probe times out
    assert healthy() == 1 and probes() == {"success": 0, "failure": 1}
    server.advance(2.0)  # the next
    fake.wait_for(3)
    server.advance(1.0)
    assert healthy() == 0 and probes() == {"success": 0, "failure": 2}
    s = scrape(server)
    assert s.value("internal_dns_forward_requests_total", upstream=fake.address, result="timeout") == 1
    assert s.value("internal_dns_forward_requests_total", upstream=fake.address, result="success") == 0
    fake.mode = "answer"

    def probe_back() -> Any:
        d = server.service.forwarder.health_changed.next()
        server.clock.advance(2.0)
        return d

    on_reactor(server.reactor, probe_back)
    assert healthy() == 1 and probes() == {"success": 1, "failure": 2}
    # Probes are not forwarded requests: none of them was counted there.
    s = scrape(server)
    assert sum(s.series("internal_dns_forward_requests_total").values()) == 1


def test_forward_shared_over_capacity_and_in_flight(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, max_in_flight=1)
    fake.mode = "slow"
    first = Pending.ask(server, "www.example.test", "A")
    fake.wait_for(1)
    second = Pending.ask(server, "www.example.test", "A")  # joins the first
    assert server.ask("my-app.internal", "AAAA").rcode_text == "NOERROR"  # a barrier: both handled
    assert server.ask("mail.example.test", "MX").rcode_text == "SERVFAIL"  # no room for another
    s = scrape(server)
    assert s.value("internal_dns_forward_in_flight") == 1
    assert s.value("internal_dns_forward_shared_total") == 1
    assert s.value("internal_dns_forward_over_capacity_total") == 1
    fake.release()
    assert first.reply().addresses("A") == second.reply().addresses("A") == ["192.0.2.10"]
    s = scrape(server)
    assert s.value("internal_dns_forward_in_flight") == 0
    assert s.value("internal_dns_forward_shared_total") == 1
    assert s.value("internal_dns_forward_requests_total", upstream=fake.address, result="success") == 1


def test_cache_hits_misses_and_entries(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake)

    def cache() -> tuple[float, float, float]:
        s = scrape(server)
        return (
            s.value("internal_dns_cache_hits_total"),
            s.value("internal_dns_cache_misses_total"),
            s.value("internal_dns_cache_entries"),
        )

    assert cache() == (0, 0, 0)
    server.ask("www.example.test", "A")
    assert cache() == (0, 1, 1)
    server.ask("www.example.test", "A")
    server.ask("www.example.test", "A", tcp=True)
    assert cache() == (2, 1, 1)
    server.ask("nope.example.test", "A")  # a negative answer is cached too
    assert cache() == (2, 2, 2)
    assert scrape(server).value("internal_dns_cache_evictions_total") == 0


def test_cache_evictions(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, cache={"max_entries": 1})
    server.ask("www.example.test", "A")
    server.ask("www.example.test", "AAAA")
    server.ask("mail.example.test", "MX")
    s = scrape(server)
    assert s.value("internal_dns_cache_evictions_total") == 2
    assert s.value("internal_dns_cache_entries") == 1


def test_cache_stale_answers(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.0)
    assert server.ask("short.example.test", "A").addresses("A") == ["192.0.2.20"]  # TTL 2
    server.advance(3)
    fake.mode = "silent"
    assert scrape(server).value("internal_dns_cache_stale_total") == 0
    pending = Pending.ask(server, "short.example.test", "A")
    fake.wait_for(2)
    server.advance(1.0)
    assert pending.reply().addresses("A") == ["192.0.2.20"]
    s = scrape(server)
    assert s.value("internal_dns_cache_stale_total") == 1
    assert s.value("internal_dns_responses_total", zone="forward", rcode="NOERROR") == 2


def test_packet_cache_entries_and_invalidations(start_server: StartServer, registry_dir: Path) -> None:
    server = with_metrics(start_server)
    assert scrape(server).value("internal_dns_packet_cache_entries") == 0
    server.ask("my-app.internal", "AAAA")
    server.ask("my-app.internal", "AAAA")  # the same entry
    server.ask("cron.internal", "AAAA")
    server.ask("billing.internal", "AAAA", source="127.0.0.2")  # other-org's view
    s = scrape(server)
    assert s.value("internal_dns_packet_cache_entries") == 3
    assert s.value("internal_dns_packet_cache_invalidated_total") == 0
    # a machine of billing stopped: billing's reply is rendered again when next asked, the rest stays
    path = registry_dir / "other-org.yaml"
    path.write_text(path.read_text().replace("state: started", "state: stopped", 1))
    server.poll()
    assert scrape(server).value("internal_dns_packet_cache_invalidated_total") == 0
    assert len(server.ask("billing.internal", "AAAA", source="127.0.0.2").addresses()) == 1
    assert len(server.ask("my-app.internal", "AAAA").addresses()) == 3
    s = scrape(server)
    assert s.value("internal_dns_packet_cache_entries") == 3
    assert s.value("internal_dns_packet_cache_invalidated_total") == 1
    # an app added to other-org: its view's replies are all dropped; personal's two stay
    write_yaml(registry_dir / "other-org-more.yaml", {"apps": [{"name": "ledger", "network": "other-org"}]})
    server.poll()
    s = scrape(server)
    assert s.value("internal_dns_packet_cache_entries") == 2
    assert s.value("internal_dns_packet_cache_invalidated_total") == 2


# --- the registry ---------------------------------------------------------------------------------


def entities(s: Scrape) -> dict[str, float]:
    return {dict(k)["kind"]: v for k, v in s.series("internal_dns_registry_entities").items()}


def test_registry_entities_generation_and_serial(start_server: StartServer, registry_dir: Path) -> None:
    server = with_metrics(start_server)
    s = scrape(server)
    assert entities(s) == {"networks": 4, "apps": 9, "machines": 18, "peers": 4, "regions": 35}
    assert s.value("internal_dns_registry_generation") == 1
    serial = s.value("internal_dns_registry_serial")
    assert serial == server.ask("nope.internal", "AAAA").msg.authority[0][0].serial  # the SOA's
    write_yaml(
        registry_dir / "extra.yaml",
        {
            "apps": [{"name": "extra", "network": "personal"}],
            "machines": [{"id": "ab12", "app": "extra", "region": "iad", "state": "started", "ip6": "fdaa:0:18:a7b:99::2"}],
            "peers": [{"name": "extra-peer", "network": "personal", "ip6": "fdaa:0:18:a7b:99::3"}],
        },
    )
    server.poll()
    s = scrape(server)
    assert entities(s) == {"networks": 4, "apps": 10, "machines": 19, "peers": 5, "regions": 35}
    assert s.value("internal_dns_registry_generation") == 2
    assert s.value("internal_dns_registry_serial") > serial
    assert s.value("internal_dns_registry_serial") == server.ask("nope.internal", "AAAA").msg.authority[0][0].serial
    assert s.value("internal_dns_registry_rejected_total") == 0


def test_snapshot_age_and_rejections(start_server: StartServer, registry_dir: Path) -> None:
    server = with_metrics(start_server)
    assert scrape(server).value("internal_dns_registry_snapshot_age_seconds") == 0
    server.advance(30)
    server.rescan()  # a poll that finds no change confirms the snapshot: its age starts again
    assert scrape(server).value("internal_dns_registry_snapshot_age_seconds") == 0
    broken = broken_registry(registry_dir)
    server.poll()
    s = scrape(server)
    assert s.value("internal_dns_registry_rejected_total") == 1
    assert s.value("internal_dns_registry_snapshot_age_seconds") == 1  # one poll interval
    assert s.value("internal_dns_registry_generation") == 1  # the last good one still served
    server.advance(40)
    server.rescan()  # the folder still holds the rejected registry: nothing is confirmed
    s = scrape(server)
    assert s.value("internal_dns_registry_snapshot_age_seconds") == 41
    assert s.value("internal_dns_registry_rejected_total") == 1  # the same rejected content, once
    broken.unlink()
    server.poll()
    s = scrape(server)
    assert s.value("internal_dns_registry_snapshot_age_seconds") == 0
    assert s.value("internal_dns_registry_generation") == 2
    assert s.value("internal_dns_registry_rejected_total") == 1


def test_registry_before_the_first_snapshot(start_server: StartServer, registry_dir: Path) -> None:
    broken = broken_registry(registry_dir)
    server = with_metrics(start_server)
    s = scrape(server)
    assert math.isnan(s.value("internal_dns_registry_snapshot_age_seconds"))
    assert s.value("internal_dns_registry_rejected_total") == 1
    assert s.value("internal_dns_registry_generation") == 0
    assert s.value("internal_dns_registry_serial") == 0
    assert entities(s) == {}
    broken.unlink()
    server.poll()
    s = scrape(server)
    assert entities(s)["machines"] == 18 and s.value("internal_dns_registry_generation") == 1
    assert s.value("internal_dns_registry_snapshot_age_seconds") == 0


# --- TCP ------------------------------------------------------------------------------------------


def tcp_ask(sock: socket.socket, name: str) -> Reply:
    wire = make_query(name, "AAAA").to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    (length,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
    return Reply.decode(sock.recv(length, socket.MSG_WAITALL))


def connection_lost(server: RunningServer) -> Any:
    """A Deferred (made on the reactor) that fires when the one open TCP connection is closed."""
    from twisted.internet.defer import Deferred

    def hook() -> Deferred[None]:
        [protocol] = server.service.tcp.open
        done: Deferred[None] = Deferred()
        lost = protocol.connectionLost

        def and_tell(reason: Any = None) -> None:
            lost(reason)
            done.callback(None)

        protocol.connectionLost = and_tell  # type: ignore[method-assign]
        return done

    return hook


def test_tcp_connections_open(start_server: StartServer) -> None:
    server = with_metrics(start_server)
    assert scrape(server).value("internal_dns_tcp_connections") == 0
    sock = socket.create_connection((server.host, server.port), timeout=3)
    try:
        assert tcp_ask(sock, "my-app.internal").rcode_text == "NOERROR"  # accepted by now
        assert scrape(server).value("internal_dns_tcp_connections") == 1
        hook = connection_lost(server)
        done = on_reactor(server.reactor, lambda: {"d": hook()})["d"]  # hooked, not waited on
    finally:
        sock.close()
    on_reactor(server.reactor, lambda: done)
    assert scrape(server).value("internal_dns_tcp_connections") == 0


def test_tcp_rejected_over_the_cap(start_server: StartServer) -> None:
    server = with_metrics(start_server, tcp={"max_per_source": 1})
    with socket.create_connection((server.host, server.port), timeout=3) as first:
        assert tcp_ask(first, "my-app.internal").rcode_text == "NOERROR"
        try:  # a reset can come before connect() returns, with a timeout set
            with socket.create_connection((server.host, server.port), timeout=3) as second:
                assert second.recv(1) == b""  # closed by the server
        except ConnectionResetError:
            pass  # or reset: aborted
        s = scrape(server)
        assert s.value("internal_dns_tcp_rejected_total", reason="per_source") == 1
        assert s.value("internal_dns_tcp_rejected_total", reason="cap") == 0
        assert s.value("internal_dns_tcp_connections") == 1  # the first, still open
        assert tcp_ask(first, "my-app.internal").rcode_text == "NOERROR"


# --- bounded labels -------------------------------------------------------------------------------


def test_labels_stay_bounded(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding(start_server, fake, timeout=1.0, fail_threshold=1000)
    rng = random.Random(8)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    asked_names, asked_from = set(), set()
    for i in range(120):
        label = "".join(rng.choice(letters) for _ in range(rng.randint(3, 20)))
        suffix = rng.choice([".internal", ".my-app.internal", ".flycast", ".railway.internal", ".example.test", ".zz"])
        name = f"{label}{suffix}"
        rdtype = rng.choice([rng.randint(1, 65535), "A", "AAAA", "TXT"])
        if rdtype in (251, 252):  # IXFR / AXFR: REFUSED, fine, but keep the mix of answers
            rdtype = 253
        source = f"127.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        asked_names.add(label)
        asked_from.add(source)
        server.ask(name, rdtype, source=source, tcp=i % 4 == 0)
    server.raw(malformed_query())
    s = scrape(server)
    allowed = {
        "zone": {*ZONES, "forward", "invalid"},
        "type": {*TYPE_NAMES.values(), "other"},
        "transport": {"udp", "tcp"},
        "rcode": {*RCODE_NAMES.values(), "other"},
        "upstream": {fake.address},
        "result": {*RESULTS, *PROBE_RESULTS},
        "kind": {"networks", "apps", "machines", "peers", "regions"},
        "le": {*(repr(b) for b in DURATION_BUCKETS + PAUSE_BUCKETS), "+Inf"},
        "version": {__import__("internal_dns").__version__},
        "generation": {"0", "1", "2"},
        "reason": {*REJECTED, *CLOSED},
        "outcome": {"dropped", "truncated"},
    }
    values = set()
    for sample in s.samples:
        for key, value in sample.labels.items():
            assert key in allowed, (sample.name, key)
            assert value in allowed[key], (sample.name, key, value)
            values.add(value)
    assert not values & (asked_names | asked_from)
    assert sum(s.series("internal_dns_requests_total").values()) == 121
    # At most one series per zone, type and transport, however many names were asked.
    assert len(s.series("internal_dns_requests_total")) <= len(allowed["zone"]) * len(allowed["type"]) * 2
    assert any(dict(k)["type"] == "other" for k in s.series("internal_dns_requests_total"))
