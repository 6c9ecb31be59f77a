"""Registry backends are plugins, found by name in the entry point group `internal_dns.backends`.

The built-in ones (files, sqlite, etcd) register there like any third-party package would:

    [options.entry_points]
    internal_dns.backends =
        mystore = mypackage.registry:PLUGIN

An entry point names a `BackendPlugin`: the backend's own `registry:` config keys, a check of
them, the server's `Backend` (backend.py), and the registry command's `Store` (read and write
entities; a backend without one serves, but `internal-dns registry` cannot change it). Every
backend is used alike: `internal-dns check` reads the whole registry through the Store, and
names it as the plugin's optional `where(config)` says (the backend's name without one).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from internal_dns.registry.backend import Backend
from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.settings import RegistryConfig

GROUP = "internal_dns.backends"


class Store(Protocol):
    """A registry's store as the registry command sees it: blocking calls, no reactor."""

    def describe(self) -> str: ...

    def read(self) -> list[RawEntity]:
        """Every entity, under the keys and sources the backend's server side gives them."""
        ...

    def write(self, puts: list[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: list[RawEntity]) -> None:
        """Put entities (kind, data, the entity it replaces or None) and delete entities (as
        read), as one change where the store allows it."""
        ...

    def close(self) -> None: ...


class BackendPlugin(Protocol):
    # The backend's own keys under `registry:` (besides backend, path, poll_interval, max_age),
    # each with what it means; None: any key is passed on, unchecked.
    options: Mapping[str, str] | None

    def check(self, options: Mapping[str, Any]) -> None:
        """Raise ValueError('<key>: <reason>') for a bad option."""
        ...

    def backend(self, config: RegistryConfig, reactor: Any, clock: IReactorTime) -> Backend: ...

    def store(self, config: RegistryConfig) -> Store: ...

    # Optional: `where(config) -> str`, how `internal-dns check` names the registry (see where()).


def names() -> tuple[str, ...]:
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


def load(name: str) -> BackendPlugin:
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            plugin: BackendPlugin = entry.load()
            return plugin
    raise ValueError(f"unknown registry backend {name!r} (known: {', '.join(names())})")


def make_backend(config: RegistryConfig, reactor: Any, clock: IReactorTime) -> Backend:
    return load(config.backend).backend(config, reactor, clock)


def where(config: RegistryConfig) -> str:
    """How `internal-dns check` names the registry: as its plugin's `where(config)` says (files:
    the folder), else by the backend's name."""
    named = getattr(load(config.backend), "where", None)
    return str(named(config)) if named is not None else config.backend
