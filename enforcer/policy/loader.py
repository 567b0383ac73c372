"""Load policy files into one ``Policy``, or report every problem with its location.

YAML is read with ruamel.yaml because it remembers where each key and item came from;
the models validate the shape, ``checks.py`` the meaning. Nothing is accepted unless the
whole set of files is clean: a partial policy would silently allow or deny the wrong
requests, so the caller gets either a complete ``Policy`` or a sorted list of
``PolicyProblem``s, never both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from enforcer.policy.model import Issuer, PolicyFile, Resource
from enforcer.policy.problems import (
    PolicyProblem,
    not_a_mapping,
    null_problem,
    validation_problem,
    yaml_problem,
)

__all__ = ["Policy", "PolicyLoadError", "PolicyProblem", "SourceFile", "expand_paths", "load_policy"]

MAX_POLICY_BYTES = 4 * 1024 * 1024


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
        return None, [yaml_problem(name, exc)], b""
    if not isinstance(tree, dict):
        return None, [not_a_mapping(name, tree)], raw
    errors: list[Any] = []
    try:
        model = PolicyFile.model_validate(to_plain(tree))
    except ValidationError as exc:
        errors = exc.errors()
    unknown = [tuple(e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
    nulls = [loc for loc in _null_values(tree, ()) if not any(loc[: len(u)] == u for u in unknown)]
    problems = [null_problem(name, tree, loc) for loc in nulls]
    problems += [validation_problem(name, tree, e) for e in errors if tuple(e["loc"]) not in nulls]
    if problems:
        return None, problems, raw
    return SourceFile(name, tree, model), [], raw


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
        resources.extend(_with_key_paths(resource, base) for resource in source.model.resources)
    return Policy(issuers, tuple(resources), tuple(s.path for s in sources), version_hash)


def _with_key_paths(resource: Resource, base: Path) -> Resource:
    """Signature key files are relative to the policy file that names them."""
    signatures = resource.signatures
    if signatures is None:
        return resource
    update = {name: str(base / path) for name in ("jwks_file", "shared_secrets_file")
              if (path := getattr(signatures.keys, name)) is not None}
    if not update:
        return resource
    keys = signatures.keys.model_copy(update=update)
    return resource.model_copy(update={"signatures": signatures.model_copy(update={"keys": keys})})
