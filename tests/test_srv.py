"""SPEC §3, Services (SRV): `_<name>._<protocol>.<app>.internal` answers SRV `0 0 <port>
<id>.vm.<app>.internal.` for each machine the app's address form returns, their AAAA in the
additional section while they fit; `_<protocol>.<app>.internal` is an empty non-terminal (NODATA).
Railway: `_<name>._<protocol>.<service>.railway.internal` answers one SRV to
`<service>.railway.internal.`, its addresses in the additional section.

The example registry: `api` serves http on 8080 (tcp) and statsd on 8125 (udp), `my-app` http on
8080; in shop-production, `web` http on 8080 and `postgres` postgres on 5432.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import Reply, make_query

StartServer = Callable[..., RunningServer]

FRA = "fdaa:0:18:a7b:40:11c2:5d3e:2"  # api 3287d4e1b09e28
IAD = "fdaa:0:18:a7b:41:8a0f:2b6c:2"  # api 5683e29f4d1118 (9a0c6e4d2b8f31 in ams is critical)
PRODUCTION, STAGING = "127.0.0.3", "127.0.0.4"


def assert_nodata(reply: Reply, zone: str) -> None:
    assert reply.rcode_text == "NOERROR" and reply.flag("AA") and not reply.msg.answer
    soa = reply.msg.authority[0]
    assert soa.name.to_text() == zone


def assert_nxdomain(reply: Reply, zone: str) -> None:
    assert reply.rcode_text == "NXDOMAIN" and reply.flag("AA") and not reply.msg.answer
    assert reply.msg.authority[0].name.to_text() == zone


@pytest.mark.parametrize("tcp", [False, True])
def test_a_fly_service_answers_srv_with_the_targets_addresses(server: RunningServer, tcp: bool) -> None:
    reply = server.ask("_http._tcp.api.internal", "SRV", tcp=tcp)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA") and not reply.flag("TC")
    assert reply.srv() == [
        (0, 0, 8080, "3287d4e1b09e28.vm.api.internal."),
        (0, 0, 8080, "5683e29f4d1118.vm.api.internal."),
    ]
    assert {rrset.ttl for rrset in reply.msg.answer + reply.msg.additional} == {5}
    assert reply.additional() == [
        ("3287d4e1b09e28.vm.api.internal.", "AAAA", FRA),
        ("5683e29f4d1118.vm.api.internal.", "AAAA", IAD),
    ]
    for _, _, _, target in reply.srv():  # each target is a name that answers the same address
        (owner, _, address), *_ = [x for x in reply.additional() if x[0] == target]
        assert server.ask(target).addresses() == [address]
    udp = server.ask("_statsd._udp.api.internal", "SRV", tcp=tcp)
    assert [(port, target) for _, _, port, target in udp.srv()] == [
        (8125, "3287d4e1b09e28.vm.api.internal."),
        (8125, "5683e29f4d1118.vm.api.internal."),
    ]


def test_owner_names_keep_the_query_case(server: RunningServer) -> None:
    reply = server.ask("_HTTP._Tcp.API.Internal", "SRV")
    assert reply.msg.answer[0].name.to_text() == "_HTTP._Tcp.API.Internal."
    assert [owner for owner, _, _ in reply.additional()] == [
        "3287d4e1b09e28.vm.API.Internal.",
        "5683e29f4d1118.vm.API.Internal.",
    ]
    assert reply.srv()[0][3] == "3287d4e1b09e28.vm.api.internal."  # the target as the registry has it


def test_the_protocol_labels_are_empty_non_terminals_and_the_rest_does_not_exist(server: RunningServer) -> None:
    for name in ("_tcp.api.internal", "_udp.api.internal", "_tcp.my-app.internal"):
        for rdtype in ("SRV", "AAAA", "TXT", "ANY"):
            assert_nodata(server.ask(name, rdtype), "internal.")
    assert_nodata(server.ask("_http._tcp.api.internal", "AAAA"), "internal.")  # the name exists, AAAA not
    for name in (
        "_udp.my-app.internal",  # my-app has no UDP service
        "_statsd._tcp.api.internal",  # statsd is UDP
        "_nope._tcp.api.internal",
        "http._tcp.api.internal",  # a service label starts with "_"
        "_http._tcp.cron.internal",  # cron has no services
        "_tcp.cron.internal",
        "x._http._tcp.api.internal",
        "_http._tcp.no-such-app.internal",
    ):
        assert_nxdomain(server.ask(name, "SRV"), "internal.")


def test_an_app_with_nothing_started_answers_nodata(server: RunningServer, registry_dir: Path) -> None:
    write_yaml(
        registry_dir / "docs-services.yaml",
        {"apps": [{"name": "web-docs", "network": "personal", "services": [{"name": "http", "port": 80}]}]},
    )
    server.poll()
    assert_nodata(server.ask("_http._tcp.web-docs.internal", "SRV"), "internal.")
    assert_nodata(server.ask("_tcp.web-docs.internal", "SRV"), "internal.")


def big_app(registry_dir: Path, count: int) -> None:
    machines = [
        {"id": f"{0xB16000 + i:014x}", "app": "big", "region": "iad", "state": "started", "ip6": f"fdaa:0:18:b16::{i + 1:x}"}
        for i in range(count)
    ]
    app = {"name": "big", "network": "personal", "services": [{"name": "http", "port": 80}]}
    write_yaml(registry_dir / "big.yaml", {"apps": [app], "machines": machines})


def test_additional_records_are_left_out_while_they_do_not_fit_without_tc(server: RunningServer, registry_dir: Path) -> None:
    big_app(registry_dir, 8)
    server.poll()
    reply = server.send(make_query("_http._tcp.big.internal", "SRV", edns=False))  # 512 bytes
    assert len(reply.wire) <= 512 and not reply.flag("TC")
    assert len(reply.srv()) == 8
    targets = [target for *_, target in reply.srv()]
    extra = reply.additional()
    assert 0 < len(extra) < 8
    assert [owner for owner, _, _ in extra] == targets[: len(extra)]  # in order, none skipped
    for owner, _, address in extra:
        assert server.ask(owner).addresses() == [address]
    whole = server.ask("_http._tcp.big.internal", "SRV", tcp=True)
    assert [owner for owner, _, _ in whole.additional()] == targets


def test_an_answer_that_does_not_fit_is_truncated(server: RunningServer, registry_dir: Path) -> None:
    big_app(registry_dir, 20)
    server.poll()
    reply = server.send(make_query("_http._tcp.big.internal", "SRV", edns=False))
    assert reply.flag("TC") and len(reply.wire) <= 512
    assert reply.msg.answer == [] and reply.msg.additional == []  # cut at whole RRsets
    edns = server.ask("_http._tcp.big.internal", "SRV")  # 1232 bytes: the answer, some addresses
    assert not edns.flag("TC") and len(edns.srv()) == 20 and 0 < len(edns.additional()) < 20
    over_tcp = server.ask("_http._tcp.big.internal", "SRV", tcp=True)
    assert len(over_tcp.srv()) == 20 and len(over_tcp.additional()) == 20


def test_a_railway_service_answers_one_srv_to_its_own_name(server: RunningServer) -> None:
    reply = server.ask("_http._tcp.web.railway.internal", "SRV", source=PRODUCTION)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    assert reply.srv() == [(0, 0, 8080, "web.railway.internal.")]
    assert sorted(reply.additional()) == [
        ("web.railway.internal.", "A", "10.250.1.10"),
        ("web.railway.internal.", "A", "10.250.1.11"),
        ("web.railway.internal.", "AAAA", "fd12:3456:7800:1::a"),
        ("web.railway.internal.", "AAAA", "fd12:3456:7800:1::b"),
    ]
    pg = server.ask("_postgres._tcp.postgres.railway.internal", "SRV", source=PRODUCTION)
    assert pg.srv() == [(0, 0, 5432, "postgres.railway.internal.")]
    assert_nodata(server.ask("_tcp.web.railway.internal", "SRV", source=PRODUCTION), "railway.internal.")
    assert_nxdomain(server.ask("_udp.web.railway.internal", "SRV", source=PRODUCTION), "railway.internal.")
    # staging's web has no services: the same names do not exist there
    assert_nxdomain(server.ask("_http._tcp.web.railway.internal", "SRV", source=STAGING), "railway.internal.")


def test_railway_srv_in_a_legacy_environment_and_with_nothing_started(server: RunningServer, registry_dir: Path) -> None:
    path = registry_dir / "railway.yaml"
    data = yaml.safe_load(path.read_text())
    for app in data["apps"]:
        if app["network"] == "shop-staging":
            app["services"] = [{"name": "http", "port": 8080}]
    write_yaml(path, data)
    server.poll()
    web = server.ask("_http._tcp.web.railway.internal", "SRV", source=STAGING)
    assert web.srv() == [(0, 0, 8080, "web.railway.internal.")]
    assert web.additional() == [("web.railway.internal.", "AAAA", "fd12:3456:7900:1::a")]  # IPv6 only
    assert_nodata(server.ask("_http._tcp.postgres.railway.internal", "SRV", source=STAGING), "railway.internal.")
