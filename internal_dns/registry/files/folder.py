"""A registry folder read: every *.yaml file under it, fingerprinted, parsed and merged.

The backend polls it (`backend.py`); the registry command reads and writes it (`store.py`).
"""

from __future__ import annotations

import errno
import hashlib
import marshal
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from twisted.logger import Logger

from internal_dns.registry.catalog import INVALID, Catalog, Key, RawEntity, build_snapshot, entities_of
from internal_dns.registry.heap import build_frozen
from internal_dns.registry.kinds import KINDS
from internal_dns.registry.model import Document, RegistryError, Snapshot
from internal_dns.registry.parts import NotMerged, Runner, how_many

log = Logger()

# path, mtime_ns, size, inode, mode and owner (a chmod makes a file readable or not), content
# hash while racy (or why the file cannot be read)
Row = tuple[str, int, int, int, tuple[int, int, int], str]
Fingerprint = tuple[Row, ...]
# A file modified this recently may change again within the clock tick that stamped it; its
# content hash joins the fingerprint so that a same-size edit in the same tick is not missed.
_RACY_SECONDS = 2.0
# The YAML of a folder from which its first read is parsed in parts by default (about two seconds
# of libyaml's parsing: a part's start costs a few tenths)
PARTS_FROM_BYTES = 8 * 1024 * 1024


_SUFFIXES = (".yaml", ".yml")


def registry_files(root: Path) -> list[Path]:
    """Every name of a registry file under `root`, hidden names (and what is under them) left
    out: ending in .yaml or .yml, whatever it turns out to be. A dangling or looping symbolic
    link, a directory or an unreadable file under such a name is listed too, so that reading it
    says why it cannot be read: a registry file must never be taken as deleted just because it
    cannot be read. Symbolic links to folders are not followed (as `find` does not)."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise RegistryError([f"{root}: registry folder does not exist"])
    found: list[Path] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:  # a folder that cannot be listed hides whatever files it holds
            raise RegistryError([f"{folder}: folder: cannot be read ({exc.strerror or exc})"]) from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if path.suffix in _SUFFIXES:
                found.append(path)
            elif entry.is_dir(follow_symlinks=False):
                folders.append(path)
    return sorted(found)


def unreadable(path: Path, exc: OSError) -> str:
    """Why a registry file cannot be read, in words an operator acts on."""
    if path.is_symlink():
        target = os.readlink(path)
        if exc.errno == errno.ELOOP:
            return f"a symbolic link that loops (to {target})"
        if exc.errno == errno.ENOENT:
            return f"a dangling symbolic link (to {target}, which does not exist)"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a file"
    return exc.strerror or str(exc)


def fingerprint(root: Path, previous: Fingerprint | None = None) -> Fingerprint:
    now = time.time()
    before = {row[0]: row for row in previous or ()}
    rows = []
    for path in registry_files(root):
        try:
            st = path.stat()
            seen = (str(path), st.st_mtime_ns, st.st_size, st.st_ino, (st.st_mode, st.st_uid, st.st_gid))
            old = before.get(str(path))
            digest = ""
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime < _RACY_SECONDS:
                digest = _digest(path)
            elif old is not None and old[:5] == seen and old[5]:
                # Leaving the racy window: hash once more, so that an edit made after the last
                # racy scan is still seen; an unchanged file then drops its hash (see unchanged).
                current = _digest(path)
                digest = "" if current == old[5] else current
        except OSError as exc:
            if not os.path.lexists(path):  # removed between the listing and the stat: it is gone
                continue
            seen, digest = (str(path), -1, -1, -1, (0, 0, 0)), f"unreadable: {unreadable(path, exc)}"  # read, to be reported
        rows.append((*seen, digest))
    return tuple(rows)


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def unchanged(seen: Fingerprint | None, current: Fingerprint) -> bool:
    """Same files with the same stat data, and the same content wherever both scans hashed it.

    A hash present on one side only is a file entering or leaving the racy window with the same
    stat data; `fingerprint` has already compared its content when it left.
    """
    if seen is None or len(seen) != len(current):
        return False
    for old, new in zip(seen, current, strict=True):  # the lengths are equal (just above)
        if old[:5] != new[:5] or (old[5] and new[5] and old[5] != new[5]):
            return False
    return True


# libyaml's parser when PyYAML was built with it, else PyYAML's own. The values are the same
# either way: both hand the same events to the same Python resolver and constructors (SafeLoader's
# YAML 1.1 rules: 0123 is octal, 2024-05-01 a date, yes a boolean); the C parser is several times
# quicker, which counts for a registry of a million machines.
_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_file(path: Path, parsed: bytes | None = None) -> tuple[bytes, Document | None] | str:
    """A registry file read: the digest of its content and the Document parsed from it, or the
    line saying why it cannot be read or parsed. Content whose digest is `parsed` (that of
    content read before) is not parsed again: its Document is None."""
    try:
        content = path.read_bytes()
        digest = hashlib.sha1(content).digest()
        if digest == parsed:
            return digest, None
        data: Any = yaml.load(content.decode("utf-8"), Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        return f"{path}: {where}: not valid YAML ({getattr(exc, 'problem', None) or exc})"
    except OSError as exc:
        return f"{path}: file: cannot be read: {unreadable(path, exc)}"
    except UnicodeDecodeError as exc:
        return f"{path}: file: cannot be read: not UTF-8 text ({exc})"
    return digest, Document(str(path), data)


def read_documents(root: Path) -> tuple[list[Document], list[str]]:
    """Every registry file parsed, and the problems of those that cannot be."""
    documents = []
    problems = []
    for path in registry_files(root):
        read = read_file(path)
        if isinstance(read, str):
            problems.append(read)
        elif read[1] is not None:
            documents.append(read[1])
    return documents, problems


def load_documents(root: Path) -> list[Document]:
    documents, problems = read_documents(root)
    if problems:
        raise RegistryError(problems)
    return documents


def load_snapshot(root: Path) -> Snapshot:
    return build_frozen(lambda: build_snapshot(load_documents(root)))


_MEMBERS = tuple(kind.section for kind in KINDS if not kind.structural)  # apps, machines, peers
_FIRST = {kind: i for i, kind in enumerate((INVALID, *(k.section for k in KINDS if k.structural)))}  # handed on first


def _hold(pairs: list[tuple[Key, Any]]) -> bytes | list[tuple[Key, Any]]:
    """A file's members of one kind, as (key, mapping) pairs, kept until they are handed on:
    marshalled, a tenth of their size as objects (a million machines: 160 MB, not 1.5 GB),
    unless they hold what marshal cannot write (YAML's dates): then as they are."""
    try:
        return marshal.dumps(pairs)
    except ValueError:
        return pairs


def _unhold(held: bytes | list[tuple[Key, Any]]) -> list[tuple[Key, Any]]:
    return marshal.loads(held) if isinstance(held, bytes) else held


def split(document: Document) -> tuple[list[RawEntity], dict[str, list[tuple[Key, Any]]]]:
    """A file's entities: its regions, networks and entries that are no entity, as they are;
    its members as (key, mapping) pairs by kind."""
    first: list[RawEntity] = []
    found: dict[str, list[tuple[Key, Any]]] = {}
    for e in entities_of(document):
        if e.kind in _MEMBERS:
            found.setdefault(e.kind, []).append((e.key, e.data))
        else:
            first.append(e)
    return first, found


class _Read:
    """The entities of the files a scan has read, to be handed to the catalog in kind order, as
    it takes them best (every member after the regions and networks it may refer to): regions,
    networks and entries that are no entity as they are (a few), each file's members held until
    every file has been read, then handed on kind by kind, each file's let go once handed on."""

    def __init__(self, keep_keys: bool, holder: Callable[[str], str | None]):
        self.first: list[RawEntity] = []
        self.members: dict[str, list[tuple[str, bytes | list[tuple[Key, Any]]]]] = {kind: [] for kind in _MEMBERS}
        self.keys: set[Key] | None = set() if keep_keys else None  # the key of every entity read
        self.holder = holder  # machine id -> the file of what the catalog holds under that key, if any
        self.ids: set[str] = set()  # machine ids taken as keys by this read

    def _machine_key(self, source: str, key: Key, data: Any) -> Key:
        """A machine keyed by its id, as the catalog keeps it best (no key beside it, found by
        its id), unless that key is another's: the id's second machine in a file, or one whose id
        is held under that key from another file (or taken in this read): that one keeps the
        (file, kind, identity, n) key. Decided as the machines are handed on, with the id texts
        the catalog keeps (the parsed files' own would hold their memory's pages)."""
        mid = data.get("id") if isinstance(data, Mapping) else None
        if key[3] != 0 or mid.__class__ is not str or mid in self.ids:  # type: ignore[index]
            return key
        holder = self.holder(mid)
        if holder is not None and holder != source:
            return key
        self.ids.add(mid)
        return mid

    def add(self, document: Document) -> None:
        first, found = split(document)
        if self.keys is not None:
            self.keys.update(e.key for e in first)
            self.keys.update(key for pairs in found.values() for key, _ in pairs)
        self.first += first
        for kind, pairs in found.items():
            self.members[kind].append((document.source, _hold(pairs)))

    def add_held(self, source: str, first: list[RawEntity], held: Mapping[str, bytes]) -> None:
        """A file's entities as a load in parts read them (parts.py): its members by kind,
        marshalled as `_hold` does (a load's first read: no keys kept)."""
        self.first += first
        for kind, data in held.items():
            self.members[kind].append((source, data))

    def entities(self) -> Iterator[RawEntity]:
        first, self.first = self.first, []
        first.sort(key=lambda e: _FIRST[e.kind])  # regions, then networks (stable: in their files' order)
        yield from first
        del first
        for kind in _MEMBERS:
            files = self.members[kind]
            files.reverse()
            while files:
                source, held = files.pop()
                for key, data in _unhold(held):
                    if kind == "machines":
                        key = self._machine_key(source, key, data)
                    yield RawEntity(key, source, kind, data)
        self.ids.clear()


class Stopped(Exception):
    """The backend stopped while the first read's parts ran: the scan is given up."""


class Folder:
    """A registry folder as the backend last read it: a catalog of its files' entities, which
    each scan updates with what changed, and per file only the digest of the content those
    entities were read from (scan thread only). Neither the files' documents nor their entities
    as read are kept: a million machines' worth of them would take gigabytes. A file whose content
    changed has all its entities handed to the catalog again (it passes over those whose parsed
    form is unchanged), and the keys it held and no longer holds deleted (the catalog's keys of a
    file are those whose first part is its path, as `entities_of` makes them, and the ids of the
    machines read from it that are keyed by their id: `_Read._machine_key`)."""

    def __init__(self, root: Path, load_processes: int | None = None, loaders: int = 1):
        self.root = root
        self.catalog = Catalog()
        self.digests: dict[str, bytes] = {}  # path -> digest of the content its entities were read from
        self.loaded = False
        self.load_processes = load_processes  # None: this server's cores, for a big folder
        self.loaders = loaders  # server processes loading at the same time, sharing the cores
        self.parts = Runner()
        self.parted: str | None = None  # what the last first read in parts did, for the log

    def scan(self) -> Snapshot | RegistryError:
        problems: list[str] = []
        paths = registry_files(self.root)
        if not self.loaded:
            self.digests.clear()
            read = self._read_in_parts(paths, problems)
            if read is None:
                read = self._read(paths, problems, keep_keys=False)
            snapshot = self.catalog.load(read.entities())
            self.loaded = True
        else:
            snapshot = self._update(paths, problems)
        problems += self.catalog.problem_lines()
        return RegistryError(problems) if problems else snapshot

    def _read(self, paths: list[Path], problems: list[str], keep_keys: bool) -> _Read:
        """The files whose content is not the one their entities were last read from, read and
        parsed (the files backend is strict: every one is, before anything is served); a file
        that cannot be read or parsed keeps its entities as last read: its problem is the news."""
        read = _Read(keep_keys, self.catalog.source_of_key)
        for path in paths:
            found = read_file(path, self.digests.get(str(path)))
            if isinstance(found, str):
                problems.append(found)
                continue
            digest, document = found
            if document is not None:
                read.add(document)
                self.digests[document.source] = digest
        return read

    def _read_in_parts(self, paths: list[Path], problems: list[str]) -> _Read | None:
        """A first read with its files parsed by several processes at once (registry/parts.py,
        files/parts.py): each parses its share (by size) and hands back what `_Read.add` keeps of
        each file, which is marshalled anyway; put together in the files' order, that is the
        read of one process. A file whose values marshal cannot write (YAML's dates) is parsed
        here. None: read them here (`parted` says why when the parts failed)."""
        self.parted = None
        sizes: list[int] = []
        for path in paths:
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(0)  # read here or there, it says why it cannot be
        parts = min(how_many(self.load_processes, self.loaders, sum(sizes) >= PARTS_FROM_BYTES), len(paths))
        if parts < 2:
            return None
        shares: list[list[int]] = [[] for _ in range(parts)]
        loads = [0] * parts
        for i in sorted(range(len(paths)), key=lambda i: -sizes[i]):  # the biggest first, to the least loaded
            least = loads.index(min(loads))
            shares[least].append(i)
            loads[least] += sizes[i]
        started = time.monotonic()
        try:
            results = self.parts.run(
                [[sys.executable, "-m", "internal_dns.registry.files.parts"]] * parts,
                [marshal.dumps([(i, str(paths[i])) for i in sorted(share)]) for share in shares],
            )
        except NotMerged as exc:
            if self.parts.stopped:  # the backend stops: no read in one process now
                raise Stopped from None
            self.parted = f"parsing in one process: {exc}"
            return None
        files: dict[int, Any] = {}
        for result in results:
            for row in result["files"]:
                files[row[0]] = (row, result["chunks"])
        if files.keys() != set(range(len(paths))):
            self.parted = "parsing in one process: the parts did not read every file"
            return None
        read = _Read(False, self.catalog.source_of_key)
        here = 0
        for i, path in enumerate(paths):
            (_, source, digest, first, problem, kinds), chunks = files[i]
            if problem is not None:
                problems.append(problem)
            elif first is None:  # what marshal cannot write: parsed here
                here += 1
                found = read_file(path)
                if isinstance(found, str):
                    problems.append(found)
                elif found[1] is not None:
                    read.add(found[1])
                    self.digests[found[1].source] = found[0]
            else:
                # copied out of the part's buffer: each file's then goes once the catalog has taken it
                held = {kind: bytes(chunks[f"{i}/{kind}"]) for kind in kinds}
                read.add_held(source, [RawEntity(*row) for row in first], held)
                self.digests[source] = digest
        seconds = time.monotonic() - started
        self.parted = f"{len(paths)} files parsed by {parts} processes in {seconds:.2f} s" + (
            f" ({here} parsed again here: values marshal cannot write)" if here else ""
        )
        return read

    def _update(self, paths: list[Path], problems: list[str]) -> Snapshot:
        before = set(self.digests.items())
        read = self._read(paths, problems, keep_keys=True)
        listed = {str(path) for path in paths}
        gone = [source for source in self.digests if source not in listed]
        for source in gone:
            del self.digests[source]
        renewed = {source for source, digest in self.digests.items() if (source, digest) not in before}
        deletes: list[Key] = []
        if renewed or gone:  # the keys those files held and no longer hold
            files, kept = renewed.union(gone), read.keys or set()
            for key, source in self.catalog.sources():
                if isinstance(key, tuple):
                    file, as_read = key[0], key
                else:  # a machine keyed by its id: its file's first of that id, as `entities_of` keys it
                    file, as_read = source, (source, "machines", (key,), 0)
                if file in files and as_read not in kept:
                    deletes.append(key)
        return self.catalog.apply(read.entities(), deletes)
