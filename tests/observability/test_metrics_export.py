"""``/metrics`` as a scraper sees it, from a real ``enforcer serve`` with one process or several.

A mix of allowed, refused and failing requests goes through the proxy; the scrape must
show every documented family with exactly its label names, counts equal to what was sent
(summed over workers), zeros for known label values before any request, and no subject,
client id, path or address anywhere. With ``--workers 2`` a killed worker makes the
admin listener unready and its in-flight gauge stops counting. (How a stop drains, with one
process and with several, is in tests/deploy/test_runtime.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from enforcer.errors import Reason
from enforcer.observability.metrics import CODE_CLASSES, SHADOW_RESULTS, STAGES
from enforcer.policy.loader import load_policy
from tests.observability.scrape import Scrape, check_families
from tests.support import (
    ISSUER,
    RESOURCE,
    HeldWorld,
    SigningKey,
    claims,
    free_port,
    held_world,
    sign,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
ENFORCER = [sys.executable, "-m", "enforcer.cli"]
DOWN_RESOURCE = "http://127.0.0.1:8080/down"
#: strings a label must never carry: the subjects, client ids, path and addresses sent below
SECRETS = ("zq7", "127.0.0.1", "203.0.113")
ALLOW_REASONS = (Reason.ALLOWED, Reason.UPSTREAM_UNAVAILABLE, Reason.UPSTREAM_TIMEOUT, Reason.CLIENT_DISCONNECTED)


def _policy(jwks_url: str, upstream_url: str) -> str:
    return f"""version: 1
issuers:
  - id: test
    issuer: {ISSUER}
    jwks_uri: {jwks_url}
    algorithms: [ES256]
resources:
  - id: demo
    resource: {RESOURCE}
    match: {{path_prefix: /mcp}}
    upstream: {upstream_url}/mcp
    issuers: [test]
    scopes_supported: [tools:read, tools:call]
    rules:
      - id: agents-read
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:read]
  - id: down
    resource: {DOWN_RESOURCE}
    match: {{path_prefix: /down}}
    upstream: http://127.0.0.1:{free_port()}/down
    issuers: [test]
    rules:
      - id: anyone
        effect: allow
        client_ids: ["*"]
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[HeldWorld]:
    """A JWKS endpoint, an upstream that holds ``/mcp/slow`` until released, and the policy file."""
    with held_world(tmp_path / "policy.yaml", _policy) as world:
        yield world


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    base: str
    admin: str
    log: Path

    def scrape(self) -> Scrape:
        response = httpx.get(f"{self.admin}/metrics", timeout=5)
        assert response.status_code == 200
        return Scrape.parse(response.text)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=45)


@contextmanager
def enforcer(stack: HeldWorld, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    """``enforcer serve`` in a subprocess, ready; output to a file (a full pipe would stall the workers)."""
    port, admin_port = free_port(), free_port()
    log = tmp_path / f"enforcer-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | (env or {})
    with open(log, "wb") as output:
        process = subprocess.Popen([*ENFORCER, "serve", "--policy", str(stack.policy), "--port", str(port),
                                    "--admin-port", str(admin_port), "--log-level", "warning", *args],
                                   cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)
    running = Running(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", log)
    try:
        _wait_ready(running)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(running: Running) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert running.process.poll() is None, running.log.read_text()
        try:
            if httpx.get(f"{running.admin}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("enforcer did not become ready")


# -- the traffic ------------------------------------------------------------------------


def _mix(key: SigningKey) -> list[tuple[str, dict[str, str], int, tuple[str, str, str]]]:
    """(path, headers, status, (resource, decision, reason)) for one round of requests."""
    def bearer(**overrides: str) -> dict[str, str]:
        token = sign(key, claims(**{"sub": "sub-zq7", "client_id": "agent-zq7", **overrides}))
        return {"authorization": f"Bearer {token}", "x-forwarded-for": "203.0.113.77"}

    return [
        ("/mcp/tools-zq7", bearer(), 200, ("demo", "allow", "allowed")),
        ("/mcp/tools-zq7", bearer(), 200, ("demo", "allow", "allowed")),
        ("/mcp/tools-zq7", {}, 401, ("demo", "deny", "missing_token")),
        ("/mcp/tools-zq7", {"authorization": "Bearer zq7.zq7.zq7"}, 401, ("demo", "deny", "invalid_token")),
        ("/mcp/tools-zq7", bearer(client_id="robot-zq7"), 403, ("demo", "deny", "no_matching_rule")),
        ("/mcp/tools-zq7", bearer(scope="tools:call"), 403, ("demo", "deny", "insufficient_scope")),
        ("/down/tools-zq7", bearer(aud=DOWN_RESOURCE), 502, ("down", "allow", "upstream_unavailable")),
        ("/elsewhere-zq7", {}, 404, ("none", "deny", "no_route")),
    ]


def _send(base: str, requests: list[tuple[str, dict[str, str], int, tuple[str, str, str]]]) -> None:
    """Each request on a new connection, eight at a time, so that every worker gets some."""
    def one(request: tuple[str, dict[str, str], int, tuple[str, str, str]]) -> None:
        path, headers, status, _ = request
        response = httpx.get(base + path, headers=headers, timeout=10)
        assert response.status_code == status, (path, response.text)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, requests))


# -- what the scrape must show ----------------------------------------------------------


def _check_preinitialised(scrape: Scrape, version_hash: str) -> None:
    for resource in ("demo", "down"):
        for reason in Reason:
            if reason is not Reason.ALLOWED:
                assert scrape.value("enforcer_requests_total", resource=resource, decision="deny", reason=reason) == 0
        for reason in ALLOW_REASONS:
            assert scrape.value("enforcer_requests_total", resource=resource, decision="allow", reason=reason) == 0
        assert scrape.value("enforcer_request_duration_seconds_count", resource=resource) == 0
        for code_class in CODE_CLASSES:
            assert scrape.value("enforcer_upstream_responses_total", resource=resource, code_class=code_class) == 0
        for result in SHADOW_RESULTS:
            assert scrape.value("enforcer_shadow_decisions_total", resource=resource, result=result) == 0
    for stage in STAGES:
        assert scrape.value("enforcer_stage_duration_seconds_count", stage=stage) == 0
    assert scrape.value("enforcer_jwks_fetch_total", issuer="test", result="failure") == 0
    assert scrape.value("enforcer_jwks_fetch_total", issuer="test", result="success") >= 1
    assert scrape.value("enforcer_jwks_keys", issuer="test") == 1
    for result in ("success", "error"):
        assert scrape.value("enforcer_policy_reload_total", result=result) == 0
    assert scrape.value("enforcer_policy_info", version_hash=version_hash) == 1
    assert scrape.value("enforcer_inflight_requests") == 0
    assert scrape.value("enforcer_replay_cache_errors_total") == 0


def _check_counts(scrape: Scrape, sent: list[tuple[str, dict[str, str], int, tuple[str, str, str]]]) -> None:
    expected: dict[tuple[str, str, str], int] = {}
    for *_, labels in sent:
        expected[labels] = expected.get(labels, 0) + 1
    counted = {(dict(k)["resource"], dict(k)["decision"], dict(k)["reason"]): v
               for k, v in scrape.matching("enforcer_requests_total").items() if v}
    assert counted == expected
    per_resource = {resource: sum(n for (r, _, _), n in expected.items() if r == resource) for resource in
                    ("demo", "down", "none")}
    for resource, n in per_resource.items():
        assert scrape.value("enforcer_request_duration_seconds_count", resource=resource) == n
    allowed = expected[("demo", "allow", "allowed")]
    assert {dict(k)["code_class"]: v for k, v in scrape.matching("enforcer_upstream_responses_total").items()
            if v} == {"2xx": allowed}
    verified = sum(n for (r, _, reason), n in expected.items()
                   if reason in ("allowed", "no_matching_rule", "insufficient_scope", "upstream_unavailable"))
    forwarded = allowed + expected[("down", "allow", "upstream_unavailable")]
    assert scrape.value("enforcer_stage_duration_seconds_count", stage="token") == verified
    assert scrape.value("enforcer_stage_duration_seconds_count", stage="policy") == verified
    assert scrape.value("enforcer_stage_duration_seconds_count", stage="upstream") == forwarded
    assert scrape.value("enforcer_stage_duration_seconds_count", stage="signature") == 0
    assert scrape.value("enforcer_inflight_requests") == 0


def _check_no_identity(scrape: Scrape) -> None:
    for value in scrape.label_values():
        assert "/" not in value and "@" not in value, value
    for secret in SECRETS:
        assert secret not in scrape.text, f"{secret!r} appears in /metrics"


# -- one process ------------------------------------------------------------------------


@pytest.mark.parametrize("in_files", [False, True], ids=["in-memory", "PROMETHEUS_MULTIPROC_DIR"])
def test_single_process_exports_every_family_with_exact_counts(stack: HeldWorld, tmp_path: Path,
                                                                in_files: bool) -> None:
    """One process, its values in memory or (when the operator sets the directory) in files."""
    version_hash = load_policy([stack.policy]).version_hash
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)} if in_files else {}
    with enforcer(stack, tmp_path, env=env) as running:
        before = running.scrape()
        check_families(before)
        _check_preinitialised(before, version_hash)
        sent = _mix(stack.key) * 3
        _send(running.base, sent)
        after = running.scrape()
        check_families(after)
        _check_counts(after, sent)
        _check_no_identity(after)
        assert after.value("enforcer_jwks_age_seconds", issuer="test") >= 0
        assert running.stop() == 0, running.log.read_text()
    assert bool(list(tmp_path.glob("counter_*.db"))) is in_files


# -- several workers --------------------------------------------------------------------


def _stale_counter(directory: Path) -> None:
    """A value file left by an earlier run: it must not be added to this run's counts."""
    directory.mkdir()
    stale = MmapedDict(str(directory / "counter_1.db"))
    stale.write_value(mmap_key("enforcer_requests", "enforcer_requests_total", ["resource", "decision", "reason"],
                               ["demo", "allow", "allowed"], "stale"), 1000.0, 0.0)
    stale.close()


def _inflight_by_pid(directory: Path) -> dict[int, float]:
    """Each living worker's in-flight gauge, read from its value file."""
    found = {}
    for path in directory.glob("gauge_livesum_*.db"):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[0] == "enforcer_inflight_requests":
                found[int(path.stem.rsplit("_", 1)[1])] = value
    return found


def _hold_one(base: str, key: SigningKey) -> threading.Thread:
    """A request that stays in flight until the upstream is released (or its worker dies)."""
    token = sign(key, claims(client_id="agent-zq7"))

    def run() -> None:
        try:
            httpx.get(f"{base}/mcp/slow", headers={"authorization": f"Bearer {token}"}, timeout=30)
        except httpx.TransportError:
            pass  # its worker was killed

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_two_workers_sum_counts_and_a_killed_worker_stops_counting(stack: HeldWorld, tmp_path: Path) -> None:
    version_hash = load_policy([stack.policy]).version_hash
    values_dir = tmp_path / "prometheus"
    _stale_counter(values_dir)
    with enforcer(stack, tmp_path, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(values_dir)}) as running:
        workers = httpx.get(f"{running.admin}/readyz").json()["workers"]
        assert [w["ready"] for w in workers] == [True, True]
        before = running.scrape()
        check_families(before)
        _check_preinitialised(before, version_hash)
        sent = _mix(stack.key) * 6
        _send(running.base, sent)
        after = running.scrape()
        check_families(after)
        _check_counts(after, sent)
        _check_no_identity(after)

        _hold_one(running.base, stack.key)
        wait_for(lambda: running.scrape().value("enforcer_inflight_requests") == 1, "the request in flight")
        busy = next(pid for pid, value in _inflight_by_pid(values_dir).items() if value == 1)
        assert busy in {w["pid"] for w in workers}
        os.kill(busy, signal.SIGKILL)
        wait_for(lambda: httpx.get(f"{running.admin}/readyz").status_code == 503, "readyz to fail")
        ready = httpx.get(f"{running.admin}/readyz").json()
        assert {w["pid"]: w["alive"] for w in ready["workers"]}[busy] is False
        assert httpx.get(f"{running.admin}/healthz").status_code == 503
        dead = running.scrape()
        assert dead.value("enforcer_inflight_requests") == 0  # the dead worker's gauge no longer counts
        assert busy not in _inflight_by_pid(values_dir)
        _check_counts(dead, sent)  # its counters still do
        assert dead.value("enforcer_policy_info", version_hash=version_hash) == 1  # the living worker's
        assert running.stop() == 0, running.log.read_text()


def test_workers_refuse_a_memory_nonce_cache_and_a_shared_audit_file(stack: HeldWorld, tmp_path: Path) -> None:
    """Each worker would keep its own nonces, so one signed request could be replayed to another;
    and each would append to, rotate and chain one audit file on its own."""
    ports = ["--port", str(free_port()), "--admin-port", str(free_port())]
    nonces = subprocess.run([*ENFORCER, "serve", "--policy", "policies/example.yaml", "--workers", "2", *ports],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert nonces.returncode == 2
    assert "demo-signed require signature nonces" in nonces.stderr
    audit = subprocess.run([*ENFORCER, "serve", "--policy", str(stack.policy), "--workers", "2", *ports,
                            "--audit-file", str(tmp_path / "audit.log")], capture_output=True, text=True, cwd=ROOT,
                           timeout=30)
    assert audit.returncode == 2
    assert "the same audit file" in audit.stderr


_POLICY_SWAP = """
import sys
from enforcer.observability.exposition import exposition
from enforcer.observability.metrics import Metrics
metrics = Metrics()
metrics.set_policy("aaa")
metrics.set_policy("bbb")
sys.stdout.write(exposition(metrics.registry).decode())
"""


@pytest.mark.parametrize("multiprocess", [False, True])
def test_a_new_policy_version_replaces_the_old_one(tmp_path: Path, multiprocess: bool) -> None:
    """One process drops the old series; in multiprocess mode (where a series cannot be removed
    from the value file, and clear() only warns) the old one is set to 0."""
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-W", "error", "-c", _POLICY_SWAP], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    info = Scrape.parse(result.stdout).matching("enforcer_policy_info")
    series = {dict(labels)["version_hash"]: value for labels, value in info.items()}
    assert series == ({"aaa": 0, "bbb": 1} if multiprocess else {"bbb": 1})
    assert bool(list(tmp_path.glob("gauge_livemax_*.db"))) is multiprocess  # where the values were kept
