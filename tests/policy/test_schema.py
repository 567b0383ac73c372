"""The JSON Schema of policy files (``enforcer policy schema``) and its committed copy.

The schema is generated from the models, so these tests check what generation cannot
promise on its own: the copy in ``policies/`` is current, the example policies validate and
opt in to it, broken documents are refused by the schema *and* the loader (the two must not
disagree about the shape of a file), and every key carries a description for editors.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from enforcer.cli import main
from enforcer.policy.loader import PolicyLoadError, expand_paths, load_policy, read_yaml, to_plain
from enforcer.policy.schema import REGENERATE, policy_schema, render_schema

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
COMMITTED = POLICIES / "policy.schema.json"
GOOD = ROOT / "tests" / "data" / "policies" / "good"
MODELINE = "# yaml-language-server: $schema=./policy.schema.json"

#: A valid policy that each row of BROKEN changes in one place.
BASE: dict[str, Any] = {
    "version": 1,
    "issuers": [{"id": "corp", "issuer": "https://auth.example.test", "jwks_uri": "https://auth.example.test/jwks"}],
    "resources": [{
        "id": "demo",
        "resource": "https://mcp.example.test/mcp",
        "match": {"path_prefix": "/mcp"},
        "upstream": "http://127.0.0.1:9000/mcp",
        "issuers": ["corp"],
        "timeouts": {"connect_seconds": 5, "read_seconds": 60},
        "signatures": {"keys": {"from_token_cnf": True}},
        "rules": [{"id": "agents-call", "effect": "allow", "client_ids": ["agent-*"], "scopes": ["tools:call"]}],
    }],
}
REMOVE = object()
RESOURCE: tuple[Any, ...] = ("resources", 0)
RULE: tuple[Any, ...] = (*RESOURCE, "rules", 0)
ISSUER: tuple[Any, ...] = ("issuers", 0)

#: (what is wrong, where in BASE, the value put there or REMOVE, JSON path the schema must blame)
BROKEN: list[tuple[str, tuple[Any, ...], Any, str]] = [
    ("unknown top-level key", ("policies",), [], "$"),
    ("unknown key in an issuer", (*ISSUER, "jwks_url"), "https://auth.example.test/jwks", "$.issuers[0]"),
    ("unknown key in a resource", (*RESOURCE, "upstreams"), [], "$.resources[0]"),
    ("unknown key in a rule", (*RULE, "scope"), "tools:call", "$.resources[0].rules[0]"),
    ("unknown key in match", (*RESOURCE, "match", "prefix"), "/mcp", "$.resources[0].match"),
    ("unknown key in signature keys", (*RESOURCE, "signatures", "keys", "jwk_file"), "a.json",
     "$.resources[0].signatures.keys"),
    ("version missing", ("version",), REMOVE, "$"),
    ("version 2", ("version",), 2, "$.version"),
    ("version as a string", ("version",), "1", "$.version"),
    ("version as a boolean", ("version",), True, "$.version"),
    ("integer as a string", (*ISSUER, "clock_skew_seconds"), "30", "$.issuers[0].clock_skew_seconds"),
    ("integer with a fraction", (*ISSUER, "clock_skew_seconds"), 30.5, "$.issuers[0].clock_skew_seconds"),
    ("integer above its maximum", (*ISSUER, "clock_skew_seconds"), 301, "$.issuers[0].clock_skew_seconds"),
    ("integer below its minimum", (*RESOURCE, "limits"), {"max_body_bytes": -1},
     "$.resources[0].limits.max_body_bytes"),
    ("boolean as the string yes", (*ISSUER, "discovery"), "yes", "$.issuers[0].discovery"),
    ("boolean as the string true", (*RESOURCE, "forward_token"), "true", "$.resources[0].forward_token"),
    ("boolean as a number", (*RESOURCE, "signatures", "require_nonce"), 1, "$.resources[0].signatures.require_nonce"),
    ("number as a string", (*RESOURCE, "timeouts", "connect_seconds"), "5", "$.resources[0].timeouts.connect_seconds"),
    ("number as a boolean", (*RESOURCE, "timeouts", "read_seconds"), True, "$.resources[0].timeouts.read_seconds"),
    ("zero timeout", (*RESOURCE, "timeouts", "connect_seconds"), 0, "$.resources[0].timeouts.connect_seconds"),
    ("string as a number", (*RESOURCE, "id"), 7, "$.resources[0].id"),
    ("list as a single string", (*ISSUER, "algorithms"), "ES256", "$.issuers[0].algorithms"),
    ("list item of the wrong type", (*RULE, "client_ids"), ["agent-1", 42], "$.resources[0].rules[0].client_ids[1]"),
    ("issuers as a mapping", ("issuers",), {"corp": {}}, "$.issuers"),
    ("symmetric token algorithm", (*ISSUER, "algorithms"), ["HS256"], "$.issuers[0].algorithms[0]"),
    ("unknown signature algorithm", (*RESOURCE, "signatures", "algorithms"), ["rsa-sha1"],
     "$.resources[0].signatures.algorithms[0]"),
    ("effect in the wrong case", (*RULE, "effect"), "Allow", "$.resources[0].rules[0].effect"),
    ("effect missing", (*RULE, "effect"), REMOVE, "$.resources[0].rules[0]"),
    ("unknown mode", (*RESOURCE, "mode"), "audit", "$.resources[0].mode"),
    ("upstream missing", (*RESOURCE, "upstream"), REMOVE, "$.resources[0]"),
    ("key without a value", (*ISSUER, "jwks_file"), None, "$.issuers[0].jwks_file"),
    ("nested block without a value", (*RESOURCE, "signatures"), None, "$.resources[0].signatures"),
    ("condition without a value", (*RULE, "subjects"), None, "$.resources[0].rules[0].subjects"),
]


def changed(where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    *parents, last = where
    node: Any = document
    for part in parents:
        node = node[part]
    if value is REMOVE:
        del node[last]
    else:
        node[last] = value
    return document


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    """Every dict and list inside ``node`` (itself included), with its JSON pointer."""
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, sub in items:
        yield from walk(sub, f"{path}/{key}")


def loaded(path: Path) -> Any:
    """A YAML file as plain data, read exactly as the loader reads it (YAML 1.2), with YAML
    timestamps as the RFC 3339 strings an editor's schema validation sees."""
    tree, _ = read_yaml(path)
    return _timestamps_as_text(to_plain(tree))


def _timestamps_as_text(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _timestamps_as_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_timestamps_as_text(value) for value in node]
    if isinstance(node, datetime):
        return node.isoformat()
    return node


def example_policies() -> list[Path]:
    """The policy files `enforcer policy validate policies/` reads (not *_test.yaml)."""
    return expand_paths([POLICIES])


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_current() -> None:
    assert COMMITTED.is_file(), f"{COMMITTED.relative_to(ROOT)} is missing; run `{REGENERATE}`"
    assert COMMITTED.read_text(encoding="utf-8") == render_schema(), \
        f"{COMMITTED.relative_to(ROOT)} differs from the models; run `{REGENERATE}`"


def test_render_is_stable_json() -> None:
    text = render_schema()
    assert text == render_schema() and text.endswith("}\n") and not text.endswith("\n\n")
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    assert list(schema)[:4] == ["$schema", "$id", "title", "description"]


def test_every_object_refuses_unknown_keys() -> None:
    open_objects = [path for path, node in walk(policy_schema())
                    if isinstance(node, dict) and ("properties" in node or node.get("type") == "object")
                    and node.get("additionalProperties") is not False]
    assert open_objects == []


def test_every_key_and_model_is_described() -> None:
    schema = policy_schema()
    undescribed = [f"{path}/properties/{key}" for path, node in walk(schema)
                   if isinstance(node, dict) and isinstance(node.get("properties"), dict)
                   for key, field in node["properties"].items() if not str(field.get("description", "")).strip()]
    undescribed += [f"#/$defs/{name}" for name, model in schema["$defs"].items() if not model.get("description")]
    assert undescribed == []


def test_null_is_never_a_valid_value() -> None:
    """The loader refuses keys written without a value, so the schema must not offer null."""
    nulls = [path for path, node in walk(policy_schema())
             if node == {"type": "null"} or (isinstance(node, dict) and node.get("type") == "null")
             or (isinstance(node, dict) and "default" in node and node["default"] is None)]
    assert nulls == []


def test_defaults_are_valid_values(validator: Any) -> None:
    schema = policy_schema()
    invalid = []
    for path, node in walk(schema):
        if isinstance(node, dict) and isinstance(node.get("properties"), dict):
            for key, field in node["properties"].items():
                if "default" in field:
                    field_schema = {**field, "$defs": schema["$defs"]}
                    field_schema.pop("default")
                    if not jsonschema.Draft202012Validator(field_schema).is_valid(field["default"]):
                        invalid.append(f"{path}/properties/{key}")
    assert invalid == []
    resource = schema["$defs"]["Resource"]["properties"]
    assert resource["match"]["default"] == {"path_prefix": "/"}
    assert resource["timeouts"]["default"] == {"connect_seconds": 5.0, "read_seconds": 60.0}
    assert schema["$defs"]["Issuer"]["properties"]["clock_skew_seconds"]["default"] == 30


def test_strict_scalar_types() -> None:
    definitions = policy_schema()["$defs"]
    assert definitions["Issuer"]["properties"]["clock_skew_seconds"]["type"] == "integer"
    assert definitions["Issuer"]["properties"]["discovery"]["type"] == "boolean"
    assert definitions["Issuer"]["properties"]["jwks_uri"]["type"] == "string"
    assert definitions["Timeouts"]["properties"]["connect_seconds"]["type"] == "number"
    assert definitions["Rule"]["properties"]["client_ids"]["type"] == "array"


@pytest.mark.parametrize("path", [*example_policies(), *sorted(GOOD.glob("*.yaml"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_valid_policies_match_the_schema(path: Path, validator: Any) -> None:
    problems = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(loaded(path))]
    assert problems == []


def test_base_document_is_valid(validator: Any, tmp_path: Path) -> None:
    assert list(validator.iter_errors(BASE)) == []
    file = tmp_path / "base.yaml"
    file.write_text(json.dumps(BASE))
    load_policy([file])


@pytest.mark.parametrize(("why", "where", "value", "blamed"), BROKEN, ids=[row[0] for row in BROKEN])
def test_broken_documents_are_refused(why: str, where: tuple[Any, ...], value: Any, blamed: str,
                                      validator: Any, tmp_path: Path) -> None:
    document = changed(where, value)
    assert {error.json_path for error in validator.iter_errors(document)} == {blamed}, why
    file = tmp_path / "broken.yaml"
    file.write_text(json.dumps(document))  # JSON is YAML 1.2: no yes/no or octal surprises
    with pytest.raises(PolicyLoadError):
        load_policy([file])


def test_example_policies_name_the_schema() -> None:
    policies = example_policies()
    assert policies, "no example policies in policies/"
    missing = [p.name for p in policies if p.read_text(encoding="utf-8").splitlines()[:1] != [MODELINE]]
    assert missing == [], f"start these files with the line {MODELINE!r}"


def test_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    assert capsys.readouterr().out == render_schema()


def test_command_writes_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "policy.schema.json"
    assert main(["policy", "schema", "--output", str(target)]) == 0
    assert target.read_bytes() == render_schema().encode("utf-8")
    assert capsys.readouterr().out == ""
    assert main(["policy", "schema", "--output", str(tmp_path / "missing" / "x.json")]) == 1
    assert "cannot write" in capsys.readouterr().err
