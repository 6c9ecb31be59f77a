"""registry/model.py: the label and machine-id rules every name served must pass (SPEC §1: a name that
is not a valid DNS label where it must be one rejects the snapshot)."""

from __future__ import annotations

from typing import Any

import pytest

from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.model import NO_CHECKS, Document, RegistryError, Service, Snapshot, is_label


@pytest.mark.parametrize("name", ["a", "my-app", "My-App", "a1", "1a", "x" * 63, "0"])
def test_labels(name: str) -> None:
    assert is_label(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a.b", "a_b", "x" * 64, "é", "a b"])
def test_not_labels(name: str) -> None:
    assert not is_label(name)


def test_a_trailing_newline_is_no_label() -> None:
    assert not is_label("web\n")


def registry(app: str = "web", machine: str = "ab", peer: str = "p") -> dict[str, Any]:
    return {
        "regions": [{"code": "iad", "latitude": 38.95, "longitude": -77.46}],
        "networks": [{"name": "n", "prefix6": "fdaa:1::/48"}],
        "apps": [{"name": app, "network": "n"}],
        "machines": [{"id": machine, "app": app, "region": "iad", "ip6": "fdaa:1::9"}],
        "peers": [{"name": peer, "network": "n", "ip6": "fdaa:1::a"}],
    }


def test_a_valid_registry_builds() -> None:
    snapshot = build_snapshot([Document("x.yaml", registry())])
    assert list(snapshot.networks["n"].apps) == ["web"]


@pytest.mark.parametrize("fields", [{"app": "web_1"}, {"machine": "AB"}, {"machine": "xyz"}, {"peer": "p.q"}])
def test_bad_names_reject_the_snapshot(fields: dict[str, str]) -> None:
    with pytest.raises(RegistryError):
        build_snapshot([Document("x.yaml", registry(**fields))])


@pytest.mark.parametrize("fields", [{"app": "web\n"}, {"machine": "ab\n"}, {"peer": "p\n"}])
def test_names_ending_in_a_newline_reject_the_snapshot(fields: dict[str, str]) -> None:
    try:
        build_snapshot([Document("x.yaml", registry(**fields))])
    except RegistryError:
        return
    raise AssertionError(f"accepted {fields}")


# --- a machine's fields: read inline when they are texts, worded by the same checks when not ------


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"id": 5}, "machine 5: 'id' must be a quoted string (YAML read the number 5: put it in quotes)"),
        ({"id": "AB"}, "machine AB: id 'AB' must be lower-case hex (at most 63 digits)"),
        ({"id": ""}, "machine : id '' must be lower-case hex (at most 63 digits)"),
        ({"id": "a" * 64}, f"machine {'a' * 64}: id '{'a' * 64}' must be lower-case hex (at most 63 digits)"),
        ({"app": 5}, "machine ab: 'app' must be a quoted string (YAML read the number 5: put it in quotes)"),
        ({"app": "nope"}, "machine ab: unknown app 'nope'"),
        ({"network": 5}, "machine ab: 'network' must be a quoted string (YAML read the number 5: put it in quotes)"),
        ({"network": "other"}, "machine ab: unknown network 'other'"),
        ({"region": "xx"}, "machine ab: unknown region 'xx'"),
        ({"region": None}, "machine ab: missing 'region'"),
        ({"state": 3}, "machine ab: 'state' must be a quoted string (YAML read the number 3: put it in quotes)"),
        ({"process_group": "a_b"}, "machine ab: process_group 'a_b' is not a DNS label"),
        ({"ip6": 7}, "machine ab: 'ip6' must be a quoted string (YAML read the number 7: put it in quotes)"),
        ({"ip6": "zz", "ip4": "1"}, "machine ab: ip6 'zz' is not an IPv6 address"),  # the first field's problem
        ({"ip4": "10.0.0"}, "machine ab: ip4 '10.0.0' is not an IPv4 address"),
        ({"ip4": 5}, "machine ab: 'ip4' must be a quoted string (YAML read the number 5: put it in quotes)"),
        ({"metadata": [1]}, "machine ab: metadata must be a mapping of strings"),
        ({"dns": 1}, "machine ab: dns must be true or false"),
    ],
)
def test_bad_machine_fields_are_refused_naming_the_machine(fields: dict[str, Any], line: str) -> None:
    assert refusal(machines=[machine(**fields)]) == [f"x.yaml: {line}"]


def test_machine_texts_are_read_as_the_registry_format_says() -> None:
    m = built(machines=[machine(region="IAD", state="Stopped", process_group="Worker", app="WEB", network="n")])
    kept = m.networks["n"].machines[0]
    assert (kept.region, kept.state, kept.process_group, kept.app, kept.qualified) == ("iad", "stopped", "worker", "web", True)
    kept = built(machines=[machine(state="", process_group=None)]).networks["n"].machines[0]
    assert (kept.state, kept.process_group, kept.qualified) == ("started", "app", False)


# --- a machine's checks and an app's services (SPEC §1) ----------------------------------------------


def built(apps: list[dict[str, Any]] | None = None, machines: list[dict[str, Any]] | None = None) -> Snapshot:
    data = registry()
    if apps is not None:
        data["apps"] = apps
    if machines is not None:
        data["machines"] = machines
    return build_snapshot([Document("x.yaml", data)])


def refusal(apps: list[dict[str, Any]] | None = None, machines: list[dict[str, Any]] | None = None) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        built(apps, machines)
    return caught.value.problems


def machine(mid: str = "ab", n: int = 9, **fields: Any) -> dict[str, Any]:
    return {"id": mid, "app": "web", "region": "iad", "ip6": f"fdaa:1::1:{n:x}", **fields}


def app(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "network": "n", **fields}


@pytest.mark.parametrize(
    ("given", "kept", "healthy"),
    [
        ({"http": "passing", "disk": "Warning"}, {"http": "passing", "disk": "warning"}, True),
        ({"http": "passing", "db": "CRITICAL"}, {"http": "passing", "db": "critical"}, False),
        ({}, {}, True),
        (None, {}, True),
    ],
    ids=["passing-and-warning", "one-critical", "empty", "null"],
)
def test_checks_are_read_lower_cased_and_say_whether_the_machine_is_healthy(
    given: Any, kept: dict[str, str], healthy: bool
) -> None:
    m = built(machines=[machine(checks=given)]).networks["n"].machines[0]
    assert dict(m.checks) == kept and m.healthy is healthy
    if not kept:
        assert m.checks is NO_CHECKS


def test_a_machine_without_checks_is_healthy() -> None:
    m = built().networks["n"].machines[0]
    assert m.checks is NO_CHECKS and m.healthy


def test_equal_checks_are_one_mapping() -> None:
    machines = [
        machine("a1", 1, checks={"http": "passing", "disk": "warning"}),
        machine("a2", 2, checks={"disk": "WARNING", "http": "passing"}),  # another order, another case
        machine("a3", 3, checks={"http": "critical"}),
    ]
    by_id = {m.id: m for m in built(machines=machines).networks["n"].machines}
    assert by_id["a1"].checks is by_id["a2"].checks
    assert by_id["a3"].checks is not by_id["a1"].checks and dict(by_id["a3"].checks) == {"http": "critical"}


@pytest.mark.parametrize(
    ("checks", "line"),
    [
        ("passing", "checks must be a mapping of check name to passing, warning or critical"),
        (["http"], "checks must be a mapping of check name to passing, warning or critical"),
        ({"http": "down"}, "check 'http' is 'down': must be passing, warning or critical"),
        ({"http": None}, "check 'http' is None: must be passing, warning or critical"),
        ({"http": True}, "check 'http' is True: must be passing, warning or critical"),
        ({"": "passing"}, "check names must be non-empty strings, not ''"),
        ({1: "passing"}, "check names must be non-empty strings, not 1"),
    ],
    ids=["a-text", "a-list", "unknown-status", "no-status", "a-flag", "empty-name", "number-name"],
)
def test_bad_checks_are_refused_naming_the_machine(checks: Any, line: str) -> None:
    assert refusal(machines=[machine(checks=checks)]) == [f"x.yaml: machine ab: {line}"]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ([{"name": "http", "port": 8080}], (Service("http", 8080, "tcp"),)),
        (
            [{"name": "DNS", "port": 53, "protocol": "UDP"}, {"name": "dns", "port": 53, "protocol": "tcp"}],
            (Service("dns", 53, "udp"), Service("dns", 53, "tcp")),  # one name, both protocols
        ),
        ([{"name": "x" * 62, "port": 65535, "protocol": "udp"}], (Service("x" * 62, 65535, "udp"),)),
        ([], ()),
        (None, ()),
    ],
    ids=["default-protocol", "both-protocols", "longest-name", "empty", "null"],
)
def test_services_are_read_in_order_lower_cased(given: Any, kept: tuple[Service, ...]) -> None:
    assert built(apps=[app(services=given)]).networks["n"].apps["web"].app.services == kept


def test_an_app_without_services_has_none() -> None:
    assert built().networks["n"].apps["web"].app.services == ()


@pytest.mark.parametrize(
    ("services", "line"),
    [
        ("http", "services must be a list of {name, port, protocol} mappings"),
        ({"name": "http", "port": 80}, "services must be a list of {name, port, protocol} mappings"),
        (["http"], "services entries must be mappings with 'name' and 'port', got 'http'"),
        ([{"port": 80}], "service {'port': 80}: missing 'name'"),
        (
            [{"name": 53, "port": 53}],
            "service {'name': 53, 'port': 53}: 'name' must be a quoted string (YAML read the number 53: put it in quotes)",
        ),
        ([{"name": "_http", "port": 80}], "service name '_http' is not a DNS label (give it without the leading '_')"),
        ([{"name": "a.b", "port": 80}], "service name 'a.b' is not a DNS label"),
        ([{"name": "x" * 63, "port": 80}], f"service name '{'x' * 63}' is not a DNS label"),  # with "_": 64
        ([{"name": "http"}], "service http: port must be a number from 1 to 65535, not None"),
        ([{"name": "http", "port": 0}], "service http: port must be a number from 1 to 65535, not 0"),
        ([{"name": "http", "port": 65536}], "service http: port must be a number from 1 to 65535, not 65536"),
        ([{"name": "http", "port": "80"}], "service http: port must be a number from 1 to 65535, not '80'"),
        ([{"name": "http", "port": True}], "service http: port must be a number from 1 to 65535, not True"),
        ([{"name": "http", "port": 80, "protocol": "sctp"}], "service http: protocol must be tcp or udp, not 'sctp'"),
        ([{"name": "http", "port": 80, "protocol": 6}], "service http: protocol must be tcp or udp, not 6"),
        ([{"name": "http", "port": 80}, {"name": "HTTP", "port": 81}], "service HTTP/tcp is listed twice"),
    ],
    ids=[
        "a-text",
        "a-mapping",
        "an-entry-not-a-mapping",
        "no-name",
        "number-name",
        "underscore",
        "not-a-label",
        "too-long",
        "no-port",
        "port-0",
        "port-too-big",
        "port-text",
        "port-flag",
        "protocol-unknown",
        "protocol-number",
        "twice",
    ],
)
def test_bad_services_are_refused_naming_the_app(services: Any, line: str) -> None:
    assert refusal(apps=[app(services=services)]) == [f"x.yaml: app web: {line}"]
