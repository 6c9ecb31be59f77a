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
from bisect import bisect_left
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal, Protocol, overload

from internal_dns.registry.holders import AddressTable
from internal_dns.registry.kinds import BY_SECTION

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # \Z, not "$": no trailing newline
_HEX = "0123456789abcdef"  # a machine id is 1 to 63 of these

DEFAULT_PROCESS_GROUP = "app"
CHECK_STATUSES = ("passing", "warning", "critical")  # SPEC §1: a machine's checks
CRITICAL = "critical"
PROTOCOLS = ("tcp", "udp")  # SPEC §1: an app's services
_GROUPS_SEEN: dict[str, str] = {}  # process group as given -> as kept: known to be a label
_SEEN = "metadata objects seen"  # keys of the catalog's `shared` that no tuple of items can be
_EQUAL = "metadata mappings seen"
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
class Service:
    """A port an app serves (SPEC §1), answered as SRV at `_<name>._<protocol>.<app>`."""

    name: str  # a DNS label, lower case, without the leading "_"
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class App:
    name: str
    network: str
    flycast: tuple[Flycast, ...] = ()
    source: str = ""
    key: Hashable = None  # the catalog's key of the entity it was read from
    services: tuple[Service, ...] = ()

    def port(self, service: str, protocol: str) -> int | None:
        """The port of a service, named as in DNS (`_http`, `_tcp`), if the app has it."""
        for s in self.services:
            if "_" + s.name == service and "_" + s.protocol == protocol:
                return s.port
        return None

    def serves(self, protocol: str) -> bool:
        """Whether a service of this protocol (`_tcp`, `_udp`) exists: `_<protocol>.<app>` does."""
        return any("_" + s.protocol == protocol for s in self.services)


_NO_METADATA: Mapping[str, str] = MappingProxyType({})
NO_CHECKS: Mapping[str, str] = _NO_METADATA


class Machine:
    """A machine. A million of them may be held, so each is lean: slots, its addresses packed
    (`packed6`, `packed4`: what answers carry; `ip6`/`ip4` make address objects when asked), its
    texts shared with its neighbours'. Read only once made, by convention: the catalog shares
    one object between its maps and every index."""

    __slots__ = (
        "id",
        "app",
        "network",
        "region",
        "packed6",
        "state",
        "process_group",
        "packed4",
        "metadata",
        "dns",
        "source",
        "key",
        "qualified",
        "checks",
    )
    id: str
    app: str
    network: str
    region: str
    packed6: bytes
    state: str
    process_group: str
    packed4: bytes | None
    metadata: Mapping[str, str]
    dns: bool
    source: str
    key: Hashable  # the catalog's key of the entity it was read from
    qualified: bool  # it named its network (else its app's network was looked up)
    checks: Mapping[str, str]  # check name -> passing, warning or critical; shared like metadata

    def __init__(
        self,
        id: str,
        app: str,
        network: str,
        region: str,
        ip6: IPv6Address | bytes,
        state: str = STARTED,
        process_group: str = DEFAULT_PROCESS_GROUP,
        ip4: IPv4Address | bytes | None = None,
        metadata: Mapping[str, str] = _NO_METADATA,
        dns: bool = True,
        source: str = "",
        key: Hashable = None,
        qualified: bool = True,
        checks: Mapping[str, str] = NO_CHECKS,
    ):
        self.id = id
        self.app = app
        self.network = network
        self.region = region
        self.packed6 = ip6 if ip6.__class__ is bytes else ip6.packed  # type: ignore[union-attr]
        self.state = state
        self.process_group = process_group
        self.packed4 = ip4 if ip4 is None or ip4.__class__ is bytes else ip4.packed  # type: ignore[union-attr]
        self.metadata = metadata
        self.dns = dns
        self.source = source
        self.key = key
        self.qualified = qualified
        self.checks = checks

    @property
    def ip6(self) -> IPv6Address:
        return IPv6Address(self.packed6)

    @property
    def ip4(self) -> IPv4Address | None:
        return None if self.packed4 is None else IPv4Address(self.packed4)

    @property
    def started(self) -> bool:
        return self.state == STARTED

    @property
    def healthy(self) -> bool:
        """No check is critical (SPEC §3: warning counts as passing; no checks is healthy)."""
        checks = self.checks
        return not checks or CRITICAL not in checks.values()

    def fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Machine) and self.fields() == other.fields()

    __hash__ = None  # type: ignore[assignment]  # equal by value, and its metadata is a mapping

    def __repr__(self) -> str:
        return f"Machine({self.id!r}, {self.app!r}, {self.network!r}, {self.region!r}, {str(self.ip6)!r}, {self.state!r})"


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    network: str
    ip6: IPv6Address
    region: str | None = None
    source: str = ""
    key: Hashable = None

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


machine_id: Callable[[Machine], str] = attrgetter("id")  # a sort key made in C: a load sorts a million


def _started(machines: tuple[Machine, ...]) -> tuple[Machine, ...]:
    started = tuple(m for m in machines if m.state == STARTED)
    return machines if len(started) == len(machines) else started  # all started: one tuple


class ById(Mapping[str, Machine]):
    """Machines sorted by id, looked up by id (a bisection: no dictionary per app)."""

    __slots__ = ("_machines",)

    def __init__(self, machines: tuple[Machine, ...]):
        self._machines = machines

    def __getitem__(self, mid: str) -> Machine:
        machines = self._machines
        i = bisect_left(machines, mid, key=machine_id)
        if i < len(machines) and machines[i].id == mid:
            return machines[i]
        raise KeyError(mid)

    def __iter__(self) -> Iterator[str]:
        return (m.id for m in self._machines)

    def __len__(self) -> int:
        return len(self._machines)


@dataclass(frozen=True, slots=True)
class AppIndex:
    app: App
    machines: tuple[Machine, ...]  # every dns:true machine, by id
    # the started ones, made when first asked (most apps of a big registry never are, here)
    _started: tuple[Machine, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def started(self) -> tuple[Machine, ...]:
        """The started machines, by id."""
        started = self._started
        if started is None:
            started = _started(self.machines)
            object.__setattr__(self, "_started", started)  # a cache: the index stays equal
        return started

    @property
    def by_id(self) -> Mapping[str, Machine]:
        return ById(self.machines)


Address = IPv4Address | IPv6Address
Holder = Machine | Peer | str  # what holds a named address; str: a Flycast address's app


class Owners(Mapping[Address, "str | None"]):
    """Address -> region of the machine or peer that holds it, asked with address objects."""

    __slots__ = ("_by_packed",)

    def __init__(self, by_packed: Mapping[bytes, str | None]):
        self._by_packed = by_packed

    def __getitem__(self, ip: Address) -> str | None:
        return self._by_packed[ip.packed]

    def __iter__(self) -> Iterator[Address]:
        return (ipaddress.ip_address(packed) for packed in self._by_packed)

    def __len__(self) -> int:
        return len(self._by_packed)


@dataclass(frozen=True, slots=True)
class NetworkIndex:
    network: Network
    apps: Mapping[str, AppIndex]  # lower-cased name -> app
    app_names: tuple[str, ...]  # sorted
    peers: Mapping[str, Peer]  # lower-cased name -> peer, interactive ones left out
    peer_names: tuple[str, ...]  # sorted, interactive ones left out
    flycast: Mapping[str, tuple[IPv6Address, ...]]  # app name -> addresses on this network
    # Every machine (any state, dns or not) and peer holding an address here: the owners of
    # addresses, which say the region of a querier, for `nearest`.
    addressed: tuple[Machine | Peer, ...] = field(default=(), compare=False)  # in no order that matters
    machine_count: int = 0  # every machine, whatever its state or dns
    peer_count: int = 0  # every peer, interactive ones too
    # address (packed) -> region, made when first asked: most networks of a big registry never
    # send a query to a given host, and the map costs as much as the machines themselves.
    _owners: dict[bytes, str | None] | None = field(default=None, compare=False, repr=False)
    _machines: tuple[Machine, ...] | None = field(default=None, compare=False, repr=False)
    _started: tuple[Machine, ...] | None = field(default=None, compare=False, repr=False)
    _named: AddressTable[Holder] | None = field(default=None, compare=False, repr=False)

    def replacing(self, machines: Mapping[int, Machine]) -> NetworkIndex:
        """This index with machines swapped for others that hold the same id, app, addresses and
        `dns` (by `id()` of the one replaced): what indexing would give, without indexing again
        (a health check flipping, a machine started or stopped). The caches start afresh."""
        apps = dict(self.apps)
        for lname in {m.app.lower() for m in machines.values()}:  # the apps that hold them (none: dns false)
            app = apps.get(lname)
            if app is not None:
                apps[lname] = AppIndex(app.app, tuple(machines.get(id(m), m) for m in app.machines))
        index = NetworkIndex(
            network=self.network,
            apps=apps,
            app_names=self.app_names,
            peers=self.peers,
            peer_names=self.peer_names,
            flycast=self.flycast,
            addressed=tuple(machines.get(id(h), h) for h in self.addressed),
            machine_count=self.machine_count,
            peer_count=self.peer_count,
        )
        if self.owners_made:
            index.owner_map()  # asked for before: made here, not on the reactor's next query
        if self.named_made:
            index.named()
        return index

    @property
    def machines(self) -> tuple[Machine, ...]:
        """Every dns:true machine of the network, by id (made when first asked, from the apps)."""
        machines = self._machines
        if machines is None:
            machines = tuple(sorted((m for a in self.apps.values() for m in a.machines), key=machine_id))
            object.__setattr__(self, "_machines", machines)
        return machines

    @property
    def started(self) -> tuple[Machine, ...]:
        started = self._started
        if started is None:
            started = _started(self.machines)
            object.__setattr__(self, "_started", started)
        return started

    def region_of(self, packed: bytes) -> str | None:
        """The region of the machine or peer holding this address, if one of the network's does."""
        return self.owner_map().get(packed)

    def owner_map(self) -> Mapping[bytes, str | None]:
        owners = self._owners
        if owners is None:
            owners = {}
            for holder in self.addressed:
                if isinstance(holder, Machine):
                    owners[holder.packed6] = holder.region
                    if holder.packed4 is not None:
                        owners[holder.packed4] = holder.region
                else:
                    owners[holder.ip6.packed] = holder.region
            object.__setattr__(self, "_owners", owners)  # a cache: the index stays equal
        return owners

    @property
    def owners(self) -> Mapping[Address, str | None]:
        return Owners(self.owner_map())

    def named(self) -> AddressTable[Holder]:
        """The addresses here that have a name (reverse names, SPEC §3): dns:true machines' in any
        state, peers' but interactive ones, Flycast addresses (held by the app's lower-cased
        name). Made when first asked: reverse lookups are rare beside forward ones."""
        named = self._named
        if named is None:
            pairs: list[tuple[bytes, Holder]] = []
            for holder in self.addressed:
                if isinstance(holder, Machine):
                    if holder.dns:
                        pairs.append((holder.packed6, holder))
                        if holder.packed4 is not None:
                            pairs.append((holder.packed4, holder))
                elif not holder.interactive:
                    pairs.append((holder.ip6.packed, holder))
            pairs.extend((ip.packed, app) for app, ips in self.flycast.items() for ip in ips)
            named = AddressTable(pairs)
            object.__setattr__(self, "_named", named)
        return named

    @property
    def owners_made(self) -> bool:
        return self._owners is not None

    @property
    def named_made(self) -> bool:
        return self._named is not None


@dataclass(frozen=True, slots=True)
class Snapshot:
    networks: Mapping[str, NetworkIndex]  # a restored snapshot's are made as they are first asked for
    regions: Mapping[str, Region]
    machine_count: int
    peer_count: int
    app_count: int
    serial: int = 0  # the SOA serial: grows with every snapshot
    # Every network by name, as `networks[name].network`: what views and reverse zones read of
    # each, without making any network's index.
    defined: Mapping[str, Network] = field(default_factory=dict)

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
    """The entity refers to one that was already reported invalid (`waits_for`: which)."""

    def __init__(self, kind: str, name: str):
        super().__init__(f"{kind} {name}")
        self.waits_for = (kind, name)


class Missing(ValueError):
    """The entity refers to one the registry lacks (`waits_for`: which): the catalog tries it
    again when that one comes, not after every entity read."""

    def __init__(self, message: str, kind: str, name: str):
        super().__init__(message)
        self.waits_for = (kind, name)


@overload
def _text(raw: Mapping[str, Any], key: str, required: Literal[True] = True) -> str: ...


@overload
def _text(raw: Mapping[str, Any], key: str, required: bool) -> str | None: ...


def _text(raw: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value.__class__ is str:  # the usual case first: a million machines each ask several times
        return value
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
def _packed6(raw: Mapping[str, Any], key: str) -> bytes:
    return _packed(raw, key, socket.AF_INET6, "IPv6")


def _packed4(raw: Mapping[str, Any], key: str) -> bytes:
    return _packed(raw, key, socket.AF_INET, "IPv4")


def _packed(raw: Mapping[str, Any], key: str, family: int, what: str) -> bytes:
    value = raw.get(key)
    if value.__class__ is not str:  # the usual case is a text: _text only to word the others
        value = _text(raw, key)
    try:
        return socket.inet_pton(family, value)
    except OSError:
        raise ValueError(f"{key} {value!r} is not an {what} address") from None


def _ip6(raw: Mapping[str, Any], key: str) -> IPv6Address:
    return IPv6Address(_packed6(raw, key))


def _ip4(raw: Mapping[str, Any], key: str) -> IPv4Address:
    return IPv4Address(_packed4(raw, key))


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

    def apps_named(self, lname: str) -> Sequence[App]: ...  # the accepted apps of this name, one per network


def _known_network(refs: References, network: str, what: str = "") -> None:
    if network not in refs.networks:
        if network in refs.broken_networks:
            raise Dependent("networks", network)
        raise Missing(f"{what}unknown network '{network}'", "networks", network)


def parse_app(source: str, item: Mapping[str, Any], refs: References, key: Hashable = None) -> App:
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
        if target not in refs.networks:  # worded only when wrong: an address's text costs a microsecond
            _known_network(refs, target, f"flycast {ip}: ")
        if ip not in refs.networks[target].prefix6:
            raise ValueError(f"flycast {ip} is outside network {target}'s prefix {refs.networks[target].prefix6}")
        flycast.append(Flycast(ip, sys.intern(target)))
    return App(sys.intern(name), sys.intern(network), tuple(flycast), source, key, _services(item.get("services")))


def _services(entries: Any) -> tuple[Service, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ValueError("services must be a list of {name, port, protocol} mappings")
    services: list[Service] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ValueError(f"services entries must be mappings with 'name' and 'port', got {entry!r}")
        try:
            name = _text(entry, "name")
        except ValueError as exc:  # "missing 'name'" alone would read as the app's own name
            raise ValueError(f"service {dict(entry)!r}: {exc}") from None
        if not is_label(name) or len(name) > 62:  # "_" + name is a label too
            hint = " (give it without the leading '_')" if name.startswith("_") else ""
            raise ValueError(f"service name '{name}' is not a DNS label{hint}")
        port = entry.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"service {name}: port must be a number from 1 to 65535, not {port!r}")
        protocol = entry.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
            raise ValueError(f"service {name}: protocol must be tcp or udp, not {protocol!r}")
        service = Service(sys.intern(name.lower()), port, sys.intern(protocol.lower()))
        if (service.name, service.protocol) in seen:
            raise ValueError(f"service {name}/{service.protocol} is listed twice")
        seen.add((service.name, service.protocol))
        services.append(service)
    return tuple(services)


def _checks(raw: Any, shared: dict[Any, Any]) -> Mapping[str, str]:
    """A machine's checks, one mapping shared by every machine with equal ones (most are all passing)."""
    if not raw:
        if raw is None or isinstance(raw, Mapping):
            return NO_CHECKS
    if not isinstance(raw, Mapping):
        raise ValueError("checks must be a mapping of check name to passing, warning or critical")
    checks: dict[str, str] = {}
    for name, status in raw.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"check names must be non-empty strings, not {name!r}")
        if not isinstance(status, str) or status.lower() not in CHECK_STATUSES:
            raise ValueError(f"check '{name}' is {status!r}: must be passing, warning or critical")
        checks[name] = sys.intern(status.lower())
    return shared.setdefault(("checks", *sorted(checks.items())), checks)


def _app_in(named: Sequence[App], network: str) -> App | None:
    for app in named:
        if app.network == network:
            return app
    return None


def machine_app(item: Mapping[str, Any], refs: References) -> App:
    """The app a machine belongs to: its name in the machine's own `network`, or in the one
    network that has an app of that name."""
    app_name = _text(item, "app")
    assert app_name is not None
    lname = app_name.lower()
    network = _text(item, "network", required=False)
    named = refs.apps_named(lname)
    if network is None:
        if not named:
            if lname in refs.broken_apps:
                raise Dependent("apps", lname)
            raise Missing(f"unknown app '{app_name}'", "apps", lname)
        if len(named) > 1:
            raise ValueError(f"app '{app_name}' exists in {', '.join(sorted(a.network for a in named))}: add 'network'")
        return named[0]
    _known_network(refs, network)
    app = _app_in(named, network)
    if app is None:
        if lname in refs.broken_apps:
            raise Dependent("apps", lname)
        raise Missing(f"unknown app '{app_name}' in network {network}", "apps", lname)
    return app


def parse_machine(
    source: str, item: Mapping[str, Any], refs: References, shared: dict[Any, Any], key: Hashable = None
) -> Machine:
    """`shared` interns values many machines have in common (metadata mappings, ...).

    A million machines may be read in one load, so the usual case (every field a text) is
    looked at once per field, inline; anything else goes through the checks that word the
    problem, in the same order, so that the first problem found is the one reported."""
    get = item.get
    mid = get("id")
    if mid.__class__ is not str:
        mid = _text(item, "id")
    if not mid or len(mid) > 63 or mid.strip(_HEX):  # a match of [0-9a-f]{1,63}, without the regex's price
        raise ValueError(f"id '{mid}' must be lower-case hex (at most 63 digits)")
    app_name, network = get("app"), get("network")
    lname = app_name.lower() if app_name.__class__ is str else None
    named = refs.apps_named(lname) if lname is not None else ()
    app: App | None = None
    if network is None and len(named) == 1:  # machine_app's usual cases, inline
        app = named[0]
        qualified = False
    elif network.__class__ is str and network in refs.networks:
        app = _app_in(named, network)
        qualified = True
    if app is None:
        app, qualified = machine_app(item, refs), get("network") is not None
    region = get("region")
    code = refs.regions.get(region) if region.__class__ is str else None
    if code is None:
        region = (_text(item, "region") or "").lower()
        if region not in refs.regions:
            raise Missing(f"unknown region '{region}'", "regions", region)
        code = refs.regions[region]
    state = get("state")
    if state is None or state == STARTED:
        state = STARTED
    else:
        state = sys.intern((_text(item, "state", required=False) or STARTED).lower())
    given = get("process_group")
    if given is None:
        given = DEFAULT_PROCESS_GROUP
    group = _GROUPS_SEEN.get(given) if given.__class__ is str else None
    if group is None:
        group = _text(item, "process_group", required=False) or DEFAULT_PROCESS_GROUP
        if not is_label(group):
            raise ValueError(f"process_group '{group}' is not a DNS label")
        lgroup = sys.intern(group.lower())
        if len(_GROUPS_SEEN) < 4096:  # a few names, used by many machines: checked once each
            _GROUPS_SEEN[group] = lgroup
        group = lgroup
    ip6 = _packed6(item, "ip6")
    ip4 = _packed4(item, "ip4") if get("ip4") is not None else None
    metadata_raw = get("metadata") or _NO_METADATA
    # Read only, so one mapping serves every equal one. A reader that gives one object for equal
    # values (SQLite's) has it looked at once (`seen` keeps, by identity, each one a mapping was
    # made for); one that gives each its own (etcd's JSON, YAML) has it found by its items and
    # their types (`equal`: true, 1 and 1.0 are equal in Python, and read as "true", "1" and "1.0").
    seen = shared.get(_SEEN)
    if seen is None:
        seen = shared[_SEEN] = {}
        shared[_EQUAL] = {}
    known = seen.get(id(metadata_raw))
    if known is not None and known[0] is metadata_raw:
        metadata = known[1]
    else:
        if metadata_raw.__class__ is not dict and not isinstance(metadata_raw, Mapping):
            raise ValueError("metadata must be a mapping of strings")
        equal = shared[_EQUAL]
        try:
            items: tuple[Any, ...] | None = (*metadata_raw.items(), *map(type, metadata_raw.values()))
            metadata = equal.get(items)
        except TypeError:  # a value that is a list or a mapping: refused below
            items = metadata = None
        if metadata is None:
            metadata = {str(k): _scalar_text(v) for k, v in metadata_raw.items()}
            metadata = shared.setdefault(tuple(sorted(metadata.items())), metadata)
            if len(equal) >= 4096:  # a registry of many shapes: keep few
                equal.clear()
            equal[items] = metadata
            # Not when found by its items: a reader that shares objects gives a new one once per
            # shape, and one that gives each its own would fill `seen` for nothing.
            if len(seen) >= 1024:
                seen.clear()
            seen[id(metadata_raw)] = (metadata_raw, metadata)
    dns = get("dns", True)
    if dns is not True and dns is not False:
        raise ValueError("dns must be true or false")
    checks = get("checks")
    checks = NO_CHECKS if checks is None else _checks(checks, shared)
    if key == mid:
        key = mid  # a store that keys a machine by its id: one text for both
    return Machine(
        mid,
        app.name,
        app.network,  # the network's own name: both interned
        code.code,
        ip6,
        state,
        group,
        ip4,
        metadata,
        dns,
        source,
        key,
        qualified,
        checks,
    )


def parse_peer(source: str, item: Mapping[str, Any], refs: References, key: Hashable = None) -> Peer:
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
            raise Missing(f"unknown region '{region}'", "regions", region)
        region = refs.regions[region].code
    return Peer(name, refs.networks[network].name, ip6, region, source, key)


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
