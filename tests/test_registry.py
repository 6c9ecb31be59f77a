"""SPEC §1: the registry model. A snapshot is validated whole; every fault is reported with the
file (document source), the entity and the reason, and one fault rejects the whole snapshot."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.files import load_documents, load_snapshot
from internal_dns.registry.model import Document, RegistryError, Snapshot

ROOT = Path(__file__).resolve().parent.parent

REGIONS: dict[str, Any] = {
    "regions": [
        {"code": "iad", "name": "Ashburn", "latitude": 38.95, "longitude": -77.46},
        {"code": "sea", "name": "Seattle", "latitude": 47.45, "longitude": -122.31},
        {"code": "ams", "name": "Amsterdam", "latitude": 52.31, "longitude": 4.76},
    ]
}

ORG: dict[str, Any] = {
    "networks": [
        {"name": "personal", "prefix6": "fdaa:0:18::/48", "prefix4": "10.18.0.0/16"},
        {"name": "other-org", "prefix6": "fdaa:0:22::/48"},
    ],
    "apps": [
        {
            "name": "my-app",
            "network": "personal",
            "flycast": [
                {"ip": "fdaa:0:18:0:1::3"},
                {"ip": "fdaa:0:22:0:1::7", "network": "other-org"},
            ],
        },
        {"name": "billing", "network": "other-org"},
    ],
    "machines": [
        {
            "id": "148e21dad76789",
            "app": "my-app",
            "region": "sea",
            "state": "started",
            "ip6": "fdaa:0:18:a7b:7d:f066:b83b:2",
            "ip4": "10.18.0.2",
            "metadata": {"role": "primary"},
        },
        {
            "id": "4d89699c030518",
            "app": "my-app",
            "region": "ams",
            "state": "stopped",
            "process_group": "worker",
            "ip6": "fdaa:0:18:a7b:c4:5b1:8f2e:2",
        },
        {"id": "1781973f5e4389", "app": "billing", "region": "iad", "ip6": "fdaa:0:22:a7b:10:4c1d:2e3f:2"},
    ],
    "peers": [
        {"name": "my-peer", "network": "personal", "ip6": "fdaa:0:18:a7b:d6b:0:a:2", "region": "iad"},
    ],
}


def docs(org: dict[str, Any] | None = None, *extra: tuple[str, dict[str, Any]]) -> list[Document]:
    return [Document("regions.yaml", REGIONS), Document("org.yaml", org if org is not None else ORG)] + [
        Document(source, data) for source, data in extra
    ]


def org_with(**changes: Any) -> dict[str, Any]:
    """A deep copy of ORG; `section=fn` applies fn to the copied section list."""
    org = copy.deepcopy(ORG)
    for section, change in changes.items():
        change(org.setdefault(section, []))
    return org


def rejected(documents: list[Document]) -> list[str]:
    with pytest.raises(RegistryError) as info:
        build_snapshot(documents)
    return info.value.problems


def one_problem(documents: list[Document]) -> str:
    problems = rejected(documents)
    assert len(problems) == 1, problems
    return problems[0]


def set_field(index: int, key: str, value: Any) -> Any:
    def change(items: list[dict[str, Any]]) -> None:
        items[index][key] = value

    return change


def append(item: dict[str, Any]) -> Any:
    return lambda items: items.append(item)


def rename_app(name: str) -> dict[str, Any]:
    """Changes renaming app billing and its machine to `name`."""
    return {"apps": set_field(1, "name", name), "machines": set_field(2, "app", name)}


# --- a valid registry -----------------------------------------------------------------------


def test_valid_registry_builds_an_indexed_snapshot() -> None:
    snap = build_snapshot(docs())
    assert snap.counts() == {"networks": 2, "apps": 2, "machines": 3, "peers": 1, "regions": 3}
    personal = snap.networks["personal"]
    assert personal.app_names == ("my-app",)
    assert [m.id for m in personal.apps["my-app"].machines] == ["148e21dad76789", "4d89699c030518"]
    assert [m.id for m in personal.apps["my-app"].started] == ["148e21dad76789"]
    # defaults: process_group "app", state "started", dns true
    billing = snap.networks["other-org"].apps["billing"].machines[0]
    assert (billing.process_group, billing.state, billing.dns) == ("app", "started", True)
    # the network's resolver address defaults to <prefix6 base>::3
    assert personal.network.dns6 == IPv6Address("fdaa:0:18::3")
    # Flycast addresses are listed on the network they were allocated on
    assert snap.networks["other-org"].flycast["my-app"] == (IPv6Address("fdaa:0:22:0:1::7"),)
    assert personal.flycast["my-app"] == (IPv6Address("fdaa:0:18:0:1::3"),)
    assert snap.networks["personal"].owners[IPv4Address("10.18.0.2")] == "sea"
    assert snap.networks["personal"].owners[IPv6Address("fdaa:0:18:a7b:d6b:0:a:2")] == "iad"
    assert IPv4Address("10.18.0.2") not in snap.networks["other-org"].owners


def test_embedded_example_registry_is_valid() -> None:
    snap = load_snapshot(ROOT / "zones")
    assert snap.counts() == {"networks": 4, "apps": 9, "machines": 18, "peers": 4, "regions": 35}
    # the same service name lives in two Railway environments
    assert "web" in snap.networks["shop-production"].apps and "web" in snap.networks["shop-staging"].apps


def test_entities_may_be_split_across_files() -> None:
    documents = [
        Document("a/regions.yaml", REGIONS),
        Document("b/networks.yaml", {"networks": ORG["networks"]}),
        Document("c/apps.yaml", {"apps": ORG["apps"]}),
        Document("d/machines.yaml", {"machines": ORG["machines"][:2]}),
        Document("e/more.yaml", {"machines": ORG["machines"][2:], "peers": ORG["peers"]}),
        Document("f/empty.yaml", None),  # an empty file is nothing, not an error
    ]
    snap = build_snapshot(documents)
    assert snap.counts() == build_snapshot(docs()).counts()
    assert snap.networks["personal"].apps["my-app"].by_id["148e21dad76789"].source == "d/machines.yaml"


def test_unknown_extra_keys_are_allowed() -> None:
    org = copy.deepcopy(ORG)
    org["owner"] = "platform-team"  # a top-level key of its own
    org["networks"][0]["comment"] = "the personal org"
    org["apps"][0]["image"] = "registry.fly.io/my-app:latest"
    org["machines"][0]["cpu_kind"] = "shared"
    org["peers"][0]["public_key"] = "abc="
    snap = build_snapshot(docs(org))
    assert snap.counts()["machines"] == 3


def test_regions_yaml_merges_with_org_files_repeating_a_region() -> None:
    # SPEC §1's example declares `{code: iad, latitude: 38.95, longitude: -77.46}` in an org file,
    # while zones/regions.yaml ships the same region with its city name.
    org = copy.deepcopy(ORG)
    org["regions"] = [
        {"code": "iad", "latitude": 38.95, "longitude": -77.46},
        {"code": "ord", "latitude": 41.98, "longitude": -87.9},
    ]
    snap = build_snapshot(docs(org))
    assert sorted(snap.regions) == ["ams", "iad", "ord", "sea"]
    assert snap.regions["iad"].name == "Ashburn"
    assert (snap.regions["ord"].latitude, snap.regions["ord"].longitude) == (41.98, -87.9)


def test_org_file_regions_merge_with_the_shipped_regions_yaml(tmp_path: Path) -> None:
    (tmp_path / "regions.yaml").write_text((ROOT / "zones" / "regions.yaml").read_text())
    org = copy.deepcopy(ORG)
    org["regions"] = [{"code": "sea", "latitude": 47.45, "longitude": -122.31}, {"code": "xyz", "latitude": 1, "longitude": 2}]
    (tmp_path / "org.yaml").write_text(yaml.safe_dump(org))
    snap = load_snapshot(tmp_path)
    assert len(snap.regions) == 36 and snap.regions["sea"].name == "Seattle" and "xyz" in snap.regions


def test_region_repeated_with_other_coordinates_is_rejected() -> None:
    org = copy.deepcopy(ORG)
    org["regions"] = [{"code": "iad", "latitude": 10.0, "longitude": -77.46}]
    line = one_problem(docs(org))
    assert line.startswith("org.yaml: region iad: ")
    assert "different coordinates" in line


# --- one fault each: the line names the file, the entity and the reason ---------------------


def test_duplicate_machine_id_across_two_files() -> None:
    again = {"machines": [{"id": "148e21dad76789", "app": "billing", "region": "iad", "ip6": "fdaa:0:22:a7b::99"}]}
    line = one_problem(docs(ORG, ("later.yaml", again)))
    assert line.startswith("later.yaml: machine 148e21dad76789: ")
    assert "duplicate machine id" in line and "org.yaml" in line  # and where the first one is


@pytest.mark.parametrize(
    ("changes", "entity", "reason"),
    [
        (
            {"machines": set_field(0, "ip6", "fdaa:0:19::2")},
            "machine 148e21dad76789",
            "ip6 fdaa:0:19::2 is outside network personal's prefix fdaa:0:18::/48",
        ),
        (
            {"machines": set_field(0, "ip4", "10.19.0.2")},
            "machine 148e21dad76789",
            "ip4 10.19.0.2 is outside network personal's prefix 10.18.0.0/16",
        ),
        (
            {"peers": set_field(0, "ip6", "fdaa:0:22:a7b::5")},
            "peer my-peer",
            "ip6 fdaa:0:22:a7b::5 is outside network personal's prefix fdaa:0:18::/48",
        ),
        (
            {"apps": set_field(1, "flycast", [{"ip": "fdaa:0:18:0:1::9"}])},
            "app billing",
            "flycast fdaa:0:18:0:1::9 is outside network other-org's prefix fdaa:0:22::/48",
        ),
        # a Flycast address allocated on another network must lie in *that* network's prefix
        (
            {"apps": set_field(1, "flycast", [{"ip": "fdaa:0:22:0:1::9", "network": "personal"}])},
            "app billing",
            "flycast fdaa:0:22:0:1::9 is outside network personal's prefix fdaa:0:18::/48",
        ),
    ],
    ids=["machine-ip6", "machine-ip4", "peer-ip6", "flycast-own-network", "flycast-other-network"],
)
def test_address_outside_its_networks_prefix(changes: dict[str, Any], entity: str, reason: str) -> None:
    assert one_problem(docs(org_with(**changes))) == f"org.yaml: {entity}: {reason}"


@pytest.mark.parametrize(
    ("changes", "entity", "reason"),
    [
        ({"machines": set_field(0, "app", "nope")}, "machine 148e21dad76789", "unknown app 'nope'"),
        (
            {"machines": append({"id": "aa", "app": "billing", "network": "personal", "region": "iad", "ip6": "fdaa:0:18::aa"})},
            "machine aa",
            "unknown app 'billing' in network personal",
        ),
        ({"apps": set_field(0, "network", "nowhere")}, "app my-app", "unknown network 'nowhere'"),
        ({"peers": set_field(0, "network", "nowhere")}, "peer my-peer", "unknown network 'nowhere'"),
        ({"machines": set_field(2, "network", "nowhere")}, "machine 1781973f5e4389", "unknown network 'nowhere'"),
        (
            {"apps": set_field(1, "flycast", [{"ip": "fdaa:0:22:0:1::9", "network": "nowhere"}])},
            "app billing",
            "flycast fdaa:0:22:0:1::9: unknown network 'nowhere'",
        ),
        ({"machines": set_field(0, "region", "xyz")}, "machine 148e21dad76789", "unknown region 'xyz'"),
        ({"peers": set_field(0, "region", "xyz")}, "peer my-peer", "unknown region 'xyz'"),
    ],
    ids=[
        "machine-app",
        "machine-app-in-network",
        "app-network",
        "peer-network",
        "machine-network",
        "flycast-network",
        "machine-region",
        "peer-region",
    ],
)
def test_unknown_references(changes: dict[str, Any], entity: str, reason: str) -> None:
    assert one_problem(docs(org_with(**changes))) == f"org.yaml: {entity}: {reason}"


@pytest.mark.parametrize(
    ("changes", "entity", "fragment"),
    [
        # the machine names the same (invalid) app: one fault, not a second "unknown app"
        (rename_app("my_app"), "app my_app", "name 'my_app' is not a DNS label"),
        (rename_app("-app"), "app -app", "name '-app' is not a DNS label"),
        (rename_app("a" * 64), "app " + "a" * 64, "is not a DNS label"),
        (rename_app("my.app"), "app my.app", "name 'my.app' is not a DNS label"),
        ({"peers": set_field(0, "name", "my peer")}, "peer my peer", "name 'my peer' is not a DNS label"),
        (
            {"machines": set_field(0, "process_group", "web_1")},
            "machine 148e21dad76789",
            "process_group 'web_1' is not a DNS label",
        ),
    ],
    ids=["app-underscore", "app-leading-hyphen", "app-64-chars", "app-dot", "peer-space", "process-group"],
)
def test_invalid_dns_label(changes: dict[str, Any], entity: str, fragment: str) -> None:
    line = one_problem(docs(org_with(**changes)))
    assert line.startswith(f"org.yaml: {entity}: ")
    assert fragment in line


def test_a_63_character_label_is_valid() -> None:
    snap = build_snapshot(docs(org_with(apps=set_field(1, "name", "b" * 63), machines=set_field(2, "app", "b" * 63))))
    assert snap.networks["other-org"].app_names == ("b" * 63,)


@pytest.mark.parametrize("mid", ["148E21DAD76789", "148e21dad7678g", "machine-1", ""])
def test_machine_id_must_be_lower_case_hex(mid: str) -> None:
    line = one_problem(docs(org_with(machines=set_field(0, "id", mid))))
    assert line.startswith(f"org.yaml: machine {mid}: ") or line.startswith("org.yaml: machine: ")
    assert "lower-case hex" in line


@pytest.mark.parametrize(
    ("text", "read_as"),
    [("12345678901234", "12345678901234"), ("0123", "83")],  # YAML 1.1 reads 0123 as octal
    ids=["decimal", "octal"],
)
def test_unquoted_numeric_machine_id_is_rejected(tmp_path: Path, text: str, read_as: str) -> None:
    (tmp_path / "regions.yaml").write_text(yaml.safe_dump(REGIONS))
    (tmp_path / "org.yaml").write_text(yaml.safe_dump(org_with(machines=lambda ms: ms.clear())))
    (tmp_path / "m.yaml").write_text(f"machines:\n  - {{id: {text}, app: billing, region: iad, ip6: 'fdaa:0:22::9'}}\n")
    with pytest.raises(RegistryError) as info:
        load_snapshot(tmp_path)
    (line,) = info.value.problems
    assert line.startswith(f"{tmp_path / 'm.yaml'}: machine {read_as}: ")
    assert "'id' must be a quoted string" in line and "quotes" in line


def test_app_name_ambiguous_across_networks_needs_network() -> None:
    org = org_with(apps=append({"name": "my-app", "network": "other-org"}))
    assert rejected(docs(org)) == [
        f"org.yaml: machine {mid}: app 'my-app' exists in other-org, personal: add 'network'"
        for mid in ("148e21dad76789", "4d89699c030518")
    ]
    # the same machines with `network:` are accepted (also the second one, which is the same app)
    for m in org["machines"][:2]:
        m["network"] = "personal"
    snap = build_snapshot(docs(org))
    assert snap.networks["other-org"].apps["my-app"].machines == ()
    assert len(snap.networks["personal"].apps["my-app"].machines) == 2


@pytest.mark.parametrize(
    ("section", "item", "entity", "fragment"),
    [
        (
            "networks",
            {"name": "personal", "prefix6": "fdaa:0:99::/48"},
            "network personal",
            "duplicate network (first in org.yaml)",
        ),
        (
            "apps",
            {"name": "MY-APP", "network": "personal"},
            "app MY-APP",
            "duplicate app in network personal (first in org.yaml)",
        ),
        (
            "peers",
            {"name": "my-peer", "network": "personal", "ip6": "fdaa:0:18::77"},
            "peer my-peer",
            "duplicate peer in network personal (first in org.yaml)",
        ),
    ],
    ids=["network", "app-case-insensitive", "peer"],
)
def test_duplicate_entities(section: str, item: dict[str, Any], entity: str, fragment: str) -> None:
    line = one_problem(docs(ORG, ("dup.yaml", {section: [item]})))
    assert line == f"dup.yaml: {entity}: {fragment}"


def test_same_app_name_in_two_networks_is_not_a_duplicate() -> None:
    snap = build_snapshot(
        docs(org_with(apps=append({"name": "billing", "network": "personal"}), machines=set_field(2, "network", "other-org")))
    )
    assert "billing" in snap.networks["personal"].apps and "billing" in snap.networks["other-org"].apps


@pytest.mark.parametrize(
    ("network", "fragment"),
    [
        (
            {"name": "inner", "prefix6": "fdaa:0:18:1::/64"},
            "prefix6 fdaa:0:18:1::/64 overlaps network personal's prefix6 fdaa:0:18::/48",
        ),
        ({"name": "outer", "prefix6": "fdaa::/16"}, "prefix6 fdaa::/16 overlaps network personal's prefix6 fdaa:0:18::/48"),
        (
            {"name": "v4", "prefix6": "fdaa:0:99::/48", "prefix4": "10.18.5.0/24"},
            "prefix4 10.18.5.0/24 overlaps network personal's prefix4 10.18.0.0/16",
        ),
    ],
    ids=["inner-v6", "outer-v6", "v4"],
)
def test_overlapping_network_prefixes(network: dict[str, Any], fragment: str) -> None:
    problems = rejected(docs(ORG, ("net.yaml", {"networks": [network]})))
    assert f"net.yaml: network {network['name']}: {fragment}" in problems


@pytest.mark.parametrize(
    ("changes", "entity", "fragment"),
    [
        (
            {"peers": set_field(0, "ip6", "fdaa:0:18:a7b:7d:f066:b83b:2")},
            "peer my-peer",
            "address fdaa:0:18:a7b:7d:f066:b83b:2 is already used by machine 148e21dad76789",
        ),
        (
            {"machines": set_field(1, "ip6", "fdaa:0:18:a7b:7d:f066:b83b:2")},
            "machine 4d89699c030518",
            "address fdaa:0:18:a7b:7d:f066:b83b:2 is already used by machine 148e21dad76789",
        ),
        (
            {"machines": set_field(1, "ip4", "10.18.0.2")},
            "machine 4d89699c030518",
            "address 10.18.0.2 is already used by machine 148e21dad76789",
        ),
        (
            {"machines": set_field(0, "ip6", "fdaa:0:18:0:1::3")},
            "machine 148e21dad76789",
            "address fdaa:0:18:0:1::3 is already used by app my-app (flycast)",
        ),
        (
            {"machines": set_field(0, "ip6", "fdaa:0:18::3")},
            "machine 148e21dad76789",
            "address fdaa:0:18::3 is already used by network personal (dns6)",
        ),
    ],
    ids=["peer-and-machine", "two-machines-ip6", "two-machines-ip4", "machine-and-flycast", "machine-and-resolver"],
)
def test_an_address_used_twice(changes: dict[str, Any], entity: str, fragment: str) -> None:
    assert one_problem(docs(org_with(**changes))) == f"org.yaml: {entity}: {fragment}"


def test_ip4_on_a_network_without_prefix4() -> None:
    line = one_problem(docs(org_with(machines=set_field(2, "ip4", "10.22.0.2"))))
    assert line == "org.yaml: machine 1781973f5e4389: ip4 10.22.0.2 given but network other-org has no prefix4"


def test_prefix4_on_a_legacy_network() -> None:
    line = one_problem(
        docs(
            ORG,
            (
                "legacy.yaml",
                {"networks": [{"name": "old", "prefix6": "fd12:3456:7900::/48", "prefix4": "10.251.0.0/16", "legacy": True}]},
            ),
        )
    )
    assert line.startswith("legacy.yaml: network old: ")
    assert "legacy" in line and "prefix4" in line


def test_a_legacy_network_without_prefix4_is_valid() -> None:
    snap = build_snapshot(
        docs(ORG, ("legacy.yaml", {"networks": [{"name": "old", "prefix6": "fd12:3456:7900::/48", "legacy": True}]}))
    )
    assert snap.networks["old"].network.legacy is True


@pytest.mark.parametrize(
    ("changes", "entity", "fragment"),
    [
        (
            {"machines": set_field(0, "ip6", "not-an-address")},
            "machine 148e21dad76789",
            "ip6 'not-an-address' is not an IPv6 address",
        ),
        ({"machines": set_field(0, "ip4", "10.18.0.300")}, "machine 148e21dad76789", "ip4 '10.18.0.300' is not an IPv4 address"),
        ({"machines": set_field(0, "ip6", "10.18.0.2")}, "machine 148e21dad76789", "ip6 '10.18.0.2' is not an IPv6 address"),
        ({"peers": set_field(0, "ip6", "fdaa::zz")}, "peer my-peer", "ip6 'fdaa::zz' is not an IPv6 address"),
        ({"apps": set_field(1, "flycast", [{"ip": "nope"}])}, "app billing", "ip 'nope' is not an IPv6 address"),
        ({"apps": set_field(1, "flycast", 5)}, "app billing", "flycast must be a list"),
        (
            {"networks": set_field(1, "prefix6", "fdaa:0:22::1/48")},
            "network other-org",
            "prefix6 'fdaa:0:22::1/48' is not a network prefix",
        ),
        ({"networks": set_field(1, "prefix6", "10.0.0.0/8")}, "network other-org", "prefix6 '10.0.0.0/8' is not an IPv6 prefix"),
        ({"machines": lambda ms: ms[0].pop("ip6")}, "machine 148e21dad76789", "missing 'ip6'"),
        ({"machines": lambda ms: ms[0].pop("region")}, "machine 148e21dad76789", "missing 'region'"),
        ({"machines": set_field(0, "dns", "yes")}, "machine 148e21dad76789", "dns must be true or false"),
        ({"machines": set_field(0, "metadata", ["role"])}, "machine 148e21dad76789", "metadata must be a mapping"),
    ],
    ids=[
        "bad-ip6",
        "bad-ip4",
        "ip4-as-ip6",
        "peer-bad-ip6",
        "flycast-bad-ip",
        "flycast-not-list",
        "prefix-host-bits",
        "prefix-wrong-family",
        "missing-ip6",
        "missing-region",
        "dns-not-bool",
        "metadata-not-map",
    ],
)
def test_malformed_fields(changes: dict[str, Any], entity: str, fragment: str) -> None:
    problems = rejected(docs(org_with(**changes)))
    assert any(p.startswith(f"org.yaml: {entity}: ") and fragment in p for p in problems), problems


def test_a_section_that_is_not_a_list() -> None:
    line = one_problem(docs(ORG, ("bad.yaml", {"peers": {"name": "x"}})))
    assert line == "bad.yaml: peers: must be a list"


def test_a_non_mapping_document(tmp_path: Path) -> None:
    (tmp_path / "regions.yaml").write_text(yaml.safe_dump(REGIONS))
    (tmp_path / "org.yaml").write_text(yaml.safe_dump(ORG))
    (tmp_path / "list.yaml").write_text("- networks\n- apps\n")
    with pytest.raises(RegistryError) as info:
        load_snapshot(tmp_path)
    (line,) = info.value.problems
    assert line.startswith(f"{tmp_path / 'list.yaml'}: document: must be a mapping")


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "regions.yaml").write_text(yaml.safe_dump(REGIONS))
    (tmp_path / "org.yaml").write_text(
        "networks:\n"
        "  - name: personal\n"
        '    prefix6: "fdaa:0:18::/48\n'  # line 3: the quote is never closed
        "apps: []\n"
    )
    (tmp_path / "other.yaml").write_text("apps: [unclosed\n")
    with pytest.raises(RegistryError) as info:
        load_documents(tmp_path)
    problems = sorted(info.value.problems)
    assert len(problems) == 2  # both broken files, not only the first
    assert problems[0].startswith(f"{tmp_path / 'org.yaml'}: line ")
    assert problems[1].startswith(f"{tmp_path / 'other.yaml'}: line 2: not valid YAML")
    assert all("not valid YAML" in p for p in problems)


def test_yaml_error_line_is_where_the_parser_stopped(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text("networks:\n  - name: a\n  bad indent: [\n")
    with pytest.raises(RegistryError) as info:
        load_documents(tmp_path)
    (line,) = info.value.problems
    assert line.startswith(f"{tmp_path / 'org.yaml'}: line 3: not valid YAML")


def test_missing_registry_folder(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        load_snapshot(tmp_path / "nowhere")
    assert info.value.problems == [f"{tmp_path / 'nowhere'}: registry folder does not exist"]


def test_hidden_and_non_yaml_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "regions.yaml").write_text(yaml.safe_dump(REGIONS))
    (tmp_path / "org.yml").write_text(yaml.safe_dump(ORG))
    (tmp_path / ".org.yaml.swp").write_text("garbage: [")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("garbage: [")
    (tmp_path / "README.md").write_text("# not a registry file")
    assert load_snapshot(tmp_path).counts()["machines"] == 3


def test_several_faults_are_all_reported() -> None:
    org = org_with(
        machines=lambda ms: (ms[0].update(ip6="fdaa:0:19::2"), ms[1].update(region="xyz")),
        peers=set_field(0, "name", "bad_peer"),
    )
    extra = {
        "apps": [{"name": "ghost", "network": "nowhere"}],
        "machines": [{"id": "1781973f5e4389", "app": "billing", "region": "iad", "ip6": "fdaa:0:22::5"}],
    }
    problems = rejected(docs(org, ("extra.yaml", extra)))
    assert len(problems) == 5, problems
    expected = [
        ("org.yaml: machine 148e21dad76789: ", "outside network personal's prefix"),
        ("org.yaml: machine 4d89699c030518: ", "unknown region 'xyz'"),
        ("org.yaml: peer bad_peer: ", "not a DNS label"),
        ("extra.yaml: app ghost: ", "unknown network 'nowhere'"),
        ("extra.yaml: machine 1781973f5e4389: ", "duplicate machine id"),
    ]
    for prefix, reason in expected:
        assert any(p.startswith(prefix) and reason in p for p in problems), (prefix, problems)
    # the exception's text lists every fault, one per line
    with pytest.raises(RegistryError) as info:
        build_snapshot(docs(org, ("extra.yaml", extra)))
    assert str(info.value).count("\n") == 5


# --- splitting never changes the result ----------------------------------------------------


def _entities() -> list[tuple[str, dict[str, Any]]]:
    return [(section, item) for section in ("regions",) for item in REGIONS["regions"]] + [
        (section, item) for section in ("networks", "apps", "machines", "peers") for item in ORG[section]
    ]


def _shape(snap: Snapshot) -> dict[str, Any]:
    return {
        name: (
            net.app_names,
            [m.id for m in net.machines],
            [m.id for m in net.started],
            net.peer_names,
            {k: v for k, v in net.flycast.items()},
        )
        for name, net in snap.networks.items()
    } | {"regions": sorted(snap.regions)}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=len(_entities()), max_size=len(_entities())),
    st.permutations(range(4)),
)
def test_any_split_across_files_gives_the_same_snapshot(assignment: list[int], order: list[int]) -> None:
    files: list[dict[str, list[Any]]] = [{} for _ in range(4)]
    for (section, item), which in zip(_entities(), assignment, strict=True):
        files[which].setdefault(section, []).append(item)
    documents = [Document(f"part{i}.yaml", files[i]) for i in order]
    assert _shape(build_snapshot(documents)) == _shape(build_snapshot(docs()))


def test_entities_of_an_invalid_network_are_not_reported_again() -> None:
    # other-org holds app billing (with a machine), and my-app has a Flycast address on it: the
    # one fault to fix is the network's, so it is the one line.
    problems = rejected(docs(org_with(networks=set_field(1, "prefix6", "not-a-prefix"))))
    assert len(problems) == 1, problems
    assert problems[0].startswith("org.yaml: network other-org: prefix6 'not-a-prefix' is not a network prefix")
