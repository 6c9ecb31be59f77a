"""The live stores (issue: registries that outgrow one machine): SQLite and etcd.

Propagation: `bench/propagation.py` on the benchmark's registry, etcd followed by three servers,
SQLite by one. The figures at size (a registry of a million machines loaded from each store, and
propagation once more at that size) are `bench/registry_size.py`'s, which uses the helpers here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench import propagation
from bench.etcd import etcd
from bench.generate import REGIONS_FILE, Size, network_document, region_codes
from internal_dns.registry import plugins
from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.settings import RegistryConfig

PREFIX = "/internal-dns/"
CHUNK = 20_000  # entities per Store.write: bounded memory and progress to print


@contextmanager
def store_options(out: Path, backend: str, idle: bool = False) -> Iterator[dict[str, Any]]:
    """The `registry:` config of an empty store of this kind (an etcd at idle priority: `etcd`)."""
    folder = out / f"store-{backend}"
    if backend == "etcd":
        with etcd(folder, idle=idle) as url:
            yield {"backend": "etcd", "endpoints": [url], "prefix": PREFIX}
    else:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        yield {"backend": "sqlite", "path": str(folder / "registry.db")}


def open_store(options: dict[str, Any]) -> plugins.Store:
    rest = {k: v for k, v in options.items() if k not in ("backend", "path")}
    config = RegistryConfig(backend=options["backend"], path=Path(options.get("path", ".")), options=rest)
    return plugins.load(options["backend"]).store(config)


def fill_generated(store: plugins.Store, size: Size) -> None:
    """The generated registry, written in chunks (not checked: it is valid by construction)."""
    regions = region_codes()
    pending: list[tuple[str, Mapping[str, Any], RawEntity | None]] = [
        ("regions", r, None) for r in yaml.safe_load(REGIONS_FILE.read_text())["regions"]
    ]
    for k in range(size.networks):
        doc = network_document(k, size, regions)
        for kind in ("networks", "apps", "machines", "peers"):
            pending += [(kind, item, None) for item in doc[kind]]
        if len(pending) >= CHUNK:
            store.write(pending, [])
            pending = []
    if pending:
        store.write(pending, [])


def figures(out: Path, changes: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for backend, servers in (("etcd", 3), ("sqlite", 1)):
        with store_options(out, backend) as options:
            store = open_store(options)
            try:
                result = propagation.run(out, options, store, servers, changes)
            finally:
                store.close()
        report[f"{backend}_propagation"] = result
        print(f"  {backend}: {changes} changes, {servers} server(s): {fmt(result)}", flush=True)
    return report


def fmt(result: dict[str, Any]) -> str:
    ms = result["ms"]
    return (
        f"p50 {ms['p50']} ms, p90 {ms['p90']} ms, p99 {ms['p99']} ms, max {ms['max']} ms;"
        f" writes p50 {result['write_ms']['p50']} ms; lost {result['lost']}"
    )
