"""`enforcer policy validate` against golden files (DESIGN.md sections 3, 5 and 6.2).

Every ``tests/data/policies/bad/NAME.yaml`` (and every directory ``bad/NAME/``, loaded as
one policy) has ``bad/NAME.expected``: the exact stderr of the CLI, run from the project
directory with the relative path, so each problem reads ``file:line:col: code: message``
and all problems of the input come together, sorted. Regenerate after a reviewed change
with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/policy/test_validate_golden.py`` and read the
diff: a golden is only as good as its review.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from enforcer.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("tests/data/policies")
BAD = DATA / "bad"
GOOD = DATA / "good"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>[a-z_]+): (?P<message>.+)$")


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

    def run(*paths: Path) -> tuple[int, str, str]:
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


@pytest.mark.parametrize("source", _bad_inputs(), ids=lambda p: p.stem)
def test_golden_is_well_formed(source: Path) -> None:
    """Each golden line is ``file:line:col: code: message`` for the input, sorted, and the
    count line agrees; every position is a character that was written (a key, a value, an
    item), never blank space."""
    lines = (ROOT / BAD / f"{source.stem}.expected").read_text().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert problems, "a bad file must produce at least one problem"
    assert summary == f"{len(problems)} problem(s) found"
    keys = [_sort_key(text) for text in problems]
    for file, line, col, _, _ in keys:
        assert Path(file) == source or Path(file).parent == source, file
        file_lines = (ROOT / file).read_text().splitlines() or [""]
        assert 1 <= line <= len(file_lines), (file, line)
        assert 1 <= col <= len(file_lines[line - 1]), (file, line, col)
        assert not file_lines[line - 1][col - 1].isspace(), (file, line, col)
    assert keys == sorted(keys)


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
    ("unsupported", "22:9: unsupported: resources[0].rules[0].mcp"),
    ("unsupported", "26:9: unsupported: resources[0].rules[1].mcp"),
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
    located = [": ".join(line.split(": ")[:3]) for line in (ROOT / BAD / f"{name}.expected").read_text().splitlines()]
    assert not [where for where in located if needle in where]


@pytest.mark.parametrize("source", _good_inputs(), ids=lambda p: p.stem)
def test_good_policy_validates(source: Path, validate: Validate) -> None:
    code, out, err = validate(source)
    assert (code, err) == (0, "")
    assert out.startswith("ok: 1 file(s), ")


@pytest.mark.parametrize("path", ["policies", "policies/example.yaml"])
def test_shipped_example_validates(path: str, validate: Validate) -> None:
    code, out, err = validate(Path(path))
    assert (code, err) == (0, "")
    assert re.fullmatch(r"ok: 1 file\(s\), 1 issuer\(s\), 2 resource\(s\), policy [0-9a-f]{16}\n", out)


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
    assert err.splitlines() == [*expected, f"{len(expected)} problem(s) found"]


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
