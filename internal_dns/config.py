"""The YAML config (SPEC §9) as frozen dataclasses; every error names the file and the key.

Each part owns the dataclass of its own section (`registry/settings.py`, `authority/settings.py`,
`forward/settings.py`, `transport/settings.py`); this module reads the file into them, holds the
service's own keys, and checks what crosses sections. The parts import their settings, never this module.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from internal_dns.authority.settings import PacketCacheConfig, ViewConfig
from internal_dns.forward.settings import CacheConfig, ForwardConfig, parse_hostport
from internal_dns.registry import plugins
from internal_dns.registry.settings import RegistryConfig
from internal_dns.transport.settings import ListenConfig, RateLimitConfig, TcpConfig

SCHEMES = ("fly", "flycast", "railway")


class ConfigError(Exception):
    def __init__(self, path: str, key: str, reason: str):
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    address: str = "127.0.0.1"
    port: int = 9153  # the service's own listener for /metrics, /healthz, /readyz


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    listen: tuple[ListenConfig, ...]
    registry: RegistryConfig
    zones: Mapping[str, str]
    views: tuple[ViewConfig, ...] = ()
    region: str | None = None
    upstreams: tuple[tuple[str, int], ...] | None = None  # (address, port); None: resolv.conf
    metrics: MetricsConfig | None = None
    ttl: int = 5
    edns_payload: int = 1232
    tcp: TcpConfig = TcpConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    forward: ForwardConfig = ForwardConfig()
    cache: CacheConfig = CacheConfig()
    packet_cache: PacketCacheConfig = PacketCacheConfig()
    query_log: str | None = None  # a path (relative to the config file), or "-" for standard output; None: off
    server_id: str = field(default_factory=socket.gethostname)
    workers: int = 1  # processes sharing the listeners (SO_REUSEPORT)
    reuse_port: bool = True  # listeners shared with a server started on the same config (upgrades)
    warnings: tuple[str, ...] = ()  # what was accepted but is likely a mistake, for `check` and the log


_TOP_KEYS = {
    "listen",
    "registry",
    "zones",
    "views",
    "region",
    "upstreams",
    "metrics",
    "ttl",
    "edns_payload",
    "tcp",
    "rate_limit",
    "server_id",
    "forward",
    "cache",
    "packet_cache",
    "query_log",
    "workers",
    "reuse_port",
}


class _Reader:
    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason)

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, not {type(value).__name__}")
        return value

    def integer(self, value: Any, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low} to {high}, not {value!r}")
        return value

    def number(self, value: Any, key: str, low: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise self.fail(key, f"must be a number >= {low}, not {value!r}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, not {value!r}")
        return value

    def unknown(self, raw: Mapping[str, Any], allowed: set[str], key: str) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            where = f"{key}." if key else ""
            raise self.fail(f"{where}{extra[0]}", f"unknown key (known: {', '.join(sorted(allowed))})")


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot be read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(p), where, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    return parse_config(raw or {}, str(p), base=p.parent)


def parse_config(raw: Any, path: str = "<config>", base: Path = Path(".")) -> Config:
    r = _Reader(path)
    top = r.mapping(raw, "")
    r.unknown(top, _TOP_KEYS, "")

    listen = tuple(_listen(r, item, f"listen[{i}]") for i, item in enumerate(_list(r, top.get("listen"), "listen")))
    if not listen:
        raise r.fail("listen", "at least one listener is needed")

    reg_raw = r.mapping(top.get("registry", {}), "registry")
    backend = r.text(reg_raw.get("backend", "files"), "registry.backend")
    known_backends = plugins.names()
    if backend not in known_backends:
        raise r.fail("registry.backend", f"unknown backend {backend!r} (known: {', '.join(known_backends)})")
    plugin = plugins.load(backend)
    reg_path = Path(r.text(reg_raw.get("path", "zones"), "registry.path"))
    if not reg_path.is_absolute():
        reg_path = base / reg_path  # relative to the config file, not the working directory
    poll = (
        r.number(reg_raw["poll_interval"], "registry.poll_interval", 0.01) if reg_raw.get("poll_interval") is not None else None
    )
    max_age = r.number(reg_raw.get("max_age", 120.0), "registry.max_age", 1.0)
    snapshot_raw = reg_raw.get("snapshot_file")
    snapshot_file: Path | None = None
    if snapshot_raw is not None and snapshot_raw is not False:
        snapshot_file = Path(r.text(snapshot_raw, "registry.snapshot_file"))
        if not snapshot_file.is_absolute():
            snapshot_file = base / snapshot_file
    common = ("backend", "path", "poll_interval", "max_age", "snapshot_file")
    options = {k: v for k, v in reg_raw.items() if k not in common}
    if plugin.options is not None:  # None: a backend that takes whatever it is given
        r.unknown(reg_raw, set(common) | set(plugin.options), "registry")
    try:
        plugin.check(options)
    except ValueError as exc:
        key, _, reason = str(exc).partition(": ")
        raise r.fail(f"registry.{key}", reason) from None
    registry = RegistryConfig(backend, reg_path, poll, max_age, options, snapshot_file, snapshot_raw is not False)

    zones_raw = r.mapping(top.get("zones", {"internal": "fly"}), "zones")
    zones: dict[str, str] = {}
    for zone, scheme in zones_raw.items():
        name = str(zone).strip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            raise r.fail(f"zones.{zone}", "not a valid zone name")
        if scheme not in SCHEMES:
            raise r.fail(f"zones.{zone}", f"unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
        zones[name] = scheme
    if not zones:
        raise r.fail("zones", "at least one zone is needed")

    views = []
    for i, item in enumerate(_list(r, top.get("views"), "views")):
        key = f"views[{i}]"
        m = r.mapping(item, key)
        r.unknown(m, {"source", "network"}, key)
        try:
            source = ipaddress.ip_network(r.text(m.get("source"), f"{key}.source"), strict=False)
        except ValueError as exc:
            raise r.fail(f"{key}.source", f"not a CIDR prefix ({exc})") from exc
        views.append(ViewConfig(source, r.text(m.get("network"), f"{key}.network")))

    region = top.get("region")
    if region is not None:
        region = r.text(region, "region").lower()

    upstreams = None
    warnings: list[str] = []
    if top.get("upstreams") is not None:
        first_at: dict[tuple[str, int], int] = {}  # each upstream once, where it first appears
        for i, u in enumerate(_list(r, top["upstreams"], "upstreams")):
            upstream = _upstream(r, u, f"upstreams[{i}]")
            if upstream in first_at:
                warnings.append(f"{path}: upstreams[{i}]: {u!r} repeats upstreams[{first_at[upstream]}]; ignored")
            else:
                first_at[upstream] = i
        upstreams = tuple(first_at)

    metrics = None
    if top.get("metrics") is not None:
        m = r.mapping(top["metrics"], "metrics")
        r.unknown(m, {"address", "port"}, "metrics")
        metrics = MetricsConfig(
            r.text(m.get("address", "127.0.0.1"), "metrics.address"),
            r.integer(m.get("port", 9153), "metrics.port", 0, 65535),
        )

    tcp_raw = r.mapping(top.get("tcp", {}), "tcp")
    r.unknown(
        tcp_raw, {"idle_timeout", "max_connections", "max_per_source", "message_timeout", "max_unsent", "max_pipelined"}, "tcp"
    )
    tcp_default = TcpConfig()
    tcp = TcpConfig(
        r.number(tcp_raw.get("idle_timeout", tcp_default.idle_timeout), "tcp.idle_timeout", 0.1),
        r.integer(tcp_raw.get("max_connections", tcp_default.max_connections), "tcp.max_connections", 1, 1_000_000),
        r.integer(tcp_raw.get("max_per_source", tcp_default.max_per_source), "tcp.max_per_source", 1, 1_000_000),
        r.number(tcp_raw.get("message_timeout", tcp_default.message_timeout), "tcp.message_timeout", 0.1),
        r.integer(tcp_raw.get("max_unsent", tcp_default.max_unsent), "tcp.max_unsent", 1024, 64 * 1024 * 1024),
        r.integer(tcp_raw.get("max_pipelined", tcp_default.max_pipelined), "tcp.max_pipelined", 1, 65535),
    )

    limit_raw = r.mapping(top.get("rate_limit", {}), "rate_limit")
    r.unknown(limit_raw, {"qps", "burst", "slip", "max_sources"}, "rate_limit")
    limit_default = RateLimitConfig()
    qps = r.number(limit_raw.get("qps", limit_default.qps), "rate_limit.qps", 0)
    rate_limit = RateLimitConfig(
        qps,
        r.number(limit_raw.get("burst", max(limit_default.burst, qps)), "rate_limit.burst", 1),
        r.integer(limit_raw.get("slip", limit_default.slip), "rate_limit.slip", 0, 1_000_000),
        r.integer(limit_raw.get("max_sources", limit_default.max_sources), "rate_limit.max_sources", 1, 100_000_000),
    )

    fw = r.mapping(top.get("forward", {}), "forward")
    r.unknown(
        fw, {"enabled", "timeout", "deadline", "max_in_flight", "fail_threshold", "probe_interval", "resolv_conf"}, "forward"
    )
    forward = ForwardConfig(
        r.boolean(fw.get("enabled", True), "forward.enabled"),
        r.number(fw.get("timeout", 1.5), "forward.timeout", 0.01),
        r.number(fw.get("deadline", 4.0), "forward.deadline", 0.01),
        r.integer(fw.get("max_in_flight", 1024), "forward.max_in_flight", 1, 1_000_000),
        r.integer(fw.get("fail_threshold", 3), "forward.fail_threshold", 1, 1000),
        r.number(fw.get("probe_interval", 2.0), "forward.probe_interval", 0.01),
        Path(r.text(str(fw.get("resolv_conf", "/etc/resolv.conf")), "forward.resolv_conf")),
    )
    ca = r.mapping(top.get("cache", {}), "cache")
    r.unknown(ca, {"enabled", "max_entries", "max_bytes", "max_ttl", "serve_stale", "stale_ttl", "max_stale"}, "cache")
    cache = CacheConfig(
        r.boolean(ca.get("enabled", True), "cache.enabled"),
        r.integer(ca.get("max_entries", 10000), "cache.max_entries", 1, 100_000_000),
        r.integer(ca.get("max_bytes", CacheConfig().max_bytes), "cache.max_bytes", 65536, 2**40),
        r.integer(ca.get("max_ttl", 86400), "cache.max_ttl", 1, 2**31 - 1),
        r.boolean(ca.get("serve_stale", True), "cache.serve_stale"),
        r.integer(ca.get("stale_ttl", 30), "cache.stale_ttl", 0, 86400),
        r.number(ca.get("max_stale", 86400), "cache.max_stale", 0),
    )

    pc = r.mapping(top.get("packet_cache", {}), "packet_cache")
    r.unknown(pc, {"max_entries", "max_bytes"}, "packet_cache")
    packet_cache = PacketCacheConfig(
        r.integer(pc.get("max_entries", PacketCacheConfig().max_entries), "packet_cache.max_entries", 1, 100_000_000),
        r.integer(pc.get("max_bytes", PacketCacheConfig().max_bytes), "packet_cache.max_bytes", 65536, 2**40),
    )

    query_log = None
    if top.get("query_log") is not None:
        query_log = r.text(top["query_log"], "query_log")  # a file path, or "-" for standard output
        if query_log != "-" and not Path(query_log).is_absolute():
            query_log = str(base / query_log)  # relative to the config file, as registry.path is

    workers = r.integer(top.get("workers", 1), "workers", 1, 256)
    reuse_port = r.boolean(top.get("reuse_port", True), "reuse_port")
    if workers > 1 and not reuse_port:
        raise r.fail("reuse_port", "workers share their listeners through SO_REUSEPORT: it cannot be off when workers > 1")
    if workers > 1:
        for i, listener in enumerate(listen):
            if listener.port == 0:  # each worker would get a port of its own
                raise r.fail(f"listen[{i}].port", "must be a fixed port when workers > 1")
        if metrics is not None and metrics.port == 0:
            raise r.fail("metrics.port", "must be a fixed port when workers > 1 (worker i listens on port + i)")

    kwargs: dict[str, Any] = {}
    if "server_id" in top:
        kwargs["server_id"] = r.text(top["server_id"], "server_id")
    return Config(
        path=path,
        listen=listen,
        registry=registry,
        zones=zones,
        views=tuple(views),
        region=region,
        upstreams=upstreams,
        metrics=metrics,
        ttl=r.integer(top.get("ttl", 5), "ttl", 0, 2**31 - 1),
        edns_payload=r.integer(top.get("edns_payload", 1232), "edns_payload", 512, 65535),
        tcp=tcp,
        rate_limit=rate_limit,
        forward=forward,
        cache=cache,
        packet_cache=packet_cache,
        query_log=query_log,
        workers=workers,
        reuse_port=reuse_port,
        warnings=tuple(warnings),
        **kwargs,
    )


def _list(r: _Reader, value: Any, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise r.fail(key, f"must be a list, not {type(value).__name__}")
    return value


def _upstream(r: _Reader, value: Any, key: str) -> tuple[str, int]:
    try:
        return parse_hostport(r.text(value, key))
    except ValueError as exc:
        raise r.fail(key, str(exc)) from None


def _listen(r: _Reader, item: Any, key: str) -> ListenConfig:
    m = r.mapping(item, key)
    r.unknown(m, {"address", "port", "network", "region"}, key)
    address = r.text(m.get("address"), f"{key}.address")
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise r.fail(f"{key}.address", f"not an IP address: {address!r}") from exc
    port = r.integer(m.get("port", 53), f"{key}.port", 0, 65535)
    network = r.text(m["network"], f"{key}.network") if m.get("network") is not None else None
    region = r.text(m["region"], f"{key}.region").lower() if m.get("region") is not None else None
    return ListenConfig(address, port, network, region)
