"""`enforcer policy validate` against golden files (DESIGN.md sections 3, 5 and 6.2).

Two sets, both compared byte for byte:

* ``tests/policy/golden/``: the command as a CI job runs it. ``CASES`` names each run (its
  arguments, relative to that directory, which is the working directory) and
  ``golden/expected/NAME.txt`` holds the command line, the exit status, stdout and stderr:
  misspelt keys with suggestions, wrong types, unknown issuers, YAML syntax, duplicate keys,
  many problems in one file, two files, warnings only, ``--format json`` and
  ``--warnings-as-errors``.
* ``tests/data/policies/bad/NAME.yaml`` (and every directory ``bad/NAME/``, loaded as one
  policy): one file per check, with ``bad/NAME.expected``, the exact stderr of the CLI run
  from the project directory with the relative path.

Each problem reads ``file:line:col: code: message`` (``file:line:col: warning: code:
message`` for a warning) and all problems of the input come together, sorted. Regenerate
after a reviewed change with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/policy/test_validate_golden.py``
and read the diff: a golden is only as good as its review.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from enforcer import cli
from enforcer.cli import main
from enforcer.policy.loader import check_policy, load_policy
from enforcer.policy.model import Rule
from enforcer.policy.problems import close_match

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("tests/data/policies")
BAD = DATA / "bad"
GOOD = DATA / "good"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?:(?P<severity>warning): )?"
                  r"(?P<code>[a-z_]+): (?P<message>.+)$")


def _bad_inputs() -> list[Path]:
    inputs = sorted(p for p in (ROOT / BAD).iterdir() if p.suffix == ".yaml" or p.is_dir())
    return [p.relative_to(ROOT) for p in inputs]


def _good_inputs() -> list[Path]:
    return [p.relative_to(ROOT) for p in sorted((ROOT / GOOD).glob("*.yaml"))]


Validate = Callable[..., tuple[int, str, str]]


@pytest.fixture
def validate(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Validate:
    """Run ``enforcer policy validate PATH...`` in-process from the project directory:
    (exit status, stdout, stderr)."""
    monkeypatch.chdir(ROOT)

    def run(*paths: Path | str) -> tuple[int, str, str]:
        code = main(["policy", "validate", *map(str, paths)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("source", _bad_inputs(), ids=lambda p: p.stem)
def test_bad_policy_matches_golden(source: Path, validate: Validate) -> None:
    code, out, err = validate(source)
    golden = ROOT / BAD / f"{source.stem}.expected"
    if UPDATE:
        golden.write_text(err)
    assert code == 1
    assert out == ""
    assert err == golden.read_text()


def _sort_key(text: str) -> tuple[str, int, int, str, str]:
    match = LINE.match(text)
    assert match, text
    return match["file"], int(match["line"]), int(match["col"]), match["code"], match["message"]


def _summary(problems: list[str]) -> str:
    """The count line that ends the problem lines on stderr."""
    warnings = sum(1 for text in problems if LINE.match(text) and LINE.match(text)["severity"])  # type: ignore[index]
    if not warnings:
        return f"{len(problems)} problem(s) found"
    return f"{len(problems)} problem(s) found ({len(problems) - warnings} error(s), {warnings} warning(s))"


def _check_problem_lines(problems: list[str], base: Path) -> None:
    """Each line is ``file:line:col: [warning: ]code: message``, they are sorted, and every
    position is a character that was written in the file (a key, a value, an item), never
    blank space."""
    keys = [_sort_key(text) for text in problems]
    for file, line, col, _, _ in keys:
        if not (base / file).is_file():
            continue  # a file that cannot be read is located at 1:1
        file_lines = (base / file).read_text().splitlines() or [""]
        if (line, col) == (len(file_lines) + 1, 1):
            continue  # the end of the stream, where a YAML syntax error may be found
        assert 1 <= line <= len(file_lines), (file, line)
        assert 1 <= col <= len(file_lines[line - 1]), (file, line, col)
        assert not file_lines[line - 1][col - 1].isspace(), (file, line, col)
    assert keys == sorted(keys)


@pytest.mark.parametrize("source", _bad_inputs(), ids=lambda p: p.stem)
def test_golden_is_well_formed(source: Path) -> None:
    """Each golden line is a problem of the input, sorted, and the count line agrees."""
    lines = (ROOT / BAD / f"{source.stem}.expected").read_text().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert problems, "a bad file must produce at least one problem"
    assert summary == _summary(problems)
    for text in problems:
        file = _sort_key(text)[0]
        assert Path(file) == source or Path(file).parent == source, file
    _check_problem_lines(problems, ROOT)


def test_there_are_enough_goldens() -> None:
    goldens = sorted(p.stem for p in (ROOT / BAD).glob("*.expected"))
    assert len(goldens) >= 12
    assert goldens == sorted(p.stem for p in _bad_inputs()), "every bad input has a golden and vice versa"


# Problems that must appear (an independent check of the goldens' content, so blessing a
# regression with UPDATE_GOLDEN=1 still fails here): (input, "line:col: code: field path").
MUST_REPORT = [
    ("unknown_keys", "4:1: unknown_key: isuers"),
    ("unknown_keys", "9:5: unknown_key: issuers[0].audience"),
    ("unknown_keys", "13:32: unknown_key: resources[0].match.hostname"),
    ("unknown_keys", "16:5: unknown_key: resources[0].forward_tokens"),
    ("unknown_keys", "20:9: unknown_key: resources[0].rules[0].client_id"),
    ("missing_keys", "3:1: missing_key: version"),
    ("missing_keys", "4:5: missing_key: issuers[0].issuer"),
    ("missing_keys", "13:9: missing_key: resources[0].rules[1].effect"),
    ("wrong_types", "3:1: invalid_value: version"),
    ("wrong_types", "9:5: wrong_type: issuers[0].clock_skew_seconds"),
    ("wrong_types", "16:5: wrong_type: resources[0].forward_token"),
    ("yaml_syntax", "16:11: yaml_syntax:"),
    ("duplicate_yaml_key", "18:9: duplicate_key:"),
    ("duplicate_ids", "8:5: duplicate_id: issuers[1].id"),
    ("duplicate_ids", "21:9: duplicate_id: resources[0].rules[1].id"),
    ("duplicate_ids", "24:5: duplicate_id: resources[1].id"),
    ("unknown_issuer", "11:27: unknown_issuer: resources[0].issuers[2]"),
    ("algorithms", "8:25: unsafe_algorithm: issuers[0].algorithms[1]"),  # none (AT-02, JA-01)
    ("algorithms", "8:31: unsafe_algorithm: issuers[0].algorithms[2]"),  # HS256 (JA-02)
    ("algorithms", "8:52: unknown_algorithm: issuers[0].algorithms[5]"),
    ("key_sources", "4:5: key_source: issuers[0]"),
    ("key_sources", "6:5: key_source: issuers[1]"),
    ("insecure_urls", "13:5: insecure_url: issuers[2].jwks_uri"),
    ("insecure_urls", "16:5: insecure_url: issuers[3].jwks_uri"),  # 127.0.0.1.nip.io is not loopback
    ("resource_urls", "11:5: invalid_value: resources[0].resource"),  # fragment (RI-01)
    ("resource_urls", "13:5: invalid_value: resources[0].upstream"),  # query
    ("resource_urls", "16:5: invalid_value: resources[1].resource"),  # not absolute
    ("path_prefix", "15:13: invalid_value: resources[1].match.path_prefix"),
    ("rule_conditions", "18:9: invalid_value: resources[0].rules[0].client_ids"),
    ("rule_conditions", "25:19: invalid_value: resources[0].rules[1].methods[0]"),
    ("signatures", "15:7: invalid_value: resources[0].signatures.components"),  # MS-27
    ("signatures", "23:20: invalid_value: resources[1].signatures.components[0]"),  # @status
    ("signatures", "23:31: invalid_value: resources[1].signatures.components[1]"),  # upper case
    ("signatures", "24:29: unsafe_algorithm: resources[1].signatures.algorithms[1]"),  # JOSE name (MS-15)
    ("signatures", "25:7: invalid_value: resources[1].signatures.tag"),
    ("signatures", "26:7: key_source: resources[1].signatures.keys"),
    ("signatures", "34:7: key_source: resources[2].signatures.keys"),
    ("signatures", "36:9: insecure_url: resources[2].signatures.keys.jwks_uri"),
    ("signatures", "44:14: invalid_value: resources[3].signatures.keys.shared_secrets_file"),
    ("mcp_conditions", "18:36: unreachable_condition: resources[0].rules[0].mcp.prompts"),
    ("mcp_conditions", "22:11: unreachable_condition: resources[0].rules[1].mcp.methods"),
    ("mcp_conditions", "26:15: invalid_value: resources[0].rules[2].mcp.methods"),
    ("mcp_conditions", "14:31: invalid_value: resources[0].mcp.session_ttl_seconds"),
    ("mcp_conditions", "32:5: invalid_value: resources[1].mcp"),
    ("duplicate_route", "17:5: duplicate_route: resources[1].match"),
    ("not_mapping", "2:1: wrong_type:"),
    ("empty_values", "20:9: empty_value: resources[0].rules[0].client_ids"),
    ("empty_values", "15:5: empty_value: resources[0].signatures"),
]


@pytest.mark.parametrize(("name", "needle"), MUST_REPORT, ids=[f"{n}-{x.split(': ')[1]}" for n, x in MUST_REPORT])
def test_golden_reports(name: str, needle: str) -> None:
    golden = (ROOT / BAD / f"{name}.expected").read_text()
    assert f"{BAD / name}.yaml:{needle}" in golden


# Problems that must NOT appear: the valid parts of the bad files stay quiet.
MUST_NOT_REPORT = [
    ("insecure_urls", "issuers[0]"),  # http://127.0.0.1 is loopback
    ("insecure_urls", "issuers[1]"),  # http://localhost issuer, http://[::1] keys
    ("algorithms", "algorithms[0]"),  # ES256
    ("rule_conditions", "methods[2]"),  # DELETE
    ("rule_conditions", "paths[1]"),  # "*/admin" is a legal glob
    ("unknown_issuer", "issuers[0]:"),  # corp exists
    ("cross_file", "a.yaml:"),  # the first definition is not the duplicate
]


@pytest.mark.parametrize(("name", "needle"), MUST_NOT_REPORT, ids=[f"{n}-{x}" for n, x in MUST_NOT_REPORT])
def test_golden_does_not_report(name: str, needle: str) -> None:
    """(Errors only: a resource without rules, say, is a warning wherever it is.)"""
    located = [": ".join(line.split(": ")[:3]) for line in (ROOT / BAD / f"{name}.expected").read_text().splitlines()
               if ": warning: " not in line]
    assert not [where for where in located if needle in where]


@pytest.mark.parametrize("source", _good_inputs(), ids=lambda p: p.stem)
def test_good_policy_validates(source: Path, validate: Validate) -> None:
    """Valid policies may have warnings (a resource without rules, forward_token): they are
    printed, and the exit status is still 0."""
    code, out, err = validate(source)
    assert code == 0
    assert all(LINE.match(text) and LINE.match(text)["severity"] == "warning" for text in err.splitlines()), err
    assert out.startswith("ok: 1 file(s), ")


def test_shipped_example_validates(validate: Validate) -> None:
    code, out, err = validate(Path("policies/example.yaml"))
    assert (code, err) == (0, "")
    assert re.fullmatch(r"ok: 1 file\(s\), 1 issuer\(s\), 2 resource\(s\), policy [0-9a-f]{16}\n", out)


def test_shipped_policies_validate_together_without_warnings(validate: Validate) -> None:
    """Every example in policies/ is loaded as one policy by `enforcer serve --policy policies/`."""
    code, out, err = validate(Path("policies"), "--warnings-as-errors")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"ok: \d+ file\(s\), 1 issuer\(s\), \d+ resource\(s\), policy [0-9a-f]{16}\n", out)


def test_directory_loads_every_yaml_but_tests(validate: Validate) -> None:
    # dir/ holds issuers.yaml, resources.yaml (which uses the other file's issuer),
    # resources_test.yaml (not a policy) and ignored.yml (version 2, never read).
    code, out, err = validate(DATA / "dir")
    assert (code, err) == (0, "")
    assert out.startswith("ok: 2 file(s), 1 issuer(s), 1 resource(s), ")


def test_all_files_are_reported_together(validate: Validate) -> None:
    """Two bad files and a good one in one run: one sorted list with every problem of each."""
    code, _, err = validate(BAD / "wrong_types.yaml", GOOD / "minimal.yaml", BAD / "algorithms.yaml")
    expected = sorted((ROOT / BAD / "algorithms.expected").read_text().splitlines()[:-1]
                      + (ROOT / BAD / "wrong_types.expected").read_text().splitlines()[:-1], key=_sort_key)
    assert code == 1
    assert err.splitlines() == [*expected, _summary(expected)]


def test_missing_file_is_a_located_problem(validate: Validate) -> None:
    code, _, err = validate(DATA / "no-such-file.yaml")
    assert code == 1
    assert err == (f"{DATA}/no-such-file.yaml:1:1: file_error: cannot read file: No such file or directory\n"
                   "1 problem(s) found\n")


def test_real_process() -> None:
    """The same output from a separate interpreter (`python -m enforcer.cli`), exit status 1."""
    source = BAD / "unknown_keys.yaml"
    result = subprocess.run([sys.executable, "-m", "enforcer.cli", "policy", "validate", str(source)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (ROOT / BAD / "unknown_keys.expected").read_text()


# --- tests/policy/golden: the command as CI runs it -------------------------------------------

GOLDEN = ROOT / "tests" / "policy" / "golden"
EXPECTED = GOLDEN / "expected"

#: name of the golden (``expected/NAME.txt``) -> arguments of ``enforcer policy validate``,
#: run with the golden directory as the working directory
CASES: dict[str, list[str]] = {
    "clean": ["clean.yaml"],
    "misspelled_keys": ["misspelled_keys.yaml"],
    "wrong_types": ["wrong_types.yaml"],
    "unknown_issuer": ["unknown_issuer.yaml"],
    "unknown_issuer.json": ["--format", "json", "unknown_issuer.yaml"],
    "yaml_syntax": ["yaml_syntax.yaml"],
    "duplicate_key": ["duplicate_key.yaml"],
    "many_problems": ["many_problems.yaml"],
    "many_problems.json": ["--format", "json", "many_problems.yaml"],
    "two_files": ["two_files/"],
    "two_files_named": ["two_files/resources.yaml", "two_files/issuers.yaml"],
    "warnings_only": ["warnings_only.yaml"],
    "warnings_only.strict": ["--warnings-as-errors", "warnings_only.yaml"],
    "warnings_only.json": ["--format", "json", "warnings_only.yaml"],
    "missing_file": ["no-such-file.yaml"],
}


def _transcript(args: list[str], status: int, out: str, err: str) -> str:
    """A golden: the command, its exit status, then stdout and stderr exactly."""
    return (f"$ {shlex.join(['enforcer', 'policy', 'validate', *args])}\nexit status: {status}\n"
            f"--- stdout\n{out}--- stderr\n{err}")


@pytest.fixture
def run_in_golden(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Validate:
    monkeypatch.chdir(GOLDEN)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["policy", "validate", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("name", list(CASES))
def test_validate_matches_golden(name: str, run_in_golden: Validate) -> None:
    args = CASES[name]
    status, out, err = run_in_golden(*args)
    got = _transcript(args, status, out, err)
    golden = EXPECTED / f"{name}.txt"
    if UPDATE:
        golden.write_text(got)
    assert got == golden.read_text(), f"enforcer policy validate {' '.join(args)}; UPDATE_GOLDEN=1 regenerates"


def test_every_golden_has_a_case_and_every_input_is_used() -> None:
    assert sorted(p.stem for p in EXPECTED.glob("*.txt")) == sorted(CASES)
    used = {arg.rstrip("/") for args in CASES.values() for arg in args}
    inputs = {p.name for p in GOLDEN.iterdir() if p.suffix == ".yaml" or (p.is_dir() and p != EXPECTED)}
    assert inputs <= used


def _streams(name: str) -> tuple[int, str, str]:
    text = (EXPECTED / f"{name}.txt").read_text()
    head, rest = text.split("--- stdout\n", 1)
    out, err = rest.split("--- stderr\n", 1)
    return int(head.splitlines()[1].removeprefix("exit status: ")), out, err


@pytest.mark.parametrize("name", [n for n, args in CASES.items() if "json" not in args])
def test_text_golden_is_well_formed(name: str) -> None:
    """Problem lines on stderr, then the count; ``ok:`` on stdout only with exit status 0;
    warnings alone do not fail unless --warnings-as-errors."""
    status, out, err = _streams(name)
    lines = err.splitlines()
    if status == 0:
        assert re.fullmatch(r"ok: \d+ file\(s\), \d+ issuer\(s\), \d+ resource\(s\), policy [0-9a-f]{16}"
                            r"(, \d+ warning\(s\))?\n", out), out
        assert all(LINE.match(text)["severity"] == "warning" for text in lines)  # type: ignore[index]
        problems = lines
    else:
        assert out == ""
        problems, summary = lines[:-1], lines[-1]
        assert problems and summary == _summary(problems)
        has_error = any(not LINE.match(text)["severity"] for text in problems)  # type: ignore[index]
        assert has_error or "--warnings-as-errors" in CASES[name]
    _check_problem_lines(problems, GOLDEN)


@pytest.mark.parametrize("name", [n for n, args in CASES.items() if "json" in args])
def test_json_golden_agrees_with_text(name: str, run_in_golden: Validate) -> None:
    """The JSON document holds the same problems as the text lines, with the same exit status,
    and nothing on stderr."""
    status, out, err = _streams(name)
    document = json.loads(out)
    assert err == ""
    assert set(document) >= {"valid", "files", "errors", "warnings", "problems"}
    assert ("version_hash" in document) == document["valid"]
    args = [a for a in CASES[name] if a not in ("--format", "json")]
    text_status, text_out, text_err = run_in_golden(*args)
    assert text_status == status
    as_text = [f"{p['file']}:{p['line']}:{p['col']}: {'warning: ' if p['severity'] == 'warning' else ''}"
               f"{p['code']}: {p['message']}" for p in document["problems"]]
    assert as_text == (text_err.splitlines() if document["valid"] else text_err.splitlines()[:-1])
    for problem in document["problems"]:
        assert problem["severity"] in ("error", "warning")
        if problem["path"] is not None:
            assert problem["message"].startswith(problem["path"] + ": ")
        if "suggestion" in problem:
            assert problem["message"].endswith(f"; did you mean {problem['suggestion']!r}?")
    if document["valid"]:
        assert text_out.endswith(f"policy {document['version_hash']}, {document['warnings']} warning(s)\n"
                                 if document["warnings"] else f"policy {document['version_hash']}\n")


def test_warnings_as_errors_in_json() -> None:
    """--warnings-as-errors changes the exit status, not the document: the policy still loads."""
    args = ["policy", "validate", "--format", "json", "--warnings-as-errors", "warnings_only.yaml"]
    result = subprocess.run([sys.executable, "-m", "enforcer.cli", *args], cwd=GOLDEN, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == _streams("warnings_only.json")[1]


# Suggestions the goldens must hold (independent of UPDATE_GOLDEN): (golden, text).
MUST_SUGGEST = [
    ("misspelled_keys", "7:5: unknown_key: issuers[0].jwks_url: unknown key; did you mean 'jwks_uri'?"),
    ("misspelled_keys", "12:13: unknown_key: resources[0].match.path_prefx: unknown key; did you mean 'path_prefix'?"),
    ("misspelled_keys", "16:14: unknown_key: resources[0].signatures.keys.from_token_cfn: unknown key; "
                        "did you mean 'from_token_cnf'?"),
    ("misspelled_keys", "22:9: invalid_value: resources[0].rules[1].effect: must be 'allow' or 'deny', "
                        "got the string 'alow'; did you mean 'allow'?"),
    ("misspelled_keys", "23:9: unknown_key: resources[0].rules[1].client_id: unknown key; did you mean 'client_ids'?"),
    ("unknown_issuer", "15:15: unknown_issuer: resources[0].issuers[0]: no issuer has id 'crop'; did you mean 'corp'?"),
    ("unknown_issuer", "15:21: unknown_issuer: resources[0].issuers[1]: no issuer has id 'partner_eu'; "
                       "did you mean 'partner-eu'?"),
    ("unknown_issuer", "15:39: unknown_issuer: resources[0].issuers[3]: no issuer has id 'nobody'\n"),
]


@pytest.mark.parametrize(("name", "needle"), MUST_SUGGEST, ids=[f"{n}-{x.split(': ')[2]}" for n, x in MUST_SUGGEST])
def test_golden_suggests(name: str, needle: str) -> None:
    assert f"{name}.yaml:{needle}" in (EXPECTED / f"{name}.txt").read_text()


# --- every problem at once ----------------------------------------------------------------------

def test_checks_run_beside_shape_errors() -> None:
    """A misspelt key in one rule does not hide the checks of the other rules, of the rest of
    its resource, of other resources or of the issuers (many_problems.yaml)."""
    codes = {(p.path, p.code) for p in check_policy([GOLDEN / "many_problems.yaml"]).problems}
    assert codes >= {
        ("issuers[0].jwks_uri", "insecure_url"),  # the issuer next to a broken one
        ("issuers[2].discovery", "wrong_type"),
        ("resources[0].resource", "invalid_value"),
        ("resources[1].match", "duplicate_route"),  # the resource whose rule has a shape error
        ("resources[1].upstream", "invalid_value"),
        ("resources[1].rules[0].client_id", "unknown_key"),
        ("resources[1].rules[1].methods[0]", "invalid_value"),  # the rule after it, at its own place
    }


def test_duplicate_keys_do_not_stop_the_file() -> None:
    problems = check_policy([GOLDEN / "duplicate_key.yaml"]).problems
    assert [(p.path, p.code) for p in problems] == [
        ("issuers[0].jwks_uri", "duplicate_key"), ("resources[0].rules[0].effect", "duplicate_key"),
        ("resources[0].rules[1].methods[0]", "invalid_value")]


PATHLESS = {"yaml_syntax", "file_error", "no_policy", "wrong_type"}


@pytest.mark.parametrize("source", sorted([*GOLDEN.glob("*.yaml"), *(ROOT / BAD).glob("*.yaml")]), ids=lambda p: p.stem)
def test_every_problem_names_its_field_path(source: Path) -> None:
    """Only problems about a whole file (not YAML, not readable, not a mapping) have no path."""
    for problem in check_policy([source]).problems:
        if problem.path:
            assert problem.message.startswith(problem.path + ": "), problem
        else:
            assert problem.code in PATHLESS, problem
            assert problem.code != "wrong_type" or "policy file" in problem.message, problem


def test_close_match() -> None:
    assert close_match("client_id", ["client_ids", "subjects"]) == "client_ids"
    assert close_match("Allow", ["allow", "deny"]) == "allow"
    assert close_match("audience", ["id", "issuer", "jwks_uri"]) is None
    assert close_match("issuers", ["issuers"]) is None  # never the word itself


def test_a_key_already_written_is_not_suggested(tmp_path: Path) -> None:
    """Renaming ``isuers`` to ``issuers`` would write ``issuers`` twice: no suggestion then."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nisuers: []\nissuers: []\nresorces: []\n")
    problems = check_policy([path]).problems
    assert [(p.path, p.suggestion) for p in problems] == [("isuers", None), ("resorces", "resources")]


# --- warnings: the policy loads, and enforcer serve logs them -----------------------------------

def test_warnings_travel_with_the_loaded_policy() -> None:
    policy = load_policy([GOLDEN / "warnings_only.yaml"])
    assert [w.code for w in policy.warnings] == ["forward_token", "signatures_optional", "deny_by_scope", "any_agent",
                                                 "unconditional_allow", "no_rules"]
    assert all(w.severity == "warning" for w in policy.warnings)


def test_clean_policies_have_no_warnings() -> None:
    assert load_policy([GOLDEN / "clean.yaml"]).warnings == ()
    assert load_policy([ROOT / "policies"]).warnings == ()


@pytest.mark.skipif("mode" not in Rule.model_fields, reason="this policy format has no shadow rules")
def test_shadow_rules_are_not_linted(tmp_path: Path) -> None:
    """A shadow rule decides nothing, so an unconditional shadow allow is no warning; a shadow
    resource is one warning (its rules refuse nothing), not also one for having no rules."""
    text = (GOLDEN / "clean.yaml").read_text() + (
        "      - id: preview-everyone\n"
        "        mode: shadow\n"
        "        effect: allow\n"
        "  - id: preview\n"
        "    mode: shadow\n"
        "    resource: https://preview.example.test\n"
        "    match: {path_prefix: /preview}\n"
        "    upstream: http://127.0.0.1:9002\n"
        "    issuers: [corp]\n")
    path = tmp_path / "shadow.yaml"
    path.write_text(text)
    assert [(w.path, w.code) for w in load_policy([path]).warnings] == [("resources[1].mode", "shadow_resource")]


def test_serve_logs_each_warning_once(capsys: pytest.CaptureFixture[str]) -> None:
    """``enforcer serve`` (and ``enforcer demo``) load through ``_load_or_report``: a policy
    with warnings is served, and each warning is logged once, with its location."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("enforcer.cli")
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.WARNING
    try:
        policy = cli._load_or_report([str(GOLDEN / "warnings_only.yaml")])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert policy is not None
    assert [r.getMessage() for r in records] == [f"policy warning: {w}" for w in policy.warnings]
    assert [r.policy_warning["code"] for r in records] == [w.code for w in policy.warnings]  # type: ignore[attr-defined]
    assert capsys.readouterr().err == ""
