"""One part of a first read of a big registry folder (folder.py, `Folder._read_in_parts`), run as
`python -m internal_dns.registry.files.parts` with the files to parse, `(index, path)` pairs
marshalled, on its standard input: each file read and parsed as the server would (`read_file`),
and what `_Read.add` keeps of it written to standard output (registry/parts.py): per file its
index, path, digest, its regions, networks and entries that are no entity (as tuples), or the
line saying why it cannot be read, and its members by kind, marshalled as `_hold` does. A file
holding what marshal cannot write (YAML's dates) says so, and the server parses it itself.
"""

from __future__ import annotations

import gc
import marshal
import os
import sys
from pathlib import Path
from typing import IO, Any

from internal_dns.registry.files.folder import read_file, split
from internal_dns.registry.parts import ResultWriter


def read_part(files: list[tuple[int, str]], out: IO[bytes]) -> None:
    writer = ResultWriter(out)
    rows: list[tuple[Any, ...]] = []
    for index, path in files:
        found = read_file(Path(path))
        if isinstance(found, str):
            rows.append((index, path, None, None, found, []))
            continue
        digest, document = found
        assert document is not None
        first, members = split(document)
        try:
            firsts = [(e.key, e.source, e.kind, e.data) for e in first]
            marshal.dumps(firsts)
            held = {kind: marshal.dumps(pairs) for kind, pairs in members.items()}
        except ValueError:  # a value marshal cannot write: the server parses this file itself
            rows.append((index, path, digest, None, None, []))
            continue
        for kind, data in held.items():
            writer.raw(f"{index}/{kind}", data)
        rows.append((index, document.source, digest, firsts, None, list(held)))
    writer.finish({"files": rows})


def main() -> int:
    gc.disable()  # a short-lived process: the collector would only walk what it parsed
    try:
        files = marshal.loads(sys.stdin.buffer.read())
        read_part(files, sys.stdout.buffer)
    except Exception as exc:  # said on standard error, which the server logs
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # without freeing what it parsed object by object
