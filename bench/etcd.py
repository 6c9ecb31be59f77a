"""A throwaway etcd for the benchmarks: Debian's etcd-server on free loopback ports."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.peers import free_port


@contextmanager
def etcd(folder: Path, quota_gb: int = 8, idle: bool = False) -> Iterator[str]:
    """Run etcd with its data in `folder` (emptied); yields its client URL. `idle`: at the idle
    scheduling class (`chrt --idle`, every thread), so that it runs only on cores nothing else
    wants: as an etcd on other hosts, which takes no CPU from the server's."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    command = [
        *(["chrt", "--idle", "0"] if idle else []),
        "etcd",
        "--name",
        "bench",
        "--data-dir",
        str(folder / "data"),
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"bench=http://127.0.0.1:{peer}",
        "--quota-backend-bytes",
        str(quota_gb * 1024**3),
        "--max-request-bytes",
        str(16 * 1024 * 1024),
    ]
    with (folder / "etcd.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}", method="POST"), timeout=1
                ) as r:
                    json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"etcd did not start: see {folder / 'etcd.log'}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)
