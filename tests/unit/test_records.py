"""records.py: the rdata the schemes hand over: names, SOA, and TXT values split into 255-byte
character-strings, a value too long for one record keeping its whole leading entries."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from internal_dns.records import MAX_TXT_VALUE, a, aaaa, name_wire, soa_rdata, txt, txt_rdata


def strings(rdata: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(rdata):
        out.append(rdata[pos + 1 : pos + 1 + rdata[pos]])
        pos += 1 + rdata[pos]
    assert pos == len(rdata)
    return out


def test_name_wire() -> None:
    assert name_wire("my-app.internal") == b"\x06my-app\x08internal\x00"
    assert name_wire("internal.") == b"\x08internal\x00"
    assert name_wire("") == b"\x00"
    assert name_wire(".") == b"\x00"


def test_soa_rdata() -> None:
    rdata = soa_rdata("railway.internal", 1795314157, 5)
    names = b"\x07railway\x08internal\x00" + b"\x0ahostmaster\x07railway\x08internal\x00"
    assert rdata == names + struct.pack("!IIIII", 1795314157, 3600, 600, 86400, 5)


def test_soa_serial_wraps_at_32_bits() -> None:
    assert soa_rdata("internal", 2**32 + 7, 5)[-20:-16] == struct.pack("!I", 7)


def test_txt_short_and_empty() -> None:
    assert txt_rdata("") == b"\x00"
    assert txt_rdata("abc") == b"\x03abc"
    assert txt("").rdatas == (b"\x00",) and not txt("x").rotates


def test_txt_splits_at_255_bytes_in_order() -> None:
    value = "".join(chr(97 + i % 26) for i in range(600))
    parts = strings(txt_rdata(value))
    assert [len(p) for p in parts] == [255, 255, 90]
    assert b"".join(parts) == value.encode()
    assert [len(p) for p in strings(txt_rdata("x" * 510))] == [255, 255]


def test_txt_is_utf8() -> None:
    assert txt_rdata("é") == b"\x02\xc3\xa9"


def test_a_value_too_long_keeps_its_whole_leading_entries() -> None:
    entry = "instance=" + "0" * 50  # 59 bytes
    value = ",".join([entry] * 2000)
    assert len(value) > MAX_TXT_VALUE
    kept = b"".join(strings(txt_rdata(value))).decode()
    assert len(kept) <= MAX_TXT_VALUE
    entries = kept.split(",")
    assert all(e == entry for e in entries)
    assert len(entries) == (MAX_TXT_VALUE + 1) // (len(entry) + 1)
    semicolons = b"".join(strings(txt_rdata(";".join([entry] * 2000)))).decode()
    assert all(e == entry for e in semicolons.split(";"))


def test_a_value_too_long_without_separators_is_cut_at_the_limit() -> None:
    kept = b"".join(strings(txt_rdata("x" * (MAX_TXT_VALUE + 100))))
    assert len(kept) == MAX_TXT_VALUE


def test_address_sets_rotate() -> None:
    six = aaaa([IPv6Address("fdaa::1"), IPv6Address("fdaa::2")])
    four = a([IPv4Address("10.0.0.1")])
    assert six.rotates and four.rotates
    assert six.rdatas == (IPv6Address("fdaa::1").packed, IPv6Address("fdaa::2").packed)
    assert four.rdatas == (b"\x0a\x00\x00\x01",)
