"""Records as the answer logic returns them: RRsets of finished rdata bytes, owners relative to the question.

An owner is given as `skip`, the number of leading labels of the query name to drop, so the
renderer can point at the question (keeping the querier's letter case) instead of writing names.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

A, NS, SOA, PTR, TXT, AAAA, SRV, OPT, IXFR, AXFR, ANY = 1, 2, 6, 12, 16, 28, 33, 41, 251, 252, 255
IN, CH = 1, 3

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16

# An RR's rdata is at most 65535 bytes; leave room for the header, question and OPT of a TCP reply.
MAX_TXT_VALUE = 65535 - 1024


@dataclass(frozen=True, slots=True)
class RRset:
    skip: int  # owner: the query name less this many leading labels
    rtype: int
    ttl: int
    rdatas: tuple[bytes, ...]
    rotates: bool = False  # an address set whose order turns between answers
    rclass: int = IN
    prefix: bytes = b""  # labels (wire form) put before the owner: names below the question's


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: int
    answer: tuple[RRset, ...] = ()
    authority: tuple[RRset, ...] = ()
    authoritative: bool = True
    additional: tuple[RRset, ...] = ()  # kept while they fit, dropped whole without TC (RFC 2181 §9)
    fail_open: bool = False  # the addresses are all critical ones, given since there is nothing else


@dataclass(frozen=True, slots=True)
class RecordSet:
    rdatas: tuple[bytes, ...]
    rotates: bool = False


@dataclass(frozen=True, slots=True)
class Extra:
    """A record for the additional section, its owner given as an RRset's is (`skip`, `prefix`)."""

    skip: int
    prefix: bytes
    rtype: int
    rdatas: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Node:
    """A name that exists: its records by type (an empty mapping is an empty non-terminal)."""

    records: Mapping[int, RecordSet] = field(default_factory=dict)
    additional: tuple[Extra, ...] = ()  # what answers of its records carry beside them (SRV targets)
    fail_open: bool = False  # its addresses are critical machines', every one (SPEC §3, Health)


EMPTY_NON_TERMINAL = Node()


def name_wire(name: str) -> bytes:
    out = bytearray()
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def aaaa(addresses: Iterable[IPv6Address]) -> RecordSet:
    return RecordSet(tuple(a.packed for a in addresses), rotates=True)


def a(addresses: Iterable[IPv4Address]) -> RecordSet:
    return RecordSet(tuple(x.packed for x in addresses), rotates=True)


def txt_rdata(value: str) -> bytes:
    """One TXT rdata: the value cut into 255-byte character-strings, in order."""
    raw = value.encode("utf-8")
    if len(raw) > MAX_TXT_VALUE:
        raw = _cut_at_separator(raw, MAX_TXT_VALUE)
    if not raw:
        return b"\x00"
    out = bytearray()
    for i in range(0, len(raw), 255):
        chunk = raw[i : i + 255]
        out.append(len(chunk))
        out += chunk
    return bytes(out)


def _cut_at_separator(raw: bytes, limit: int) -> bytes:
    """A list too long for one record keeps its whole leading entries (',' or ';' separated)."""
    head = raw[: limit + 1]
    cut = max(head.rfind(b","), head.rfind(b";"))
    return raw[: cut if cut > 0 else limit]


def txt(value: str) -> RecordSet:
    return RecordSet((txt_rdata(value),))


def label_wire(label: str) -> bytes:
    raw = label.encode("ascii")
    return bytes((len(raw),)) + raw


def srv_rdata(port: int, target: str) -> bytes:
    """Priority 0, weight 0: every target is as good as the next (RFC 2782)."""
    return struct.pack("!HHH", 0, 0, port) + name_wire(target)


def soa_rdata(zone: str, serial: int, ttl: int) -> bytes:
    return name_wire(zone) + name_wire("hostmaster." + zone) + struct.pack("!IIIII", serial & 0xFFFFFFFF, 3600, 600, 86400, ttl)
