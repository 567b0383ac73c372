"""``enforcer policy test``: run case files against their policies, report, write JUnit XML.

Each case is evaluated by ``policy/evaluate.py``, the server's stages without a network, and
compared field by field with its ``expect``. The report is a table per case file (name,
expected, got, PASS/FAIL) followed, for each failing case, by the ``policy explain`` trace of
its request: the table says that a rule misbehaves, the trace says which condition.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enforcer.policy.casefile import Case, CaseFile
from enforcer.policy.evaluate import Evaluation, Evaluator
from enforcer.policy.explain import render_text


def find_case_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Case files named directly, plus every ``*_test.yaml`` in named directories; and what
    could not be used."""
    found: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            cases = sorted(path.glob("*_test.yaml"))
            found += cases
            if not cases:
                problems.append(f"{path}: no *_test.yaml case files in this directory")
        elif not path.name.endswith("_test.yaml"):
            problems.append(f"{path}: not a case file (case files are named *_test.yaml)")
        elif not path.exists():
            problems.append(f"{path}: no such file")
        else:
            found.append(path)
    return found, problems


def actual(evaluation: Evaluation, field: str, expected: Any) -> Any:
    """The evaluation's value of an ``expect`` field, in the form the case file writes it."""
    if field == "decision":
        return evaluation.decision
    if field == "status":
        return evaluation.status
    if field == "rule":
        return evaluation.rule
    if field == "reason":
        return str(evaluation.reason)
    if field == "scopes":
        return evaluation.scopes
    shadow = evaluation.shadow
    if not isinstance(expected, tuple):  # none | would_deny | would_allow
        return "none" if shadow is None else shadow.result
    record = shadow.record() if shadow is not None else {}
    return tuple(sorted((key, record.get(key)) for key, _ in expected)) if record else "none"


@dataclass(frozen=True)
class CaseResult:
    case: Case
    evaluation: Evaluation
    got: tuple[tuple[str, Any], ...]  # the same fields as ``case.expect``, as evaluated

    @property
    def passed(self) -> bool:
        return self.got == self.case.expect


@dataclass(frozen=True)
class FileResult:
    case_file: CaseFile
    results: tuple[CaseResult, ...]

    @property
    def failures(self) -> int:
        return sum(not result.passed for result in self.results)


def run_case_file(case_file: CaseFile, evaluator: Evaluator) -> FileResult:
    results = []
    for case in case_file.cases:
        evaluation = evaluator.evaluate(case.claims, case.probe)
        got = tuple((field, evaluator.visible_tools(evaluation, case.upstream_tools) if field == "filtered_tools"
                     else actual(evaluation, field, expected)) for field, expected in case.expect)
        results.append(CaseResult(case, evaluation, got))
    return FileResult(case_file, tuple(results))


def describe(fields: Iterable[tuple[str, Any]]) -> str:
    """``deny 403 rule=block-admin reason=denied_by_rule``: one expectation, or what was found."""
    parts = []
    for field, value in fields:
        if field in ("decision", "status"):
            parts.append(str(value))
        elif field in ("scopes", "filtered_tools"):
            parts.append(f"{field}=[{', '.join(value)}]")
        elif isinstance(value, tuple):  # a shadow mapping: decision/rule/reason, as far as given
            given = dict(value)
            parts.append("shadow=" + "/".join("-" if given[k] is None else str(given[k])
                                              for k in ("decision", "rule", "reason") if k in given))
        else:
            parts.append(f"{field}={'-' if value is None else value}")
    return " ".join(parts)


# -- the report ---------------------------------------------------------------------------


def label_path(path: Path) -> str:
    """A path as the report shows it: as given, directories with a trailing slash."""
    return f"{path}/" if path.is_dir() else str(path)


def render_report(files: list[FileResult], label: Callable[[Path], str] = label_path) -> str:
    lines: list[str] = []
    for file_result in files:
        lines += _table(file_result, label)
        lines.append("")
    for file_result in files:
        for result in file_result.results:
            if not result.passed:
                lines += _failure(file_result, result, label)
    total = sum(len(f.results) for f in files)
    failed = sum(f.failures for f in files)
    lines.append(f"{total} case(s) in {len(files)} file(s): {total - failed} passed, {failed} failed")
    return "\n".join(lines) + "\n"


def _table(file_result: FileResult, label: Callable[[Path], str]) -> list[str]:
    case_file = file_result.case_file
    policy = ", ".join(label(path) for path in case_file.policy)
    rows = [("CASE", "EXPECTED", "GOT", "RESULT")]
    rows += [(r.case.name, describe(r.case.expect), describe(r.got), "PASS" if r.passed else "FAIL")
             for r in file_result.results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{label(case_file.path)} (policy: {policy})"]
    lines += [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    return lines


def _failure(file_result: FileResult, result: CaseResult, label: Callable[[Path], str]) -> list[str]:
    where = f"{label(file_result.case_file.path)}:{result.case.line}"
    lines = [f"FAIL {where}: {result.case.name}", f"  expected: {describe(result.case.expect)}",
             f"  got:      {describe(result.got)}"]
    lines += [f"  {line}" for line in render_text(result.evaluation).splitlines()]
    lines.append("")
    return lines


# -- JUnit XML ----------------------------------------------------------------------------


def junit_xml(files: list[FileResult], label: Callable[[Path], str] = label_path) -> ET.ElementTree:
    """One ``testsuite`` per case file, one ``testcase`` per case; a failing case carries a
    ``failure`` whose message is expected-versus-got and whose text is the explain trace."""
    total = sum(len(f.results) for f in files)
    root = ET.Element("testsuites", name="enforcer policy test", tests=str(total),
                      failures=str(sum(f.failures for f in files)), errors="0")
    for file_result in files:
        root.append(_suite(file_result, label))
    ET.indent(root, space="  ")
    return ET.ElementTree(root)


def _suite(file_result: FileResult, label: Callable[[Path], str]) -> ET.Element:
    name = label(file_result.case_file.path)
    suite = ET.Element("testsuite", name=name, tests=str(len(file_result.results)),
                       failures=str(file_result.failures), errors="0", skipped="0")
    for result in file_result.results:
        testcase = ET.SubElement(suite, "testcase", classname=name, name=result.case.name, file=name,
                                 line=str(result.case.line))
        if not result.passed:
            failure = ET.SubElement(testcase, "failure", type="PolicyTestFailure",
                                    message=f"expected {describe(result.case.expect)}, got {describe(result.got)}")
            failure.text = render_text(result.evaluation)
    return suite


def write_junit(files: list[FileResult], path: Path, label: Callable[[Path], str] = label_path) -> None:
    document = ET.tostring(junit_xml(files, label).getroot(), encoding="utf-8", xml_declaration=True)
    path.write_bytes(document + b"\n")
