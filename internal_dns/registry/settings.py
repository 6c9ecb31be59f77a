"""The `registry:` section of the config, as the registry and its backends read it: the keys every
backend shares, and the backend's own under `options`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    backend: str = "files"
    path: Path = Path("zones")
    poll_interval: float | None = None  # None: the backend's own default (files: 1 s)
    max_age: float = 120.0  # /readyz fails when the registry has not been confirmed for this long
    options: Mapping[str, Any] = field(default_factory=dict)  # backend-specific keys
    # The last snapshot kept in a file for restarts (savefile.py): this file, or None for the
    # default place (`savefile.default_path`), or none at all when `keep_snapshot` is false.
    snapshot_file: Path | None = None
    keep_snapshot: bool = True
    # Server processes that load this registry at the same time (`workers: N`): a backend that
    # loads in parts on its own (sqlite's load_processes: auto) takes this share of the cores.
    loaders: int = 1
