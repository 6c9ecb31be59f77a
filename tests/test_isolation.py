"""SPEC §2: "A view never sees another network's data: a name of another network must be
indistinguishable from a name that does not exist (NXDOMAIN, same SOA, same timing class)."

Hypothesis builds registries of 2–4 networks (app names shared across networks, Flycast addresses
allocated across networks, peers, machines in every state) and maps network i to the loopback
source 127.0.1.(i+1). For a name that exists only in network B, asked from network A, the reply must
be byte for byte the reply to an invented name of the same shape (the B-specific labels replaced
by fresh ones of the same length), apart from the ID and the question; and A's lists must name
nothing of B. The names cover SRV (apps with services), health (machines with checks) and PTR: the
reverse name of B's address, asked from A, must be the reply to an unused address of B's prefix.
"""

from __future__ import annotations

import random
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.reversename
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task

from internal_dns.config import parse_config
from tests.conftest import EMBEDDED_ZONES, RunningServer, base_config, write_yaml
from tests.dnsclient import Reply, make_query
from tests.fake_upstream import FakeUpstream

REGIONS = ["iad", "sjc", "ams", "syd", "gru"]
STATES = ["started", "started", "stopped", "suspended", "created", "destroyed"]
GROUPS = ["app", "worker"]
STRUCTURAL = {
    "global",
    "vms",
    "all",
    "regions",
    "vm",
    "process",
    "nearest",
    "of",
    "kv",
    "_metadata",
    "_peer",
    "_apps",
    "_instances",
    "internal",
    "flycast",
    "railway",
}
ZONES = {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"}
SERVICES: list[list[dict[str, Any]]] = [
    [],
    [{"name": "http", "port": 8080}],
    [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "udp"}],
]
CHECKS: list[dict[str, str] | None] = [None, {"http": "passing"}, {"http": "warning"}, {"http": "critical"}]

label = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hex_id = st.from_regex(r"[0-9a-f]{1,14}", fullmatch=True)


# --- the generated registry, and what each network may see ---------------------------------


@dataclass
class Machine:
    id: str
    app: str
    region: str
    state: str
    group: str
    ip6: str
    dns: bool
    role: str
    checks: dict[str, str] | None = None

    @property
    def critical(self) -> bool:
        return self.checks is not None and "critical" in self.checks.values()


@dataclass
class Net:
    index: int
    name: str
    apps: list[str]
    machines: list[Machine] = field(default_factory=list)
    peers: list[tuple[str, str | None]] = field(default_factory=list)  # (name, region)
    flycast: dict[str, list[str]] = field(default_factory=dict)  # app name -> addresses on this network
    services: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # app name -> its services
    peer_ips: dict[str, str] = field(default_factory=dict)  # peer name -> ip6

    @property
    def source(self) -> str:
        return f"127.0.1.{self.index + 1}"

    @property
    def visible_peers(self) -> list[str]:
        return sorted(p for p, _ in self.peers if not p.startswith("interactive-"))

    def dns_machines(self, app: str | None = None) -> list[Machine]:
        return sorted((m for m in self.machines if m.dns and (app is None or m.app == app)), key=lambda m: m.id)

    def answered(self, app: str) -> list[Machine]:
        """What the app's address forms give: its started machines, the critical ones left out
        unless they are all critical (SPEC §3, Health)."""
        started = [m for m in self.dns_machines(app) if m.state == "started"]
        healthy = [m for m in started if not m.critical]
        return healthy or started

    def reverse_names(self) -> dict[str, str]:
        """Address -> the PTR target it answers in this network's view."""
        names = {m.ip6: f"{m.id}.vm.{m.app}.internal." for m in self.machines if m.dns}
        names.update((ip, f"{peer}._peer.internal.") for peer, ip in self.peer_ips.items() if not peer.startswith("interactive-"))
        names.update((ip, f"{app}.flycast.") for app, ips in self.flycast.items() for ip in ips)
        return names


@dataclass
class World:
    nets: list[Net]
    documents: dict[str, Any]

    def universe(self) -> set[str]:
        names = set(STRUCTURAL) | set(REGIONS) | set(GROUPS) | {"role", "primary", "replica"}
        for net in self.nets:
            names |= set(net.apps) | {p for p, _ in net.peers} | {m.id for m in net.machines} | set(net.flycast)
        return names


@st.composite
def worlds(draw: st.DrawFn) -> World:
    count = draw(st.integers(2, 4))
    pool = draw(st.lists(label, min_size=2, max_size=7, unique=True))
    peer_pool = draw(st.lists(label, min_size=1, max_size=4, unique=True))
    peer_pool += [f"interactive-{p}" for p in peer_pool[:1]]
    ids = iter(draw(st.lists(hex_id, min_size=40, max_size=40, unique=True)))
    nets = [Net(i, f"net{i}", sorted(draw(st.lists(st.sampled_from(pool), max_size=4, unique=True)))) for i in range(count)]
    if not any(net.apps for net in nets):
        nets[-1].apps.append(pool[0])
    docs: dict[str, Any] = {"networks": [], "apps": [], "machines": [], "peers": []}
    for net in nets:
        docs["networks"].append({"name": net.name, "prefix6": f"fdaa:0:{0x100 + net.index:x}::/48"})
    host = 0
    flycast_seq = 0
    for net in nets:
        for app in net.apps:
            flycast = []
            for target in draw(st.lists(st.sampled_from(nets), max_size=2)):  # often another network
                flycast_seq += 1
                ip = f"fdaa:0:{0x100 + target.index:x}:f::{flycast_seq:x}"
                flycast.append({"ip": ip, "network": target.name})
                target.flycast.setdefault(app, []).append(ip)
            net.flycast.setdefault(app, [])  # an app of the network exists under .flycast
            net.services[app] = draw(st.sampled_from(SERVICES))
            docs["apps"].append({"name": app, "network": net.name, "flycast": flycast, "services": net.services[app]})
            for _ in range(draw(st.integers(0, 3))):
                host += 1
                m = Machine(
                    id=next(ids),
                    app=app,
                    region=draw(st.sampled_from(REGIONS)),
                    state=draw(st.sampled_from(STATES)),
                    group=draw(st.sampled_from(GROUPS)),
                    ip6=f"fdaa:0:{0x100 + net.index:x}:a7b::{host:x}",
                    dns=draw(st.booleans() | st.just(True)),
                    role=draw(st.sampled_from(["primary", "replica"])),
                    checks=draw(st.sampled_from(CHECKS)),
                )
                net.machines.append(m)
                docs["machines"].append(
                    {
                        "id": m.id,
                        "app": app,
                        "network": net.name,
                        "region": m.region,
                        "state": m.state,
                        "process_group": m.group,
                        "ip6": m.ip6,
                        "dns": m.dns,
                        "metadata": {"role": m.role},
                        **({"checks": m.checks} if m.checks is not None else {}),
                    }
                )
        for peer in draw(st.lists(st.sampled_from(peer_pool), max_size=3, unique=True)):
            host += 1
            region = draw(st.sampled_from([None, *REGIONS]))
            net.peers.append((peer, region))
            entry = {"name": peer, "network": net.name, "ip6": f"fdaa:0:{0x100 + net.index:x}:d6b::{host:x}"}
            net.peer_ips[peer] = entry["ip6"]
            if region is not None:
                entry["region"] = region
            docs["peers"].append(entry)
    for net in nets:  # Flycast names of a network: its own apps and apps with an address on it
        net.flycast = {k: sorted(v) for k, v in net.flycast.items()}
    return World(nets, docs)


# --- probes: names of B that must not exist for A ------------------------------------------


@dataclass(frozen=True)
class Probe:
    labels: tuple[str, ...]
    secret: frozenset[int]  # positions of the labels that are B's, to be replaced when inventing
    rdtype: str
    prefix: int | None = None  # a reverse name's: B's index, whose prefix the invented address is in


APP_FORMS: list[tuple[str, ...]] = [
    ("{app}", "internal"),
    ("global", "{app}", "internal"),
    ("vms", "{app}", "internal"),
    ("all", "vms", "{app}", "internal"),
    ("regions", "{app}", "internal"),
    ("all", "regions", "{app}", "internal"),
    ("iad", "{app}", "internal"),
    ("vm", "{app}", "internal"),
    ("process", "{app}", "internal"),
    ("worker", "process", "{app}", "internal"),
    ("top1", "nearest", "of", "{app}", "internal"),
    ("nearest", "of", "{app}", "internal"),
    ("of", "{app}", "internal"),
    ("_metadata", "{app}", "internal"),
    ("kv", "_metadata", "{app}", "internal"),
    ("role", "kv", "_metadata", "{app}", "internal"),
    ("primary", "role", "kv", "_metadata", "{app}", "internal"),
    ("{app}", "railway", "internal"),
]
TYPES = ["AAAA", "TXT", "A", "ANY"]
SRV_FORMS: list[tuple[str, ...]] = [
    ("_http", "_tcp", "{app}", "internal"),
    ("_tcp", "{app}", "internal"),
    ("_dns", "_udp", "{app}", "internal"),
    ("_http", "_tcp", "{app}", "railway", "internal"),
    ("_udp", "{app}", "railway", "internal"),
]
ENT_CUT = 12  # nibbles left off a reverse name: the /80 above an address, inside its network's /48


def reverse_labels(address: str) -> tuple[str, ...]:
    return tuple(dns.reversename.from_address(address).to_text().rstrip(".").split("."))


def probes_between(a: Net, b: Net) -> list[Probe]:
    found: list[Probe] = []
    k = 0

    def add(labels: tuple[str, ...], secret: set[int], rdtype: str | None = None) -> None:
        nonlocal k
        found.append(Probe(labels, frozenset(secret), rdtype or TYPES[k % len(TYPES)]))
        k += 1

    for app in b.apps:
        if app not in a.apps:
            for form in APP_FORMS:
                labels = tuple(app if part == "{app}" else part for part in form)
                add(labels, {labels.index(app)})
            for form in SRV_FORMS:
                labels = tuple(app if part == "{app}" else part for part in form)
                add(labels, {labels.index(app)}, "SRV")
        else:  # a service only B's app of that name has
            theirs = {(s["name"], s.get("protocol", "tcp")) for s in b.services.get(app, [])}
            ours = {(s["name"], s.get("protocol", "tcp")) for s in a.services.get(app, [])}
            for name, protocol in sorted(theirs - ours):
                add((f"_{name}", f"_{protocol}", app, "internal"), {0}, "SRV")
        if app not in a.flycast:
            add((app, "flycast"), {0})
        for m in b.machines:
            if m.app == app:
                add((m.id, "vm", app, "internal"), {0} if app in a.apps else {0, 2})
    for peer, _ in b.peers:
        if peer not in a.visible_peers:
            add((peer, "_peer", "internal"), {0})
    # B's addresses, named or not, and the names above them: as unused ones of B's prefix
    addresses = [m.ip6 for m in b.machines] + list(b.peer_ips.values()) + [ip for ips in b.flycast.values() for ip in ips]
    for address in addresses:
        labels = reverse_labels(address)
        found.append(Probe(labels, frozenset(), "PTR", b.index))
        found.append(Probe(labels[ENT_CUT:], frozenset(), "PTR", b.index))
    return found


def fresh_label(like: str, taken: set[str], rng: random.Random) -> str:
    hexish = all(c in "0123456789abcdef" for c in like)
    alphabet = "0123456789abcdef" if hexish else "abcdefghijklmnopqrstuvwxyz"
    while True:
        candidate = "".join(rng.choice(alphabet) for _ in like)
        if candidate not in taken and (hexish or candidate[0].isalpha()):
            taken.add(candidate)
            return candidate


def invent(probe: Probe, taken: set[str], rng: random.Random) -> tuple[str, ...]:
    if probe.prefix is not None:  # an address of B's /48 that nothing has: every generated one has a 5th group of 0
        subnet, group5, host = rng.randrange(0x10000), rng.randrange(1, 0x10000), rng.randrange(1, 0x10000)
        unused = f"fdaa:0:{0x100 + probe.prefix:x}:{subnet:x}:{group5:x}::{host:x}"
        return reverse_labels(unused)[32 - (len(probe.labels) - 2) :]
    return tuple(fresh_label(lbl, taken, rng) if i in probe.secret else lbl for i, lbl in enumerate(probe.labels))


# --- asking ---------------------------------------------------------------------------------


def ask(server: RunningServer, labels: tuple[str, ...], rdtype: str, source: str, tcp: bool, qid: int) -> tuple[Reply, int]:
    query = make_query(".".join(labels) + ".", rdtype)
    query.id = qid
    wire = query.to_wire()
    reply = Reply.decode(server.raw(wire, source=source, tcp=tcp))
    question_end = wire.index(b"\x00", 12) + 5
    return reply, question_end


def assert_indistinguishable(
    server: RunningServer, probe: Probe, invented: tuple[str, ...], a: Net, tcp: bool, serial: int
) -> None:
    real, q_end = ask(server, probe.labels, probe.rdtype, a.source, tcp, 0x1234)
    fake, q_end_fake = ask(server, invented, probe.rdtype, a.source, tcp, 0x4321)
    where = f"{'.'.join(probe.labels)} {probe.rdtype} from {a.name}"
    assert real.rcode_text == "NXDOMAIN", where
    assert real.msg.id == 0x1234 and fake.msg.id == 0x4321
    assert q_end == q_end_fake
    # identical but for the ID and the question name: same flags, counts, records, OPT
    assert real.wire[2:12] == fake.wire[2:12], where
    assert real.wire[q_end - 4 :] == fake.wire[q_end - 4 :], where
    assert real.msg.flags == fake.msg.flags and real.msg.flags & dns.flags.AA, where
    (soa_rrset,) = real.msg.authority
    assert (
        soa_rrset.name.to_text()
        == (
            "d.f.ip6.arpa."  # the locally served zone holding fd00::/8 (RFC 6303)
            if probe.labels[-1] == "arpa"
            else "flycast."
            if probe.labels[-1] == "flycast"
            else ".".join(probe.labels[-2:]) + "."
            if probe.labels[-2:] == ("railway", "internal")
            else "internal."
        )
    ), where
    assert real.soa() == fake.soa() and real.soa().serial == serial, where
    assert real.msg.answer == fake.msg.answer == [], where


def assert_same_structure_as(server: RunningServer, probe: Probe, a: Net, tcp: bool) -> None:
    """Against a name of another shape and length: equal once the question's length is taken out."""
    zone = probe.labels[-2:] if probe.labels[-2:] == ("railway", "internal") else probe.labels[-1:]
    other = ("zz-no-such-name-anywhere-at-all", *zone)
    real, q_end = ask(server, probe.labels, probe.rdtype, a.source, tcp, 7)
    fake, q_end_fake = ask(server, other, probe.rdtype, a.source, tcp, 7)
    assert len(real.wire) - q_end == len(fake.wire) - q_end_fake
    assert real.wire[:12] == fake.wire[:12]
    assert real.msg.flags == fake.msg.flags and real.rcode == fake.rcode
    assert real.soa() == fake.soa()
    assert struct.unpack("!4H", real.wire[4:12]) == struct.unpack("!4H", fake.wire[4:12])


def txt_value(server: RunningServer, name: str, source: str) -> str:
    reply = server.ask(name, "TXT", source=source, tcp=True)
    assert reply.rcode_text == "NOERROR" and reply.flag("AA"), name
    (value,) = reply.txt()
    return value


def instances(machines: list[Machine]) -> str:
    return ";".join(f"instance={m.id},app={m.app},ip={m.ip6},region={m.region}" for m in machines)


def check_lists(server: RunningServer, a: Net, others: list[Net]) -> None:
    apps = txt_value(server, "_apps.internal", a.source)
    peers = txt_value(server, "_peer.internal", a.source)
    started = txt_value(server, "_instances.internal", a.source)
    every = txt_value(server, "all._instances.internal", a.source)
    assert apps == ",".join(sorted(a.apps))
    assert peers == ",".join(a.visible_peers)
    assert started == instances([m for m in a.dns_machines() if m.state == "started"])
    assert every == instances(a.dns_machines())
    # and explicitly, field by field: nothing names what only another network has
    listed_apps = set(apps.split(",")) - {""}
    listed_peers = set(peers.split(",")) - {""}
    fields: dict[str, set[str]] = {"instance": set(), "app": set(), "ip": set(), "region": set()}
    for entry in filter(None, (started + ";" + every).split(";")):
        for key, _, value in (kv.partition("=") for kv in entry.split(",")):
            fields[key].add(value)
    for b in others:
        b_only_apps = set(b.apps) - set(a.apps)
        assert not (listed_apps | fields["app"]) & b_only_apps, (a.name, b.name)
        assert not listed_peers & (set(b.visible_peers) - set(a.visible_peers)), (a.name, b.name)
        assert not fields["instance"] & {m.id for m in b.machines}, (a.name, b.name)
        assert not fields["ip"] & {m.ip6 for m in b.machines}, (a.name, b.name)


def check_positive_answers(server: RunningServer, a: Net) -> None:
    """Names A shares with B answer with A's data only: addresses (healthy ones), SRV targets, PTR."""
    for app in a.apps:
        reply = server.ask(f"{app}.internal", "AAAA", source=a.source)
        assert reply.rcode_text == "NOERROR"
        answered = a.answered(app)
        assert sorted(reply.addresses()) == sorted(m.ip6 for m in answered)
        srv = server.ask(f"_http._tcp.{app}.internal", "SRV", source=a.source, tcp=True)
        if any(s["name"] == "http" for s in a.services[app]):
            targets = sorted(f"{m.id}.vm.{app}.internal." for m in answered)
            assert srv.rcode_text == "NOERROR" and sorted(target for *_, target in srv.srv()) == targets
            assert sorted(srv.additional()) == sorted((f"{m.id}.vm.{app}.internal.", "AAAA", m.ip6) for m in answered)
        else:
            assert srv.rcode_text == "NXDOMAIN"
    for address, name in a.reverse_names().items():
        reply = server.ask(dns.reversename.from_address(address).to_text(), "PTR", source=a.source)
        assert reply.rcode_text == "NOERROR" and reply.ptr() == [name], (address, a.name)
    for m in a.machines:
        if not m.dns:
            reply = server.ask(dns.reversename.from_address(m.ip6).to_text(), "PTR", source=a.source)
            assert reply.rcode_text == "NXDOMAIN", (m.ip6, a.name)
    for app, addresses in a.flycast.items():
        reply = server.ask(f"{app}.flycast", "AAAA", source=a.source)
        assert reply.rcode_text == "NOERROR"
        assert sorted(reply.addresses()) == addresses


# --- the property -----------------------------------------------------------------------------


# A world is several networks with their apps, machines and peers: big by design, and now and then
# over hypothesis's data budget for one example (data_too_large), which is then drawn again.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(world=worlds(), tcp=st.booleans(), rng=st.randoms(use_true_random=False))
def test_another_networks_names_are_indistinguishable_from_nonexistent_ones(
    reactor: Any, world: World, tcp: bool, rng: random.Random
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(EMBEDDED_ZONES / "regions.yaml", folder / "regions.yaml")
        write_yaml(folder / "registry.yaml", world.documents)
        views = [{"source": f"{net.source}/32", "network": net.name} for net in world.nets]
        config = parse_config(base_config(folder, views=views, zones=ZONES), "isolation.yaml")
        server = RunningServer(reactor, config, task.Clock())
        try:
            run_checks(server, world, tcp, rng)
        finally:
            server.stop()


def run_checks(server: RunningServer, world: World, tcp: bool, rng: random.Random) -> None:
    assert server.snapshot is not None, "the generated registry was rejected"
    serial = server.ask("internal", "SOA", source=world.nets[0].source).msg.answer[0][0].serial
    taken = world.universe()
    pairs = [(a, b) for a in world.nets for b in world.nets if a is not b]
    probes = [(a, p) for a, b in pairs for p in probes_between(a, b)]
    for a, probe in rng.sample(probes, min(len(probes), 60)):
        assert_indistinguishable(server, probe, invent(probe, taken, rng), a, tcp, serial)
    forward = [(a, p) for a, p in probes if p.prefix is None]  # a reverse name's shape is fixed
    for a, probe in rng.sample(forward, min(len(forward), 8)):
        assert_same_structure_as(server, probe, a, tcp)
    for a in world.nets:
        check_lists(server, a, [b for b in world.nets if b is not a])
        check_positive_answers(server, a)


def test_the_probes_cover_every_kind_of_name() -> None:
    """The generator and the probe list are not vacuous: a fixed world yields every kind of probe."""
    a = Net(0, "net0", ["shared"], peers=[("both", None)], flycast={"shared": []})
    b = Net(1, "net1", ["shared", "secret"], peers=[("both", None), ("hidden", "iad"), ("interactive-x", None)])
    b.machines = [
        Machine("abc123", "shared", "iad", "started", "app", "fdaa::1", True, "primary"),
        Machine("def456", "secret", "iad", "stopped", "app", "fdaa::2", True, "primary"),
    ]
    b.flycast = {"shared": [], "secret": ["fdaa:0:101:f::1"]}
    b.peer_ips = {"both": "fdaa:0:101:d6b::5", "hidden": "fdaa:0:101:d6b::6"}
    b.services = {"shared": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "udp"}], "secret": []}
    a.services = {"shared": [{"name": "http", "port": 8080}]}
    probes = probes_between(a, b)
    labels = {p.labels for p in probes}
    assert ("secret", "internal") in labels and ("secret", "flycast") in labels
    assert ("secret", "railway", "internal") in labels
    assert ("abc123", "vm", "shared", "internal") in labels and ("def456", "vm", "secret", "internal") in labels
    assert ("hidden", "_peer", "internal") in labels and ("interactive-x", "_peer", "internal") in labels
    assert ("both", "_peer", "internal") not in labels and ("shared", "internal") not in labels
    assert ("shared", "flycast") not in labels
    srv = {p.labels for p in probes if p.rdtype == "SRV"}
    assert ("_http", "_tcp", "secret", "internal") in srv and ("_tcp", "secret", "internal") in srv
    assert ("_http", "_tcp", "secret", "railway", "internal") in srv
    assert ("_dns", "_udp", "shared", "internal") in srv  # B's shared app serves what A's does not
    assert ("_http", "_tcp", "shared", "internal") not in srv  # both have it
    reverse = {p.labels for p in probes if p.rdtype == "PTR"}
    for address in ("fdaa::1", "fdaa::2", "fdaa:0:101:f::1", "fdaa:0:101:d6b::5", "fdaa:0:101:d6b::6"):
        assert reverse_labels(address) in reverse and reverse_labels(address)[ENT_CUT:] in reverse
    rng = random.Random(1)
    for probe in (p for p in probes if p.prefix is not None):
        invented = invent(probe, set(), rng)
        assert len(invented) == len(probe.labels) and invented[-8:] == reverse_labels("fdaa:0:101::")[-8:]


# --- reverse names ------------------------------------------------------------------------------


def test_reverse_names_do_not_tell_another_networks_prefix(start_server: Any) -> None:
    """Reverse names of another network's addresses get exactly what unused private space gets:
    the same locally served zone's NXDOMAIN (RFC 6303), and never the upstream."""
    upstream = FakeUpstream()
    try:
        server = start_server(upstreams=[upstream.address], forward={"enabled": True})
        pairs = [
            ("fdaa:0:22:a7b:10:4c1d:2e3f:2", "fdaa:0:77:a7b:10:4c1d:2e3f:2"),  # other-org's machine / no network's
            ("fd12:3456:7900:1::a", "fd12:3456:7a00:1::a"),  # a Railway environment's replica
            ("10.250.1.10", "10.251.1.10"),  # shop-production's prefix4 / unused 10.x
        ]
        for theirs, nobodys in pairs:
            real_wire = make_query(dns.reversename.from_address(theirs).to_text(), "PTR").to_wire()
            fake_wire = make_query(dns.reversename.from_address(nobodys).to_text(), "PTR").to_wire()
            assert len(real_wire) == len(fake_wire)
            q_end = len(real_wire) - 11 - 4  # the question ends with type and class, then the OPT
            real = Reply.decode(server.raw(real_wire))
            fake = Reply.decode(server.raw(fake_wire))
            assert real.rcode_text == "NXDOMAIN" and real.flag("AA"), theirs
            assert real.wire[2:12] == fake.wire[2:12] and real.wire[q_end:] == fake.wire[q_end:], theirs
        assert upstream.received == []
    finally:
        upstream.close()
