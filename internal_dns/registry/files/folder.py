"""A registry folder read: every *.yaml file under it, fingerprinted, parsed and merged.

The backend polls it (`backend.py`); the registry command reads and writes it (`store.py`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.logger import Logger

from internal_dns.registry.catalog import Catalog, Key, RawEntity, build_snapshot, entities_of
from internal_dns.registry.heap import build_frozen
from internal_dns.registry.model import Document, RegistryError, Snapshot

log = Logger()

# path, mtime_ns, size, inode, mode and owner (a chmod makes a file readable or not), content
# hash while racy (or why the file cannot be read)
Row = tuple[str, int, int, int, tuple[int, int, int], str]
Fingerprint = tuple[Row, ...]
# A file modified this recently may change again within the clock tick that stamped it; its
# content hash joins the fingerprint so that a same-size edit in the same tick is not missed.
_RACY_SECONDS = 2.0


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


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_documents(root: Path, known: dict[str, tuple[bytes, Document]] | None = None) -> tuple[list[Document], list[str]]:
    """Every registry file parsed, and the problems of those that cannot be.

    `known` maps a path to the digest of the content it was parsed from and the Document: a file
    whose content is unchanged is not parsed again (parsing is most of the cost of a big
    registry; reading and hashing a small part of it), and gets the very same Document back.
    """
    documents = []
    problems = []
    for path in registry_files(root):
        try:
            content = path.read_bytes()
            digest = hashlib.sha1(content).digest()
            cached = known.get(str(path)) if known is not None else None
            if cached is not None and cached[0] == digest:
                documents.append(cached[1])
                continue
            data: Any = yaml.load(content.decode("utf-8"), Loader=_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "document"
            problems.append(f"{path}: {where}: not valid YAML ({getattr(exc, 'problem', None) or exc})")
            continue
        except OSError as exc:
            problems.append(f"{path}: file: cannot be read: {unreadable(path, exc)}")
            continue
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: file: cannot be read: not UTF-8 text ({exc})")
            continue
        document = Document(str(path), data)
        if known is not None:
            known[str(path)] = (digest, document)
        documents.append(document)
    return documents, problems


def load_documents(root: Path) -> list[Document]:
    documents, problems = read_documents(root)
    if problems:
        raise RegistryError(problems)
    return documents


def load_snapshot(root: Path) -> Snapshot:
    return build_frozen(lambda: build_snapshot(load_documents(root)))


class Folder:
    """A registry folder as the backend last read it: its files' parsed content, and a catalog
    of their entities that each scan updates with what changed (scan thread only)."""

    def __init__(self, root: Path):
        self.root = root
        self.catalog = Catalog()
        self.parsed: dict[str, tuple[bytes, Document]] = {}
        self.entities: dict[str, dict[Key, RawEntity]] = {}  # path -> the entities it holds
        self.loaded = False

    def scan(self) -> Snapshot | RegistryError:
        documents, problems = read_documents(self.root, self.parsed)
        # A file that cannot be parsed keeps its entities as last read: its problem is the news.
        unreadable = {line.split(": ", 1)[0] for line in problems}
        present = {doc.source for doc in documents} | unreadable
        for gone in set(self.parsed) - present:
            del self.parsed[gone]
        upserts: list[RawEntity] = []
        deletes: list[Key] = []
        for path in set(self.entities) - present:
            deletes.extend(self.entities.pop(path))
        for doc in documents:
            now = {e.key: e for e in entities_of(doc)}
            before = self.entities.get(doc.source, {})
            if now.keys() == before.keys() and all(before[k].data == e.data for k, e in now.items()):
                continue
            upserts.extend(e for k, e in now.items() if k not in before or before[k].data != e.data)
            deletes.extend(k for k in before if k not in now)
            self.entities[doc.source] = now
        if not self.loaded:
            snapshot = self.catalog.load(e for entities in self.entities.values() for e in entities.values())
            self.loaded = True
        else:
            snapshot = self.catalog.apply(upserts, deletes)
        problems += self.catalog.problem_lines()
        return RegistryError(problems) if problems else snapshot
