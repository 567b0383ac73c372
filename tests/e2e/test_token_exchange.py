"""RFC 8693 token exchange for the upstream call (``downstream_token``; MCP-14: no token passthrough).

Against a real authorization server (npm oidc-provider, ``tests/interop/authserver.py``) on
127.0.0.1: the upstream gets a token the server issued for the downstream resource, with ``act``
naming the enforcer's client, never the caller's token; two requests with one token make one
exchange; a wider scope than the caller's is refused; both client authentications work. Failures
of the token endpoint (down, slow, not 200, not JSON) use a small token endpoint of our own, also a
real server on 127.0.0.1. Expiry and the bounded cache are checked on the exchanger itself, with a
frozen clock and an in-process transport.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from enforcer.clock import FrozenClock
from enforcer.context import Principal
from enforcer.errors import TokenExchangeFailed
from enforcer.policy.loader import PolicyLoadError, load_policy
from enforcer.policy.model import DownstreamToken
from enforcer.proxy import downstream
from enforcer.proxy.downstream import TokenExchanger
from enforcer.state import PolicyState
from tests.interop.authserver import AuthorizationServer, running_authorization_server
from tests.support import (
    RESOURCE,
    RecordingUpstream,
    free_port,
    read_body,
    serve_enforcer,
    serving,
    wait_for,
    write_policy,
)

DOWNSTREAM = "https://api.example.test/v1"
PLAIN = "http://127.0.0.1:8080/plain"
SCOPES = ["tools:read", "tools:call", "api:read", "admin"]
AGENT = {"client_id": "agent-42", "client_secret": "agent-42-secret"}
ENFORCER_SECRET = "enforcer secret/with:odd+chars"  # form-encoded before HTTP Basic (RFC 6749 2.3.1)
JWT_KEY = ECKey.generate_key("P-256", {"kid": "enforcer-1"}, private=True)
CLIENTS = [
    AGENT,
    {"client_id": "enforcer", "client_secret": ENFORCER_SECRET},
    {"client_id": "enforcer-jwt", "token_endpoint_auth_method": "private_key_jwt",
     "jwks": {"keys": [JWT_KEY.as_dict(private=False)]}},
    {"client_id": "enforcer-wide", "client_secret": "wide", "exchange_widen_scope": True},
    {"client_id": "enforcer-quiet", "client_secret": "quiet", "exchange_widen_scope": True,
     "exchange_hide_scope": True},
]
RULES = """
      - id: agents-read
        effect: allow
        client_ids: [agent-42]
        scopes: [tools:read]
"""


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def downstream_block(*, source: str, client_id: str = "enforcer", auth: str = "client_secret_basic",
                     credential: str = "client_secret_file: enforcer.secret", scope: str = "tools:read api:read",
                     extra: str = "") -> str:
    return f"""    downstream_token:
      {source}
      client_id: {client_id}
      client_auth: {auth}
      {credential}
      resource: {DOWNSTREAM}
      scope: "{scope}"
{extra}"""


def policy(issuer: str, upstream: str, block: str) -> str:
    return f"""version: 1
issuers:
  - id: as
    issuer: {issuer}
    discovery: true
    algorithms: [ES256]
resources:
  - id: api
    resource: {RESOURCE}
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/mcp
    issuers: [as]
{block}    rules:{RULES}
  - id: plain
    resource: {PLAIN}
    match: {{path_prefix: /plain}}
    upstream: {upstream}/plain
    issuers: [as]
    rules:{RULES}"""


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthorizationServer]:
    with running_authorization_server(tmp_path_factory.mktemp("authserver"), resources=[RESOURCE, PLAIN, DOWNSTREAM],
                                      clients=CLIENTS, scopes=SCOPES, exchange_token_ttl=300) as server:
        yield server


@dataclass
class World:
    auth: AuthorizationServer
    upstream: RecordingUpstream
    url: str
    app: Any

    def inbound(self, scope: str = "tools:read tools:call", resource: str = RESOURCE) -> str:
        return self.auth.token(AGENT["client_id"], AGENT["client_secret"], resource=resource, scope=scope)

    def call(self, token: str, path: str = "/mcp/tools") -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"authorization": f"Bearer {token}"}, timeout=20)

    def upstream_token(self, index: int = -1) -> str:
        value = self.upstream.requests[index].header("authorization")
        assert value is not None and value.startswith("Bearer "), value
        return value.removeprefix("Bearer ")


@pytest.fixture
def world_for(auth: AuthorizationServer, tmp_path: Path) -> Iterator[Any]:
    """``world_for(block)``: an enforcer with ``block`` as the api resource's downstream_token."""
    (tmp_path / "enforcer.secret").write_text(ENFORCER_SECRET + "\n")
    for client in CLIENTS[3:]:
        (tmp_path / f"{client['client_id']}.secret").write_text(str(client["client_secret"]))
    (tmp_path / "enforcer.jwk").write_text(json.dumps(JWT_KEY.as_dict(private=True)))
    upstream = RecordingUpstream()
    stack: list[Any] = []

    def make(block: str) -> World:
        server = serving(upstream)
        upstream_server = server.__enter__()
        stack.append(server)
        enforcer = serve_enforcer(tmp_path, policy(auth.issuer, upstream_server.url, block))
        app, enforcer_server = enforcer.__enter__()
        stack.append(enforcer)
        return World(auth, upstream, enforcer_server.url, app)

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


def exchanges_since(auth: AuthorizationServer, before: int, expected: int) -> list[dict[str, Any]]:
    """The exchanges after the first ``before``, once ``expected`` of them were reported (the server's
    stdout is read by a thread), and a moment later to catch any extra one."""
    wait_for(lambda: len(auth.exchanges()) >= before + expected, f"{expected} token exchanges")
    time.sleep(0.2)
    return auth.exchanges()[before:]


def assert_refused(response: httpx.Response, world: World, fragment: str) -> None:
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "token_exchange_failed"
    assert body["reason"] == "token_exchange_failed"
    assert fragment in body["error_description"]
    assert world.upstream.requests == []


# -- against the real authorization server ---------------------------------------------------


def test_upstream_gets_the_exchanged_token_not_the_callers(world_for: Any, auth: AuthorizationServer) -> None:
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}"))
    before = len(auth.exchanges())
    inbound = world.inbound()
    response = world.call(inbound)
    assert response.status_code == 200, response.text
    sent = world.upstream_token()
    assert sent != inbound
    claims = claims_of(sent)
    assert claims["aud"] == DOWNSTREAM
    assert claims["act"] == {"sub": "enforcer"}
    assert claims["client_id"] == "enforcer"
    assert claims["sub"] == "agent-42"
    # asked for the configured scopes the caller holds (api:read it does not hold), got those
    assert claims["scope"] == "tools:read"
    assert [(e["scope"], e["jti"]) for e in exchanges_since(auth, before, 1)] == [("tools:read", claims["jti"])]
    # the identity headers still describe the caller
    assert world.upstream.requests[0].header("x-enforcer-client-id") == "agent-42"
    assert inbound not in json.dumps(world.upstream.requests[0].headers)


def test_one_exchange_for_two_requests_with_one_token(world_for: Any, auth: AuthorizationServer) -> None:
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}"))
    before = len(auth.exchanges())
    inbound = world.inbound()
    assert world.call(inbound).status_code == 200
    assert world.call(inbound).status_code == 200
    assert [e["jti"] for e in exchanges_since(auth, before, 1)] == [claims_of(world.upstream_token())["jti"]]
    assert world.upstream_token(0) == world.upstream_token(1)
    # another caller token is another exchange
    assert world.call(world.inbound(scope="tools:read")).status_code == 200
    assert len(exchanges_since(auth, before, 2)) == 2
    assert world.upstream_token(2) != world.upstream_token(0)


def test_resource_without_downstream_token_is_unchanged(world_for: Any, auth: AuthorizationServer) -> None:
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}"))
    before = len(auth.exchanges())
    response = world.call(world.inbound(resource=PLAIN), path="/plain/x")
    assert response.status_code == 200, response.text
    assert world.upstream.requests[0].header("authorization") is None
    assert exchanges_since(auth, before, 0) == []


def test_private_key_jwt(world_for: Any, auth: AuthorizationServer) -> None:
    world = world_for(downstream_block(source=f"token_endpoint: {auth.token_endpoint}", client_id="enforcer-jwt",
                                       auth="private_key_jwt", credential="private_key_file: enforcer.jwk"))
    response = world.call(world.inbound())
    assert response.status_code == 200, response.text
    claims = claims_of(world.upstream_token())
    assert (claims["aud"], claims["act"], claims["client_id"]) == (DOWNSTREAM, {"sub": "enforcer-jwt"}, "enforcer-jwt")


def test_a_wider_scope_is_refused(world_for: Any, auth: AuthorizationServer) -> None:
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}", client_id="enforcer-wide",
                                       credential="client_secret_file: enforcer-wide.secret"))
    response = world.call(world.inbound())
    assert_refused(response, world, "scope beyond")
    # the answer's scope lists what was added, never a token
    assert "admin" in response.json()["error_description"]


def test_a_wider_scope_in_the_token_only_is_refused(world_for: Any, auth: AuthorizationServer) -> None:
    """The answer omits ``scope`` (so it means "as asked"); the JWT's own claim says more."""
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}", client_id="enforcer-quiet",
                                       credential="client_secret_file: enforcer-quiet.secret"))
    assert_refused(world.call(world.inbound()), world, "scope beyond")


def test_a_refused_exchange_is_502_and_never_passes_the_token_through(world_for: Any,
                                                                     auth: AuthorizationServer) -> None:
    """The server refuses the enforcer's client (wrong secret): 502, nothing forwarded."""
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}", client_id="enforcer-wide",
                                       credential="client_secret_file: enforcer.secret"))
    assert_refused(world.call(world.inbound()), world, "refused it (HTTP 401, error=invalid_client)")


def test_authorization_server_down(world_for: Any, auth: AuthorizationServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    world = world_for(downstream_block(source=f"token_endpoint: http://127.0.0.1:{free_port()}/token"))
    inbound = world.inbound()
    with caplog.at_level(logging.INFO):
        response = world.call(inbound)
    assert_refused(response, world, "could not be reached")
    logged = [json.dumps(record.__dict__, default=str) for record in caplog.records]
    assert any("token exchange failed" in line for line in logged)
    assert not any(inbound in line or ENFORCER_SECRET in line for line in logged)


# -- token endpoint failures, with a token endpoint of our own --------------------------------


@dataclass
class TokenEndpoint:
    """A token endpoint on 127.0.0.1 answering ``body`` with ``status`` after ``delay`` seconds."""

    body: bytes = json.dumps({"access_token": "downstream-token-1", "token_type": "Bearer", "expires_in": 300,
                              "issued_token_type": downstream.ACCESS_TOKEN_TYPE, "scope": "tools:read"}).encode()
    status: int = 200
    delay: float = 0.0
    hits: int = 0
    form: bytes = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.form = await read_body(receive)
        self.hits += 1
        await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.mark.parametrize(("endpoint", "fragment"), [
    (TokenEndpoint(status=500, body=b'{"error": "server_error"}'), "refused it (HTTP 500, error=server_error)"),
    (TokenEndpoint(body=b"<html>oops</html>"), "not a JSON object"),
    (TokenEndpoint(body=b'{"token_type": "Bearer"}'), "no usable access_token"),
    (TokenEndpoint(body=b'{"access_token": "a\\r\\nx-injected: 1", "token_type": "Bearer"}'), "no usable access_token"),
    (TokenEndpoint(body=b'{"access_token": "abc", "token_type": "DPoP"}'), "not a Bearer token"),
    (TokenEndpoint(delay=1.5), "did not answer within 0.5 s"),
], ids=["http-500", "not-json", "no-token", "header-injection", "not-bearer", "timeout"])
def test_token_endpoint_failures(world_for: Any, endpoint: TokenEndpoint, fragment: str) -> None:
    with serving(endpoint) as server:
        world = world_for(downstream_block(source=f"token_endpoint: {server.url}/token",
                                           extra="      timeout_seconds: 0.5\n"))
        assert_refused(world.call(world.inbound()), world, fragment)


def test_concurrent_requests_share_one_exchange(world_for: Any) -> None:
    endpoint = TokenEndpoint(delay=0.5)
    with serving(endpoint) as server:
        world = world_for(downstream_block(source=f"token_endpoint: {server.url}/token"))
        inbound = world.inbound()
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: world.call(inbound).status_code, range(6)))
        assert statuses == [200] * 6
        assert endpoint.hits == 1
        assert {r.header("authorization") for r in world.upstream.requests} == {"Bearer downstream-token-1"}
        form = dict(httpx.QueryParams(endpoint.form.decode()))
        assert form["grant_type"] == downstream.GRANT_TYPE
        assert form["subject_token"] == inbound
        assert form["subject_token_type"] == downstream.ACCESS_TOKEN_TYPE
        assert (form["resource"], form["scope"]) == (DOWNSTREAM, "tools:read")


# -- load errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("block", "expected"), [
    (downstream_block(source="issuer: https://as.example.test", extra="      token_endpoint: https://as.example.test/t\n"),
     "token_endpoint_source"),
    (downstream_block(source="token_endpoint: http://as.example.test/token"), "insecure_url"),
    (downstream_block(source="issuer: https://as.example.test", credential="client_secret_file: missing.secret"),
     "cannot read the client secret file"),
    (downstream_block(source="issuer: https://as.example.test", auth="private_key_jwt",
                      credential="private_key_file: enforcer.secret"), "the private key is not JSON"),
    (downstream_block(source="issuer: https://as.example.test", credential=""),
     "client_auth client_secret_basic needs client_secret_file"),
    (downstream_block(source="issuer: https://as.example.test") + "    forward_token: true\n", "remove forward_token"),
], ids=["two-sources", "plain-http", "missing-secret", "bad-key", "no-secret", "forward-token"])
def test_load_errors(tmp_path: Path, block: str, expected: str) -> None:
    (tmp_path / "enforcer.secret").write_text("s3cret")
    path = write_policy(tmp_path, policy("https://as.example.test", "http://127.0.0.1:9", block))
    with pytest.raises(PolicyLoadError) as refused:
        load_policy([path])
    assert expected in str(refused.value)
    assert "downstream_token" in str(refused.value)


def test_credential_files_are_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "enforcer.secret").write_text("s3cret")
    path = write_policy(tmp_path / "sub", policy("https://as.example.test", "http://127.0.0.1:9",
                                                 downstream_block(source="issuer: https://as.example.test")))
    loaded = load_policy([path])
    config = loaded.resources[0].downstream_token
    assert config is not None and config.client_secret_file == str((tmp_path / "sub" / "enforcer.secret").resolve())


# -- the exchanger: expiry, cache bound, reloads ---------------------------------------------


def principal(exp: float, scopes: str = "tools:read") -> Principal:
    return Principal(issuer_id="as", iss="https://as.example.test", sub="alice", client_id="agent-42",
                     scopes=frozenset(scopes.split()), jti="j", exp=int(exp), token_hash="0" * 16)


def exchanger_with(endpoint: TokenEndpoint, clock: FrozenClock, tmp_path: Path) -> TokenExchanger:
    (tmp_path / "secret").write_text("s3cret")
    config = DownstreamToken(token_endpoint="http://127.0.0.1/token", client_id="enforcer",
                             client_secret_file=str(tmp_path / "secret"), resource=DOWNSTREAM)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint))
    return TokenExchanger("api", config, http, clock)


def test_cached_until_shortly_before_the_earliest_expiry(tmp_path: Path) -> None:
    clock = FrozenClock(1_800_000_000)
    endpoint = TokenEndpoint()  # expires_in 300; the token is opaque

    async def scenario() -> None:
        exchanger = exchanger_with(endpoint, clock, tmp_path)
        long_lived = principal(clock.now + 3600)
        await exchanger.token_for("inbound-a", long_lived)
        clock.advance(300 - downstream.EXPIRY_MARGIN_SECONDS - 1)
        await exchanger.token_for("inbound-a", long_lived)
        assert endpoint.hits == 1
        clock.advance(2)  # now within the margin of expires_in
        await exchanger.token_for("inbound-a", long_lived)
        assert endpoint.hits == 2
        # the inbound token expires first: that bounds the cache
        short_lived = principal(clock.now + 100)
        await exchanger.token_for("inbound-b", short_lived)
        clock.advance(100 - downstream.EXPIRY_MARGIN_SECONDS)
        await exchanger.token_for("inbound-b", short_lived)
        assert endpoint.hits == 4

    asyncio.run(scenario())


def test_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downstream, "CACHE_ENTRIES", 2)
    clock = FrozenClock(1_800_000_000)
    endpoint = TokenEndpoint()

    async def scenario() -> None:
        exchanger = exchanger_with(endpoint, clock, tmp_path)
        who = principal(clock.now + 3600)
        for token in ("t1", "t2", "t3", "t3", "t1"):
            await exchanger.token_for(token, who)
        assert endpoint.hits == 4  # t1 was dropped when t3 came
        assert len(exchanger._cache) == 2

    asyncio.run(scenario())


def test_scope_never_widens_and_is_asked_within_the_callers(tmp_path: Path) -> None:
    clock = FrozenClock(1_800_000_000)
    endpoint = TokenEndpoint()

    async def scenario() -> None:
        exchanger = exchanger_with(endpoint, clock, tmp_path)
        exchanger.scopes = ("tools:read", "api:read")
        # the caller holds neither scope: nothing is asked
        with pytest.raises(TokenExchangeFailed, match="none of the scopes"):
            await exchanger.token_for("t1", principal(clock.now + 3600, scopes="tools:call"))
        assert endpoint.hits == 0
        # granted tools:read, but the caller holds only api:read
        with pytest.raises(TokenExchangeFailed, match=r"scope beyond the access token's \(tools:read\)"):
            await exchanger.token_for("t2", principal(clock.now + 3600, scopes="api:read"))

    asyncio.run(scenario())


def test_reload_keeps_an_unchanged_exchanger(world_for: Any, auth: AuthorizationServer, tmp_path: Path) -> None:
    world = world_for(downstream_block(source=f"issuer: {auth.issuer}"))
    state = world.app.state
    same = load_policy(state.policy.files)
    assert PolicyState.build(same, world.app._services, previous=state).exchangers["api"] is state.exchangers["api"]
    changed = write_policy(tmp_path, Path(state.policy.files[0]).read_text().replace("api:read", "admin"))
    rebuilt = PolicyState.build(load_policy([changed]), world.app._services, previous=state)
    assert rebuilt.exchangers["api"] is not state.exchangers["api"]
