"""The real `dig` (BIND 9) against a running server: what an operator sees, status, flags, sections."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import EMBEDDED_ZONES, RunningServer, write_yaml

StartServer = Callable[..., RunningServer]

MY_APP = {"fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"}

_HEADER = re.compile(r";; ->>HEADER<<- opcode: (\w+), status: (\w+), id: (\d+)")
_FLAGS = re.compile(r";; flags:([a-z ]*); QUERY: (\d+), ANSWER: (\d+), AUTHORITY: (\d+), ADDITIONAL: (\d+)")
_EDNS = re.compile(r"; EDNS: version: (\d+), flags:([a-z ]*); udp: (\d+)")
_SERVER = re.compile(r";; SERVER: \S+ \((UDP|TCP)\)")


@dataclass
class Record:
    name: str
    ttl: int
    rdclass: str
    rdtype: str
    data: str


@dataclass
class DigOutput:
    text: str
    opcode: str = ""
    status: str = ""
    flags: set[str] = field(default_factory=set)
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    edns: tuple[int, set[str], int] | None = None  # version, flags, udp payload
    transport: str = ""
    sections: dict[str, list[Record]] = field(default_factory=dict)

    def section(self, name: str) -> list[Record]:
        return self.sections.get(name, [])

    @property
    def answer(self) -> list[Record]:
        return self.section("ANSWER")


def parse_dig(text: str) -> DigOutput:
    out = DigOutput(text)
    current: str | None = None
    for line in text.splitlines():
        if m := _HEADER.match(line):
            out.opcode, out.status = m.group(1), m.group(2)
        elif m := _FLAGS.match(line):
            out.flags = set(m.group(1).split())
            out.counts = (int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
        elif m := _EDNS.match(line):
            out.edns = (int(m.group(1)), set(m.group(2).split()), int(m.group(3)))
        elif m := _SERVER.match(line):
            out.transport = m.group(1)
        elif m := re.match(r";; (\w+) SECTION:", line):
            current = m.group(1)
            if current not in ("QUESTION", "OPT"):
                out.sections[current] = []
        elif not line.strip():
            current = None
        elif current in out.sections and not line.startswith(";"):
            name, ttl, rdclass, rdtype, data = line.split(None, 4)
            out.sections[current].append(Record(name, int(ttl), rdclass, rdtype, data))
    return out


def dig(server: RunningServer, *args: str, host: str = "127.0.0.1") -> DigOutput:
    assert shutil.which("dig"), "dig (bind9-dnsutils) is needed for these tests"
    command = ["dig", f"@{host}", "-p", str(server.port), "+tries=1", "+time=2", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    out = parse_dig(done.stdout)
    assert out.status, f"no reply parsed from:\n{done.stdout}"
    return out


def test_aaaa(server: RunningServer) -> None:
    out = dig(server, "my-app.internal", "AAAA")
    assert out.opcode == "QUERY" and out.status == "NOERROR"
    assert out.flags == {"qr", "aa", "rd"}  # no ra: this server does not recurse (yet)
    assert out.counts == (1, 3, 0, 1)
    assert out.transport == "UDP"
    assert {r.data for r in out.answer} == MY_APP
    assert all((r.name, r.ttl, r.rdclass, r.rdtype) == ("my-app.internal.", 5, "IN", "AAAA") for r in out.answer)
    assert out.edns == (0, set(), 1232)
    assert "WARNING: recursion requested but not available" in out.text


def test_txt(server: RunningServer) -> None:
    out = dig(server, "vms.my-app.internal", "TXT")
    assert out.status == "NOERROR" and "aa" in out.flags
    assert [(r.name, r.rdtype, r.data) for r in out.answer] == [
        ("vms.my-app.internal.", "TXT", '"148e21dad76789 sea,4d89699c030518 ams,6e82933c1d7e48 iad"')
    ]


def test_nxdomain(server: RunningServer) -> None:
    out = dig(server, "nope.internal", "AAAA")
    assert out.status == "NXDOMAIN"
    assert out.flags == {"qr", "aa", "rd"}
    assert out.answer == []
    [soa] = out.section("AUTHORITY")
    assert (soa.name, soa.ttl, soa.rdtype) == ("internal.", 5, "SOA")
    mname, rname, serial, refresh, retry, expire, minimum = soa.data.split()
    assert (mname, rname, minimum) == ("internal.", "hostmaster.internal.", "5")
    assert int(serial) > 0


def test_nodata(server: RunningServer) -> None:
    out = dig(server, "my-app.internal", "A")
    assert out.status == "NOERROR" and "aa" in out.flags
    assert out.answer == [] and [r.rdtype for r in out.section("AUTHORITY")] == ["SOA"]


def test_tcp(server: RunningServer) -> None:
    out = dig(server, "+tcp", "my-app.internal", "AAAA")
    assert out.transport == "TCP"
    assert out.status == "NOERROR" and out.flags == {"qr", "aa", "rd"}
    assert {r.data for r in out.answer} == MY_APP


def test_norecurse(server: RunningServer) -> None:
    out = dig(server, "+norecurse", "my-app.internal", "AAAA")
    assert out.status == "NOERROR"
    assert out.flags == {"qr", "aa"}
    assert {r.data for r in out.answer} == MY_APP
    assert "WARNING" not in out.text


def test_dnssec_sets_and_gets_do(server: RunningServer) -> None:
    out = dig(server, "+dnssec", "my-app.internal", "AAAA")
    assert out.status == "NOERROR" and "aa" in out.flags
    assert out.edns == (0, {"do"}, 1232)
    assert {r.data for r in out.answer} == MY_APP
    nx = dig(server, "+dnssec", "nope.internal")
    assert nx.status == "NXDOMAIN" and nx.edns == (0, {"do"}, 1232)


def test_without_edns(server: RunningServer) -> None:
    out = dig(server, "+noedns", "my-app.internal", "AAAA")
    assert out.status == "NOERROR" and out.edns is None
    assert out.counts == (1, 3, 0, 0)


def test_chaos_id_server(server: RunningServer) -> None:
    out = dig(server, "CH", "TXT", "id.server")
    assert out.status == "NOERROR"
    assert [(r.rdclass, r.rdtype, r.data) for r in out.answer] == [("CH", "TXT", '"test-server"')]


def test_refused_outside_the_zones(server: RunningServer) -> None:
    out = dig(server, "example.com", "A")
    assert out.status == "REFUSED"
    assert "aa" not in out.flags and "ra" not in out.flags


def test_truncated_udp_makes_dig_retry_over_tcp(start_server: StartServer, tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    shutil.copy(EMBEDDED_ZONES / "regions.yaml", folder / "regions.yaml")
    write_yaml(
        folder / "big.yaml",
        {
            "networks": [{"name": "personal", "prefix6": "fdaa:0:18::/48"}],
            "apps": [{"name": "big", "network": "personal"}],
            "machines": [
                {"id": f"b{i:013x}", "app": "big", "region": "iad", "state": "started", "ip6": f"fdaa:0:18:a7b:100::{i + 1:x}"}
                for i in range(60)
            ],
        },
    )
    server = start_server(registry=folder)
    out = dig(server, "big.internal", "AAAA")
    assert "Truncated, retrying in TCP mode" in out.text
    assert out.transport == "TCP" and out.status == "NOERROR"
    assert len(out.answer) == 60 and "tc" not in out.flags
    ignored = dig(server, "+ignore", "big.internal", "AAAA")  # keep the UDP reply as it came
    assert ignored.transport == "UDP"
    assert "tc" in ignored.flags and ignored.answer == []


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ipv6(start_server: StartServer, tcp: bool) -> None:
    server = start_server(listen=[{"address": "::1", "port": 0}])
    out = dig(server, *(["+tcp"] if tcp else []), "my-app.internal", "AAAA", host="::1")
    assert out.status == "NOERROR" and {r.data for r in out.answer} == MY_APP
