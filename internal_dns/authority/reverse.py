"""Reverse names of private address space: answered here and never sent upstream.

`ip6.arpa` names hold nibbles and `in-addr.arpa` names octets, least significant first. A name is
private when the address bits it spells cover a served prefix and fall inside it; names above it
(fewer bits) belong to the public tree and are forwarded.

The served prefixes are the networks' prefixes, each widened to the locally served block that
holds it (RFC 6303: `10.in-addr.arpa`, `d.f.ip6.arpa`, ...). Were only the prefixes themselves
served, a view could map every other network by asking reverse names and watching which ones
answer here and which get forwarded (SPEC §2: another network's data must be indistinguishable
from nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network

_HEX = set("0123456789abcdef")
REVERSE_SUFFIXES = (("ip6", "arpa"), ("in-addr", "arpa"))

# Private and special-use blocks whose reverse zones a resolver serves itself (RFC 6303 §4, with
# RFC 7793's shared address space); a block off an octet or nibble boundary widens its zones to
# the next boundary below it, as the RFC's own zone lists do (16.172 ... 31.172.in-addr.arpa).
LOCALLY_SERVED = tuple(
    ip_network(block)
    for block in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fd00::/8",
        "fe80::/10",
        "2001:db8::/32",
    )
)


def served_prefix(prefix: IPv4Network | IPv6Network) -> IPv4Network | IPv6Network:
    """The locally served block holding a network's prefix, or the prefix itself."""
    for block in LOCALLY_SERVED:
        # The versions are equal, which mypy cannot carry over to the two unions' members.
        if block.version == prefix.version and prefix.subnet_of(block):  # type: ignore[arg-type]
            return block
    return prefix


def is_reverse(labels: tuple[str, ...]) -> bool:
    return labels[-2:] in REVERSE_SUFFIXES


class PrivateReverse:
    def __init__(self, prefixes: Iterable[IPv4Network | IPv6Network]):
        prefixes = set(prefixes)  # many networks share one locally served block
        self._v6 = [(p.prefixlen, int(p.network_address) >> (128 - p.prefixlen)) for p in prefixes if p.version == 6]
        self._v4 = [(p.prefixlen, int(p.network_address) >> (32 - p.prefixlen)) for p in prefixes if p.version == 4]

    def zone_of(self, labels: tuple[str, ...]) -> int | None:
        """For a private reverse name, the label count of its reverse zone (the prefix, rounded
        up to a whole nibble or octet so that the zone lies inside the prefix, never above it:
        a /12 gives `16.10.in-addr.arpa`, not all of `10.in-addr.arpa`); None for a public name."""
        if labels[-2:] == ("ip6", "arpa"):
            digits, bits, table = _digits(labels, lambda s: len(s) == 1 and s in _HEX, 16), 4, self._v6
        elif labels[-2:] == ("in-addr", "arpa"):
            digits, bits, table = _digits(labels, octet, 256), 8, self._v4
        else:
            return None
        value, count = digits
        have = count * bits
        for prefixlen, network in table:
            if prefixlen <= have and value >> (have - prefixlen) == network:
                return -(-prefixlen // bits) + 2
        return None


def octet(label: str) -> bool:
    return label.isdigit() and len(label) <= 3 and str(int(label)) == label and int(label) < 256


def _digits(labels: tuple[str, ...], valid: Callable[[str], bool], base: int) -> tuple[int, int]:
    """The address bits spelled by the labels just left of the suffix, most significant first."""
    value, count = 0, 0
    for label in reversed(labels[:-2]):
        if not valid(label) or count == (32 if base == 16 else 4):
            break
        value = value * base + int(label, 16 if base == 16 else 10)
        count += 1
    return value, count
