"""The benchmark's query files, and the same data for the peers (a plain Twisted Names server and
dnsmasq), taken from internal-dns's own answers so that every server holds the same records.

The load generator sends from one address, so every query is asked in one view: the network
`net0000` (the config maps loopback to it). Its apps are the names asked.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from bench.generate import Size, write_registry
from internal_dns.authority.answer import Zones, answer
from internal_dns.authority.views import View
from internal_dns.records import AAAA, NOERROR, NXDOMAIN, TXT, A
from internal_dns.registry.files import load_snapshot
from internal_dns.registry.model import Snapshot

VIEW_NETWORK = "net0000"
ZONES = {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"}
TYPES = {"A": A, "AAAA": AAAA, "TXT": TXT}
FORWARD_DOMAIN = "bench.test"
FORWARD_NAMES = 1000
QUERY_LINES = 20_000  # lines of the mixed workload's file; dnsperf loops over it


@dataclass(frozen=True)
class Question:
    name: str  # lower case, no trailing dot
    rdtype: str

    def line(self) -> str:
        return f"{self.name} {self.rdtype}"


def view_for(server_region: str = "iad") -> View:
    return View(VIEW_NETWORK, server_region)


def app_questions(snapshot: Snapshot) -> list[Question]:
    """Workload (a): `<app>.internal AAAA` for every app of the view."""
    return [Question(f"{name}.internal", "AAAA") for name in snapshot.networks[VIEW_NETWORK].app_names]


def every_form(snapshot: Snapshot, network: str = VIEW_NETWORK) -> tuple[list[Question], list[Question], list[Question]]:
    """(positive, NXDOMAIN, NODATA) questions covering every name form of SPEC §3-§5, in a view
    of `network`."""
    net = snapshot.networks[network]
    positive: list[Question] = []
    nxdomain: list[Question] = []
    nodata: list[Question] = []
    other_apps = [n for name, idx in snapshot.networks.items() if name != network for n in idx.app_names[:5]]
    for name in net.app_names:
        app = net.apps[name]
        started = app.started
        first = started[0] if started else None
        aaaa = [
            f"{name}.internal",
            f"global.{name}.internal",
            f"top2.nearest.of.{name}.internal",
            f"app.process.{name}.internal",
            f"primary.role.kv._metadata.{name}.internal",
            f"{name}.flycast",
            f"{name}.railway.internal",
        ]
        if first is not None:
            aaaa += [f"{first.region}.{name}.internal", f"{first.id}.vm.{name}.internal"]
        positive += [Question(n, "AAAA") for n in aaaa]
        positive.append(Question(f"{name}.railway.internal", "A"))
        positive += [Question(f"{form}.{name}.internal", "TXT") for form in ("vms", "all.vms", "regions", "all.regions")]
        nxdomain += [
            Question(f"ffffffffffffff.vm.{name}.internal", "AAAA"),
            Question(f"top0.nearest.of.{name}.internal", "AAAA"),
            Question(f"nosuch-{name}.internal", "AAAA"),
        ]
        nodata += [
            Question(f"{name}.internal", "A"),
            Question(f"{name}.internal", "TXT"),
            Question(f"vms.{name}.internal", "AAAA"),
            Question(f"vm.{name}.internal", "AAAA"),
        ]
    positive += [
        Question("_apps.internal", "TXT"),
        Question("_peer.internal", "TXT"),
        Question("laptop._peer.internal", "AAAA"),
        Question("_instances.internal", "TXT"),
        Question("all._instances.internal", "TXT"),
    ]
    nxdomain += [Question("interactive-1._peer.internal", "AAAA")] + [Question(f"{n}.internal", "AAAA") for n in other_apps]
    return positive, nxdomain, nodata


def mixed_questions(snapshot: Snapshot, lines: int = QUERY_LINES, seed: int = 1) -> list[Question]:
    """Workload (b): every form, with 10% NXDOMAIN and 10% NODATA, shuffled."""
    positive, nxdomain, nodata = every_form(snapshot)
    rng = random.Random(seed)
    tenth = lines // 10
    out = [rng.choice(nxdomain) for _ in range(tenth)] + [rng.choice(nodata) for _ in range(tenth)]
    # Every positive form at least once, then uniform draws for the rest.
    out += positive[: lines - len(out)]
    out += [rng.choice(positive) for _ in range(lines - len(out))]
    rng.shuffle(out)
    return out


def forward_questions() -> list[Question]:
    """Workload (c): names outside the zones, answered by the upstream and then from a cache."""
    return [Question(f"host-{i}.{FORWARD_DOMAIN}", "A") for i in range(FORWARD_NAMES)]


def write_queries(path: Path, questions: Iterable[Question]) -> Path:
    path.write_text("".join(q.line() + "\n" for q in questions))
    return path


# --- the same records for the peers -------------------------------------------------------


def records(
    snapshot: Snapshot, questions: Iterable[Question], ttl: int, view: View | None = None
) -> dict[str, dict[str, list[object]]]:
    """name → type → values, as internal-dns answers each question in the view (NXDOMAIN left out;
    a name that exists gets an entry even with no records, so the peers answer NODATA for it)."""
    zones = Zones(ZONES)
    view = view or view_for()
    out: dict[str, dict[str, list[object]]] = {}
    for q in {(q.name, q.rdtype) for q in questions}:
        name, rdtype = q
        labels = tuple(name.split("."))
        zone = zones.match(labels)
        assert zone is not None, name
        result = answer(snapshot, view, zone, labels, TYPES[rdtype], ttl)
        if result.rcode == NXDOMAIN:
            continue
        assert result.rcode == NOERROR
        entry = out.setdefault(name, {})
        for rrset in result.answer:
            entry[rdtype] = [_value(rrset.rtype, rd) for rd in rrset.rdatas]
    return out


def _value(rtype: int, rdata: bytes) -> object:
    if rtype == AAAA:
        return str(IPv6Address(rdata))
    if rtype == A:
        return str(IPv4Address(rdata))
    strings, pos = [], 0
    while pos < len(rdata):
        n = rdata[pos]
        strings.append(rdata[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    return strings


def write_baseline_data(path: Path, data: dict[str, dict[str, list[object]]]) -> Path:
    path.write_text(json.dumps(data))
    return path


# dnsmasq reads its config a line at a time into a buffer of about 1 KB: longer TXT values (the
# `_instances` lists of a big network) cannot be given to it, and it answers NXDOMAIN for them.
DNSMASQ_LINE = 1000


def write_dnsmasq_data(folder: Path, data: dict[str, dict[str, list[object]]]) -> tuple[Path, Path]:
    """A hosts file (AAAA and A) and a conf file of txt-record lines holding the same records."""
    hosts, conf = folder / "dnsmasq.hosts", folder / "dnsmasq-records.conf"
    host_lines, conf_lines = [], []
    for name, types in sorted(data.items()):
        for rdtype in ("AAAA", "A"):
            host_lines += [f"{ip} {name}" for ip in types.get(rdtype, [])]
        for strings in types.get("TXT", []):
            # A TXT value is a list of strings; the records' values are typed `object` (A, AAAA: text).
            quoted = ",".join('"' + s + '"' for s in strings)  # type: ignore[attr-defined]
            line = f"txt-record={name},{quoted}"
            if len(line) <= DNSMASQ_LINE:
                conf_lines.append(line)
    hosts.write_text("\n".join(host_lines) + "\n")
    conf.write_text("\n".join(conf_lines) + "\n")
    return hosts, conf


def write_forward_hosts(path: Path) -> Path:
    """The upstream's data for workload (c)."""
    path.write_text("".join(f"192.0.2.{i % 250 + 1} {q.name}\n" for i, q in enumerate(forward_questions())))
    return path


@dataclass
class Files:
    registry: Path
    queries: dict[str, Path]
    baseline_data: Path
    dnsmasq_hosts: Path
    dnsmasq_records: Path
    forward_hosts: Path


def prepare(out: Path, size: Size) -> Files:
    """The registry of this size and every workload's files, written under `out`."""
    registry = write_registry(out / "registry", size)
    snapshot = load_snapshot(registry)
    a = app_questions(snapshot)
    b = mixed_questions(snapshot)
    c = forward_questions()
    data = records(snapshot, a + b, ttl=5)
    hosts, dnsmasq_records = write_dnsmasq_data(out, data)
    return Files(
        registry=registry,
        queries={
            "a": write_queries(out / "queries-a.txt", a),
            "b": write_queries(out / "queries-b.txt", b),
            "c": write_queries(out / "queries-c.txt", c),
        },
        baseline_data=write_baseline_data(out / "baseline.json", data),
        dnsmasq_hosts=hosts,
        dnsmasq_records=dnsmasq_records,
        forward_hosts=write_forward_hosts(out / "upstream.hosts"),
    )
