"""SPEC §9: the YAML config. Every bad key is refused with an error naming the file and the key;
the registry path is relative to the config file; omitted keys take their documented defaults."""

from __future__ import annotations

import socket
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from internal_dns.config import ConfigError, ListenConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent

MINIMAL: dict[str, Any] = {"listen": [{"address": "127.0.0.1", "port": 5353}]}


def write_config(tmp_path: Path, raw: Any, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def with_(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


def refused(tmp_path: Path, raw: Any) -> ConfigError:
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: ")
    return error


# --- the example and the defaults -----------------------------------------------------------


def test_the_example_config_loads_with_its_registry_relative_to_its_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # not the config's folder: the path must not depend on it
    config = load_config(ROOT / "config.example.yaml")
    assert config.registry.backend == "files"
    assert config.registry.path == ROOT / "zones"
    assert config.listen == (ListenConfig("127.0.0.1", 5353), ListenConfig("::1", 5353))
    assert dict(config.zones) == {"internal": "fly", "flycast": "flycast", "railway.internal": "railway"}
    assert [(str(v.source), v.network) for v in config.views] == [
        ("127.0.0.2/32", "other-org"),
        ("127.0.0.3/32", "shop-production"),
        ("127.0.0.4/32", "shop-staging"),
        ("127.0.0.0/8", "personal"),
        ("::1/128", "personal"),
    ]
    assert (config.region, config.ttl, config.server_id) == ("iad", 5, "internal-dns-example")


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {"listen": [{"address": "::"}]}))
    assert config.listen == (ListenConfig("::", 53),)
    assert config.registry.backend == "files"
    assert config.registry.path == tmp_path / "zones"
    assert config.registry.poll_interval is None  # the backend's own default (files: 1 s)
    from internal_dns.registry.plugins import make_backend

    assert make_backend(config.registry, None, None).poll_interval == 1.0  # type: ignore[attr-defined]
    assert dict(config.zones) == {"internal": "fly"}
    assert config.views == ()
    assert config.region is None
    assert config.upstreams is None  # /etc/resolv.conf's nameservers
    assert config.ttl == 5
    assert config.edns_payload == 1232
    assert (config.tcp.idle_timeout, config.tcp.max_connections) == (10.0, 256)
    assert config.server_id == socket.gethostname()


@pytest.mark.parametrize(
    ("given", "expected"),
    [("zones/", "zones"), ("../shared/zones", "../shared/zones"), ("./a/b", "a/b")],
)
def test_registry_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    folder = tmp_path / "etc" / "internal-dns"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = load_config(write_config(folder, with_(registry={"path": given})))
    assert config.registry.path == folder / expected


def test_absolute_registry_path_is_kept(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, with_(registry={"backend": "files", "path": "/srv/zones"})))
    assert config.registry.path == Path("/srv/zones")


def test_every_key_is_read(tmp_path: Path) -> None:
    raw = {
        "listen": [{"address": "fdaa:0:18::3", "port": 53, "network": "personal", "region": "SEA"}],
        "registry": {"backend": "files", "path": "reg", "poll_interval": 0.5},
        "zones": {"Internal.": "fly", "railway.internal": "railway"},
        "views": [{"source": "10.0.0.1/8", "network": "personal"}],
        "region": "IAD",
        "upstreams": ["127.0.0.1:5300", "::1", "[::1]:5301", "9.9.9.9"],
        "ttl": 0,
        "edns_payload": 4096,
        "tcp": {"idle_timeout": 2.5, "max_connections": 3},
        "server_id": "ns1",
    }
    config = load_config(write_config(tmp_path, raw))
    assert config.listen == (ListenConfig("fdaa:0:18::3", 53, "personal", "sea"),)
    assert (config.registry.path, config.registry.poll_interval) == (tmp_path / "reg", 0.5)
    assert dict(config.zones) == {"internal": "fly", "railway.internal": "railway"}
    assert config.views[0].source == ip_network("10.0.0.0/8")  # host bits are forgiven in a view
    assert config.region == "iad"
    assert config.upstreams == (("127.0.0.1", 5300), ("::1", 53), ("::1", 5301), ("9.9.9.9", 53))
    assert (config.ttl, config.edns_payload, config.tcp.idle_timeout, config.tcp.max_connections, config.server_id) == (
        0,
        4096,
        2.5,
        3,
        "ns1",
    )


# --- every bad key is named -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        (with_(listne=[]), "listne", "unknown key"),
        (with_(registry={"path": "zones", "pth": "x"}), "registry.pth", "unknown key"),
        (with_(tcp={"idle": 1}), "tcp.idle", "unknown key"),
        (with_(views=[{"source": "::1/128", "network": "personal", "nework": "x"}]), "views[0].nework", "unknown key"),
        ({"listen": [{"address": "127.0.0.1", "prot": 53}]}, "listen[0].prot", "unknown key"),
        ({"listen": [{"address": "localhost", "port": 53}]}, "listen[0].address", "not an IP address"),
        ({"listen": [{"address": "127.0.0.256", "port": 53}]}, "listen[0].address", "not an IP address"),
        ({"listen": [{"port": 53}]}, "listen[0].address", "must be a non-empty string"),
        ({"listen": [{"address": "127.0.0.1", "port": 65536}]}, "listen[0].port", "integer from 0 to 65535"),
        ({"listen": [{"address": "127.0.0.1", "port": -1}]}, "listen[0].port", "integer from 0 to 65535"),
        ({"listen": [{"address": "127.0.0.1", "port": "53"}]}, "listen[0].port", "integer from 0 to 65535"),
        ({"listen": [MINIMAL["listen"][0], {"address": "::1", "port": True}]}, "listen[1].port", "integer"),
        ({"listen": []}, "listen", "at least one listener"),
        ({"listen": {"address": "127.0.0.1"}}, "listen", "must be a list"),
        ({}, "listen", "at least one listener"),
        (with_(zones={"internal": "fly", "flycast": "fly-cast"}), "zones.flycast", "unknown scheme 'fly-cast'"),
        (with_(zones={"internal": "bind"}), "zones.internal", "unknown scheme 'bind' (known: fly, flycast, railway)"),
        (with_(zones={}), "zones", "at least one zone"),
        (with_(zones={"a..b": "fly"}), "zones.a..b", "not a valid zone name"),
        (
            with_(views=[{"source": "127.0.0.0/33", "network": "personal"}]),
            "views[0].source",
            "not a CIDR prefix ('127.0.0.0/33'",
        ),
        (with_(views=[{"source": "localhost", "network": "personal"}]), "views[0].source", "not a CIDR prefix ('localhost'"),
        (with_(views=[{"source": "127.0.0.0/8"}]), "views[0].network", "must be a non-empty string"),
        (with_(views={"source": "127.0.0.0/8"}), "views", "must be a list"),
        (with_(ttl=-1), "ttl", "must be an integer from 0"),
        (with_(ttl="5"), "ttl", "must be an integer"),
        (with_(ttl=1.5), "ttl", "must be an integer"),
        (with_(edns_payload=511), "edns_payload", "from 512 to 65535"),
        (with_(tcp={"max_connections": 0}), "tcp.max_connections", "from 1"),
        (with_(tcp={"idle_timeout": -1}), "tcp.idle_timeout", "must be a number"),
        (with_(registry={"backend": "ldap"}), "registry.backend", "unknown backend 'ldap'"),
        (with_(registry={"path": None}), "registry.path", "must be a non-empty string"),
        (with_(registry={"poll_interval": 0}), "registry.poll_interval", "must be a number"),
        (with_(registry="zones/"), "registry", "must be a mapping"),
        (with_(region=5), "region", "must be a non-empty string"),
        (with_(upstreams="127.0.0.1"), "upstreams", "must be a list"),
        (with_(upstreams=["127.0.0.1", "dns.google"]), "upstreams[1]", "not an IP address"),
        (with_(upstreams=["127.0.0.1:0"]), "upstreams[0]", "port must be from 1 to 65535"),
        (with_(upstreams=["127.0.0.1:dns"]), "upstreams[0]", "port must be"),
        (with_(upstreams=["[::1]5300"]), "upstreams[0]", "expected [address]:port"),
        (with_(server_id=""), "server_id", "must be a non-empty string"),
    ],
)
def test_a_bad_key_is_named(tmp_path: Path, raw: Any, key: str, fragment: str) -> None:
    error = refused(tmp_path, raw)
    assert error.key == key
    assert str(error).startswith(f"{tmp_path / 'config.yaml'}: {key}: ")
    assert fragment in error.reason


def test_a_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    error = refused(tmp_path, "- listen\n- zones\n")
    assert "must be a mapping" in str(error)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    error = refused(tmp_path, "listen:\n  - {address: 127.0.0.1, port: 5353}\nzones: {internal: fly\nttl: 5\n")
    assert error.key.startswith("line ")
    assert "not valid YAML" in error.reason
    assert str(error).startswith(f"{tmp_path / 'config.yaml'}: line ")


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot be read (No such file or directory)"


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"listen": [{"address": "127.0.0.1"}], "tll": 5}, "inline.yaml")
    assert str(info.value).startswith("inline.yaml: tll: unknown key")
