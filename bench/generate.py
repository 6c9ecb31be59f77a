"""A registry of any size in the `files` backend's format (SPEC §1), for the benchmarks.

Networks `net0000`, `net0001`, ... each get a file of their own (`zones/`-style), with their apps,
machines and peers; `regions.yaml` is the embedded regions table. Everything is derived from a
seeded random generator, so the same flags give the same registry.
"""

from __future__ import annotations

import argparse
import random
import shutil
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
REGIONS_FILE = ROOT / "zones" / "regions.yaml"
PEERS_PER_NETWORK = 3  # two named peers and one interactive-* peer
GROUPS = ("app", "app", "worker")


@dataclass(frozen=True)
class Size:
    apps: int = 1000
    machines_per_app: int = 3
    networks: int = 10
    seed: int = 1

    def describe(self) -> str:
        return f"{self.apps} apps, {self.apps * self.machines_per_app} machines, {self.networks} networks"


def network_name(k: int) -> str:
    return f"net{k:04d}"


def app_name(i: int) -> str:
    return f"app-{i:06d}"


def prefix6(k: int) -> IPv6Network:
    return IPv6Network(f"fdaa:{k >> 16:x}:{k & 0xFFFF:x}::/48")


def prefix4(k: int) -> IPv4Network:
    # /20s of 10.0.0.0/8: 4096 networks of up to 4094 dual-stack machines each
    return IPv4Network((int(IPv4Address("10.0.0.0")) + (k << 12), 20))


def region_codes() -> list[str]:
    data = yaml.safe_load(REGIONS_FILE.read_text())
    return sorted(r["code"] for r in data["regions"])


def network_document(k: int, size: Size, regions: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Network k with the apps i where i % networks == k, and their machines."""
    rng = random.Random(f"{size.seed}:{k}")
    p6, p4 = prefix6(k), prefix4(k)
    apps: list[dict[str, Any]] = []
    machines: list[dict[str, Any]] = []
    host = 0
    for i in range(k, size.apps, size.networks):
        host += 1
        apps.append(
            {"name": app_name(i), "network": network_name(k), "flycast": [{"ip": str(p6.network_address + (1 << 64) + host)}]}
        )
        for j in range(size.machines_per_app):
            host += 1
            machines.append(
                {
                    "id": f"{rng.getrandbits(56):014x}",
                    "app": app_name(i),
                    "region": rng.choice(regions),
                    "state": "started" if rng.random() < 0.9 else "stopped",
                    "process_group": GROUPS[j % len(GROUPS)],
                    "ip6": str(IPv6Address(int(p6.network_address) + (2 << 64) + host)),
                    "ip4": str(p4.network_address + host),
                    "metadata": {"role": "primary" if j == 0 else "replica"},
                }
            )
    peers = [
        {
            "name": "laptop",
            "network": network_name(k),
            "ip6": str(p6.network_address + (3 << 64) + 1),
            "region": rng.choice(regions),
        },
        {"name": "ci", "network": network_name(k), "ip6": str(p6.network_address + (3 << 64) + 2)},
        {"name": "interactive-1", "network": network_name(k), "ip6": str(p6.network_address + (3 << 64) + 3)},
    ]
    return {
        "networks": [{"name": network_name(k), "prefix6": str(p6), "prefix4": str(p4)}],
        "apps": apps,
        "machines": machines,
        "peers": peers,
    }


def write_registry(folder: Path, size: Size) -> Path:
    """Write the registry under `folder` (emptied first) and return it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(REGIONS_FILE, folder / "regions.yaml")
    regions = region_codes()
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for k in range(size.networks):
        doc = network_document(k, size, regions)
        with (folder / f"{network_name(k)}.yaml").open("w") as out:
            yaml.dump(doc, out, Dumper=dumper, sort_keys=False, default_flow_style=None, width=200)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--apps", type=int, default=Size.apps)
    parser.add_argument("--machines-per-app", type=int, default=Size.machines_per_app)
    parser.add_argument("--networks", type=int, default=Size.networks)
    parser.add_argument("--seed", type=int, default=Size.seed)
    args = parser.parse_args()
    size = Size(args.apps, args.machines_per_app, args.networks, args.seed)
    write_registry(args.folder, size)
    print(f"{args.folder}: {size.describe()}")


if __name__ == "__main__":
    main()
