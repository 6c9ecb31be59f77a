"""views.py (SPEC §2): source address → view: the network whose prefix holds it, else the most specific
`views:` entry, else the listener's network or the network whose resolver address was asked; and the
asker's region for `nearest`."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

import pytest

from internal_dns.authority.views import PrefixTable, View, ViewResolver, parse_source
from internal_dns.config import ListenConfig, ViewConfig
from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents
from internal_dns.registry.model import Document, Snapshot

ZONES_DIR = Path(__file__).resolve().parents[2] / "zones"
LOOPBACK = ListenConfig("127.0.0.1", 53)
WILDCARD = ListenConfig("::", 53)
VIEWS = (
    ViewConfig(ip_network("127.0.0.0/8"), "personal"),  # listed first: the most specific wins anyway
    ViewConfig(ip_network("127.0.0.2/32"), "other-org"),
    ViewConfig(ip_network("127.0.0.3/32"), "shop-production"),
    ViewConfig(ip_network("127.0.0.4/31"), "shop-staging"),
    ViewConfig(ip_network("::1/128"), "personal"),
    ViewConfig(ip_network("192.0.2.0/24"), "gone"),  # a network the snapshot lacks
    ViewConfig(ip_network("fdaa:0:18:ffff::/64"), "other-org"),  # inside personal's prefix: the prefix wins
)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return build_snapshot(load_documents(ZONES_DIR))


@pytest.fixture
def resolver(snapshot: Snapshot) -> ViewResolver:
    return ViewResolver(snapshot, VIEWS, "iad")


# --- parse_source / PrefixTable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("10.18.0.2", IPv4Address("10.18.0.2")),
        ("::ffff:10.18.0.2", IPv4Address("10.18.0.2")),  # a v4-mapped source on a dual-stack socket
        ("fdaa:0:18::3", IPv6Address("fdaa:0:18::3")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("FDAA:0:18::3", IPv6Address("fdaa:0:18::3")),
        ("not an address", None),
        ("", None),
        ("10.18.0.256", None),
    ],
)
def test_parse_source(host: str, address: IPv4Address | IPv6Address | None) -> None:
    assert parse_source(host) == address


def test_prefix_table_longest_match_and_first_entry_on_a_tie() -> None:
    table = PrefixTable(
        [
            (ip_network("10.0.0.0/8"), "wide"),
            (ip_network("10.1.0.0/16"), "narrow"),
            (ip_network("10.1.2.3/32"), "host"),
            (ip_network("10.1.0.0/16"), "second"),
            (ip_network("fd00::/8"), "v6"),
            (ip_network("::/0"), "default6"),
        ]
    )
    assert table.lookup(IPv4Address("10.9.9.9")) == "wide"
    assert table.lookup(IPv4Address("10.1.9.9")) == "narrow"
    assert table.lookup(IPv4Address("10.1.2.3")) == "host"
    assert table.lookup(IPv4Address("11.0.0.1")) is None
    assert table.lookup(IPv6Address("fd12::1")) == "v6"
    assert table.lookup(IPv6Address("2001:db8::1")) == "default6"
    assert table.lookup(IPv6Address("::a01:203")) == "default6"  # 10.1.2.3's bits, but IPv6


def test_an_empty_prefix_table_finds_nothing() -> None:
    assert PrefixTable([]).lookup(IPv4Address("10.0.0.1")) is None
    assert PrefixTable([]).lookup(IPv6Address("::1")) is None


# --- the network's own prefix ----------------------------------------------------------------------------


def test_a_machine_asks_in_its_network_and_region(resolver: ViewResolver) -> None:
    assert resolver.resolve("fdaa:0:18:a7b:7d:f066:b83b:2", LOOPBACK) == View("personal", "sea")
    assert resolver.resolve("10.18.0.2", LOOPBACK) == View("personal", "sea")  # its ip4
    assert resolver.resolve("::ffff:10.18.0.2", LOOPBACK) == View("personal", "sea")
    assert resolver.resolve("fdaa:0:18:a7b:5e:71e9:c03a:2", LOOPBACK) == View("personal", "iad")  # stopped too
    assert resolver.resolve("fdaa:0:18:a7b:2c:d3e4:1b7a:2", LOOPBACK) == View("personal", "lhr")  # dns: false too
    assert resolver.resolve("fdaa:0:22:a7b:10:4c1d:2e3f:2", LOOPBACK) == View("other-org", "ewr")


def test_a_peer_asks_in_its_region(resolver: ViewResolver) -> None:
    assert resolver.resolve("fdaa:0:18:a7b:d6b:0:b:2", LOOPBACK) == View("personal", "ord")
    assert resolver.resolve("fdaa:0:18:a7b:d6b:0:c:2", LOOPBACK) == View("personal", "sea")  # interactive too


def test_an_unknown_address_in_a_prefix_gets_the_listeners_then_the_servers_region(snapshot: Snapshot) -> None:
    resolver = ViewResolver(snapshot, VIEWS, "iad")
    assert resolver.resolve("fdaa:0:18::99", LOOPBACK) == View("personal", "iad")
    assert resolver.resolve("fdaa:0:18::99", ListenConfig("127.0.0.1", 53, region="ams")) == View("personal", "ams")
    assert ViewResolver(snapshot, VIEWS, None).resolve("fdaa:0:18::99", LOOPBACK) == View("personal", None)


def test_the_prefix_wins_over_a_configured_view(resolver: ViewResolver) -> None:
    assert resolver.resolve("fdaa:0:18:ffff::1", LOOPBACK) == View("personal", "iad")


# --- configured views -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "network"),
    [
        ("127.0.0.1", "personal"),
        ("127.0.0.2", "other-org"),
        ("127.0.0.3", "shop-production"),
        ("127.0.0.4", "shop-staging"),
        ("127.0.0.5", "shop-staging"),
        ("127.0.0.6", "personal"),
        ("127.255.255.254", "personal"),
        ("::1", "personal"),
        ("::ffff:127.0.0.2", "other-org"),
    ],
)
def test_the_most_specific_configured_view_wins(resolver: ViewResolver, host: str, network: str) -> None:
    assert resolver.resolve(host, LOOPBACK) == View(network, "iad")


@pytest.mark.parametrize("host", ["192.0.2.1", "203.0.113.9", "2001:db8::1", "::2", "garbage"])
def test_a_source_nothing_claims_has_no_view(resolver: ViewResolver, host: str) -> None:
    assert resolver.resolve(host, LOOPBACK) is None


# --- sources nothing claims: the listener and the destination --------------------------------------------


def test_a_listeners_network(snapshot: Snapshot) -> None:
    resolver = ViewResolver(snapshot, (), None)
    listener = ListenConfig("0.0.0.0", 53, network="other-org", region="cdg")
    assert resolver.resolve("203.0.113.9", listener) == View("other-org", "cdg")
    assert resolver.resolve("203.0.113.9", ListenConfig("0.0.0.0", 53, network="gone")) is None


def test_a_listener_bound_to_a_networks_resolver_address(snapshot: Snapshot) -> None:
    resolver = ViewResolver(snapshot, (), None)
    assert resolver.resolve("2001:db8::1", ListenConfig("fdaa:0:22::3", 53)) == View("other-org", None)
    assert resolver.resolve("2001:db8::1", ListenConfig("fdaa:0:22::4", 53)) is None
    # a bound listener's own `network` comes first
    own = ListenConfig("fdaa:0:22::3", 53, network="personal")
    assert resolver.resolve("2001:db8::1", own) == View("personal", None)


def test_a_wildcard_listener_asks_the_destination_first(snapshot: Snapshot) -> None:
    resolver = ViewResolver(snapshot, (), None)
    assert resolver.resolve("2001:db8::1", WILDCARD, "fdaa:0:18::3") == View("personal", None)
    assert resolver.resolve("2001:db8::1", WILDCARD, "fdaa:0:22::3") == View("other-org", None)
    fallback = ListenConfig("::", 53, network="shop-staging")
    assert resolver.resolve("2001:db8::1", fallback, "fdaa:0:22::3") == View("other-org", None)
    assert resolver.resolve("2001:db8::1", fallback, "2001:db8::53") == View("shop-staging", None)
    assert resolver.resolve("2001:db8::1", WILDCARD, "2001:db8::53") is None
    assert resolver.resolve("2001:db8::1", WILDCARD, None) is None


def test_the_destination_never_overrides_a_prefix_or_a_configured_view(resolver: ViewResolver) -> None:
    assert resolver.resolve("127.0.0.2", WILDCARD, "fdaa:0:18::3") == View("other-org", "iad")
    assert resolver.resolve("fdaa:0:22::99", WILDCARD, "fdaa:0:18::3") == View("other-org", "iad")


def test_listener_network(snapshot: Snapshot) -> None:
    resolver = ViewResolver(snapshot, (), None)
    assert resolver.listener_network(ListenConfig("fdaa:0:18::3", 53)) == "personal"
    assert resolver.listener_network(ListenConfig("127.0.0.1", 53)) is None
    assert resolver.listener_network(ListenConfig("localhost", 53)) is None
    assert resolver.listener_network(WILDCARD, "fdaa:0:18::3") == "personal"
    assert resolver.listener_network(WILDCARD, "not an address") is None


def test_an_ip4_resolver_address() -> None:
    snap = build_snapshot(
        [
            Document(
                "x.yaml",
                {"networks": [{"name": "dual", "prefix6": "fdaa:5::/48", "prefix4": "10.5.0.0/16", "dns4": "10.5.0.53"}]},
            )
        ]
    )
    resolver = ViewResolver(snap, (), None)
    assert resolver.resolve("203.0.113.9", WILDCARD, "::ffff:10.5.0.53") == View("dual", None)
    assert resolver.resolve("203.0.113.9", WILDCARD, "fdaa:5::3") == View("dual", None)  # the default dns6


# --- remembering -----------------------------------------------------------------------------------


def test_views_are_remembered_and_shared(resolver: ViewResolver) -> None:
    a = resolver.resolve("127.0.0.1", LOOPBACK)
    b = resolver.resolve("127.0.0.6", LOOPBACK)
    c = resolver.resolve("127.0.0.1", ListenConfig("127.0.0.1", 5353))
    assert a is not None and a is b and a is c
    assert resolver.resolve("127.0.0.1", LOOPBACK) is a
    assert resolver.resolve("192.0.2.1", LOOPBACK) is None
    assert resolver.resolve("192.0.2.1", LOOPBACK) is None
