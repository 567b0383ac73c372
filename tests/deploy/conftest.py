"""Fixtures for the Helm chart tests: a real helm binary and rendered scenarios.

helm comes from ``$ENFORCER_HELM``, else ``.tools/bin/helm``, else ``tools/get-helm`` puts it
there. When none of that works the tests fail: a chart that was never rendered is not tested.
"""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "enforcer"
SCENARIOS = {path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))}
RELEASE = "demo"
NAMESPACE = "enforcer"


def _runs(helm: Path) -> bool:
    try:
        done = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.startswith(("v3.", "v4."))


@pytest.fixture(scope="session")
def helm() -> Path:
    given = os.environ.get("ENFORCER_HELM")
    if given:
        if not _runs(Path(given)):
            pytest.fail(f"ENFORCER_HELM={given} is not a working helm 3 or 4")
        return Path(given)
    local = REPO / ".tools" / "bin" / "helm"
    if _runs(local):
        return local
    done = subprocess.run([str(REPO / "tools" / "get-helm"), str(local.parent)], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0 or not _runs(local):
        pytest.fail(f"no helm: tools/get-helm failed (exit {done.returncode}): {done.stderr.strip()}")
    return local


def load_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a rendered manifest stream."""
    return [doc for doc in YAML(typ="safe", pure=True).load_all(io.StringIO(text)) if doc]


@dataclass
class Rendered:
    """The objects `helm template` produced for one set of values."""

    text: str
    objects: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.objects = load_all(self.text)

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((obj["kind"], obj["metadata"]["name"]) for obj in self.objects)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [obj for obj in self.of(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = [c for c in self.pod_spec["containers"] if c["name"] == "enforcer"]
        return container

    @property
    def args(self) -> list[str]:
        return self.container["args"]

    def env(self, name: str) -> dict[str, Any] | None:
        found = [var for var in self.container.get("env", []) if var["name"] == name]
        assert len(found) <= 1, f"{name} set twice"
        return found[0] if found else None


class Chart:
    """Runs helm against the chart; scenario renders are cached for the session."""

    def __init__(self, helm: Path) -> None:
        self.helm = helm
        self._scenarios: dict[str, Rendered] = {}

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.helm), *map(str, args)], capture_output=True, text=True, timeout=120)

    def template_command(self, values: list[Path], sets: tuple[str, ...] = ()) -> list[str | Path]:
        command: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
        for path in values:
            command += ["--values", path]
        for item in sets:
            command += ["--set", item]
        return command

    def render(self, *values: Path, sets: tuple[str, ...] = ()) -> Rendered:
        done = self.run(*self.template_command(list(values), sets))
        assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
        return Rendered(done.stdout)

    def scenario(self, name: str) -> Rendered:
        if name not in self._scenarios:
            self._scenarios[name] = self.render(SCENARIOS[name])
        return self._scenarios[name]


@pytest.fixture(scope="session")
def chart(helm: Path) -> Chart:
    return Chart(helm)
