"""``enforcer policy explain`` and ``enforcer policy test``: argument parsing and exit codes.

Both evaluate requests with ``policy/evaluate.py`` (the server's routing, token-claim checks
and rule engine, without a network) and never fetch keys.

    enforcer policy explain --policy PATH [--policy PATH ...] (--claims JSON|@FILE|FILE | --token T --no-verify)
                            [--method M] --path P [--header 'Name: value' ...] [--body JSON|@FILE]
                            [--format text|json]
    enforcer policy test PATH... [--junit FILE]

Exit codes: ``explain`` 0 whatever the decision; ``test`` 0 when every case passes, 1 when one
fails; both 1 (explain) or 2 (test) when the policy does not load, 2 for unusable arguments or
case files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enforcer.policy.casefile import CaseFile, CaseFileError, read_case_file
from enforcer.policy.evaluate import Evaluator, Probe, claims_from_token
from enforcer.policy.explain import render_json, render_text
from enforcer.policy.loader import Policy, PolicyLoadError, load_policy
from enforcer.policy.model import instant
from enforcer.policy.testing import FileResult, find_case_files, label_path, render_report, run_case_file, write_junit

#: usage problems (bad claims, unreadable files); a policy that does not load exits 1, as validate does
USAGE = 2


class UsageError(Exception):
    """A command-line value that cannot be used; the message says which and why."""


def add_policy_commands(policy: Any) -> None:
    """Register ``explain`` and ``test`` under ``enforcer policy``."""
    explain = policy.add_parser(
        "explain", help="show how the policy decides one request, rule by rule (no network)",
        description="Evaluate one request as enforcer serve would (route, token claims taken as verified, "
                    "body check, rules) and print the decision with a per-rule trace.")
    explain.add_argument("--policy", action="append", required=True, metavar="PATH",
                         help="policy file or directory (repeatable)")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--claims", metavar="JSON|@FILE", help="the token's claims as JSON, inline or from a file")
    who.add_argument("--token", metavar="JWT", help="a real access token; its payload is read, never verified "
                                                    "(needs --no-verify)")
    explain.add_argument("--no-verify", action="store_true", help="accept --token without checking its signature")
    explain.add_argument("--method", "-X", default="GET")
    explain.add_argument("--path", required=True, help="the request target, e.g. /mcp/tools or /mcp?x=1")
    explain.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                         help="a request header (repeatable): Host, Mcp-Method, Mcp-Name ...")
    explain.add_argument("--body", metavar="JSON|@FILE", help="the request body (a JSON-RPC message for MCP), "
                                                              "inline or from a file")
    explain.add_argument("--at", metavar="TIME", help="judge time-boxed rules (not_before / not_after) at this "
                                                      "RFC 3339 instant instead of now, e.g. 2026-12-01T08:00:00Z")
    explain.add_argument("--workload", metavar="SPIFFE_ID",
                         help="the caller's verified workload identity (what an mTLS certificate or a JWT-SVID "
                              "would prove), for resources with workload_identity")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.set_defaults(run=run_explain)

    test = policy.add_parser(
        "test", help="run the *_test.yaml cases of a policy; exit 1 when a case fails",
        description="Evaluate every case of the case files (a directory: its *_test.yaml files) against their "
                    "policy, as enforcer serve would answer, without a network. Prints a table per file and the "
                    "explain trace of each failing case. Exit 0: all passed, 1: a case failed, 2: a case file or "
                    "its policy cannot be used.")
    test.add_argument("paths", nargs="+", metavar="PATH", help="case files (*_test.yaml) or directories of them")
    test.add_argument("--junit", type=Path, metavar="FILE", help="also write the results as JUnit XML")
    test.set_defaults(run=run_test)


def _instant(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return instant(text).timestamp()
    except ValueError as exc:
        raise UsageError(f"--at must be {exc}") from None


def run_explain(args: argparse.Namespace) -> int:
    try:
        claims = _claims(args)
        probe = Probe(args.method, args.path, tuple(_header(h) for h in args.header), _body(args.body),
                      _instant(args.at), args.workload)
    except UsageError as exc:
        print(f"enforcer policy explain: {exc}", file=sys.stderr)
        return USAGE
    policy = load_or_report(args.policy)
    if policy is None:
        return 1
    evaluation = Evaluator(policy).evaluate(claims, probe, token=args.token)
    if args.format == "json":
        print(json.dumps(render_json(evaluation), indent=2))
    else:
        print(render_text(evaluation), end="")
    return 0


def load_or_report(paths: Sequence[str | Path]) -> Policy | None:
    """The policy, or None after listing its problems on stderr."""
    try:
        return load_policy(paths)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return None


def _claims(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.token is not None:
        if not args.no_verify:
            raise UsageError("--token is read without checking its signature; say so with --no-verify "
                             "(or give the claims with --claims)")
        try:
            return claims_from_token(args.token)
        except ValueError as exc:
            raise UsageError(f"--token: {exc}") from None
    if args.claims is None:
        return None
    text = args.claims
    if text.startswith("@") or not text.lstrip().startswith(("{", "[")):  # @FILE, or FILE as DESIGN.md names it
        text = _read(text.removeprefix("@"), "--claims")
    try:
        claims = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--claims is not JSON ({exc})") from None
    if not isinstance(claims, dict):
        raise UsageError("--claims must be a JSON object such as {\"iss\": ..., \"sub\": ..., \"client_id\": ...}")
    return claims


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise UsageError(f"--header {text[:40]!r} is not 'Name: value'")
    return name.strip(), value.strip()


def _body(text: str | None) -> bytes | None:
    """Inline JSON, ``@FILE``, or a file name (``--body FILE`` as DESIGN.md names it)."""
    if text is None:
        return None
    if not text.startswith("@") and text.lstrip().startswith(("{", "[")):
        return text.encode("utf-8")
    path = text.removeprefix("@")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--body: cannot read {path}: {exc.strerror}") from None


def _read(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def run_test(args: argparse.Namespace) -> int:
    case_files = _case_files(args.paths)
    if case_files is None:
        return USAGE
    results: list[FileResult] = []
    evaluators: dict[tuple[Path, ...], Evaluator] = {}
    for case_file in case_files:
        if case_file.policy not in evaluators:
            policy = load_or_report(case_file.policy)
            if policy is None:
                policies = ", ".join(label_path(path) for path in case_file.policy)
                print(f"{case_file.path}: its policy ({policies}) does not load; no case ran", file=sys.stderr)
                return USAGE
            evaluators[case_file.policy] = Evaluator(policy)
        results.append(run_case_file(case_file, evaluators[case_file.policy]))
    print(render_report(results), end="")
    if args.junit is not None:
        write_junit(results, args.junit)
    return 1 if any(result.failures for result in results) else 0


def _case_files(paths: Sequence[str]) -> list[CaseFile] | None:
    """Every case file, parsed; or None after listing every problem of every file."""
    found, problems = find_case_files(paths)
    case_files = []
    for path in found:
        try:
            case_files.append(read_case_file(path))
        except CaseFileError as exc:
            problems += [str(problem) for problem in exc.problems]
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) in case files; no case ran", file=sys.stderr)
        return None
    return case_files
