"""Issuer keys against a live JWKS endpoint, and the admin listener that reports on them.

Rotation needs no restart (an unknown ``kid`` refetches, at most once per
``jwks_refetch_interval_seconds``, 1 s in these policies); a JWKS endpoint that fails
after the first fetch leaves the last good keys in service (stale-if-error) and the
failure visible in ``/readyz``; one that is down from the start keeps the enforcer
unready and every token refused, until it recovers. DESIGN.md sections 3 and 4.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from enforcer.admin import create_admin_app
from enforcer.app import EnforcerApp
from tests.conftest import Stack, start_stack
from tests.support import (
    JWKSEndpoint,
    ServerThread,
    SigningKey,
    basic_policy,
    claims,
    jwks,
    serve_enforcer,
    serving,
    sign,
)

REFETCH_INTERVAL = 1.0  # jwks_refetch_interval_seconds in basic_policy


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from start_stack(tmp_path)


@pytest.fixture
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with admin_client(stack.app) as client:
        yield client


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, httpx.Client]]:
    """One stack whose keys never change, with its admin listener, for the admin tests."""
    for stack in start_stack(tmp_path_factory.mktemp("steady")):
        with admin_client(stack.app) as client:
            yield stack, client


class admin_client:  # noqa: N801 - used like a function
    """The admin listener of ``app``, served on its own port, and a client for it."""

    def __init__(self, app: EnforcerApp) -> None:
        self.serving = serving(create_admin_app(app))

    def __enter__(self) -> httpx.Client:
        server: ServerThread = self.serving.__enter__()
        self.client = httpx.Client(base_url=server.url, timeout=10)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.serving.__exit__(*exc)


def get(stack_url: str | Stack, key: SigningKey, **claim_overrides: Any) -> httpx.Response:
    url = stack_url.url if isinstance(stack_url, Stack) else stack_url
    token = sign(key, claims(**claim_overrides))
    return httpx.get(f"{url}/mcp/tools", headers={"authorization": f"Bearer {token}"}, timeout=10)


def wait_for_refetch_window(app: EnforcerApp) -> None:
    """Sleep until an unknown kid may trigger a refetch again."""
    keys = app.keys["test"]
    assert keys.last_attempt is not None
    remaining = keys.last_attempt + REFETCH_INTERVAL + 0.05 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# -- rotation ------------------------------------------------------------------------------------


def test_new_key_with_new_kid_verifies_without_restart(stack: Stack) -> None:
    assert get(stack, stack.key).status_code == 200
    new_key = SigningKey.generate("ES256", kid="k2")
    stack.jwks.document = jwks(stack.key, new_key)
    wait_for_refetch_window(stack.app)
    fetches = stack.jwks.fetches
    response = get(stack, new_key)
    assert response.status_code == 200, response.text
    assert stack.jwks.fetches == fetches + 1  # the unknown kid caused exactly one refetch
    assert get(stack, stack.key).status_code == 200  # the old key is still published
    assert stack.jwks.fetches == fetches + 1


def test_rotation_to_another_algorithm(stack: Stack) -> None:
    new_key = SigningKey.generate("PS256", kid="ps-1")
    stack.jwks.document = jwks(new_key)
    wait_for_refetch_window(stack.app)
    response = get(stack, new_key)
    assert response.status_code == 200, response.text


def test_retired_key_stops_verifying_after_the_refetch(stack: Stack) -> None:
    old_token = sign(stack.key, claims())
    headers = {"authorization": f"Bearer {old_token}"}
    assert stack.client.get("/mcp/tools", headers=headers).status_code == 200  # now also cached
    new_key = SigningKey.generate("ES256", kid="k2")
    stack.jwks.document = jwks(new_key)
    wait_for_refetch_window(stack.app)
    assert get(stack, new_key).status_code == 200
    assert_invalid_token(stack.client.get("/mcp/tools", headers=headers))
    assert_invalid_token(get(stack, stack.key))


def test_unknown_kid_refetches_at_most_once_per_interval(stack: Stack) -> None:
    ghost = SigningKey.generate("ES256", kid="ghost")  # never published
    wait_for_refetch_window(stack.app)
    fetches = stack.jwks.fetches
    assert_invalid_token(get(stack, ghost))
    assert stack.jwks.fetches == fetches + 1
    for index in range(5):
        assert_invalid_token(get(stack, SigningKey.generate("ES256", kid=f"ghost-{index}")))
    assert stack.jwks.fetches == fetches + 1  # a flood of unknown kids does not flood the issuer
    assert get(stack, stack.key).status_code == 200


def test_key_published_during_the_quiet_interval_is_found_after_it(stack: Stack) -> None:
    wait_for_refetch_window(stack.app)
    ghost = SigningKey.generate("ES256", kid="late")
    assert_invalid_token(get(stack, ghost))  # refetch: not published yet
    stack.jwks.document = jwks(stack.key, ghost)
    assert_invalid_token(get(stack, ghost))  # inside the interval: no refetch
    wait_for_refetch_window(stack.app)
    assert get(stack, ghost).status_code == 200


# -- the JWKS endpoint fails ---------------------------------------------------------------------


def test_stale_if_error_keeps_known_keys_and_reports_the_failure(stack: Stack, admin: httpx.Client) -> None:
    assert get(stack, stack.key).status_code == 200
    ready = admin.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["issuers"]["test"]["last_error"] is None

    stack.jwks.status = 500
    wait_for_refetch_window(stack.app)
    fetches = stack.jwks.fetches
    assert_invalid_token(get(stack, SigningKey.generate("ES256", kid="ghost")))  # refetch, which fails
    assert stack.jwks.fetches == fetches + 1

    response = get(stack, stack.key)  # a new token with the known kid
    assert response.status_code == 200, response.text
    ready = admin.get("/readyz")
    assert ready.status_code == 200
    detail = ready.json()
    assert detail["ready"] is True
    issuer = detail["issuers"]["test"]
    assert issuer["ready"] is True and issuer["keys"] == 1
    assert "500" in issuer["last_error"]


@pytest.fixture
def down_from_start(tmp_path: Path) -> Iterator[tuple[JWKSEndpoint, SigningKey, EnforcerApp, str]]:
    key = SigningKey.generate("ES256", kid="k1")
    endpoint = JWKSEndpoint(document=jwks(key), status=500)
    with serving(endpoint) as jwks_server:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream="http://127.0.0.1:9/mcp")
        with serve_enforcer(tmp_path, text) as (app, server):
            yield endpoint, key, app, server.url


def test_jwks_down_from_the_start_is_unready_and_refuses_tokens(
        down_from_start: tuple[JWKSEndpoint, SigningKey, EnforcerApp, str]) -> None:
    endpoint, key, app, url = down_from_start
    with admin_client(app) as admin:
        assert admin.get("/healthz").status_code == 200
        ready = admin.get("/readyz")
        assert ready.status_code == 503
        detail = ready.json()
        assert detail["ready"] is False
        assert detail["issuers"]["test"]["ready"] is False
        assert detail["issuers"]["test"]["keys"] == 0
        assert "500" in detail["issuers"]["test"]["last_error"]
        response = get(url, key)
        assert_invalid_token(response)
        assert key.kid not in response.text

        endpoint.status = 200  # the issuer recovers: the background refresher picks the keys up
        assert wait_until(lambda: admin.get("/readyz").status_code == 200, 5)
        assert admin.get("/readyz").json()["issuers"]["test"]["last_error"] is None
        assert get(url, key).status_code == 502  # verified and allowed; nothing listens upstream


# -- admin listener ------------------------------------------------------------------------------


def test_healthz(steady: tuple[Stack, httpx.Client]) -> None:
    _, admin = steady
    response = admin.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_keys_are_loaded(steady: tuple[Stack, httpx.Client]) -> None:
    stack, admin = steady
    response = admin.get("/readyz")
    assert response.status_code == 200
    detail = response.json()
    assert detail["ready"] is True
    assert detail["policy"] == stack.app.policy.version_hash
    assert detail["issuers"]["test"]["keys"] == 1
    assert detail["issuers"]["test"]["source"].endswith("/jwks")


def samples(admin: httpx.Client, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = admin.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def test_metrics_count_requests_by_resource_decision_and_reason(steady: tuple[Stack, httpx.Client]) -> None:
    stack, admin = steady
    response = admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "enforcer_requests_total" in response.text
    allowed = labels(resource="demo", decision="allow", reason="allowed")
    missing = labels(resource="demo", decision="deny", reason="missing_token")
    no_route = labels(resource="none", decision="deny", reason="no_route")
    before = samples(admin, "enforcer_requests_total")
    assert allowed in before and missing in before  # series exist before the first request

    assert get(stack, stack.key).status_code == 200
    assert get(stack, stack.key).status_code == 200
    assert stack.client.get("/mcp/tools").status_code == 401
    assert stack.client.get("/elsewhere").status_code == 404
    expected = {allowed: before[allowed] + 2, missing: before[missing] + 1, no_route: before.get(no_route, 0) + 1}

    def counted() -> dict[tuple[tuple[str, str], ...], float]:
        now = samples(admin, "enforcer_requests_total")
        return {series: now.get(series, 0) for series in expected}

    assert wait_until(lambda: counted() == expected, 3), counted()
    assert samples(admin, "enforcer_jwks_keys") == {labels(issuer="test"): 1.0}
    text = admin.get("/metrics").text
    for private in ("alice", "agent-42", "/mcp/tools", "/elsewhere", "127.0.0.1"):  # no such labels
        assert private not in text, private
