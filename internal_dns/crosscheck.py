"""Config entries that name what the registry does not have: `check` reports them as errors, and a
running server logs them with each snapshot (a registry may lose a network the config names)."""

from __future__ import annotations

from internal_dns.config import Config
from internal_dns.registry.model import Snapshot


def cross_check(config: Config, snapshot: Snapshot) -> list[str]:
    """Config entries that name what the registry does not have."""
    problems = []
    for i, view in enumerate(config.views):
        if view.network not in snapshot.networks:
            problems.append(f"{config.path}: views[{i}].network: unknown network {view.network!r}")
    for i, listener in enumerate(config.listen):
        if listener.network is not None and listener.network not in snapshot.networks:
            problems.append(f"{config.path}: listen[{i}].network: unknown network {listener.network!r}")
    for key, region in [("region", config.region)] + [(f"listen[{i}].region", li.region) for i, li in enumerate(config.listen)]:
        if region is not None and region not in snapshot.regions:
            problems.append(f"{config.path}: {key}: unknown region {region!r}")
    return problems
