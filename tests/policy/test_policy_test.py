"""``enforcer policy test``: the shipped example cases, golden report and JUnit files, a broken
rule caught with its explanation, and case files refused with every problem located.

Goldens live in ``tests/data/policy_tests/`` (``*.expected``: stdout or stderr of the command
run from the project directory with relative paths; ``*.junit.xml``). Regenerate after a
reviewed change with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/policy/test_policy_test.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from enforcer.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("tests/data/policy_tests")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden(name: str, text: str) -> None:
    path = ROOT / DATA / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"differs from {path} (UPDATE_GOLDEN=1 regenerates it)"


@pytest.fixture
def policy_test(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``enforcer policy test ARGS...`` in-process from the project directory: (status, stdout, stderr)."""
    monkeypatch.chdir(ROOT)

    def run(*args: str | Path) -> tuple[int, str, str]:
        code = main(["policy", "test", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_shipped_example_cases_pass(policy_test) -> None:  # type: ignore[no-untyped-def]
    code, out, err = policy_test("policies/example_test.yaml")
    assert (code, err) == (0, "")
    golden("example.expected", out)


def test_every_shipped_case_file_passes(policy_test) -> None:  # type: ignore[no-untyped-def]
    code, out, err = policy_test("policies/")
    assert (code, err) == (0, "")
    assert out.rstrip().endswith("0 failed"), out


def test_broken_rule_fails_with_the_trace_golden_report_and_junit(policy_test, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junit = tmp_path / "junit.xml"
    code, out, err = policy_test(DATA / "broken", DATA / "elsewhere" / "policy_ref_test.yaml", "--junit", junit)
    assert (code, err) == (1, "")
    golden("broken.expected", out)
    golden("broken.junit.xml", junit.read_text())


def test_junit_has_one_suite_per_file_and_one_case_per_case(policy_test, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junit = tmp_path / "junit.xml"
    policy_test(DATA / "broken", DATA / "elsewhere", "--junit", junit)
    root = ET.parse(junit).getroot()  # noqa: S314 (the file this test just wrote)
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "6", "2")
    suites = root.findall("testsuite")
    assert [(s.get("name"), len(s.findall("testcase")), s.get("failures")) for s in suites] == [
        ("tests/data/policy_tests/broken/cases_test.yaml", 5, "2"),
        ("tests/data/policy_tests/elsewhere/policy_ref_test.yaml", 1, "0"),
    ]
    (failure,) = [case.find("failure") for case in suites[0]
                  if case.get("name") == "everything below the admin page is blocked"]
    assert failure is not None and failure.get("message") == \
        "expected deny 403 rule=block-admin, got allow 200 rule=agents-read"
    assert "FAIL  paths: path not in [/mcp/admin]" in (failure.text or "")


def test_a_rule_broken_in_the_example_fails_its_cases(policy_test, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Break agent-42-calls (another client id) in a copy of the shipped policy: its cases fail, and
    the trace under each names the condition that no longer holds."""
    text = (ROOT / "policies" / "example.yaml").read_text()
    assert text.count("client_ids: [agent-42]") == 1
    (tmp_path / "example.yaml").write_text(text.replace("client_ids: [agent-42]", "client_ids: [agent-43]"))
    shutil.copy(ROOT / "policies" / "example_test.yaml", tmp_path / "example_test.yaml")
    code, out, err = policy_test(tmp_path)
    assert (code, err) == (1, "")
    failed = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert [line.split(": ", 1)[1] for line in failed] == [
        "agent-42 calls tools", "agent-42 without tools:call is asked to step up"]
    assert out.count("FAIL  client_ids: client_id not in [agent-43]") == 2
    assert out.endswith("15 case(s) in 1 file(s): 13 passed, 2 failed\n")


def test_broken_case_files_are_refused_with_located_problems(policy_test) -> None:  # type: ignore[no-untyped-def]
    code, out, err = policy_test(DATA / "bad")
    assert (code, out) == (2, "")
    golden("bad.expected", err)


@pytest.mark.parametrize(("args", "message"), [
    (["tests/data/policies"], "tests/data/policies: no *_test.yaml case files in this directory"),
    (["policies/example.yaml"], "policies/example.yaml: not a case file (case files are named *_test.yaml)"),
    (["policies/missing_test.yaml"], "policies/missing_test.yaml: no such file"),
])
def test_unusable_paths(policy_test, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = policy_test(*args)
    assert (code, out) == (2, "") and err.splitlines()[0] == message


def test_a_policy_that_does_not_load_runs_no_case(policy_test, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "policy.yaml").write_text("version: 2\n")
    (tmp_path / "p_test.yaml").write_text("cases:\n  - name: a\n    request: {path: /}\n    expect: {allow: true}\n")
    code, out, err = policy_test(tmp_path)
    assert (code, out) == (2, "")
    assert f"{tmp_path / 'policy.yaml'}:1:" in err
    assert err.endswith(f"{tmp_path / 'p_test.yaml'}: its policy ({tmp_path}/) does not load; no case ran\n")


def test_make_test_runs_the_example_cases() -> None:
    """The Makefile's test target runs the shipped cases right after validating the policies."""
    lines = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].splitlines()
    assert lines[1:3] == ["\t$(BIN)/enforcer policy validate policies/", "\t$(BIN)/enforcer policy test policies/"]


def test_real_process_exit_status() -> None:
    completed = subprocess.run([sys.executable, "-m", "enforcer.cli", "policy", "test", str(DATA / "broken")],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1 and "3 passed, 2 failed" in completed.stdout
