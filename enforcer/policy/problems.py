"""Where a policy problem is and how it is worded.

Positions come from ruamel.yaml's round-trip tree; messages use YAML words ("a list", "the
string '30'") rather than Python or pydantic ones, because security engineers read them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError


@dataclass(frozen=True, order=True)
class PolicyProblem:
    """One located problem; ``str()`` gives ``file:line:col: code: message``."""

    file: str
    line: int
    col: int
    code: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.code}: {self.message}"


def not_a_mapping(name: str, tree: Any) -> PolicyProblem:
    line, col = position(tree, ())
    message = f"a policy file must be a mapping (version:, issuers:, resources:), not {_describe(tree)}"
    if tree is None:
        message = "the file is empty; a policy file is a mapping that starts with version: 1"
    return PolicyProblem(name, line, col, "wrong_type", message)


def null_problem(name: str, tree: Any, loc: tuple[Any, ...]) -> PolicyProblem:
    line, col = position(tree, loc)
    message = f"{field_path(loc)}: the key has no value (null); give a value, or remove the key to use its default"
    return PolicyProblem(name, line, col, "empty_value", message)


def yaml_problem(name: str, exc: MarkedYAMLError) -> PolicyProblem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = (exc.problem or str(exc)).strip().split("\n")[0].strip()
    context = exc.context_mark if exc.problem_mark else None
    where = f"line {context.line + 1}, column {context.column + 1}" if context else "?"
    if isinstance(exc, DuplicateKeyError):
        found = re.match(r'found duplicate key "(.*?)" with value', problem)
        key = found.group(1) if found else "?"
        message = f"key {key!r} appears twice in the mapping that starts at {where}; keep only one"
        return PolicyProblem(name, line, col, "duplicate_key", message)
    if exc.context:
        problem = f"{exc.context} ({where}): {problem}" if context else f"{exc.context}: {problem}"
    return PolicyProblem(name, line, col, "yaml_syntax", problem)


_CODES = {"extra_forbidden": "unknown_key", "missing": "missing_key", "literal_error": "invalid_value"}
#: pydantic error types -> what the policy file should have held there, in YAML words.
_EXPECTED = {
    "tuple_type": "a list", "list_type": "a list", "int_type": "an integer", "bool_type": "true or false",
    "string_type": "a string", "float_type": "a number", "model_type": "a mapping", "dict_type": "a mapping",
}


def _describe(value: Any) -> str:
    """A YAML value as the author wrote it: ``the string '30'``, ``a list``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value if len(value) <= 60 else value[:57] + '...'!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def validation_problem(name: str, tree: Any, err: dict[str, Any]) -> PolicyProblem:
    loc = tuple(err["loc"])
    line, col = position(tree, loc)
    field = field_path(loc)
    kind = err["type"]
    code = _CODES.get(kind, "wrong_type" if kind.endswith("_type") else "invalid_value")
    if kind == "extra_forbidden":
        message = f"{field}: unknown key"
    elif kind == "missing":
        message = f"{field}: required key is missing"
    elif kind in _EXPECTED:
        message = f"{field}: expected {_EXPECTED[kind]}, got {_describe(err['input'])}"
    elif str(err["msg"]).startswith("Input should be "):
        message = f"{field}: must be {str(err['msg']).removeprefix('Input should be ')}, got {_describe(err['input'])}"
    else:
        message = f"{field}: {err['msg']} (got {_describe(err['input'])})"
    return PolicyProblem(name, line, col, code, message)


def field_path(loc: Sequence[Any]) -> str:
    """``('resources', 0, 'rules', 2)`` -> ``resources[0].rules[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def position(tree: Any, loc: Sequence[Any]) -> tuple[int, int]:
    """1-based (line, col) of the deepest node of ``loc`` present in the YAML tree (a key
    taken from a ``<<:`` merge is located where it is written, in the merged mapping)."""
    root = getattr(tree, "lc", None)
    line, col = (root.line + 1, root.col + 1) if root is not None else (1, 1)
    node = tree
    for part in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        if isinstance(node, dict) and part in node:
            owner = _key_owner(node, part)
            if owner is None:
                break
            line, col = owner.lc.key(part)
            line, col = line + 1, col + 1
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line, col = lc.item(part)
            line, col = line + 1, col + 1
            node = node[part]
        else:
            break
    return line, col


def _key_owner(node: Any, key: Any) -> Any:
    """The mapping in which ``key`` is written: ``node`` itself or one merged into it."""
    if key in getattr(node.lc, "data", {}):
        return node
    for merged in getattr(node, "merge", None) or ():
        merged = merged[-1] if isinstance(merged, tuple) else merged
        if isinstance(merged, dict) and key in merged and (owner := _key_owner(merged, key)) is not None:
            return owner
    return None
