"""Wildcard listeners on loopback, where every 127.x.y.z is the host's own (SPEC §2, §6): a reply
leaves from the address its query was sent to, and that address chooses the view of a source
nothing else claims. The clients here connect their UDP sockets, so the kernel drops a reply from
any other address, as stub resolvers do; tests/test_host.py does the same on port 53 in a
network namespace, with IPv6 and real resolvers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunningServer, write_yaml

StartServer = Callable[..., RunningServer]
MY_APP = {"fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"}
LAB = {
    "networks": [{"name": "lab", "prefix6": "fdaa:0:77::/48", "prefix4": "127.77.0.0/16", "dns4": "127.77.0.3"}],
    "apps": [{"name": "probe", "network": "lab"}],
    "machines": [{"id": "ab", "app": "probe", "region": "iad", "ip6": "fdaa:0:77:1::2", "ip4": "127.77.1.2"}],
}


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_reply_leaves_from_the_address_asked(start_server: StartServer, address: str, tcp: bool) -> None:
    server = start_server(listen=[{"address": address, "port": 0}])
    for asked in ("127.0.0.1", "127.0.0.2", "127.53.0.9"):
        reply = server.ask("my-app.internal", "AAAA", host=asked, source="127.0.0.1", tcp=tcp)
        assert set(reply.addresses()) == MY_APP, asked  # from 127.0.0.1: personal, by the config's views


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_address_asked_chooses_the_view_of_a_source_nothing_claims(
    start_server: StartServer, registry_dir: Path, address: str, tcp: bool
) -> None:
    write_yaml(registry_dir / "lab.yaml", LAB)
    server = start_server(listen=[{"address": address, "port": 0}], views=[])  # no source is claimed by config
    # From 127.0.0.1, outside every network: the network whose dns4 was asked.
    reply = server.ask("probe.internal", "AAAA", host="127.77.0.3", source="127.0.0.1", tcp=tcp)
    assert reply.rcode_text == "NOERROR" and reply.addresses() == ["fdaa:0:77:1::2"]
    assert server.ask("my-app.internal", "AAAA", host="127.77.0.3", source="127.0.0.1", tcp=tcp).rcode_text == "NXDOMAIN"
    # Another address of the host, no network's resolver: no view.
    assert server.ask("probe.internal", "AAAA", host="127.0.0.9", source="127.0.0.1", tcp=tcp).rcode_text == "REFUSED"
    # A source inside a network's prefix is that network's, whatever it asks.
    assert server.ask("probe.internal", "AAAA", host="127.0.0.9", source="127.77.1.2", tcp=tcp).rcode_text == "NOERROR"


def test_a_network_added_later_is_served_on_its_resolver_address(start_server: StartServer, registry_dir: Path) -> None:
    server = start_server(listen=[{"address": "0.0.0.0", "port": 0}], views=[])
    assert server.ask("probe.internal", "AAAA", host="127.77.0.3", source="127.0.0.1").rcode_text == "REFUSED"
    write_yaml(registry_dir / "lab.yaml", LAB)
    server.poll()
    assert server.ask("probe.internal", "AAAA", host="127.77.0.3", source="127.0.0.1").addresses() == ["fdaa:0:77:1::2"]


def test_the_fast_path_keeps_destinations_apart(start_server: StartServer, registry_dir: Path) -> None:
    # Asked again byte for byte from one source, each destination keeps its own view's answer.
    write_yaml(registry_dir / "lab.yaml", LAB)
    server = start_server(listen=[{"address": "0.0.0.0", "port": 0}], views=[])
    for _ in range(3):
        assert server.ask("probe.internal", "AAAA", host="127.77.0.3", source="127.0.0.1").rcode_text == "NOERROR"
        assert server.ask("probe.internal", "AAAA", host="127.0.0.9", source="127.0.0.1").rcode_text == "REFUSED"
