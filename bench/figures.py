"""What every bench run writes beside its figures: when and on what machine it ran, and where
the JSON goes (bench/results/ keeps the last run of each); and the runs' working folder."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
OUT = Path(__file__).resolve().parent / "out"  # the runs' working folder: stores, configs, logs


def run_header() -> dict[str, Any]:
    """When the figures were taken, and on what."""
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "interpreter": interpreter(),
            "platform": platform.platform(),
        },
    }


def interpreter() -> str:
    """The Python the servers run on (the venv's) and how its libpython is linked: a build from
    source usually loads it as a shared library, and the one measured (without PGO either) cost
    the server 8% more CPU a query than Debian's (docs/speed.md, The interpreter)."""
    maps = Path("/proc/self/maps")  # the libraries this process has mapped
    if maps.exists():
        linked = "libpython shared" if "libpython" in maps.read_text() else "libpython static"
    else:
        linked = "linkage unknown"
    return f"{os.path.realpath(sys.executable)} ({linked})"


def save(path: Path, report: dict[str, Any]) -> None:
    """The report as JSON at `path`, and a line saying where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfigures: {path}")
