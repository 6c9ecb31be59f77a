"""SPEC §4: zone `flycast`, `<app>.flycast` → the app's Flycast addresses on the view's network.

In the example registry `api` (personal) has fdaa:0:18:0:1::5 on personal and fdaa:0:22:0:1::7
allocated on other-org; `billing` (other-org) has fdaa:0:22:0:1::2 at home and fdaa:0:18:0:1::9
on personal; `my-app` has fdaa:0:18:0:1::3; `cron` and `docs` have none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import Reply

PERSONAL, OTHER_ORG, PRODUCTION, STAGING = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
TTL = 5


def assert_soa_authority(reply: Reply, zone: str = "flycast.") -> None:
    assert reply.flag("AA")
    assert reply.msg.answer == []
    (rrset,) = reply.msg.authority
    assert rrset.name.to_text() == zone and rrset.rdtype == 6 and rrset.ttl == TTL
    soa = reply.soa()
    assert soa is not None and soa.minimum == TTL


def assert_nxdomain(reply: Reply) -> None:
    assert reply.rcode_text == "NXDOMAIN"
    assert_soa_authority(reply)


def assert_nodata(reply: Reply) -> None:
    assert reply.rcode_text == "NOERROR"
    assert_soa_authority(reply)


def assert_addresses(reply: Reply, expected: list[str]) -> None:
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    assert sorted(reply.addresses()) == sorted(expected)
    assert all(rrset.ttl == TTL for rrset in reply.msg.answer)
    assert reply.msg.authority == []


@pytest.mark.parametrize("tcp", [False, True])
def test_the_views_own_address_only(server: RunningServer, tcp: bool) -> None:
    assert_addresses(server.ask("api.flycast", source=PERSONAL, tcp=tcp), ["fdaa:0:18:0:1::5"])
    assert_addresses(server.ask("my-app.flycast", source=PERSONAL, tcp=tcp), ["fdaa:0:18:0:1::3"])


def test_an_address_allocated_on_another_network_is_seen_there(server: RunningServer) -> None:
    # api belongs to personal, but other-org has an address for it
    assert_addresses(server.ask("api.flycast", source=OTHER_ORG), ["fdaa:0:22:0:1::7"])
    # billing belongs to other-org; personal sees only the address on personal
    assert_addresses(server.ask("billing.flycast", source=PERSONAL), ["fdaa:0:18:0:1::9"])
    assert_addresses(server.ask("billing.flycast", source=OTHER_ORG), ["fdaa:0:22:0:1::2"])


def test_machine_state_does_not_matter(server: RunningServer, registry_dir: Path) -> None:
    personal = yaml.safe_load((registry_dir / "personal.yaml").read_text())
    for app in personal["apps"]:
        if app["name"] == "cron":  # one stopped machine
            app["flycast"] = [{"ip": "fdaa:0:18:0:1::20"}]
        if app["name"] == "docs":  # no machine at all
            app["flycast"] = [{"ip": "fdaa:0:18:0:1::21"}, {"ip": "fdaa:0:18:0:1::22"}]
    for machine in personal["machines"]:
        if machine["app"] == "api":
            machine["state"] = "stopped"
    write_yaml(registry_dir / "personal.yaml", personal)
    server.poll()
    assert_addresses(server.ask("cron.flycast", source=PERSONAL), ["fdaa:0:18:0:1::20"])
    assert_addresses(server.ask("docs.flycast", source=PERSONAL), ["fdaa:0:18:0:1::21", "fdaa:0:18:0:1::22"])
    assert_addresses(server.ask("api.flycast", source=PERSONAL), ["fdaa:0:18:0:1::5"])
    # while the .internal names of api have nothing started
    assert server.ask("api.internal", source=PERSONAL).addresses() == []


def test_an_own_app_without_an_address_here_is_nodata(server: RunningServer) -> None:
    for name in ("cron.flycast", "docs.flycast"):
        assert_nodata(server.ask(name, "AAAA", source=PERSONAL))
    assert_nodata(server.ask("web.flycast", source=PRODUCTION))
    assert_nodata(server.ask("postgres.flycast", source=STAGING))


def test_an_own_app_whose_only_address_is_elsewhere_is_nodata(server: RunningServer, registry_dir: Path) -> None:
    other = yaml.safe_load((registry_dir / "other-org.yaml").read_text())
    other["apps"][0]["flycast"] = [{"ip": "fdaa:0:18:0:1::9", "network": "personal"}]  # billing: none at home
    write_yaml(registry_dir / "other-org.yaml", other)
    server.poll()
    assert_nodata(server.ask("billing.flycast", source=OTHER_ORG))
    assert_addresses(server.ask("billing.flycast", source=PERSONAL), ["fdaa:0:18:0:1::9"])


def test_another_networks_app_without_an_address_here_does_not_exist(server: RunningServer) -> None:
    for name in ("my-app.flycast", "cron.flycast", "docs.flycast", "web.flycast"):
        assert_nxdomain(server.ask(name, source=OTHER_ORG))
    for name in ("api.flycast", "billing.flycast", "my-app.flycast"):
        assert_nxdomain(server.ask(name, source=PRODUCTION))
        assert_nxdomain(server.ask(name, source=STAGING))
    for name in ("web.flycast", "postgres.flycast", "nosuch.flycast"):
        assert_nxdomain(server.ask(name, source=PERSONAL))


def test_nothing_else_exists_under_flycast(server: RunningServer) -> None:
    for name in (
        "global.api.flycast",
        "vms.api.flycast",
        "iad.api.flycast",
        "x.y.api.flycast",
        "_apps.flycast",
        "_peer.flycast",
        "my-laptop._peer.flycast",
        "fdaa-0-18-0-1--5.flycast",
        "api.internal.flycast",
    ):
        for rdtype in ("AAAA", "TXT"):
            assert_nxdomain(server.ask(name, rdtype, source=PERSONAL))


@pytest.mark.parametrize("rdtype", ["A", "TXT", "MX", "SRV", "NS", "SOA", "CNAME"])
def test_other_types_of_an_existing_name_are_nodata(server: RunningServer, rdtype: str) -> None:
    assert_nodata(server.ask("api.flycast", rdtype, source=PERSONAL))
    assert_nodata(server.ask("api.flycast", rdtype, source=OTHER_ORG))
    assert_nodata(server.ask("cron.flycast", rdtype, source=PERSONAL))


def test_any_returns_the_addresses(server: RunningServer) -> None:
    reply = server.ask("billing.flycast", "ANY", source=PERSONAL)
    assert_addresses(reply, ["fdaa:0:18:0:1::9"])
    assert [rrset.rdtype for rrset in reply.msg.answer] == [28]


def test_the_apex_answers_soa_and_ns(server: RunningServer) -> None:
    for source in (PERSONAL, OTHER_ORG, PRODUCTION):
        soa = server.ask("flycast", "SOA", source=source)
        assert soa.rcode_text == "NOERROR" and soa.flag("AA")
        (rrset,) = soa.msg.answer
        assert rrset.name.to_text() == "flycast." and rrset.rdtype == 6 and rrset.ttl == TTL and len(rrset) == 1
        assert rrset[0].minimum == TTL
        ns = server.ask("flycast", "NS", source=source)
        assert ns.rcode_text == "NOERROR" and ns.flag("AA")
        (rrset,) = ns.msg.answer
        assert rrset.name.to_text() == "flycast." and rrset.rdtype == 2 and rrset.ttl == TTL and len(rrset) == 1
        assert_nodata(server.ask("flycast", "AAAA", source=source))
        assert_nodata(server.ask("flycast", "TXT", source=source))


def test_negative_answers_carry_the_current_serial(server: RunningServer, registry_dir: Path) -> None:
    before = server.ask("flycast", "SOA").msg.answer[0][0].serial
    nx = server.ask("nosuch.flycast")
    nodata = server.ask("cron.flycast")
    assert nx.soa().serial == nodata.soa().serial == before
    write_yaml(registry_dir / "extra.yaml", {"apps": [{"name": "extra", "network": "personal"}]})
    server.poll()
    after = server.ask("nosuch.flycast").soa().serial
    assert after > before
    assert_nodata(server.ask("extra.flycast"))


def test_flycast_names_keep_the_querys_letter_case(server: RunningServer) -> None:
    reply = server.ask("Api.FlyCast", source=OTHER_ORG)
    assert_addresses(reply, ["fdaa:0:22:0:1::7"])
    assert reply.msg.answer[0].name.to_text() == "Api.FlyCast."
    nx = server.ask("NoSuch.FLYCAST", source=OTHER_ORG)
    assert nx.rcode_text == "NXDOMAIN"
    assert nx.msg.authority[0].name.to_text() == "FLYCAST."


def test_the_same_app_name_in_two_networks_merges_addresses_on_each(start_server: Any, registry_dir: Path) -> None:
    # shop-production and shop-staging both have `web`; give each an address on the other too
    railway = yaml.safe_load((registry_dir / "railway.yaml").read_text())
    for app in railway["apps"]:
        if app["name"] == "web" and app["network"] == "shop-production":
            app["flycast"] = [{"ip": "fd12:3456:7800:f::1"}, {"ip": "fd12:3456:7900:f::2", "network": "shop-staging"}]
        if app["name"] == "web" and app["network"] == "shop-staging":
            app["flycast"] = [{"ip": "fd12:3456:7900:f::1"}]
    write_yaml(registry_dir / "railway.yaml", railway)
    server = start_server()
    assert_addresses(server.ask("web.flycast", source=PRODUCTION), ["fd12:3456:7800:f::1"])
    assert_addresses(server.ask("web.flycast", source=STAGING), ["fd12:3456:7900:f::1", "fd12:3456:7900:f::2"])
    assert_nxdomain(server.ask("web.flycast", source=PERSONAL))
