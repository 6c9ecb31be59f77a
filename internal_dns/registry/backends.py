"""Backends by name, as the config's `registry.backend` selects them."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from twisted.internet.interfaces import IReactorTime

from internal_dns.config import RegistryConfig
from internal_dns.registry.backend import Backend
from internal_dns.registry.files import FilesBackend


def make_backend(config: RegistryConfig, reactor: Any, clock: IReactorTime) -> Backend:
    if config.backend == "files":
        return FilesBackend(config.path, clock, config.poll_interval)
    # A third-party backend: an entry point in the `internal_dns.backends` group naming a
    # callable (config, reactor, clock) -> Backend. The config has checked that the name exists.
    for entry in entry_points(group="internal_dns.backends"):
        if entry.name == config.backend:
            factory = entry.load()
            backend: Backend = factory(config, reactor, clock)
            return backend
    raise ValueError(f"unknown registry backend {config.backend!r}")
