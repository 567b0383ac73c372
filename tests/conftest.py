"""Fixtures: a full stack (JWKS endpoint, upstream, enforcer) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from enforcer.app import EnforcerApp
from enforcer.policy.loader import load_policy
from tests.support import (
    JWKSEndpoint,
    RecordingUpstream,
    ServerThread,
    SigningKey,
    basic_policy,
    jwks,
    serving,
    write_policy,
)

pytest_plugins = ["tests.redis_support"]  # redis_url, redis_server: a private redis-server


@dataclass
class Stack:
    """A running enforcer in front of a recording upstream, trusting ``key`` via a JWKS URL."""

    key: SigningKey
    jwks: JWKSEndpoint
    jwks_server: ServerThread
    upstream: RecordingUpstream
    upstream_server: ServerThread
    app: EnforcerApp
    enforcer: ServerThread
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.enforcer.url


def start_stack(tmp_path: Path, *, rules: str | None = None, extra_resource: str = "",
                key: SigningKey | None = None) -> Iterator[Stack]:
    key = key or SigningKey.generate("ES256", kid="k1")
    endpoint = JWKSEndpoint(document=jwks(key))
    upstream = RecordingUpstream()
    with serving(endpoint) as jwks_server, serving(upstream) as upstream_server:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"{upstream_server.url}/mcp",
                            rules=rules, extra_resource=extra_resource)
        app = EnforcerApp(load_policy([write_policy(tmp_path, text)]))
        with serving(app, lifespan="on") as enforcer, httpx.Client(base_url=enforcer.url, timeout=10) as client:
            yield Stack(key, endpoint, jwks_server, upstream, upstream_server, app, enforcer, client)


def reset(stack: Stack) -> Stack:
    """A module-scoped stack made ready for the next test: nothing recorded, the default upstream."""
    stack.upstream.requests.clear()
    stack.upstream.handler = None
    return stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from start_stack(tmp_path)
