"""registry/model.py: the label and machine-id rules every name served must pass (SPEC §1: a name that
is not a valid DNS label where it must be one rejects the snapshot)."""

from __future__ import annotations

from typing import Any

import pytest

from internal_dns.registry.catalog import build_snapshot
from internal_dns.registry.model import Document, RegistryError, is_label


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
