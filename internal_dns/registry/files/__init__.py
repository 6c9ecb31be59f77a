"""The `files` backend as a package: the folder read (`folder`), the server's backend that polls
it (`backend`), and the registry command's store (`store`); this module is its entry point of
`internal_dns.backends`, and the face the rest of the project reads a folder through.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from internal_dns.registry import savefile
from internal_dns.registry.files.backend import FilesBackend
from internal_dns.registry.files.folder import PARTS_FROM_BYTES, load_documents, load_snapshot
from internal_dns.registry.files.store import FilesStore
from internal_dns.registry.parts import processes_help, processes_option

__all__ = ["PLUGIN", "FilesBackend", "FilesStore", "load_documents", "load_snapshot"]


class FilesPlugin:
    """The `files` backend as an entry point of `internal_dns.backends`."""

    # path and poll_interval are the common keys
    options: dict[str, str] = {
        "load_processes": processes_help(
            f"a folder of {PARTS_FROM_BYTES // 2**20} MiB of YAML or more, its files parsed by them"
        ),
    }

    def check(self, options: Any) -> None:
        processes_option(options)

    def backend(self, config: Any, reactor: Any, clock: IReactorTime) -> FilesBackend:
        backend = FilesBackend(
            config.path,
            clock,
            config.poll_interval or 1.0,
            load_processes=processes_option(config.options),
            loaders=config.loaders,
        )
        backend.saves = savefile.configured(config, backend.registry())
        return backend

    def store(self, config: Any) -> Any:
        return FilesStore(config.path)

    def where(self, config: Any) -> str:
        """`internal-dns check` names a files registry by its folder."""
        return str(config.path)


PLUGIN = FilesPlugin()
