"""Mutual TLS end to end: certificate-bound tokens (RFC 8705), SPIFFE IDs from client
certificates in rules, RFC 9440 Client-Cert from trusted proxies only, and the TLS listener of
``enforcer serve`` (one process and ``--workers``). Real servers on 127.0.0.1; every CA and
certificate is made at test time (trustme, SPIFFE URI SANs via ``cryptography``)."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from enforcer.app import EnforcerApp
from enforcer.auth.workload import thumbprint
from enforcer.policy.loader import load_policy
from tests.support import (
    ISSUER,
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    free_port,
    jwks,
    serve_enforcer,
    serving,
    sign,
    wait_for,
)
from tests.workload_support import (
    Leaf,
    TlsFiles,
    TlsServerThread,
    client_context,
    https_client,
    spiffe_leaf,
    tls_files,
)

ROOT = Path(__file__).resolve().parents[2]
ENFORCER = [sys.executable, "-m", "enforcer.cli"]
AGENT = "spiffe://corp.example/agents/a1"
SERVICE = "spiffe://corp.example/svc/builder"

#: the TLS enforcer's policy: /mcp takes identities from certificates, /strict requires one
POLICY = """version: 1
issuers:
  - id: test
    issuer: {issuer}
    jwks_uri: {jwks}
    algorithms: [ES256]
resources:
  - id: demo
    resource: http://127.0.0.1:8080/mcp
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/mcp
    issuers: [test]
    workload_identity: {{mtls: true}}
    rules:
      - {{id: deny-untrusted, effect: deny, workloads: ["spiffe://corp.example/untrusted/*"]}}
      - {{id: agents, effect: allow, workloads: ["spiffe://corp.example/agents/*"]}}
      - {{id: self, effect: allow, workload_is_client_id: true}}
  - id: strict
    resource: http://127.0.0.1:8080/strict
    match: {{path_prefix: /strict}}
    upstream: {upstream}/strict
    issuers: [test]
    workload_identity: {{mtls: true, required: true}}
    rules:
      - {{id: anyone, effect: allow, client_ids: ["*"]}}
"""


@dataclass
class World:
    key: SigningKey
    upstream: RecordingUpstream
    server_ca: trustme.CA
    client_ca: trustme.CA
    files: TlsFiles
    directory: Path
    url: str
    policy: Path
    leaves: dict[str, Leaf]

    def client(self, leaf: str | None) -> httpx.Client:
        context = client_context(self.server_ca, self.leaves[leaf] if leaf else None, self.directory)
        return https_client(self.url, context)

    def token(self, **overrides: object) -> dict[str, str]:
        return {"authorization": f"Bearer {sign(self.key, claims(**overrides))}"}

    def bound(self, leaf: str, **overrides: object) -> dict[str, str]:
        return self.token(cnf={"x5t#S256": thumbprint(self.leaves[leaf].der)}, **overrides)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("mtls")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    files = tls_files(directory, server_ca, client_ca)
    leaves = {"agent": spiffe_leaf(client_ca, AGENT), "agent2": spiffe_leaf(client_ca, AGENT),
              "untrusted": spiffe_leaf(client_ca, "spiffe://corp.example/untrusted/x"),
              "plain": spiffe_leaf(client_ca), "service": spiffe_leaf(client_ca, SERVICE),
              "foreign": spiffe_leaf(trustme.CA(), AGENT)}
    key = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(upstream) as upstream_server:
        policy = directory / "policy.yaml"
        policy.write_text(POLICY.format(issuer=ISSUER, jwks=f"{issuer.url}/jwks", upstream=upstream_server.url))
        with TlsServerThread(EnforcerApp(load_policy([policy])), files) as enforcer:
            yield World(key, upstream, server_ca, client_ca, files, directory, enforcer.url, policy, leaves)


@pytest.fixture
def fresh(world: World) -> World:
    world.upstream.requests.clear()
    return world


def test_bound_token_with_its_certificate_is_forwarded_with_the_workload(fresh: World) -> None:
    with fresh.client("agent") as client:
        response = client.get("/mcp/tools", headers=fresh.bound("agent"))
    assert response.status_code == 200, response.text
    seen = fresh.upstream.requests[-1]
    assert seen.header("x-enforcer-workload") == AGENT
    assert seen.header("x-enforcer-sub") == "alice"


def test_bound_token_with_another_certificate_is_invalid_token(fresh: World) -> None:
    """Same CA, same SPIFFE ID, another key pair: the thumbprint is what binds."""
    with fresh.client("agent2") as client:
        response = client.get("/mcp/tools", headers=fresh.bound("agent"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "x5t#S256" in response.json()["error_description"]
    assert fresh.upstream.requests == []


def test_bound_token_without_any_certificate_is_invalid_token(tmp_path: Path) -> None:
    """Any resource, even one without workload_identity, on a listener without TLS: a token bound
    to a certificate (cnf x5t#S256) cannot be used without it."""
    key = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    leaf = spiffe_leaf(trustme.CA(), AGENT)
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(upstream) as upstream_server:
        text = basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream_server.url}/mcp")
        with serve_enforcer(tmp_path, text) as (_, enforcer):
            bound = sign(key, claims(cnf={"x5t#S256": thumbprint(leaf.der)}))
            response = httpx.get(f"{enforcer.url}/mcp/x", headers={"authorization": f"Bearer {bound}"})
            assert response.status_code == 401 and response.json()["error"] == "invalid_token"
            assert "mutual TLS" in response.json()["error_description"]
            unbound = httpx.get(f"{enforcer.url}/mcp/x", headers={"authorization": f"Bearer {sign(key, claims())}"})
            assert unbound.status_code == 200
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("leaf", [None, "foreign"])
def test_client_certificate_is_required_when_a_client_ca_is_configured(world: World, leaf: str | None) -> None:
    """No certificate, or one the client CA did not issue: the handshake fails (with TLS 1.3 the
    client learns it on its first read), nothing reaches the app or the upstream."""
    before = len(world.upstream.requests)
    with world.client(leaf) as client, pytest.raises((httpx.ConnectError, httpx.ReadError,
                                                      httpx.RemoteProtocolError)):
        client.get("/mcp/tools", headers=world.token())
    assert len(world.upstream.requests) == before


def test_spiffe_id_of_the_certificate_is_what_workload_rules_see(fresh: World) -> None:
    with fresh.client("agent") as client:
        assert client.get("/mcp/a", headers=fresh.token()).status_code == 200
    with fresh.client("untrusted") as client:
        denied = client.get("/mcp/a", headers=fresh.token())
    assert denied.status_code == 403 and denied.json()["rule"] == "deny-untrusted"
    with fresh.client("plain") as client:  # a valid client certificate without a SPIFFE ID
        unnamed = client.get("/mcp/a", headers=fresh.token())
    assert unnamed.status_code == 403 and unnamed.json()["reason"] == "no_matching_rule"
    assert [r.header("x-enforcer-workload") for r in fresh.upstream.requests] == [AGENT]


def test_workload_is_client_id(fresh: World) -> None:
    with fresh.client("service") as client:
        same = client.get("/mcp/build", headers=fresh.token(client_id=SERVICE))
        other = client.get("/mcp/build", headers=fresh.token(client_id="spiffe://corp.example/svc/other"))
    assert same.status_code == 200, same.text
    assert other.status_code == 403 and other.json()["reason"] == "no_matching_rule"


def test_required_workload_identity_refuses_a_certificate_without_one(fresh: World) -> None:
    strict = fresh.token(aud="http://127.0.0.1:8080/strict")
    with fresh.client("plain") as client:
        refused = client.get("/strict/x", headers=strict)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_workload" and refused.json()["reason"] == "invalid_workload"
    assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_workload"')
    with fresh.client("agent") as client:
        assert client.get("/strict/x", headers=strict).status_code == 200


def test_metadata_advertises_certificate_bound_tokens(world: World) -> None:
    with world.client("agent") as client:
        document = client.get("/.well-known/oauth-protected-resource/mcp").json()
    assert document["tls_client_certificate_bound_access_tokens"] is True


# -- RFC 9440 Client-Cert from a TLS terminator -------------------------------------------------

HEADER_POLICY = """    workload_identity:
      client_cert_header: {{trusted_proxies: [{proxies}]}}
"""
HEADER_RULES = """
      - {id: agents, effect: allow, workloads: ["spiffe://corp.example/agents/*"]}
      - {id: others, effect: allow, client_ids: ["agent-*"], subjects: ["bob"]}
"""


@pytest.fixture(scope="module")
def header_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    directory = tmp_path_factory.mktemp("client-cert")
    key = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    leaf = spiffe_leaf(trustme.CA(), AGENT)
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(upstream) as upstream_server:
        servers = {}
        for name, proxies in (("untrusted", '"10.0.0.0/8", "::1"'), ("trusted", '"10.0.0.0/8", "127.0.0.1"')):
            (directory / name).mkdir()
            text = basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream_server.url}/mcp",
                                extra_resource=HEADER_POLICY.format(proxies=proxies), rules=HEADER_RULES)
            servers[name] = serve_enforcer(directory / name, text)
        with servers["untrusted"] as (_, untrusted), servers["trusted"] as (_, trusted):
            yield {"key": key, "upstream": upstream, "leaf": leaf, "untrusted": untrusted.url,
                   "trusted": trusted.url}


def _client_cert(leaf: Leaf) -> str:
    return ":" + base64.b64encode(leaf.der).decode("ascii") + ":"


def test_client_cert_from_an_untrusted_peer_is_ignored_and_stripped(header_world: dict[str, object]) -> None:
    key, leaf, upstream = header_world["key"], header_world["leaf"], header_world["upstream"]
    assert isinstance(key, SigningKey) and isinstance(leaf, Leaf) and isinstance(upstream, RecordingUpstream)
    upstream.requests.clear()
    url, spoofed = f"{header_world['untrusted']}/mcp/x", _client_cert(leaf)
    bound = sign(key, claims(cnf={"x5t#S256": thumbprint(leaf.der)}))
    refused = httpx.get(url, headers={"authorization": f"Bearer {bound}", "client-cert": spoofed})
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"  # no certificate counts
    unnamed = httpx.get(url, headers={"authorization": f"Bearer {sign(key, claims())}", "client-cert": spoofed})
    assert unnamed.status_code == 403 and unnamed.json()["reason"] == "no_matching_rule"  # no workload identity
    as_bob = httpx.get(url, headers={"authorization": f"Bearer {sign(key, claims(sub='bob'))}",
                                     "client-cert": spoofed, "client-cert-chain": spoofed})
    assert as_bob.status_code == 200
    seen = upstream.requests[-1]
    assert seen.header("client-cert") is None and seen.header("client-cert-chain") is None
    assert seen.header("x-enforcer-workload") is None


def test_client_cert_from_a_trusted_proxy_names_the_workload_and_binds(header_world: dict[str, object]) -> None:
    key, leaf, upstream = header_world["key"], header_world["leaf"], header_world["upstream"]
    assert isinstance(key, SigningKey) and isinstance(leaf, Leaf) and isinstance(upstream, RecordingUpstream)
    upstream.requests.clear()
    url = f"{header_world['trusted']}/mcp/x"
    bound = sign(key, claims(cnf={"x5t#S256": thumbprint(leaf.der)}))
    response = httpx.get(url, headers={"authorization": f"Bearer {bound}", "client-cert": _client_cert(leaf)})
    assert response.status_code == 200, response.text
    seen = upstream.requests[-1]
    assert seen.header("x-enforcer-workload") == AGENT and seen.header("client-cert") is None
    missing = httpx.get(url, headers={"authorization": f"Bearer {bound}"})
    assert missing.status_code == 401  # the proxy saw no client certificate: the bound token is unusable
    garbled = httpx.get(url, headers={"authorization": f"Bearer {bound}", "client-cert": "not-a-byte-sequence"})
    assert garbled.status_code == 401 and garbled.json()["error"] == "invalid_workload"


# -- enforcer serve --tls-* -------------------------------------------------------------------


def _serve(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ENFORCER_WORKERS", "PROMETHEUS_MULTIPROC_DIR")}
    return subprocess.run([*ENFORCER, "serve", "--port", str(free_port()), "--admin-port", str(free_port()), *args],
                          capture_output=True, text=True, cwd=ROOT, env=environment, timeout=timeout)


def test_serve_refuses_incomplete_tls_settings(world: World, tmp_path: Path) -> None:
    files = world.files
    half = _serve(["--policy", "policies/example.yaml", "--tls-cert", str(files.cert)])
    assert half.returncode == 2 and "--tls-cert and --tls-key go together" in half.stderr
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    bad = _serve(["--policy", "policies/example.yaml", "--tls-cert", str(broken), "--tls-key", str(files.key)])
    assert bad.returncode == 2 and "cannot load the certificate and key" in bad.stderr
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    prompted = _serve(["--policy", "policies/example.yaml", "--tls-cert", str(files.cert), "--tls-key", str(encrypted)],
                      timeout=20)  # never a passphrase prompt that hangs
    assert prompted.returncode == 2 and "the key is encrypted" in prompted.stderr
    no_ca = _serve(["--policy", str(world.policy), "--tls-cert", str(files.cert), "--tls-key", str(files.key)])
    assert no_ca.returncode == 2 and "--tls-client-ca" in no_ca.stderr and "demo, strict" in no_ca.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_mutual_tls(world: World, workers: str) -> None:
    files, port, admin = world.files, free_port(), free_port()
    process = subprocess.Popen(
        [*ENFORCER, "serve", "--policy", str(world.policy), "--port", str(port), "--admin-port", str(admin),
         "--workers", workers, "--tls-cert", str(files.cert), "--tls-key", str(files.key),
         "--tls-client-ca", str(files.client_ca)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("ENFORCER_WORKERS", "PROMETHEUS_MULTIPROC_DIR")})
    try:
        wait_for(lambda: _ready(admin), "the enforcer to be ready", timeout=30)
        context = client_context(world.server_ca, world.leaves["agent"], world.directory)
        world.upstream.requests.clear()
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=10) as client:
            for _ in range(4):  # with two workers, the connections land on both
                with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=10) as fresh:
                    response = fresh.get("/mcp/tools", headers=world.bound("agent"))
                    assert response.status_code == 200, response.text
            assert client.get("/mcp/tools", headers=world.bound("agent2")).status_code == 401
        assert {r.header("x-enforcer-workload") for r in world.upstream.requests} == {AGENT}
        plain = ssl.create_default_context()
        world.server_ca.configure_trust(plain)
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), \
                httpx.Client(verify=plain, timeout=10) as anonymous:
            anonymous.get(f"https://127.0.0.1:{port}/mcp/tools", headers=world.token())
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
