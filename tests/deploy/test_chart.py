"""The Helm chart renders valid, secure Kubernetes objects for every ci/ scenario.

Each scenario is linted with ``helm lint --strict``, rendered once, validated against the
Kubernetes schemas of the oldest version we target and of the newest one kubernetes-validate
bundles, and checked object by object: secure pod defaults, the arguments the enforcer gets,
the policy it loads, the grace period, the optional objects and the ``helm test`` pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from kubernetes_validate.utils import latest_version
from ruamel.yaml import YAML

from tests.deploy.conftest import CHART, NAMESPACE, SCENARIOS, Chart, Rendered

BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ["1.30.0", latest_version()]
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")
RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
POD_TMP = "/tmp"  # noqa: S108 - a path inside the pod: an emptyDir of its own
POD_METRICS = f"{POD_TMP}/metrics"
OPTIONAL_KINDS = ["HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"]

DEFAULT_OBJECTS = [
    ("ConfigMap", "demo-enforcer-policy"),
    ("Deployment", "demo-enforcer"),
    ("Pod", "demo-enforcer-test-readyz"),
    ("Service", "demo-enforcer"),
    ("ServiceAccount", "demo-enforcer"),
]
FULL_OBJECTS = [
    ("ConfigMap", "enforcer-full-dashboard"),
    ("ConfigMap", "enforcer-full-policy"),
    ("Deployment", "enforcer-full"),
    ("HorizontalPodAutoscaler", "enforcer-full"),
    ("NetworkPolicy", "enforcer-full"),
    ("Pod", "enforcer-full-test-readyz"),
    ("PodDisruptionBudget", "enforcer-full"),
    ("PrometheusRule", "enforcer-full"),
    ("Service", "enforcer-full"),
    ("ServiceAccount", "enforcer-full"),
    ("ServiceMonitor", "enforcer-full"),
]


def flag(args: list[str], name: str) -> str:
    """The value after ``name`` in an argument list (the flag must occur exactly once)."""
    assert args.count(name) == 1, f"{name} occurs {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def pod_specs(rendered: Rendered) -> list[dict[str, Any]]:
    """Every pod spec in the release: the Deployment's template and the test pod."""
    return [rendered.pod_spec, *(pod["spec"] for pod in rendered.of("Pod"))]


def write_values(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(values))  # JSON is YAML, without YAML 1.1's guesses
    return path


# --- lint and schema validation ----------------------------------------------------------------


def test_the_ci_scenarios_exist() -> None:
    assert {"default", "full", "existing-configmap", "redis-url"} <= set(SCENARIOS)


def test_app_version_is_the_package_version() -> None:
    chart_yaml = YAML(typ="safe", pure=True).load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]
    assert chart_yaml["appVersion"] == project["version"]
    assert (chart_yaml["apiVersion"], chart_yaml["type"]) == ("v2", "application")


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_helm_lint_strict(chart: Chart, scenario: str | None) -> None:
    extra = [] if scenario is None else ["--values", SCENARIOS[scenario]]
    done = chart.run("lint", "--strict", CHART, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rendered_objects_match_the_kubernetes_schemas(chart: Chart, scenario: str, version: str) -> None:
    rendered = chart.scenario(scenario)
    done = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, "-"],
                          input=rendered.text, capture_output=True, text=True, timeout=300)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    assert "ERROR" not in output, output
    for line in filter(None, output.splitlines()):
        assert any(f"kind {kind} " in line for kind in CRD_KINDS), f"unexpected validator output: {line}"


# --- object lists --------------------------------------------------------------------------------


def test_default_objects(chart: Chart) -> None:
    assert chart.scenario("default").kinds() == DEFAULT_OBJECTS


def test_full_objects(chart: Chart) -> None:
    assert chart.scenario("full").kinds() == FULL_OBJECTS


@pytest.mark.parametrize("kind", OPTIONAL_KINDS)
def test_optional_objects_are_off_by_default(chart: Chart, kind: str) -> None:
    assert chart.scenario("default").of(kind) == []
    assert len(chart.scenario("full").of(kind)) == 1


def test_dashboard_configmap_only_when_enabled(chart: Chart) -> None:
    names = [cm["metadata"]["name"] for cm in chart.scenario("default").of("ConfigMap")]
    assert names == ["demo-enforcer-policy"]
    chart.scenario("full").one("ConfigMap", "enforcer-full-dashboard")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_is_labelled_and_namespaced(chart: Chart, scenario: str) -> None:
    for obj in chart.scenario(scenario).objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "enforcer-0.1.0"
        assert obj["metadata"]["namespace"] == NAMESPACE


# --- secure defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pods_run_restricted(chart: Chart, scenario: str) -> None:
    rendered = chart.scenario(scenario)
    for spec in pod_specs(rendered):
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["privileged"] is False
            assert context["runAsNonRoot"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert set(container["resources"]) == {"requests", "limits"}
    accounts = rendered.of("ServiceAccount")
    assert [account["automountServiceAccountToken"] for account in accounts] == [False]
    assert rendered.pod_spec["serviceAccountName"] == accounts[0]["metadata"]["name"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_writable_paths_are_emptydirs(chart: Chart, scenario: str) -> None:
    rendered = chart.scenario(scenario)
    assert rendered.env("TMPDIR") == {"name": "TMPDIR", "value": POD_TMP}
    assert rendered.env("PROMETHEUS_MULTIPROC_DIR") == {"name": "PROMETHEUS_MULTIPROC_DIR", "value": POD_METRICS}
    mounts = {mount["mountPath"]: mount["name"] for mount in rendered.container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in rendered.pod_spec["volumes"]}
    for path in (POD_TMP, POD_METRICS):
        assert "sizeLimit" in volumes[mounts[path]]["emptyDir"]


def test_probes_use_the_admin_port(chart: Chart) -> None:
    default, full = chart.scenario("default"), chart.scenario("full")
    ports = {port["name"]: port["containerPort"] for port in default.container["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert default.container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert default.container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert "startupProbe" not in default.container
    assert full.container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_recreate_strategy_has_no_rolling_parameters(chart: Chart) -> None:
    assert chart.scenario("default").deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    rendered = chart.render(sets=("strategy.type=Recreate",))
    assert rendered.deployment["spec"]["strategy"] == {"type": "Recreate"}


# --- arguments and environment -------------------------------------------------------------------


def test_default_arguments(chart: Chart) -> None:
    rendered = chart.scenario("default")
    assert "command" not in rendered.container  # the image's entrypoint is `enforcer serve`
    assert rendered.args == [
        "--policy", "/etc/enforcer/policies", "--host", "0.0.0.0", "--port", "8080",
        "--admin-host", "0.0.0.0", "--admin-port", "9090", "--workers", "1",
        "--shutdown-grace-seconds", "25", "--log-level", "info",
        "--audit-overflow", "block", "--audit-queue-size", "10000", "--audit-drain-seconds", "30",
    ]
    assert rendered.container["image"] == "ghcr.io/enforcer/enforcer:0.1.0"
    assert rendered.env("ENFORCER_REPLAY_STORE") is None


def test_full_arguments(chart: Chart) -> None:
    rendered = chart.scenario("full")
    args = rendered.args
    assert flag(args, "--workers") == "4"
    assert flag(args, "--log-level") == "warning"
    assert flag(args, "--shutdown-grace-seconds") == "30"
    assert "--no-audit-stdout" in args
    assert flag(args, "--audit-webhook") == "https://audit.example.com/ingest"
    assert flag(args, "--audit-overflow") == "drop"
    assert flag(args, "--audit-queue-size") == "50000"
    assert flag(args, "--audit-drain-seconds") == "12.5"
    assert args[-2:] == ["--audit-webhook-batch", "250"]  # extraArgs come last and win
    for refused in ("--audit-file", "--audit-chain", "--replay-store"):
        assert refused not in args
    assert rendered.container["image"] == (
        "ghcr.io/enforcer/enforcer:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")


def test_redis_url_from_a_secret(chart: Chart) -> None:
    assert chart.scenario("full").env("ENFORCER_REPLAY_STORE") == {
        "name": "ENFORCER_REPLAY_STORE",
        "valueFrom": {"secretKeyRef": {"name": "enforcer-redis", "key": "redis-url"}},
    }


def test_redis_url_as_a_value(chart: Chart) -> None:
    assert chart.scenario("redis-url").env("ENFORCER_REPLAY_STORE") == {
        "name": "ENFORCER_REPLAY_STORE", "value": "redis://redis-master.redis.svc:6379/0"}


def test_extra_env_is_appended(chart: Chart) -> None:
    names = [var["name"] for var in chart.scenario("full").container["env"]]
    assert names == ["TMPDIR", "PROMETHEUS_MULTIPROC_DIR", "ENFORCER_REPLAY_STORE", "OTEL_EXPORTER_OTLP_ENDPOINT",
                     "POD_NAME"]


# --- shutdown ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_grace_period_covers_prestop_grace_and_audit_drain(chart: Chart, scenario: str) -> None:
    rendered = chart.scenario(scenario)
    command = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    needed = (int(command[1]) + int(flag(rendered.args, "--shutdown-grace-seconds"))
              + float(flag(rendered.args, "--audit-drain-seconds")))
    assert rendered.pod_spec["terminationGracePeriodSeconds"] >= needed


def test_grace_period_is_computed_by_default(chart: Chart) -> None:
    assert chart.scenario("default").pod_spec["terminationGracePeriodSeconds"] == 5 + 25 + 30 + 5
    rendered = chart.render(sets=("audit.drainSeconds=2.5", "shutdown.graceSeconds=10",
                                  "shutdown.preStopSleepSeconds=0"))
    assert rendered.pod_spec["terminationGracePeriodSeconds"] == 0 + 10 + 3 + 5
    assert "lifecycle" not in rendered.container
    assert chart.scenario("full").pod_spec["terminationGracePeriodSeconds"] == 90  # explicit and long enough


# --- policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [name for name in SCENARIOS if name != "existing-configmap"])
def test_policy_configmap_passes_policy_validate(chart: Chart, scenario: str, tmp_path: Path) -> None:
    rendered = chart.scenario(scenario)
    configmap = rendered.one("ConfigMap", f"{rendered.deployment['metadata']['name']}-policy")
    assert configmap["data"], "no policy files"
    for name, text in configmap["data"].items():
        assert name.endswith(".yaml")
        (tmp_path / name).write_text(text)
    done = subprocess.run([str(BIN / "enforcer"), "policy", "validate", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ok: {len(configmap['data'])} file(s)")
    volume = {v["name"]: v for v in rendered.pod_spec["volumes"]}["policies"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]


def test_policy_change_rolls_the_pods(chart: Chart, tmp_path: Path) -> None:
    def checksum(rendered: Rendered) -> str:
        return rendered.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]

    default = chart.scenario("default")
    policy = default.one("ConfigMap")["data"]["default.yaml"]
    changed = write_values(tmp_path, {"policy": {"default": policy.replace("agents-with-scope", "agents-scoped")}})
    own = write_values(tmp_path, {"policy": {"files": {"mine.yaml": policy}}}, "own.yaml")
    assert checksum(chart.render()) == checksum(default)
    assert checksum(chart.render(sets=("logLevel=debug",))) == checksum(default)
    assert checksum(chart.render(changed)) != checksum(default)
    assert checksum(chart.render(own)) != checksum(default)


NONCE_POLICY = """version: 1
issuers:
  - {id: main, issuer: "https://auth.example.com", discovery: true}
resources:
  - id: signed-api
    resource: https://api.example.com/api
    match: {path_prefix: /api}
    upstream: http://api:8000/api
    issuers: [main]
    signatures: {required: true, require_nonce: true, keys: {from_token_cnf: true}}
    rules:
      - {id: anyone, effect: allow, client_ids: ["*"], scopes: [api]}
"""


@pytest.mark.parametrize(("sets", "refused"), [
    ((), False),                                                      # one pod, one worker: memory is enough
    (("replicaCount=2",), True),                                      # two pods would each accept a nonce
    (("workers=2",), True),                                           # the process refuses it too: fail at render
    (("autoscaling.enabled=true", "autoscaling.minReplicas=1"), True),  # may scale out later
    (("replicaCount=2", "replayStore.url=redis://redis:6379/0"), False),
    (("replicaCount=2", "replayStore.existingSecret=redis", "replayStore.existingSecretKey=url"), False),
])
def test_MS_26_shared_nonces_need_redis_before_anything_is_deployed(chart: Chart, tmp_path: Path,
                                                                     sets: tuple[str, ...], refused: bool) -> None:
    values = write_values(tmp_path, {"policy": {"files": {"signed.yaml": NONCE_POLICY}}})
    done = chart.run(*chart.template_command([values], sets))
    if refused:
        assert done.returncode != 0
        assert "resource signed-api requires signature nonces" in done.stderr
        assert "replayStore" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        written = tmp_path / "policies"
        written.mkdir()
        (written / "signed.yaml").write_text(Rendered(done.stdout).one("ConfigMap")["data"]["signed.yaml"])
        check = subprocess.run([str(BIN / "enforcer"), "policy", "validate", str(written)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr


def test_without_roll_on_change_the_pods_reload_the_policy_in_place(chart: Chart) -> None:
    annotations = chart.render(sets=("policy.rollOnChange=false",)).deployment["spec"]["template"]["metadata"]
    assert "checksum/policy" not in (annotations.get("annotations") or {})
    notes = chart.run("install", "demo", str(CHART), "--dry-run=client", "--set", "policy.rollOnChange=false")
    assert notes.returncode == 0, notes.stderr
    assert "reload a changed policy in place" in notes.stdout


def test_own_policy_files_replace_the_placeholder(chart: Chart) -> None:
    data = chart.scenario("full").one("ConfigMap", "enforcer-full-policy")["data"]
    assert sorted(data) == ["api.yaml", "mcp.yaml"]


def test_existing_configmap_and_keys_secret(chart: Chart) -> None:
    rendered = chart.scenario("existing-configmap")
    assert rendered.of("ConfigMap") == []
    volumes = {volume["name"]: volume for volume in rendered.pod_spec["volumes"]}
    assert volumes["policies"]["configMap"] == {"name": "enforcer-policies"}
    assert volumes["keys"]["secret"] == {"secretName": "enforcer-keys", "defaultMode": 0o440}
    mounts = {mount["name"]: mount for mount in rendered.container["volumeMounts"]}
    assert mounts["keys"] == {"name": "keys", "mountPath": "/etc/enforcer/keys", "readOnly": True}
    assert mounts["policies"]["readOnly"] is True
    annotations = rendered.deployment["spec"]["template"]["metadata"].get("annotations") or {}
    assert "checksum/policy" not in annotations  # not the chart's to hash: the pods reload it in place
    assert "keys" not in {v["name"] for v in chart.scenario("default").pod_spec["volumes"]}


# --- optional objects ----------------------------------------------------------------------------


def test_prometheus_rule_carries_the_rule_file(chart: Chart) -> None:
    rule = chart.scenario("full").one("PrometheusRule")
    groups = YAML(typ="safe", pure=True).load(RULES_FILE.read_text())["groups"]
    assert rule["spec"] == {"groups": groups}
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    annotations = [r["annotations"]["summary"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert "JWKS fetches for issuer {{ $labels.issuer }} keep failing" in annotations
    templated = [line.strip() for line in RULES_FILE.read_text().splitlines() if "{{ $labels." in line]
    rendered_lines = {line.strip() for line in chart.scenario("full").text.splitlines()}
    assert templated and [line for line in templated if line not in rendered_lines] == []


def test_dashboard_configmap_holds_the_exact_json(chart: Chart) -> None:
    configmap = chart.scenario("full").one("ConfigMap", "enforcer-full-dashboard")
    assert configmap["data"] == {"enforcer.json": DASHBOARD_FILE.read_text()}
    json.loads(configmap["data"]["enforcer.json"])
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Enforcer"}


def test_service_monitor_scrapes_the_admin_port(chart: Chart) -> None:
    rendered = chart.scenario("full")
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == (
        "admin", "/metrics", "15s", "5s")
    assert {port["name"] for port in service["spec"]["ports"]} == {"http", "admin"}


def test_service_selects_the_enforcer_pods_only(chart: Chart) -> None:
    for scenario in SCENARIOS:
        rendered = chart.scenario(scenario)
        selector = rendered.one("Service")["spec"]["selector"]
        assert selector == rendered.deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= rendered.deployment["spec"]["template"]["metadata"]["labels"].items()
        for pod in rendered.of("Pod"):
            assert not selector.items() <= pod["metadata"]["labels"].items(), "the test pod is selected"


def test_autoscaler_replaces_replicas(chart: Chart) -> None:
    rendered = chart.scenario("full")
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "enforcer-full"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in rendered.deployment["spec"]
    assert chart.scenario("default").deployment["spec"]["replicas"] == 1


def test_disruption_budget_only_with_more_than_one_pod(chart: Chart) -> None:
    redis = chart.scenario("redis-url").one("PodDisruptionBudget")
    assert redis["spec"]["maxUnavailable"] == 1 and "minAvailable" not in redis["spec"]
    full = chart.scenario("full").one("PodDisruptionBudget")
    assert full["spec"]["minAvailable"] == 2
    assert full["spec"]["selector"]["matchLabels"] == chart.scenario("full").deployment["spec"]["selector"][
        "matchLabels"]
    assert chart.render(sets=("replicaCount=2", "podDisruptionBudget.enabled=false")).of("PodDisruptionBudget") == []
    assert chart.render(sets=("autoscaling.enabled=true", "autoscaling.minReplicas=1")).of("PodDisruptionBudget") == []
    assert len(chart.render(sets=("replicaCount=2",)).of("PodDisruptionBudget")) == 1


def test_network_policy(chart: Chart) -> None:
    policy = chart.scenario("full").one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    proxy, admin, test_pod = policy["ingress"]
    assert proxy["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert proxy["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert admin["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert admin["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    test_labels = chart.scenario("full").one("Pod")["metadata"]["labels"]
    assert test_pod["from"][0]["podSelector"]["matchLabels"].items() <= test_labels.items()
    dns, *rest = policy["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert [rule["ports"][0]["port"] for rule in rest] == [8000, 8080, 443, 6379, 443]


def test_network_policy_without_peers_opens_only_the_proxy_port(chart: Chart) -> None:
    rendered = chart.render(sets=("networkPolicy.enabled=true", "networkPolicy.egress.enabled=false",
                                  "testHook.enabled=false"))
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert "egress" not in policy


def test_helm_test_pod_requires_readyz(chart: Chart) -> None:
    for scenario in SCENARIOS:
        rendered = chart.scenario(scenario)
        pod = rendered.one("Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
        service = rendered.one("Service")
        admin = {port["name"]: port["port"] for port in service["spec"]["ports"]}["admin"]
        (container,) = pod["spec"]["containers"]
        assert container["command"][0] == "wget"
        assert container["command"][-1] == f"http://{service['metadata']['name']}:{admin}/readyz"
        tag = container["image"].rsplit(":", 1)[1]
        assert tag and tag != "latest"
    assert chart.render(sets=("testHook.enabled=false",)).of("Pod") == []


MCP_POLICY = """version: 1
issuers:
  - {id: main, issuer: "https://auth.example.com", discovery: true}
resources:
  - id: tools
    resource: https://mcp.example.com/mcp
    match: {path_prefix: /mcp}
    upstream: http://mcp:8000/mcp
    issuers: [main]
    MCP_KEY
    rules:
      - {id: anyone, effect: allow, client_ids: ["*"], scopes: [mcp], RULE_MCP}
"""


@pytest.mark.parametrize(("mcp_key", "rule_mcp", "sets", "refused"), [
    ("mcp: true", "", (), False),                                        # one pod: memory is enough
    ("mcp: true", "", ("replicaCount=2",), True),                        # the other pod would answer 404
    ("mcp: {filter_lists: true}", "", ("workers=2",), True),             # bind_sessions defaults to true
    ("", "mcp: {tools: [echo]}", ("replicaCount=2",), True),             # an mcp condition makes it MCP
    ("mcp: {bind_sessions: false}", "", ("replicaCount=2",), False),     # nothing shared to keep
    ("mcp: false", "", ("replicaCount=2",), False),
    ("mcp: true", "", ("replicaCount=2", "replayStore.url=redis://redis:6379/0"), False),
])
def test_MCP_22_session_bindings_across_pods_need_redis(chart: Chart, tmp_path: Path, mcp_key: str, rule_mcp: str,
                                                        sets: tuple[str, ...], refused: bool) -> None:
    policy = MCP_POLICY.replace("MCP_KEY", mcp_key).replace(", RULE_MCP", f", {rule_mcp}" if rule_mcp else "")
    values = write_values(tmp_path, {"policy": {"files": {"mcp.yaml": policy}}})
    done = chart.run(*chart.template_command([values], sets))
    if refused:
        assert done.returncode != 0
        assert "MCP resource tools binds sessions" in done.stderr and "replayStore" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
