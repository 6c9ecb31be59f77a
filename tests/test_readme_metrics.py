"""docs/operations.md's metrics table lists every family a running server exposes, and nothing it does not."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, RunningServer
from tests.fake_upstream import FakeUpstream
from tests.test_metrics import METRICS, scrape

StartServer = Callable[..., RunningServer]


def documented() -> set[str]:
    text = (ROOT / "docs/operations.md").read_text()
    section = text.split("## Metrics, health and query logs", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `internal_dns_"):
            continue
        previous = ""
        for name in re.findall(r"`([a-z_]+)`", row.split("|")[1]):
            if name.startswith("_"):  # `internal_dns_cache_hits_total`, `_misses_total`
                name = previous.rsplit("_", 2)[0] + name
            names.add(name)
            previous = name
    return names


def test_the_metrics_table_matches_the_families(start_server: StartServer, fake: FakeUpstream, tmp_path: Path) -> None:
    server = start_server(metrics=METRICS, upstreams=[fake.address], forward={"enabled": True}, query_log=str(tmp_path / "q.log"))
    exposed = {name + "_total" if kind == "counter" else name for name, kind in scrape(server).types.items()}
    assert documented() == exposed
