"""Load policy files into one ``Policy``, or report every problem with its location.

YAML is read with ruamel.yaml because it remembers where each key and item came from;
the models validate the shape, ``checks.py`` the meaning and ``lint.py`` the legal but
dangerous choices (warnings). Nothing is accepted unless the whole set of files is free of
errors: a partial policy would silently allow or deny the wrong requests, so the caller
gets either a complete ``Policy`` (with its warnings) or a sorted list of
``PolicyProblem``s, never both.

Every problem of every file is found in one run. A file with shape errors is not dropped:
each issuer whose own shape is right still goes through the checks, and so does each
resource, leaving out those of its rules (and of a few keys with harmless defaults, such as
``timeouts``) that have shape errors; anything else is checked once its shape is fixed. A
key written twice in a mapping is reported while the rest of the file is read (the first
value counts). Only a file that is not YAML at all stops at its first syntax error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from enforcer.policy.model import UNION_TAGS, Issuer, PolicyFile, Resource
from enforcer.policy.problems import (
    WARNING,
    PolicyProblem,
    duplicate_key_problem,
    not_a_mapping,
    null_problem,
    validation_problem,
    yaml_problem,
)

__all__ = ["Policy", "PolicyLoadError", "PolicyProblem", "PolicyReport", "SourceFile", "check_policy",
           "expand_paths", "load_policy"]

MAX_POLICY_BYTES = 4 * 1024 * 1024


class PolicyLoadError(Exception):
    """The errors that refuse a policy (``problems``), and its warnings, each sorted."""

    def __init__(self, problems: Sequence[PolicyProblem], warnings: Sequence[PolicyProblem] = ()) -> None:
        self.problems = tuple(sorted(problems))
        self.warnings = tuple(sorted(warnings))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Policy:
    """The validated union of all policy files, ready for compilation."""

    issuers: dict[str, Issuer]
    resources: tuple[Resource, ...]
    files: tuple[str, ...]
    version_hash: str
    #: legal but dangerous choices (``lint.py``); ``enforcer serve`` logs each once at start
    warnings: tuple[PolicyProblem, ...] = ()


@dataclass(frozen=True)
class PolicyReport:
    """Everything ``enforcer policy validate`` says about a set of files: the files read, every
    problem (errors and warnings, sorted) and the policy, which is ``None`` when any error."""

    files: tuple[str, ...]
    problems: tuple[PolicyProblem, ...]
    policy: Policy | None

    @property
    def errors(self) -> tuple[PolicyProblem, ...]:
        return tuple(p for p in self.problems if p.severity != WARNING)

    @property
    def warnings(self) -> tuple[PolicyProblem, ...]:
        return tuple(p for p in self.problems if p.severity == WARNING)


@dataclass(frozen=True)
class SourceFile:
    """One parsed file: its YAML tree (for positions) and its model.

    A file with shape errors is kept as a *partial* source for the checks: its model holds
    only what can be checked (see ``_partial_source``), ``issuer_index`` / ``resource_index``
    give the positions of its issuers and resources in the file's lists, and ``tree_loc``
    turns a location in the model into one in the file. A partial source is never merged
    into a ``Policy``."""

    path: str
    tree: Any
    model: PolicyFile
    issuer_index: tuple[int, ...] | None = field(default=None, compare=False)
    resource_index: tuple[int, ...] | None = field(default=None, compare=False)
    #: position in the file of a resource -> positions of the rules kept, for each resource
    #: some of whose rules were left out
    rule_index: dict[int, tuple[int, ...]] = field(default_factory=dict, compare=False)

    @property
    def partial(self) -> bool:
        return self.issuer_index is not None or self.resource_index is not None

    def tree_loc(self, loc: tuple[Any, ...]) -> tuple[Any, ...]:
        """``loc`` with the position of a rule in its resource's model (first four parts
        ``resources, R, rules, k``, R already a position in the file) turned into its
        position in the file."""
        if len(loc) >= 4 and loc[0] == "resources" and loc[2] == "rules" and loc[1] in self.rule_index:
            return (*loc[:3], self.rule_index[loc[1]][loc[3]], *loc[4:])
        return loc

    def issuers(self) -> Iterator[tuple[int, Issuer]]:
        """(position in the file's ``issuers`` list, issuer)."""
        index = range(len(self.model.issuers)) if self.issuer_index is None else self.issuer_index
        return zip(index, self.model.issuers, strict=True)

    def resources(self) -> Iterator[tuple[int, Resource]]:
        """(position in the file's ``resources`` list, resource)."""
        index = range(len(self.model.resources)) if self.resource_index is None else self.resource_index
        return zip(index, self.model.resources, strict=True)


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
    """Parse, validate and merge; raise ``PolicyLoadError`` listing every error (and the
    warnings). A policy that loads carries its warnings in ``Policy.warnings``."""
    report = check_policy(paths)
    if report.policy is None:
        raise PolicyLoadError(report.errors, report.warnings)
    return report.policy


def check_policy(paths: Iterable[str | Path]) -> PolicyReport:
    """Every problem of the policy made of ``paths`` (errors and warnings, sorted by file,
    line and column), and the policy itself when there is no error."""
    from enforcer.policy import checks, lint

    files = expand_paths(paths)
    if not files:
        message = "no policy files found (a directory is searched for *.yaml, except *_test.yaml)"
        return PolicyReport((), (PolicyProblem("<policy>", 1, 1, "no_policy", message),), None)
    problems: list[PolicyProblem] = []
    sources: list[SourceFile] = []
    issuer_ids: set[str] = set()
    issuers_known = True
    digest = hashlib.sha256()
    for path in files:
        parsed = _parse_file(path)
        problems.extend(parsed.problems)
        digest.update(str(path).encode() + b"\0" + parsed.raw + b"\0")
        if parsed.source is not None:
            sources.append(parsed.source)
        issuer_ids |= parsed.issuer_ids
        issuers_known = issuers_known and parsed.issuers_known
    # References to issuers are only checked when every issuer id written in every file could
    # be read: an issuer in a file that is not YAML, or one whose id is missing or not a
    # string, would otherwise be reported as unknown everywhere it is used.
    problems.extend(checks.check_sources(sources, complete=issuers_known, issuer_ids=issuer_ids))
    problems.extend(lint.lint_sources(sources))
    problems.sort()
    names = tuple(str(path) for path in files)
    if any(p.severity != WARNING for p in problems):
        return PolicyReport(names, tuple(problems), None)
    assert len(sources) == len(files) and not any(s.partial for s in sources)
    warnings = tuple(p for p in problems if p.severity == WARNING)
    return PolicyReport(names, tuple(problems), _merge(sources, digest.hexdigest()[:16], warnings))


def read_yaml(path: Path) -> tuple[Any, bytes]:
    """Read one YAML document with positions; ``OSError`` / ``MarkedYAMLError`` propagate
    (a key written twice raises ``DuplicateKeyError``)."""
    raw = _read_bytes(path)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml.load(raw.decode("utf-8")), raw


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if len(raw) > MAX_POLICY_BYTES:
        raise ValueError(f"file is larger than {MAX_POLICY_BYTES} bytes")
    return raw


def _read_policy_yaml(path: Path) -> tuple[Any, bytes, list[tuple[tuple[Any, ...], Any, Any]]]:
    """Like ``read_yaml``, but a key written twice does not stop the reading: the composed
    document is searched for every duplicate (location, key mark, mapping mark) and the tree
    keeps the first value of each key."""
    raw = _read_bytes(path)
    text = raw.decode("utf-8")
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True
    duplicates = list(_duplicate_keys(yaml.compose(text), (), set()))
    return yaml.load(text), raw, duplicates


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(node: Node | None, loc: tuple[Any, ...], seen: set[int]) -> Iterator[
        tuple[tuple[Any, ...], Any, Any]]:
    if node is None or id(node) in seen:  # an alias is the node it names: visit each once
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: set[tuple[str, str]] = set()
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                yield from _duplicate_keys(value, loc, seen)
                continue
            if (key.tag, key.value) in keys:
                yield (*loc, key.value), key.start_mark, node.start_mark
            keys.add((key.tag, key.value))
            yield from _duplicate_keys(value, (*loc, key.value), seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, index), seen)


@dataclass
class _Parsed:
    source: SourceFile | None
    problems: list[PolicyProblem]
    raw: bytes = b""
    #: ids written in the file's issuer list, and whether every one of them could be read
    issuer_ids: set[str] = field(default_factory=set)
    issuers_known: bool = False


def _parse_file(path: Path) -> _Parsed:
    name = str(path)
    try:
        tree, raw, duplicates = _read_policy_yaml(path)
    except OSError as exc:
        return _Parsed(None, [PolicyProblem(name, 1, 1, "file_error", f"cannot read file: {exc.strerror}")])
    except UnicodeDecodeError:
        return _Parsed(None, [PolicyProblem(name, 1, 1, "file_error", "file is not valid UTF-8")])
    except ValueError as exc:
        return _Parsed(None, [PolicyProblem(name, 1, 1, "file_error", str(exc))])
    except MarkedYAMLError as exc:
        return _Parsed(None, [yaml_problem(name, exc)])
    if not isinstance(tree, dict):
        return _Parsed(None, [not_a_mapping(name, tree)], raw)
    issuer_ids, issuers_known = _written_issuer_ids(tree)
    problems = [duplicate_key_problem(name, loc, key_mark, mapping_mark) for loc, key_mark, mapping_mark in duplicates]
    errors: list[Any] = []
    try:
        model = PolicyFile.model_validate(to_plain(tree))
    except ValidationError as exc:
        errors = [{**e, "loc": untagged(e["loc"])} for e in exc.errors()]
    unknown = [tuple(e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
    nulls = [loc for loc in _null_values(tree, ()) if not any(loc[: len(u)] == u for u in unknown)]
    problems += [null_problem(name, tree, loc) for loc in nulls]
    problems += [validation_problem(name, tree, e) for e in errors if tuple(e["loc"]) not in nulls]
    if not problems:
        return _Parsed(SourceFile(name, tree, model), [], raw, issuer_ids, issuers_known)
    broken = [tuple(e["loc"]) for e in errors] + nulls
    source = _partial_source(name, tree, broken)
    return _Parsed(source, problems, raw, issuer_ids, issuers_known)


def _written_issuer_ids(tree: dict[Any, Any]) -> tuple[set[str], bool]:
    """The issuer ids the file defines as written (whatever else is wrong with each issuer),
    and whether each issuer's id could be read."""
    issuers = tree.get("issuers", [])
    if not isinstance(issuers, list):
        return set(), False
    ids = [str(item["id"]) for item in issuers if isinstance(item, dict) and isinstance(item.get("id"), str)]
    return set(ids), len(ids) == len(issuers)


#: resource keys whose value may be left out of the checks when it has an error of its own:
#: their defaults add no check (a default ``match`` or ``rules`` would: a route, no rules)
_SEPARABLE = frozenset({"limits", "timeouts", "signatures", "forward_token", "public_origin", "scopes_supported",
                        "resource_name", "mcp"})


def _partial_source(name: str, tree: dict[Any, Any], broken: list[tuple[Any, ...]]) -> SourceFile:
    """What of a file with errors can still be checked: each issuer without an error of its
    own, and each resource whose errors are only in some of its rules or in keys listed in
    ``_SEPARABLE``; those rules and keys are left out of its checks."""
    issuers, issuer_index = [], []
    written = tree.get("issuers")
    for i, item in enumerate(written if isinstance(written, list) else ()):
        if any(loc[:2] == ("issuers", i) or loc == ("issuers",) for loc in broken):
            continue
        try:
            issuers.append(Issuer.model_validate(to_plain(item)))
        except ValidationError:
            continue
        issuer_index.append(i)
    resources, resource_index, rule_index = [], [], {}
    written = tree.get("resources")
    for i, item in enumerate(written if isinstance(written, list) and ("resources",) not in broken else ()):
        checkable = _checkable_resource(item, [loc[2:] for loc in broken if loc[:2] == ("resources", i)])
        if checkable is None:
            continue
        resource, rules = checkable
        resources.append(resource)
        resource_index.append(i)
        if rules is not None:
            rule_index[i] = rules
    model = PolicyFile.model_construct(version=1, issuers=tuple(issuers), resources=tuple(resources))
    return SourceFile(name, tree, model, tuple(issuer_index), tuple(resource_index), rule_index)


def _checkable_resource(item: Any, broken: list[tuple[Any, ...]]) -> tuple[Resource, tuple[int, ...] | None] | None:
    """The resource without its rules and separable keys that have errors, and the positions
    of the rules kept (``None`` when all are); ``None`` when what is left cannot be checked."""
    plain = to_plain(item)
    if not isinstance(plain, dict):
        return None
    drop_rules: set[int] = set()
    for loc in broken:
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            drop_rules.add(loc[1])
        elif loc and (loc[0] in _SEPARABLE or (len(loc) == 1 and loc[0] not in Resource.model_fields)):
            plain.pop(loc[0], None)  # a separable key, or an unknown one (it means nothing)
        else:
            return None
    kept_rules = None
    if drop_rules:
        rules = plain.get("rules")
        if not isinstance(rules, list):
            return None
        kept_rules = tuple(k for k in range(len(rules)) if k not in drop_rules)
        plain["rules"] = [rules[k] for k in kept_rules]
    try:
        return Resource.model_validate(plain), kept_rules
    except ValidationError:
        return None


def untagged(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A model location without the tags of tagged unions (``mcp: true`` or ``mcp: {...}``),
    which name a branch of the model, not a key of the file."""
    return tuple(part for part in loc if part not in UNION_TAGS)


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


def _merge(sources: Sequence[SourceFile], version_hash: str, warnings: tuple[PolicyProblem, ...] = ()) -> Policy:
    issuers: dict[str, Issuer] = {}
    resources: list[Resource] = []
    for source in sources:
        base = Path(source.path).resolve().parent
        for issuer in source.model.issuers:
            if issuer.jwks_file is not None:
                issuer = issuer.model_copy(update={"jwks_file": str(base / issuer.jwks_file)})
            issuers[issuer.id] = issuer
        resources.extend(_with_key_paths(resource, base) for resource in source.model.resources)
    return Policy(issuers, tuple(resources), tuple(s.path for s in sources), version_hash, warnings)


def _with_key_paths(resource: Resource, base: Path) -> Resource:
    """Signature key files (and downstream client credentials) are relative to the policy file that names them."""
    resource = _with_credential_paths(resource, base)
    resource = _with_bundle_paths(resource, base)
    signatures = resource.signatures
    if signatures is None:
        return resource
    update = {name: str(base / path) for name in ("jwks_file", "shared_secrets_file")
              if (path := getattr(signatures.keys, name)) is not None}
    if not update:
        return resource
    keys = signatures.keys.model_copy(update=update)
    return resource.model_copy(update={"signatures": signatures.model_copy(update={"keys": keys})})


def _with_credential_paths(resource: Resource, base: Path) -> Resource:
    """``downstream_token`` client secret / private key files, resolved against the policy file."""
    config = resource.downstream_token
    if config is None:
        return resource
    update = {name: str(base / path) for name in ("client_secret_file", "private_key_file")
              if (path := getattr(config, name)) is not None}
    return resource.model_copy(update={"downstream_token": config.model_copy(update=update)}) if update else resource


def _with_bundle_paths(resource: Resource, base: Path) -> Resource:
    """``workload_identity.jwt_svid.bundles`` (SPIFFE bundle files), resolved against the policy file."""
    workload = resource.workload_identity
    if workload is None or workload.jwt_svid is None:
        return resource
    svid = workload.jwt_svid
    bundles = {domain: str(base / path) for domain, path in svid.bundles.items()}
    return resource.model_copy(update={"workload_identity": workload.model_copy(
        update={"jwt_svid": svid.model_copy(update={"bundles": bundles})})})
