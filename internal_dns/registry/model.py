"""The registry model of SPEC §1: entities, the parsing of each, and the immutable Snapshot.

A backend hands over *documents* (a source name such as a file path or a key, and the parsed
mapping); the catalog (catalog.py) parses their entities with the parsers here, checks the rules
that span entities, and indexes them per network into a `Snapshot`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Literal, Protocol, overload

from internal_dns.registry.kinds import BY_SECTION

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # \Z, not "$": no trailing newline
_MACHINE_ID = re.compile(r"[0-9a-f]{1,63}\Z")

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
    machine_count: int = 0  # every machine, whatever its state or dns
    peer_count: int = 0  # every peer, interactive ones too


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


# --- parsing one entity ------------------------------------------------------------------------
#
# Each parser takes one entity's mapping as read and what it may refer to, and returns the entity
# or raises ValueError with the reason (or Dependent: it refers to an entity that was itself
# rejected, whose own line says what to fix). Whole-registry rules (duplicates, addresses used
# twice, overlapping prefixes) are the catalog's (catalog.py).


class Dependent(Exception):
    """The entity refers to one that was already reported invalid."""


@overload
def _text(raw: Mapping[str, Any], key: str, required: Literal[True] = True) -> str: ...


@overload
def _text(raw: Mapping[str, Any], key: str, required: bool) -> str | None: ...


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
        return IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, value)))
    except OSError:
        raise ValueError(f"{key} {value!r} is not an IPv6 address") from None


def _ip4(raw: Mapping[str, Any], key: str) -> IPv4Address:
    value = _text(raw, key)
    try:
        return IPv4Address(socket.inet_pton(socket.AF_INET, value))
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


def describe(kind: str, raw: Any) -> str:
    """How messages name an entity: 'machine 148e21dad76789', 'app my-app', 'peer', ..."""
    noun = BY_SECTION[kind].singular
    if isinstance(raw, Mapping):
        for key in ("name", "id", "code"):
            if isinstance(raw.get(key), (str, int)):
                return f"{noun} {raw[key]}"
    return noun


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"metadata values must be scalars, not {type(value).__name__}")


def parse_region(item: Mapping[str, Any]) -> Region:
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
    return Region(sys.intern(code.lower()), float(lat), float(lon), str(name or ""))


def parse_network(source: str, item: Mapping[str, Any]) -> Network:
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
    return Network(sys.intern(name), prefix6, prefix4, dns6, dns4, legacy, source)


class References(Protocol):
    """What an app, machine or peer may refer to: the accepted networks, apps and regions, and
    the names of those rejected (a reference to one of them is Dependent, not an error of its own)."""

    # Read-only (properties), so that an implementation may hold a narrower type in a plain
    # attribute (the catalog's broken names are a dict of counts).
    @property
    def networks(self) -> Mapping[str, Network]: ...

    @property
    def regions(self) -> Mapping[str, Region]: ...

    @property
    def broken_networks(self) -> Collection[str]: ...

    @property
    def broken_apps(self) -> Collection[str]: ...  # lower-cased names

    def app_networks(self, lname: str) -> Collection[str]: ...

    def app(self, network: str, lname: str) -> App: ...


def _known_network(refs: References, network: str, what: str = "") -> None:
    if network not in refs.networks:
        if network in refs.broken_networks:
            raise Dependent
        raise ValueError(f"{what}unknown network '{network}'")


def parse_app(source: str, item: Mapping[str, Any], refs: References) -> App:
    name = _text(item, "name")
    network = _text(item, "network")
    assert name is not None and network is not None
    if not is_label(name):
        raise ValueError(f"name '{name}' is not a DNS label (letters, digits, '-', at most 63)")
    _known_network(refs, network)
    flycast: list[Flycast] = []
    entries = item.get("flycast") or []
    if not isinstance(entries, list):
        raise ValueError("flycast must be a list of {ip, network} mappings")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ValueError(f"flycast entries must be mappings with 'ip', got {entry!r}")
        ip = _ip6(entry, "ip")
        target = _text(entry, "network", required=False) or network
        _known_network(refs, target, f"flycast {ip}: ")
        if ip not in refs.networks[target].prefix6:
            raise ValueError(f"flycast {ip} is outside network {target}'s prefix {refs.networks[target].prefix6}")
        flycast.append(Flycast(ip, sys.intern(target)))
    return App(sys.intern(name), sys.intern(network), tuple(flycast), source)


def machine_network(item: Mapping[str, Any], refs: References) -> str:
    """The network a machine belongs to: its own `network`, or its app's when the name is unique."""
    app_name = _text(item, "app")
    assert app_name is not None
    lname = app_name.lower()
    network = _text(item, "network", required=False)
    candidates = refs.app_networks(lname)
    if network is None:
        if not candidates:
            if lname in refs.broken_apps:
                raise Dependent
            raise ValueError(f"unknown app '{app_name}'")
        if len(candidates) > 1:
            raise ValueError(f"app '{app_name}' exists in {', '.join(sorted(candidates))}: add 'network'")
        return next(iter(candidates))
    _known_network(refs, network)
    if network not in candidates:
        if lname in refs.broken_apps:
            raise Dependent
        raise ValueError(f"unknown app '{app_name}' in network {network}")
    return network


def parse_machine(source: str, item: Mapping[str, Any], refs: References, shared: dict[Any, Any]) -> Machine:
    """`shared` interns values many machines have in common (metadata mappings, ...)."""
    mid = _text(item, "id")
    assert mid is not None
    if not _MACHINE_ID.match(mid):
        raise ValueError(f"id '{mid}' must be lower-case hex (at most 63 digits)")
    network = machine_network(item, refs)
    region = (_text(item, "region") or "").lower()
    if region not in refs.regions:
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
    app = refs.app(network, str(item["app"]).lower())
    key = tuple(sorted(metadata.items()))
    metadata = shared.setdefault(key, metadata)  # read only, so one mapping serves every equal one
    return Machine(
        mid,
        app.name,
        refs.networks[network].name,
        refs.regions[region].code,
        ip6,
        sys.intern(state),
        sys.intern(group.lower()),
        ip4,
        metadata,
        dns,
        source,
    )


def parse_peer(source: str, item: Mapping[str, Any], refs: References) -> Peer:
    name = _text(item, "name")
    network = _text(item, "network")
    assert name is not None and network is not None
    if not is_label(name):
        raise ValueError(f"name '{name}' is not a DNS label")
    _known_network(refs, network)
    ip6 = _ip6(item, "ip6")
    region = _text(item, "region", required=False)
    if region is not None:
        region = region.lower()
        if region not in refs.regions:
            raise ValueError(f"unknown region '{region}'")
        region = refs.regions[region].code
    return Peer(name, refs.networks[network].name, ip6, region, source)


def overlapping(networks: list[Network]) -> list[tuple[Network, Network, str]]:
    """Pairs of networks whose prefixes overlap, as (listed later, listed earlier, key).

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
