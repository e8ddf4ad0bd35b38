"""A compose file as Docker Compose v2 loads it, without Docker: the steps of compose-go's loader that need no
engine, in its order.

1. YAML, anchors and `<<` merge keys resolved (PyYAML; it reads YAML 1.1, Compose YAML 1.2, which differ on
   unquoted `yes`/`no`/`on`/`off` and `1:20`-style numbers, so the compose file quotes such values).
2. Variable interpolation in values, not keys, for a given environment (`interpolate`, the Compose
   Specification's rules: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
   `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`, nesting in the default, `$$` for a literal `$`).
3. The Compose Specification's JSON schema, as check-jsonschema (pinned in the `dev` extra) vendors it, via
   `jsonschema`.
4. The consistency checks Compose makes on the model: an image or a build for each service, declared volumes,
   known `depends_on` services, healthcheck forms, one mount per target.

Short syntax is normalized where the tests read it (`mounts`, `published_ports`): bind sources relative to the
project directory become absolute, as Compose resolves them.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

# Vendored by check-jsonschema 0.39.0 from the Compose Specification (compose-go's schema/compose-spec.json),
# with its sha256 (vendor/sha256/compose-spec.sha256) and license (vendor/licenses/LICENSE.compose-spec).
SCHEMA_FILE = Path(str(files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"))

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
# Longest first: ":-" must not be read as ":" followed by a default.
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class ComposeError(ValueError):
    """Docker Compose would refuse the file."""


class InterpolationError(ComposeError):
    pass


class UnsetVariableWarning(UserWarning):
    """Compose's "The VAR variable is not set. Defaulting to a blank string." (an error under pytest here)."""


def _closing_brace(text: str, opening: int) -> int:
    """Index of the `}` closing text[opening] == "{", counting every brace as compose-go does; -1 if none."""
    depth = 0
    for index in range(opening, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _value(name: str, environment: Mapping[str, str]) -> str:
    if name not in environment:
        warnings.warn(
            f"The {name!r} variable is not set. Defaulting to a blank string.",
            UnsetVariableWarning,
            stacklevel=4,
        )
    return environment.get(name, "")


def _braced(body: str, environment: Mapping[str, str], template: str) -> str:
    """The value of `${body}`."""
    name = _NAME.match(body)
    if name is None:
        raise InterpolationError(f"invalid template: {template!r}")
    rest = body[name.end() :]
    if not rest:
        return _value(name.group(), environment)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"invalid template: {template!r}")
    argument = rest[len(operator) :]
    is_set = name.group() in environment
    value = environment.get(name.group(), "")
    usable = is_set and (value != "" or not operator.startswith(":"))
    if operator.endswith("-"):
        return value if usable else interpolate(argument, environment)
    if operator.endswith("+"):
        return interpolate(argument, environment) if usable else value
    if not usable:
        reason = interpolate(argument, environment)
        message = f"required variable {name.group()} is missing a value"
        raise InterpolationError(f"{message}: {reason}" if reason else message)
    return value


def interpolate(template: str, environment: Mapping[str, str]) -> str:
    """template with its variables substituted as Compose does (Compose Specification, "Interpolation")."""
    out = []
    index = 0
    while (dollar := template.find("$", index)) >= 0:
        out.append(template[index:dollar])
        following = template[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            index = dollar + 2
        elif following == "{":
            end = _closing_brace(template, dollar + 1)
            if end < 0:
                raise InterpolationError(f"invalid template: {template!r}")
            out.append(_braced(template[dollar + 2 : end], environment, template))
            index = end + 1
        elif name := _NAME.match(template, dollar + 1):
            out.append(_value(name.group(), environment))
            index = name.end()
        else:
            # Neither a name nor a brace follows: Compose keeps the `$`.
            out.append("$")
            index = dollar + 1
    out.append(template[index:])
    return "".join(out)


def interpolate_values(value: Any, environment: Mapping[str, str], path: str = "") -> Any:
    """Every string value in a loaded YAML tree interpolated; keys stay as written (as in Compose)."""
    if isinstance(value, str):
        try:
            return interpolate(value, environment)
        except InterpolationError as e:
            raise InterpolationError(f"{path or '.'}: {e}") from None
    if isinstance(value, dict):
        return {
            key: interpolate_values(item, environment, f"{path}.{key}" if path else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [interpolate_values(item, environment, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def schema_errors(model: Any) -> list[str]:
    """What the Compose Specification's schema rejects in model, as "path: message"."""
    errors = sorted(_validator().iter_errors(model), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in errors]


class Mount(NamedTuple):
    type: str
    """"bind", "volume" (named or anonymous) or another long-syntax type."""
    source: str
    """An absolute host path for a bind, the volume's name for a volume ("" if anonymous)."""
    read_only: bool


def _is_host_path(source: str) -> bool:
    # compose-go format.isFilePath, without the Windows forms.
    return source[:1] in {".", "/", "~"}


def _host_path(source: str, project_dir: Path) -> str:
    return os.path.normpath(project_dir / Path(source).expanduser())


def _parse_volume(spec: str) -> tuple[str, str, bool]:
    """(source, target, read_only) of short syntax `[SOURCE:]TARGET[:MODE]` (compose-go's ParseVolume)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return "", parts[0], False
    if len(parts) > 3 or not all(parts):
        raise ComposeError(f"invalid volume spec: {spec!r}")
    mode = parts[2].split(",") if len(parts) == 3 else []
    return parts[0], parts[1], "ro" in mode


def mounts(service: Mapping[str, Any], project_dir: Path) -> dict[str, Mount]:
    """target -> Mount for every volume of a service, short or long syntax, normalized as Compose does."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, read_only = _parse_volume(volume)
            kind = "bind" if _is_host_path(source) else "volume"
        else:
            source, target = volume.get("source", ""), volume["target"]
            read_only, kind = bool(volume.get("read_only", False)), volume["type"]
        if kind == "bind":
            source = _host_path(source, project_dir)
        if target in out:
            raise ComposeError(f"target {target} is mounted twice")
        out[target] = Mount(kind, source, read_only)
    return out


def published_ports(service: Mapping[str, Any]) -> set[int]:
    """Host ports of `ports`, short (`[IP:]HOST[-HOST]:CONTAINER[/PROTO]`) or long syntax."""
    ports: set[int] = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published = str(port.get("published", ""))
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            published = parts[-2] if len(parts) > 1 else ""
        if published:
            low, _, high = published.partition("-")
            ports.update(range(int(low), int(high or low) + 1))
    return ports


def consistency_errors(model: Mapping[str, Any], project_dir: Path) -> Iterator[str]:
    """What compose-go's checkConsistency rejects, for the attributes this project's file uses."""
    services, volumes = model.get("services", {}), model.get("volumes") or {}
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            yield f"service {name!r} has neither an image nor a build context specified"
        for dependency in service.get("depends_on", []):
            if dependency not in services:
                yield f"service {name!r} depends on undefined service {dependency!r}"
        test = service.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test and test[0] not in {"CMD", "CMD-SHELL", "NONE"}:
            yield f'service {name!r}: healthcheck.test must start either by "CMD", "CMD-SHELL" or "NONE"'
        try:
            service_mounts = mounts(service, project_dir)
        except ComposeError as e:
            yield f"service {name!r}: {e}"
            continue
        for mount in service_mounts.values():
            if mount.type == "volume" and mount.source and mount.source not in volumes:
                yield f"service {name!r} refers to undefined volume {mount.source}"


def load(path: Path, environment: Mapping[str, str], project_dir: Path | None = None) -> dict[str, Any]:
    """The compose file at path, interpolated for environment, as Compose accepts it; ComposeError if not.

    environment is all Compose sees (tests pass it explicitly, so the caller's shell cannot change them).
    """
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ComposeError(f"{path}: top-level object must be a mapping")
    model: dict[str, Any] = interpolate_values(raw, environment)
    problems = schema_errors(model) or list(consistency_errors(model, project_dir or path.parent))
    if problems:
        raise ComposeError(f"{path} is not a valid compose file:\n" + "\n".join(problems))
    return model


def flag(command: list[str], name: str) -> str:
    """The value after `--name` in a command line given as a list (compose `command`, Kubernetes `args`),
    which must hold it exactly once."""
    assert command.count(f"--{name}") == 1, (name, command)
    return str(command[command.index(f"--{name}") + 1])
