"""Load policy files into one ``Policy``, or report every problem with its location.

YAML is read with ruamel.yaml because it remembers where each key and item came from;
the models validate the shape, ``checks.py`` the meaning. Nothing is accepted unless the
whole set of files is clean: a partial policy would silently allow or deny the wrong
requests, so the caller gets either a complete ``Policy`` or a sorted list of
``PolicyProblem``s, never both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
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
        raise PolicyLoadError([PolicyProblem("<policy>", 1, 1, "no_policy", "no policy files were given")])
    digest = hashlib.sha256()
    for path in files:
        source, file_problems, raw = _parse_file(path)
        problems.extend(file_problems)
        digest.update(str(path).encode() + b"\0" + raw + b"\0")
        if source is not None:
            sources.append(source)
    problems.extend(checks.check_sources(sources))
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
        return None, [PolicyProblem(name, 1, 1, "wrong_type", "a policy file must be a mapping")], raw
    try:
        model = PolicyFile.model_validate(to_plain(tree))
    except ValidationError as exc:
        return None, [_validation_problem(name, tree, err) for err in exc.errors()], raw
    return SourceFile(name, tree, model), [], raw


def _yaml_problem(name: str, exc: MarkedYAMLError) -> PolicyProblem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    code = "duplicate_key" if "duplicate key" in str(exc) else "yaml_syntax"
    message = (exc.problem or str(exc)).strip()
    if code == "duplicate_key":
        message = "duplicate key in mapping " + message.split("\n")[0].strip().rstrip(":")
    return PolicyProblem(name, line, col, code, message)


_CODES = {"extra_forbidden": "unknown_key", "missing": "missing_key", "literal_error": "invalid_value"}


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
    else:
        message = f"{field}: {err['msg']}"
    return PolicyProblem(name, line, col, code, message)


def field_path(loc: Sequence[Any]) -> str:
    """``('resources', 0, 'rules', 2)`` -> ``resources[0].rules[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def position(tree: Any, loc: Sequence[Any]) -> tuple[int, int]:
    """1-based (line, col) of the deepest node of ``loc`` present in the YAML tree."""
    line, col = 1, 1
    node = tree
    for part in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        if isinstance(node, dict) and part in node:
            line, col = lc.key(part)
            line, col = line + 1, col + 1
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line, col = lc.item(part)
            line, col = line + 1, col + 1
            node = node[part]
        else:
            break
    return line, col


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
