"""The catalog: every entity of a registry, checked against the others and indexed per network.

A backend hands the catalog raw entities, each under a key of its own (an entity of a file, an
etcd key, a table row): all of them to `load`, or what changed to `apply`, as an iterable that
is read once, so that a million entities as read never need to be held at once. The catalog keeps
the parsed form of what it accepted (never the mappings as read: they cost twice the rest), the
mappings of what it left out (few) and of regions and networks (few), the problems, and one
`NetworkIndex` per network. A change rebuilds only the indexes of the networks it touches; every
other network keeps its index object, so that the server keeps what it rendered from it. That
holds for networks and regions too: a changed network re-indexes itself (and the apps with Flycast
addresses on it), a removed one sends its members back to wait, a removed region the members in
it; an accepted entity sent back is written out again from its parsed form (`as_read`).

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

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from itertools import chain
from typing import Any

from internal_dns.registry.kinds import EXPORT_ORDER, KINDS, SECTIONS, Kind
from internal_dns.registry.model import (
    NO_CHECKS,
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
    Service,
    Snapshot,
    describe,
    machine_id,
    overlapping,
    parse_app,
    parse_machine,
    parse_network,
    parse_peer,
    parse_region,
)

Key = Hashable
INVALID = "invalid"  # the kind of an entry that is not an entity at all (its data: the message)
_ORDER = {kind: i for i, kind in enumerate((INVALID, *SECTIONS))}
STRUCTURAL = {k.section for k in KINDS if k.structural}  # regions, networks
_MEMBERS = tuple(k.section for k in KINDS if not k.structural)  # apps, machines, peers: a network's
# What a registry file's document must be, as the catalog and the registry command's import say
DOCUMENT_SHAPE = f"must be a mapping with {'/'.join(k.section for k in EXPORT_ORDER)}"


@dataclass(slots=True)  # not frozen: a load makes a million, and a frozen class's __init__ costs twice
class RawEntity:
    key: Key
    source: str  # for messages: a file's path, an etcd key, a table and row
    kind: str  # a kind's section (kinds.py): regions, networks, apps, machines, peers (or INVALID)
    data: Any  # the mapping as read


@dataclass(slots=True)
class _Members:
    """The accepted entities of one network, in the order the catalog accepted them."""

    apps: dict[str, App] = field(default_factory=dict)  # lower-cased name
    machines: dict[str, Machine] = field(default_factory=dict)  # id
    peers: dict[str, Peer] = field(default_factory=dict)  # lower-cased name
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


Member = App | Machine | Peer


def as_read(kind: str, entity: Member, source: str) -> RawEntity:
    """An accepted entity written out as a mapping that parses back to an equal entity."""
    data: dict[str, Any]
    if isinstance(entity, Machine):
        data = {
            "id": entity.id,
            "app": entity.app,
            "region": entity.region,
            "state": entity.state,
            "process_group": entity.process_group,
            "ip6": str(entity.ip6),
            "metadata": entity.metadata,
            "dns": entity.dns,
        }
        if entity.qualified:
            data["network"] = entity.network
        if entity.packed4 is not None:
            data["ip4"] = str(entity.ip4)
        if entity.checks:
            data["checks"] = dict(entity.checks)
    elif isinstance(entity, App):
        data = {"name": entity.name, "network": entity.network}
        if entity.flycast:
            data["flycast"] = [{"ip": str(fc.ip), "network": fc.network} for fc in entity.flycast]
        if entity.services:
            data["services"] = [{"name": s.name, "port": s.port, "protocol": s.protocol} for s in entity.services]
    else:
        data = {"name": entity.name, "network": entity.network, "ip6": str(entity.ip6)}
        if entity.region is not None:
            data["region"] = entity.region
    return RawEntity(entity.key, source, kind, data)


def _kind_of(entity: Member) -> str:
    return "machines" if isinstance(entity, Machine) else "apps" if isinstance(entity, App) else "peers"


SourceOf = Callable[[str, Key], str]  # (kind, key) -> the source a store's reader gives that entity


class Catalog:
    """The registry's entities and indexes; not thread-safe: one backend thread owns it.

    A store whose sources follow from its keys (a table and row, an etcd key) passes `source_of`:
    then the entities it accepts hold no source of their own (a text per machine otherwise) and
    messages ask `source()`. A key that is a machine's id is found through `machines`, not kept
    in `entities` as well.
    """

    def __init__(self, source_of: SourceOf | None = None) -> None:
        self.source_of = source_of
        self.structure: dict[Key, RawEntity] = {}  # regions and networks as read, in arrival order
        self.pending: dict[Key, RawEntity] = {}  # members left out (and INVALID entries), as read
        self.problems: dict[Key, list[str]] = {}  # entities left out, and why
        self.silent: set[Key] = set()  # left out for referring to an entity that was left out
        self.network_problems: dict[str, dict[Key, list[str]]] = {}  # found indexing a network
        self.entities: dict[Key, Member] = {}  # accepted apps, machines and peers
        self.regions: dict[str, Region] = {}
        self.region_keys: set[Key] = set()  # the region entries accepted
        self.networks: dict[str, Network] = {}
        self._handed: tuple[dict[str, Network], dict[str, Region]] = ({}, {})  # the last snapshot's definitions
        self.network_keys: dict[str, Key] = {}
        self.broken_networks: dict[str, int] = {}  # names of networks left out (a count of each)
        self.broken_apps: dict[str, int] = {}  # lower-cased names of apps left out
        self.broken_app_keys: dict[Key, str] = {}
        self.apps: dict[tuple[str, str], App] = {}
        # lower-cased app name -> the apps of that name, one per network: a machine finds its app
        # in one lookup (a tuple: a set per app name costs 200 bytes)
        self._named: dict[str, tuple[App, ...]] = {}
        self.machines: dict[str, Machine] = {}
        self.peers: dict[tuple[str, str], Peer] = {}
        self.members: dict[str, _Members] = {}
        self.index: dict[str, NetworkIndex] = {}
        self.shared: dict[Any, Any] = {}  # values many machines share (metadata)
        self._parsed: dict[Key, tuple[RawEntity, Region | Network | str]] = {}  # regions and networks
        # (kind, name) -> members left out for lacking it: tried again when it comes
        self._waiting: dict[tuple[str, str], set[Key]] = {}
        self._unindexed: list[str] = []  # networks load_first left for index_rest

    # --- what parsers may refer to (model.References) ----------------------------------------
    def apps_named(self, lname: str) -> Sequence[App]:
        return self._named.get(lname, ())

    def keys(self) -> Iterable[Key]:
        """The key of every entity held, accepted or left out."""
        return chain(self.structure, self.pending, self.entities, (m.key for m in self.machines.values() if m.key == m.id))

    def source(self, kind: str, entity: Member) -> str:
        """Where an accepted entity was read from, for messages."""
        if entity.source or self.source_of is None:
            return entity.source
        return self.source_of(kind, entity.key)

    def sources(self) -> Iterator[tuple[Key, str]]:
        """Every key held (accepted or left out) with where its entity was read from: what
        `source_of_key` says of each, for all of them at once (a changed file's scan asks it of a
        million machines)."""
        for key, e in chain(self.structure.items(), self.pending.items()):
            yield key, e.source
        for key, entity in self.entities.items():
            yield key, self.source(_kind_of(entity), entity)
        source_of = self.source_of
        for m in self.machines.values():
            if m.key == m.id:
                yield m.key, m.source if source_of is None else source_of("machines", m.key)

    def source_of_key(self, key: Key) -> str | None:
        """Where the entity held under this key (accepted or left out) was read from, if one is
        (a machine keyed by its id, the usual case, looked for first)."""
        machine = self._machine(key)
        if machine is not None:
            return self.source("machines", machine)
        e = self.pending.get(key) or self.structure.get(key)
        if e is not None:
            return e.source
        held = self.entities.get(key)
        return None if held is None else self.source(_kind_of(held), held)

    def _held(self, key: Key) -> Member | None:
        """The accepted member under this key."""
        machine = self._machine(key)
        return machine if machine is not None else self.entities.get(key)

    def _machine(self, key: Key) -> Machine | None:
        """The accepted machine keyed by this key (its id, in a store that keys machines so)."""
        if key.__class__ is str:
            machine = self.machines.get(key)
            if machine is not None and machine.key == key:
                return machine
        return None

    def _kind(self, key: Key) -> str:
        held = self.structure.get(key) or self.pending.get(key)
        if held is not None:
            return held.kind
        entity = self._held(key)
        assert entity is not None
        return _kind_of(entity)

    # --- loading and changing -----------------------------------------------------------------
    def load(self, entities: Iterable[RawEntity]) -> Snapshot:
        """Everything anew from these entities: what is held and not among them goes."""
        return self._change(entities, (), everything=True)

    def load_first(self, entities: Iterable[RawEntity], index_later_from: int) -> tuple[Snapshot, bool]:
        """As `load`; and when it fills an empty catalog with at least `index_later_from`
        machines, its networks are not indexed yet (a second or two at a million machines): the
        snapshot makes each network's index when first asked for, from its members, and True
        says so. `index_rest()` then indexes them here; nothing may change the catalog until the
        snapshot it returns has replaced this one where this one is read."""
        snapshot = self._change(entities, (), everything=True, index_later_from=index_later_from)
        return snapshot, bool(self._unindexed)

    def index_rest(self) -> Snapshot:
        """The networks `load_first` left unindexed, indexed; the whole snapshot."""
        names, self._unindexed = self._unindexed, []
        for name in names:
            if name in self.networks:
                self._index_network(name)
        return self.snapshot()

    def apply(self, upserts: Iterable[RawEntity] = (), deletes: Iterable[Key] = ()) -> Snapshot:
        """A change: entities added or replaced, and keys removed. Rebuilds only what it touches."""
        return self._change(upserts, deletes, everything=False)

    def _change(
        self, upserts: Iterable[RawEntity], deletes: Iterable[Key], everything: bool, index_later_from: int | None = None
    ) -> Snapshot:
        affected: set[str] = set()
        queue: dict[Key, None] = {}  # members to admit once everything has been read
        replaced: dict[str, dict[int, Machine]] = {}  # network -> id() of a machine -> its successor
        origins: dict[int, int] = {}  # id() of a successor -> id() of the machine it replaced first
        # a load into a catalog that holds something: what it holds and is not read again goes
        empty = not any(self.keys())
        seen: set[Key] | None = set() if everything and not empty else None
        unsettled = False  # regions or networks changed since they were last settled
        for key in deletes:
            unsettled |= self._remove(key, affected, queue)
        for e in upserts:
            if seen is not None:
                key = e.key
                if key.__class__ is str:  # a machine by its id: the catalog's own text, not the one just read
                    held = self.machines.get(key)  # (a million kept to the end would hold their pages)
                    if held is not None and held.key == key:
                        key = held.key
                seen.add(key)
            if e.kind in STRUCTURAL:
                old = self.structure.get(e.key)
                if old is not None and old.kind == e.kind and old.data == e.data:
                    continue
                if old is None:
                    self._remove(e.key, affected, queue)  # it may have been a member before
                self.structure[e.key] = e
                unsettled = True
                continue
            if unsettled:  # members are read against settled regions and networks...
                self._settle(affected, queue)
                unsettled = False
                self._admit_queue(queue, affected)  # ...and what waited for them goes first, in its order
            if not empty:  # a first load has nothing to compare with or take out
                if e.kind == "machines":
                    kept = self._replace_machine(e, replaced, origins)
                    if kept is not None:
                        if kept:
                            continue
                    elif self._unchanged(e):
                        continue
                elif self._unchanged(e):
                    continue
                if e.key in self.structure:
                    unsettled |= self._remove(e.key, affected, queue)
                    self._settle(affected, queue)
                    unsettled = False
                self._withdraw(e.key, affected, queue)
                queue.pop(e.key, None)
            self._admit(e, affected, queue)
        if seen is not None:
            for key in [k for k in self.keys() if k not in seen]:
                unsettled |= self._remove(key, affected, queue)
        if unsettled:
            self._settle(affected, queue)
        self._retry(queue, affected)
        if self._unindexed:  # a first load's networks whose indexing was not done (index_rest)
            affected.update(self._unindexed)
            self._unindexed = []
        if index_later_from is not None and empty and len(self.machines) >= index_later_from:
            self._unindexed = [name for name in self.networks if name in affected or name not in self.index]
            return self._unindexed_snapshot()
        for name in affected:
            if name in self.networks:
                self._index_network(name)
        for name, machines in replaced.items():
            if name not in affected and name in self.index:  # else indexed again from its members
                self.index[name] = self.index[name].replacing(machines)
        return self.snapshot()

    def _replace_machine(self, e: RawEntity, replaced: dict[str, dict[int, Machine]], origins: dict[int, int]) -> bool | None:
        """A machine read again: True when it is the one held, or has taken its place in the
        network's index without indexing the network again (only what the index does not check
        changed: checks, state, region, metadata, process group); False when it changed more;
        None when it is not an accepted machine (the ordinary path decides)."""
        old = self._held(e.key)
        if not isinstance(old, Machine) or self.machines.get(old.id) is not old or e.key in self.pending:
            return None
        try:
            new = self._parse(e)
        except (ValueError, Dependent, KeyError):
            return False
        if new == old:
            return True
        if not (
            isinstance(new, Machine)
            and (new.id, new.app, new.network, new.packed6, new.packed4, new.dns, new.key)
            == (old.id, old.app, old.network, old.packed6, old.packed4, old.dns, old.key)
        ):
            return False
        problems = self.network_problems.get(old.network)
        if problems is not None and old.key in problems:  # the index left it out: let it decide again
            return False
        members = self.members[old.network]
        self.machines[old.id] = members.machines[old.id] = new
        if old.key in self.entities:
            self.entities[old.key] = new
        # Replaced twice in one change: the index holds the first, so the key stays the first's.
        # (each id() in `origins` is of a successor `replaced` still holds: none is reused meanwhile)
        first = origins.pop(id(old), id(old))
        replaced.setdefault(old.network, {})[first] = new
        origins[id(new)] = first
        return True

    def _unchanged(self, e: RawEntity) -> bool:
        """Whether an entity read again is the one held (a file re-read, a value written again)."""
        held = self.pending.get(e.key)
        if held is not None:
            return held.kind == e.kind and held.data == e.data
        entity = self._held(e.key)
        if entity is None or _kind_of(entity) != e.kind:
            return False
        try:
            again = self._parse(e)
        except (ValueError, Dependent, KeyError):
            return False
        return entity == again

    def _remove(self, key: Key, affected: set[str], queue: dict[Key, None]) -> bool:
        """A key gone from the store; whether regions or networks need settling again."""
        if self.structure.pop(key, None) is not None:
            self.problems.pop(key, None)
            return True
        self._withdraw(key, affected, queue)
        self.pending.pop(key, None)
        self.problems.pop(key, None)
        self.silent.discard(key)
        queue.pop(key, None)
        return False

    # --- regions and networks -------------------------------------------------------------------
    def _settle(self, affected: set[str], queue: dict[Key, None]) -> None:
        """Regions and networks again from their entries (a few thousand at most); what changed
        is passed on to the members that refer to it, and nothing else is touched."""
        for key in self.structure:
            self.problems.pop(key, None)
        regions: dict[str, Region] = {}
        region_keys: set[Key] = set()
        networks: dict[str, Network] = {}
        network_keys: dict[str, Key] = {}
        broken: dict[str, int] = {}
        parsed: dict[Key, tuple[RawEntity, Region | Network | str]] = {}
        for key, e in self.structure.items():
            known = self._parsed.get(key)
            if known is None or known[0] is not e:  # parsed once per entry as read
                known = (e, self._parse_structure(e))
            parsed[key] = known
            if e.kind == "regions":
                self._admit_region(e, known[1], regions, region_keys)
            else:
                self._admit_network(e, known[1], networks, network_keys, broken)
        self._parsed = parsed
        clashes = overlapping(list(networks.values()))
        for later, earlier, field_name in clashes:
            line = (
                f"{later.source}: network {later.name}: {field_name} {getattr(later, field_name)}"
                f" overlaps network {earlier.name}'s {field_name} {getattr(earlier, field_name)}"
            )
            self.problems.setdefault(network_keys[later.name], []).append(line)
        for name in {later.name for later, _, _ in clashes}:
            del networks[name]  # an address in two networks has no one view (SPEC §2)
            broken[name] = broken.get(name, 0) + 1
            network_keys.pop(name)

        gone_regions = self.regions.keys() - regions.keys()
        for code in regions.keys() - self.regions.keys():
            self._wake(("regions", code), queue)
        for name in networks.keys() - self.networks.keys():
            self._wake(("networks", name), queue)
        gone = [name for name in self.networks if name not in networks]
        changed = [name for name, net in networks.items() if name in self.networks and self.networks[name] != net]
        self.regions, self.region_keys = regions, region_keys
        self.network_keys, self.broken_networks = network_keys, broken
        for name in gone:
            members = self.members[name]
            held: list[Member] = [*members.apps.values(), *members.machines.values(), *members.peers.values()]
            for entity in held:
                self._withdraw(entity.key, affected, queue)
                queue[entity.key] = None
            for key in list(members.flycast_in):  # other networks' apps with addresses on it
                self._withdraw(key, affected, queue)
                queue[key] = None
            del self.networks[name]
            del self.members[name]
            self.index.pop(name, None)
            self.network_problems.pop(name, None)
        for name, net in networks.items():
            if name not in self.networks:
                self.members[name] = _Members()
            self.networks[name] = net
        for name in [*changed, *(n for n in networks if n not in self.index)]:
            affected.add(name)
        for name in changed:  # an app's Flycast address must lie in the network's prefix
            for key in list(self.members[name].flycast_in):
                self._withdraw(key, affected, queue)
                queue[key] = None
        if gone_regions:  # rare: a region taken out sends back what is in it
            located: list[Machine | Peer] = [*self.machines.values(), *self.peers.values()]
            for entity in located:
                if entity.region in gone_regions:
                    self._withdraw(entity.key, affected, queue)
                    queue[entity.key] = None
        # the same names in the order they were read: a network re-read keeps its place
        self.networks = {name: self.networks[name] for name in networks}

    @staticmethod
    def _parse_structure(e: RawEntity) -> Region | Network | str:
        """The region or network, or the line saying why it is not one."""
        try:
            return parse_region(e.data) if e.kind == "regions" else parse_network(e.source, e.data)
        except ValueError as exc:
            return f"{e.source}: {describe(e.kind, e.data)}: {exc}"

    def _admit_region(self, e: RawEntity, parsed: Region | Network | str, regions: dict[str, Region], keys: set[Key]) -> None:
        if not isinstance(parsed, Region):
            self.problems[e.key] = [str(parsed)]
            return
        region = parsed
        known = regions.get(region.code)
        if known is None:
            regions[region.code] = region
        elif (known.latitude, known.longitude) != (region.latitude, region.longitude):
            self.problems[e.key] = [f"{e.source}: region {region.code}: defined twice with different coordinates"]
            return
        elif region.name and not known.name:
            # An org file may repeat a region without its city (SPEC §1's example): same region.
            regions[region.code] = region
        keys.add(e.key)

    def _admit_network(
        self,
        e: RawEntity,
        parsed: Region | Network | str,
        networks: dict[str, Network],
        keys: dict[str, Key],
        broken: dict[str, int],
    ) -> None:
        if not isinstance(parsed, Network):
            self.problems[e.key] = [str(parsed)]
            if isinstance(e.data.get("name"), str):
                broken[e.data["name"]] = broken.get(e.data["name"], 0) + 1
            return
        network = parsed
        if network.name in networks:
            first = networks[network.name].source
            self.problems[e.key] = [f"{e.source}: network {network.name}: duplicate network (first in {first})"]
            return
        networks[network.name] = network
        keys[network.name] = e.key

    # --- admitting and withdrawing one member ---------------------------------------------------
    def _parse(self, e: RawEntity) -> Member:
        source = e.source if self.source_of is None else ""  # the store can say it again from the key
        if e.kind == "machines":
            return parse_machine(source, e.data, self, self.shared, e.key)
        if e.kind == "apps":
            return parse_app(source, e.data, self, e.key)
        return parse_peer(source, e.data, self, e.key)

    def _retry(self, queue: dict[Key, None], affected: set[str]) -> None:
        """Whatever was left out may fit now (its app has come, a clashing address has gone)."""
        self._waiting.clear()  # each says again what it waits for
        for key, e in self.pending.items():
            if e.kind != INVALID:
                queue[key] = None
        self._admit_queue(queue, affected)

    def _wake(self, waited_for: tuple[str, str], queue: dict[Key, None]) -> None:
        """What was left out for lacking this joins the queue (if it is still left out)."""
        for key in self._waiting.pop(waited_for, ()):
            if key in self.pending:
                queue[key] = None

    def _admit_queue(self, queue: dict[Key, None], affected: set[str]) -> None:
        """Apps first (machines refer to them), then machines and peers; a newly admitted app may
        send machines back to be placed again, which join the queue."""
        while queue:
            batch = [self.pending[k] for k in queue if k in self.pending]
            queue.clear()
            batch.sort(key=lambda e: _ORDER[e.kind])  # stable: kept in order
            for e in batch:
                if e.key in self.pending:  # not admitted meanwhile
                    self._admit(e, affected, queue)

    def _admit(self, e: RawEntity, affected: set[str], queue: dict[Key, None]) -> None:
        """One member in, or left out (kept as read, with its problem)."""
        key = e.key
        self._forget_problems(key)  # a member tried again
        if e.kind == INVALID:  # not an entity: its message is all there is
            self.pending[key] = e
            self.problems[key] = [e.data]
            return
        try:
            entity = self._parse(e)
        except (ValueError, Dependent) as exc:
            self.pending[key] = e
            waits_for = getattr(exc, "waits_for", None)
            if waits_for is not None:
                self._waiting.setdefault(waits_for, set()).add(key)
            if isinstance(exc, Dependent):
                self.silent.add(key)
            else:
                self.problems[key] = [f"{e.source}: {describe(e.kind, e.data)}: {exc}"]
            if e.kind == "apps" and isinstance(e.data.get("name"), str):  # its machines go without a word
                lname = e.data["name"].lower()
                self.broken_apps[lname] = self.broken_apps.get(lname, 0) + 1
                self.broken_app_keys[key] = lname
            return
        if isinstance(entity, Machine):
            placed = self._place_machine(entity, affected)
        elif isinstance(entity, App):
            placed = self._place_app(entity, affected, queue)
        else:
            placed = self._place_peer(entity, affected)
        if placed:
            self.pending.pop(key, None)
            if not (isinstance(entity, Machine) and entity.key == entity.id):  # else found by its id
                self.entities[key] = entity
        else:
            self.pending[key] = e

    def _place_app(self, app: App, affected: set[str], queue: dict[Key, None]) -> bool:
        lname = app.name.lower()
        identity = (app.network, lname)
        if identity in self.apps:
            first, source = self.source("apps", self.apps[identity]), self.source("apps", app)
            self.problems[app.key] = [f"{source}: app {app.name}: duplicate app in network {app.network} (first in {first})"]
            return False
        self.apps[identity] = app
        self._named[lname] = (*self._named.get(lname, ()), app)
        self.members[app.network].apps[lname] = app
        affected.add(app.network)
        self._wake(("apps", lname), queue)
        for target, addresses in _by_target(app.flycast).items():
            self.members[target].flycast_in[app.key] = (app, addresses)
            affected.add(target)
        self._unplace_unqualified(lname, affected, queue)
        return True

    def _place_machine(self, machine: Machine, affected: set[str]) -> bool:
        known = self.machines.setdefault(machine.id, machine)  # one lookup: a load makes a million
        if known is not machine:
            first, source = self.source("machines", known), self.source("machines", machine)
            line = f"{source}: machine {machine.id}: duplicate machine id (first in {first})"
            self.problems[machine.key] = [line]
            return False
        self.members[machine.network].machines[machine.id] = machine
        affected.add(machine.network)
        return True

    def _place_peer(self, peer: Peer, affected: set[str]) -> bool:
        identity = (peer.network, peer.name.lower())
        known = self.peers.get(identity)
        if known is not None:
            first, source = self.source("peers", known), self.source("peers", peer)
            self.problems[peer.key] = [f"{source}: peer {peer.name}: duplicate peer in network {peer.network} (first in {first})"]
            return False
        self.peers[identity] = peer
        self.members[peer.network].peers[identity[1]] = peer
        affected.add(peer.network)
        return True

    def _withdraw(self, key: Key, affected: set[str], queue: dict[Key, None]) -> None:
        """Take a member out (accepted or left out); an accepted one waits in `pending`, as read,
        and so do the members that depended on it (they join the queue)."""
        self._forget_problems(key)
        entity = self._held(key)
        if entity is None:
            return
        self.entities.pop(key, None)
        kind = _kind_of(entity)
        self.pending[key] = as_read(kind, entity, self.source(kind, entity))
        if isinstance(entity, App):
            network, lname = entity.network, entity.name.lower()
            del self.apps[(network, lname)]
            members = self.members[network]
            del members.apps[lname]
            affected.add(network)
            for target in _by_target(entity.flycast):
                if target in self.members:
                    self.members[target].flycast_in.pop(key, None)
                    affected.add(target)
            others = tuple(a for a in self._named[lname] if a.network != network)
            if others:
                self._named[lname] = others
            else:
                del self._named[lname]
            for machine in [m for m in members.machines.values() if m.app.lower() == lname]:  # they named this app
                self._withdraw(machine.key, affected, queue)
                queue[machine.key] = None
            self._unplace_unqualified(lname, affected, queue)
        elif isinstance(entity, Machine):
            del self.machines[entity.id]
            del self.members[entity.network].machines[entity.id]
            affected.add(entity.network)
        else:
            identity = (entity.network, entity.name.lower())
            del self.peers[identity]
            del self.members[entity.network].peers[identity[1]]
            affected.add(entity.network)

    def _forget_problems(self, key: Key) -> None:
        self.silent.discard(key)
        self.problems.pop(key, None)
        lname = self.broken_app_keys.pop(key, None)
        if lname is not None:
            self.broken_apps[lname] -= 1
            if not self.broken_apps[lname]:
                del self.broken_apps[lname]

    def _unplace_unqualified(self, lname: str, affected: set[str], queue: dict[Key, None]) -> None:
        """Machines that named app `lname` without a network: where they belong may have changed."""
        if not self.machines:  # a load's apps, read before its machines
            return
        for network in [app.network for app in self._named.get(lname, ())]:
            unplaced = [m for m in self.members[network].machines.values() if not m.qualified and m.app.lower() == lname]
            for machine in unplaced:
                self._withdraw(machine.key, affected, queue)
                queue[machine.key] = None

    # --- indexes --------------------------------------------------------------------------------
    def _index_network(self, name: str) -> None:
        before = self.index.get(name)
        index, problems = index_network(self.networks[name], self.members[name], self.source)
        if before is not None and before.owners_made:
            index.owner_map()  # asked for before: made here, not on the reactor's first query
        if before is not None and before.named_made:
            index.named()  # reverse names were asked for: likewise
        self.index[name] = index
        if problems:
            self.network_problems[name] = problems
        else:
            self.network_problems.pop(name, None)

    def snapshot(self) -> Snapshot:
        return self._snapshot({name: self.index[name] for name in self.networks})

    def _unindexed_snapshot(self) -> Snapshot:
        """The snapshot while `_unindexed` networks wait for their index: each made when first
        asked for (on the reactor), from the members themselves, which nothing may change until
        the reactor has taken `index_rest`'s snapshot instead (copies would cost a million
        machines 30–40 MiB more resident, for good)."""
        waiting = [self.members[name] for name in self._unindexed]
        indexed = {name: self.index[name] for name in self.networks if name not in self._unindexed}
        counts = (
            sum(len(m.machines) for m in waiting) + sum(i.machine_count for i in indexed.values()),
            sum(len(m.peers) for m in waiting) + sum(i.peer_count for i in indexed.values()),
            sum(len(m.apps) for m in waiting) + sum(len(i.apps) for i in indexed.values()),
        )
        networks, members, source = dict(self.networks), self.members, self.source

        def make(name: str) -> NetworkIndex:
            return index_network(networks[name], members[name], source)[0]

        return self._snapshot(IndexedWhenAsked(networks, make, indexed), counts)

    def _snapshot(self, networks: Mapping[str, NetworkIndex], counts: tuple[int, ...] | None = None) -> Snapshot:
        # The networks' and regions' definitions stay the very same objects from one snapshot to
        # the next while they are equal (most changes are to machines): what is built from them
        # alone on the reactor (views, private reverse blocks) is then built once, not per change.
        defined, regions = self._handed
        if defined != self.networks:
            defined = dict(self.networks)
        if regions != self.regions:
            regions = dict(self.regions)
        self._handed = defined, regions
        if counts is None:
            counts = (
                sum(i.machine_count for i in networks.values()),
                sum(i.peer_count for i in networks.values()),
                sum(len(i.apps) for i in networks.values()),
            )
        machines, peers, apps = counts
        return Snapshot(
            networks=networks, defined=defined, regions=regions, machine_count=machines, peer_count=peers, app_count=apps
        )

    # --- saved and restored (savefile.py writes the chunks to a file) --------------------------
    def dump(self) -> Iterator[Any]:
        """The catalog as chunks of plain values (marshal can write them): first regions,
        networks and what is left out, as read, and each network's counts; then each network's
        members as parsed, in the order they were accepted, each marked whether the index holds it."""
        return self.copy().dump()

    def copy(self) -> CatalogCopy:
        """What `dump` writes, as of now, to be dumped while the catalog goes on changing."""
        return CatalogCopy(self)

    @classmethod
    def restore(cls, head: Mapping[str, Any], chunks: Iterable[Any], source_of: SourceOf | None = None) -> Catalog:
        """A catalog from `dump`'s chunks, without parsing or checking anything again: what was
        saved had been checked. Raises ValueError (or KeyError, TypeError) if they do not fit."""
        catalog = cls(source_of)
        entries = saved_entries(head)
        catalog.settle_structure(entries)
        shared = Shared(catalog.shared)
        for chunk in chunks:
            catalog._restore_network(restore_members(catalog.networks[chunk[0]], chunk, shared))
        if catalog.index.keys() != catalog.networks.keys():
            raise ValueError("the networks saved are not the networks their entries make")
        catalog.pending = {e.key: e for e in entries if e.kind not in STRUCTURAL}
        catalog._retry({}, set())  # their problems again; what was saved admitted none of them
        if any(e.key not in catalog.pending for e in entries if e.kind not in STRUCTURAL):
            raise ValueError("an entry saved as left out fits")
        return catalog

    def settle_structure(self, entries: Iterable[RawEntity]) -> None:
        """Regions and networks from these entries (the rest left aside), into an empty catalog."""
        self.structure = {e.key: e for e in entries if e.kind in STRUCTURAL}
        self._settle(set(), {})

    def _restore_network(self, restored: RestoredNetwork) -> None:
        name = restored.index.network.name
        members = self.members[name]
        for app in restored.apps:
            lname = app.name.lower()
            self.apps[(name, lname)] = members.apps[lname] = self.entities[app.key] = app
            self._named[lname] = (*self._named.get(lname, ()), app)
            for target, addresses in _by_target(app.flycast).items():
                self.members[target].flycast_in[app.key] = (app, addresses)
        machine_map, held_machines, entities = self.machines, members.machines, self.entities
        for m in restored.machines:
            machine_map[m.id] = held_machines[m.id] = m
            if m.key != m.id:
                entities[m.key] = m
        for peer in restored.peers:
            self.peers[(name, peer.name.lower())] = members.peers[peer.name.lower()] = self.entities[peer.key] = peer
        self.index[name] = restored.index
        if restored.problems:
            self.network_problems[name] = restored.problems

    def problem_lines(self) -> list[str]:
        """Every problem, the entities' by kind in the order they were found, then the networks'.

        Asked after every change: it costs the number of problems, never the registry's size.
        """
        lines = [line for key in sorted(self.problems, key=lambda k: _ORDER[self._kind(k)]) for line in self.problems[key]]
        for name in self.networks:
            for found in self.network_problems.get(name, {}).values():
                lines.extend(found)
        return lines


class CatalogCopy:
    """A catalog's state as `Catalog.dump` writes it, taken at one moment: its containers copied
    (a million machines: tens of milliseconds), the entities shared, as they are never changed
    once made. A snapshot file is written from it in a thread of its own (registry/live.py)
    while the backend's thread applies the next changes."""

    def __init__(self, catalog: Catalog):
        self.raw = [(e.key, e.source, e.kind, e.data) for e in (*catalog.structure.values(), *catalog.pending.values())]
        self.networks = [
            (
                name,
                catalog.index[name],
                tuple(members.apps.values()),
                tuple(members.machines.values()),
                tuple(members.peers.values()),
                dict(catalog.network_problems.get(name, {})),
            )
            for name, members in catalog.members.items()
        ]

    def dump(self) -> Iterator[Any]:
        counts = [(name, index.machine_count, index.peer_count, len(index.apps)) for name, index, *_ in self.networks]
        yield {"entries": self.raw, "networks": counts}
        for name, index, apps_held, machines_held, peers_held, problems in self.networks:
            held = {id(x) for x in index.addressed}
            apps = [
                (
                    a.name,
                    tuple((fc.ip.packed, fc.network) for fc in a.flycast),
                    a.source,
                    a.key,
                    tuple((s.name, s.port, s.protocol) for s in a.services),
                )
                for a in apps_held
            ]
            machines = [
                (
                    m.id,
                    m.app,
                    m.region,
                    m.packed6,
                    m.state,
                    m.process_group,
                    m.packed4,
                    m.metadata,
                    m.dns,
                    m.source,
                    m.key,
                    m.qualified,
                    m.checks or None,  # a dict, or None for none (marshal writes no mappingproxy)
                    id(m) in held,
                )
                for m in machines_held
            ]
            peers = [(p.name, p.ip6.packed, p.region, p.source, p.key, id(p) in held) for p in peers_held]
            flycast = {lname: tuple(ip.packed for ip in ips) for lname, ips in index.flycast.items()}
            yield (name, apps, machines, peers, flycast, problems)


class IndexedWhenAsked(Mapping[str, NetworkIndex]):
    """A snapshot's networks whose indexes are made when first asked for, by `make(name)` (a
    millisecond or two for a thousand machines), so that the first answers need not wait for
    all: a first load's, from the members (`Catalog.load_first`), and a restored file's, from
    its chunks (savefile.py). Those given in `made` are as they are."""

    def __init__(
        self, networks: Mapping[str, Network], make: Callable[[str], NetworkIndex], made: Mapping[str, NetworkIndex] | None = None
    ):
        self._networks = networks
        self._make = make
        self._made = dict(made or {})

    def __getitem__(self, name: str) -> NetworkIndex:
        index = self._made.get(name)
        if index is None:
            index = self._made[name] = self._make(name)
        return index

    def __contains__(self, name: object) -> bool:
        return name in self._networks

    def __iter__(self) -> Iterator[str]:
        return iter(self._networks)

    def __len__(self) -> int:
        return len(self._networks)


def _by_target(flycast: tuple[Flycast, ...]) -> dict[str, tuple[Flycast, ...]]:
    out: dict[str, list[Flycast]] = {}
    for fc in flycast:
        out.setdefault(fc.network, []).append(fc)
    return {target: tuple(fcs) for target, fcs in out.items()}


def _inside(prefix: IPv4Network | IPv6Network) -> Callable[[bytes], bool]:
    """A test of packed addresses for membership of the prefix, without making address objects."""
    if prefix.prefixlen % 8 == 0:  # the usual prefixes: the leading bytes compared, no number made
        head = prefix.network_address.packed[: prefix.prefixlen // 8]
        return lambda packed: packed.startswith(head)
    shift = prefix.max_prefixlen - prefix.prefixlen
    base = int(prefix.network_address) >> shift
    return lambda packed: int.from_bytes(packed) >> shift == base


def _text(packed: bytes) -> str:
    return str(ip_address(packed))


def _own_source(kind: str, entity: Member) -> str:
    return entity.source


def index_network(
    net: Network, members: _Members, source_of: Callable[[str, Member], str] = _own_source
) -> tuple[NetworkIndex, dict[Key, list[str]]]:
    """One network's index, and the problems of the members it leaves out: an address outside
    the network's prefix, or one already used (the first user keeps it)."""
    problems: dict[Key, list[str]] = {}
    owner: dict[bytes, Any] = {}  # packed address -> who holds it: a text, or the entity
    for field_name in ("dns6", "dns4"):  # a network's resolver address belongs to no machine
        if (ip := getattr(net, field_name)) is not None:
            owner[ip.packed] = f"network {net.name} ({field_name})"

    def who(holder: Any) -> str:
        if isinstance(holder, str):
            return holder
        if isinstance(holder, Machine):
            return f"machine {holder.id}"
        if isinstance(holder, Peer):
            return f"peer {holder.name}"
        return f"app {holder.name} (flycast)"

    def fault(holder: Member, reason: str) -> None:
        source = source_of(_kind_of(holder), holder)
        problems.setdefault(holder.key, []).append(f"{source}: {who(holder)}: {reason}")

    def claim(addresses: list[bytes], holder: Member) -> bool:
        taken = [ip for ip in addresses if ip in owner]
        for ip in taken:
            fault(holder, f"address {_text(ip)} is already used by {who(owner[ip])}")
        if taken:
            return False
        for ip in addresses:
            owner[ip] = holder
        return True

    flycast: dict[str, list[IPv6Address]] = {lname: [] for lname in members.apps}  # own apps exist under .flycast
    for app, flycast_here in members.flycast_in.values():
        for fc in flycast_here:
            if claim([fc.ip.packed], app):
                flycast.setdefault(app.name.lower(), []).append(fc.ip)

    in6 = _inside(net.prefix6)
    in4 = _inside(net.prefix4) if net.prefix4 is not None else None
    machines: list[Machine] = []
    for m in members.machines.values():
        packed6, packed4 = m.packed6, m.packed4
        if in6(packed6) and packed6 not in owner:  # the usual case, without a list or a fault
            if packed4 is None:
                owner[packed6] = m
                machines.append(m)
                continue
            if in4 is not None and in4(packed4) and packed4 not in owner:
                owner[packed4] = owner[packed6] = m
                machines.append(m)
                continue
        ok = True
        if not in6(m.packed6):
            fault(m, f"ip6 {m.ip6} is outside network {net.name}'s prefix {net.prefix6}")
            ok = False
        if m.packed4 is not None:
            if in4 is None:
                fault(m, f"ip4 {m.ip4} given but network {net.name} has no prefix4")
                ok = False
            elif not in4(m.packed4):
                fault(m, f"ip4 {m.ip4} is outside network {net.name}'s prefix {net.prefix4}")
                ok = False
        addresses = [m.packed6] if m.packed4 is None else [m.packed4, m.packed6]
        if claim(addresses, m) and ok:
            machines.append(m)

    peers: list[Peer] = []
    for p in members.peers.values():
        ok = p.ip6 in net.prefix6
        if not ok:
            fault(p, f"ip6 {p.ip6} is outside network {net.name}'s prefix {net.prefix6}")
        if claim([p.ip6.packed], p) and ok:
            peers.append(p)

    return _index(net, members, machines, peers, flycast), problems


def _index(
    net: Network, members: _Members, machines: list[Machine], peers: list[Peer], flycast: dict[str, list[IPv6Address]]
) -> NetworkIndex:
    by_app: dict[str, list[Machine]] = {lname: [] for lname in members.apps}
    for m in machines:
        if m.dns:
            by_app[m.app.lower()].append(m)
    apps: dict[str, AppIndex] = {}
    for lname, app in members.apps.items():
        apps[lname] = AppIndex(app, tuple(sorted(by_app[lname], key=machine_id)))
    visible = {p.name.lower(): p for p in peers if not p.interactive}
    return NetworkIndex(
        network=net,
        apps=apps,
        app_names=tuple(sorted(a.app.name for a in apps.values())),
        peers=visible,
        peer_names=tuple(sorted(p.name for p in visible.values())),
        flycast={k: tuple(sorted(v)) for k, v in flycast.items()},  # several apps of one name may add to a set
        addressed=(*machines, *peers),
        machine_count=len(machines),
        peer_count=len(peers),
    )


def saved_entries(head: Mapping[str, Any]) -> list[RawEntity]:
    """The entries as read that `Catalog.dump` saves first: regions, networks, what is left out."""
    return [RawEntity(key, source, kind, data) for key, source, kind, data in head["entries"]]


class Shared:
    """What restored machines share, as parsed ones do: one text per region, state, group and
    app name, one mapping per metadata value."""

    def __init__(self, metadata: dict[Any, Any]):
        self.texts: dict[str, str] = {}
        self.metadata = metadata

    def text(self, value: str) -> str:
        return self.texts.setdefault(value, value)


@dataclass(frozen=True, slots=True)
class RestoredNetwork:
    apps: list[App]
    machines: list[Machine]
    peers: list[Peer]
    index: NetworkIndex
    problems: dict[Key, list[str]]


def restore_members(net: Network, chunk: Any, shared: Shared) -> RestoredNetwork:
    """One network's members and index from its chunk of `Catalog.dump`."""
    name, app_rows, machine_rows, peer_rows, flycast, problems = chunk
    text = shared.text
    apps = [
        App(
            text(app_name),
            name,
            tuple(Flycast(IPv6Address(ip), target) for ip, target in fcs),
            source,
            key,
            tuple(Service(text(s), port, text(protocol)) for s, port, protocol in services),
        )
        for app_name, fcs, source, key, services in app_rows
    ]
    members = _Members(apps={a.name.lower(): a for a in apps})
    metadata_seen: dict[int, Any] = {}  # marshal gives one object for what was one when saved
    checks_seen: dict[int, Any] = {}
    machines: list[Machine] = []
    indexed: list[Machine] = []
    for mid, app_name, region, ip6, state, group, ip4, metadata, dns, source, key, qualified, checks, in_index in machine_rows:
        meta = metadata_seen.get(id(metadata))
        if meta is None:
            meta = shared.metadata.setdefault(tuple(sorted(metadata.items())), metadata)
            metadata_seen[id(metadata)] = meta
        held_checks: Mapping[str, str] = NO_CHECKS
        if checks:
            held_checks = checks_seen.get(id(checks)) or checks_seen.setdefault(
                id(checks), shared.metadata.setdefault(("checks", *sorted(checks.items())), checks)
            )
        m = Machine(mid, text(app_name), name, text(region), ip6, text(state), text(group), ip4, meta, dns, source)
        m.key = mid if key == mid else key
        m.qualified = qualified
        m.checks = held_checks
        machines.append(m)
        if in_index:
            indexed.append(m)
    peers: list[Peer] = []
    indexed_peers: list[Peer] = []
    for peer_name, ip6, region, source, key, in_index in peer_rows:
        peer = Peer(peer_name, name, IPv6Address(ip6), region, source, key)
        peers.append(peer)
        if in_index:
            indexed_peers.append(peer)
    flycast_here = {lname: [IPv6Address(ip) for ip in ips] for lname, ips in flycast.items()}
    index = _index(net, members, indexed, indexed_peers, flycast_here)
    return RestoredNetwork(apps, machines, peers, index, problems)
