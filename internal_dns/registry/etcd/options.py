"""The etcd backend's own `registry:` keys (endpoints, prefix, timeout), checked into `Settings`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)
DEFAULT_PREFIX = "/internal-dns/"
DEFAULT_TIMEOUT = 5.0

# Each key, with what it means (the plugin's `options`).
OPTIONS = {
    "endpoints": "etcd client URLs, tried in turn (default [http://127.0.0.1:2379])",
    "prefix": f"the key prefix the registry lives under (default {DEFAULT_PREFIX})",
    "timeout": f"seconds one request to etcd may take (default {DEFAULT_TIMEOUT:g})",
}


@dataclass(frozen=True, slots=True)
class Settings:
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT


def settings(options: Mapping[str, Any]) -> Settings:
    """The backend's own `registry:` keys, checked; ValueError('<key>: <reason>') names a bad one."""
    endpoints = options.get("endpoints", list(DEFAULT_ENDPOINTS))
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not isinstance(endpoints, list) or not endpoints:
        raise ValueError("endpoints: must be a list of http(s) URLs, such as [http://127.0.0.1:2379]")
    for i, url in enumerate(endpoints):
        if not isinstance(url, str):
            # the config's own error, not a TypeError
            raise ValueError(f"endpoints: entry {i + 1} must be an http(s) URL, not {type(url).__name__}")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
        except ValueError:
            raise ValueError(f"endpoints: {url!r} has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoints: {url!r} is not an http(s) URL such as http://127.0.0.1:2379")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"endpoints: {url!r}: give only scheme, host and port (the API path is found by asking etcd)")
    prefix = options.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix.endswith("/"):
        raise ValueError(f"prefix: must be a key prefix ending in '/', such as {DEFAULT_PREFIX!r}")
    timeout = options.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError("timeout: must be a number of seconds above 0")
    return Settings(tuple(url.rstrip("/") for url in endpoints), prefix, float(timeout))
