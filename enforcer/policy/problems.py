"""Where a policy problem is and how it is worded.

Positions come from ruamel.yaml's round-trip tree; messages use YAML words ("a list", "the
string '30'") rather than Python or pydantic ones, because security engineers read them.
Every problem inside the document names its field path (``resources[0].rules[2].scopes``)
both in ``path`` and at the start of its message; a misspelt key or value carries the
closest allowed spelling in ``suggestion`` (and says so: ``did you mean 'client_ids'?``).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from enforcer.policy.model import PolicyFile

ERROR = "error"
#: legal but dangerous: the policy loads (and is served); ``--warnings-as-errors`` refuses it
WARNING = "warning"


@dataclass(frozen=True, order=True)
class PolicyProblem:
    """One located problem; ``str()`` gives ``file:line:col: code: message`` for an error and
    ``file:line:col: warning: code: message`` for a warning. Problems sort by file, line and
    column. ``path`` is the field path the message starts with (empty when the problem is
    about the file as a whole: unreadable, not YAML, not a mapping)."""

    file: str
    line: int
    col: int
    code: str
    message: str
    severity: str = ERROR
    path: str = field(default="", compare=False)
    suggestion: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        label = "" if self.severity == ERROR else f"{self.severity}: "
        return f"{self.file}:{self.line}:{self.col}: {label}{self.code}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "line": self.line, "col": self.col, "severity": self.severity,
                               "code": self.code, "path": self.path or None, "message": self.message}
        if self.suggestion is not None:
            out["suggestion"] = self.suggestion
        return out


def located(name: str, tree: Any, loc: Sequence[Any], code: str, message: str, *,
            severity: str = ERROR, suggestion: str | None = None) -> PolicyProblem:
    """A problem at ``loc`` of the YAML tree; the message is prefixed with the field path and,
    with a ``suggestion``, ends in ``did you mean ...?``."""
    line, col = position(tree, loc)
    path = field_path(loc)
    text = f"{path}: {message}" + (f"; did you mean {suggestion!r}?" if suggestion is not None else "")
    return PolicyProblem(name, line, col, code, text, severity, path, suggestion)


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be, if one is close (case aside)."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        if candidate != word:
            by_folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[found[0]] if found else None


def not_a_mapping(name: str, tree: Any) -> PolicyProblem:
    line, col = position(tree, ())
    message = f"a policy file must be a mapping (version:, issuers:, resources:), not {_describe(tree)}"
    if tree is None:
        message = "the file is empty; a policy file is a mapping that starts with version: 1"
    return PolicyProblem(name, line, col, "wrong_type", message)


def null_problem(name: str, tree: Any, loc: tuple[Any, ...]) -> PolicyProblem:
    message = "the key has no value (null); give a value, or remove the key to use its default"
    return located(name, tree, loc, "empty_value", message)


def duplicate_key_problem(name: str, loc: tuple[Any, ...], key_mark: Any, mapping_mark: Any) -> PolicyProblem:
    """A key written twice in one mapping, found in the composed YAML (see the loader)."""
    where = f"line {mapping_mark.line + 1}, column {mapping_mark.column + 1}"
    path = field_path(loc)
    message = f"{path}: key {loc[-1]!r} appears twice in the mapping that starts at {where}; keep only one"
    return PolicyProblem(name, key_mark.line + 1, key_mark.column + 1, "duplicate_key", message, path=path)


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
    kind = err["type"]
    code = _CODES.get(kind, "wrong_type" if kind.endswith("_type") else "invalid_value")
    suggestion = None
    if kind == "extra_forbidden":
        message = "unknown key"
        suggestion = _key_suggestion(tree, loc)
    elif kind == "missing":
        message = "required key is missing"
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_describe(err['input'])}"
    elif str(err["msg"]).startswith("Input should be "):
        message = f"must be {str(err['msg']).removeprefix('Input should be ')}, got {_describe(err['input'])}"
        if kind == "literal_error" and isinstance(err["input"], str):
            suggestion = close_match(err["input"], [str(v) for v in _literal_values(loc)])
    else:
        message = f"{err['msg']} (got {_describe(err['input'])})"
    return located(name, tree, loc, code, message, suggestion=suggestion)


def _key_suggestion(tree: Any, loc: tuple[Any, ...]) -> str | None:
    """The allowed key of the mapping at ``loc[:-1]`` closest to the unknown ``loc[-1]``;
    keys already written in that mapping are not offered (renaming would duplicate them)."""
    model = _model_class(_annotation_at(loc[:-1]))
    if model is None or not isinstance(loc[-1], str):
        return None
    node = _node_at(tree, loc[:-1])
    written = set(node) if isinstance(node, dict) else set()
    return close_match(loc[-1], [key for key in model.model_fields if key not in written])


def _literal_values(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    annotation = _strip(_annotation_at(loc))
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def _annotation_at(loc: Sequence[Any]) -> Any:
    """The type the policy model declares at ``loc`` (``None`` when the path leaves the model)."""
    current: Any = PolicyFile
    for part in loc:
        current = _strip(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            if typing.get_origin(current) not in (tuple, list) or not args:
                return None
            current = args[0]
        else:
            model = _model_class(current)
            if model is None or part not in model.model_fields:
                return None
            current = model.model_fields[part].annotation
    return current


def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``; ``X | None`` -> ``X``; a union of one model and scalars
    (``mcp: true | {...}``) -> the model, where keys can be misspelt."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [m for m in members if _model_class(m) is not None]
            if len(members) != 1 and len(models) != 1:
                return annotation
            annotation = members[0] if len(members) == 1 else models[0]
        else:
            return annotation


def _model_class(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _node_at(tree: Any, loc: Sequence[Any]) -> Any:
    node = tree
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


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
