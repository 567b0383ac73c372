"""Loading policy files: located problems, merging, paths, the version hash, immutability
(DESIGN.md sections 3 and 6.1-6.2)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from enforcer.policy.loader import Policy, PolicyLoadError, PolicyProblem, expand_paths, load_policy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "policies"

ISSUER = """\
version: 1
issuers:
  - id: corp
    issuer: https://auth.example.test
    jwks_uri: https://auth.example.test/jwks
"""

NESTED = """\
version: 1
issuers:
  - id: corp
    issuer: https://auth.example.test
    jwks_uri: https://auth.example.test/jwks
resources:
  - id: demo
    resource: https://mcp.example.test/mcp
    upstream: http://127.0.0.1:9000/mcp
    issuers: [corp]
    timeouts:
      connect_seconds: 5
      read_seconds: "60"
    limits: {max_body_bytes: -1}
    rules:
      - id: first
        effect: allow
      - id: second
        effect: allow
        client_ids:
          - agent-1
          - agent-2
          - ""
        paths: [/mcp, mcp/x]
        extra: {deeper: [1]}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(*paths: Path | str) -> tuple[PolicyProblem, ...]:
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(list(paths))
    return raised.value.problems


# --- positions ---------------------------------------------------------------------------------

def test_positions_survive_for_nested_shape_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "nested.yaml", NESTED)
    found = {(p.line, p.col, p.code, p.message.split(":")[0]) for p in problems_of(path)}
    assert found == {
        (13, 7, "wrong_type", "resources[0].timeouts.read_seconds"),  # block mapping, two levels down
        (14, 14, "invalid_value", "resources[0].limits.max_body_bytes"),  # flow mapping
        (25, 9, "unknown_key", "resources[0].rules[1].extra"),  # second rule, not the first
    }


@pytest.mark.parametrize(("needle", "line", "col"), [
    ("resources[0].rules[1].client_ids[2]", 23, 13),  # third item of a block sequence
    ("resources[0].rules[1].paths[1]", 24, 23),  # second item of a flow sequence
])
def test_positions_survive_for_nested_semantic_errors(tmp_path: Path, needle: str, line: int, col: int) -> None:
    # The same file with its shape errors fixed in place: the semantic checks run and locate.
    text = NESTED.replace('read_seconds: "60"', "read_seconds: 60").replace("max_body_bytes: -1", "max_body_bytes: 1")
    path = write(tmp_path, "nested.yaml", text.replace("extra: {deeper: [1]}", "methods: [GET]"))
    (problem,) = [p for p in problems_of(path) if p.message.startswith(needle + ":")]
    assert (problem.line, problem.col, problem.code) == (line, col, "invalid_value")


def test_problem_text_is_file_line_col_code_message(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", ISSUER + "    algorithms: [HS256]\n")
    (problem,) = problems_of(path)
    assert str(problem) == f"{path}:6:18: unsafe_algorithm: issuers[0].algorithms[0]: 'HS256' is never accepted " \
                           "for access tokens"


# --- all problems, sorted, all or nothing --------------------------------------------------------

def test_policy_load_error_sorts_its_problems() -> None:
    given = [PolicyProblem("b.yaml", 1, 1, "x", "m"), PolicyProblem("a.yaml", 10, 1, "x", "m"),
             PolicyProblem("a.yaml", 9, 5, "y", "m"), PolicyProblem("a.yaml", 9, 5, "x", "n"),
             PolicyProblem("a.yaml", 9, 5, "x", "m"), PolicyProblem("a.yaml", 2, 30, "x", "m")]
    error = PolicyLoadError(given)
    assert [(p.file, p.line, p.col, p.code, p.message) for p in error.problems] == [
        ("a.yaml", 2, 30, "x", "m"), ("a.yaml", 9, 5, "x", "m"), ("a.yaml", 9, 5, "x", "n"),
        ("a.yaml", 9, 5, "y", "m"), ("a.yaml", 10, 1, "x", "m"), ("b.yaml", 1, 1, "x", "m")]
    assert str(error).splitlines() == [str(p) for p in error.problems]


def test_problems_of_several_files_are_sorted_numerically(tmp_path: Path) -> None:
    resource = textwrap.dedent("""\
        resources:
          - id: {id}
            resource: https://mcp.example.test/{id}
            match: {{path_prefix: /{id}}}
            upstream: http://127.0.0.1:9000/mcp?tenant=a
            issuers: [corp]
        """)
    second = write(tmp_path, "b.yaml", ISSUER + "    algorithms: [ES256, none]\n" + resource.format(id="b"))
    first = write(tmp_path, "a.yaml", ISSUER.replace("id: corp", "id: other") + "    algorithms: [none]\n"
                  + resource.format(id="a"))
    problems = problems_of(second, first)
    assert [(Path(p.file).name, p.line, p.code) for p in problems] == [
        ("a.yaml", 6, "unsafe_algorithm"), ("a.yaml", 11, "invalid_value"),
        ("b.yaml", 6, "unsafe_algorithm"), ("b.yaml", 11, "invalid_value")]
    assert list(problems) == sorted(problems)


def test_one_bad_file_refuses_the_whole_policy(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", ISSUER)
    bad = write(tmp_path, "bad.yaml", "version: 1\nbogus: true\n")
    assert [p.code for p in problems_of(good, bad)] == ["unknown_key"]


def test_issuer_in_a_file_with_shape_errors_is_not_reported_unknown_elsewhere(tmp_path: Path) -> None:
    """Shape errors in the file that defines `corp` must not add a spurious unknown_issuer in
    the file that uses it: the engineer fixes the real problem first."""
    issuers = write(tmp_path, "issuers.yaml", ISSUER + "    clock_skew_seconds: '30'\n")
    resources = write(tmp_path, "resources.yaml", """\
        version: 1
        resources:
          - id: demo
            resource: https://mcp.example.test/mcp
            upstream: http://127.0.0.1:9000/mcp
            issuers: [corp]
        """)
    assert [(Path(p.file).name, p.code) for p in problems_of(issuers, resources)] == [("issuers.yaml", "wrong_type")]


def test_duplicate_ids_across_two_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two files given together (not as a directory): the same problems as the cross_file golden."""
    monkeypatch.chdir(ROOT)
    bad = Path("tests/data/policies/bad")
    problems = problems_of(bad / "cross_file" / "a.yaml", bad / "cross_file" / "b.yaml")
    errors = [line for line in (bad / "cross_file.expected").read_text().splitlines()[:-1] if ": warning: " not in line]
    assert [str(p) for p in problems] == errors


def test_first_definition_wins_in_load_order(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", ISSUER)
    b = write(tmp_path, "b.yaml", ISSUER)
    (problem,) = problems_of(b, a)
    assert (problem.file, problem.code) == (str(a), "duplicate_id")
    assert problem.message == f"issuers[0].id: issuer id 'corp' is already defined at {b}:3:5"


def test_no_files() -> None:
    (problem,) = problems_of()
    assert (problem.file, problem.code) == ("<policy>", "no_policy")


def test_empty_directory(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)
    assert problem.code == "no_policy"


# --- directories, merging, paths ----------------------------------------------------------------

def test_directory_expands_to_yaml_files_except_tests() -> None:
    directory = DATA / "dir"
    assert {p.name for p in directory.iterdir()} >= {"issuers.yaml", "resources.yaml", "resources_test.yaml",
                                                       "ignored.yml"}
    assert expand_paths([directory]) == [directory / "issuers.yaml", directory / "resources.yaml"]


def test_named_files_are_taken_as_given(tmp_path: Path) -> None:
    """A file named explicitly is read even when its name would be skipped in a directory."""
    named = write(tmp_path, "x_test.yaml", ISSUER)
    assert expand_paths([named, DATA / "dir"])[0] == named
    assert load_policy([named]).files == (str(named),)


def test_directory_policy_merges_files() -> None:
    policy = load_policy([DATA / "dir"])
    assert policy.files == (str(DATA / "dir" / "issuers.yaml"), str(DATA / "dir" / "resources.yaml"))
    assert list(policy.issuers) == ["corp"]
    assert [r.id for r in policy.resources] == ["demo"]
    assert policy.resources[0].issuers == ("corp",)


@pytest.mark.parametrize("cwd", ["root", "elsewhere"])
def test_jwks_file_is_relative_to_the_policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd: str) -> None:
    policy_dir = tmp_path / "conf" / "policies"
    policy_dir.mkdir(parents=True)
    write(policy_dir, "p.yaml", ISSUER.replace("jwks_uri: https://auth.example.test/jwks",
                                               "jwks_file: ../keys/corp.jwks.json"))
    monkeypatch.chdir(tmp_path if cwd == "root" else policy_dir)
    given = Path("conf/policies/p.yaml") if cwd == "root" else Path("p.yaml")
    jwks_file = load_policy([given]).issuers["corp"].jwks_file
    assert jwks_file is not None and Path(jwks_file).is_absolute()
    assert Path(jwks_file).resolve() == tmp_path.resolve() / "conf" / "keys" / "corp.jwks.json"


def test_absolute_jwks_file_is_kept(tmp_path: Path) -> None:
    keys = tmp_path / "elsewhere" / "corp.jwks.json"
    path = write(tmp_path, "p.yaml", ISSUER.replace("jwks_uri: https://auth.example.test/jwks", f"jwks_file: {keys}"))
    assert load_policy([path]).issuers["corp"].jwks_file == str(keys)


def test_shipped_example_jwks_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    jwks_file = load_policy(["policies"]).issuers["dev"].jwks_file
    assert jwks_file is not None and Path(jwks_file).is_absolute()
    assert Path(jwks_file).resolve() == ROOT.resolve() / ".enforcer-dev" / "jwks.json"


# --- the version hash ---------------------------------------------------------------------------

def test_version_hash_follows_the_files(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", ISSUER)
    first = load_policy([path]).version_hash
    assert len(first) == 16 and int(first, 16) >= 0
    assert load_policy([path]).version_hash == first  # deterministic
    path.write_text(ISSUER.replace("auth.example.test/jwks", "auth.example.test/keys"))
    changed = load_policy([path]).version_hash
    assert changed != first
    path.write_text(ISSUER + "# a comment is a change too\n")
    assert load_policy([path]).version_hash not in (first, changed)
    path.write_text(ISSUER)
    assert load_policy([path]).version_hash == first


def test_version_hash_covers_every_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", ISSUER)
    b = write(tmp_path, "b.yaml", "version: 1\n")
    both = load_policy([a, b]).version_hash
    assert both != load_policy([a]).version_hash
    b.write_text("version: 1\nresources: []\n")
    assert load_policy([a, b]).version_hash != both


# --- immutability --------------------------------------------------------------------------------

def _loaded() -> Policy:
    return load_policy([DATA / "good" / "full.yaml"])


@pytest.mark.parametrize(("target", "attribute", "value"), [
    (lambda p: p.issuers["corp"], "algorithms", ("HS256",)),
    (lambda p: p.issuers["corp"], "jwks_uri", "http://evil.example/jwks"),
    (lambda p: p.resources[0], "forward_token", False),
    (lambda p: p.resources[0], "rules", ()),
    (lambda p: p.resources[0].match, "path_prefix", "/"),
    (lambda p: p.resources[0].limits, "max_body_bytes", 10),
    (lambda p: p.resources[0].timeouts, "read_seconds", 1.0),
    (lambda p: p.resources[0].rules[0], "effect", "allow"),
    (lambda p: p.resources[0].rules[1], "client_ids", ("*",)),
], ids=["issuer-algorithms", "issuer-jwks_uri", "resource-forward_token", "resource-rules", "match", "limits",
        "timeouts", "rule-effect", "rule-client_ids"])
def test_models_are_frozen(target, attribute: str, value: object) -> None:  # type: ignore[no-untyped-def]
    model = target(_loaded())
    before = getattr(model, attribute)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(model, attribute, value)
    assert getattr(model, attribute) == before


def test_collections_are_tuples() -> None:
    policy = _loaded()
    rule = policy.resources[0].rules[1]
    for value in (policy.resources, policy.files, policy.resources[0].rules, policy.resources[0].issuers,
                  policy.issuers["corp"].algorithms, rule.client_ids, rule.scopes, rule.methods, rule.paths):
        assert isinstance(value, tuple)


def test_policy_record_is_frozen() -> None:
    policy = _loaded()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.version_hash = "0" * 16  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.resources = ()  # type: ignore[misc]
