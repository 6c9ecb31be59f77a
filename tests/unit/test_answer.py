"""answer.py: zones (longest suffix), the apex, and NXDOMAIN vs NODATA vs records (SPEC §3, RFC 2308,
RFC 8482) over the embedded registry."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from internal_dns.authority.answer import Zones, answer, apex, private_reverse
from internal_dns.authority.views import View
from internal_dns.records import AAAA, ANY, NOERROR, NS, NXDOMAIN, SOA, TXT, A, Answer, RRset, name_wire, soa_rdata
from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents
from internal_dns.registry.model import Snapshot

ZONES_DIR = Path(__file__).resolve().parents[2] / "zones"
CONFIGURED = {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"}
PERSONAL = View("personal", "iad")
OTHER = View("other-org", None)
PRODUCTION = View("shop-production", None)
STAGING = View("shop-staging", None)
MX = 15
MY_APP = ["fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"]


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return build_snapshot(load_documents(ZONES_DIR)).with_serial(1795314157)


@pytest.fixture(scope="module")
def zones() -> Zones:
    return Zones(CONFIGURED)


def ask(snapshot: Snapshot, zones: Zones, view: View, name: str, qtype: int, ttl: int = 5) -> Answer:
    labels = tuple(name.lower().split("."))
    zone = zones.match(labels)
    assert zone is not None
    return answer(snapshot, view, zone, labels, qtype, ttl)


def soa_of(zone: str, skip: int, serial: int = 1795314157, ttl: int = 5) -> RRset:
    return RRset(skip, SOA, ttl, (soa_rdata(zone, serial, ttl),))


def texts(rrset: RRset) -> list[str]:
    return [str(IPv6Address(rd)) for rd in rrset.rdatas]


# --- zones --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "zone"),
    [
        ("internal", "internal"),
        ("my-app.internal", "internal"),
        ("a.b.c.my-app.internal", "internal"),
        ("railway.internal", "railway.internal"),
        ("web.railway.internal", "railway.internal"),
        ("x.web.railway.internal", "railway.internal"),
        ("api.flycast", "flycast"),
        ("flycast", "flycast"),
        ("railway", None),
        ("example.com", None),
        ("internal.example.com", None),
        ("internalx", None),
    ],
)
def test_the_longest_zone_suffix_wins(zones: Zones, name: str, zone: str | None) -> None:
    found = zones.match(tuple(name.split(".")) if name else ())
    assert (found.name if found is not None else None) == zone


def test_no_zone_for_the_root(zones: Zones) -> None:
    assert zones.match(()) is None


def test_a_zone_knows_its_labels_and_scheme() -> None:
    zone = Zones({"railway.internal": "railway"}).by_labels[("railway", "internal")]
    assert zone.name == "railway.internal" and zone.labels == ("railway", "internal")


# --- the apex -----------------------------------------------------------------------------------------


def test_apex_soa(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, PERSONAL, "internal", SOA)
    assert result == Answer(NOERROR, answer=(RRset(0, SOA, 5, (soa_rdata("internal", 1795314157, 5),)),))
    rdata = result.answer[0].rdatas[0]
    names = name_wire("internal") + name_wire("hostmaster.internal")
    assert rdata == names + struct.pack("!IIIII", 1795314157, 3600, 600, 86400, 5)


def test_apex_ns_names_the_zone(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, PERSONAL, "railway.internal", NS)
    assert result.rcode == NOERROR
    assert result.answer == (RRset(0, NS, 5, (b"\x07railway\x08internal\x00",)),)


def test_apex_any_is_ns_and_soa(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, PERSONAL, "flycast", ANY)
    assert [rs.rtype for rs in result.answer] == [NS, SOA]
    assert result.authority == ()


@pytest.mark.parametrize("qtype", [A, AAAA, TXT, MX])
def test_apex_other_types_are_nodata(snapshot: Snapshot, zones: Zones, qtype: int) -> None:
    assert ask(snapshot, zones, PERSONAL, "internal", qtype) == Answer(NOERROR, authority=(soa_of("internal", 0),))


def test_apex_node_holds_soa_and_ns() -> None:
    zone = Zones({"internal": "fly"}).by_labels[("internal",)]
    node = apex(zone, 9, 30)
    assert set(node.records) == {SOA, NS}
    assert node.records[SOA].rdatas == (soa_rdata("internal", 9, 30),)


# --- existence ----------------------------------------------------------------------------------------


def test_records(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, PERSONAL, "my-app.internal", AAAA)
    assert result.rcode == NOERROR and result.authoritative and result.authority == ()
    (rrset,) = result.answer
    assert (rrset.skip, rrset.rtype, rrset.ttl, rrset.rotates) == (0, AAAA, 5, True)
    assert texts(rrset) == MY_APP


def test_ttl_is_the_configured_one(snapshot: Snapshot, zones: Zones) -> None:
    assert ask(snapshot, zones, PERSONAL, "my-app.internal", AAAA, ttl=60).answer[0].ttl == 60
    nx = ask(snapshot, zones, PERSONAL, "nope.internal", AAAA, ttl=60)
    assert nx.authority == (soa_of("internal", 1, ttl=60),)


@pytest.mark.parametrize(
    ("name", "skip"),
    [
        ("nope.internal", 1),
        ("billing.internal", 1),  # other-org's app: indistinguishable from nothing
        ("x.y.my-app.internal", 3),
        ("nope.flycast", 1),
        ("nope.railway.internal", 1),
        ("a.b.flycast", 2),
    ],
)
def test_nxdomain_has_the_zone_soa_owned_by_the_zone(snapshot: Snapshot, zones: Zones, name: str, skip: int) -> None:
    zone = ".".join(name.split(".")[skip:])
    assert ask(snapshot, zones, PERSONAL, name, AAAA) == Answer(NXDOMAIN, authority=(soa_of(zone, skip),))


def test_another_networks_name_answers_exactly_as_a_missing_one(snapshot: Snapshot, zones: Zones) -> None:
    assert ask(snapshot, zones, PERSONAL, "billing.internal", AAAA) == ask(
        snapshot, zones, PERSONAL, "nothing-here.internal", AAAA
    )
    assert ask(snapshot, zones, OTHER, "billing.internal", AAAA).rcode == NOERROR


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("my-app.internal", A),  # an AAAA name asked for A
        ("my-app.internal", TXT),
        ("my-app.internal", MX),
        ("vms.my-app.internal", AAAA),  # a TXT name asked for AAAA
        ("cron.internal", AAAA),  # an app with nothing started
        ("docs.internal", AAAA),  # an app with no machines at all
        ("vm.my-app.internal", AAAA),  # empty non-terminals
        ("kv._metadata.my-app.internal", TXT),
        ("91851edb6e5187.vm.my-app.internal", AAAA),  # a stopped machine
        ("nrt.my-app.internal", AAAA),  # a region without machines of the app
        ("nobody.process.my-app.internal", AAAA),
        ("cron.flycast", AAAA),  # own app without Flycast addresses
        ("api.flycast", A),
    ],
)
def test_nodata_is_noerror_with_the_soa(snapshot: Snapshot, zones: Zones, name: str, qtype: int) -> None:
    result = ask(snapshot, zones, PERSONAL, name, qtype)
    zone = "flycast" if name.endswith("flycast") else "internal"
    skip = len(name.split(".")) - len(zone.split("."))
    assert result == Answer(NOERROR, authority=(soa_of(zone, skip),))


def test_railway_legacy_a_is_nodata_in_its_zone(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, STAGING, "web.railway.internal", A)
    assert result == Answer(NOERROR, authority=(soa_of("railway.internal", 1),))
    assert ask(snapshot, zones, PRODUCTION, "web.railway.internal", A).rcode == NOERROR
    assert len(ask(snapshot, zones, PRODUCTION, "web.railway.internal", A).answer[0].rdatas) == 2


def test_an_empty_txt_list_answers_one_empty_string(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, PERSONAL, "vms.cron.internal", TXT)
    assert result == Answer(NOERROR, answer=(RRset(0, TXT, 5, (b"\x00",)),))


# --- ANY (RFC 8482) -----------------------------------------------------------------------------------


def test_any_answers_the_records_the_name_has(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, PERSONAL, "my-app.internal", ANY)
    assert [rs.rtype for rs in result.answer] == [AAAA]
    assert result.answer[0].rotates
    result = ask(snapshot, zones, PERSONAL, "_apps.internal", ANY)
    assert [rs.rtype for rs in result.answer] == [TXT]
    result = ask(snapshot, zones, PRODUCTION, "web.railway.internal", ANY)
    assert [rs.rtype for rs in result.answer] == [A, AAAA]


@pytest.mark.parametrize("name", ["of.my-app.internal", "cron.internal", "91851edb6e5187.vm.my-app.internal"])
def test_any_without_records_is_nodata(snapshot: Snapshot, zones: Zones, name: str) -> None:
    skip = len(name.split(".")) - 1
    assert ask(snapshot, zones, PERSONAL, name, ANY) == Answer(NOERROR, authority=(soa_of("internal", skip),))


def test_any_on_a_missing_name_is_nxdomain(snapshot: Snapshot, zones: Zones) -> None:
    assert ask(snapshot, zones, PERSONAL, "nope.internal", ANY).rcode == NXDOMAIN


def test_any_in_a_legacy_network_leaves_out_a(snapshot: Snapshot, zones: Zones) -> None:
    result = ask(snapshot, zones, STAGING, "web.railway.internal", ANY)
    assert [rs.rtype for rs in result.answer] == [AAAA]


# --- the serial ---------------------------------------------------------------------------------------


def test_the_soa_serial_is_the_snapshots(snapshot: Snapshot, zones: Zones) -> None:
    later = snapshot.with_serial(1795314158)
    nx = ask(later, zones, PERSONAL, "nope.internal", AAAA)
    assert nx.authority == (soa_of("internal", 1, serial=1795314158),)
    top = ask(later, zones, PERSONAL, "internal", SOA)
    assert struct.unpack("!I", top.answer[0].rdatas[0][-20:-16]) == (1795314158,)


# --- private reverse zones: the same rules, an apex holding only its SOA -----------------------------

REVERSE_ZONE = ("d", "f", "ip6", "arpa")


def reverse(labels: tuple[str, ...], qtype: int) -> Answer:
    return private_reverse(labels, len(REVERSE_ZONE), qtype, 7, 5, lambda _: None)


@pytest.mark.parametrize("qtype", [SOA, ANY])
def test_a_private_reverse_apex_answers_its_soa(qtype: int) -> None:
    assert reverse(REVERSE_ZONE, qtype) == Answer(NOERROR, answer=(RRset(0, SOA, 5, (soa_rdata("d.f.ip6.arpa", 7, 5),)),))


@pytest.mark.parametrize("qtype", [NS, TXT, 12])
def test_a_private_reverse_apex_has_nothing_else(qtype: int) -> None:
    assert reverse(REVERSE_ZONE, qtype) == Answer(NOERROR, authority=(RRset(0, SOA, 5, (soa_rdata("d.f.ip6.arpa", 7, 5),)),))


def test_every_name_below_a_private_reverse_apex_is_nxdomain() -> None:
    labels = ("2", "0", "0", "0") + REVERSE_ZONE
    soa = RRset(4, SOA, 5, (soa_rdata("d.f.ip6.arpa", 7, 5),))  # owned by the apex, four labels up
    assert reverse(labels, 12) == Answer(NXDOMAIN, authority=(soa,))
