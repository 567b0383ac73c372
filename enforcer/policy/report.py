"""What ``enforcer policy validate`` prints, in text or JSON, and its exit status.

Text (problems on stderr, sorted by file, line and column; the ``ok:`` line on stdout)::

    policies/a.yaml:20:9: unknown_key: resources[0].rules[0].client_id: unknown key; did you mean 'client_ids'?
    policies/a.yaml:21:9: warning: any_agent: resources[0].rules[1]: this allow rule names ...
    2 problem(s) found (1 error(s), 1 warning(s))

An error reads ``file:line:col: code: message``; a warning has ``warning:`` before its code.
The last stderr line counts the problems, and the error/warning split is given when there
are warnings. A policy with warnings only is valid: its warnings go to stderr, ``ok: ...``
to stdout, and the exit status is 0 unless ``--warnings-as-errors``.

JSON (``--format json``; one document on stdout, nothing on stderr)::

    {"valid": false, "files": ["a.yaml"], "errors": 1, "warnings": 1,
     "problems": [{"file": "a.yaml", "line": 20, "col": 9, "severity": "error", "code": "unknown_key",
                   "path": "resources[0].rules[0].client_id", "message": "...", "suggestion": "client_ids"}]}

``valid`` says whether the policy loads (no errors); ``version_hash`` is there when it does.
``path`` is ``null`` for a problem about a whole file, ``suggestion`` only present when there
is one, and ``message`` is the text printed after the code in text mode. Exit status, in
both modes: 1 when there is an error, or a warning and ``--warnings-as-errors``; otherwise 0.
"""

from __future__ import annotations

import json

from enforcer.policy.loader import PolicyReport


def exit_status(report: PolicyReport, *, warnings_as_errors: bool = False) -> int:
    return 1 if report.errors or (warnings_as_errors and report.warnings) else 0


def summary(report: PolicyReport) -> str:
    """``3 problem(s) found``, with ``(E error(s), W warning(s))`` when there are warnings."""
    line = f"{len(report.problems)} problem(s) found"
    if report.warnings:
        line += f" ({len(report.errors)} error(s), {len(report.warnings)} warning(s))"
    return line


def as_text(report: PolicyReport, *, warnings_as_errors: bool = False) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the text format."""
    status = exit_status(report, warnings_as_errors=warnings_as_errors)
    err = "".join(f"{problem}\n" for problem in report.problems)
    if status:
        return status, "", err + summary(report) + "\n"
    policy = report.policy
    assert policy is not None
    out = (f"ok: {len(policy.files)} file(s), {len(policy.issuers)} issuer(s), "
           f"{len(policy.resources)} resource(s), policy {policy.version_hash}")
    if report.warnings:
        out += f", {len(report.warnings)} warning(s)"
    return status, out + "\n", err


def as_json(report: PolicyReport, *, warnings_as_errors: bool = False) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the JSON format."""
    document: dict[str, object] = {
        "valid": report.policy is not None,
        "files": list(report.files),
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "problems": [problem.as_json() for problem in report.problems],
    }
    if report.policy is not None:
        document["version_hash"] = report.policy.version_hash
    return exit_status(report, warnings_as_errors=warnings_as_errors), json.dumps(document, indent=2) + "\n", ""
