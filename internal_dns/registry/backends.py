"""Backends by name, as the config's `registry.backend` selects them."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from internal_dns.config import RegistryConfig
from internal_dns.registry.backend import Backend
from internal_dns.registry.files import FilesBackend


def make_backend(config: RegistryConfig, reactor: Any, clock: IReactorTime) -> Backend:
    if config.backend == "files":
        return FilesBackend(config.path, clock, config.poll_interval)
    raise ValueError(f"unknown registry backend {config.backend!r}")
