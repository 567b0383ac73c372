"""values.yaml documents every key and values.schema.json types every key and refuses the rest.

Bad values must stop `helm template` and `helm lint` with a message that names the key, so a
typo in an install command never renders a chart that silently ignores it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.deploy.conftest import CHART, Chart

VALUES_FILE = CHART / "values.yaml"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
KEY = re.compile(r"^(\s*)([A-Za-z_][\w./-]*):(.*)$")

#: values, and a text the error must contain (the key's path as helm reports it)
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"replicas": 2}, "additional properties 'replicas' not allowed"),
    ("unknown nested key", {"service": {"nodePort": 30080}}, "/service"),
    ("unknown key in a security context", {"containerSecurityContext": {"capabilites": {"drop": ["ALL"]}}},
     "capabilites"),
    ("replicaCount as a string", {"replicaCount": "2"}, "/replicaCount"),
    ("no workers", {"workers": 0}, "/workers"),
    ("port out of range", {"containerPorts": {"http": 70000}}, "/containerPorts/http"),
    ("service port zero", {"service": {"ports": {"admin": 0}}}, "/service/ports/admin"),
    ("unknown log level", {"logLevel": "verbose"}, "/logLevel"),
    ("unknown overflow mode", {"audit": {"overflow": "lose"}}, "/audit/overflow"),
    ("replay store that is not redis", {"replayStore": {"url": "http://redis:6379"}}, "/replayStore/url"),
    ("policy file not named *.yaml", {"policy": {"files": {"policy.json": "{}"}}}, "'policy.json' not allowed"),
    ("liveness success threshold above 1", {"livenessProbe": {"successThreshold": 2}}, "/livenessProbe"),
    ("boolean as a string", {"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ("image digest that is not sha256", {"image": {"digest": "latest"}}, "/image/digest"),
    ("grace period too short", {"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds"),
    ("two replay store sources", {"replayStore": {"url": "redis://r:6379", "existingSecret": "s"}}, "replayStore"),
    ("proxy and admin on one port", {"containerPorts": {"http": 9090}}, "containerPorts"),
    ("autoscaler minimum above maximum",
     {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "autoscaling.minReplicas"),
]


def resolve(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema node and every node it includes through $ref and allOf."""
    found = [node]
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/definitions/")
        found += resolve(SCHEMA["definitions"][name])
    for part in node.get("allOf", []) + node.get("anyOf", []):
        found += resolve(part)
    return found


def types_of(nodes: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        kind = node.get("type")
        found.update([kind] if isinstance(kind, str) else kind or [])
    return found


def walk(value: Any, nodes: list[dict[str, Any]], path: str) -> list[str]:
    """Keys of ``value`` that the schema nodes do not describe with a matching type."""
    problems = []
    kinds = types_of(nodes)
    expected = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
                type(None): "null"}[type(value)]
    if expected not in kinds and not (expected == "integer" and "number" in kinds):
        problems.append(f"{path or '/'}: {expected} not in schema types {sorted(kinds)}")
    if isinstance(value, dict):
        properties = {key: sub for node in nodes for key, sub in node.get("properties", {}).items()}
        patterns = {pattern: sub for node in nodes for pattern, sub in node.get("patternProperties", {}).items()}
        free = [node["additionalProperties"] for node in nodes if isinstance(node.get("additionalProperties"), dict)]
        for key, item in value.items():
            matching = [sub for pattern, sub in patterns.items() if re.search(pattern, key)]
            if key in properties:
                problems += walk(item, resolve(properties[key]), f"{path}/{key}")
            elif matching:
                problems += walk(item, resolve(matching[0]), f"{path}/{key}")
            elif free:
                problems += walk(item, resolve(free[0]), f"{path}/{key}")
            else:
                problems.append(f"{path}/{key}: not in the schema")
    return problems


def test_schema_describes_every_value() -> None:
    values = YAML(typ="safe", pure=True).load(VALUES_FILE.read_text())
    assert walk(values, [SCHEMA], "") == []


def closed_objects(node: Any, path: str = "") -> list[str]:
    """Schema objects with properties that still accept unknown keys."""
    problems = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            problems.append(path or "/")
        for key, sub in node.items():
            problems += closed_objects(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            problems += closed_objects(sub, f"{path}/{index}")
    return problems


def test_schema_objects_refuse_unknown_keys() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert closed_objects(SCHEMA) == []


def test_every_key_in_values_yaml_has_a_comment() -> None:
    """Keys outside block scalars and list items each have a comment line right above them."""
    lines = VALUES_FILE.read_text().splitlines()
    undocumented, skip_deeper_than, keys = [], None, 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None and indent > skip_deeper_than:
            continue
        skip_deeper_than = None
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if stripped.startswith("- "):
            skip_deeper_than = indent  # example data inside a list
            continue
        match = KEY.match(line)
        assert match, f"values.yaml:{number}: not a key: {line!r}"
        keys += 1
        if match.group(3).strip().startswith("|"):
            skip_deeper_than = indent
        previous = lines[number - 2].strip() if number > 1 else ""
        if not previous.startswith("#"):
            undocumented.append(f"values.yaml:{number}: {stripped}")
    assert keys > 100
    assert undocumented == []


@pytest.mark.parametrize(("values", "message"), [case[1:] for case in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_by_template(chart: Chart, tmp_path: Path, values: dict[str, Any],
                                            message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML, without YAML 1.1's guesses ("yes" is a string)
    done = chart.run(*chart.template_command([path]))
    assert done.returncode != 0, f"rendered despite bad values: {values}"
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize(("values", "message"), [case[1:] for case in BAD_VALUES[:6]],
                         ids=[c[0] for c in BAD_VALUES[:6]])
def test_bad_values_are_refused_by_lint(chart: Chart, tmp_path: Path, values: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML, without YAML 1.1's guesses ("yes" is a string)
    done = chart.run("lint", "--strict", CHART, "--values", path)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr, done.stdout + done.stderr
