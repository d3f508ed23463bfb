"""Interpolation against the Compose Specification's documented rules and
examples (12-interpolation.md).  Pure: no root."""

from __future__ import annotations

import pytest

from volmerge.compose.interpolate import InterpolationError, interpolate, interpolate_tree

ENV = {"SET": "value", "EMPTY": "", "FOO": "foo"}


@pytest.mark.parametrize("text, want", [
    ("${SET}", "value"),
    ("$SET", "value"),
    ("pre-$SET-post", "pre-value-post"),
    ("${UNSET:-default}", "default"),
    ("${EMPTY:-default}", "default"),        # ':-' : unset or empty
    ("${EMPTY-default}", ""),                # '-'  : only unset
    ("${UNSET-default}", "default"),
    ("${SET:-default}", "value"),
    ("${SET:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:-${FOO}}", "foo"),             # nested, as documented
    ("${UNSET:-${ALSO_UNSET:-default}}", "default"),
    ("${SET?$FOO}", "value"),
    ("$$VAR_NOT_INTERPOLATED_BY_COMPOSE", "$VAR_NOT_INTERPOLATED_BY_COMPOSE"),
    ("cost: 5$", "cost: 5$"),                # a '$' starting no reference is kept
    ("$1abc", "$1abc"),
    ("a $ b", "a $ b"),
])
def test_documented_forms(text, want):
    assert interpolate(text, ENV) == want


def test_unset_is_blank_with_a_warning():
    warnings: list[str] = []
    assert interpolate("x${NOPE}y", ENV, warnings.append) == "xy"
    assert "NOPE" in warnings[0]


@pytest.mark.parametrize("text, msg", [
    ("${UNSET:?must be set}", "UNSET is missing a value: must be set"),
    ("${EMPTY:?err}", "EMPTY is missing a value: err"),
    ("${UNSET?err}", "UNSET is missing a value: err"),
])
def test_required(text, msg):
    with pytest.raises(InterpolationError, match=msg):
        interpolate(text, ENV)


def test_required_empty_allowed_without_colon():
    assert interpolate("${EMPTY?err}", ENV) == ""


@pytest.mark.parametrize("text", ["${", "${SET", "${1X}", "${SET/foo/bar}", "${SET:-x"])
def test_malformed(text):
    with pytest.raises(InterpolationError, match="invalid interpolation format"):
        interpolate(text, ENV)


def test_values_only_never_keys():
    data = {"labels": {"$FOO": "$FOO"}, "list": ["$FOO=bar"], "n": 3}
    out = interpolate_tree(data, ENV, lambda p: "f")
    assert out == {"labels": {"$FOO": "foo"}, "list": ["foo=bar"], "n": 3}


def test_error_names_the_key():
    with pytest.raises(InterpolationError, match=r"^f:3: services.web.image: required variable"):
        interpolate_tree({"services": {"web": {"image": "${TAG:?}"}}}, {}, lambda p: "f:3")
