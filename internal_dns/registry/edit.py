"""What `internal-dns registry` does to a store, whichever the backend: it reads every entity,
works out the change, checks it, and writes it only when it adds no problem to the registry.

"No problem added" is judged by the catalog's own rules on the whole registry, before and after:
a put that names an unknown app, reuses an address or a machine id, or a delete that leaves
machines without their app, is refused with the lines the catalog would log. Problems the
registry already had (a live store may hold entities that do not fit) do not stop a change that
leaves them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from internal_dns.registry.catalog import DOCUMENT_SHAPE, Catalog, RawEntity
from internal_dns.registry.files import load_documents
from internal_dns.registry.kinds import BY_SECTION, EXPORT_ORDER, KINDS, SECTIONS
from internal_dns.registry.plugins import Store

_NAMED = {k.singular: k.section for k in KINDS} | {k.section: k.section for k in KINDS}  # "machine" or "machines"


class Refused(Exception):
    """The change would add these problems to the registry (or names nothing there)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


def kind_of(text: str) -> str:
    """The section of the kind a person names, singular or plural: "machine" -> "machines"."""
    try:
        return _NAMED[text.lower()]
    except KeyError:
        raise ValueError(f"unknown kind {text!r} (one of {', '.join(k.singular for k in KINDS)})") from None


def identity(kind: str, data: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes an entity the same entity: a put of an equal identity replaces it."""
    fields = BY_SECTION[kind]
    return tuple(
        str(data.get(name, "")).lower() if name in fields.folded else str(data.get(name, "")) for name in fields.identity
    )


def named(kind: str, name: str, network: str | None) -> tuple[str, ...]:
    """The identity of the entity a person names: by its name (a machine's id, a region's code),
    with its network for an app or a peer (ValueError without it)."""
    fields = BY_SECTION[kind]
    if "network" in fields.identity and network is None:
        raise ValueError(f"{article(fields.singular)} {fields.singular} is named with its network: add --network")
    given = {field: network if field == "network" else name for field in fields.identity}
    return tuple(str(given[field]).lower() if field in fields.folded else str(given[field]) for field in fields.identity)


def describe_identity(kind: str, ident: tuple[str, ...], data: Mapping[str, Any] | None = None) -> str:
    """'machine 148e21dad76789', 'app web/shop-staging' (an app or peer with its network)."""
    fields = BY_SECTION[kind]
    given = dict(zip(fields.identity, ident, strict=True))
    if "network" in given:
        name = str(data.get("name")) if data is not None else given["name"]
        return f"{fields.singular} {name}/{given['network']}"
    return f"{fields.singular} {ident[0]}"


@dataclass
class Change:
    puts: list[tuple[str, Mapping[str, Any]]]  # (kind, data)
    deletes: list[tuple[str, tuple[str, ...]]]  # (kind, identity)
    source: str = "internal-dns registry"  # how the new entities are named in problem lines


def apply(store: Store, change: Change) -> list[str]:
    """Check the change against the whole registry and write it; returns what was done."""
    current = store.read()
    by_identity: dict[tuple[str, tuple[str, ...]], RawEntity] = {}
    for e in current:
        if e.kind in BY_SECTION and isinstance(e.data, Mapping):
            by_identity.setdefault((e.kind, identity(e.kind, e.data)), e)
    missing = [describe_identity(kind, ident) for kind, ident in change.deletes if (kind, ident) not in by_identity]
    if missing:
        raise Refused([f"no {what} in {store.describe()}" for what in missing])
    deletes = [by_identity[(kind, ident)] for kind, ident in change.deletes]
    puts = [(kind, data, by_identity.get((kind, identity(kind, data)))) for kind, data in change.puts]

    gone = {e.key for e in deletes} | {old.key for _, _, old in puts if old is not None}
    after = [e for e in current if e.key not in gone]
    after += [RawEntity(("new", i), change.source, kind, data) for i, (kind, data, _) in enumerate(puts)]
    added = new_problems(current, after)
    if added:
        raise Refused(added)
    store.write(puts, deletes)
    done = [f"deleted {describe_identity(e.kind, identity(e.kind, e.data), e.data)}" for e in deletes]
    done += [
        f"{'replaced' if old is not None else 'added'} {describe_identity(kind, identity(kind, data), data)}"
        for kind, data, old in puts
    ]
    return done


def new_problems(before: Iterable[RawEntity], after: Iterable[RawEntity]) -> list[str]:
    old, new = Catalog(), Catalog()
    old.load(before)
    new.load(after)
    known = set(old.problem_lines())
    return [line for line in new.problem_lines() if line not in known]


def import_change(path: Path, replace: bool, current: list[RawEntity]) -> Change:
    """Every entity of the YAML file or folder (SPEC §1's format), put; with `replace`, every
    entity the store holds that the import lacks, deleted."""
    puts: list[tuple[str, Mapping[str, Any]]] = []
    for document in load_documents(path):
        data = document.data or {}
        if not isinstance(data, Mapping):
            raise Refused([f"{document.source}: document: {DOCUMENT_SHAPE}"])
        for kind in SECTIONS:
            for item in data.get(kind) or []:
                if not isinstance(item, Mapping):
                    raise Refused([f"{document.source}: {kind}: entries must be mappings, got {item!r}"])
                puts.append((kind, dict(item)))
    deletes = []
    if replace:
        wanted = {(kind, identity(kind, data)) for kind, data in puts}
        deletes = [
            (e.kind, identity(e.kind, e.data))
            for e in current
            if e.kind in BY_SECTION and isinstance(e.data, Mapping) and (e.kind, identity(e.kind, e.data)) not in wanted
        ]
    return Change(puts, deletes, source=str(path))


def check_change(current: Iterable[RawEntity], machine: str, check: str, status: str | None, where: str) -> Change:
    """A put of the machine with one check set to `status` (None: removed), every other field as
    the store holds it: a check flips without the whole machine given. It is checked as any put
    is (a status other than passing, warning or critical is refused, naming the machine)."""
    for e in current:
        if e.kind == "machines" and isinstance(e.data, Mapping) and identity("machines", e.data) == (machine,):
            held = e.data.get("checks")
            checks = dict(held) if isinstance(held, Mapping) else {}
            if status is None:
                checks.pop(check, None)
            else:
                checks[check] = status
            data = {k: v for k, v in e.data.items() if k != "checks"}
            return Change([("machines", {**data, "checks": checks} if checks else data)], [])
    raise Refused([f"no machine {machine} in {where}"])


class _Unaliased(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """A dumper that writes a value each time it appears: a store's read may share one mapping
    among many entities (etcd's Compact: metadata, checks, services), which would otherwise come
    out as YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def export(entities: Iterable[RawEntity]) -> str:
    """The registry in SPEC §1's YAML format, every field as the store holds it (`checks`,
    `services` and the rest), without YAML aliases."""
    sections: dict[str, list[Any]] = {kind.section: [] for kind in EXPORT_ORDER}
    for e in entities:
        if e.kind in sections and isinstance(e.data, Mapping):
            sections[e.kind].append(dict(e.data))
    return yaml.dump(
        {k: v for k, v in sections.items() if v},
        Dumper=_Unaliased,
        sort_keys=False,
        default_flow_style=None,
        width=120,
        allow_unicode=True,
    )


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"
