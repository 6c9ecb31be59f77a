"""etcd's Range call as protocol buffer bytes (registry/etcd/kvpb.py): requests as etcd reads
them, responses read whatever else a later etcd adds, and bytes that are no response refused.
The messages here are written by this test's own small encoder, field by field."""

from __future__ import annotations

import pytest

from internal_dns.registry.etcd.kvpb import Malformed, range_request, range_response


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def number(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def text(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def fixed64(field: int) -> bytes:
    return varint(field << 3 | 1) + b"\x01" * 8


def key_value(key: bytes, value: bytes, lease: int = 0, extra: bytes = b"") -> bytes:
    body = text(1, key) + number(2, 7) + number(3, 300_000) + number(4, 2) + text(5, value)
    if lease:
        body += number(6, lease)
    return text(2, body + extra)


def header(revision: int) -> bytes:
    return text(1, number(1, 2**63 + 5) + number(2, 99) + number(3, revision) + number(4, 3))


def test_a_request_is_written_field_by_field_defaults_left_out() -> None:
    assert range_request(b"/a/", b"/a0", 3, 5) == bytes.fromhex("0a032f612f12032f61301803") + b"\x20\x05"
    assert range_request(b"/a/", b"/a0") == bytes.fromhex("0a032f612f12032f6130")
    assert range_request(b"k", b"l", 300, 2**40).endswith(b"\x18\xac\x02\x20" + varint(2**40))


def test_a_response_gives_its_revision_key_values_and_more() -> None:
    long_value = b'{"metadata": "' + b"x" * 300 + b'"}'  # a length of two bytes
    message = (
        header(123_456)
        + key_value(b"/p/machines/ab", b'{"id":"ab"}')
        + key_value(b"/p/machines/cd", long_value, lease=77)
        + number(3, 1)
        + number(4, 10)
    )
    page = range_response(message)
    assert page.revision == 123_456
    assert page.kvs == [(b"/p/machines/ab", b'{"id":"ab"}'), (b"/p/machines/cd", long_value)]
    assert page.more is True


def test_an_empty_range_and_no_more() -> None:
    page = range_response(header(9) + number(4, 0))
    assert (page.revision, page.kvs, page.more) == (9, [], False)


def test_fields_a_later_etcd_may_add_are_stepped_over() -> None:
    unknown = number(15, 1) + text(16, b"whatever") + fixed64(17) + varint(18 << 3 | 5) + b"\0\0\0\0"
    message = header(5) + unknown + key_value(b"k", b"v", extra=unknown) + unknown + number(3, 0)
    page = range_response(message)
    assert (page.revision, page.kvs, page.more) == (5, [(b"k", b"v")], False)


def test_a_key_value_with_a_value_but_no_key_or_an_empty_value() -> None:
    page = range_response(header(5) + text(2, text(5, b"v")) + text(2, text(1, b"k")))
    assert page.kvs == [(b"", b"v"), (b"k", b"")]


@pytest.mark.parametrize("cut", range(1, 60))
def test_a_truncated_response_is_refused_never_misread(cut: int) -> None:
    message = header(5) + key_value(b"/p/machines/ab", b'{"id":"ab"}') + number(3, 1)
    assert cut < len(message)
    try:
        page = range_response(message[:cut])
    except Malformed:
        return
    # A cut between two whole fields is a shorter message; it never holds a cut key or value.
    assert page.kvs in ([], [(b"/p/machines/ab", b'{"id":"ab"}')])


@pytest.mark.parametrize(
    "message",
    [
        b"",  # no header: no revision
        b"\x0a\x05\x18",  # a header longer than the message
        b"\x0a\x02\x18\xff",  # a number that never ends
        header(5) + b"\x13",  # wire type 3 (groups): not written by etcd
        header(5) + b"\x12\x03\x0a\x05ab",  # a key longer than its key-value
    ],
    ids=["empty", "short-header", "endless-number", "group", "key-past-its-message"],
)
def test_bytes_that_are_no_response_are_refused(message: bytes) -> None:
    with pytest.raises(Malformed):
        range_response(message)
