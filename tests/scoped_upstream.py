"""Run in a private network namespace (`unshare --net`) by tests/test_upstreams.py: a resolv.conf
nameserver with a zone index (`fe80::53%idns0`) is asked over UDP and TCP on its own interface.

A link-local address is only reachable with its zone: the namespace gets a veth pair, one end
holding fe80::53, and the FakeUpstream listens there on port 53 (free in a namespace of its own).
Nothing leaves the namespace. Prints `ok` and exits 0, or fails with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from twisted.internet import reactor, task

from internal_dns.config import parse_config
from tests.conftest import EMBEDDED_ZONES, WAIT, RunningServer, base_config
from tests.fake_upstream import FakeUpstream

INTERFACE = "idns0"
ADDRESS = f"fe80::53%{INTERFACE}"


def network() -> None:
    for command in (
        "ip link set lo up",
        f"ip link add {INTERFACE} type veth peer name idns1",
        f"ip link set {INTERFACE} up",
        "ip link set idns1 up",
        f"ip -6 addr add fe80::53/64 dev {INTERFACE} nodad",
    ):
        subprocess.run(command.split(), check=True, timeout=WAIT)


def main() -> None:
    network()
    upstream = FakeUpstream(ADDRESS, port=53)
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            conf = Path(folder) / "resolv.conf"
            conf.write_text(f"nameserver {ADDRESS}\n")
            raw = base_config(EMBEDDED_ZONES, forward={"enabled": True, "resolv_conf": str(conf)})
            server = RunningServer(reactor, parse_config(raw, "scoped.yaml"), task.Clock())
            try:
                labels = [u.label for u in server.service.forwarder.upstreams]
                assert labels == [f"[{ADDRESS}]:53"], labels
                udp = server.ask("www.example.test", "A")
                assert udp.addresses("A") == ["192.0.2.10"], udp.msg
                tcp = server.ask("www.example.test", "AAAA", tcp=True)
                assert tcp.addresses("AAAA") == ["2001:db8::10"], tcp.msg
                assert [r.transport for r in upstream.received] == ["udp", "tcp"], upstream.received
            finally:
                server.stop()
    finally:
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
        thread.join(WAIT)
        upstream.close()
    print("ok")


if __name__ == "__main__":
    main()
    sys.exit(0)
