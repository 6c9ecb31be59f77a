"""The authority's settings: `views:` entries and the packet cache's bounds (`packet_cache:`)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network


@dataclass(frozen=True, slots=True)
class ViewConfig:
    source: IPv4Network | IPv6Network
    network: str


@dataclass(frozen=True, slots=True)
class PacketCacheConfig:
    max_entries: int = 100_000  # rendered questions and exact spellings together
    max_bytes: int = 32 * 1024 * 1024
