"""A real etcd for the tests: Debian's etcd-server on free loopback ports, its data in a folder
of its own. `stop()` and `start()` take it away and bring it back on the same data and ports."""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.peers import free_port
from internal_dns.registry.etcd import EtcdStore, Settings
from internal_dns.registry.etcd.codec import range_end

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
START_WITHIN = 30.0  # seconds etcd may take to answer before a test fails


class EtcdServer:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.client_port, self.peer_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, client_port: int | None = None) -> None:
        """Start etcd on its data folder; `client_port`: answer on that port instead, for once
        (a change made there is unseen by servers following the usual one)."""
        assert self.process is None, "etcd is running"
        url = f"http://127.0.0.1:{client_port or self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            ETCD,
            "--name",
            "test",
            "--data-dir",
            str(self.data_dir / "data"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"test={peer}",
            "--quota-backend-bytes",
            str(2 * 1024**3),
            "--log-outputs",
            str(self.data_dir / "etcd.log"),
            "--logger",
            "zap",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_WITHIN
        while True:
            try:
                self.post("/v3/maintenance/status", {}, url=url)
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"etcd did not start: see {self.data_dir / 'etcd.log'}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def post(self, path: str, body: dict[str, Any], url: str | None = None) -> Any:
        request = urllib.request.Request(f"{url or self.url}{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def revision(self, url: str | None = None) -> int:
        return int(self.post("/v3/maintenance/status", {}, url=url)["header"]["revision"])

    def compact(self, revision: int | None = None, url: str | None = None) -> int:
        """Compact the history up to `revision` (default: the current one); returns it."""
        revision = revision or self.revision(url)
        self.post("/v3/kv/compaction", {"revision": revision, "physical": True}, url=url)
        return revision

    def store(self, prefix: str, url: str | None = None) -> EtcdStore:
        return EtcdStore(Settings((url or self.url,), prefix, 5.0))

    def registry(self, prefix: str) -> dict[str, Any]:
        """The `registry:` section of a config on this etcd and prefix."""
        return {"backend": "etcd", "endpoints": [self.url], "prefix": prefix, "timeout": 5}

    def empty_registry(self, folder: Path) -> Iterator[Path]:
        """A config whose registry is a new, empty prefix here; the prefix is deleted after."""
        prefix = f"/test-{uuid.uuid4().hex[:12]}/"
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump({"listen": [{"address": "127.0.0.1", "port": 0}], "registry": self.registry(prefix)}))
        yield config
        self.delete_prefix(prefix)

    def delete_prefix(self, prefix: str) -> None:
        key = prefix.encode()
        self.post("/v3/kv/deleterange", {"key": _b64(key), "range_end": _b64(range_end(key))})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_shared: EtcdServer | None = None


def shared_etcd() -> EtcdServer:
    """One etcd for the whole test run (each user takes a prefix of its own), stopped at exit."""
    global _shared
    if _shared is None:
        folder = Path(tempfile.mkdtemp(prefix="internal-dns-etcd-"))
        server = EtcdServer(folder)
        server.start()

        def done() -> None:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(done)
        _shared = server
    return _shared
