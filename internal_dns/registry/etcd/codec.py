"""Entities as etcd keys and JSON values, and back.

An entity lives under `<prefix><section>/<identity>`: the names of its kind's identity fields
(kinds.py), in key order, the folded ones lower-cased; its value is the JSON object of its fields.
Read back, a key that disagrees with its value, a key of another shape under the prefix, or a
value that is not a JSON object becomes an INVALID entry saying why.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from json.scanner import make_scanner
from typing import Any, cast

from internal_dns.registry.catalog import INVALID, RawEntity
from internal_dns.registry.kinds import BY_SECTION, KINDS
from internal_dns.registry.model import describe

_SHAPES = [f"{kind.section}/{'/'.join(f'<{name}>' for name in kind.identity)}" for kind in KINDS]
SHAPES = f"{', '.join(_SHAPES[:-1])} or {_SHAPES[-1]}"  # "regions/<code>, ... or peers/<network>/<name>"
_RANK = {kind.section: i for i, kind in enumerate(KINDS)}


def key_of(prefix: str, kind: str, data: Mapping[str, Any]) -> str:
    """The key an entity is stored under."""
    fields = BY_SECTION[kind]
    names = []
    for name in fields.identity:
        value = data.get(name)
        if not isinstance(value, str) or not value or "/" in value:
            raise ValueError(f"{describe(kind, data)}: '{name}' must be a text without '/' to be stored under a key")
        names.append(value.lower() if name in fields.folded else value)
    return f"{prefix}{kind}/{'/'.join(names)}"


def value_of(kind: str, data: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(data), ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{describe(kind, data)}: cannot be stored as JSON ({exc})") from None


def key_bytes(key: str) -> bytes:
    """A key as etcd holds it (a key read as not UTF-8 goes back to the same bytes)."""
    return key.encode("utf-8", "surrogateescape")


def range_end(prefix: bytes) -> bytes:
    """The end of etcd's range of every key starting with `prefix`."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"  # every key


class Compact:
    """Shares, among the values read, the texts and mappings that many entities repeat.

    For a reader that holds every entity's mapping as read at once (the registry command's read,
    `client.read_prefix`): a million machines parsed from JSON each with their own copies of the
    field names, of `app`, `region`, `state`, and of the metadata and checks, take twice the memory
    of the same machines sharing them (and an app's services, often the same `http` on 8080, are
    shared entry by entry). The server's load does without: the catalog keeps what it parses
    from a mapping, not the mapping.
    """

    FIELDS = frozenset(("app", "network", "region", "state", "process_group"))  # values repeated
    ENTRIES = frozenset(("services",))  # lists whose mappings are repeated
    MAPPINGS = 100_000  # distinct mappings kept for sharing; beyond it, the memo starts anew

    def __init__(self) -> None:
        self.mappings: dict[tuple[tuple[str, type, Any], ...], dict[str, Any]] = {}

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        intern, fields = sys.intern, self.FIELDS
        out = {}
        for name, value in data.items():
            if type(value) is str:
                if name in fields:
                    value = intern(value)
            elif type(value) is dict:
                value = self.mapping(value)  # metadata, checks
            elif type(value) is list and name in self.ENTRIES:
                value = [self.mapping(v) if type(v) is dict else v for v in value]
            out[intern(name)] = value
        return out

    def mapping(self, value: dict[str, Any]) -> dict[str, Any]:
        """An equal mapping read before (metadata, checks, a service), or this one, remembered.
        Equal with its values' types: `true`, 1 and 1.0 are equal in Python, not to the parsers
        (a port of `true` is refused, metadata `true` reads as "true")."""
        try:
            key = tuple((k, v.__class__, v) for k, v in value.items())
            found = self.mappings.get(key)
        except TypeError:  # a value that is a list or a mapping itself
            return value
        if found is None:
            if len(self.mappings) >= self.MAPPINGS:
                self.mappings.clear()
            found = self.mappings[key] = {
                sys.intern(k): sys.intern(v) if type(v) is str and len(v) <= 64 else v for k, v in value.items()
            }
        return found


_scan = make_scanner(cast(Any, json.JSONDecoder()))  # json.loads' own scanner, without its wrapping


def _loads(value: bytes) -> Any:
    """json.loads(value), quicker for the usual value: UTF-8 text that is one JSON value and
    nothing else is scanned at once. Anything else (whitespace around it, another encoding, not
    JSON) goes to json.loads itself, for its result or its error."""
    try:
        text = value.decode()
        found, end = _scan(text, 0)
        if end == len(text):
            return found
    except (StopIteration, ValueError):  # ValueError: not UTF-8, or a JSON error
        pass
    return json.loads(value)


def entity(prefix: str, raw_key: bytes, value: bytes, compact: Compact | None = None) -> RawEntity:
    """One key and its value as the catalog takes them: key and source are the etcd key; a key
    or value that is no entity is an INVALID entry whose data is the line saying why."""
    try:
        key = raw_key.decode()
    except UnicodeDecodeError:
        key = raw_key.decode("utf-8", "surrogateescape")  # the catalog's key: back to the same bytes
        source = raw_key.decode("utf-8", "backslashreplace")  # printable, for messages
        return RawEntity(key, source, INVALID, f"{source}: the key is not UTF-8")
    kind, _, rest = key[len(prefix) :].partition("/")
    fields = BY_SECTION.get(kind)
    names = rest.split("/")
    if fields is None or len(names) != len(fields.identity) or not all(names):
        return RawEntity(key, key, INVALID, f"{key}: not a registry key (expected {prefix}{SHAPES})")
    try:
        data = _loads(value)
    except ValueError as exc:  # not JSON, or not UTF-8
        return RawEntity(key, key, INVALID, f"{key}: {fields.singular}: the value is not JSON ({exc})")
    if data.__class__ is not dict:
        return RawEntity(key, key, INVALID, f"{key}: {fields.singular}: the value must be a JSON object, not {_json_type(data)}")
    for name, part in zip(fields.identity, names, strict=True):
        given = data.get(name)
        if given.__class__ is str and ((given.lower() != part.lower()) if name in fields.folded else (given != part)):
            # Which of the two is meant cannot be told: neither is served.
            line = (
                f"{key}: {describe(kind, data)}: the key and the value disagree:"
                f" the key names {name} '{part}', the value '{given}'"
            )
            return RawEntity(key, key, INVALID, line)
    return RawEntity(key, key, kind, compact(data) if compact is not None else data)


def entities_by_id(prefix: str, kvs: Iterable[tuple[bytes, bytes]]) -> Iterator[RawEntity]:
    """entity() of each key and value, but a machine's key is its id (`catalog_key`): the
    catalog then finds the machine by its id and keeps no key beside it. The usual machine (a
    key `<prefix>machines/<id>`, a JSON object whose id, if a text, is the key's) is read here in
    one step, without entity()'s look at every key's shape (a million: 2.5 s where 3.3 s);
    anything else goes through entity(), for the same entity or INVALID entry it gives."""
    machines = f"{prefix}machines/"
    start = key_bytes(machines)
    n = len(start)
    for raw_key, value in kvs:
        if raw_key.startswith(start):
            mid = raw_key[n:]
            if mid and b"/" not in mid:
                try:
                    text = mid.decode()
                    data = _loads(value)
                except ValueError:  # not UTF-8, not JSON: entity() words it
                    data = None
                if data.__class__ is dict:
                    given = data.get("id")
                    if given.__class__ is not str or given == text:
                        yield RawEntity(text, machines + text, "machines", data)
                        continue
        e = entity(prefix, raw_key, value)
        e.key = catalog_key(machines, e.key)  # type: ignore[arg-type]
        yield e


def catalog_key(machines: str, key: str) -> str:
    """The catalog's key of the entity under this etcd key, where `machines` is
    `<prefix>machines/`: a machine's id, any other key itself (an id never holds a '/')."""
    if key.startswith(machines):
        rest = key[len(machines) :]
        if rest and "/" not in rest:
            return rest
    return key


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def txn_ops(
    prefix: str, puts: Iterable[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: Iterable[RawEntity]
) -> list[dict[str, Any]]:
    """The registry command's change as etcd transaction operations: puts (networks and regions
    first, so that the entities referring to them find them), then deletes (the referring ones
    first). A replaced entity whose key changed has its old key deleted."""
    from etcd3gw.utils import _encode

    values: dict[str, tuple[int, bytes]] = {}
    gone: dict[str, int] = {}
    for kind, data, old in puts:
        key = key_of(prefix, kind, data)
        values[key] = (_RANK[kind], value_of(kind, data))
        if old is not None and old.key != key:
            gone[str(old.key)] = _RANK.get(old.kind, 0)
    for e in deletes:
        gone[str(e.key)] = _RANK.get(e.kind, 0)
    ops: list[dict[str, Any]] = []
    for key, (_, value) in sorted(values.items(), key=lambda kv: kv[1][0]):
        ops.append({"request_put": {"key": _encode(key_bytes(key)), "value": _encode(value)}})
    for key, _ in sorted(((k, o) for k, o in gone.items() if k not in values), key=lambda ko: -ko[1]):
        ops.append({"request_delete_range": {"key": _encode(key_bytes(key))}})
    return ops
