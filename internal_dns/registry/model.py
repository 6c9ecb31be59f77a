"""The registry model of SPEC §1: entities, validation, and the immutable Snapshot.

A backend hands over *documents* (a source name such as a file path or a key, and the parsed
mapping); `build_snapshot` turns them into one validated `Snapshot` or raises `RegistryError`
listing every problem found, each naming the source, the entity and the reason.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MACHINE_ID = re.compile(r"^[0-9a-f]{1,63}$")

DEFAULT_PROCESS_GROUP = "app"
STARTED = "started"


def is_label(value: str) -> bool:
    """A host-name label (RFC 952/1123), compared case-insensitively."""
    return bool(_LABEL.match(value.lower()))


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    latitude: float
    longitude: float
    name: str = ""


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    prefix6: IPv6Network
    prefix4: IPv4Network | None = None
    dns6: IPv6Address | None = None
    dns4: IPv4Address | None = None
    legacy: bool = False
    source: str = ""


@dataclass(frozen=True, slots=True)
class Flycast:
    ip: IPv6Address
    network: str


@dataclass(frozen=True, slots=True)
class App:
    name: str
    network: str
    flycast: tuple[Flycast, ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True)
class Machine:
    id: str
    app: str
    network: str
    region: str
    ip6: IPv6Address
    state: str = STARTED
    process_group: str = DEFAULT_PROCESS_GROUP
    ip4: IPv4Address | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    dns: bool = True
    source: str = ""

    @property
    def started(self) -> bool:
        return self.state == STARTED


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    network: str
    ip6: IPv6Address
    region: str | None = None
    source: str = ""

    @property
    def interactive(self) -> bool:
        return self.name.lower().startswith("interactive-")


class RegistryError(Exception):
    """A registry that cannot be served; `problems` holds one line per fault."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"registry rejected: {self.problems[0]}"
        return "registry rejected:\n  " + "\n  ".join(self.problems)


@dataclass(frozen=True, slots=True)
class Document:
    """One unit of registry input: a YAML file, an etcd key, a database row set."""

    source: str
    data: Any


# --- the per-network index the answer logic reads -------------------------------------------


@dataclass(frozen=True, slots=True)
class AppIndex:
    app: App
    machines: tuple[Machine, ...]  # every dns:true machine, by id
    started: tuple[Machine, ...]  # the started ones, by id
    by_id: Mapping[str, Machine]


@dataclass(frozen=True, slots=True)
class NetworkIndex:
    network: Network
    apps: Mapping[str, AppIndex]  # lower-cased name -> app
    app_names: tuple[str, ...]  # sorted
    peers: Mapping[str, Peer]  # lower-cased name -> peer, interactive ones left out
    peer_names: tuple[str, ...]  # sorted, interactive ones left out
    machines: tuple[Machine, ...]  # every dns:true machine of the network, by id
    started: tuple[Machine, ...]
    flycast: Mapping[str, tuple[IPv6Address, ...]]  # app name -> addresses on this network
    # address -> region of the machine (any state, dns or not) or peer that owns it: the region
    # of a querier, for `nearest`. Kept per network so that an unchanged network shares it too.
    owners: Mapping[IPv4Address | IPv6Address, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    networks: Mapping[str, NetworkIndex]
    regions: Mapping[str, Region]
    machine_count: int
    peer_count: int
    app_count: int
    serial: int = 0  # the SOA serial: grows with every snapshot

    def with_serial(self, serial: int) -> Snapshot:
        return replace(self, serial=serial)

    def counts(self) -> dict[str, int]:
        return {
            "networks": len(self.networks),
            "apps": self.app_count,
            "machines": self.machine_count,
            "peers": self.peer_count,
            "regions": len(self.regions),
        }


# --- parsing documents ---------------------------------------------------------------------


class _Problems:
    """The faults found so far, and the names of entities they took out.

    An entity that refers to a network or app already reported as invalid is left out without a
    line of its own: "unknown app" would point away from the one fault to fix.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.broken_networks: set[str] = set()
        self.broken_apps: set[str] = set()  # lower-cased names

    def add(self, source: str, entity: str, reason: str) -> None:
        self.lines.append(f"{source}: {entity}: {reason}")


class _Dependent(Exception):
    """The entity refers to one that was already reported invalid."""


def _name_of(raw: Mapping[str, Any]) -> str | None:
    name = raw.get("name")
    return name if isinstance(name, str) else None


def _text(raw: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing '{key}'")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"'{key}' must be a string, not {type(value).__name__}")
    if not isinstance(value, str):
        # YAML reads 12345678901234 as a number and 0123 as octal 83: only quotes keep the text.
        raise ValueError(f"'{key}' must be a quoted string (YAML read the number {value!r}: put it in quotes)")
    return value


# The C parser is ten times quicker than ipaddress's own, which counts for a million machines;
# both accept exactly the textual forms of RFC 4291 §2.2 and dotted quads without leading zeros.
def _ip6(raw: Mapping[str, Any], key: str) -> IPv6Address:
    value = _text(raw, key)
    try:
        return IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, value)))  # type: ignore[arg-type]
    except OSError:
        raise ValueError(f"{key} {value!r} is not an IPv6 address") from None


def _ip4(raw: Mapping[str, Any], key: str) -> IPv4Address:
    value = _text(raw, key)
    try:
        return IPv4Address(socket.inet_pton(socket.AF_INET, value))  # type: ignore[arg-type]
    except OSError:
        raise ValueError(f"{key} {value!r} is not an IPv4 address") from None


def _prefix(raw: Mapping[str, Any], key: str, kind: type[IPv4Network] | type[IPv6Network]) -> Any:
    value = _text(raw, key)
    try:
        prefix = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:  # host bits set, a bad length, not an address at all
        raise ValueError(f"{key} {value!r} is not a network prefix ({exc})") from None
    if not isinstance(prefix, kind):
        family = "IPv6" if kind is IPv6Network else "IPv4"
        raise ValueError(f"{key} {value!r} is not an {family} prefix")
    return prefix


def _describe(kind: str, raw: Any) -> str:
    if isinstance(raw, Mapping):
        for key in ("name", "id", "code"):
            if isinstance(raw.get(key), (str, int)):
                return f"{kind} {raw[key]}"
    return kind


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"metadata values must be scalars, not {type(value).__name__}")


@dataclass
class _Raw:
    regions: list[tuple[str, Region]] = field(default_factory=list)
    networks: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    apps: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    machines: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    peers: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)


_SECTIONS = ("networks", "apps", "machines", "peers", "regions")


def _collect(documents: Iterable[Document], problems: _Problems) -> _Raw:
    raw = _Raw()
    for doc in documents:
        if doc.data is None:
            continue
        if not isinstance(doc.data, Mapping):
            problems.add(doc.source, "document", "must be a mapping with networks/apps/machines/peers/regions")
            continue
        for section in _SECTIONS:
            items = doc.data.get(section)
            if items is None:
                continue
            if not isinstance(items, list):
                problems.add(doc.source, section, "must be a list")
                continue
            for item in items:
                if not isinstance(item, Mapping):
                    problems.add(doc.source, section, f"entries must be mappings, got {item!r}")
                    continue
                if section == "regions":
                    _collect_region(doc.source, item, raw, problems)
                else:
                    getattr(raw, section).append((doc.source, item))
    return raw


def _collect_region(source: str, item: Mapping[str, Any], raw: _Raw, problems: _Problems) -> None:
    try:
        code = _text(item, "code")
        assert code is not None
        if not is_label(code):
            raise ValueError(f"code '{code}' is not a DNS label")
        lat, lon = item.get("latitude"), item.get("longitude")
        if isinstance(lat, bool) or isinstance(lon, bool) or not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            raise ValueError("latitude and longitude must be numbers")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError("latitude must be in [-90, 90] and longitude in [-180, 180]")
        name = item.get("name", item.get("city", ""))
        raw.regions.append((source, Region(code.lower(), float(lat), float(lon), str(name or ""))))
    except ValueError as exc:
        problems.add(source, _describe("region", item), str(exc))


def _parse_network(source: str, item: Mapping[str, Any]) -> Network:
    name = _text(item, "name")
    assert name is not None
    prefix6: IPv6Network = _prefix(item, "prefix6", IPv6Network)
    prefix4: IPv4Network | None = None
    if item.get("prefix4") is not None:
        prefix4 = _prefix(item, "prefix4", IPv4Network)
    legacy = item.get("legacy", False)
    if not isinstance(legacy, bool):
        raise ValueError("legacy must be true or false")
    if legacy and prefix4 is not None:
        raise ValueError("a legacy network is IPv6-only: drop prefix4")
    dns6 = _ip6(item, "dns6") if item.get("dns6") is not None else prefix6.network_address + 3
    if dns6 not in prefix6:
        raise ValueError(f"dns6 {dns6} is outside prefix6 {prefix6}")
    dns4 = None
    if item.get("dns4") is not None:
        dns4 = _ip4(item, "dns4")
        if prefix4 is None or dns4 not in prefix4:
            raise ValueError(f"dns4 {dns4} is outside prefix4 {prefix4}")
    return Network(name, prefix6, prefix4, dns6, dns4, legacy, source)


def build_snapshot(documents: Iterable[Document], previous: Snapshot | None = None) -> Snapshot:
    """Validate and index a whole registry. Raises RegistryError naming every fault.

    With the previously served snapshot given, every network whose index came out equal keeps
    the previous index object, so that the server can tell what changed by identity, cheaply,
    on its reactor thread (the comparison itself happens here, off it).
    """
    problems = _Problems()
    raw = _collect(documents, problems)

    regions: dict[str, Region] = {}
    for source, region in raw.regions:
        known = regions.get(region.code)
        if known is None:
            regions[region.code] = region
        elif (known.latitude, known.longitude) != (region.latitude, region.longitude):
            problems.add(source, f"region {region.code}", "defined twice with different coordinates")
        elif region.name and not known.name:
            # An org file may repeat a region without its city (SPEC §1's example): same region.
            regions[region.code] = region

    networks: dict[str, Network] = {}
    for source, item in raw.networks:
        entity = _describe("network", item)
        try:
            net = _parse_network(source, item)
        except ValueError as exc:
            problems.add(source, entity, str(exc))
            if (name := _name_of(item)) is not None:
                problems.broken_networks.add(name)
            continue
        if net.name in networks:
            problems.add(source, entity, f"duplicate network (first in {networks[net.name].source})")
            continue
        networks[net.name] = net
    # Views are chosen by prefix (SPEC §2): an address in two networks has no one view.
    for later, earlier, key in _overlapping(list(networks.values())):
        problems.add(
            later.source, f"network {later.name}",
            f"{key} {getattr(later, key)} overlaps network {earlier.name}'s {key} {getattr(earlier, key)}",
        )

    apps = _parse_apps(raw, networks, problems)
    machines = _parse_machines(raw, networks, apps, regions, problems)
    peers = _parse_peers(raw, networks, regions, problems)
    _check_addresses(machines, peers, apps, networks, problems)

    if problems.lines:
        raise RegistryError(problems.lines)
    built = _index(networks, apps, machines, peers, regions)
    snapshot = share_unchanged(built, previous)
    if snapshot is not built:
        release_gradually(built.networks)  # the indexes superseded by equal previous ones
    release_gradually(machines, apps, raw.machines, raw.apps)
    return snapshot


def release_gradually(*containers: dict[Any, Any] | list[Any]) -> None:
    """Empty big containers one item at a time.

    Freeing a container of a hundred thousand objects at once is one C-level cascade that holds
    the interpreter lock throughout (tens of milliseconds); freed item by item, between bytecodes,
    the lock can pass to the reactor thread as usual.
    """
    for container in containers:
        pop = container.popitem if isinstance(container, dict) else container.pop
        while container:
            pop()


def _overlapping(networks: list[Network]) -> list[tuple[Network, Network, str]]:
    """Pairs of networks whose prefixes overlap, as (defined later, defined earlier, key).

    CIDR prefixes overlap only by containment, so one sweep in address order with a stack of
    the prefixes still open finds every pair in O(n log n), where comparing all pairs would be
    quadratic in the number of networks.
    """
    order = {net.name: i for i, net in enumerate(networks)}
    pairs = []
    for key in ("prefix6", "prefix4"):
        spans = sorted(
            (int(p.network_address), -p.num_addresses, order[net.name], int(p.broadcast_address), net)
            for net in networks
            if (p := getattr(net, key)) is not None
        )
        open_spans: list[tuple[int, Network]] = []
        for start, _, _, end, net in spans:
            open_spans = [(e, n) for e, n in open_spans if e >= start]
            for _, outer in open_spans:
                later, earlier = (net, outer) if order[net.name] > order[outer.name] else (outer, net)
                pairs.append((later, earlier, key))
            open_spans.append((end, net))
    pairs.sort(key=lambda p: (order[p[0].name], order[p[1].name]))
    return pairs


def share_unchanged(snapshot: Snapshot, previous: Snapshot | None) -> Snapshot:
    """The snapshot, with each network index equal to the previous one replaced by that one."""
    if previous is None or previous.regions != snapshot.regions:  # nearest reads every region
        return snapshot
    networks = {}
    for name, index in snapshot.networks.items():
        before = previous.networks.get(name)
        networks[name] = before if before is not None and before == index else index
    return replace(snapshot, networks=networks)


def _parse_apps(raw: _Raw, networks: Mapping[str, Network], problems: _Problems) -> dict[tuple[str, str], App]:
    apps: dict[tuple[str, str], App] = {}
    for source, item in raw.apps:
        entity = _describe("app", item)
        try:
            name = _text(item, "name")
            network = _text(item, "network")
            assert name is not None and network is not None
            if not is_label(name):
                raise ValueError(f"name '{name}' is not a DNS label (letters, digits, '-', at most 63)")
            if network not in networks:
                if network in problems.broken_networks:
                    raise _Dependent
                raise ValueError(f"unknown network '{network}'")
            flycast: list[Flycast] = []
            entries = item.get("flycast") or []
            if not isinstance(entries, list):
                raise ValueError("flycast must be a list of {ip, network} mappings")
            for entry in entries:
                if not isinstance(entry, Mapping):
                    raise ValueError(f"flycast entries must be mappings with 'ip', got {entry!r}")
                ip = _ip6(entry, "ip")
                fc_net = _text(entry, "network", required=False) or network
                if fc_net not in networks:
                    if fc_net in problems.broken_networks:
                        raise _Dependent
                    raise ValueError(f"flycast {ip}: unknown network '{fc_net}'")
                if ip not in networks[fc_net].prefix6:
                    raise ValueError(f"flycast {ip} is outside network {fc_net}'s prefix {networks[fc_net].prefix6}")
                flycast.append(Flycast(ip, fc_net))
        except (ValueError, _Dependent) as exc:
            if isinstance(exc, ValueError):
                problems.add(source, entity, str(exc))
            if (name := _name_of(item)) is not None:
                problems.broken_apps.add(name.lower())
            continue
        key = (network, name.lower())
        if key in apps:
            problems.add(source, entity, f"duplicate app in network {network} (first in {apps[key].source})")
            continue
        apps[key] = App(name, network, tuple(flycast), source)
    return apps


def _parse_machines(
    raw: _Raw,
    networks: Mapping[str, Network],
    apps: Mapping[tuple[str, str], App],
    regions: Mapping[str, Region],
    problems: _Problems,
) -> dict[str, Machine]:
    networks_of_app: dict[str, list[str]] = {}
    for net, name in apps:
        networks_of_app.setdefault(name, []).append(net)
    machines: dict[str, Machine] = {}
    for source, item in raw.machines:
        try:
            mid = _text(item, "id")
            app_name = _text(item, "app")
            assert mid is not None and app_name is not None
            if not _MACHINE_ID.match(mid):
                raise ValueError(f"id '{mid}' must be lower-case hex (at most 63 digits)")
            network = _text(item, "network", required=False)
            candidates = networks_of_app.get(app_name.lower(), [])
            if network is None:
                if not candidates and app_name.lower() in problems.broken_apps:
                    raise _Dependent
                if not candidates:
                    raise ValueError(f"unknown app '{app_name}'")
                if len(candidates) > 1:
                    raise ValueError(f"app '{app_name}' exists in {', '.join(sorted(candidates))}: add 'network'")
                network = candidates[0]
            elif network not in networks:
                if network in problems.broken_networks:
                    raise _Dependent
                raise ValueError(f"unknown network '{network}'")
            elif network not in candidates:
                if app_name.lower() in problems.broken_apps:
                    raise _Dependent
                raise ValueError(f"unknown app '{app_name}' in network {network}")
            region = (_text(item, "region") or "").lower()
            if region not in regions:
                raise ValueError(f"unknown region '{region}'")
            state = (_text(item, "state", required=False) or STARTED).lower()
            group = _text(item, "process_group", required=False) or DEFAULT_PROCESS_GROUP
            if not is_label(group):
                raise ValueError(f"process_group '{group}' is not a DNS label")
            ip6 = _ip6(item, "ip6")
            ip4 = _ip4(item, "ip4") if item.get("ip4") is not None else None
            metadata_raw = item.get("metadata") or {}
            if not isinstance(metadata_raw, Mapping):
                raise ValueError("metadata must be a mapping of strings")
            metadata = {str(k): _scalar_text(v) for k, v in metadata_raw.items()}
            dns = item.get("dns", True)
            if not isinstance(dns, bool):
                raise ValueError("dns must be true or false")
        except ValueError as exc:
            problems.add(source, _describe("machine", item), str(exc))
            continue
        except _Dependent:
            continue
        if mid in machines:
            problems.add(source, _describe("machine", item), f"duplicate machine id (first in {machines[mid].source})")
            continue
        app = apps[(network, app_name.lower())]
        machines[mid] = Machine(
            mid, app.name, network, region, ip6, state, group.lower(), ip4, metadata, dns, source
        )
    return machines


def _parse_peers(
    raw: _Raw, networks: Mapping[str, Network], regions: Mapping[str, Region], problems: _Problems
) -> list[Peer]:
    peers: dict[tuple[str, str], Peer] = {}
    for source, item in raw.peers:
        entity = _describe("peer", item)
        try:
            name = _text(item, "name")
            network = _text(item, "network")
            assert name is not None and network is not None
            if not is_label(name):
                raise ValueError(f"name '{name}' is not a DNS label")
            if network not in networks:
                if network in problems.broken_networks:
                    raise _Dependent
                raise ValueError(f"unknown network '{network}'")
            ip6 = _ip6(item, "ip6")
            region = _text(item, "region", required=False)
            if region is not None:
                region = region.lower()
                if region not in regions:
                    raise ValueError(f"unknown region '{region}'")
        except ValueError as exc:
            problems.add(source, entity, str(exc))
            continue
        except _Dependent:
            continue
        key = (network, name.lower())
        if key in peers:
            problems.add(source, entity, f"duplicate peer in network {network} (first in {peers[key].source})")
            continue
        peers[key] = Peer(name, network, ip6, region, source)
    return list(peers.values())


def _check_addresses(
    machines: Mapping[str, Machine],
    peers: list[Peer],
    apps: Mapping[tuple[str, str], App],
    networks: Mapping[str, Network],
    problems: _Problems,
) -> None:
    """Every address inside its network's prefix, and owned by one entity only."""
    owner: dict[IPv4Address | IPv6Address, str] = {}

    def claim(ip: IPv4Address | IPv6Address, who: str, source: str) -> None:
        if ip in owner:
            problems.add(source, who, f"address {ip} is already used by {owner[ip]}")
        else:
            owner[ip] = who

    for net in networks.values():  # a network's resolver address belongs to no machine
        for key in ("dns6", "dns4"):
            if (ip := getattr(net, key)) is not None:
                claim(ip, f"network {net.name} ({key})", net.source)
    for app in apps.values():
        for fc in app.flycast:
            claim(fc.ip, f"app {app.name} (flycast)", app.source)
    for m in machines.values():
        net = networks[m.network]
        who = f"machine {m.id}"
        if m.ip6 not in net.prefix6:
            problems.add(m.source, who, f"ip6 {m.ip6} is outside network {net.name}'s prefix {net.prefix6}")
        if m.ip4 is not None:
            if net.prefix4 is None:
                problems.add(m.source, who, f"ip4 {m.ip4} given but network {net.name} has no prefix4")
            elif m.ip4 not in net.prefix4:
                problems.add(m.source, who, f"ip4 {m.ip4} is outside network {net.name}'s prefix {net.prefix4}")
            claim(m.ip4, who, m.source)
        claim(m.ip6, who, m.source)
    for p in peers:
        net = networks[p.network]
        who = f"peer {p.name}"
        if p.ip6 not in net.prefix6:
            problems.add(p.source, who, f"ip6 {p.ip6} is outside network {net.name}'s prefix {net.prefix6}")
        claim(p.ip6, who, p.source)


def _index(
    networks: Mapping[str, Network],
    apps: Mapping[tuple[str, str], App],
    machines: Mapping[str, Machine],
    peers: list[Peer],
    regions: Mapping[str, Region],
) -> Snapshot:
    by_app: dict[tuple[str, str], list[Machine]] = {key: [] for key in apps}
    for m in machines.values():
        if m.dns:
            by_app[(m.network, m.app.lower())].append(m)
    flycast: dict[str, dict[str, list[IPv6Address]]] = {name: {} for name in networks}
    for app in apps.values():
        flycast[app.network].setdefault(app.name.lower(), [])  # own apps exist under .flycast
        for fc in app.flycast:
            flycast[fc.network].setdefault(app.name.lower(), []).append(fc.ip)

    per_network_apps: dict[str, dict[str, AppIndex]] = {name: {} for name in networks}
    for (net, lname), app in apps.items():
        ms = tuple(sorted(by_app[(net, lname)], key=lambda m: m.id))
        per_network_apps[net][lname] = AppIndex(
            app, ms, tuple(m for m in ms if m.started), {m.id: m for m in ms}
        )
    per_network_peers: dict[str, dict[str, Peer]] = {name: {} for name in networks}
    for p in peers:
        if not p.interactive:
            per_network_peers[p.network][p.name.lower()] = p

    owners: dict[str, dict[IPv4Address | IPv6Address, str | None]] = {name: {} for name in networks}
    for m in machines.values():
        owners[m.network][m.ip6] = m.region
        if m.ip4 is not None:
            owners[m.network][m.ip4] = m.region
    for p in peers:
        owners[p.network][p.ip6] = p.region

    index: dict[str, NetworkIndex] = {}
    for name, net in networks.items():
        app_map = per_network_apps[name]
        all_ms = tuple(sorted((m for a in app_map.values() for m in a.machines), key=lambda m: m.id))
        peer_map = per_network_peers[name]
        index[name] = NetworkIndex(
            network=net,
            apps=app_map,
            app_names=tuple(sorted(a.app.name for a in app_map.values())),
            peers=peer_map,
            peer_names=tuple(sorted(p.name for p in peer_map.values())),
            machines=all_ms,
            started=tuple(m for m in all_ms if m.started),
            flycast={k: tuple(v) for k, v in flycast[name].items()},
            owners=owners[name],
        )
    return Snapshot(
        networks=index,
        regions=dict(regions),
        machine_count=len(machines),
        peer_count=len(peers),
        app_count=len(apps),
    )
