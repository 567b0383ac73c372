"""Policy hot reload: a changed file is in force within 2 s, a broken one never is, the last
good policy keeps serving, requests in flight finish on the policy they started with, unchanged
issuers keep their keys, SIGHUP reloads, and a steady stream of requests sees no failure while
the file is rewritten 20 times.

The policies differ in one rule: ``A`` lets agents reach ``/mcp/a`` only, ``B`` ``/mcp/b`` only,
so every answer says which policy decided it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from enforcer.app import EnforcerApp
from enforcer.policy.loader import load_policy
from tests.observability.helpers import enforcer_process
from tests.support import (
    HeldWorld,
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    held_world,
    jwks,
    serving,
    sign,
    wait_for,
)

RELOAD_SECONDS = 2.0  # the promise: a changed policy file is in force this soon
BROKEN = {
    "unknown_key": "version: 1\nissuers: []\nresources: []\nsurprise: true\n",
    "yaml_syntax": "version: 1\nresources: [\n",
    "wrong_type": "version: '1'\n",
}


def rules_allowing(path: str) -> str:
    return f"""
      - id: allow{path.replace('/', '-')}
        effect: allow
        client_ids: ["agent-*"]
        paths: ["{path}"]
"""


def policy_text(jwks_url: str, upstream_url: str, path: str, **extra: str) -> str:
    return basic_policy(jwks_line=f"jwks_uri: {jwks_url}", upstream=f"{upstream_url}/mcp",
                        rules=rules_allowing(path), **extra)


def write(path: Path, text: str) -> None:
    """Replace the file in one step, as editors and ConfigMap updates do."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


@dataclass
class InProcess:
    world: HeldWorld
    app: EnforcerApp
    url: str
    texts: dict[str, str]  # policy name -> YAML

    def status(self, path: str, token: str | None = None) -> int:
        token = token or sign(self.world.key, claims())
        return httpx.get(f"{self.url}{path}", headers={"authorization": f"Bearer {token}"}, timeout=10).status_code

    def switch_to(self, name: str) -> str:
        write(self.world.policy, self.texts[name])
        expected = load_policy([self.world.policy]).version_hash
        wait_for(lambda: self.app.policy.version_hash == expected, f"policy {name} in force", RELOAD_SECONDS)
        return expected


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    texts: dict[str, str] = {}

    def first(jwks_url: str, upstream_url: str) -> str:
        texts.update(A=policy_text(jwks_url, upstream_url, "/mcp/a"), B=policy_text(jwks_url, upstream_url, "/mcp/b"),
                     slow=policy_text(jwks_url, upstream_url, "/mcp/slow"),
                     other_algorithms=policy_text(jwks_url, upstream_url, "/mcp/a").replace(
                         "algorithms: [ES256, RS256, PS256, EdDSA]", "algorithms: [ES256]"))
        return texts["slow"]

    with held_world(tmp_path / "policies" / "policy.yaml", first) as world:
        app = EnforcerApp(load_policy([world.policy]), policy_paths=(str(world.policy.parent),))
        with serving(app) as server:
            yield InProcess(world, app, server.url, texts)


def test_a_changed_policy_file_is_in_force_within_two_seconds(in_process: InProcess) -> None:
    assert in_process.status("/mcp/a") == 403
    in_process.switch_to("A")
    assert (in_process.status("/mcp/a"), in_process.status("/mcp/b")) == (200, 403)
    in_process.switch_to("B")
    assert (in_process.status("/mcp/a"), in_process.status("/mcp/b")) == (403, 200)
    assert in_process.app.metrics.policy_reloads.labels("success")._value.get() == 2
    ready, document = in_process.app.readiness()
    assert ready and document["policy"] == in_process.app.policy.version_hash
    assert document["policy_reload"]["degraded"] is False


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_broken_file_keeps_the_last_good_policy_and_reports_degraded(in_process: InProcess, broken: str) -> None:
    good = in_process.switch_to("A")
    write(in_process.world.policy, BROKEN[broken])
    app = in_process.app
    wait_for(lambda: app.readiness()[1]["policy_reload"]["degraded"], "the refused reload", RELOAD_SECONDS)
    ready, document = app.readiness()
    assert ready, "a refused reload does not take the process out of service"
    assert document["policy"] == good and app.policy.version_hash == good
    errors = document["policy_reload"]["errors"]
    assert errors and all(error.startswith(f"{in_process.world.policy}:") for error in errors), errors
    assert app.metrics.policy_reloads.labels("error")._value.get() >= 1
    assert (in_process.status("/mcp/a"), in_process.status("/mcp/b")) == (200, 403)  # still policy A
    in_process.switch_to("B")  # a good file clears the degraded state
    assert app.readiness()[1]["policy_reload"] == {**app.readiness()[1]["policy_reload"], "degraded": False,
                                                   "errors": []}
    assert (in_process.status("/mcp/a"), in_process.status("/mcp/b")) == (403, 200)


def test_unchanged_issuers_keep_their_keys_and_a_changed_one_refetches(in_process: InProcess) -> None:
    cache = in_process.app.keys["test"]
    in_process.switch_to("A")
    assert in_process.app.keys["test"] is cache, "a rules-only change keeps the issuer's key cache"
    assert in_process.status("/mcp/a") == 200
    in_process.switch_to("other_algorithms")
    assert in_process.app.keys["test"] is not cache, "a changed issuer gets a new cache"
    assert in_process.app.keys["test"].ready
    assert in_process.status("/mcp/a") == 200


def test_a_request_in_flight_finishes_on_the_policy_it_started_with(in_process: InProcess) -> None:
    token = sign(in_process.world.key, claims())
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(in_process.status("/mcp/slow", token)), daemon=True)
    thread.start()
    wait_for(lambda: in_process.world.received("/mcp/slow"), "the held request to reach the upstream")
    in_process.switch_to("A")  # /mcp/slow is no longer allowed
    assert in_process.status("/mcp/slow", token) == 403
    in_process.world.release.set()
    thread.join(10)
    assert results == [200]


def test_jwks_fetches_survive_a_reload(tmp_path: Path) -> None:
    """Counted at the JWKS endpoint itself: a reload that leaves the issuer alone fetches nothing."""
    key = SigningKey.generate("ES256", kid="k1")
    endpoint = JWKSEndpoint(document=jwks(key))
    with serving(endpoint) as issuer, serving(RecordingUpstream()) as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(f"{issuer.url}/jwks", upstream.url, "/mcp/a"))
        app = EnforcerApp(load_policy([policy]), policy_paths=(str(policy),))
        with serving(app):
            fetched = endpoint.fetches
            write(policy, policy_text(f"{issuer.url}/jwks", upstream.url, "/mcp/b"))
            expected = load_policy([policy]).version_hash
            wait_for(lambda: app.policy.version_hash == expected, "the reload", RELOAD_SECONDS)
            assert endpoint.fetches == fetched


# -- the real process: SIGHUP, and a reload under load --------------------------------------------------


@dataclass
class Files:
    world: HeldWorld
    texts: dict[str, str]
    served_path: Path  # what `enforcer serve --policy` names

    def hash_of(self) -> str:
        return load_policy([self.served_path]).version_hash


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    texts: dict[str, str] = {}

    def first(jwks_url: str, upstream_url: str) -> str:
        texts.update(A=policy_text(jwks_url, upstream_url, "/mcp/a"), B=policy_text(jwks_url, upstream_url, "/mcp/b"))
        return texts["A"]

    with held_world(tmp_path / "policies" / "policy.yaml", first) as world:
        yield Files(world, texts, world.policy)


def pod_policy(admin: str) -> tuple[str | None, bool]:
    """(the policy every process serves, whether a reload was refused) from ``/readyz``."""
    document = httpx.get(f"{admin}/readyz", timeout=5).json()
    degraded = document.get("policy_degraded", document.get("policy_reload", {}).get("degraded", False))
    return document["policy"], bool(degraded)


def decisions(url: str, token: str) -> tuple[int, int]:
    return tuple(httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {token}"},  # type: ignore[return-value]
                           timeout=10).status_code for path in ("/mcp/a", "/mcp/b"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_a_change_the_watcher_cannot_see(files: Files, tmp_path: Path, workers: str) -> None:
    """The served path is a symlink into another directory: writing the target there raises no
    event where the watcher looks, so only SIGHUP can bring the change in."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "policy.yaml"
    target.write_text(files.texts["A"])
    link = tmp_path / "linked" / "policy.yaml"
    link.parent.mkdir()
    link.symlink_to(target)
    token = sign(files.world.key, claims())
    with enforcer_process(link, "--workers", workers) as served:
        assert decisions(served.url, token) == (200, 403)
        write(target, files.texts["B"])
        expected = load_policy([link]).version_hash
        time.sleep(1.0)
        assert decisions(served.url, token) == (200, 403), "the watcher was not expected to see this change"
        served.process.send_signal(signal.SIGHUP)
        wait_for(lambda: pod_policy(served.admin) == (expected, False), "the SIGHUP reload", 5)
        assert decisions(served.url, token) == (403, 200)
        assert served.process.poll() is None


def test_reload_under_load_has_no_failed_request_and_follows_the_last_good_policy(files: Files) -> None:
    token = sign(files.world.key, claims(exp=int(time.time()) + 3600))
    headers = {"authorization": f"Bearer {token}"}
    stop = threading.Event()
    answers: list[int] = []
    failures: list[str] = []

    def stream(url: str) -> None:
        with httpx.Client(headers=headers, timeout=10) as client:
            while not stop.is_set():
                for path in ("/mcp/a", "/mcp/b"):
                    try:
                        status = client.get(f"{url}{path}").status_code
                    except httpx.HTTPError as exc:
                        failures.append(f"{path}: {type(exc).__name__}")
                        continue
                    answers.append(status)
                    if status not in (200, 403):
                        failures.append(f"{path}: {status}")

    with enforcer_process(files.served_path, "--workers", "2") as served, ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream, served.url) for _ in range(4)]
        last_good = "A"
        for rewrite in range(20):
            if rewrite % 2 == 0:
                last_good = "B" if last_good == "A" else "A"
                write(files.served_path, files.texts[last_good])
                expected = (files.hash_of(), False)
                wait_for(lambda expected=expected: pod_policy(served.admin) == expected,
                         f"policy {last_good} in every worker", 5)
            else:
                broken = sorted(BROKEN)[rewrite % len(BROKEN)]
                write(files.served_path, BROKEN[broken])
                wait_for(lambda: pod_policy(served.admin)[1], f"the refused reload ({broken})", 5)
            want = (200, 403) if last_good == "A" else (403, 200)
            for _ in range(5):
                assert decisions(served.url, token) == want, f"rewrite {rewrite}: policy {last_good} must decide"
        stop.set()
        for future in streams:
            future.result(timeout=30)
    assert failures == []
    assert len(answers) > 100, "the stream was expected to keep requests flowing throughout"


def test_MS_26_a_reload_cannot_open_what_a_start_refuses(files: Files) -> None:
    """Two workers with the in-memory nonce store refuse to start on a policy that requires
    nonces (each worker would accept a nonce once); a reload to such a policy is refused too."""
    nonces = files.texts["B"].replace("    rules:", """    signatures:
      required: true
      require_nonce: true
      keys: {from_token_cnf: true}
    rules:""", 1)
    token = sign(files.world.key, claims())
    with enforcer_process(files.served_path, "--workers", "2") as served:
        good = files.hash_of()
        write(files.served_path, nonces)
        wait_for(lambda: pod_policy(served.admin) == (good, True), "the refused reload", 5)
        workers = httpx.get(f"{served.admin}/readyz", timeout=5).json()["workers"]
        errors = [error for worker in workers for error in worker["policy_reload"]["errors"]]
        assert errors and all("require signature nonces" in error for error in errors), errors
        assert decisions(served.url, token) == (200, 403)  # policy A, unsigned, still in force
