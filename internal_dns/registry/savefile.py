"""The last snapshot in a local file, so that a restart serves at once and then catches up.

A backend saves its catalog (`Catalog.dump`) with the position it had reached in its store (an
etcd revision, a SQLite change-log sequence, nothing for files), and on start restores it: the
restored snapshot is served while the backend catches up from that position. The file is:

    MAGIC, then FORMAT (u32), the header's length (u32) and the header (JSON: the registry it is
    of, the position, when it was saved, the Python that wrote it), then the catalog's chunks,
    each its length (u32) and its bytes (marshal), then an empty chunk, then the CRC-32 of
    everything before it (u32).

marshal, not pickle: it writes plain values only (the catalog dumps tuples, texts and bytes),
loads them at C speed, and can run no code of the file's choosing. Its format is Python's own,
so a file written by another Python (or FORMAT) is refused, as is a damaged, truncated or
foreign one: a file that does not prove itself is never served. It is written to a temporary
file beside it, flushed to the disk, and renamed over the old one: a crash leaves the old file
or the new, never half of one (and the temporary file is removed on the next save).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import struct
import sys
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from internal_dns.registry.catalog import (
    Catalog,
    CatalogCopy,
    IndexedWhenAsked,
    Shared,
    SourceOf,
    restore_members,
    saved_entries,
)
from internal_dns.registry.model import Network, NetworkIndex, Snapshot
from internal_dns.registry.settings import RegistryConfig

MAGIC = b"internal-dns registry snapshot\n\0"
FORMAT = 2  # 2: machines' checks and apps' services
_U32 = struct.Struct(">I")
SAVE_EVERY = 60.0  # seconds between two saves of a changing registry (and one at each stop)
_PYTHON = f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]} marshal {marshal.version}"


class Refused(Exception):
    """The file cannot be served from; the text says why."""


class Saved:
    """A file that has proved itself: its header and first chunk read, the networks' chunks
    found and not yet decoded. `snapshot()` serves at once, making each network's index when it
    is first asked for; `catalog()` decodes everything, for the backend to catch up with."""

    def __init__(self, header: Mapping[str, Any], head: Mapping[str, Any], chunks: Mapping[str, bytes | memoryview]):
        self.position = header.get("position")  # as the backend saved it
        self.saved_at = float(header["saved_at"])  # wall-clock seconds (time.time())
        self.head = head
        self.chunks = chunks  # network name -> its chunk, as written

    def snapshot(self) -> Snapshot:
        scratch = Catalog()  # regions and networks settle as they did when saved
        scratch.settle_structure(saved_entries(self.head))
        counts = {name: (machines, peers, apps) for name, machines, peers, apps in self.head["networks"]}
        if counts.keys() != scratch.networks.keys() or counts.keys() != self.chunks.keys():
            raise Refused("its networks do not fit together")
        return Snapshot(
            networks=lazy_indexes(scratch.networks, self.chunks),
            defined=dict(scratch.networks),
            regions=dict(scratch.regions),
            machine_count=sum(c[0] for c in counts.values()),
            peer_count=sum(c[1] for c in counts.values()),
            app_count=sum(c[2] for c in counts.values()),
        )

    def catalog(self, source_of: SourceOf | None = None) -> Catalog:
        try:
            return Catalog.restore(self.head, (marshal.loads(chunk) for chunk in self.chunks.values()), source_of)
        except (ValueError, KeyError, TypeError, EOFError, AttributeError) as exc:
            raise Refused(f"its content does not fit together ({type(exc).__name__}: {exc})") from None


def lazy_indexes(networks: Mapping[str, Network], chunks: Mapping[str, bytes | memoryview]) -> IndexedWhenAsked:
    """A restored snapshot's networks: each index made from its chunk when first asked for."""
    shared = Shared({})

    def make(name: str) -> NetworkIndex:
        return restore_members(networks[name], marshal.loads(chunks[name]), shared).index

    return IndexedWhenAsked(networks, make)


STATE_FOLDER = Path("/var/lib/internal-dns")


def configured(config: RegistryConfig, registry: str, environ: Mapping[str, str] = os.environ) -> SnapshotFile | None:
    """The file `registry.snapshot_file` names; by default one per registry (so that instances of
    other registries never meet) in systemd's StateDirectory, else in /var/lib/internal-dns if
    that folder exists; none when the key is false or there is no such folder."""
    if not config.keep_snapshot:
        return None
    if config.snapshot_file is not None:
        return SnapshotFile(config.snapshot_file, registry)
    state = environ.get("STATE_DIRECTORY")
    folder = Path(state.split(":")[0]) if state else STATE_FOLDER
    if not folder.is_dir():
        return None
    digest = hashlib.sha256(registry.encode()).hexdigest()[:16]
    return SnapshotFile(folder / f"registry-{digest}.snapshot", registry)


class SnapshotFile:
    def __init__(self, path: Path, registry: str):
        self.path = path
        self.registry = registry  # what the backend reads: "sqlite /srv/registry.db", ...
        self.problem: str | None = None  # why the last save failed, if it did

    def try_save(self, catalog: Catalog | CatalogCopy, position: Any) -> str | None:
        """Save now; the line to log when it fails for a reason not logged since the last success
        (a full disk is said once, not at every save)."""
        try:
            self.save(catalog, position, time.time())
        except (OSError, ValueError) as exc:
            problem = f"registry snapshot file {self.path} not written: {type(exc).__name__}: {exc}"
            new, self.problem = problem != self.problem, problem
            return problem if new else None
        self.problem = None
        return None

    def save(self, catalog: Catalog | CatalogCopy, position: Any, saved_at: float) -> int:
        """Write the catalog atomically; the size written. Raises OSError, or ValueError for a
        value marshal cannot write (an entity left out may hold anything YAML reads)."""
        header = json.dumps(
            {"registry": self.registry, "position": position, "saved_at": saved_at, "python": _PYTHON},
            separators=(",", ":"),
        ).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        crc = 0
        size = 0
        try:
            with open(temporary, "wb") as out:

                def write(data: bytes) -> None:
                    nonlocal crc, size
                    out.write(data)
                    crc = zlib.crc32(data, crc)
                    size += len(data)

                write(MAGIC + _U32.pack(FORMAT) + _U32.pack(len(header)) + header)
                for chunk in catalog.dump():
                    data = marshal.dumps(chunk)
                    write(_U32.pack(len(data)) + data)
                write(_U32.pack(0))
                out.write(_U32.pack(crc))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
        return size + _U32.size

    def open(self) -> Saved:
        """The file, if it proves itself: raises Refused saying why it cannot be used."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise Refused("no saved snapshot yet") from None
        except OSError as exc:
            raise Refused(f"cannot be read: {exc.strerror or exc}") from None
        header, at = self._check(data)
        try:
            chunks = self._chunks(data, at)
            head = marshal.loads(chunks[0])
            named = {}
            for name, chunk in zip(head["networks"], chunks[1:], strict=True):
                named[name[0]] = chunk
            return Saved(header, head, named)
        except (ValueError, KeyError, TypeError, EOFError, IndexError) as exc:
            raise Refused(f"its content does not fit together ({type(exc).__name__}: {exc})") from None

    def _check(self, data: bytes) -> tuple[dict[str, Any], int]:
        """The header and where the chunks start, if the file proves itself."""
        view = memoryview(data)
        if len(data) < len(MAGIC) + 3 * _U32.size or not data.startswith(MAGIC):
            raise Refused("not a snapshot file (or cut short before its header)")
        at = len(MAGIC)
        (version,) = _U32.unpack_from(view, at)
        if version != FORMAT:
            raise Refused(f"format {version}, this server reads {FORMAT}")
        (length,) = _U32.unpack_from(view, at + 4)
        at += 8
        try:
            header = json.loads(bytes(view[at : at + length]))
            registry, python = header["registry"], header["python"]
            float(header["saved_at"])
        except (ValueError, KeyError, TypeError):
            raise Refused("its header is damaged") from None
        if python != _PYTHON:
            raise Refused(f"written by {python}, this server is {_PYTHON}")
        if registry != self.registry:
            raise Refused(f"it is of another registry ({registry}), this server reads {self.registry}")
        (crc,) = _U32.unpack_from(view, len(data) - 4)
        if zlib.crc32(view[:-4]) != crc:
            raise Refused("damaged or cut short (its checksum does not match)")
        return header, at + length

    @staticmethod
    def _chunks(data: bytes, at: int) -> list[memoryview]:
        view = memoryview(data)
        end = len(data) - 4
        chunks: list[memoryview] = []
        while True:
            if at + 4 > end:
                raise ValueError("the chunks run past the end")
            (length,) = _U32.unpack_from(view, at)
            at += 4
            if length == 0:
                if at != end:
                    raise ValueError("bytes after the last chunk")
                return chunks
            chunks.append(view[at : at + length])
            at += length

    def _remove_leftovers(self) -> None:
        """Temporary files of saves that a crash cut short."""
        for path in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            pid = path.name[len(self.path.name) + 2 : -4]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
