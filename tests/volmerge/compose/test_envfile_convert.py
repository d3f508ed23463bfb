"""``.env`` / ``env_file`` parsing and the service conversion's refusals.
Pure: no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from volmerge.compose import envfile
from volmerge.compose.convert import duration, run_options
from volmerge.compose.loader import Options, load
from volmerge.errors import BadInput


def test_envfile_forms():
    text = ("# comment\n\nA=1\nexport B=two words # comment\nC='single # kept $X'\n"
            'D="line\\nnext \\"q\\""\nE=\nF\nG=a#b\n')
    assert envfile.parse(text, "f", {"F": "from env"}) == {
        "A": "1", "B": "two words", "C": "single # kept $X", "D": 'line\nnext "q"', "E": "",
        "F": "from env", "G": "a#b"}


@pytest.mark.parametrize("text, msg", [("1A=x\n", "f:1: bad variable"),
                                       ("A='open\n", "f:1: unterminated single"),
                                       ('A="open\n', "f:1: unterminated double")])
def test_envfile_errors(text, msg):
    with pytest.raises(BadInput, match=msg):
        envfile.parse(text, "f", {})


@pytest.mark.parametrize("text, seconds", [("1m30s", 90), ("500ms", 0.5), ("10s", 10),
                                           ("1h", 3600), (5, 5)])
def test_duration(text, seconds):
    assert duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "10", "1x", "s"])
def test_bad_duration(text):
    with pytest.raises(BadInput, match="bad duration"):
        duration(text, "x")


@pytest.mark.parametrize("service, msg", [
    ("ports: ['80']", "a container port alone"),
    ("ports: ['8000-8001:80-81']", "port ranges"),
    ("ports: [{target: 80}]", "without 'published'"),
    ("ports: [{published: 8080}]", "without 'target'"),
    ("volumes: ['./x:/x:z']", "mode 'z' is not supported"),
    ("healthcheck: {interval: 1s}", "healthcheck without 'test'"),
    ("env_file: [missing.env]", "missing.env does not exist"),
    ("volumes: ['./x:relative']", "must be an absolute path"),
])
def test_refused_service_values(tmp_path: Path, service: str, msg: str):
    (tmp_path / "compose.yaml").write_text(f"services:\n  s:\n    image: a\n    {service}\n")
    with pytest.raises(BadInput, match=msg):
        run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")


def test_unsupported_network_and_volume_keys(tmp_path: Path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  s:\n    image: a\n    networks: [a, b]\n"
        "networks:\n  a: {driver: overlay}\n  b: {ipam: {config: [{subnet: 10.1.0.0/24}]}}\n"
        "volumes:\n  v: {driver_opts: {type: nfs}}\n")
    with pytest.raises(BadInput) as exc:
        load(Options(cwd=str(tmp_path)), environ={})
    msg = str(exc.value)
    for part in ("more than one network", "networks.a.driver", "networks.b.ipam",
                 "volumes.v.driver_opts"):
        assert part in msg


@pytest.mark.parametrize("hosts", [
    "['db.example:192.0.2.7', 'v6=2001:db8::7', 'two:192.0.2.1', 'two:192.0.2.2']",
    "{db.example: 192.0.2.7, v6: '2001:db8::7', two: [192.0.2.1, 192.0.2.2]}",
])
def test_extra_hosts_list_and_mapping(tmp_path: Path, hosts: str):
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  s:\n    image: a\n    extra_hosts: {hosts}\n")
    opts = run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")
    assert opts.extra_hosts == ["db.example:192.0.2.7", "v6:2001:db8::7", "two:192.0.2.1",
                                "two:192.0.2.2"]


@pytest.mark.parametrize("hosts", ["['db.example']", "['db:not-an-ip']", "{'a b': 192.0.2.1}"])
def test_bad_extra_hosts(tmp_path: Path, hosts: str):
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  s:\n    image: a\n    extra_hosts: {hosts}\n")
    from volmerge.runtime.errors import BadInput as RuntimeBadInput

    with pytest.raises((BadInput, RuntimeBadInput), match="services.s.extra_hosts"):
        run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")


@pytest.mark.parametrize("search", ["['a\\nnameserver 192.0.2.66']", "['a b']", "['']",
                                    "'-bad'"])
def test_bad_dns_search(tmp_path: Path, search: str):
    """Each becomes part of resolv.conf's ``search`` line: a newline would add
    a nameserver of its own."""
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  s:\n    image: a\n    dns_search: {search}\n")
    from volmerge.runtime.errors import BadInput as RuntimeBadInput

    with pytest.raises((BadInput, RuntimeBadInput), match="services.s.dns_search"):
        run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")


def test_dns_search_domains(tmp_path: Path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  s:\n    image: a\n    dns_search: [example.com, corp.example., '.']\n")
    opts = run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")
    assert opts.dns_search == ["example.com", "corp.example.", "."]


@pytest.mark.parametrize("alias", ["'db\\n192.0.2.66 api'", "'a b'", "'a\\tb'"])
def test_bad_network_alias(tmp_path: Path, alias: str):
    """An alias goes into the /etc/hosts of every container on the network:
    a newline in one would add a line (another name for another address)."""
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  s:\n    image: a\n    networks:\n      default:\n"
        f"        aliases: [ok_alias, \"{alias[1:-1]}\"]\n")
    with pytest.raises(BadInput, match="services.s.networks.default.aliases: invalid alias"):
        run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")


def test_network_aliases(tmp_path: Path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  s:\n    image: a\n    networks:\n      default:\n"
        "        aliases: [db.internal, my_db, '']\n")
    opts = run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")
    assert opts.aliases == ["s", "db.internal", "my_db"]
