"""SPEC §3, Health: a started machine with a `critical` check is left out of every address form,
`warning` counts as passing, and a form whose machines are all critical answers them all (fail
open, counted in `internal_dns_health_fail_open`); TXT lists are unchanged. A check flipping is a
registry change like any other: the next answer, from the packet cache or not, follows it.

The example registry's `api` has three started machines: 3287d4e1b09e28 (fra, http passing),
5683e29f4d1118 (iad, http warning, disk passing) and 9a0c6e4d2b8f31 (ams, http critical).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import make_query
from tests.fake_upstream import FakeUpstream, Pending
from tests.test_metrics import forwarding, scrape, with_metrics

StartServer = Callable[..., RunningServer]

FRA = "fdaa:0:18:a7b:40:11c2:5d3e:2"  # 3287d4e1b09e28, passing
IAD = "fdaa:0:18:a7b:41:8a0f:2b6c:2"  # 5683e29f4d1118, warning
AMS = "fdaa:0:18:a7b:43:5c2e:81f4:2"  # 9a0c6e4d2b8f31, critical
FAIL_OPEN = "internal_dns_health_fail_open_total"


def set_checks(registry_dir: Path, file: str, checks_by_id: dict[str, dict[str, str] | None]) -> None:
    path = registry_dir / file
    data = yaml.safe_load(path.read_text())
    for machine in data["machines"]:
        if machine["id"] in checks_by_id:
            checks = checks_by_id[machine["id"]]
            if checks is None:
                machine.pop("checks", None)
            else:
                machine["checks"] = checks
    write_yaml(path, data)


def test_a_critical_machine_is_left_out_of_every_address_form(server: RunningServer) -> None:
    assert sorted(server.ask("api.internal").addresses()) == sorted([FRA, IAD])  # warning serves
    assert sorted(server.ask("global.api.internal").addresses()) == sorted([FRA, IAD])
    assert server.ask("fra.api.internal").addresses() == [FRA]
    # nearest from iad (the server's region): the critical machine is never among them
    assert server.ask("top3.nearest.of.api.internal").addresses() == [IAD, FRA]
    assert server.ask("top1.nearest.of.api.internal").addresses() == [IAD]
    assert sorted(server.ask("app.process.api.internal").addresses()) == sorted([FRA, IAD])


def test_the_txt_lists_are_unchanged(server: RunningServer) -> None:
    assert server.ask("vms.api.internal", "TXT").txt() == ["3287d4e1b09e28 fra,5683e29f4d1118 iad,9a0c6e4d2b8f31 ams"]
    assert server.ask("regions.api.internal", "TXT").txt() == ["ams,fra,iad"]
    (instances,) = server.ask("_instances.internal", "TXT", tcp=True).txt()
    assert "instance=9a0c6e4d2b8f31,app=api,ip=fdaa:0:18:a7b:43:5c2e:81f4:2,region=ams" in instances.split(";")


def test_a_form_whose_machines_are_all_critical_fails_open_and_is_counted(start_server: StartServer) -> None:
    server = with_metrics(start_server)
    assert scrape(server).value(FAIL_OPEN, zone="internal") == 0
    for transport in (False, True, False):  # the second UDP ask comes from the packet cache
        reply = server.ask("ams.api.internal", tcp=transport)
        assert reply.rcode_text == "NOERROR" and reply.addresses() == [AMS]
    assert server.ask("9a0c6e4d2b8f31.vm.api.internal").addresses() == [AMS]  # the only one: itself
    assert server.ask("api.internal").addresses() != []  # healthy ones exist: not failing open
    assert scrape(server).value(FAIL_OPEN, zone="internal") == 4


def test_a_forwarded_reply_that_lands_after_a_fail_open_answer_is_not_counted_as_one(
    start_server: StartServer, fake: FakeUpstream
) -> None:
    # Whether an answer failed open travels with that answer: a forwarded reply, counted when it
    # lands, is never taken for the fail-open answer given meanwhile.
    server = forwarding(start_server, fake)
    fake.hold = True
    pending = Pending.ask(server, "www.example.test")
    fake.wait_for(1)
    assert server.ask("ams.api.internal").addresses() == [AMS]  # fails open
    fake.release()
    assert pending.reply().rcode_text == "NOERROR"
    assert scrape(server).series(FAIL_OPEN) == {(("zone", "internal"),): 1}


def test_railway_replicas_follow_their_checks(start_server: StartServer, registry_dir: Path) -> None:
    server = with_metrics(start_server)
    production = "127.0.0.3"
    assert sorted(server.ask("web.railway.internal", "A", source=production).addresses("A")) == ["10.250.1.10", "10.250.1.11"]
    set_checks(registry_dir, "railway.yaml", {"a1f0c3e2d4b5a6": {"http": "critical"}})
    server.poll()
    assert server.ask("web.railway.internal", "A", source=production).addresses("A") == ["10.250.1.11"]
    assert server.ask("web.railway.internal", "AAAA", source=production).addresses() == ["fd12:3456:7800:1::b"]
    set_checks(registry_dir, "railway.yaml", {"a1f0c3e2d4b5a7": {"http": "critical", "disk": "passing"}})
    server.poll()
    both = server.ask("web.railway.internal", "A", source=production).addresses("A")
    assert sorted(both) == ["10.250.1.10", "10.250.1.11"]  # all critical: all of them
    assert scrape(server).value(FAIL_OPEN, zone="railway.internal") == 1


def test_a_check_flip_reaches_the_next_answer_through_the_packet_cache(server: RunningServer, registry_dir: Path) -> None:
    def ask_twice(name: str, rdtype: str = "AAAA") -> Any:
        """The same bytes twice: the second is an exact hit of the packet cache."""
        wire = make_query(name, rdtype).to_wire()
        first, second = (server.send(wire) for _ in range(2))
        return first, second

    first, second = ask_twice("api.internal")
    assert sorted(first.addresses()) == sorted(second.addresses()) == sorted([FRA, IAD])
    srv_before, _ = ask_twice("_http._tcp.api.internal", "SRV")
    assert len(srv_before.srv()) == 2

    set_checks(registry_dir, "personal.yaml", {"3287d4e1b09e28": {"http": "critical"}, "9a0c6e4d2b8f31": {"http": "passing"}})
    server.poll()
    for reply in ask_twice("api.internal"):
        assert sorted(reply.addresses()) == sorted([IAD, AMS])
    for reply in ask_twice("_http._tcp.api.internal", "SRV"):
        assert sorted(t for *_, t in reply.srv()) == ["5683e29f4d1118.vm.api.internal.", "9a0c6e4d2b8f31.vm.api.internal."]
    assert server.ask("fra.api.internal").addresses() == [FRA]  # now the one failing open
    assert server.ask("ams.api.internal").addresses() == [AMS]

    set_checks(registry_dir, "personal.yaml", {"3287d4e1b09e28": None, "5683e29f4d1118": {"http": "critical"}})
    server.poll()
    for reply in ask_twice("api.internal"):
        assert sorted(reply.addresses()) == sorted([FRA, AMS])  # no checks at all: healthy
    assert server.ask("vms.api.internal", "TXT").txt() == ["3287d4e1b09e28 fra,5683e29f4d1118 iad,9a0c6e4d2b8f31 ams"]


def test_a_check_that_is_not_a_status_is_refused_naming_the_machine(
    server: RunningServer, registry_dir: Path, log_lines: list[str]
) -> None:
    set_checks(registry_dir, "personal.yaml", {"3287d4e1b09e28": {"http": "failing"}})
    rejected = server.poll()
    assert "3287d4e1b09e28" in str(rejected) and "failing" in str(rejected), rejected
    assert sorted(server.ask("api.internal").addresses()) == sorted([FRA, IAD])  # the last good snapshot
