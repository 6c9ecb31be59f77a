"""The catalog: every entity of a registry, checked against the others and indexed per network.

A backend hands the catalog raw entities, each under a key of its own (an entity of a file, an
etcd key, a table row): all of them to `load`, or what changed to `apply`. The catalog keeps what
it accepted, the problems of what it did not, and one `NetworkIndex` per network. A change
rebuilds only the indexes of the networks it touches; every other network keeps its index object,
so that the server keeps what it rendered from it. Networks and regions are what the rest refers
to: a change to one of them rebuilds everything.

One set of rules, two ways of using them:
- strict (the files backend, `check`, `registry import`): a registry with any problem is not
  served at all (`build_snapshot` raises a RegistryError listing them);
- lenient (etcd, SQLite, where writers change one entity at a time): an entity with a problem is
  left out and reported, the rest is served, and it is tried again after every change, so that
  machines written before their app come in with it.

Among entities that clash (a machine id twice, an address used twice) the one the catalog had
first keeps its place, so an established machine is never displaced by a newcomer's mistake.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from internal_dns.registry.kinds import EXPORT_ORDER, KINDS, SECTIONS, Kind
from internal_dns.registry.model import (
    App,
    AppIndex,
    Dependent,
    Document,
    Flycast,
    Machine,
    Network,
    NetworkIndex,
    Peer,
    Region,
    RegistryError,
    Snapshot,
    describe,
    overlapping,
    parse_app,
    parse_machine,
    parse_network,
    parse_peer,
    parse_region,
    release_gradually,
)

Key = Hashable
INVALID = "invalid"  # the kind of an entry that is not an entity at all (its data: the message)
_ORDER = {kind: i for i, kind in enumerate((INVALID, *SECTIONS))}
_STRUCTURAL = {k.section for k in KINDS if k.structural}  # regions, networks
_MEMBERS = tuple(k.section for k in KINDS if not k.structural)  # apps, machines, peers: a network's
# What a registry file's document must be, as the catalog and the registry command's import say
DOCUMENT_SHAPE = f"must be a mapping with {'/'.join(k.section for k in EXPORT_ORDER)}"


@dataclass(frozen=True, slots=True)
class RawEntity:
    key: Key
    source: str  # for messages: a file's path, an etcd key, a table and row
    kind: str  # a kind's section (kinds.py): regions, networks, apps, machines, peers (or INVALID)
    data: Any  # the mapping as read


@dataclass(slots=True)
class _Members:
    """The accepted entities of one network, in the order the catalog accepted them."""

    apps: dict[str, tuple[Key, App]] = field(default_factory=dict)  # lower-cased name
    machines: dict[str, tuple[Key, Machine]] = field(default_factory=dict)  # id
    peers: dict[str, tuple[Key, Peer]] = field(default_factory=dict)  # lower-cased name
    flycast_in: dict[Key, tuple[App, tuple[Flycast, ...]]] = field(default_factory=dict)  # apps with addresses here


def entities_of(document: Document) -> list[RawEntity]:
    """A document's entities, keyed (source, kind, identity, n): an edit of one entity of a file
    changes one key; a name given twice in one file gets two keys (and a duplicate problem)."""
    out: list[RawEntity] = []
    source, data = document.source, document.data
    if data is None:
        return out
    if not isinstance(data, Mapping):
        return [
            RawEntity(
                (source, INVALID, 0),
                source,
                INVALID,
                f"{source}: document: {DOCUMENT_SHAPE}",
            )
        ]
    seen: dict[tuple[str, Any], int] = {}
    for entity_kind in KINDS:
        kind = entity_kind.section
        items = data.get(kind)
        if items is None:
            continue
        if not isinstance(items, list):
            out.append(RawEntity((source, INVALID, kind), source, INVALID, f"{source}: {kind}: must be a list"))
            continue
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                out.append(
                    RawEntity(
                        (source, INVALID, kind, i), source, INVALID, f"{source}: {kind}: entries must be mappings, got {item!r}"
                    )
                )
                continue
            identity = _identity(entity_kind, item)
            n = seen.get((kind, identity), 0)
            seen[(kind, identity)] = n + 1
            out.append(RawEntity((source, kind, identity, n), source, kind, item))
    return out


def _identity(kind: Kind, item: Mapping[str, Any]) -> tuple[str | None, ...]:
    """The values of the kind's identity fields as given (an app's network too: one name may live
    in several networks of one file); a field that is not a text or a number is None."""
    return tuple(str(value) if isinstance(value := item.get(name), (str, int)) else None for name in kind.identity)


def build_snapshot(documents: Iterable[Document]) -> Snapshot:
    """Validate and index a whole registry, strictly: raises RegistryError naming every fault."""
    catalog = Catalog()
    snapshot = catalog.load(e for doc in documents for e in entities_of(doc))
    if catalog.problem_lines():
        raise RegistryError(catalog.problem_lines())
    return snapshot


class Catalog:
    """The registry's entities and indexes; not thread-safe: one backend thread owns it."""

    def __init__(self) -> None:
        self.raw: dict[Key, RawEntity] = {}
        self._reset()

    def _reset(self) -> None:
        self.problems: dict[Key, list[str]] = {}  # entities left out, and why
        self.silent: set[Key] = set()  # left out for referring to an entity that was left out
        self.network_problems: dict[str, dict[Key, list[str]]] = {}  # found indexing a network
        self.accepted: dict[Key, tuple[str, Any]] = {}  # key -> (kind, identity)
        self.regions: dict[str, Region] = {}
        self.networks: dict[str, Network] = {}
        self.network_keys: dict[str, Key] = {}
        self.broken_networks: dict[str, int] = {}  # names of networks left out (a count of each)
        self.broken_apps: dict[str, int] = {}  # lower-cased names of apps left out
        self.broken_app_keys: dict[Key, str] = {}
        self.apps: dict[tuple[str, str], tuple[Key, App]] = {}
        self._app_networks: dict[str, set[str]] = {}
        self.machines: dict[str, tuple[Key, Machine]] = {}
        self.unqualified: dict[str, set[Key]] = {}  # app name -> machines that gave no network
        self.peers: dict[tuple[str, str], tuple[Key, Peer]] = {}
        self.members: dict[str, _Members] = {}
        self.index: dict[str, NetworkIndex] = {}
        self.shared: dict[Any, Any] = {}  # values many machines share (metadata)

    # --- what parsers may refer to (model.References) ----------------------------------------
    def app_networks(self, lname: str) -> Collection[str]:
        return self._app_networks.get(lname, ())

    def app(self, network: str, lname: str) -> App:
        return self.apps[(network, lname)][1]

    def keys(self) -> Iterable[Key]:
        """The key of every entity held, accepted or left out."""
        return self.raw.keys()

    # --- loading and changing -----------------------------------------------------------------
    def load(self, entities: Iterable[RawEntity]) -> Snapshot:
        """Everything anew from these entities."""
        old = self.raw
        self.raw = {e.key: e for e in entities}
        release_gradually(old)
        self._rebuild()
        return self.snapshot()

    def apply(self, upserts: Iterable[RawEntity] = (), deletes: Iterable[Key] = ()) -> Snapshot:
        """A change: entities added or replaced, and keys removed. Rebuilds only what it touches."""
        upserts, deletes = list(upserts), [k for k in deletes if k in self.raw]
        changed: list[tuple[RawEntity | None, RawEntity | None]] = [(self.raw.get(e.key), e) for e in upserts]
        changed += [(self.raw[k], None) for k in deletes]
        changed = [
            (old, new) for old, new in changed if old is None or new is None or old.data != new.data or old.kind != new.kind
        ]
        if not changed:
            return self.snapshot()
        for k in deletes:
            del self.raw[k]
        for e in upserts:
            self.raw[e.key] = e
        if any(r.kind in _STRUCTURAL for pair in changed for r in pair if r is not None):
            self._rebuild()
            return self.snapshot()
        affected: set[str] = set()
        queue: dict[Key, None] = {}
        for old, new in changed:
            either = old or new
            assert either is not None  # a change has an old side, a new side or both
            key = either.key
            self._withdraw(key, affected, queue)
            if new is not None and new.kind == INVALID:  # not an entity: its message is all there is
                self.problems[key] = [new.data]
            elif new is not None:
                queue[key] = None
        # Whatever was left out may fit now (its app has come, a clashing address has gone).
        for key in [k for k in (*self.problems, *self.silent) if self.raw[k].kind in _MEMBERS]:
            self._withdraw(key, affected, queue)
            queue[key] = None
        self._admit_all([self.raw[k] for k in queue if k in self.raw], affected)
        for name in affected:
            if name in self.networks:
                self._index_network(name)
        return self.snapshot()

    def _rebuild(self) -> None:
        old_state = (self.accepted, self.apps, self.machines, self.peers, self.members, self.index)
        self._reset()
        for container in old_state:
            release_gradually(container)
        ordered = sorted(self.raw.values(), key=lambda e: _ORDER[e.kind])  # stable: kept in order
        for e in ordered:
            if e.kind == INVALID:
                self.problems[e.key] = [e.data]
            elif e.kind == "regions":
                self._admit_region(e)
            elif e.kind == "networks":
                self._admit_network(e)
        clashes = overlapping(list(self.networks.values()))
        for later, earlier, key in clashes:
            line = (
                f"{later.source}: network {later.name}: {key} {getattr(later, key)}"
                f" overlaps network {earlier.name}'s {key} {getattr(earlier, key)}"
            )
            self.problems.setdefault(self.network_keys[later.name], []).append(line)
        for name in {later.name for later, _, _ in clashes}:
            del self.networks[name]  # an address in two networks has no one view (SPEC §2)
            self.broken_networks[name] = self.broken_networks.get(name, 0) + 1
            self.accepted.pop(self.network_keys.pop(name), None)
        for name in self.networks:
            self.members[name] = _Members()
        self._admit_all([e for e in ordered if e.kind in _MEMBERS], set())
        for name in self.networks:
            self._index_network(name)

    # --- admitting and withdrawing one entity --------------------------------------------------
    def _admit_region(self, e: RawEntity) -> None:
        try:
            region = parse_region(e.data)
        except ValueError as exc:
            self.problems[e.key] = [f"{e.source}: {describe('regions', e.data)}: {exc}"]
            return
        known = self.regions.get(region.code)
        if known is None:
            self.regions[region.code] = region
        elif (known.latitude, known.longitude) != (region.latitude, region.longitude):
            self.problems[e.key] = [f"{e.source}: region {region.code}: defined twice with different coordinates"]
            return
        elif region.name and not known.name:
            # An org file may repeat a region without its city (SPEC §1's example): same region.
            self.regions[region.code] = region
        self.accepted[e.key] = ("regions", region.code)

    def _admit_network(self, e: RawEntity) -> None:
        try:
            network = parse_network(e.source, e.data)
        except ValueError as exc:
            self.problems[e.key] = [f"{e.source}: {describe('networks', e.data)}: {exc}"]
            if isinstance(e.data.get("name"), str):
                self.broken_networks[e.data["name"]] = self.broken_networks.get(e.data["name"], 0) + 1
            return
        if network.name in self.networks:
            first = self.networks[network.name].source
            self.problems[e.key] = [f"{e.source}: network {network.name}: duplicate network (first in {first})"]
            return
        self.networks[network.name] = network
        self.network_keys[network.name] = e.key
        self.accepted[e.key] = ("networks", network.name)

    def _admit_all(self, entities: list[RawEntity], affected: set[str]) -> None:
        """Apps first (machines refer to them), then machines and peers; a newly admitted app
        sends the machines that named it without a network back to be placed again."""
        apps = [e for e in entities if e.kind == "apps"]
        rest = {e.key: e for e in entities if e.kind in ("machines", "peers")}
        for e in apps:
            requeue: dict[Key, None] = {}
            self._admit_app(e, affected, requeue)
            for key in requeue:
                rest.setdefault(key, self.raw[key])
        for e in sorted(rest.values(), key=lambda e: _ORDER[e.kind]):
            if e.kind == "machines":
                self._admit_machine(e, affected)
            else:
                self._admit_peer(e, affected)

    def _left_out(self, e: RawEntity, exc: Exception) -> None:
        if isinstance(exc, Dependent):
            self.silent.add(e.key)
        else:
            self.problems[e.key] = [f"{e.source}: {describe(e.kind, e.data)}: {exc}"]

    def _admit_app(self, e: RawEntity, affected: set[str], requeue: dict[Key, None]) -> None:
        try:
            app = parse_app(e.source, e.data, self)
        except (ValueError, Dependent) as exc:
            self._left_out(e, exc)
            if isinstance(e.data.get("name"), str):  # its machines are left out without a word
                lname = e.data["name"].lower()
                self.broken_apps[lname] = self.broken_apps.get(lname, 0) + 1
                self.broken_app_keys[e.key] = lname
            return
        lname = app.name.lower()
        identity = (app.network, lname)
        if identity in self.apps:
            first = self.apps[identity][1].source
            self.problems[e.key] = [f"{e.source}: app {app.name}: duplicate app in network {app.network} (first in {first})"]
            return
        self.apps[identity] = (e.key, app)
        self.accepted[e.key] = ("apps", identity)
        self._app_networks.setdefault(lname, set()).add(app.network)
        self.members[app.network].apps[lname] = (e.key, app)
        affected.add(app.network)
        for target, addresses in _by_target(app.flycast).items():
            self.members[target].flycast_in[e.key] = (app, addresses)
            affected.add(target)
        self._unplace_unqualified(lname, affected, requeue)

    def _admit_machine(self, e: RawEntity, affected: set[str]) -> None:
        try:
            machine = parse_machine(e.source, e.data, self, self.shared)
        except (ValueError, Dependent) as exc:
            self._left_out(e, exc)
            return
        if machine.id in self.machines:
            first = self.machines[machine.id][1].source
            self.problems[e.key] = [f"{e.source}: machine {machine.id}: duplicate machine id (first in {first})"]
            return
        self.machines[machine.id] = (e.key, machine)
        self.accepted[e.key] = ("machines", machine.id)
        self.members[machine.network].machines[machine.id] = (e.key, machine)
        if e.data.get("network") is None:
            self.unqualified.setdefault(machine.app.lower(), set()).add(e.key)
        affected.add(machine.network)

    def _admit_peer(self, e: RawEntity, affected: set[str]) -> None:
        try:
            peer = parse_peer(e.source, e.data, self)
        except (ValueError, Dependent) as exc:
            self._left_out(e, exc)
            return
        identity = (peer.network, peer.name.lower())
        if identity in self.peers:
            first = self.peers[identity][1].source
            self.problems[e.key] = [f"{e.source}: peer {peer.name}: duplicate peer in network {peer.network} (first in {first})"]
            return
        self.peers[identity] = (e.key, peer)
        self.accepted[e.key] = ("peers", identity)
        self.members[peer.network].peers[identity[1]] = (e.key, peer)
        affected.add(peer.network)

    def _withdraw(self, key: Key, affected: set[str], requeue: dict[Key, None]) -> None:
        """Take an entity out (accepted or left out), noting the networks and entities it touched."""
        self.silent.discard(key)
        self.problems.pop(key, None)
        lname = self.broken_app_keys.pop(key, None)
        if lname is not None:
            self.broken_apps[lname] -= 1
            if not self.broken_apps[lname]:
                del self.broken_apps[lname]
        if key not in self.accepted:
            return
        kind, identity = self.accepted.pop(key)
        if kind == "apps":
            _, app = self.apps.pop(identity)
            network, lname = identity
            members = self.members[network]
            del members.apps[lname]
            affected.add(network)
            for target in _by_target(app.flycast):
                self.members[target].flycast_in.pop(key, None)
                affected.add(target)
            nets = self._app_networks[lname]
            nets.discard(network)
            if not nets:
                del self._app_networks[lname]
            for mkey, machine in list(members.machines.values()):  # they named this app
                if machine.app.lower() == lname:
                    self._withdraw(mkey, affected, requeue)
                    requeue[mkey] = None
            self._unplace_unqualified(lname, affected, requeue)
        elif kind == "machines":
            _, machine = self.machines.pop(identity)
            del self.members[machine.network].machines[identity]
            self.unqualified.get(machine.app.lower(), set()).discard(key)
            affected.add(machine.network)
        elif kind == "peers":
            del self.peers[identity]
            del self.members[identity[0]].peers[identity[1]]
            affected.add(identity[0])

    def _unplace_unqualified(self, lname: str, affected: set[str], requeue: dict[Key, None]) -> None:
        """Machines that named app `lname` without a network: where they belong may have changed."""
        for mkey in list(self.unqualified.get(lname, ())):
            self._withdraw(mkey, affected, requeue)
            requeue[mkey] = None

    # --- indexes --------------------------------------------------------------------------------
    def _index_network(self, name: str) -> None:
        index, problems = index_network(self.networks[name], self.members[name])
        self.index[name] = index
        if problems:
            self.network_problems[name] = problems
        else:
            self.network_problems.pop(name, None)

    def snapshot(self) -> Snapshot:
        networks = {name: self.index[name] for name in self.networks}
        return Snapshot(
            networks=networks,
            regions=dict(self.regions),
            machine_count=sum(i.machine_count for i in networks.values()),
            peer_count=sum(i.peer_count for i in networks.values()),
            app_count=sum(len(i.apps) for i in networks.values()),
        )

    def problem_lines(self) -> list[str]:
        """Every problem, the entities' by kind in the order they were found, then the networks'.

        Asked after every change: it costs the number of problems, never the registry's size.
        """
        lines = [line for key in sorted(self.problems, key=lambda k: _ORDER[self.raw[k].kind]) for line in self.problems[key]]
        for name in self.networks:
            for found in self.network_problems.get(name, {}).values():
                lines.extend(found)
        return lines


def _by_target(flycast: tuple[Flycast, ...]) -> dict[str, tuple[Flycast, ...]]:
    out: dict[str, list[Flycast]] = {}
    for fc in flycast:
        out.setdefault(fc.network, []).append(fc)
    return {target: tuple(fcs) for target, fcs in out.items()}


def index_network(net: Network, members: _Members) -> tuple[NetworkIndex, dict[Key, list[str]]]:
    """One network's index, and the problems of the members it leaves out: an address outside
    the network's prefix, or one already used (the first user keeps it)."""
    problems: dict[Key, list[str]] = {}
    owner: dict[IPv4Address | IPv6Address, str] = {}
    for key in ("dns6", "dns4"):  # a network's resolver address belongs to no machine
        if (ip := getattr(net, key)) is not None:
            owner[ip] = f"network {net.name} ({key})"

    def fault(key: Key, source: str, who: str, reason: str) -> None:
        problems.setdefault(key, []).append(f"{source}: {who}: {reason}")

    def claim(ips: list[IPv4Address | IPv6Address], who: str, key: Key, source: str) -> bool:
        taken = [ip for ip in ips if ip in owner]
        for ip in taken:
            fault(key, source, who, f"address {ip} is already used by {owner[ip]}")
        if taken:
            return False
        for ip in ips:
            owner[ip] = who
        return True

    flycast: dict[str, list[IPv6Address]] = {lname: [] for lname in members.apps}  # own apps exist under .flycast
    for app_key, (app, addresses) in members.flycast_in.items():
        for fc in addresses:
            if claim([fc.ip], f"app {app.name} (flycast)", app_key, app.source):
                flycast.setdefault(app.name.lower(), []).append(fc.ip)

    machines: list[Machine] = []
    for mkey, m in members.machines.values():
        who = f"machine {m.id}"
        ok = True
        if m.ip6 not in net.prefix6:
            fault(mkey, m.source, who, f"ip6 {m.ip6} is outside network {net.name}'s prefix {net.prefix6}")
            ok = False
        if m.ip4 is not None:
            if net.prefix4 is None:
                fault(mkey, m.source, who, f"ip4 {m.ip4} given but network {net.name} has no prefix4")
                ok = False
            elif m.ip4 not in net.prefix4:
                fault(mkey, m.source, who, f"ip4 {m.ip4} is outside network {net.name}'s prefix {net.prefix4}")
                ok = False
        if claim([ip for ip in (m.ip4, m.ip6) if ip is not None], who, mkey, m.source) and ok:
            machines.append(m)

    peers: list[Peer] = []
    for pkey, p in members.peers.values():
        who = f"peer {p.name}"
        ok = p.ip6 in net.prefix6
        if not ok:
            fault(pkey, p.source, who, f"ip6 {p.ip6} is outside network {net.name}'s prefix {net.prefix6}")
        if claim([p.ip6], who, pkey, p.source) and ok:
            peers.append(p)

    return _index(net, members, machines, peers, flycast), problems


def _index(
    net: Network, members: _Members, machines: list[Machine], peers: list[Peer], flycast: dict[str, list[IPv6Address]]
) -> NetworkIndex:
    by_app: dict[str, list[Machine]] = {lname: [] for lname in members.apps}
    owners: dict[IPv4Address | IPv6Address, str | None] = {}
    for m in machines:
        owners[m.ip6] = m.region
        if m.ip4 is not None:
            owners[m.ip4] = m.region
        if m.dns:
            by_app[m.app.lower()].append(m)
    for p in peers:
        owners[p.ip6] = p.region
    apps: dict[str, AppIndex] = {}
    for lname, (_, app) in members.apps.items():
        ms = tuple(sorted(by_app[lname], key=lambda m: m.id))
        apps[lname] = AppIndex(app, ms, tuple(m for m in ms if m.started), {m.id: m for m in ms})
    visible = {p.name.lower(): p for p in peers if not p.interactive}
    every = tuple(sorted((m for a in apps.values() for m in a.machines), key=lambda m: m.id))
    return NetworkIndex(
        network=net,
        apps=apps,
        app_names=tuple(sorted(a.app.name for a in apps.values())),
        peers=visible,
        peer_names=tuple(sorted(p.name for p in visible.values())),
        machines=every,
        started=tuple(m for m in every if m.started),
        flycast={k: tuple(sorted(v)) for k, v in flycast.items()},  # several apps of one name may add to a set
        owners=owners,
        machine_count=len(machines),
        peer_count=len(peers),
    )
