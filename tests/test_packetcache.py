"""The packet cache: a question asked again is answered from finished bytes, and must be answered
exactly as the full path would answer it.

Every test asks the same question several times from one source, so the second and later
answers come from the cache (the fast path in the transport itself), and checks what a client
sees: letter case, rotation, size limits, the SOA serial after reloads, views after reloads,
metrics and the query log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dns.edns

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import make_query
from tests.fake_upstream import FakeUpstream
from tests.test_reload import edit_machine

MY_APP_STARTED = ["fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"]


def cache_size(server: RunningServer) -> int:
    """Questions rendered (each may have several exact spellings)."""
    return server.service.dispatcher.packets.entries()


def test_repeated_questions_are_served_from_the_cache(server: RunningServer) -> None:
    first = server.ask("_apps.internal", "TXT")
    assert cache_size(server) == 1
    for _ in range(3):
        again = server.ask("_apps.internal", "TXT")
        assert again.txt() == first.txt() and again.rcode_text == "NOERROR" and again.flag("AA")
    assert cache_size(server) == 1


def test_every_reply_carries_its_query_id(server: RunningServer) -> None:
    for qid in (1, 2, 0xFFFF, 0):
        query = make_query("my-app.internal", "AAAA")
        query.id = qid
        assert server.send(query).msg.id == qid


def test_spellings_share_one_entry_and_keep_their_case(server: RunningServer) -> None:
    spellings = ["My-App.Internal.", "my-app.internal.", "MY-APP.INTERNAL.", "My-App.Internal."]
    firsts = []
    for name in spellings:
        reply = server.ask(name, "AAAA")
        assert [rrset.name.to_text() for rrset in reply.msg.answer] == [name]
        assert str(reply.lib.rr[0].rname) == name  # dnslib reads the same bytes
        assert sorted(reply.addresses()) == sorted(MY_APP_STARTED)
        firsts.append(reply.addresses()[0])
    assert cache_size(server) == 1
    # One rotation across every spelling: four answers start at 1, 2, 3, 1 of the three addresses.
    assert firsts[0] != firsts[1] != firsts[2] and firsts[3] == firsts[0]


def test_rotation_continues_on_the_fast_path(server: RunningServer) -> None:
    orders = [server.ask("my-app.internal", "AAAA").addresses() for _ in range(6)]
    start = orders[0]
    expected = [start[k:] + start[:k] for k in range(3)] * 2
    assert orders == expected


def test_rotation_shared_between_sources_of_one_view(server: RunningServer) -> None:
    a = server.ask("my-app.internal", "AAAA", source="127.0.0.1").addresses()
    b = server.ask("my-app.internal", "AAAA", source="127.0.0.9").addresses()  # also `personal`
    c = server.ask("my-app.internal", "AAAA", source="127.0.0.1").addresses()
    assert b == a[1:] + a[:1] and c == a[2:] + a[:2]


def test_nearest_is_not_rotated_by_the_cache(server: RunningServer) -> None:
    orders = {tuple(server.ask("top3.nearest.of.my-app.internal", "AAAA").addresses()) for _ in range(4)}
    assert len(orders) == 1


def test_size_classes_are_kept_apart(server: RunningServer) -> None:
    # all._instances is about 800 bytes: over 512 without EDNS, whole within 1232.
    for _ in range(2):
        small = server.ask("all._instances.internal", "TXT", edns=False)
        assert small.flag("TC") and small.msg.answer == [] and len(small.wire) <= 512
        big = server.ask("all._instances.internal", "TXT", payload=1232)
        assert not big.flag("TC") and len(big.txt()) == 1
        whole = server.ask("all._instances.internal", "TXT", edns=False, tcp=True)
        assert not whole.flag("TC") and whole.txt() == big.txt()
        assert whole.msg.edns == -1 and big.msg.edns == 0


def test_do_bit_is_echoed_per_entry(server: RunningServer) -> None:
    for _ in range(2):
        with_do = server.ask("my-app.internal", "AAAA", want_dnssec=True)
        without = server.ask("my-app.internal", "AAAA")
        assert with_do.msg.ednsflags & 0x8000 and not without.msg.ednsflags & 0x8000


def test_a_reload_elsewhere_updates_the_serial_in_cached_answers(server: RunningServer, registry_dir: Path) -> None:
    before = [server.ask("cron.internal", "AAAA") for _ in range(2)]
    assert before[0].rcode_text == before[1].rcode_text == "NOERROR" and not before[0].msg.answer
    old_serial = before[1].soa().serial
    path = registry_dir / "other-org.yaml"
    data = path.read_text().replace("state: started", "state: stopped", 1)
    path.write_text(data)
    snapshot = server.poll()
    for _ in range(2):  # the first after a reload finds its table again, the second is the fast path
        after = server.ask("cron.internal", "AAAA")
        assert after.soa().serial == snapshot.serial > old_serial
        assert after.rcode_text == "NOERROR" and not after.msg.answer


def test_a_reload_of_the_network_is_seen_at_once(server: RunningServer, registry_dir: Path) -> None:
    for _ in range(2):
        assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP_STARTED)
    edit_machine(registry_dir, "148e21dad76789", state="stopped")
    server.poll()
    for _ in range(2):
        assert sorted(server.ask("my-app.internal", "AAAA").addresses()) == sorted(MY_APP_STARTED[1:])


def test_a_region_moved_is_seen_at_once_in_every_network(server: RunningServer, registry_dir: Path) -> None:
    # the querier is in iad (the server's region): iad's machine, then Seattle's before Amsterdam's
    for _ in range(2):
        assert server.ask("top2.nearest.of.my-app.internal", "AAAA").addresses() == [MY_APP_STARTED[2], MY_APP_STARTED[0]]
    path = registry_dir / "regions.yaml"
    path.write_text(path.read_text().replace("latitude: 52.31, longitude: 4.76", "latitude: 38.95, longitude: -77.46"))
    snapshot = server.poll()
    assert snapshot.regions["ams"].latitude == 38.95
    for _ in range(2):  # Amsterdam now lies where iad does: a tie at 0, the lower id first
        assert server.ask("top2.nearest.of.my-app.internal", "AAAA").addresses() == [MY_APP_STARTED[1], MY_APP_STARTED[2]]


def test_a_source_follows_its_view_across_reloads(server: RunningServer, registry_dir: Path) -> None:
    source = "127.9.0.1"  # `personal` by the config's 127.0.0.0/8, until a network claims it
    for _ in range(2):
        assert server.ask("_apps.internal", "TXT", source=source).txt() == ["api,cron,docs,my-app"]
    write_yaml(
        registry_dir / "lab.yaml",
        {
            "networks": [{"name": "lab", "prefix6": "fdaa:0:99::/48", "prefix4": "127.9.0.0/16"}],
            "apps": [{"name": "probe", "network": "lab"}],
        },
    )
    server.poll()
    for _ in range(2):
        assert server.ask("_apps.internal", "TXT", source=source).txt() == ["probe"]
        assert server.ask("my-app.internal", "AAAA", source=source).rcode_text == "NXDOMAIN"
    assert server.ask("_apps.internal", "TXT").txt() == ["api,cron,docs,my-app"]


def test_metrics_count_cached_answers(server: RunningServer) -> None:
    counters = server.service.dispatcher.counters
    for _ in range(5):
        server.ask("my-app.internal", "AAAA")
    for _ in range(3):
        server.ask("no-such.internal", "AAAA")
    requests = counters.requests()
    responses = counters.responses()
    assert requests[("internal", "AAAA", "udp")] == 8
    assert responses[("internal", "NOERROR")] == 5 and responses[("internal", "NXDOMAIN")] == 3
    assert sum(sum(h.counts) for (zone, _), h in counters.durations.items() if zone == "internal") == 8


def test_the_query_log_sees_every_query(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    log_path = tmp_path / "queries.log"
    server = start_server(query_log=str(log_path))
    for _ in range(4):
        server.ask("my-app.internal", "AAAA", tcp=False)
    for _ in range(2):
        server.ask("my-app.internal", "AAAA", tcp=True)
    server.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(line["name"], line["transport"]) for line in lines] == [("my-app.internal.", "udp")] * 4 + [
        ("my-app.internal.", "tcp")
    ] * 2


def test_unusual_queries_take_the_full_path(server: RunningServer) -> None:
    # An EDNS option (here a cookie) keeps a query off the cache; its answer is still right.
    for _ in range(2):
        query = make_query("my-app.internal", "AAAA")
        query.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(10, b"\x01" * 8)])
        reply = server.send(query)
        assert sorted(reply.addresses()) == sorted(MY_APP_STARTED)
    assert cache_size(server) == 0


# --- forwarded answers from the forwarder's cache ------------------------------------------------


def test_forwarded_cache_hits_are_served_again_as_bytes_while_their_ttls_hold(start_server: Callable[..., RunningServer]) -> None:
    upstream = FakeUpstream()
    try:
        server = start_server(upstreams=[upstream.address], forward={"enabled": True})
        stats = server.service.forwarder.cache.stats
        first = server.ask("www.example.test", "A")  # from the upstream
        assert first.msg.answer[0].ttl == 300
        hits = [server.ask("Www.Example.Test", "A") for _ in range(3)]  # the cache, then the exact bytes
        assert [h.msg.answer[0].ttl for h in hits] == [300, 300, 300]
        assert [h.msg.answer[0].name.to_text() for h in hits] == ["Www.Example.Test."] * 3
        assert stats.hits == 3 and server.service.dispatcher.packets.exact_entries() == 1
        server.advance(1.0)  # one second on: the same bytes would now lie about the TTL
        assert [server.ask("Www.Example.Test", "A").msg.answer[0].ttl for _ in range(2)] == [299, 299]
        server.advance(299.0)  # expired: neither cache may answer
        assert server.ask("Www.Example.Test", "A").msg.answer[0].ttl == 300
        assert len(upstream.queries("www.example.test.")) == 2
        assert stats.hits == 5
        counters = server.service.dispatcher.counters
        assert counters.requests()[("forward", "A", "udp")] == 7
    finally:
        upstream.close()


def test_forwarded_fast_path_keeps_ids_and_payload_classes_apart(start_server: Callable[..., RunningServer]) -> None:
    upstream = FakeUpstream()
    try:
        server = start_server(upstreams=[upstream.address], forward={"enabled": True})
        server.ask("big.example.test", "TXT", tcp=True)  # fill the cache over TCP: the whole answer
        for _ in range(2):
            small = server.ask("big.example.test", "TXT", edns=False)
            assert small.flag("TC") and len(small.wire) <= 512 and small.msg.edns == -1
            whole = server.ask("big.example.test", "TXT", edns=False, tcp=True)
            assert not whole.flag("TC") and len(whole.txt()) == 30
        for qid in (7, 0xBEEF):
            query = make_query("www.example.test", "AAAA")
            query.id = qid
            assert server.send(query).msg.id == qid
    finally:
        upstream.close()


def test_a_change_to_one_apps_machines_renders_only_that_apps_replies_again(
    start_server: Callable[..., RunningServer], registry_dir: Path
) -> None:
    """A machine stopped (or a check flipped) leaves every other app's index the same object: their
    replies stay kept, while the app's own and the network-wide lists are rendered again."""
    from tests.test_metrics import scrape, with_metrics

    server = with_metrics(start_server)
    questions = [
        ("my-app.internal", "AAAA"),
        ("api.internal", "AAAA"),
        ("vms.api.internal", "TXT"),
        ("_instances.internal", "TXT"),
    ]
    wires = [make_query(name, rdtype).to_wire() for name, rdtype in questions]
    before = [server.send(w) for w in wires for _ in range(2)][::2]  # the second of each from the cache
    assert scrape(server).value("internal_dns_packet_cache_invalidated_total") == 0
    edit_machine(registry_dir, "3287d4e1b09e28", state="stopped")  # one of api's two healthy machines
    server.poll()
    after = [server.send(w) for w in wires]
    assert sorted(after[0].addresses()) == sorted(before[0].addresses())  # my-app: the same
    assert after[1].addresses() == ["fdaa:0:18:a7b:41:8a0f:2b6c:2"]  # api: the stopped machine is gone
    assert after[2].txt() == ["5683e29f4d1118 iad,9a0c6e4d2b8f31 ams"]
    assert "instance=3287d4e1b09e28" not in after[3].txt()[0] and "instance=3287d4e1b09e28" in before[3].txt()[0]
    # api's two replies and the network-wide list were rendered again; my-app's was not
    assert scrape(server).value("internal_dns_packet_cache_invalidated_total") == 3
    again = [server.send(w) for w in wires]
    assert [r.wire[2:] for r in again[1:]] == [r.wire[2:] for r in after[1:]]  # and kept again
    assert scrape(server).value("internal_dns_packet_cache_invalidated_total") == 3
