"""JSON Schema of the policy file, derived from the models in ``policy/model.py``.

Editors use it for completion, hover text and early errors (YAML files opt in with the
modeline ``# yaml-language-server: $schema=./policy.schema.json``). The loader stays the
authority: the schema states the shape (keys, types, ranges, defaults) and leaves the checks
across fields and files (one key source, known issuer ids, unique routes) to
``enforcer policy validate``.

``policies/policy.schema.json`` is this module's output; regenerate it after changing a
model with ``enforcer policy schema --output policies/policy.schema.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from enforcer.policy.model import ASYMMETRIC_ALGORITHMS, SIGNATURE_ALGORITHMS, PolicyFile

__all__ = ["SCHEMA_ID", "add_schema_command", "policy_schema", "render_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://enforcer.invalid/schemas/policy-v1.schema.json"
REGENERATE = "enforcer policy schema --output policies/policy.schema.json"

#: Closed value sets the loader checks after the models (``policy/checks.py``): listing them
#: in the schema lets an editor complete them and flag the rest. Keyed by model, then field.
_ITEM_ENUMS: dict[str, dict[str, list[str]]] = {
    "Issuer": {"algorithms": sorted(ASYMMETRIC_ALGORITHMS)},
    "Signatures": {"algorithms": list(SIGNATURE_ALGORITHMS)},
}
#: Defaults left out of the schema because the loader refuses them: ``signatures.keys``
#: defaults to no key source at all, so an editor must not offer it as a starting value.
_UNUSABLE_DEFAULTS: dict[str, set[str]] = {"Signatures": {"keys"}}


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one policy file."""
    generated = PolicyFile.model_json_schema()
    definitions = generated.pop("$defs", {})
    for name, definition in definitions.items():
        properties = definition["properties"]
        for field in _UNUSABLE_DEFAULTS.get(name, ()):
            del properties[field]["default"]
        for field, values in _ITEM_ENUMS.get(name, {}).items():
            properties[field]["items"] = dict(sorted({**properties[field]["items"], "enum": values}.items()))
        _tidy_object(definition)
    _tidy_object(generated)
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "enforcer policy file (version 1)",
        "description": "Issuers whose access tokens are trusted and the resources the enforcer protects, with "
                       "their rules. Checks across fields and files (exactly one key source, known issuer ids, "
                       "unique ids and routes, safe URLs) are made by `enforcer policy validate`.",
        **generated,
        "$defs": definitions,
    }


def render_schema() -> str:
    """``policy_schema()`` as stable text: key order as generated, 2-space indent, final newline."""
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"


def _tidy_object(node: dict[str, Any]) -> None:
    """Adjust one generated object schema (a model) in place for policy authors:

    * ``X | None`` fields become plain ``X`` without ``default: null``: the loader refuses a
      key written with no value (``empty_value``) rather than reading it as "absent", so
      null is never a valid value; leaving the key out is how to get the default.
    * nested model defaults (``match``, ``limits``, ...) lose their null members, for the
      same reason, so every default shown is itself a valid value.
    * per-field titles go: pydantic derives them from the key ("Jwks Uri") and editors
      would show them above the description.
    """
    properties = node.get("properties", {})
    for name, field in properties.items():
        field.pop("title", None)
        options = field.get("anyOf")
        if options is not None:
            kept = [option for option in options if option != {"type": "null"}]
            if len(kept) != len(options):
                if field.get("default", ...) is None:
                    del field["default"]
                del field["anyOf"]
                field.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
        if "default" in field:
            field["default"] = _without_nulls(field["default"])
        properties[name] = dict(sorted(field.items()))  # keywords in pydantic's (alphabetical) order


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def add_schema_command(policy_commands: Any) -> None:
    """Register ``enforcer policy schema [--output FILE]`` on the ``policy`` subparsers."""
    command = policy_commands.add_parser(
        "schema", help="print the JSON Schema of policy files (for editors and CI)",
        description="Print the JSON Schema (draft 2020-12) of policy files, or write it to a file. YAML editors "
                    "that use yaml-language-server pick it up from a first line such as "
                    "'# yaml-language-server: $schema=./policy.schema.json'.")
    command.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                         help="write the schema to FILE instead of standard output")
    command.set_defaults(run=_run_schema)


def _run_schema(args: argparse.Namespace) -> int:
    text = render_schema()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        print(f"enforcer policy schema: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
