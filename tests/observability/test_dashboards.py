"""The shipped Grafana dashboard and Prometheus rules only query what the enforcer exports.

Metric names and label names in every expression are checked against a scrape of a real
enforcer (with an audit sink, so every family has series), the rules must pass
``promtool check rules``, and every alert carries a severity and says what happened and
what it means.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from enforcer.admin import create_admin_app
from enforcer.app import EnforcerApp
from enforcer.observability.audit import AuditLog
from enforcer.policy.loader import load_policy
from tests.observability.scrape import FAMILIES, Scrape, family_of
from tests.support import JWKSEndpoint, RecordingUpstream, SigningKey, basic_policy, jwks, serving, write_policy

DEPLOY = Path(__file__).resolve().parents[2] / "charts" / "enforcer" / "files"  # deploy/observability links here
DASHBOARD = DEPLOY / "grafana-dashboard.json"
RULES = DEPLOY / "prometheus-rules.yaml"
METRIC = re.compile(r"\benforcer_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(enforcer_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
#: what the alerts must cover, by name
REQUIRED_ALERTS = {
    "EnforcerJWKSFetchFailing", "EnforcerJWKSNoKeys", "EnforcerJWKSStale", "EnforcerDenySpike",
    "EnforcerAuditRecordsDropped", "EnforcerAuditSinkFailing", "EnforcerUpstream5xx", "EnforcerReplayCacheErrors",
    "EnforcerPolicyReloadFailed",
}


class _MemorySink:
    name = "memory"
    batch_size = 100

    async def write(self, lines: list[bytes]) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Each sample name a real enforcer exports, with the label names it carries."""
    key = SigningKey.generate("ES256", kid="k1")
    directory = tmp_path_factory.mktemp("dashboards")
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(RecordingUpstream()) as upstream:
        text = basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream.url}/mcp")
        app = EnforcerApp(load_policy([write_policy(directory, text)]), audit=AuditLog([_MemorySink()]))
        with serving(app, lifespan="on"), serving(create_admin_app(app), lifespan="off") as admin:
            scrape = Scrape.parse(httpx.get(f"{admin.url}/metrics").text)
    names: dict[str, set[str]] = {}
    for name, labels, _ in scrape.samples:
        names.setdefault(name, set()).update(labels)
    yield names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return panels


def _dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    expressions = [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(variable["definition"])
    return expressions


def _alerts() -> list[dict[str, Any]]:
    document = YAML(typ="safe").load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _check_expression(expression: str, exported: dict[str, set[str]]) -> None:
    """Every metric is exported; every label it is filtered or grouped by exists on it."""
    metrics = set(METRIC.findall(expression))
    assert metrics, f"no enforcer metric in {expression!r}"
    for metric in metrics:
        assert metric in exported, f"{metric} (in {expression!r}) is not exported"
    for metric, matchers in SELECTOR.findall(expression):
        for label in MATCHER.findall(matchers):
            assert label in exported[metric], f"{metric} has no label {label!r} ({expression!r})"
    known = set().union(*(exported[m] for m in metrics))
    for grouping in GROUPING.findall(expression):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            assert label in known, f"no metric in {expression!r} has the label {label!r}"


def test_dashboard_queries_only_exported_metrics_and_labels(exported: dict[str, set[str]]) -> None:
    expressions = _dashboard_expressions(_dashboard())
    for expression in expressions:
        _check_expression(expression.replace("$__rate_interval", "5m"), exported)
    used = {family_of(metric) for expression in expressions for metric in METRIC.findall(expression)}
    assert used >= set(FAMILIES), f"families without a panel: {sorted(set(FAMILIES) - used)}"


def test_dashboard_is_a_grafana_model_on_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert any(v["name"] == "datasource" and v["type"] == "datasource" and v["query"] == "prometheus"
               for v in dashboard["templating"]["list"])
    panels = _panels(dashboard)
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["datasource"]["uid"] == "${datasource}"
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]


def test_alert_rules_query_only_exported_metrics_and_explain_themselves(exported: dict[str, set[str]]) -> None:
    alerts = _alerts()
    assert {alert["alert"] for alert in alerts} >= REQUIRED_ALERTS
    for alert in alerts:
        _check_expression(alert["expr"], exported)
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert len(alert["annotations"]["description"].split()) >= 10, alert["alert"]


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package 'prometheus'; .ci/run installs it)"
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout
