"""RFC 9728 protected-resource metadata, served by the enforcer itself (STANDARDS.md section 4).

The document lives at the path-inserted well-known URL of each resource (PR-07), also at
the root form when only one resource is served (PR-10), needs no token (PR-13), and its
``resource`` is the configured identifier whatever Host the request named (PR-09).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from enforcer.metadata import metadata_url
from tests.conftest import Stack, reset, start_stack
from tests.support import ISSUER, RESOURCE, SigningKey, jwks, serve_enforcer

WELL_KNOWN = "/.well-known/oauth-protected-resource"
#: RFC 9728 section 2 members; anything else in a document is a mistake.
RFC9728_MEMBERS = {
    "resource", "authorization_servers", "jwks_uri", "scopes_supported", "bearer_methods_supported",
    "resource_signing_alg_values_supported", "resource_name", "resource_documentation", "resource_policy_uri",
    "resource_tos_uri", "tls_client_certificate_bound_access_tokens", "authorization_details_types_supported",
    "dpop_signing_alg_values_supported", "dpop_bound_access_tokens_required", "signed_metadata",
}
EXPECTED = {
    "resource": RESOURCE,
    "authorization_servers": [ISSUER],
    "scopes_supported": ["tools:read", "tools:call"],
    "bearer_methods_supported": ["header"],
    "resource_name": "demo",
}


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("metadata"))


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    return reset(shared_stack)


def assert_document(response: httpx.Response, expected: dict[str, object]) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"  # PR-06
    document = response.json()
    assert isinstance(document, dict)
    assert set(document) <= RFC9728_MEMBERS, set(document) - RFC9728_MEMBERS
    for name, value in expected.items():
        assert document.get(name) == value, name
    for name in set(RFC9728_MEMBERS) - set(expected):
        assert name not in document or name.startswith(("dpop_", "resource_signing")), name


# -- one resource -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    pytest.param(f"{WELL_KNOWN}/mcp", id="PR-07-path-inserted"),
    pytest.param(WELL_KNOWN, id="PR-10-root-form-with-one-resource"),
])
def test_PR_06_metadata_document(stack: Stack, path: str) -> None:
    response = stack.client.get(path)
    assert_document(response, EXPECTED)
    assert "offline_access" not in response.json()["scopes_supported"]  # PR-05
    assert stack.upstream.requests == []


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-token"),
    pytest.param({"authorization": "Bearer not-a-token"}, id="garbage-token"),
    pytest.param({"authorization": "Basic YTpi"}, id="other-scheme"),
])
def test_PR_13_metadata_needs_no_token(stack: Stack, headers: dict[str, str]) -> None:
    assert_document(stack.client.get(f"{WELL_KNOWN}/mcp", headers=headers), EXPECTED)


@pytest.mark.parametrize("headers", [
    pytest.param({"host": "evil.example"}, id="host"),
    pytest.param({"host": "evil.example", "x-forwarded-host": "evil.example", "x-forwarded-proto": "https",
                  "forwarded": "host=evil.example;proto=https"}, id="forwarding-headers"),
])
def test_PR_09_resource_ignores_the_host_header(stack: Stack, headers: dict[str, str]) -> None:
    assert_document(stack.client.get(f"{WELL_KNOWN}/mcp", headers=headers), EXPECTED)


def test_head_answers_without_a_body(stack: Stack) -> None:
    response = stack.client.head(f"{WELL_KNOWN}/mcp")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b""


def test_PR_09_challenge_points_at_a_document_for_the_same_resource(stack: Stack) -> None:
    challenge = stack.client.get("/mcp").headers["www-authenticate"]
    url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    assert url == metadata_url(RESOURCE)
    parts = urlsplit(url)  # the configured origin is not where the test server listens: keep the path only
    response = stack.client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
    assert_document(response, EXPECTED)
    assert response.json()["resource"] == RESOURCE


@pytest.mark.parametrize("path", [f"{WELL_KNOWN}/mcp/", f"{WELL_KNOWN}/mcpx", f"{WELL_KNOWN}/other",
                                  f"{WELL_KNOWN}x"])
def test_other_well_known_paths_are_not_metadata(stack: Stack, path: str) -> None:
    response = stack.client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "no_route"


# -- PR-08 vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("resource", "url"), [
    ("https://resource.example.com", "https://resource.example.com/.well-known/oauth-protected-resource"),
    ("https://resource.example.com/", "https://resource.example.com/.well-known/oauth-protected-resource"),
    ("https://resource.example.com/resource1",
     "https://resource.example.com/.well-known/oauth-protected-resource/resource1"),
    ("https://example.com/public/mcp", "https://example.com/.well-known/oauth-protected-resource/public/mcp"),
    ("https://mcp.example.com/mcp?tenant=a", "https://mcp.example.com/.well-known/oauth-protected-resource/mcp?tenant=a"),
])
def test_PR_08_metadata_url_vectors(resource: str, url: str) -> None:
    assert metadata_url(resource) == url


# -- several resources --------------------------------------------------------------------------

MULTI = """version: 1
issuers:
  - id: first
    issuer: https://first.test
    jwks_file: keys.jwks.json
  - id: second
    issuer: https://second.test
    jwks_file: keys.jwks.json
resources:
  - id: demo
    resource: http://127.0.0.1:8080/mcp
    resource_name: Demo MCP server
    match: {path_prefix: /mcp}
    upstream: http://127.0.0.1:9/mcp
    issuers: [first, second]
    scopes_supported: [tools:read, offline_access, tools:call]
  - id: files
    resource: http://127.0.0.1:8080/files/api
    match: {path_prefix: /files}
    upstream: http://127.0.0.1:9/files
    issuers: [second]
  - id: tenant
    resource: https://tenant.example.test/tenant?t=a
    match: {path_prefix: /tenant}
    upstream: http://127.0.0.1:9/tenant
    issuers: [first]
    scopes_supported: [read]
"""


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    directory: Path = tmp_path_factory.mktemp("metadata-multi")
    (directory / "keys.jwks.json").write_text(json.dumps(jwks(SigningKey.generate("ES256", kid="m1"))))
    with serve_enforcer(directory, MULTI) as (_, server), httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(("path", "expected"), [
    pytest.param(f"{WELL_KNOWN}/mcp", {
        "resource": "http://127.0.0.1:8080/mcp",
        "authorization_servers": ["https://first.test", "https://second.test"],
        "scopes_supported": ["tools:read", "tools:call"],  # PR-05 / MCP-07: no offline_access
        "bearer_methods_supported": ["header"],
        "resource_name": "Demo MCP server",
    }, id="PR-02-PR-05-two-issuers"),
    pytest.param(f"{WELL_KNOWN}/files/api", {
        "resource": "http://127.0.0.1:8080/files/api",
        "authorization_servers": ["https://second.test"],
        "bearer_methods_supported": ["header"],
        "resource_name": "files",
    }, id="PR-07-nested-path"),
    pytest.param(f"{WELL_KNOWN}/tenant?t=a", {
        "resource": "https://tenant.example.test/tenant?t=a",
        "authorization_servers": ["https://first.test"],
        "scopes_supported": ["read"],
        "bearer_methods_supported": ["header"],
        "resource_name": "tenant",
    }, id="PR-07-query"),
])
def test_each_resource_has_its_own_document(multi: httpx.Client, path: str, expected: dict[str, object]) -> None:
    response = multi.get(path)
    assert_document(response, expected)
    if "scopes_supported" not in expected:
        assert response.json().get("scopes_supported", []) == []


@pytest.mark.parametrize("path", [
    pytest.param(WELL_KNOWN, id="PR-10-root-form-is-ambiguous-with-several-resources"),
    pytest.param(f"{WELL_KNOWN}/tenant", id="PR-07-query-is-part-of-the-identifier"),
    pytest.param(f"{WELL_KNOWN}/files", id="prefix-is-not-the-resource-path"),
])
def test_no_document_where_no_resource_is_identified(multi: httpx.Client, path: str) -> None:
    response = multi.get(path)
    assert response.status_code == 404
    assert "resource" not in response.json()


def test_same_path_on_two_hosts_serves_each_host_its_own_document(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PR-09: identifiers that differ only in host share a metadata path; the Host (as in
    routing, via match.host) picks the document, and no host gets the other's."""
    import httpx

    from tests.support import RecordingUpstream, serve_enforcer, serving

    with serving(RecordingUpstream()) as upstream:
        text = f"""version: 1
issuers:
  - id: test
    issuer: https://issuer.test
    jwks_uri: http://127.0.0.1:9/jwks
resources:
  - id: a
    resource: https://a.example.test/mcp
    match: {{path_prefix: /mcp, host: a.example.test}}
    upstream: {upstream.url}/mcp
    issuers: [test]
  - id: b
    resource: https://b.example.test/mcp
    match: {{path_prefix: /mcp, host: b.example.test}}
    upstream: {upstream.url}/mcp
    issuers: [test]
"""
        with serve_enforcer(tmp_path, text) as (_, enforcer):
            url = f"{enforcer.url}/.well-known/oauth-protected-resource/mcp"
            for host in ("a.example.test", "b.example.test"):
                document = httpx.get(url, headers={"host": host}).json()
                assert document["resource"] == f"https://{host}/mcp"
            assert httpx.get(url, headers={"host": "c.example.test"}).status_code == 404
