"""The Fly scheme (SPEC §3, zone `internal`) over real sockets: every name form of the table with the
exact answer the example registry (zones/personal.yaml, other-org.yaml, railway.yaml) gives, the
existence rules (NXDOMAIN vs NODATA, empty non-terminals, `""` TXT lists), TTLs, TXT splitting and
truncation, address rotation and the query's letter case in owner names.

Nearest ordering by the querier's region lives in tests/test_nearest.py.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import pytest

from tests.conftest import RunningServer, write_yaml
from tests.dnsclient import Reply

TTL = 5

# --- the example registry, written out by hand from zones/*.yaml --------------------------------

IP = {  # machine id → ip6
    "148e21dad76789": "fdaa:0:18:a7b:7d:f066:b83b:2",  # my-app sea started app role=primary
    "4d89699c030518": "fdaa:0:18:a7b:c4:5b1:8f2e:2",  # my-app ams started app role=replica
    "6e82933c1d7e48": "fdaa:0:18:a7b:9f:3c21:44d0:2",  # my-app iad started worker role=replica
    "91851edb6e5187": "fdaa:0:18:a7b:5e:71e9:c03a:2",  # my-app iad stopped
    "e2865013a3d438": "fdaa:0:18:a7b:1a:9be2:6f10:2",  # my-app syd suspended worker
    "d8dd5d4b2a6e68": "fdaa:0:18:a7b:2c:d3e4:1b7a:2",  # my-app lhr started, dns: false
    "3287d4e1b09e28": "fdaa:0:18:a7b:40:11c2:5d3e:2",  # api fra started
    "5683e29f4d1118": "fdaa:0:18:a7b:41:8a0f:2b6c:2",  # api iad started, checks warning and passing
    "9a0c6e4d2b8f31": "fdaa:0:18:a7b:43:5c2e:81f4:2",  # api ams started, a critical check
    "7811b66c2e4e08": "fdaa:0:18:a7b:42:6e5d:90a1:2",  # api nrt created
    "0e286039f42e86": "fdaa:0:18:a7b:50:3f7a:c2d9:2",  # cron ord stopped
}
MY_APP_STARTED = [IP["148e21dad76789"], IP["4d89699c030518"], IP["6e82933c1d7e48"]]  # by machine id
API_STARTED = [IP["3287d4e1b09e28"], IP["5683e29f4d1118"]]  # 9a0c6e4d2b8f31 is critical
MY_LAPTOP = "fdaa:0:18:a7b:d6b:0:a:2"
CI_RUNNER = "fdaa:0:18:a7b:d6b:0:b:2"

INSTANCES = (
    "instance=148e21dad76789,app=my-app,ip=fdaa:0:18:a7b:7d:f066:b83b:2,region=sea;"
    "instance=3287d4e1b09e28,app=api,ip=fdaa:0:18:a7b:40:11c2:5d3e:2,region=fra;"
    "instance=4d89699c030518,app=my-app,ip=fdaa:0:18:a7b:c4:5b1:8f2e:2,region=ams;"
    "instance=5683e29f4d1118,app=api,ip=fdaa:0:18:a7b:41:8a0f:2b6c:2,region=iad;"
    "instance=6e82933c1d7e48,app=my-app,ip=fdaa:0:18:a7b:9f:3c21:44d0:2,region=iad;"
    "instance=9a0c6e4d2b8f31,app=api,ip=fdaa:0:18:a7b:43:5c2e:81f4:2,region=ams"  # critical, still listed
)
ALL_INSTANCES = (  # every state, still only dns: true (d8dd5d4b2a6e68 is left out)
    "instance=0e286039f42e86,app=cron,ip=fdaa:0:18:a7b:50:3f7a:c2d9:2,region=ord;"
    "instance=148e21dad76789,app=my-app,ip=fdaa:0:18:a7b:7d:f066:b83b:2,region=sea;"
    "instance=3287d4e1b09e28,app=api,ip=fdaa:0:18:a7b:40:11c2:5d3e:2,region=fra;"
    "instance=4d89699c030518,app=my-app,ip=fdaa:0:18:a7b:c4:5b1:8f2e:2,region=ams;"
    "instance=5683e29f4d1118,app=api,ip=fdaa:0:18:a7b:41:8a0f:2b6c:2,region=iad;"
    "instance=6e82933c1d7e48,app=my-app,ip=fdaa:0:18:a7b:9f:3c21:44d0:2,region=iad;"
    "instance=7811b66c2e4e08,app=api,ip=fdaa:0:18:a7b:42:6e5d:90a1:2,region=nrt;"
    "instance=91851edb6e5187,app=my-app,ip=fdaa:0:18:a7b:5e:71e9:c03a:2,region=iad;"
    "instance=9a0c6e4d2b8f31,app=api,ip=fdaa:0:18:a7b:43:5c2e:81f4:2,region=ams;"
    "instance=e2865013a3d438,app=my-app,ip=fdaa:0:18:a7b:1a:9be2:6f10:2,region=syd"
)

PERSONAL = "127.0.0.1"
OTHER_ORG = "127.0.0.2"
SHOP_PRODUCTION = "127.0.0.3"


# --- assertions ---------------------------------------------------------------------------------


def rotations(items: list[str]) -> list[list[str]]:
    return [items[k:] + items[:k] for k in range(len(items))] or [[]]


def assert_positive(reply: Reply, name: str, rdtype: str, ttl: int = TTL) -> None:
    """NOERROR, AA, one RRset of `rdtype` owned by the query name exactly as asked, nothing else."""
    assert reply.rcode_text == "NOERROR", (name, rdtype)
    assert reply.flag("AA")
    assert not reply.flag("TC")
    assert len(reply.msg.answer) == 1, reply.msg
    rrset = reply.msg.answer[0]
    assert rrset.rdtype == dns.rdatatype.from_text(rdtype)
    assert rrset.name.to_text() == name.rstrip(".") + "."  # to_text keeps the letter case
    assert rrset.ttl == ttl
    assert not [r for r in reply.msg.authority if r.rdtype == dns.rdatatype.SOA]


def assert_addresses(reply: Reply, name: str, expected: list[str], ttl: int = TTL) -> None:
    """The address set, in machine-id order up to the rotation of SPEC §3."""
    assert_positive(reply, name, "AAAA", ttl)
    assert reply.addresses() in rotations(expected), (name, reply.addresses())


def assert_txt(reply: Reply, name: str, value: str, ttl: int = TTL) -> None:
    """One TXT record whose 255-byte character-strings, in order, concatenate to `value`."""
    assert_positive(reply, name, "TXT", ttl)
    strings = reply.txt_strings()
    assert len(strings) == 1, strings
    assert_split(strings[0], value)


def assert_split(strings: list[bytes], value: str) -> None:
    raw = value.encode()
    if not raw:
        assert strings == [b""]  # an empty list is one empty string, never NODATA
        return
    assert b"".join(strings) == raw
    assert all(len(s) == 255 for s in strings[:-1]), [len(s) for s in strings]
    assert 1 <= len(strings[-1]) <= 255


def assert_negative(reply: Reply, rcode: str, zone: str = "internal", ttl: int = TTL) -> None:
    """NXDOMAIN or NODATA (RFC 2308): AA, empty answer, the zone's SOA in authority with TTL = minimum = ttl."""
    assert reply.rcode_text == rcode
    assert reply.flag("AA")
    assert reply.msg.answer == []
    soas = [r for r in reply.msg.authority if r.rdtype == dns.rdatatype.SOA]
    assert len(soas) == 1 and len(soas[0]) == 1, reply.msg
    assert soas[0].name == dns.name.from_text(zone)
    assert soas[0].ttl == ttl
    assert soas[0][0].minimum == ttl


def assert_nodata(reply: Reply, zone: str = "internal", ttl: int = TTL) -> None:
    assert_negative(reply, "NOERROR", zone, ttl)


def assert_nxdomain(reply: Reply, ttl: int = TTL) -> None:
    assert_negative(reply, "NXDOMAIN", "internal", ttl)


# --- 1. every row of the table, with the example registry --------------------------------------

ADDRESS_FORMS = [
    ("my-app.internal", MY_APP_STARTED),
    ("global.my-app.internal", MY_APP_STARTED),
    ("api.internal", API_STARTED),
    ("global.api.internal", API_STARTED),
    # <region>.<app>: only started, dns: true machines of that region
    ("sea.my-app.internal", [IP["148e21dad76789"]]),
    ("ams.my-app.internal", [IP["4d89699c030518"]]),
    ("iad.my-app.internal", [IP["6e82933c1d7e48"]]),  # 91851edb6e5187 in iad is stopped
    ("fra.api.internal", [IP["3287d4e1b09e28"]]),
    ("iad.api.internal", [IP["5683e29f4d1118"]]),
    ("ams.api.internal", [IP["9a0c6e4d2b8f31"]]),  # its only machine is critical: fail open
    # <id>.vm.<app>
    ("148e21dad76789.vm.my-app.internal", [IP["148e21dad76789"]]),
    ("6e82933c1d7e48.vm.my-app.internal", [IP["6e82933c1d7e48"]]),
    ("5683e29f4d1118.vm.api.internal", [IP["5683e29f4d1118"]]),
    ("9a0c6e4d2b8f31.vm.api.internal", [IP["9a0c6e4d2b8f31"]]),  # critical, the only one: fail open
    # <group>.process.<app>: process_group defaults to "app"
    ("app.process.my-app.internal", [IP["148e21dad76789"], IP["4d89699c030518"]]),
    ("worker.process.my-app.internal", [IP["6e82933c1d7e48"]]),
    ("app.process.api.internal", API_STARTED),
    # <value>.<key>.kv._metadata.<app>
    ("primary.role.kv._metadata.my-app.internal", [IP["148e21dad76789"]]),
    ("replica.role.kv._metadata.my-app.internal", [IP["4d89699c030518"], IP["6e82933c1d7e48"]]),
    # <peer>._peer
    ("my-laptop._peer.internal", [MY_LAPTOP]),
    ("ci-runner._peer.internal", [CI_RUNNER]),
]


# TCP asks a sample of each list: the forms do not depend on the transport, and every TCP query is a
# new connection that leaves a client port in TIME_WAIT for a minute.
def test_address_forms(server: RunningServer) -> None:
    for name, expected in ADDRESS_FORMS:
        assert_addresses(server.ask(name, "AAAA"), name, expected)
    for name, expected in ADDRESS_FORMS[::4]:
        assert_addresses(server.ask(name, "AAAA", tcp=True), name, expected)


TXT_FORMS = [
    ("vms.my-app.internal", "148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad"),
    (
        "all.vms.my-app.internal",
        "148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad,91851edb6e5187 iad,e2865013a3d438 syd",
    ),
    ("regions.my-app.internal", "ams,iad,sea"),
    ("all.regions.my-app.internal", "ams,iad,sea,syd"),  # lhr is only the dns: false machine's
    ("vms.api.internal", "3287d4e1b09e28 fra,5683e29f4d1118 iad,9a0c6e4d2b8f31 ams"),  # critical too
    ("all.vms.api.internal", "3287d4e1b09e28 fra,5683e29f4d1118 iad,7811b66c2e4e08 nrt,9a0c6e4d2b8f31 ams"),
    ("regions.api.internal", "ams,fra,iad"),  # ams: its machine is critical, still listed
    ("all.regions.api.internal", "ams,fra,iad,nrt"),
    # cron: nothing started; docs: no machines at all
    ("vms.cron.internal", ""),
    ("all.vms.cron.internal", "0e286039f42e86 ord"),
    ("regions.cron.internal", ""),
    ("all.regions.cron.internal", "ord"),
    ("vms.docs.internal", ""),
    ("all.vms.docs.internal", ""),
    ("regions.docs.internal", ""),
    ("all.regions.docs.internal", ""),
    # network-wide lists
    ("_apps.internal", "api,cron,docs,my-app"),
    ("_peer.internal", "ci-runner,my-laptop"),  # interactive-1669ba3d9 is left out
    ("_instances.internal", INSTANCES),
    ("all._instances.internal", ALL_INSTANCES),
]


def test_txt_forms(server: RunningServer) -> None:
    for name, value in TXT_FORMS:
        assert_txt(server.ask(name, "TXT"), name, value)
    for name, value in TXT_FORMS[::4]:
        assert_txt(server.ask(name, "TXT", tcp=True), name, value)


def test_network_wide_lists_belong_to_the_view(server: RunningServer) -> None:
    other = {
        "_apps.internal": "billing",
        "_peer.internal": "office-vpn",
        "_instances.internal": (
            "instance=1781973f5e4389,app=billing,ip=fdaa:0:22:a7b:10:4c1d:2e3f:2,region=ewr;"
            "instance=5e3c7d20b14f97,app=billing,ip=fdaa:0:22:a7b:11:9a8b:7c6d:2,region=cdg"
        ),
        "vms.billing.internal": "1781973f5e4389 ewr,5e3c7d20b14f97 cdg",
        "regions.billing.internal": "cdg,ewr",
    }
    for name, value in other.items():
        assert_txt(server.ask(name, "TXT", source=OTHER_ORG), name, value)
    # the Railway project's networks are Fly views too; a network without peers lists ""
    shop = {
        "_apps.internal": "postgres,web",
        "_peer.internal": "",
        "_instances.internal": (
            "instance=a1f0c3e2d4b5a6,app=web,ip=fd12:3456:7800:1::a,region=sjc;"
            "instance=a1f0c3e2d4b5a7,app=web,ip=fd12:3456:7800:1::b,region=sjc;"
            "instance=b2e1d4c3f5a6b7,app=postgres,ip=fd12:3456:7800:2::a,region=sjc"
        ),
    }
    for name, value in shop.items():
        assert_txt(server.ask(name, "TXT", source=SHOP_PRODUCTION), name, value)
    assert_addresses(server.ask("my-laptop._peer.internal", source=PERSONAL), "my-laptop._peer.internal", [MY_LAPTOP])
    # another organization's apps, peers and machines do not exist in this view
    for name in ("my-app.internal", "vms.my-app.internal", "my-laptop._peer.internal", "api.internal"):
        assert_nxdomain(server.ask(name, "AAAA", source=OTHER_ORG))
    for name in ("billing.internal", "office-vpn._peer.internal", "1781973f5e4389.vm.billing.internal"):
        assert_nxdomain(server.ask(name, "AAAA", source=PERSONAL))


# Existing names whose address set is empty: NOERROR, no answer, SOA in authority.
EMPTY_ADDRESS_FORMS = [
    "syd.my-app.internal",  # only a suspended machine there
    "lhr.my-app.internal",  # only a dns: false machine there
    "nrt.my-app.internal",  # a known region with no machine of the app
    "nrt.api.internal",  # created, not started
    "91851edb6e5187.vm.my-app.internal",  # stopped
    "e2865013a3d438.vm.my-app.internal",  # suspended
    "7811b66c2e4e08.vm.api.internal",  # created
    "web.process.my-app.internal",  # no such process group
    "nobody.role.kv._metadata.my-app.internal",  # no machine has role=nobody
    "primary.tier.kv._metadata.my-app.internal",  # no machine has the key
    "worker.process.api.internal",
    # an app with no started machine, and one with no machine at all
    "cron.internal",
    "global.cron.internal",
    "ord.cron.internal",
    "0e286039f42e86.vm.cron.internal",
    "app.process.cron.internal",
    "top1.nearest.of.cron.internal",
    "docs.internal",
    "global.docs.internal",
    "iad.docs.internal",
    "app.process.docs.internal",
    "top3.nearest.of.docs.internal",
    "primary.role.kv._metadata.docs.internal",
]


def test_empty_address_sets_are_nodata(server: RunningServer) -> None:
    for name in EMPTY_ADDRESS_FORMS:
        assert_nodata(server.ask(name, "AAAA"))
    for name in EMPTY_ADDRESS_FORMS[::5]:
        assert_nodata(server.ask(name, "AAAA", tcp=True))


EMPTY_NON_TERMINALS = [
    f"{label}.{app}.internal"
    for app in ("my-app", "api", "cron", "docs")
    for label in ("vm", "process", "of", "nearest.of", "_metadata", "kv._metadata", "role.kv._metadata", "tier.kv._metadata")
]


def test_empty_non_terminals_are_nodata(server: RunningServer) -> None:
    for name in EMPTY_NON_TERMINALS:
        for rdtype in ("AAAA", "A", "TXT", "ANY"):
            assert_nodata(server.ask(name, rdtype))
    # with both schemes on, railway.internal is the Railway zone's apex: it exists in every view
    for source in (PERSONAL, OTHER_ORG):
        assert_nodata(server.ask("railway.internal", "AAAA", source=source), zone="railway.internal")


NXDOMAIN_NAMES = [
    "nope.internal",  # unknown app
    "billing.internal",  # another organization's app
    "web.internal",  # the Railway project's app
    "xyz.my-app.internal",  # not a region code
    "foo.my-app.internal",
    "all.my-app.internal",
    "kv.my-app.internal",
    "nearest.my-app.internal",
    "00000000000000.vm.my-app.internal",  # unknown id
    "d8dd5d4b2a6e68.vm.my-app.internal",  # dns: false: not in DNS at all
    "3287d4e1b09e28.vm.my-app.internal",  # api's machine, not my-app's
    "1781973f5e4389.vm.billing.internal",
    "top0.nearest.of.my-app.internal",
    "top01.nearest.of.my-app.internal",
    "top00.nearest.of.my-app.internal",
    "topx.nearest.of.my-app.internal",
    "top.nearest.of.my-app.internal",
    "top-1.nearest.of.my-app.internal",
    "top1x.nearest.of.my-app.internal",
    "top+1.nearest.of.my-app.internal",
    "top1.5.nearest.of.my-app.internal",
    "top1.of.my-app.internal",
    "top1.nearest.my-app.internal",
    "interactive-1669ba3d9._peer.internal",  # interactive peers do not exist in DNS
    "nobody._peer.internal",
    "office-vpn._peer.internal",  # another organization's peer
    "all._peer.internal",
    "all._apps.internal",
    "x._apps.internal",
    "x._instances.internal",
    "_nope.internal",
    "_apps.my-app.internal",
    "vms.all.my-app.internal",
    "all.all.vms.my-app.internal",
    "x.vms.my-app.internal",
    "x.regions.my-app.internal",
    "x.global.my-app.internal",
    "global.global.my-app.internal",
    "x.sea.my-app.internal",
    "x.148e21dad76789.vm.my-app.internal",
    "x.app.process.my-app.internal",
    "x.primary.role.kv._metadata.my-app.internal",
    "x.top1.nearest.of.my-app.internal",
    "x.my-laptop._peer.internal",
    "x.vm.x.my-app.internal",
    "my-app.my-app.internal",
    "vm.internal",
    "a.b.c.d.e.f.g.internal",
]


def test_other_shapes_are_nxdomain(server: RunningServer) -> None:
    for name in NXDOMAIN_NAMES:
        for rdtype in ("AAAA", "TXT", "A"):
            reply = server.ask(name, rdtype)
            assert reply.rcode_text == "NXDOMAIN", (name, rdtype)
            assert_nxdomain(reply)
    for name in NXDOMAIN_NAMES[::8]:
        assert_nxdomain(server.ask(name, "AAAA", tcp=True))


# Existing names asked for a type they lack: NODATA, never NXDOMAIN (musl drops the lookup).
WRONG_TYPES = [
    ("my-app.internal", ("A", "TXT", "MX", "SRV", "CNAME", "NS", "SOA", "PTR", "HTTPS")),
    ("global.my-app.internal", ("A", "TXT")),
    ("sea.my-app.internal", ("A", "TXT")),
    ("148e21dad76789.vm.my-app.internal", ("A", "TXT", "MX")),  # has an ip4, but the Fly scheme is AAAA
    ("app.process.my-app.internal", ("A", "TXT")),
    ("top1.nearest.of.my-app.internal", ("A", "TXT")),
    ("primary.role.kv._metadata.my-app.internal", ("A", "TXT")),
    ("my-laptop._peer.internal", ("A", "TXT")),
    ("vms.my-app.internal", ("AAAA", "A", "MX")),
    ("all.vms.my-app.internal", ("AAAA", "A")),
    ("regions.my-app.internal", ("AAAA", "A")),
    ("all.regions.my-app.internal", ("AAAA",)),
    ("_apps.internal", ("AAAA", "A", "SRV")),
    ("_peer.internal", ("AAAA", "A")),
    ("_instances.internal", ("AAAA", "A")),
    ("all._instances.internal", ("AAAA", "A")),
    ("cron.internal", ("A", "TXT", "MX")),
    ("docs.internal", ("A", "TXT", "MX")),
    ("vms.docs.internal", ("AAAA", "A")),
]


def test_existing_names_with_other_types_are_nodata(server: RunningServer) -> None:
    for name, rdtypes in WRONG_TYPES:
        for rdtype in rdtypes:
            reply = server.ask(name, rdtype)
            assert reply.rcode_text == "NOERROR", (name, rdtype)
            assert_nodata(reply)


def test_any_returns_what_the_name_has(server: RunningServer) -> None:
    reply = server.ask("my-app.internal", "ANY")
    assert_addresses(reply, "my-app.internal", MY_APP_STARTED)
    reply = server.ask("vms.my-app.internal", "ANY")
    assert_txt(reply, "vms.my-app.internal", TXT_FORMS[0][1])
    # an app without started machines holds nothing under ANY, but exists
    assert_nodata(server.ask("cron.internal", "ANY"))
    assert_txt(server.ask("vms.cron.internal", "ANY"), "vms.cron.internal", "")


def test_started_machine_ids_answer_only_in_their_app(server: RunningServer) -> None:
    """Every started dns:true machine of the registry answers under its own app, and only there."""
    owners = {
        "148e21dad76789": "my-app",
        "4d89699c030518": "my-app",
        "6e82933c1d7e48": "my-app",
        "3287d4e1b09e28": "api",
        "5683e29f4d1118": "api",
    }
    for machine_id, app in owners.items():
        for other in ("my-app", "api", "cron", "docs"):
            name = f"{machine_id}.vm.{other}.internal"
            reply = server.ask(name)
            if other == app:
                assert_addresses(reply, name, [IP[machine_id]])
            else:
                assert_nxdomain(reply)


# --- nearest with the example registry (the querier's region here is the server's: iad) ---------


def test_nearest_from_the_server_region(server: RunningServer) -> None:
    # from iad: iad (0 km), sea (~3,700 km), ams (~6,200 km); computed in tests/test_nearest.py too
    by_distance = [IP["6e82933c1d7e48"], IP["148e21dad76789"], IP["4d89699c030518"]]
    for n in (1, 2, 3, 4, 50, 999999999, 10**40):
        name = f"top{n}.nearest.of.my-app.internal"
        reply = server.ask(name)
        assert_positive(reply, name, "AAAA")
        assert reply.addresses() == by_distance[:n], n
    name = "top1.nearest.of.api.internal"
    assert server.ask(name).addresses() == [IP["5683e29f4d1118"]]
    name = "top2.nearest.of.api.internal"
    assert server.ask(name).addresses() == [IP["5683e29f4d1118"], IP["3287d4e1b09e28"]]


# --- 2. TTL --------------------------------------------------------------------------------------


def test_ttl_override_applies_to_every_record_and_the_soa(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(ttl=42)
    assert_addresses(server.ask("my-app.internal"), "my-app.internal", MY_APP_STARTED, ttl=42)
    assert_addresses(server.ask("my-laptop._peer.internal"), "my-laptop._peer.internal", [MY_LAPTOP], ttl=42)
    assert_positive(server.ask("top2.nearest.of.my-app.internal"), "top2.nearest.of.my-app.internal", "AAAA", ttl=42)
    assert_txt(server.ask("_apps.internal", "TXT"), "_apps.internal", "api,cron,docs,my-app", ttl=42)
    assert_txt(server.ask("vms.docs.internal", "TXT"), "vms.docs.internal", "", ttl=42)
    assert_nodata(server.ask("my-app.internal", "A"), ttl=42)
    assert_nodata(server.ask("vm.my-app.internal", "AAAA"), ttl=42)
    assert_nxdomain(server.ask("nope.internal"), ttl=42)


# --- 3. TXT splitting and truncation --------------------------------------------------------------

BIG_REGIONS = ["ams", "iad", "sea", "syd", "fra", "gru", "nrt", "lhr"]


def big_registry(folder: Path, wide: int, narrow: int) -> dict[str, Any]:
    """A network `big` with app `wide` (many machines) and `narrow`; ids are random, files unordered."""
    rng = random.Random(20240501)
    ids = sorted({f"{rng.getrandbits(56):014x}" for _ in range(wide + narrow + 10)})[: wide + narrow]
    rng.shuffle(ids)
    machines = []
    for i, machine_id in enumerate(ids):
        app = "wide" if i < wide else "narrow"
        machines.append(
            {
                "id": machine_id,
                "app": app,
                "region": BIG_REGIONS[i % len(BIG_REGIONS)],
                "state": "stopped" if i % 5 == 4 else "started",
                "ip6": str(ipaddress.IPv6Address(f"fdaa:0:99:a7b:{i:x}::2")),  # as the server prints it
            }
        )
    data = {
        "networks": [{"name": "big", "prefix6": "fdaa:0:99::/48"}],
        "apps": [{"name": "wide", "network": "big"}, {"name": "narrow", "network": "big"}],
        "machines": machines,
    }
    folder.mkdir()
    write_yaml(folder / "big.yaml", data)
    (folder / "regions.yaml").write_text((Path(__file__).resolve().parent.parent / "zones" / "regions.yaml").read_text())
    return data


def expected_lists(data: dict[str, Any], app: str | None, every_state: bool) -> tuple[str, str]:
    """(vms or _instances value, ip6 list) computed from the written registry, by machine id."""
    chosen = sorted(
        (m for m in data["machines"] if (app is None or m["app"] == app) and (every_state or m["state"] == "started")),
        key=lambda m: m["id"],
    )
    if app is None:
        value = ";".join(f"instance={m['id']},app={m['app']},ip={m['ip6']},region={m['region']}" for m in chosen)
    else:
        value = ",".join(f"{m['id']} {m['region']}" for m in chosen)
    return value, ",".join(sorted({m["region"] for m in chosen}))


def test_long_txt_values_split_into_255_byte_strings(tmp_path: Path, start_server: Callable[..., RunningServer]) -> None:
    data = big_registry(tmp_path / "big", wide=60, narrow=18)
    server = start_server(registry=tmp_path / "big", views=[{"source": "127.0.0.0/8", "network": "big"}])

    narrow_vms, narrow_regions = expected_lists(data, "narrow", every_state=False)
    assert 255 < len(narrow_vms) < 400  # two strings, and the reply still fits 512 bytes
    for edns in (False, True):
        assert_txt(server.ask("vms.narrow.internal", "TXT", edns=edns), "vms.narrow.internal", narrow_vms)
    assert len(server.ask("vms.narrow.internal", "TXT").txt_strings()[0]) == 2

    cases = {
        "vms.wide.internal": expected_lists(data, "wide", every_state=False)[0],
        "all.vms.wide.internal": expected_lists(data, "wide", every_state=True)[0],
        "regions.wide.internal": expected_lists(data, "wide", every_state=False)[1],
        "all.regions.narrow.internal": expected_lists(data, "narrow", every_state=True)[1],
        "_instances.internal": expected_lists(data, None, every_state=False)[0],
        "all._instances.internal": expected_lists(data, None, every_state=True)[0],
        "_apps.internal": "narrow,wide",
    }
    assert len(cases["all.vms.wide.internal"]) > 1100
    assert len(cases["all._instances.internal"]) > 5000
    for name, value in cases.items():
        assert_txt(server.ask(name, "TXT", tcp=True), name, value)
        assert_txt(server.ask(name, "TXT", tcp=True, edns=False), name, value)


def test_txt_over_512_bytes_truncates_udp_without_edns(tmp_path: Path, start_server: Callable[..., RunningServer]) -> None:
    data = big_registry(tmp_path / "big", wide=60, narrow=18)
    server = start_server(registry=tmp_path / "big", views=[{"source": "127.0.0.0/8", "network": "big"}])
    vms, _ = expected_lists(data, "wide", every_state=False)
    assert 600 < len(vms) < 1000  # over 512 bytes, under the EDNS payload of 1232
    instances, _ = expected_lists(data, None, every_state=False)
    assert len(instances) > 2000

    for name in ("vms.wide.internal", "_instances.internal"):
        cut = server.ask(name, "TXT", edns=False)
        assert cut.flag("TC") and cut.flag("AA")
        assert cut.rcode_text == "NOERROR"
        assert cut.msg.answer == []  # whole RRsets are cut, never a part of the one TXT record
        assert len(cut.wire) <= 512

    # UDP with EDNS (1232): the 900-byte list fits, the instances do not
    assert_txt(server.ask("vms.wide.internal", "TXT"), "vms.wide.internal", vms)
    cut = server.ask("_instances.internal", "TXT")
    assert cut.flag("TC") and cut.msg.answer == [] and cut.msg.edns == 0
    assert len(cut.wire) <= 1232

    # TCP gets everything whole
    for edns in (False, True):
        assert_txt(server.ask("vms.wide.internal", "TXT", tcp=True, edns=edns), "vms.wide.internal", vms)
        assert_txt(server.ask("_instances.internal", "TXT", tcp=True, edns=edns), "_instances.internal", instances)


# --- 5. rotation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my-app.internal", MY_APP_STARTED),
        ("global.my-app.internal", MY_APP_STARTED),
        ("app.process.my-app.internal", [IP["148e21dad76789"], IP["4d89699c030518"]]),
        ("replica.role.kv._metadata.my-app.internal", [IP["4d89699c030518"], IP["6e82933c1d7e48"]]),
        ("api.internal", API_STARTED),
    ],
)
def test_address_sets_rotate_between_answers(server: RunningServer, name: str, expected: list[str]) -> None:
    n = len(expected)
    answers = [server.ask(name, tcp=(i % 2 == 1)).addresses() for i in range(2 * n + 1)]
    for got in answers:
        assert got in rotations(expected), got
    for before, after in zip(answers, answers[1:], strict=False):
        assert after == before[1:] + before[:1], answers  # each answer starts one further along
    assert sorted(map(tuple, answers[:n])) == sorted(map(tuple, rotations(expected)))  # all rotations


def test_rotation_over_a_larger_set(tmp_path: Path, start_server: Callable[..., RunningServer]) -> None:
    data = big_registry(tmp_path / "big", wide=12, narrow=1)
    server = start_server(registry=tmp_path / "big", views=[{"source": "127.0.0.0/8", "network": "big"}])
    machines = sorted(data["machines"], key=lambda m: m["id"])
    expected = [m["ip6"] for m in machines if m["app"] == "wide" and m["state"] == "started"]
    assert len(expected) == 10
    answers = [server.ask("wide.internal").addresses() for _ in range(len(expected))]
    assert sorted(map(tuple, answers)) == sorted(map(tuple, rotations(expected)))
    for before, after in zip(answers, answers[1:], strict=False):
        assert after == before[1:] + before[:1]


def test_single_addresses_and_nearest_do_not_rotate(server: RunningServer) -> None:
    nearest = [server.ask("top3.nearest.of.my-app.internal", tcp=(i % 2 == 1)).addresses() for i in range(5)]
    assert nearest == [[IP["6e82933c1d7e48"], IP["148e21dad76789"], IP["4d89699c030518"]]] * 5
    top2 = [server.ask("top2.nearest.of.api.internal").addresses() for _ in range(3)]
    assert top2 == [[IP["5683e29f4d1118"], IP["3287d4e1b09e28"]]] * 3
    assert [server.ask("sea.my-app.internal").addresses() for _ in range(3)] == [[IP["148e21dad76789"]]] * 3


# --- 6. letter case ------------------------------------------------------------------------------


def test_owner_names_keep_the_query_case(server: RunningServer) -> None:
    for name, expected in [
        ("My-App.INTERNAL", MY_APP_STARTED),
        ("GLOBAL.my-APP.Internal", MY_APP_STARTED),
        ("SeA.My-App.internal", [IP["148e21dad76789"]]),
        ("148E21DAD76789.VM.My-App.Internal", [IP["148e21dad76789"]]),
        ("Worker.Process.MY-APP.internal", [IP["6e82933c1d7e48"]]),
        ("PRIMARY.Role.KV._Metadata.my-app.INTERNAL", [IP["148e21dad76789"]]),
        ("My-Laptop._PEER.internal", [MY_LAPTOP]),
    ]:
        reply = server.ask(name)
        assert reply.msg.question[0].name.to_text() == name + "."
        assert_addresses(reply, name, expected)
    reply = server.ask("Top2.NEAREST.Of.My-App.internal")
    assert_positive(reply, "Top2.NEAREST.Of.My-App.internal", "AAAA")
    assert reply.addresses() == [IP["6e82933c1d7e48"], IP["148e21dad76789"]]
    for name, value in [
        ("VMS.My-App.Internal", TXT_FORMS[0][1]),
        ("All.Vms.MY-APP.internal", TXT_FORMS[1][1]),
        ("_APPS.Internal", "api,cron,docs,my-app"),
        ("ALL._Instances.INTERNAL", ALL_INSTANCES),
        ("Vms.DOCS.internal", ""),
    ]:
        assert_txt(server.ask(name, "TXT", tcp=True), name, value)
    # negative answers: the SOA's owner is the zone, spelled as the query spelled it
    for name, rdtype, rcode, zone in [
        ("Nope.INTERNAL", "AAAA", "NXDOMAIN", "INTERNAL."),
        ("Interactive-1669BA3D9._Peer.Internal", "AAAA", "NXDOMAIN", "Internal."),
        ("My-App.InTeRnAl", "TXT", "NOERROR", "InTeRnAl."),
        ("Vm.My-App.INTERNAL", "AAAA", "NOERROR", "INTERNAL."),
    ]:
        reply = server.ask(name, rdtype)
        assert_negative(reply, rcode)
        assert reply.msg.authority[0].name.to_text() == zone
