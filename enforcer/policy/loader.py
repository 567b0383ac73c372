"""Load policy files into one ``Policy``, or report every problem with its location.

YAML is read with ruamel.yaml because it remembers where each key and item came from;
the models validate the shape, ``checks.py`` the meaning. Nothing is accepted unless the
whole set of files is clean: a partial policy would silently allow or deny the wrong
requests, so the caller gets either a complete ``Policy`` or a sorted list of
``PolicyProblem``s, never both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from enforcer.policy.model import Issuer, PolicyFile, Resource

MAX_POLICY_BYTES = 4 * 1024 * 1024


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


class PolicyLoadError(Exception):
    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(sorted(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Policy:
    """The validated union of all policy files, ready for compilation."""

    issuers: dict[str, Issuer]
    resources: tuple[Resource, ...]
    files: tuple[str, ...]
    version_hash: str


@dataclass(frozen=True)
class SourceFile:
    """One parsed file: its YAML tree (for positions) and its model."""

    path: str
    tree: Any
    model: PolicyFile


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus every ``*.yaml`` (not ``*_test.yaml``) in named directories."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.yaml") if not p.name.endswith("_test.yaml")))
        else:
            files.append(path)
    return files


def load_policy(paths: Iterable[str | Path]) -> Policy:
    """Parse, validate and merge; raise ``PolicyLoadError`` listing every problem."""
    from enforcer.policy import checks

    problems: list[PolicyProblem] = []
    sources: list[SourceFile] = []
    files = expand_paths(paths)
    if not files:
        message = "no policy files found (a directory is searched for *.yaml, except *_test.yaml)"
        raise PolicyLoadError([PolicyProblem("<policy>", 1, 1, "no_policy", message)])
    digest = hashlib.sha256()
    for path in files:
        source, file_problems, raw = _parse_file(path)
        problems.extend(file_problems)
        digest.update(str(path).encode() + b"\0" + raw + b"\0")
        if source is not None:
            sources.append(source)
    # References to issuers are only checked when every file parsed: an issuer defined in a
    # file with shape errors would otherwise be reported as unknown everywhere it is used.
    problems.extend(checks.check_sources(sources, complete=len(sources) == len(files)))
    if any(p.severity == "error" for p in problems) or len(sources) != len(files):
        raise PolicyLoadError([p for p in problems if p.severity == "error"])
    return _merge(sources, digest.hexdigest()[:16])


def read_yaml(path: Path) -> tuple[Any, bytes]:
    """Read one YAML document with positions; ``OSError`` / ``MarkedYAMLError`` propagate."""
    raw = path.read_bytes()
    if len(raw) > MAX_POLICY_BYTES:
        raise ValueError(f"file is larger than {MAX_POLICY_BYTES} bytes")
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml.load(raw.decode("utf-8")), raw


def _parse_file(path: Path) -> tuple[SourceFile | None, list[PolicyProblem], bytes]:
    name = str(path)
    try:
        tree, raw = read_yaml(path)
    except OSError as exc:
        return None, [PolicyProblem(name, 1, 1, "file_error", f"cannot read file: {exc.strerror}")], b""
    except UnicodeDecodeError:
        return None, [PolicyProblem(name, 1, 1, "file_error", "file is not valid UTF-8")], b""
    except ValueError as exc:
        return None, [PolicyProblem(name, 1, 1, "file_error", str(exc))], b""
    except MarkedYAMLError as exc:
        return None, [_yaml_problem(name, exc)], b""
    if not isinstance(tree, dict):
        return None, [_not_a_mapping(name, tree)], raw
    errors: list[Any] = []
    try:
        model = PolicyFile.model_validate(to_plain(tree))
    except ValidationError as exc:
        errors = exc.errors()
    unknown = [tuple(e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
    nulls = [loc for loc in _null_values(tree, ()) if not any(loc[: len(u)] == u for u in unknown)]
    problems = [_null_problem(name, tree, loc) for loc in nulls]
    problems += [_validation_problem(name, tree, e) for e in errors if tuple(e["loc"]) not in nulls]
    if problems:
        return None, problems, raw
    return SourceFile(name, tree, model), [], raw


def _not_a_mapping(name: str, tree: Any) -> PolicyProblem:
    line, col = position(tree, ())
    message = f"a policy file must be a mapping (version:, issuers:, resources:), not {_describe(tree)}"
    if tree is None:
        message = "the file is empty; a policy file is a mapping that starts with version: 1"
    return PolicyProblem(name, line, col, "wrong_type", message)


def _null_values(node: Any, loc: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Locations of keys written without a value. An empty ``client_ids:`` must not be read
    as an absent condition (which matches anything), nor an empty ``signatures:`` as none."""
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None:
                yield (*loc, key)
            else:
                yield from _null_values(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _null_values(value, (*loc, index))


def _null_problem(name: str, tree: Any, loc: tuple[Any, ...]) -> PolicyProblem:
    line, col = position(tree, loc)
    message = f"{field_path(loc)}: the key has no value (null); give a value, or remove the key to use its default"
    return PolicyProblem(name, line, col, "empty_value", message)


def _yaml_problem(name: str, exc: MarkedYAMLError) -> PolicyProblem:
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


def _validation_problem(name: str, tree: Any, err: dict[str, Any]) -> PolicyProblem:
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


def to_plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses -> plain Python values."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, (str, int, bool, float)) else k: to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _merge(sources: Sequence[SourceFile], version_hash: str) -> Policy:
    issuers: dict[str, Issuer] = {}
    resources: list[Resource] = []
    for source in sources:
        base = Path(source.path).resolve().parent
        for issuer in source.model.issuers:
            if issuer.jwks_file is not None:
                issuer = issuer.model_copy(update={"jwks_file": str(base / issuer.jwks_file)})
            issuers[issuer.id] = issuer
        resources.extend(source.model.resources)
    return Policy(issuers, tuple(resources), tuple(s.path for s in sources), version_hash)
