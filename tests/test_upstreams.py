"""Which upstreams the forwarder asks (SPEC §7): each one once, however often the config or
resolv.conf names it (one metric series each), and a resolv.conf nameserver's IPv6 zone index
kept, without which a link-local address cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from internal_dns.forward.upstream import Upstream, resolv_conf_upstreams
from tests.conftest import ROOT, RunningServer
from tests.fake_upstream import FakeUpstream
from tests.processes import INTERNAL_DNS, STOP_WAIT, Process, serve
from tests.test_cli import free_port, run, write_config
from tests.test_metrics import METRICS, scrape

StartServer = Callable[..., RunningServer]


def labels(upstreams: list[Upstream]) -> list[str]:
    return [u.label for u in upstreams]


def series_of(server: RunningServer, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of one family, repeats included."""
    return [sample.labels for sample in scrape(server).samples if sample.name == name]


# --- repeats ---------------------------------------------------------------------------------------


def test_repeated_config_upstreams_are_asked_once(start_server: StartServer, fake: FakeUpstream) -> None:
    other = FakeUpstream()
    try:
        same = f"[127.0.0.1]:{fake.port}"  # the first one, written another way
        server = start_server(
            upstreams=[fake.address, same, other.address, fake.address], forward={"enabled": True}, metrics=METRICS
        )
        assert labels(server.service.forwarder.upstreams) == [fake.address, other.address]
        assert server.config.warnings == (
            f"test-config.yaml: upstreams[1]: '{same}' repeats upstreams[0]; ignored",
            f"test-config.yaml: upstreams[3]: '{fake.address}' repeats upstreams[0]; ignored",
        )
        assert server.ask("www.example.test", "A").addresses("A") == ["192.0.2.10"]
        assert series_of(server, "internal_dns_upstream_healthy") == [{"upstream": fake.address}, {"upstream": other.address}]
        s = scrape(server)
        assert s.value("internal_dns_forward_requests_total", upstream=fake.address, result="success") == 1
        assert len(series_of(server, "internal_dns_upstream_probes_total")) == 4  # 2 upstreams, 2 results
    finally:
        other.close()


def test_repeated_resolv_conf_nameservers_are_asked_once(start_server: StartServer, tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver ::1\nnameserver 127.0.0.1\nnameserver 0:0::1\noptions edns0\n")
    assert labels(resolv_conf_upstreams(conf, [])) == ["127.0.0.1:53", "[::1]:53"]
    # No question is asked: nothing is sent to port 53.
    server = start_server(forward={"enabled": True, "resolv_conf": str(conf)}, metrics=METRICS)
    assert labels(server.service.forwarder.upstreams) == ["127.0.0.1:53", "[::1]:53"]
    assert series_of(server, "internal_dns_upstream_healthy") == [{"upstream": "127.0.0.1:53"}, {"upstream": "[::1]:53"}]


def test_check_and_serve_warn_of_a_repeated_upstream(tmp_path: Path, registry: Path, processes: list[Process]) -> None:
    upstream = f"127.0.0.1:{free_port()}"  # never asked: only names in the zones are
    config = write_config(tmp_path, 5353, upstreams=[upstream, upstream])
    warning = f"config warning: {config}: upstreams[1]: '{upstream}' repeats upstreams[0]; ignored"
    checked = run(INTERNAL_DNS, "check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert warning in checked.stderr
    proc, _ = serve(processes, tmp_path, lambda port: write_config(tmp_path, port, upstreams=[upstream, upstream]))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=STOP_WAIT)
    assert proc.returncode == 0, err
    assert warning in err
    assert f"forwarding to {upstream}; cache" in err  # once


# --- IPv6 zone indexes ------------------------------------------------------------------------------


def test_resolv_conf_nameserver_keeps_its_zone_index(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver fe80::1%eth0\nnameserver fe80::1%eth1\nnameserver fe80::1%eth0\n")
    found = resolv_conf_upstreams(conf, [])
    assert [(u.host, u.port) for u in found] == [("fe80::1%eth0", 53), ("fe80::1%eth1", 53)]
    assert labels(found) == ["[fe80::1%eth0]:53", "[fe80::1%eth1]:53"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private network namespace (CI runs as root, and runs it)")
def test_scoped_resolv_conf_nameserver_answers_over_udp_and_tcp() -> None:
    # In a network namespace of its own (a veth pair holding fe80::53): nothing leaves it. As root
    # a missing tool is a failure, not a skip: `make test` installs them.
    for tool in ("unshare", "ip"):
        assert shutil.which(tool), f"{tool} is not installed: `make test` installs it (DEBIAN_PACKAGES)"
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.scoped_upstream"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
