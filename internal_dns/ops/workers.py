"""`workers: N`: N server processes sharing the listeners through SO_REUSEPORT.

The process started by `internal-dns serve` becomes a supervisor: it binds nothing itself, starts
N workers (`internal-dns serve --worker I`), restarts one that dies (waiting longer each time it
dies young), and on SIGTERM or SIGINT stops them all. Each worker is a whole server: it loads the
registry, forwards, and serves its own operator listener on `metrics.port + I` (so each is a
scrape target of its own); a query log file gets the suffix `.I`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Any

from internal_dns.config import Config

RESTART_DELAY = 1.0  # after a worker dies; doubled each time it dies within STABLE seconds
MAX_RESTART_DELAY = 30.0
STABLE = 60.0
STOP_GRACE = 10.0


def worker_config(config: Config, index: int) -> Config:
    """What worker `index` runs: its own operator port and query log file, and its share of the
    cores for a load in parts (every worker loads the registry at the same time)."""
    changes: dict[str, Any] = {"registry": dataclasses.replace(config.registry, loaders=config.workers)}
    if config.metrics is not None:
        changes["metrics"] = dataclasses.replace(config.metrics, port=config.metrics.port + index)
    if config.query_log not in (None, "-"):
        changes["query_log"] = f"{config.query_log}.{index}"
    return dataclasses.replace(config, **changes)


class Supervisor:
    def __init__(self, config_path: str, count: int, log: Any = print):
        self.config_path = config_path
        self.count = count
        self.log = log
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.delay: dict[int, float] = {}
        self.stopping = False

    def command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "internal_dns.cli", "serve", "-c", self.config_path, "--worker", str(index)]

    def start(self, index: int) -> None:
        # Under systemd each worker feeds the watchdog itself (NotifyAccess=all): WATCHDOG_PID
        # names the supervisor, which would make a worker think the watchdog is not its own.
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
        self.children[index] = subprocess.Popen(self.command(index), env=env)
        self.started_at[index] = time.monotonic()
        self.log(f"worker {index} started (pid {self.children[index].pid})")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        self.log(f"starting {self.count} workers")
        for i in range(self.count):
            self.start(i)
        restart_at: dict[int, float] = {}
        while not self.stopping:
            now = time.monotonic()
            for i, child in list(self.children.items()):
                code = child.poll()
                if code is None or i in restart_at:
                    continue
                lived = now - self.started_at[i]
                delay = RESTART_DELAY if lived >= STABLE else min(self.delay.get(i, RESTART_DELAY / 2) * 2, MAX_RESTART_DELAY)
                self.delay[i] = delay
                self.log(f"worker {i} exited with {code} after {lived:.1f} s; restarting it in {delay:.0f} s")
                restart_at[i] = now + delay
            for i, when in list(restart_at.items()):
                if now >= when and not self.stopping:
                    del restart_at[i]
                    self.start(i)
            time.sleep(0.1)
        return self.stop()

    def _on_signal(self, signum: int, _: Any) -> None:
        self.stopping = True

    def _on_hangup(self, signum: int, _: Any) -> None:
        """Each worker reloads (its config and registry) on its own."""
        self.log("SIGHUP: telling the workers to reload")
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        self.log("stopping the workers")
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        worst = 0
        for i, child in self.children.items():
            try:
                code = child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"worker {i} did not stop in {STOP_GRACE:.0f} s: killed")
                child.kill()
                code = child.wait()
            worst = worst or (code if code > 0 else 0)
        self.log("stopped")
        return worst
