"""The registry: the model of SPEC §1 and the backends that deliver it as snapshots."""

from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.model import Document, RegistryError, Snapshot

__all__ = ["Document", "RegistryError", "Snapshot", "build_snapshot"]
