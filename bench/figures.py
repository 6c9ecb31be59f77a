"""What every bench run writes beside its figures: when and on what machine it ran, and where
the JSON goes (bench/results/ keeps the last run of each); and the runs' working folder."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
OUT = Path(__file__).resolve().parent / "out"  # the runs' working folder: stores, configs, logs


def run_header() -> dict[str, Any]:
    """When the figures were taken, and on what."""
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def save(path: Path, report: dict[str, Any]) -> None:
    """The report as JSON at `path`, and a line saying where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfigures: {path}")
