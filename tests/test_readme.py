"""Every `dig` example of README.md, run against a server on the embedded registry, prints what the README shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import EMBEDDED_ZONES, ROOT
from tests.fake_upstream import FakeUpstream
from tests.readme_examples import README, examples, normalise, run


def test_readme_has_examples() -> None:
    assert len(examples(README.read_text())) >= 25


def test_readme_dig_examples_match_the_server(start_server: Any) -> None:
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    settings = {k: v for k, v in example.items() if k not in ("listen", "registry", "metrics")}
    upstream = FakeUpstream()  # forwarding as in the example, but to loopback, never the machine's resolver
    settings.update(upstreams=[upstream.address], forward={"enabled": True})
    server = start_server(registry=Path(EMBEDDED_ZONES), **settings)
    for command, expected in examples(README.read_text()):
        assert expected, f"README shows no output for: {command}"
        assert normalise(run(command, server.port)) == normalise(expected), command
    upstream.close()
