"""Policy test case files (``*_test.yaml``): parsed strictly, every problem located.

A case file names the policy it tests (``policy:``, files or directories relative to the case
file; by default every non-test ``*.yaml`` beside it, as ``enforcer serve --policy DIR``
would load), claim sets it reuses (``fixtures:``) and its ``cases:``. Each case describes
one request and what the server must answer::

    policy: example.yaml                  # optional
    fixtures:
      alice-via-agent-42: {iss: https://issuer.example, sub: alice, client_id: agent-42, scope: tools:read}
    cases:
      - name: agent reads for alice
        claims_fixture: alice-via-agent-42  # or claims: {...}; neither: the request carries no token
        request: {method: GET, path: /mcp/tools, headers: {Host: mcp.example.test}, body: {...}}
        # request.workload: the workload identity (SPIFFE ID) the request proves, taken as verified
        expect: {decision: allow, status: 200, rule: agents-read}

``expect`` holds ``allow: true|false`` or ``decision: allow|deny`` and, optionally, ``status``,
``rule`` (null: no rule decided), ``reason``, ``scopes`` (the insufficient_scope list),
``shadow`` (``none``, ``would_deny``, ``would_allow``, or a mapping of ``decision`` /
``rule`` / ``reason``) and ``filtered_tools``: what the caller is shown of the tools an MCP
upstream lists, which the case gives as ``upstream_tools`` (the two go together)::

      - name: readers see only the read tools
        claims_fixture: reader
        request: {method: POST, path: /mcp, body: {jsonrpc: "2.0", id: 1, method: tools/list}}
        upstream_tools: [search_docs, delete_page]
        expect: {decision: allow, filtered_tools: [search_docs]}

Unknown keys are refused, never ignored: a test that silently checks nothing would pass for
the wrong reason.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from enforcer.errors import Reason
from enforcer.policy.evaluate import Probe
from enforcer.policy.loader import to_plain
from enforcer.policy.model import instant
from enforcer.policy.problems import field_path, position

MAX_CASE_FILE_BYTES = 4 * 1024 * 1024
SHADOW_RESULTS = ("none", "would_deny", "would_allow")
_TOP_KEYS = ("policy", "fixtures", "cases")
_CASE_KEYS = ("name", "claims", "claims_fixture", "request", "upstream_tools", "expect")
_REQUEST_KEYS = ("method", "path", "headers", "body", "time", "workload")
_EXPECT_KEYS = ("allow", "decision", "status", "rule", "reason", "scopes", "shadow", "filtered_tools")
_REASONS = tuple(str(reason) for reason in Reason)


@dataclass(frozen=True, order=True)
class CaseProblem:
    """A located problem of a case file: ``file:line:col: message``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


@dataclass(frozen=True)
class Case:
    name: str
    line: int  # where the case starts, for failure reports
    claims: Mapping[str, Any] | None  # None: the request carries no token
    probe: Probe
    expect: tuple[tuple[str, Any], ...]  # (field, expected value), in the order written
    upstream_tools: tuple[str, ...] = ()  # the upstream's tools/list, for ``filtered_tools``


@dataclass(frozen=True)
class CaseFile:
    path: Path
    policy: tuple[Path, ...]  # what load_policy is given
    cases: tuple[Case, ...]


class CaseFileError(Exception):
    def __init__(self, problems: list[CaseProblem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(map(str, self.problems)))


def read_case_file(path: Path) -> CaseFile:
    """The parsed case file, or ``CaseFileError`` listing every problem found in it."""
    tree = _load(path)
    reader = _Reader(str(path), tree)
    case_file = reader.case_file(path)
    if reader.problems or case_file is None:
        raise CaseFileError(reader.problems)
    return case_file


def _load(path: Path) -> Any:
    name = str(path)
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_CASE_FILE_BYTES:
            raise CaseFileError([CaseProblem(name, 1, 1, f"file is larger than {MAX_CASE_FILE_BYTES} bytes")])
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = False
        return yaml.load(raw.decode("utf-8"))
    except OSError as exc:
        raise CaseFileError([CaseProblem(name, 1, 1, f"cannot read file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise CaseFileError([CaseProblem(name, 1, 1, "file is not valid UTF-8")]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or str(exc)).strip().splitlines()[0]
        raise CaseFileError([CaseProblem(name, line, col, f"not valid YAML: {problem}")]) from None


class _Reader:
    """Walks the YAML tree, turning it into a ``CaseFile`` and recording every problem."""

    def __init__(self, name: str, tree: Any) -> None:
        self.name, self.tree = name, tree
        self.problems: list[CaseProblem] = []

    def problem(self, loc: tuple[Any, ...], message: str) -> None:
        line, col = position(self.tree, loc)
        self.problems.append(CaseProblem(self.name, line, col, f"{field_path(loc)}: {message}" if loc else message))

    def case_file(self, path: Path) -> CaseFile | None:
        if not isinstance(self.tree, dict):
            self.problem((), "a case file is a mapping with cases: (and optionally policy:, fixtures:)")
            return None
        self.keys(self.tree, (), _TOP_KEYS)
        policy = self.policy(path)
        fixtures = self.fixtures()
        cases = self.tree.get("cases")
        if not isinstance(cases, list) or not cases:
            self.problem(("cases",) if "cases" in self.tree else (), "cases: must be a non-empty list of cases")
            return None
        parsed = [self.case(i, item, fixtures) for i, item in enumerate(cases)]
        self.unique_names(cases)
        return CaseFile(path, policy, tuple(case for case in parsed if case is not None))

    def keys(self, node: dict[Any, Any], loc: tuple[Any, ...], allowed: tuple[str, ...]) -> None:
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(allowed)}"
                self.problem((*loc, key), "unknown key" + hint)

    def policy(self, path: Path) -> tuple[Path, ...]:
        value = self.tree.get("policy")
        if value is None:
            return (path.parent,)
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            self.problem(("policy",), "give a policy file or directory, or a list of them, relative to this file")
            return ()
        return tuple(Path(os.path.normpath(path.parent / name)) for name in names)

    def fixtures(self) -> dict[str, dict[str, Any]]:
        value = self.tree.get("fixtures", {})
        if not isinstance(value, dict):
            self.problem(("fixtures",), "fixtures: must map a name to a set of claims")
            return {}
        found = {}
        for name, claims in value.items():
            if isinstance(claims, dict):
                found[str(name)] = to_plain(claims)
            else:
                self.problem(("fixtures", name), "a fixture is a mapping of claims (iss, sub, client_id, scope, ...)")
        return found

    def case(self, i: int, item: Any, fixtures: dict[str, dict[str, Any]]) -> Case | None:
        loc = ("cases", i)
        if not isinstance(item, dict):
            self.problem(loc, "a case is a mapping with name, request and expect")
            return None
        before = len(self.problems)
        self.keys(item, loc, _CASE_KEYS)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem((*loc, "name") if "name" in item else loc, "every case needs a name (a non-empty string)")
        claims = self.claims(item, loc, fixtures)
        probe = self.request(item.get("request"), (*loc, "request"), "request" in item)
        expect = self.expect(item.get("expect"), (*loc, "expect"), "expect" in item)
        tools = self.upstream_tools(item, loc, expect or ())
        if len(self.problems) != before or probe is None or expect is None:
            return None
        return Case(str(name), position(self.tree, loc)[0], claims, probe, expect, tools)

    def upstream_tools(self, item: dict[Any, Any], loc: tuple[Any, ...], expect: tuple[tuple[str, Any], ...],
                       ) -> tuple[str, ...]:
        """``upstream_tools`` and ``expect.filtered_tools`` come together: one alone checks nothing."""
        expects = any(field == "filtered_tools" for field, _ in expect)
        if "upstream_tools" not in item:
            if expects:
                self.problem((*loc, "expect", "filtered_tools"),
                             "filtered_tools needs upstream_tools: the tool names the upstream lists")
            return ()
        tools = self.tool_names(to_plain(item["upstream_tools"]), (*loc, "upstream_tools"))
        if tools is not _INVALID and not expects:
            self.problem((*loc, "upstream_tools"), "upstream_tools needs expect.filtered_tools: what the caller sees")
        return tools if tools is not _INVALID else ()

    def tool_names(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(loc, "must be a list of tool names")
            return _INVALID
        return tuple(value)

    def claims(self, item: dict[Any, Any], loc: tuple[Any, ...], fixtures: dict[str, Any]) -> dict[str, Any] | None:
        if "claims" in item and "claims_fixture" in item:
            self.problem((*loc, "claims_fixture"), "give claims or claims_fixture, not both")
            return None
        if "claims_fixture" in item:
            name = item["claims_fixture"]
            if not isinstance(name, str) or name not in fixtures:
                known = ", ".join(sorted(fixtures)) or "none defined"
                self.problem((*loc, "claims_fixture"), f"no fixture named {name!r} (fixtures: {known})")
                return None
            return fixtures[name]
        if "claims" not in item:
            return None
        if not isinstance(item["claims"], dict):
            self.problem((*loc, "claims"), "claims: must be a mapping (iss, sub, client_id, scope, ...)")
            return None
        return to_plain(item["claims"])

    def request(self, node: Any, loc: tuple[Any, ...], present: bool) -> Probe | None:
        if not isinstance(node, dict):
            self.problem(loc if present else loc[:-1], "request: must be a mapping with method, path (and headers, "
                                                       "body)")
            return None
        self.keys(node, loc, _REQUEST_KEYS)
        method, path = node.get("method", "GET"), node.get("path")
        if not isinstance(method, str):
            self.problem((*loc, "method"), "method must be a string such as GET or POST")
        if not isinstance(path, str) or not path:
            self.problem((*loc, "path") if "path" in node else loc, "path must be the request target, e.g. /mcp/tools")
        headers = self.headers(node.get("headers", {}), (*loc, "headers"))
        body = self.body(node, loc)
        at = self.instant(node["time"], (*loc, "time")) if "time" in node else None
        workload = node.get("workload")
        if workload is not None and (not isinstance(workload, str) or not workload):
            self.problem((*loc, "workload"), "workload must be the caller's workload identity, e.g. a SPIFFE ID")
            return None
        if not isinstance(method, str) or not isinstance(path, str) or headers is None:
            return None
        return Probe(method, path, headers, body, at, workload)

    def instant(self, node: Any, loc: tuple[Any, ...]) -> float | None:
        """``time:`` pins the instant of a case (for time-boxed rules): an RFC 3339 date-time with a zone."""
        try:
            return instant(node).timestamp()
        except (TypeError, ValueError) as exc:
            self.problem(loc, f"time: must be {exc}")
            return None

    def headers(self, node: Any, loc: tuple[Any, ...]) -> tuple[tuple[str, str], ...] | None:
        if not isinstance(node, dict):
            self.problem(loc, "headers: must map a header name to a string (or a list of strings)")
            return None
        found: list[tuple[str, str]] = []
        for name, value in node.items():
            values = value if isinstance(value, list) else [value]
            if not isinstance(name, str) or not all(isinstance(v, str) for v in values):
                self.problem((*loc, name), "a header value must be a string (or a list of strings)")
                continue
            found += [(name, v) for v in values]
        return tuple(found)

    def body(self, node: dict[Any, Any], loc: tuple[Any, ...]) -> bytes | None:
        if "body" not in node:
            return None
        body = to_plain(node["body"])
        if isinstance(body, str):
            return body.encode("utf-8")
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def expect(self, node: Any, loc: tuple[Any, ...], present: bool) -> tuple[tuple[str, Any], ...] | None:
        if not isinstance(node, dict):
            self.problem(loc if present else loc[:-1], "expect: must be a mapping with allow: or decision:")
            return None
        self.keys(node, loc, _EXPECT_KEYS)
        found: list[tuple[str, Any]] = []
        decision = self.decision(node, loc)
        if decision is not None:
            found.append(("decision", decision))
        for key, check in (("status", self.status), ("rule", self.rule), ("reason", self.reason),
                           ("scopes", self.scopes), ("shadow", self.shadow), ("filtered_tools", self.tool_names)):
            if key in node and (value := check(to_plain(node[key]), (*loc, key))) is not _INVALID:
                found.append((key, value))
        return tuple(found)

    def decision(self, node: dict[Any, Any], loc: tuple[Any, ...]) -> str | None:
        if ("allow" in node) == ("decision" in node):
            where = (*loc, "decision") if "decision" in node else loc
            self.problem(where, "give exactly one of allow: true|false or decision: allow|deny")
            return None
        if "allow" in node:
            if not isinstance(node["allow"], bool):
                self.problem((*loc, "allow"), "allow must be true or false")
                return None
            return "allow" if node["allow"] else "deny"
        if node["decision"] not in ("allow", "deny"):
            self.problem((*loc, "decision"), "decision must be allow or deny")
            return None
        return str(node["decision"])

    def status(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            self.problem(loc, "status must be an HTTP status code such as 200, 401, 403 or 404")
            return _INVALID
        return value

    def rule(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if value is not None and not isinstance(value, str):
            self.problem(loc, "rule must be a rule id (or null: no rule decided)")
            return _INVALID
        return value

    def reason(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if value not in _REASONS:
            self.problem(loc, f"reason must be one of {', '.join(_REASONS)}")
            return _INVALID
        return value

    def scopes(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(loc, "scopes must be a list of scope strings")
            return _INVALID
        return tuple(value)

    def shadow(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if value is None:
            return "none"
        if isinstance(value, str) and value in SHADOW_RESULTS:
            return value
        if isinstance(value, dict) and value and set(value) <= {"decision", "rule", "reason"} \
                and value.get("decision", "would_deny") in SHADOW_RESULTS[1:]:
            return tuple(sorted(value.items()))
        self.problem(loc, "shadow must be none, would_deny, would_allow, or a mapping of decision "
                          "(would_deny|would_allow), rule and reason")
        return _INVALID

    def unique_names(self, cases: list[Any]) -> None:
        """Names identify cases in reports and JUnit files: each must be used once."""
        seen: dict[str, int] = {}
        for i, item in enumerate(cases):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                self.problem(("cases", i, "name"), f"another case is named {name!r} (line {seen[name]})")
            seen.setdefault(name, position(self.tree, ("cases", i))[0])


_INVALID = object()
