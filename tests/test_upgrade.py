"""Two servers on one config (SPEC §9): the second shares the listeners (SO_REUSEPORT) once its
registry has loaded, and the first, stopped, steps aside and answers what it received. In one
process on loopback here; tests/test_host.py does it with real processes on port 53, workers too.
"""

from __future__ import annotations

import resource
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest
from twisted.internet import task
from twisted.internet.error import CannotListenError

from internal_dns.config import parse_config
from internal_dns.server import DnsService
from tests.conftest import RunningServer, base_config, on_reactor, stop_service

StartServer = Callable[..., RunningServer]


def requests(server: RunningServer) -> int:
    return sum(server.service.dispatcher.counters.requests().values())


class Asker(threading.Thread):
    """Asks from a fresh socket (a new flow) over and over, until stopped; counts the outcomes."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.outcomes: dict[str, int] = {}
        self.running = True

    def run(self) -> None:
        wire = dns.message.make_query("my-app.internal", "AAAA").to_wire()
        while self.running:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(3.0)
                sock.connect(("127.0.0.1", self.port))
                sock.send(wire)
                try:
                    outcome = dns.rcode.to_text(dns.message.from_wire(sock.recv(4096)).rcode())
                except TimeoutError:
                    outcome = "lost"
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def test_a_second_server_shares_the_listeners_and_takes_over_without_a_loss(start_server: StartServer) -> None:
    first = start_server()
    asker = Asker(first.port)
    asker.start()
    second = start_server(listen=[{"address": "127.0.0.1", "port": first.port}])  # the same port
    assert second.port == first.port
    before = requests(second)
    while requests(second) - before < 20:  # the kernel spreads flows over both sockets
        pass
    first.stop()  # steps aside: its sockets stop receiving, what they hold is answered
    after = requests(second)
    while requests(second) - after < 200:  # every query now reaches the second
        pass
    asker.running = False
    asker.join(10)
    assert set(asker.outcomes) == {"NOERROR"}, asker.outcomes
    assert asker.outcomes["NOERROR"] > 220


def test_without_reuse_port_a_second_server_cannot_bind(start_server: StartServer, reactor: Any, registry_dir: Path) -> None:
    first = start_server(reuse_port=False)
    config = parse_config(
        base_config(registry_dir, reuse_port=False, listen=[{"address": "127.0.0.1", "port": first.port}]), "second.yaml"
    )
    clock = task.Clock()
    second = DnsService(config, reactor, clock=clock)
    with pytest.raises(CannotListenError, match="Address already in use"):
        on_reactor(reactor, second.start)
    stop_service(reactor, second, clock)
    assert first.ask("my-app.internal").rcode_text == "NOERROR"  # the first goes on


def test_a_listener_on_port_0_never_shares_a_port_another_socket_holds(start_server: StartServer) -> None:
    """Linux binds a socket with SO_REUSEPORT on port 0 to a port that another SO_REUSEPORT socket
    of the same user may already hold (about one bind in four here, with 8,000 such sockets
    held): a server asked for any port would then answer a share of that socket's queries, and
    it a share of the server's. A listener on port 0 has a port picked that no socket holds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 10_000:  # room for the sockets held and the server's own
        soft = 10_000 if hard == resource.RLIM_INFINITY else min(10_000, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(max(0, min(8000, soft - 2000))):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", 0))
        taken = {sock.getsockname()[1] for sock in held}
        assert len(taken) < len(held)  # the kernel's own choice shares ports among them already
        for _ in range(15):
            server = start_server()
            assert server.port not in taken
            assert server.ask("my-app.internal").rcode_text == "NOERROR"
    finally:
        for sock in held:
            sock.close()
