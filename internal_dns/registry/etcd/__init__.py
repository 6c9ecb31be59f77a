"""The `etcd` backend: the registry as JSON values under a key prefix of an etcd cluster, one key
per entity, followed live through a watch.

Under `prefix` ("/internal-dns/" by default):

    <prefix>regions/<code>
    <prefix>networks/<name>
    <prefix>apps/<network>/<name>
    <prefix>machines/<id>
    <prefix>peers/<network>/<name>

Each value is a JSON object with the fields SPEC §1's YAML format gives that entity (an app's
value holds its `name` and `network`, as in YAML). The key's names must be the value's (region
codes and app and peer names compared ignoring case, as the registry compares them); a key that
disagrees with its value, a key of another shape under the prefix, or a value that is not a JSON
object is left out with a line saying why, and the rest is served.

The package, by layer: `options` (the backend's `registry:` keys), `codec` (entities as keys and
values), `client` (the endpoints, and the prefix read at one revision, page by page), `watch`
(the changes after a revision), `backend` (the server's side, `EtcdBackend`: a `LiveBackend` that
reads the prefix, then follows a watch from the next revision) and `store` (the registry
command's side, `EtcdStore`: reads the same way, writes in transactions). This module is the
backend's entry point of `internal_dns.backends`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.internet.interfaces import IReactorTime

from internal_dns.registry import savefile
from internal_dns.registry.etcd.backend import EtcdBackend
from internal_dns.registry.etcd.options import OPTIONS, Settings, settings
from internal_dns.registry.etcd.store import EtcdStore

__all__ = ["PLUGIN", "EtcdBackend", "EtcdStore", "Settings", "settings"]


class EtcdPlugin:
    """The `etcd` backend as an entry point of `internal_dns.backends`."""

    options: ClassVar[dict[str, str]] = OPTIONS

    def check(self, options: Mapping[str, Any]) -> None:
        settings(options)

    def backend(self, config: Any, reactor: Any, clock: IReactorTime) -> EtcdBackend:
        backend = EtcdBackend(reactor, settings(config.options), config.poll_interval)
        backend.saves = savefile.configured(config, backend.registry())
        return backend

    def store(self, config: Any) -> EtcdStore:
        return EtcdStore(settings(config.options))


PLUGIN = EtcdPlugin()
