"""The `console` examples of README.md: each `$ dig ...` line and the output printed under it.

`python -m tests.readme_examples PORT` rewrites the outputs from a server on that port (one freshly
started on zones/, since address sets rotate); tests/test_readme.py checks them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
_VARYING = [
    (re.compile(r"id: \d+"), "id: N"),
    (re.compile(r"(hostmaster\.[\w.-]+\.\s+)\d+"), r"\1SERIAL"),
]


def examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) in README order."""
    found: list[tuple[str, list[str]]] = []
    for block in _BLOCK.findall(text):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found and line.strip():
                found[-1][1].append(line)
    return found


def run(command: str, port: int) -> list[str]:
    command = command.replace("-p 5353", f"-p {port}").replace("dig ", "dig +tries=1 +time=3 ", 1)
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=20).stdout
    return [line for line in out.splitlines() if line.strip()]


def normalise(lines: list[str]) -> list[str]:
    result = []
    for line in lines:
        for pattern, replacement in _VARYING:
            line = pattern.sub(replacement, line)
        result.append(re.sub(r"\s+", " ", line).strip())
    return result


def rewrite(port: int) -> None:
    text = README.read_text()

    def fill(match: re.Match[str]) -> str:
        out = []
        for line in match.group(1).splitlines():
            if line.startswith("$ "):
                out.append(line)
                out.extend(run(line[2:], port))
        return "```console\n" + "\n".join(out) + "\n```"

    README.write_text(_BLOCK.sub(fill, text))


if __name__ == "__main__":
    rewrite(int(sys.argv[1]))
