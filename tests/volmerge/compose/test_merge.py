"""Override rules against the Compose Specification's documented examples
(13-merge.md, 05-services.md#extends).  Pure: no root."""

from __future__ import annotations

from volmerge.compose.merge import merge, normalize_file
from volmerge.compose.yamlsrc import load_text


def _merge(*texts: str) -> dict:
    out: dict = {}
    for i, t in enumerate(texts):
        data = normalize_file(load_text(t, f"f{i}.yaml")[0])
        out = merge(out, data) if out else merge({}, data)
    return out


def test_mapping():
    a = "services:\n  foo:\n    key1: value1\n    key2: value2\n"
    b = "services:\n  foo:\n    key2: VALUE\n    key3: value3\n"
    assert _merge(a, b) == {"services": {"foo": {"key1": "value1", "key2": "VALUE",
                                                 "key3": "value3"}}}


def test_sequence_appended():
    a = "services:\n  foo:\n    DNS:\n      - 1.1.1.1\n"
    b = "services:\n  foo:\n    DNS:\n      - 8.8.8.8\n"
    assert _merge(a, b)["services"]["foo"]["DNS"] == ["1.1.1.1", "8.8.8.8"]


def test_shell_commands_replaced():
    a = 'services:\n  foo:\n    command: ["echo", "foo"]\n    healthcheck:\n      test: [CMD, a]\n'
    b = 'services:\n  foo:\n    command: ["echo", "bar"]\n    healthcheck:\n      test: [CMD, b]\n'
    foo = _merge(a, b)["services"]["foo"]
    assert foo["command"] == ["echo", "bar"]
    assert foo["healthcheck"]["test"] == ["CMD", "b"]


def test_unique_volumes_by_target():
    a = "services:\n  foo:\n    volumes:\n      - foo:/work\n      - x:/x\n"
    b = "services:\n  foo:\n    volumes:\n      - bar:/work\n"
    assert _merge(a, b)["services"]["foo"]["volumes"] == ["bar:/work", "x:/x"]


def test_unique_ports():
    a = 'services:\n  foo:\n    ports: ["8080:80", "127.0.0.1:9090:90"]\n'
    b = 'services:\n  foo:\n    ports: ["8080:80", "8081:81", {target: 90, published: "9090", host_ip: 127.0.0.1}]\n'
    assert _merge(a, b)["services"]["foo"]["ports"] == [
        "8080:80", {"target": 90, "published": "9090", "host_ip": "127.0.0.1"}, "8081:81"]


def test_reset():
    a = ("services:\n  app:\n    image: myapp\n    ports:\n      - \"8080:80\"\n"
         "    environment:\n      FOO: BAR\n")
    b = ("services:\n  app:\n    image: myapp\n    ports: !reset []\n"
         "    environment:\n      FOO: !reset null\n")
    assert _merge(a, b) == {"services": {"app": {"image": "myapp", "environment": {}}}}


def test_override():
    a = 'services:\n  app:\n    image: myapp\n    ports:\n      - "8080:80"\n'
    b = 'services:\n  app:\n    ports: !override\n      - "8443:443"\n'
    assert _merge(a, b) == {"services": {"app": {"image": "myapp", "ports": ["8443:443"]}}}


def test_environment_list_and_mapping_merge_by_key():
    a = "services:\n  s:\n    environment:\n      - TZ=utc\n      - PORT=80\n"
    b = "services:\n  s:\n    environment:\n      PORT: 8080\n"
    assert _merge(a, b)["services"]["s"]["environment"] == {"TZ": "utc", "PORT": 8080}
