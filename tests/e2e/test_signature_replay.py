"""Signature nonces across replicas (STANDARDS.md MS-26, MS-28, WH-06, BT-11), with real processes.

Each test runs two ``enforcer serve`` processes with the same policy (request signatures with
``require_nonce: true``, agent keys from a ``jwks_file``) in front of one recording upstream.
A signed request names the resource's public origin, not the listener, so one signed request
verifies at either replica: exactly what an attacker who captured it would replay at the other.

Why ``--replay-store redis://...`` exists: the default in-memory store is private to one
process, so replicas behind a load balancer do not share nonces and a request accepted by
one is accepted again by the next (``test_MS_26_memory_store_is_per_process``). With Redis
the replicas agree, and when Redis is down they refuse signed requests with 503 rather than
accept a nonce they could not record.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from enforcer.signing import HTTPSignatureAuth
from enforcer.signing import SigningKey as AgentKey
from tests.redis_support import RedisServer
from tests.support import (
    RESOURCE,
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    free_port,
    jwks,
    serving,
    sign,
)

ROOT = Path(__file__).resolve().parents[2]
ENFORCER = [sys.executable, "-m", "enforcer.cli"]
PUBLIC_ORIGIN = "http://127.0.0.1:8080"
OPEN_RESOURCE = "http://127.0.0.1:8080/open"

SIGNATURES = """    signatures:
      required: true
      components: ["@method", "@target-uri", "authorization", "content-digest"]
      require_nonce: true
      keys: {jwks_file: agents.json}"""


@contextmanager
def running_replicas(directory: Path, policy: Path, replay_store: str | None,
                     count: int = 2) -> Iterator[list[EnforcerProcess]]:
    """``count`` ``enforcer serve`` processes for ``policy``, sharing ``replay_store``."""
    processes: list[EnforcerProcess] = []
    try:
        for index in range(count):
            processes.append(EnforcerProcess(directory, f"enforcer-{index}", policy, replay_store))
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:  # all shut down at once
            process.terminate()
        for process in processes:
            process.stop()


class EnforcerProcess:
    """``enforcer serve`` as a child process; its stderr (the JSON log) goes to a file."""

    def __init__(self, directory: Path, name: str, policy: Path, replay_store: str | None) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.log_path = directory / f"{name}.stderr"
        command = [*ENFORCER, "serve", "--policy", str(policy), "--port", str(self.port),
                   "--admin-port", str(self.admin_port)]
        if replay_store is not None:
            command += ["--replay-store", replay_store]
        env = {k: v for k, v in os.environ.items() if k != "ENFORCER_REPLAY_STORE"}
        self.terminated = False
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"enforcer exited:\n{self.log()}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"enforcer did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """One SIGTERM (a second one could land after the interpreter dropped its handlers)."""
        if not self.terminated and self.process.poll() is None:
            self.process.terminate()
        self.terminated = True

    def stop(self) -> None:
        """Terminate (unless done) and wait for a clean exit: status 0."""
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        assert self.process.returncode == 0, self.log()


@dataclass
class World:
    """The issuer, the agent key, the upstream and the policy file both replicas load."""

    directory: Path
    issuer: SigningKey
    agent: AgentKey
    upstream: RecordingUpstream
    policy: Path

    def token(self, aud: str = RESOURCE) -> str:
        return sign(self.issuer, claims(aud=aud))

    def auth(self, token: str, *, nonce: bool = True) -> HTTPSignatureAuth:
        return HTTPSignatureAuth(self.agent, token=token, public_origin=PUBLIC_ORIGIN, nonce=nonce)

    def forwarded(self, marker: str) -> int:
        """How many requests carrying ``marker`` in their body reached the upstream."""
        return sum(1 for r in self.upstream.requests if marker.encode() in r.body)

    def replicas(self, replay_store: str | None, count: int = 2) -> ContextManager[list[EnforcerProcess]]:
        return running_replicas(self.directory, self.policy, replay_store, count)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    agent_jwk = ECKey.generate_key("P-256", parameters={"kid": "agent-1"}, private=True)
    (tmp_path / "agents.json").write_text(json.dumps({"keys": [agent_jwk.as_dict(private=False)]}))
    issuer = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    with ExitStack() as stack:
        jwks_server = stack.enter_context(serving(JWKSEndpoint(document=jwks(issuer))))
        upstream_server = stack.enter_context(serving(upstream))
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"{upstream_server.url}/mcp",
                            extra_resource=SIGNATURES)
        # a second resource that asks for no signatures: it never needs the nonce cache
        text += f"""
  - id: open
    resource: {OPEN_RESOURCE}
    match: {{path_prefix: /open}}
    upstream: {upstream_server.url}/open
    issuers: [test]
    rules:
      - id: allow-agents
        effect: allow
        client_ids: ["agent-*"]
"""
        policy = tmp_path / "policy.yaml"
        policy.write_text(text)
        yield World(tmp_path, issuer, AgentKey.from_jwk(agent_jwk.as_dict(private=True)), upstream, policy)


def signed_call(world: World, replica: EnforcerProcess, token: str | None = None) -> tuple[httpx.Response, str]:
    """A fresh signed JSON call (new nonce) to ``replica``, and the marker its body carries."""
    marker = f"call-{uuid.uuid4().hex}"
    response = httpx.post(f"{replica.url}/mcp", json={"marker": marker}, auth=world.auth(token or world.token()),
                          timeout=10)
    return response, marker


def resend(request: httpx.Request, replica: EnforcerProcess) -> httpx.Response:
    """Exactly the bytes and headers of ``request`` (signature, nonce, token) sent to ``replica``."""
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in ("host", "content-length")]
    return httpx.post(f"{replica.url}/mcp", content=request.content, headers=headers, timeout=10)


def nonce_of(request: httpx.Request) -> str:
    match = re.search(r';nonce="([^"]+)"', request.headers["signature-input"])
    assert match, request.headers["signature-input"]
    return match.group(1)


def signature_of(request: httpx.Request) -> str:
    match = re.search(r"=:([^:]+):", request.headers["signature"])
    assert match, request.headers["signature"]
    return match.group(1)


def assert_replayed(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body: dict[str, Any] = response.json()
    assert body["reason"] == "invalid_signature" and body["signature_failure"] == "replayed_nonce", body


def test_MS_26_WH_06_replicas_sharing_redis_refuse_a_nonce_used_at_the_other(world: World, redis_url: str) -> None:
    with world.replicas(redis_url) as (a, b):
        accepted, marker = signed_call(world, a)
        assert accepted.status_code == 200, accepted.text

        assert_replayed(resend(accepted.request, b))  # captured at A, replayed at B
        assert_replayed(resend(accepted.request, a))
        assert world.forwarded(marker) == 1  # the upstream saw it exactly once

        fresh, fresh_marker = signed_call(world, b)  # same agent, same token, new nonce
        assert fresh.status_code == 200, fresh.text
        assert_replayed(resend(fresh.request, a))
        assert world.forwarded(fresh_marker) == 1


def test_MS_26_BT_11_redis_outage_fails_closed_at_every_replica_and_recovers(world: World,
                                                                               redis_server: RedisServer) -> None:
    token = world.token()
    with world.replicas(redis_server.url) as replicas:
        before, _ = signed_call(world, replicas[0], token)
        assert before.status_code == 200, before.text

        redis_server.stop()
        refused: list[httpx.Request] = []
        for replica in replicas:
            started = time.monotonic()
            response, marker = signed_call(world, replica, token)
            assert time.monotonic() - started < 2
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            body = response.json()
            assert body["error"] == "temporarily_unavailable" and body["reason"] == "replay_cache_unavailable"
            assert str(redis_server.port) not in response.text  # the store's address is for the log only
            assert world.forwarded(marker) == 0
            refused.append(response.request)

        # what needs no nonce is not affected: a resource without signatures, and a missing nonce is
        # still the agent's error (401), not the cache's
        open_token = world.token(OPEN_RESOURCE)
        open_call = httpx.get(f"{replicas[0].url}/open/x", headers={"authorization": f"Bearer {open_token}"},
                              timeout=10)
        assert open_call.status_code == 200, open_call.text
        no_nonce = httpx.post(f"{replicas[1].url}/mcp", json={}, auth=world.auth(token, nonce=False), timeout=10)
        assert no_nonce.status_code == 401 and no_nonce.json()["signature_failure"] == "missing_nonce"

        for replica, request in zip(replicas, refused, strict=True):
            log = replica.log()
            lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            outage = [line for line in lines if line.get("message") == "replay cache unavailable"]
            assert outage, log
            assert all(line["level"] == "error" and line["store"] == redis_server.url for line in outage)
            for secret in (token, signature_of(request), nonce_of(request)):
                assert secret not in log

        redis_server.start()  # same port, empty (no persistence)
        after, marker = signed_call(world, replicas[1], token)
        assert after.status_code == 200, after.text
        # a request refused with 503 had its nonce never recorded: retried as is, it goes through, once
        retried = resend(refused[0], replicas[0])
        assert retried.status_code == 200, retried.text
        assert_replayed(resend(refused[0], replicas[1]))
        assert world.forwarded(marker) == 1


def test_MS_26_memory_store_is_per_process(world: World) -> None:
    """The default store: each process remembers only its own nonces. That is enough for one
    process, and the reason a shared Redis is needed as soon as there are replicas."""
    with world.replicas(None) as (a, b):
        accepted, marker = signed_call(world, a)
        assert accepted.status_code == 200, accepted.text
        assert_replayed(resend(accepted.request, a))  # the same process remembers it
        assert resend(accepted.request, b).status_code == 200  # another process does not
        assert world.forwarded(marker) == 2


@pytest.mark.parametrize(("store", "message"), [
    ("redis://127.0.0.1:notaport/0", "--replay-store: the replay store URL has an invalid port"),
    ("http://127.0.0.1:6379", "--replay-store: the replay store is 'memory' or a redis://, rediss:// or unix:// URL"),
])
def test_MS_26_serve_refuses_an_unusable_replay_store(world: World, store: str, message: str) -> None:
    result = subprocess.run([*ENFORCER, "serve", "--policy", str(world.policy), "--port", str(free_port()),
                             "--admin-port", str(free_port()), "--replay-store", store],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
