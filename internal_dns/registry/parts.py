"""A cold load in parts: a big store read by several processes at once, each loading the
networks of its share into a catalog of its own, and the results put together as one catalog's
dump, which the backend then serves and restores as it does a snapshot file (savefile.py).

One interpreter parses about a hundred thousand machines a second, so a million take ten seconds
on one core whatever the code does; the host's other cores are idle meanwhile. Parsed values
cannot be handed between processes for less than they cost to make (unmarshalling a million
machines' mappings costs a third of parsing them), so each part hands over finished work: its
networks' chunks in the snapshot file's format, which the backend serves lazily at once and
restores behind that.

A part reads every region, network and app (few, and every part needs them: a machine finds its
app by name, an app may hold flycast addresses in another network) and only the machines and
peers of its share. Each part loads with the catalog's own rules, so a network's members are
admitted in the same order and meet the same problems as in one process; what can only be seen
across networks is checked when the parts are put together, and the load is done again in one
process if it does not hold: every part must have read the store at the same position, and no
part may have placed a member in a network that is not its own (the part that took a machine
whose network it could not tell is the first one).

A part's result (`ResultWriter`): `{"position", "identity", "head", "pending", "chunks",
"misplaced"}`: the store's position and what identifies the store read (equal in every part),
its catalog's first chunk (regions, networks, the counts of each network), its members left
out (each with a number that puts them in the store's order), its networks' chunks by name, and
the networks outside its share it placed members in.
"""

from __future__ import annotations

import marshal
import os
import struct
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from internal_dns.registry.catalog import STRUCTURAL

_LENGTH = struct.Struct(">Q")
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # what the parts' Python imports internal_dns from


MAX_PARTS = 8


def processes_option(options: Mapping[str, Any]) -> int | None:
    """A backend's `load_processes` key, checked: a number of processes, or None for auto."""
    value = options.get("load_processes", "auto")
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARTS:
        raise ValueError(f"load_processes: must be auto or a number from 1 to {MAX_PARTS}")
    return value


def processes_help(big: str) -> str:
    """What a backend's `load_processes` key means, its own threshold (`big`) said."""
    return (
        "processes that make the first load together: a number (1: the server's own alone), or auto"
        f" (the default: as many as there are cores, shared among `workers`, for {big})"
    )


def how_many(load_processes: int | None, loaders: int, big: bool) -> int:
    """The processes a first load is made by: as many as `load_processes` says, or for `auto`
    (None) this server's share of the cores it may run on (`loaders` servers load at the same
    time; at most MAX_PARTS) when the store is `big` enough to gain from it, else 1."""
    if load_processes is not None:
        return load_processes
    return min(len(os.sched_getaffinity(0)) // max(1, loaders), MAX_PARTS) if big else 1


def share_of(index: int, parts: int) -> int:
    """The part that loads the network at this place in the store's order."""
    return index % parts


@dataclass(frozen=True)
class Merged:
    """The parts put together: what `Catalog.dump` of one catalog holding everything gives, its
    first chunk decoded and each network's chunk as written."""

    parts: int
    position: Any
    identity: Any  # what the parts say identifies the store they read
    head: dict[str, Any]
    chunks: dict[str, memoryview]


class NotMerged(Exception):
    """The parts do not fit together (the text says why): load in one process instead."""


def merge(parts: Sequence[Mapping[str, Any]]) -> Merged:
    """One catalog's dump from the parts' results, the first part's first."""
    first = parts[0]
    for part in parts[1:]:
        if part["position"] != first["position"] or part["identity"] != first["identity"]:
            raise NotMerged("the store changed while the parts read it")
    misplaced = sorted({name for part in parts for name in part["misplaced"]})
    if misplaced:
        raise NotMerged(f"members placed outside their part's networks ({', '.join(misplaced[:3])})")
    counts: dict[str, Any] = {}
    chunks: dict[str, memoryview] = {}
    for part in parts:
        for row in part["head"]["networks"]:
            if row[0] in part["chunks"]:
                counts[row[0]] = row
        if chunks.keys() & part["chunks"].keys():
            raise NotMerged("two parts loaded one network")
        chunks.update(part["chunks"])
    order = [row[0] for row in first["head"]["networks"]]
    if set(order) != chunks.keys() or any(set(r[0] for r in p["head"]["networks"]) != set(order) for p in parts):
        raise NotMerged("the parts settled different networks")
    # The structure and what is left out of the first part's catalog, as read; then every part's
    # members left out, in the store's order (each part left out only those it read).
    entries = [e for e in first["head"]["entries"] if e[2] in STRUCTURAL or e[0] not in first["pending"]]
    left_out = sorted((item for part in parts for item in part["pending"].items()), key=lambda item: item[1])
    by_key = {e[0]: e for part in parts for e in part["head"]["entries"] if e[0] in part["pending"]}
    entries.extend(by_key[key] for key, _ in left_out)
    head = {"entries": entries, "networks": [counts[name] for name in order]}
    return Merged(len(parts), first["position"], first["identity"], head, {name: chunks[name] for name in order})


class Runner:
    """The parts' processes: started, read, and killed when the load is given up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[subprocess.Popen[bytes]] = []
        self._stopped = False

    def run(self, commands: Sequence[Sequence[str]], inputs: Sequence[bytes] | None = None) -> list[dict[str, Any]]:
        """Each command's result (its standard output, as a `ResultWriter` wrote it), once every
        one has exited; NotMerged if one fails. `inputs`: what each reads on its standard input."""
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        outputs: list[bytes] = [b""] * len(commands)
        errors: list[bytes] = [b""] * len(commands)
        with self._lock:
            if self._stopped:
                raise NotMerged("stopping")
            given = subprocess.PIPE if inputs is not None else subprocess.DEVNULL
            procs = [
                subprocess.Popen(list(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=given, env=environ)
                for c in commands
            ]
            self._running = procs

        def drain(i: int, stream: IO[bytes] | None, into: list[bytes]) -> None:
            assert stream is not None
            into[i] = stream.read()

        def feed(stream: IO[bytes] | None, data: bytes) -> None:
            assert stream is not None
            try:
                stream.write(data)
                stream.close()
            except OSError:  # the part died: its exit code says so
                pass

        readers = [
            threading.Thread(target=drain, args=(i, stream, into), daemon=True)
            for i, p in enumerate(procs)
            for stream, into in ((p.stdout, outputs), (p.stderr, errors))
        ]
        if inputs is not None:
            readers += [
                threading.Thread(target=feed, args=(p.stdin, data), daemon=True) for p, data in zip(procs, inputs, strict=True)
            ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        codes = [p.wait() for p in procs]
        with self._lock:
            self._running = []
        for i, code in enumerate(codes):
            if code != 0:
                said = errors[i].decode(errors="replace").strip().splitlines()
                raise NotMerged(f"part {i + 1} of {len(codes)} exited with {code}" + (f": {said[-1]}" if said else ""))
        results = []
        for i in range(len(codes)):
            try:
                results.append(read_result(outputs[i]))
            except (ValueError, EOFError, TypeError, KeyError, struct.error) as exc:
                raise NotMerged(f"part {i + 1} of {len(codes)} wrote no result ({type(exc).__name__}: {exc})") from None
        return results

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Kill the parts running, and start none after this."""
        with self._lock:
            self._stopped = True
            for p in self._running:
                p.kill()


class ResultWriter:
    """A part's result, written to its standard output for `Runner.run` as it is made: each
    network's chunk once marshalled, then the rest marshalled, then the rest's length. The
    server keeps what it reads as one buffer, the chunks slices of it (a thousand chunks of their
    own would leave their pages to the allocator's fragments once freed), and the part never
    holds all its chunks at once."""

    def __init__(self, out: IO[bytes]):
        self.out = out
        self.sizes: list[tuple[str, int]] = []

    def chunk(self, name: str, chunk: Any) -> None:
        self.raw(name, marshal.dumps(chunk))

    def raw(self, name: str, data: bytes) -> None:
        """A chunk that is bytes already (marshalled by the part)."""
        self.out.write(data)
        self.sizes.append((name, len(data)))

    def finish(self, rest: Mapping[str, Any]) -> None:
        data = marshal.dumps({**rest, "chunks": self.sizes})
        self.out.write(data)
        self.out.write(_LENGTH.pack(len(data)))
        self.out.flush()


def read_result(data: bytes) -> dict[str, Any]:
    """What a `ResultWriter` wrote: its chunks slices of `data`. Raises ValueError (and the like)
    when it does not fit."""
    if len(data) < _LENGTH.size:
        raise ValueError("cut short")
    (length,) = _LENGTH.unpack_from(data, len(data) - _LENGTH.size)
    end = len(data) - _LENGTH.size
    if length > end:
        raise ValueError("cut short")
    view = memoryview(data)
    result = marshal.loads(view[end - length : end])
    if not isinstance(result, dict):
        raise ValueError("not a part's result")
    at = 0
    chunks: dict[str, memoryview] = {}
    for name, size in result["chunks"]:
        chunks[name] = view[at : at + size]
        at += size
    if at != end - length:
        raise ValueError(f"{abs(end - length - at)} bytes more or fewer than its chunks")
    result["chunks"] = chunks
    return result
