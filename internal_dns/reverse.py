"""Reverse names inside a network's prefix: private, so answered here and never sent upstream.

`ip6.arpa` names hold nibbles and `in-addr.arpa` names octets, least significant first. A name is
private when the address bits it spells cover some network's whole prefix and fall inside it;
names above a prefix (fewer bits) belong to the public tree and are forwarded.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

_HEX = set("0123456789abcdef")
REVERSE_SUFFIXES = (("ip6", "arpa"), ("in-addr", "arpa"))


def is_reverse(labels: tuple[str, ...]) -> bool:
    return labels[-2:] in REVERSE_SUFFIXES


class PrivateReverse:
    def __init__(self, prefixes: Iterable[IPv4Network | IPv6Network]):
        prefixes = list(prefixes)
        self._v6 = [(p.prefixlen, int(p.network_address) >> (128 - p.prefixlen)) for p in prefixes if p.version == 6]
        self._v4 = [(p.prefixlen, int(p.network_address) >> (32 - p.prefixlen)) for p in prefixes if p.version == 4]

    def zone_of(self, labels: tuple[str, ...]) -> int | None:
        """For a private reverse name, the label count of its reverse zone (the prefix, rounded
        up to a whole nibble or octet so that the zone lies inside the prefix, never above it:
        a /12 gives `16.10.in-addr.arpa`, not all of `10.in-addr.arpa`); None for a public name."""
        if labels[-2:] == ("ip6", "arpa"):
            digits, bits, table = _digits(labels, lambda s: len(s) == 1 and s in _HEX, 16), 4, self._v6
        elif labels[-2:] == ("in-addr", "arpa"):
            digits, bits, table = _digits(labels, _octet, 256), 8, self._v4
        else:
            return None
        value, count = digits
        have = count * bits
        for prefixlen, network in table:
            if prefixlen <= have and value >> (have - prefixlen) == network:
                return -(-prefixlen // bits) + 2
        return None


def _octet(label: str) -> bool:
    return label.isdigit() and len(label) <= 3 and str(int(label)) == label and int(label) < 256


def _digits(labels: tuple[str, ...], valid: object, base: int) -> tuple[int, int]:
    """The address bits spelled by the labels just left of the suffix, most significant first."""
    value, count = 0, 0
    for label in reversed(labels[:-2]):
        if not valid(label) or count == (32 if base == 16 else 4):  # type: ignore[operator]
            break
        value = value * base + int(label, 16 if base == 16 else 10)
        count += 1
    return value, count
