"""tests/compose.py, the compose loader test_deployment.py checks docker-compose.yml with: its interpolation
against the Compose Specification's rules (12-interpolation.md) and its normalization of short syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compose import (
    InterpolationError,
    Mount,
    UnsetVariableWarning,
    interpolate,
    interpolate_values,
    mounts,
    published_ports,
)

SET = {"A": "a", "EMPTY": "", "B": "b"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("${A}", "a"),
        ("$A", "a"),
        ("x${A}y$B.z", "xayb.z"),
        ("${EMPTY}", ""),
        # :- unset or empty; - unset only
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${A:-d}", "a"),
        ("${UNSET-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${A-d}", "a"),
        ("${UNSET:-}", ""),
        ("${UNSET:-a default: with colons, spaces-and-dashes}", "a default: with colons, spaces-and-dashes"),
        # :+ set and non-empty; + set
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNSET:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        # :? and ? pass a value through
        ("${A:?err}", "a"),
        ("${A?err}", "a"),
        ("${EMPTY?err}", ""),
        # nesting in the default
        ("${UNSET:-${B}}", "b"),
        ("${UNSET:-$B}", "b"),
        ("${UNSET:-${ALSO_UNSET:-inner}}/tail", "inner/tail"),
        ("${A:-${ALSO_UNSET:?never evaluated}}", "a"),
        # $$ is a literal $, never interpolated
        ("$$", "$"),
        ("$$A", "$A"),
        ("$${A}", "${A}"),
        ("$$$A", "$a"),
        ("$$$$", "$$"),
        ("${UNSET:-$$A}", "$A"),
        # a $ that starts no variable stays
        ("5$", "5$"),
        ("$1", "$1"),
        ("a $ b", "a $ b"),
        ("$-", "$-"),
    ],
)
def test_interpolation_follows_the_compose_specification(template: str, expected: str) -> None:
    assert interpolate(template, SET) == expected


@pytest.mark.parametrize(
    ("template", "environment", "message"),
    [
        ("${UNSET:?give it}", {}, "required variable UNSET is missing a value: give it$"),
        ("${EMPTY:?give it}", {"EMPTY": ""}, "required variable EMPTY is missing a value: give it$"),
        ("${UNSET?give it}", {}, "required variable UNSET is missing a value: give it$"),
        ("${UNSET:?}", {}, "required variable UNSET is missing a value$"),
        ("${UNSET:?need $B}", {"B": "b"}, "missing a value: need b$"),
        ("x ${UNSET:-${INNER:?inner}}", {}, "required variable INNER is missing a value: inner$"),
    ],
)
def test_required_variables_report_their_message(
    template: str, environment: dict[str, str], message: str
) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate(template, environment)


@pytest.mark.parametrize(
    "template", ["${}", "${A", "x ${A:-b", "${1A}", "${A B}", "${A:x}", "${A/a/b}", "${-}"]
)
def test_invalid_templates_are_errors(template: str) -> None:
    with pytest.raises(InterpolationError, match="invalid template"):
        interpolate(template, SET)


def test_an_unset_variable_is_blank_with_a_warning() -> None:
    with pytest.warns(UnsetVariableWarning, match="'UNSET' variable is not set"):
        assert interpolate("[${UNSET}]", {}) == "[]"
    with pytest.warns(UnsetVariableWarning, match="'A_B' variable is not set"):
        assert interpolate("$A_B", SET) == ""


def test_values_are_interpolated_and_keys_are_not_and_errors_name_their_place() -> None:
    tree = {"$A": ["${A}", 1, None, True, {"k": "${B:-x}"}], "n": 1.5}
    assert interpolate_values(tree, SET) == {"$A": ["a", 1, None, True, {"k": "b"}], "n": 1.5}
    with pytest.raises(InterpolationError, match=r"^services\.s\.command\[1\]: required variable X"):
        interpolate_values({"services": {"s": {"command": ["ok", "${X:?}"]}}}, {})


def test_mounts_resolve_host_paths_against_the_project_directory(tmp_path: Path) -> None:
    service = {
        "volumes": [
            "./data:/data:ro",
            "../shared:/shared:rw,z",
            "/abs/path:/abs",
            "named:/named:ro,nocopy",
            "/anonymous",
            {"type": "bind", "source": "./long", "target": "/long", "read_only": True},
            {"type": "volume", "source": "cache", "target": "/cache"},
        ]
    }
    assert mounts(service, tmp_path / "project") == {
        "/data": Mount("bind", str(tmp_path / "project" / "data"), read_only=True),
        "/shared": Mount("bind", str(tmp_path / "shared"), read_only=False),
        "/abs": Mount("bind", "/abs/path", read_only=False),
        "/named": Mount("volume", "named", read_only=True),
        "/anonymous": Mount("volume", "", read_only=False),
        "/long": Mount("bind", str(tmp_path / "project" / "long"), read_only=True),
        "/cache": Mount("volume", "cache", read_only=False),
    }


def test_published_ports_read_short_and_long_syntax() -> None:
    service = {
        "ports": [
            "8000:8000",
            "127.0.0.1:9000:9001/udp",
            "7000-7002:7000-7002",
            "6000",
            {"target": 80, "published": "8080"},
            {"target": 81, "published": 8081},
            {"target": 82},
        ]
    }
    assert published_ports(service) == {8000, 9000, 7000, 7001, 7002, 8080, 8081}
