"""The kinds of entity a registry holds (SPEC §1), in one table: what each is called, what makes
one entity of it the same entity, and the orders they are read and written in.

Every store keys an entity by its kind's identity fields, in the order given here:
- files: (file, section, identity, n), n counting the repeats of one identity in a file;
- sqlite: the table named after the section, whose primary key is the identity's columns;
- etcd: `<prefix><section>/<field>[/<field>]`, the folded fields lower-cased.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Kind:
    section: str  # the YAML section, the SQLite table, the etcd key's first part, a RawEntity's kind
    singular: str  # how messages and the registry command name one: "machine 148e21dad76789"
    identity: tuple[str, ...]  # the fields that make an entity the same entity, in key order
    folded: frozenset[str] = frozenset()  # identity fields compared ignoring case, as the catalog compares them
    structural: bool = False  # what the other kinds refer to: a change to one rebuilds every index


REGIONS = Kind("regions", "region", ("code",), frozenset({"code"}), structural=True)
NETWORKS = Kind("networks", "network", ("name",), structural=True)
APPS = Kind("apps", "app", ("network", "name"), frozenset({"name"}))
MACHINES = Kind("machines", "machine", ("id",))
PEERS = Kind("peers", "peer", ("network", "name"), frozenset({"name"}))

# What is referred to before what refers to it: the order entities are read, checked and written in.
KINDS = (REGIONS, NETWORKS, APPS, MACHINES, PEERS)
# As SPEC §1 lists them: the order of an export and of a rewritten registry file.
EXPORT_ORDER = (NETWORKS, APPS, MACHINES, PEERS, REGIONS)

BY_SECTION = {kind.section: kind for kind in KINDS}
SECTIONS = tuple(BY_SECTION)
