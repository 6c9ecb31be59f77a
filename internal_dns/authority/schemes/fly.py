"""Zone `internal` (SPEC §3): the Fly.io-style private names of one organization's network."""

from __future__ import annotations

import re
from collections.abc import Iterable

from internal_dns.authority.geo import nearest_machines
from internal_dns.authority.health import healthy
from internal_dns.authority.views import View
from internal_dns.records import AAAA, EMPTY_NON_TERMINAL, SRV, TXT, Extra, Node, RecordSet, label_wire, srv_rdata, txt
from internal_dns.registry.model import AppIndex, Machine, NetworkIndex, Snapshot

# Any positive N without a leading zero (SPEC §3), however large: a label is at most 63 bytes,
# so int() stays cheap, and N beyond the machine count returns them all.
_TOP = re.compile(r"top([1-9][0-9]*)\Z")  # \Z: "$" would let "top1\n" through


def _addresses(machines: Iterable[Machine]) -> Node:
    """An address form's answer: its healthy machines, or all when none is (SPEC §3, Health)."""
    answered, failed_open = healthy(machines)
    return Node({AAAA: RecordSet(tuple(m.packed6 for m in answered), rotates=True)}, fail_open=failed_open)


_VM = b"\x02vm"


def _services(app: AppIndex, service: str, protocol: str, origin: str) -> Node | None:
    """`_<name>._<protocol>.<app>`: SRV to each machine `<app>` would answer, by its `<id>.vm`
    name, with that name's AAAA in the additional section (owner: `<id>.vm` before the app's
    labels, which sit two below the question's)."""
    port = app.app.port(service, protocol)
    if port is None:
        return None
    answered, failed_open = healthy(app.started)
    suffix = f".vm.{app.app.name}.{origin}"
    return Node(
        {SRV: RecordSet(tuple(srv_rdata(port, m.id + suffix) for m in answered))},
        tuple(Extra(2, label_wire(m.id) + _VM, AAAA, (m.packed6,)) for m in answered),
        failed_open,
    )


def _txt(value: str) -> Node:
    return Node({TXT: txt(value)})


def vms_txt(machines: Iterable[Machine]) -> str:
    return ",".join(f"{m.id} {m.region}" for m in machines)


def regions_txt(machines: Iterable[Machine]) -> str:
    return ",".join(sorted({m.region for m in machines}))


def instances_txt(machines: Iterable[Machine]) -> str:
    return ";".join(f"instance={m.id},app={m.app},ip={m.ip6},region={m.region}" for m in machines)


def lookup(snapshot: Snapshot, view: View, labels: tuple[str, ...], origin: str) -> Node | None:
    net = snapshot.networks[view.network]
    last = labels[-1]
    if last.startswith("_"):
        return _network_wide(net, labels)
    app = net.apps.get(last)
    if app is None:
        return None
    return _app_form(snapshot, view, app, labels[:-1], origin)


def _network_wide(net: NetworkIndex, labels: tuple[str, ...]) -> Node | None:
    match labels:
        case ("_apps",):
            return _txt(",".join(net.app_names))
        case ("_peer",):
            return _txt(",".join(net.peer_names))
        case (name, "_peer"):
            peer = net.peers.get(name)  # interactive-* peers are not in this map
            return None if peer is None else Node({AAAA: RecordSet((peer.ip6.packed,))})
        case ("_instances",):
            return _txt(instances_txt(net.started))
        case ("all", "_instances"):
            return _txt(instances_txt(net.machines))
    return None


def _app_form(snapshot: Snapshot, view: View, app: AppIndex, rest: tuple[str, ...], origin: str) -> Node | None:
    started = app.started
    match rest:
        case () | ("global",):
            return _addresses(started)
        case ("vms",):
            return _txt(vms_txt(started))
        case ("all", "vms"):
            return _txt(vms_txt(app.machines))
        case ("regions",):
            return _txt(regions_txt(started))
        case ("all", "regions"):
            return _txt(regions_txt(app.machines))
        case ("vm",) | ("process",) | ("of",) | ("nearest", "of") | ("_metadata",) | ("kv", "_metadata") | (_, "kv", "_metadata"):
            return EMPTY_NON_TERMINAL
        case (machine_id, "vm"):
            machine = app.by_id.get(machine_id)
            if machine is None:
                return None
            return _addresses([machine] if machine.started else [])
        case (group, "process"):
            return _addresses(m for m in started if m.process_group == group)
        case (top, "nearest", "of"):
            match = _TOP.match(top)
            if match is None:
                return None
            candidates, failed_open = healthy(started)
            nearest = nearest_machines(candidates, view.region, snapshot.regions, int(match.group(1)))
            return Node({AAAA: RecordSet(tuple(m.packed6 for m in nearest))}, fail_open=failed_open)  # ordered: no rotation
        case (value, key, "kv", "_metadata"):
            return _addresses(m for m in started if _has_metadata(m, key, value))
        case (region,) if region in snapshot.regions:
            return _addresses(m for m in started if m.region == region)
        case (protocol,) if app.app.serves(protocol):
            return EMPTY_NON_TERMINAL
        case (service, protocol) if service.startswith("_"):
            return _services(app, service, protocol, origin)
    return None


def _has_metadata(machine: Machine, key: str, value: str) -> bool:
    # DNS names are case-insensitive, so metadata is matched the same way
    return any(k.lower() == key and v.lower() == value for k, v in machine.metadata.items())
