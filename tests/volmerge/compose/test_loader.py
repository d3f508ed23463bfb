"""Loading a project: files found as docker compose finds them, .env,
-f merging, extends, include, profiles, schema errors with file, line and
key, unsupported keys named in one error.  Pure: temporary files, no root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from volmerge.compose.convert import run_options
from volmerge.compose.loader import Options, load
from volmerge.errors import BadInput


def _w(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def _load(d: Path, env: dict[str, str] | None = None, **kw) -> object:
    return load(Options(cwd=str(d), **kw), environ=env or {})


@pytest.mark.parametrize("name", ["compose.yaml", "compose.yml", "docker-compose.yaml",
                                  "docker-compose.yml"])
def test_default_file_names_and_parent_search(tmp_path, name):
    _w(tmp_path / "Proj", name, "services:\n  web:\n    image: busybox\n")
    (tmp_path / "Proj" / "sub").mkdir()
    p = _load(tmp_path / "Proj" / "sub")
    assert p.name == "proj" and list(p.services) == ["web"]


def test_compose_yaml_wins_and_override_file_is_merged(tmp_path):
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n")
    _w(tmp_path, "docker-compose.yml", "services:\n  web:\n    image: b\n")
    _w(tmp_path, "compose.override.yaml", "services:\n  web:\n    user: '1000'\n")
    p = _load(tmp_path)
    assert p.services["web"] == {"image": "a", "user": "1000"}


def test_compose_file_variable_and_dotenv(tmp_path):
    _w(tmp_path, "one.yaml", "name: ${NAME:-x}\nservices:\n  web:\n    image: busybox:${TAG}\n")
    _w(tmp_path, "two.yaml", "services:\n  web:\n    environment:\n      - A=${A-unset}\n")
    _w(tmp_path, ".env", "# comment\nTAG=1.36 # inline comment\nexport NAME='my_app'\nA=\n"
                         "COMPOSE_FILE=one.yaml:two.yaml\n")
    p = _load(tmp_path)
    assert p.name == "my_app"
    assert p.services["web"] == {"image": "busybox:1.36", "environment": {"A": ""}}
    # the environment wins over .env
    p = _load(tmp_path, {"TAG": "2"})
    assert p.services["web"]["image"] == "busybox:2"


def test_env_file_option_replaces_dotenv(tmp_path):
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: busybox:${TAG}\n")
    _w(tmp_path, ".env", "TAG=1\n")
    _w(tmp_path, "prod.env", 'TAG="2"\n')
    assert _load(tmp_path, env_files=("prod.env",)).services["web"]["image"] == "busybox:2"


def test_several_f_merged_in_order(tmp_path):
    _w(tmp_path, "a.yaml", "services:\n  web:\n    image: a\n    command: [x]\n"
                           "    volumes: ['d:/data']\nvolumes:\n  d: {}\n  e: {}\n")
    _w(tmp_path, "b.yaml", "services:\n  web:\n    image: b\n    command: [y]\n"
                           "    volumes: ['e:/data']\n")
    p = _load(tmp_path, files=("a.yaml", "b.yaml"))
    assert p.services["web"] == {"image": "b", "command": ["y"], "volumes": ["e:/data"]}


def test_project_name_order(tmp_path):
    _w(tmp_path, "compose.yaml", "name: fromfile\nservices:\n  web:\n    image: a\n")
    assert _load(tmp_path).name == "fromfile"
    assert _load(tmp_path, {"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    assert _load(tmp_path, {"COMPOSE_PROJECT_NAME": "x"}, project_name="Opt.Name").name \
        == "optname"


def test_extends_documented_example(tmp_path):
    _w(tmp_path, "compose.yaml", """
services:
  common:
    image: busybox
    environment:
      TZ: utc
      PORT: 80
    volumes:
      - common-volume:/var/lib/backup/data:rw
  cli:
    extends:
      service: common
    environment:
      - PORT=8080
    volumes:
      - cli-volume:/var/lib/backup/data:ro
volumes: {common-volume: {}, cli-volume: {}}
""")
    cli = _load(tmp_path).services["cli"]
    assert cli == {"image": "busybox", "environment": {"TZ": "utc", "PORT": "8080"},
                   "volumes": ["cli-volume:/var/lib/backup/data:ro"]}


def test_extends_other_file_and_cycle(tmp_path):
    _w(tmp_path, "base/common.yml", "services:\n  webapp:\n    image: app\n"
                                    "    env_file: app.env\n")
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    extends:\n      file: base/common.yml\n"
                                 "      service: webapp\n    user: '1'\n")
    web = _load(tmp_path).services["web"]
    assert web == {"image": "app", "env_file": [str(tmp_path / "base" / "app.env")], "user": "1"}
    _w(tmp_path, "compose.yaml", "services:\n  a:\n    image: x\n    extends: b\n"
                                 "  b:\n    image: y\n    extends: a\n")
    with pytest.raises(BadInput, match="circular"):
        _load(tmp_path)


def test_include(tmp_path):
    _w(tmp_path, "db/compose.yaml", "services:\n  db:\n    image: pg:${PGTAG}\n"
                                    "    volumes: ['./data:/d']\n")
    _w(tmp_path, "db/.env", "PGTAG=16\n")
    _w(tmp_path, "compose.yaml", "include:\n  - db/compose.yaml\nservices:\n  app:\n"
                                 "    image: app\n    depends_on: [db]\n")
    p = _load(tmp_path)
    assert p.services["db"] == {"image": "pg:16", "volumes": [f"{tmp_path}/db/data:/d"]}
    assert set(p.services) == {"app", "db"}


def test_profiles_documented_example(tmp_path):
    _w(tmp_path, "compose.yaml", """
services:
  foo: {image: foo}
  bar: {image: bar, profiles: [test]}
  baz: {image: baz, depends_on: [bar], profiles: [test]}
  zot: {image: zot, depends_on: [bar], profiles: [debug]}
""")
    assert set(_load(tmp_path).services) == {"foo"}
    assert set(_load(tmp_path, profiles=("test",)).services) == {"foo", "bar", "baz"}
    assert set(_load(tmp_path, {"COMPOSE_PROFILES": "test,debug"}).services) == \
        {"foo", "bar", "baz", "zot"}
    with pytest.raises(BadInput, match="'bar' is not defined or not enabled"):
        _load(tmp_path, profiles=("debug",))
    assert set(_load(tmp_path, targets=("bar",)).services) == {"foo", "bar", "baz"}


def test_schema_error_names_file_line_and_key(tmp_path):
    f = _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n    ports:\n"
                                     "      - {target: 80, bogus: 1}\n")
    with pytest.raises(BadInput, match=rf"^{f}:5: services.web.ports\[0\]"):
        _load(tmp_path)
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n    restrt: always\n")
    with pytest.raises(BadInput, match=rf"^{f}:4: services.web.restrt: unknown key"):
        _load(tmp_path)
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n    read_only: [1]\n")
    with pytest.raises(BadInput, match=rf"^{f}:4: services.web.read_only: "):
        _load(tmp_path)
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n    read_only: maybe\n")
    with pytest.raises(BadInput, match=r"services.web.read_only: 'maybe' is not a boolean"):
        run_options(_load(tmp_path), "web")


def test_yaml_errors(tmp_path):
    f = _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n    image: b\n")
    with pytest.raises(BadInput, match=rf"^{f}:4: invalid YAML"):
        _load(tmp_path)
    _w(tmp_path, "compose.yaml", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")))
    with pytest.raises(BadInput, match="YAML nodes"):
        _load(tmp_path)


def test_unsupported_keys_named_in_one_error(tmp_path):
    f = _w(tmp_path, "compose.yaml", """services:
  web:
    image: a
    build: .
    deploy:
      replicas: 2
secrets:
  s: {file: ./s}
x-anything: {}
""")
    with pytest.raises(BadInput) as exc:
        _load(tmp_path)
    msg = str(exc.value)
    assert "not supported by volmerge compose (3)" in msg
    assert f"{f}:7: secrets" in msg
    assert f"{f}:4: services.web.build" in msg and f"{f}:5: services.web.deploy" in msg


def test_references_checked(tmp_path):
    _w(tmp_path, "compose.yaml", "services:\n  web:\n    image: a\n    volumes: ['nope:/d']\n")
    with pytest.raises(BadInput, match="volume 'nope' is not defined"):
        _load(tmp_path)
    _w(tmp_path, "compose.yaml", "services:\n  a:\n    image: a\n    depends_on: [b]\n"
                                 "  b:\n    image: b\n    depends_on: [a]\n")
    with pytest.raises(BadInput, match="dependency cycle"):
        _load(tmp_path)
    _w(tmp_path, "compose.yaml", "services:\n  a:\n    build: .\n")
    with pytest.raises(BadInput, match="services.a.build"):
        _load(tmp_path)


def test_service_to_run_options(tmp_path):
    _w(tmp_path, "vars.env", "FROM_FILE=1\nBOTH=file\n")
    _w(tmp_path, "compose.yaml", """
name: shop
services:
  web:
    image: busybox
    command: sh -c 'echo "$$X"'
    entrypoint: ["/bin/env"]
    env_file: [vars.env]
    environment: {BOTH: env, PASSED: null, FLAG: true}
    volumes:
      - data:/data
      - ./conf:/conf:ro
      - /anon
      - {type: tmpfs, target: /run, tmpfs: {size: 1048576}}
      - {type: volume, source: data, target: /ro, read_only: true}
    tmpfs: /tmp
    ports: ["8080:80", {target: 53, published: "5353", protocol: udp, host_ip: 127.0.0.1}]
    networks:
      back:
        aliases: [www]
    healthcheck:
      test: wget -q localhost
      interval: 1m30s
      retries: 5
    restart: unless-stopped
    user: "1000:1000"
    working_dir: /srv
    labels: [team=a]
    read_only: true
    stop_signal: SIGINT
    stop_grace_period: 1m
    hostname: web1
volumes:
  data: {}
networks:
  back: {}
""")
    p = _load(tmp_path, {"PASSED": "yes"})
    o = run_options(p, "web")
    assert o.name == "shop-web-1" and o.network == "shop_back" and o.aliases == ["web", "www"]
    assert o.command == ["sh", "-c", 'echo "$X"'] and o.entrypoint == ["/bin/env"]
    assert o.env == {"FROM_FILE": "1", "BOTH": "env", "PASSED": "yes", "FLAG": "true"}
    mounts = [(m.kind, m.source, m.target, m.readonly) for m in o.mounts]
    assert mounts[0] == ("volume", "shop_data", "/data", False)
    assert mounts[1] == ("bind", str(tmp_path / "conf"), "/conf", True)
    assert mounts[2][0] == "volume" and mounts[2][1].startswith("shop_web_")
    assert mounts[3][:3] == ("tmpfs", "tmpfs", "/run") and "size=1048576" in o.mounts[3].options
    assert mounts[4] == ("volume", "shop_data", "/ro", True)
    assert mounts[5][:3] == ("tmpfs", "tmpfs", "/tmp")
    assert [(x.host_ip, x.host_port, x.container_port, x.proto) for x in o.ports] == \
        [("", 8080, 80, "tcp"), ("127.0.0.1", 5353, 53, "udp")]
    assert o.health.test == ["CMD-SHELL", "wget -q localhost"] and o.health.interval == 90
    assert o.health.retries == 5
    assert (o.restart.name, o.user, o.workdir, o.read_only, o.hostname) == \
        ("always", "1000:1000", "/srv", True, "web1")
    assert o.stop_signal == "SIGINT"
    assert o.labels["team"] == "a" and o.labels["com.docker.compose.project"] == "shop"
    assert o.labels["com.docker.compose.service"] == "web"
    json.dumps(o.to_json())
    # the hash follows the model: same file, same hash; a change, another
    h = o.labels["com.docker.compose.config-hash"]
    assert run_options(_load(tmp_path, {"PASSED": "yes"}), "web").labels[
        "com.docker.compose.config-hash"] == h
