"""Transports (SPEC §6): UDP and TCP on IPv4 and IPv6 listeners, `::` taking both families, TCP
framing (pipelining, queries split across writes), and what keeps one TCP client from taking the
service: the idle timeout, a deadline for each query, the caps in all and per source (an idle
connection giving way at the cap), backpressure, and the answers owed after a client's FIN.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dns.message
import pytest

from tests.conftest import RunningServer, on_reactor
from tests.dnsclient import Reply, make_query, recv_exact
from tests.fake_upstream import FakeUpstream

StartServer = Callable[..., RunningServer]

MY_APP = {"fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"}
BILLING = {"fdaa:0:22:a7b:10:4c1d:2e3f:2", "fdaa:0:22:a7b:11:9a8b:7c6d:2"}


@contextmanager
def connection(server: RunningServer, host: str = "127.0.0.1", source: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(3.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.connect((host, server.port))
        yield sock


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def read_reply(sock: socket.socket) -> Reply:
    (length,) = struct.unpack("!H", recv_exact(sock, 2))
    return Reply.decode(recv_exact(sock, length))


def ask_on(sock: socket.socket, name: str = "my-app.internal", rdtype: str = "AAAA") -> Reply:
    query = make_query(name, rdtype)
    sock.sendall(frame(query.to_wire()))
    reply = read_reply(sock)
    assert reply.msg.id == query.id
    return reply


def assert_closed(sock: socket.socket) -> None:
    """The server has closed the connection (EOF, or a reset if it aborted)."""
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass


def assert_turned_away(server: RunningServer) -> None:
    """A new connection is closed by the server without a word (the reset may even beat connect())."""
    try:
        with connection(server) as sock:
            assert_closed(sock)
    except ConnectionResetError:
        pass


# --- listeners --------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ipv4_listener(server: RunningServer, tcp: bool) -> None:
    reply = server.ask("my-app.internal", "AAAA", tcp=tcp)
    assert reply.rcode_text == "NOERROR" and set(reply.addresses()) == MY_APP


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ipv6_listener(start_server: StartServer, tcp: bool) -> None:
    server = start_server(listen=[{"address": "::1", "port": 0}])
    assert server.host == "::1"
    reply = server.ask("my-app.internal", "AAAA", host="::1", source="::1", tcp=tcp)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA")
    assert set(reply.addresses()) == MY_APP  # ::1 → personal, by the test config's views
    assert server.ask("nope.internal", "AAAA", host="::1", source="::1", tcp=tcp).rcode_text == "NXDOMAIN"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_wildcard_listener_takes_ipv4_and_ipv6(start_server: StartServer, tcp: bool) -> None:
    server = start_server(listen=[{"address": "::", "port": 0}])
    for host, source in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")]:
        reply = server.ask("my-app.internal", "AAAA", host=host, source=source, tcp=tcp)
        assert reply.rcode_text == "NOERROR", host
        assert set(reply.addresses()) == MY_APP, host
    # IPv4 sources arrive as v4-mapped IPv6 on this socket and still choose their view
    other = server.ask("billing.internal", "AAAA", host="127.0.0.1", source="127.0.0.2", tcp=tcp)
    assert other.rcode_text == "NOERROR" and set(other.addresses()) == BILLING
    hidden = server.ask("my-app.internal", "AAAA", host="127.0.0.1", source="127.0.0.2", tcp=tcp)
    assert hidden.rcode_text == "NXDOMAIN"


def test_several_listeners(start_server: StartServer) -> None:
    server = start_server(listen=[{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0}])
    ports = server.service.bound_ports()
    assert [host for host, _ in ports] == ["127.0.0.1", "::1"]
    for host, port in ports:
        source = "::1" if ":" in host else "127.0.0.1"
        for tcp in (False, True):
            reply = server.ask("my-app.internal", "AAAA", host=host, port=port, source=source, tcp=tcp)
            assert set(reply.addresses()) == MY_APP


# --- TCP framing ------------------------------------------------------------------------------

PIPELINE = [
    ("my-app.internal", "AAAA", "NOERROR"),
    ("vms.my-app.internal", "TXT", "NOERROR"),
    ("nope.internal", "AAAA", "NXDOMAIN"),
    ("example.com", "A", "REFUSED"),
    ("api.flycast", "AAAA", "NOERROR"),
    ("internal", "SOA", "NOERROR"),
    ("id.server", "TXT", "NOERROR"),
    ("my-app.internal", "TXT", "NOERROR"),
    ("sea.my-app.internal", "AAAA", "NOERROR"),
    ("_apps.internal", "TXT", "NOERROR"),
]


def test_pipelined_queries_in_one_write_are_all_answered(server: RunningServer) -> None:
    queries: dict[int, tuple[dns.message.Message, str]] = {}
    for i, (name, rdtype, rcode) in enumerate(PIPELINE):
        query = make_query(name, rdtype, rdclass="CH" if name == "id.server" else "IN")
        query.id = 1000 + i
        queries[query.id] = (query, rcode)
    with connection(server) as sock:
        sock.sendall(b"".join(frame(q.to_wire()) for q, _ in queries.values()))
        replies = [read_reply(sock) for _ in queries]
        assert sorted(r.msg.id for r in replies) == sorted(queries)  # any order, each once
        for reply in replies:
            query, rcode = queries[reply.msg.id]
            assert reply.msg.question[0].name == query.question[0].name
            assert reply.msg.question[0].rdtype == query.question[0].rdtype
            assert reply.rcode_text == rcode
        assert set(ask_on(sock).addresses()) == MY_APP  # and the connection is still usable


def test_a_query_split_across_writes(server: RunningServer) -> None:
    first, second, third = (make_query(n, "AAAA").to_wire() for n in ("my-app.internal", "api.flycast", "nope.internal"))
    with connection(server) as sock:
        # a whole query and the first byte of the next one's length: the server must wait for the rest
        sock.sendall(frame(first) + frame(second)[:1])
        assert set(read_reply(sock).addresses()) == MY_APP
        rest = frame(second)[1:]
        for i in range(0, len(rest), 7):  # then the rest in small pieces
            sock.sendall(rest[i : i + 7])
        assert read_reply(sock).addresses() == ["fdaa:0:18:0:1::5"]
        # a length prefix alone, then its message
        sock.sendall(frame(third)[:2])
        assert_no_reply_yet(sock)
        sock.sendall(third)
        assert read_reply(sock).rcode_text == "NXDOMAIN"


def assert_no_reply_yet(sock: socket.socket) -> None:
    sock.settimeout(0.2)
    try:
        with pytest.raises(socket.timeout):
            sock.recv(1)
    finally:
        sock.settimeout(3.0)


def test_tcp_framing_of_malformed_and_silent_queries(server: RunningServer) -> None:
    response = bytearray(make_query("my-app.internal", "AAAA").to_wire())
    response[2] |= 0x80  # QR=1: no reply, but the connection goes on
    formerr = b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00"
    with connection(server) as sock:
        sock.sendall(frame(bytes(response)) + frame(b"\x01\x02\x03") + frame(formerr))
        reply = read_reply(sock)
        assert reply.msg.id == 0x1234 and reply.rcode_text == "FORMERR"
        assert set(ask_on(sock).addresses()) == MY_APP


def test_tcp_replies_are_not_truncated(server: RunningServer) -> None:
    # over 512 bytes: TC over UDP without EDNS, whole over TCP
    udp = server.ask("all._instances.internal", "TXT", edns=False)
    assert udp.flag("TC")
    tcp = server.ask("all._instances.internal", "TXT", edns=False, tcp=True)
    assert not tcp.flag("TC") and len(tcp.wire) > 512
    assert len(tcp.txt()[0].split(";")) == 10  # every state, but not dns: false


# --- idle timeout and the connection cap ------------------------------------------------------


def test_idle_connections_are_closed(start_server: StartServer) -> None:
    server = start_server(tcp={"idle_timeout": 5})
    with connection(server) as sock:
        ask_on(sock)  # the server has seen the connection and armed its timer
        server.advance(4)
        ask_on(sock)  # still open; and a query restarts the idle time
        server.advance(4)
        assert set(ask_on(sock).addresses()) == MY_APP
        server.advance(6)
        assert_closed(sock)


def test_silent_and_partial_connections_are_closed_too(start_server: StartServer) -> None:
    server = start_server(tcp={"idle_timeout": 2})
    with connection(server) as quiet, connection(server) as partial, connection(server) as busy:
        partial.sendall(b"\x00\x40\x12\x34")  # a length and the start of a query that never ends
        ask_on(busy)  # accepted after the other two: their timers are armed by now
        server.advance(1.5)
        ask_on(busy)
        server.advance(1)  # quiet and partial: 2.5 s idle, busy: 1 s
        assert_closed(quiet)
        assert_closed(partial)
        assert set(ask_on(busy).addresses()) == MY_APP


def test_at_the_cap_the_longest_idle_connection_gives_way(start_server: StartServer) -> None:
    server = start_server(tcp={"max_connections": 2})
    with connection(server) as first, connection(server) as second:
        ask_on(first)
        ask_on(second)  # both idle now; `first` the longest
        with connection(server) as third:
            assert set(ask_on(third).addresses()) == MY_APP  # let in
            assert_closed(first)  # it gave way
            assert set(ask_on(second).addresses()) == MY_APP
            assert server.service.tcp.closed["evicted"] == 1
            assert len(server.service.tcp.open) == 2


def forwarding_server(start_server: StartServer, fake: FakeUpstream, **tcp: Any) -> RunningServer:
    return start_server(upstreams=[fake.address], forward={"enabled": True}, tcp=tcp)


def test_at_the_cap_busy_connections_keep_their_slots(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding_server(start_server, fake, max_connections=2)
    fake.hold = True  # the upstream answers only when released: both connections wait on it
    queries = [make_query(f"www{i}.example.test", "A") for i in range(2)]
    with connection(server) as first, connection(server) as second:
        for sock, query in zip((first, second), queries, strict=True):
            sock.sendall(frame(query.to_wire()))
        fake.wait_for(2)
        assert_turned_away(server)  # every connection busy: the new one is closed at once
        assert server.service.tcp.rejected["cap"] == 1
        fake.release()
        for sock, query in zip((first, second), queries, strict=True):
            assert read_reply(sock).msg.id == query.id


def test_a_cap_per_source(start_server: StartServer) -> None:
    server = start_server(tcp={"max_per_source": 2})
    with connection(server) as first, connection(server) as second:
        ask_on(first)
        ask_on(second)
        assert_turned_away(server)  # a third from 127.0.0.1
        assert server.service.tcp.rejected["per_source"] == 1
        with connection(server, source="127.0.0.5") as other:  # another address is let in
            assert set(ask_on(other).addresses()) == MY_APP
        assert set(ask_on(first).addresses()) == MY_APP


def test_trickling_connections_from_one_host_do_not_shut_out_the_others(start_server: StartServer) -> None:
    # 260 connections from one address, each sending a byte now and then (a query's length,
    # never the query): at most `max_per_source` are let in, none for longer than a query may
    # take, and a query from elsewhere is answered throughout.
    server = start_server()  # the defaults: 256 in all, 32 per source, 3 s for a query to arrive
    tricklers: list[socket.socket] = []
    try:
        for _ in range(260):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(3.0)
            sock.bind(("127.0.0.1", 0))
            try:
                sock.connect((server.host, server.port))
                sock.sendall(b"\x00")
            except OSError:
                pass  # turned away already
            tricklers.append(sock)
        for round_ in range(3):
            with connection(server, source="127.0.0.6") as legit:
                assert set(ask_on(legit).addresses()) == MY_APP, round_
            assert server.service.tcp.per_source.get("127.0.0.1", 0) <= 32
            for sock in tricklers:
                try:
                    sock.send(b"\x40")
                except OSError:
                    pass
            server.advance(4)  # one more byte every 4 s: past the 3 s a query may take
        assert server.service.tcp.per_source.get("127.0.0.1", 0) == 0  # every trickler cut off
        assert server.service.tcp.closed["message_timeout"] >= 32
        assert server.service.tcp.rejected["per_source"] >= 228
    finally:
        for sock in tricklers:
            sock.close()


def test_a_started_query_must_arrive_in_time(start_server: StartServer) -> None:
    server = start_server(tcp={"message_timeout": 3, "idle_timeout": 10})
    wire = frame(make_query("my-app.internal", "AAAA").to_wire())
    with connection(server) as slow, connection(server) as prompt:
        ask_on(prompt)
        slow.sendall(wire[:5])
        ask_on(prompt)  # the server has read those bytes by now
        server.advance(2)
        slow.sendall(wire[5:10])  # more bytes, still not the whole query: no extension
        ask_on(prompt)
        server.advance(1.5)
        assert_closed(slow)
        assert server.service.tcp.closed["message_timeout"] == 1
        assert set(ask_on(prompt).addresses()) == MY_APP


def server_side(server: RunningServer) -> Any:
    """The one open connection's protocol, as the server holds it."""
    [protocol] = server.service.tcp.open
    return protocol


def unsent(protocol: Any) -> int:
    transport = protocol.transport
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def test_a_client_that_does_not_read_its_replies_is_not_read_from(start_server: StartServer) -> None:
    server = start_server(tcp={"max_unsent": 65536, "idle_timeout": 10})
    queries = b"".join(frame(make_query(f"n{i}.internal", "AAAA", want_dnssec=False).to_wire()) for i in range(40_000))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client reads nothing
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)  # and the kernel holds little for it
        sock.bind(("127.0.0.1", 0))
        sock.connect((server.host, server.port))
        sock.setblocking(False)
        sent = 0
        protocol = None
        progress = time.monotonic()
        deadline = progress + 60
        # Send until the kernel's buffers are full both ways: the client's sends stall while the
        # server is not reading. (The server pauses and resumes while its socket's send buffer
        # still takes replies; a server merely slow to read keeps the test waiting, not failing.)
        while time.monotonic() < deadline:
            try:
                sent += sock.send(queries[sent : sent + 65536])
                progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
            if protocol is None:
                protocol = on_reactor(server.reactor, lambda: next(iter(server.service.tcp.open), None))
            if (
                time.monotonic() - progress > 1.0
                and protocol is not None
                and not on_reactor(server.reactor, lambda p=protocol: p._reading)
            ):
                break
        assert protocol is not None and sent < len(queries)
        held = on_reactor(server.reactor, lambda: (unsent(protocol), len(protocol._buffer), protocol._reading))
        assert not held[2]
        assert held[0] <= 65536 + 1024  # replies waiting: the bound and the reply that crossed it
        assert held[1] <= 65536 + 2048  # queries read but not yet answered: about one read
        server.advance(10)  # it does not drain within the idle timeout: cut off
        sock.setblocking(True)
        sock.settimeout(3.0)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while sock.recv(65536):
                pass
        assert server.service.tcp.closed["not_draining"] == 1


def test_reading_resumes_when_the_client_catches_up(start_server: StartServer) -> None:
    server = start_server(tcp={"max_unsent": 4096})
    count = 3000
    queries = [make_query("my-app.internal" if i % 2 else "nope.internal", "AAAA") for i in range(count)]
    for i, q in enumerate(queries):
        q.id = i
    payload = b"".join(frame(q.to_wire()) for q in queries)
    with connection(server) as sock:
        writer = threading.Thread(target=sock.sendall, args=(payload,))
        writer.start()  # blocks while the server holds back
        time.sleep(0.3)
        ids = set()
        for _ in range(count):
            ids.add(read_reply(sock).msg.id)
        writer.join(5)
        assert ids == set(range(count))  # every query answered once, none lost to the pauses
        assert set(ask_on(sock).addresses()) == MY_APP


def test_queries_before_the_clients_fin_are_answered(server: RunningServer) -> None:
    queries = [make_query(name, "AAAA") for name in ("my-app.internal", "nope.internal", "api.flycast") * 7]
    for i, q in enumerate(queries):
        q.id = i
    for _ in range(5):
        with connection(server) as sock:
            sock.sendall(b"".join(frame(q.to_wire()) for q in queries))
            sock.shutdown(socket.SHUT_WR)  # the client's FIN, at once
            assert sorted(read_reply(sock).msg.id for _ in queries) == list(range(len(queries)))
            assert_closed(sock)  # and then the server closes


def test_forwarded_queries_before_the_clients_fin_are_answered(start_server: StartServer, fake: FakeUpstream) -> None:
    server = forwarding_server(start_server, fake)
    fake.hold = True
    queries = [make_query(f"www{i}.example.test", "A") for i in range(5)] + [make_query("my-app.internal", "AAAA")]
    with connection(server) as sock:
        sock.sendall(b"".join(frame(q.to_wire()) for q in queries))
        sock.shutdown(socket.SHUT_WR)
        assert read_reply(sock).msg.id == queries[-1].id  # the local answer first
        fake.wait_for(5)
        fake.release()  # the upstream answers after the client's FIN
        assert {read_reply(sock).msg.id for _ in range(5)} == {q.id for q in queries[:5]}
        assert_closed(sock)


def test_stopping_the_service_closes_open_connections(start_server: StartServer) -> None:
    server = start_server()
    with connection(server) as sock:
        assert set(ask_on(sock).addresses()) == MY_APP
        server.stop()
        assert_closed(sock)
