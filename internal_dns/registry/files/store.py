"""The registry command's view of a `files` registry: entities read from the YAML files, and
writes that rewrite the files they touch.

A replaced or deleted entity is changed in the file that holds it; a new app, machine or peer
goes to the file that defines its network (a machine's network is its app's when it gives none),
a new network or region to `registry.yaml` in the folder. A rewritten file keeps its entities
and their order, but not its comments or layout: YAML has no way back from data to a person's
formatting. Each file is replaced whole (written aside, then renamed), so a server polling the
folder never reads half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from internal_dns.registry.catalog import RawEntity, entities_of
from internal_dns.registry.files.folder import load_documents
from internal_dns.registry.kinds import BY_SECTION, EXPORT_ORDER

NEW_FILE = "registry.yaml"


class FilesStore:
    def __init__(self, root: Path):
        self.root = root

    def describe(self) -> str:
        return f"files under {self.root}"

    def read(self) -> list[RawEntity]:
        return [e for doc in load_documents(self.root) for e in entities_of(doc)]

    def write(self, puts: list[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: list[RawEntity]) -> None:
        current = self.read()
        files: dict[str, list[RawEntity]] = {}
        for e in current:
            files.setdefault(e.source, []).append(e)
        touched: set[str] = set()
        dropped = {e.key for e in deletes}
        for e in deletes:
            touched.add(e.source)
        replaced: dict[Any, tuple[str, Mapping[str, Any]]] = {}
        added: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        for kind, data, old in puts:
            if old is not None:
                replaced[old.key] = (kind, data)
                touched.add(old.source)
            else:
                target = self._home(kind, data, current)
                added.setdefault(target, []).append((kind, data))
                touched.add(target)
        for path in sorted(touched):
            sections: dict[str, list[Any]] = {kind.section: [] for kind in EXPORT_ORDER}
            for e in files.get(path, []):
                if e.key in dropped or e.kind not in BY_SECTION:
                    continue
                kind, data = replaced.get(e.key, (e.kind, e.data))
                sections[kind].append(dict(data))
            for kind, data in added.get(path, []):
                sections[kind].append(dict(data))
            _write_atomically(Path(path), {k: v for k, v in sections.items() if v})

    def _home(self, kind: str, data: Mapping[str, Any], current: list[RawEntity]) -> str:
        if self.root.is_file():
            return str(self.root)
        network = data.get("network")
        if kind == "machines" and network is None:  # its app's network, when the name is unique
            homes = {
                e.data.get("network")
                for e in current
                if e.kind == "apps" and str(e.data.get("name", "")).lower() == str(data.get("app", "")).lower()
            }
            network = homes.pop() if len(homes) == 1 else None
        if not BY_SECTION[kind].structural and network is not None:  # an app, machine or peer
            for e in current:
                if e.kind == "networks" and e.data.get("name") == network:
                    return e.source
        return str(self.root / NEW_FILE)

    def close(self) -> None:
        pass


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = (
        yaml.dump(content, Dumper=dumper, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
        if content
        else ""
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
