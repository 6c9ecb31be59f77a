"""reverse.py: which reverse names are private (answered here, never forwarded) and the label count of
their reverse zone; the locally served blocks (RFC 6303) that networks' prefixes widen to."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from internal_dns.authority.reverse import LOCALLY_SERVED, PrivateReverse, is_reverse, served_prefix


def labels(name: str) -> tuple[str, ...]:
    return tuple(name.rstrip(".").split("."))


def ptr(address: str) -> tuple[str, ...]:
    return labels(ip_address(address).reverse_pointer)


@pytest.mark.parametrize(
    ("prefix", "block"),
    [
        ("fdaa:0:18::/48", "fd00::/8"),
        ("fd12:3456:7800::/48", "fd00::/8"),
        ("10.18.0.0/16", "10.0.0.0/8"),
        ("172.20.0.0/16", "172.16.0.0/12"),
        ("192.168.7.0/24", "192.168.0.0/16"),
        ("100.100.0.0/16", "100.64.0.0/10"),
        ("2001:db8:1::/48", "2001:db8::/32"),
        ("fe80::/64", "fe80::/10"),
        ("2a00:1450::/32", "2a00:1450::/32"),  # public: served as itself
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("172.0.0.0/8", "172.0.0.0/8"),  # wider than the block inside it
    ],
)
def test_served_prefix(prefix: str, block: str) -> None:
    assert served_prefix(ip_network(prefix)) == ip_network(block)


def test_locally_served_blocks_are_the_rfc_6303_ones() -> None:
    assert {str(b) for b in LOCALLY_SERVED} >= {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"}


@pytest.mark.parametrize(
    ("name", "reverse"),
    [
        ("1.0.0.10.in-addr.arpa", True),
        ("in-addr.arpa", True),
        ("d.f.ip6.arpa", True),
        ("ip6.arpa", True),
        ("arpa", False),
        ("example.com", False),
        ("ip6.arpa.example", False),
    ],
)
def test_is_reverse(name: str, reverse: bool) -> None:
    assert is_reverse(labels(name)) is reverse


@pytest.fixture
def private() -> PrivateReverse:
    served = [ip_network(p) for p in ("fdaa:0:18::/48", "10.18.0.0/16", "172.20.0.0/16", "100.64.5.0/24")]
    return PrivateReverse(served_prefix(p) for p in served)


@pytest.mark.parametrize(
    ("name", "zone"),
    [
        (ptr("fdaa:0:18:a7b:7d:f066:b83b:2"), "d.f.ip6.arpa"),
        (ptr("fdaa:0:22::1"), "d.f.ip6.arpa"),  # another network's address: the same block, the same answer
        (ptr("10.18.0.2"), "10.in-addr.arpa"),
        (ptr("10.250.1.10"), "10.in-addr.arpa"),
        (labels("d.f.ip6.arpa"), "d.f.ip6.arpa"),  # the zone's apex
        (labels("10.in-addr.arpa"), "10.in-addr.arpa"),
        (labels("a.d.f.ip6.arpa"), "d.f.ip6.arpa"),  # part of an address
        (labels("18.10.in-addr.arpa"), "10.in-addr.arpa"),
        (labels("x.y.d.f.ip6.arpa"), "d.f.ip6.arpa"),  # not an address below, but inside the zone
        (labels("foo.10.in-addr.arpa"), "10.in-addr.arpa"),
        (labels("1.2.3.4.10.in-addr.arpa"), "10.in-addr.arpa"),  # more labels than an address has
        (ptr("172.20.1.1"), "20.172.in-addr.arpa"),  # a /12 block: the zone of the whole octet
        (ptr("172.31.255.1"), "31.172.in-addr.arpa"),
        (ptr("172.16.0.1"), "16.172.in-addr.arpa"),
        (ptr("100.64.0.1"), "64.100.in-addr.arpa"),  # a /10: from 64 to 127
        (ptr("100.127.0.1"), "127.100.in-addr.arpa"),
    ],
)
def test_private_names_and_their_zone(private: PrivateReverse, name: tuple[str, ...], zone: str) -> None:
    assert private.zone_of(name) == len(labels(zone))
    assert ".".join(name[-len(labels(zone)) :]) == zone


@pytest.mark.parametrize(
    "name",
    [
        ptr("8.8.8.8"),
        ptr("2001:4860::8888"),
        ptr("172.32.0.1"),  # just past 172.16.0.0/12
        ptr("172.15.0.1"),
        ptr("100.128.0.1"),  # just past 100.64.0.0/10
        ptr("11.0.0.1"),
        ptr("192.168.1.1"),  # a locally served block no network is in
        ptr("fc00::1"),
        labels("in-addr.arpa"),  # above every block: the public tree
        labels("ip6.arpa"),
        labels("f.ip6.arpa"),
        labels("172.in-addr.arpa"),
        labels("100.in-addr.arpa"),
        labels("010.in-addr.arpa"),  # not an octet
        labels("256.in-addr.arpa"),
        labels("x.in-addr.arpa"),
        labels("df.ip6.arpa"),  # not a nibble
        labels("d.x.ip6.arpa"),
        labels("my-app.internal"),
        labels("example.com"),
    ],
)
def test_public_names(private: PrivateReverse, name: tuple[str, ...]) -> None:
    assert private.zone_of(name) is None


def test_a_public_prefix_is_served_as_itself() -> None:
    private = PrivateReverse(served_prefix(ip_network(p)) for p in ("2a00:1450:4001::/48", "203.0.113.0/25"))
    assert private.zone_of(ptr("2a00:1450:4001::1")) == 12 + 2
    assert private.zone_of(labels("1.4.0.0.5.4.1.0.0.a.2.ip6.arpa")) is None  # 44 bits: above the prefix
    assert private.zone_of(ptr("203.0.113.9")) == 4 + 2  # a /25 is rounded up to a whole octet
    assert private.zone_of(ptr("203.0.113.200")) is None
    assert private.zone_of(labels("113.0.203.in-addr.arpa")) is None  # 24 bits: above the /25


def test_nothing_is_private_without_networks() -> None:
    assert PrivateReverse([]).zone_of(ptr("10.0.0.1")) is None
