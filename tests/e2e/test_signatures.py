"""RFC 9421 request signatures through a real enforcer, in front of a real upstream.

Four enforcers run for the whole module, one per kind of ``signatures:`` block:

- ``strict``: agent keys from a JWKS file (Ed25519, P-256, RSA with ``alg: PS512``), nonces
  required, a ``tag``, and a small body limit;
- ``cnf``: the key comes from the access token (``cnf.jwk``, or ``cnf.jkt`` against a key set);
- ``optional``: ``required: false`` (unsigned requests pass, a sent signature must verify);
- ``hmac``: a shared secret for ``hmac-sha256`` next to the public agent keys.

Agents sign with the enforcer's own signer (``enforcer.signing``); signatures the signer
would never make (wrong parameter types, a lying ``alg``) are built by ``forged`` over the
same signature base code. Every refusal is checked for its status, its ``signature_failure``
code, its ``Accept-Signature`` field, that nothing reached the upstream, that no key was
fetched, and that the response echoes neither the token nor the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from http_message_signatures import algorithms
from joserfc.jwk import ECKey, OKPKey, RSAKey

from enforcer.auth import structured
from enforcer.auth.digest import content_digest
from enforcer.auth.sigbase import SignedMessage, headers_from_pairs, signature_base
from enforcer.auth.structured import InnerList, Item
from enforcer.signing import HTTPSignatureAuth, sign_headers
from enforcer.signing import SigningKey as AgentKey
from tests.support import (
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    b64url,
    basic_policy,
    claims,
    jwks,
    serve_enforcer,
    serving,
    sign,
)

PUBLIC_ORIGIN = "http://127.0.0.1:8080"  # the origin of tests.support.RESOURCE
TAG = "mcp-agent"
REQUIRED = ("@method", "@target-uri", "authorization", "content-digest")
# odd spacing and a trailing newline: the upstream must get these bytes, not a re-encoding
BODY = b'{"jsonrpc": "2.0",  "id": 7, "method": "tools/list"}\n'
MAX_BODY = 4096

ENFORCERS = {
    "strict": f"""    limits: {{max_body_bytes: {MAX_BODY}}}
    signatures:
      algorithms: [ed25519, ecdsa-p256-sha256, rsa-pss-sha512]
      require_nonce: true
      tag: {TAG}
      keys: {{jwks_file: agents.json}}""",
    "cnf": """    signatures:
      keys: {from_token_cnf: true, jwks_file: agents.json}""",
    "optional": """    signatures:
      required: false
      keys: {jwks_file: agents.json}""",
    "hmac": """    signatures:
      keys: {shared_secrets_file: secrets.json, jwks_file: agents-and-oct.json}""",
}
TAGS = {"strict": TAG}
NONCES = {"strict": True}


@dataclass(frozen=True)
class Attempt:
    """One request to send to one of the enforcers."""

    stack: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str:
        return next(v for n, v in self.headers if n.lower() == name.lower())

    def replace(self, name: str, value: str | None) -> Attempt:
        """Every line of ``name`` replaced by ``value`` (dropped when None)."""
        kept = tuple((n, v) for n, v in self.headers if n.lower() != name.lower())
        return dc_replace(self, headers=kept + (((name, value),) if value is not None else ()))

    def add(self, name: str, value: str) -> Attempt:
        return dc_replace(self, headers=(*self.headers, (name, value)))

    def edit(self, name: str, old: str, new: str) -> Attempt:
        value = self.header(name)
        assert old in value, (old, value)
        return self.replace(name, value.replace(old, new))

    def with_body(self, body: bytes) -> Attempt:
        return dc_replace(self, body=body)

    def plus(self, other: Attempt) -> Attempt:
        """This request with ``other``'s signature lines added after its own (and any header only it has)."""
        names = {n.lower() for n, _ in self.headers} - {"signature-input", "signature"}
        extra = tuple((n, v) for n, v in other.headers if n.lower() not in names)
        return dc_replace(self, headers=self.headers + extra)

    def corrupt(self) -> Attempt:
        """The signature bytes with one bit flipped (same length, still a byte sequence)."""
        label, item = next(iter(structured.parse_dictionary(self.header("Signature")).items()))
        assert isinstance(item, Item) and isinstance(item.value, bytes)
        flipped = bytes([item.value[0] ^ 1]) + item.value[1:]
        return self.replace("Signature", structured.serialize_dictionary({label: Item(flipped)}))


@dataclass
class Env:
    """The running enforcers, the agents' keys and the tokens the tests send."""

    urls: dict[str, str]
    agents: dict[str, AgentKey]
    public: dict[str, dict[str, Any]]
    issuer: SigningKey
    issuer_jwks: JWKSEndpoint
    evil: JWKSEndpoint
    evil_url: str
    upstream: RecordingUpstream
    token: str = ""
    other_token: str = ""
    bound: dict[str, str] = field(default_factory=dict)

    def mint(self, **overrides: Any) -> str:
        return sign(self.issuer, claims(**overrides))

    def signed(self, agent: str = "ec", stack: str = "strict", *, body: bytes = BODY, method: str = "POST",
               path: str = "/mcp", token: str | None = None, extra: tuple[tuple[str, str], ...] = (),
               **options: Any) -> Attempt:
        """A request signed by the enforcer's signer, with the stack's tag unless ``tag=`` says otherwise;
        ``extra`` headers are sent (and signed when listed in ``components``)."""
        options.setdefault("tag", TAGS.get(stack))
        options.setdefault("public_origin", PUBLIC_ORIGIN)
        headers = _base_headers(token or self.token, body) + list(extra)
        added = sign_headers(self.agents[agent], method, PUBLIC_ORIGIN + path, headers, body, **options)
        return Attempt(stack, method, path, tuple(headers + added), body)

    def forged(self, params: dict[str, Any], agent: str = "ec", stack: str = "strict", *,
               components: tuple[str, ...] = REQUIRED, body: bytes = BODY, signer: AgentKey | None = None,
               token: str | None = None, label: str = "sig1") -> Attempt:
        """A correct signature over exactly ``params`` (in that order), which ``sign_headers`` would not make."""
        headers = _base_headers(token or self.token, body)
        if body:
            headers.append(("Content-Digest", content_digest(body)))
        message = SignedMessage(method="POST", scheme="http", authority="127.0.0.1:8080", path="/mcp",
                                headers=headers_from_pairs(headers))
        covered = InnerList(tuple(Item(c) for c in components if c.startswith("@") or c in message.headers), params)
        signature = (signer or self.agents[agent]).sign(signature_base(covered, message).encode("ascii"))
        headers += [("Signature-Input", structured.serialize_dictionary({label: covered})),
                    ("Signature", structured.serialize_dictionary({label: Item(signature)}))]
        return Attempt(stack, "POST", "/mcp", tuple(headers), body)

    def send(self, attempt: Attempt) -> httpx.Response:
        return httpx.request(attempt.method, self.urls[attempt.stack] + attempt.path, headers=list(attempt.headers),
                             content=attempt.body or None, timeout=10)

    def replayed(self, stack: str = "strict") -> Attempt:
        """A request that was accepted once, to be sent again unchanged."""
        attempt = self.signed("ed", stack)
        assert self.send(attempt).status_code == 200
        self.upstream.requests.clear()
        return attempt


def _base_headers(token: str, body: bytes) -> list[tuple[str, str]]:
    headers = [("Authorization", f"Bearer {token}")]
    return headers + [("Content-Type", "application/json")] if body else headers


def _params(agent: str = "ec-agent", alg: str | None = "ecdsa-p256-sha256", **extra: Any) -> dict[str, Any]:
    """Signature parameters like the signer's: created, nonce, keyid, alg, tag (override or drop with None)."""
    params: dict[str, Any] = {"created": int(time.time()), "nonce": b64url(time.time_ns().to_bytes(8, "big")),
                              "keyid": agent, "alg": alg, "tag": TAG}
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def _hmac_signer(secret: bytes, keyid: str) -> AgentKey:
    """An hmac-sha256 signer over any bytes (joserfc would refuse public-key bytes as an oct key)."""
    return AgentKey(keyid, "hmac-sha256", algorithms.HMAC_SHA256(shared_secret=secret))


# -- the stacks ---------------------------------------------------------------------------------------


def _agent_keys() -> dict[str, Any]:
    return {
        "ed": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-agent"}, private=True),
        "ec": ECKey.generate_key("P-256", parameters={"kid": "ec-agent"}, private=True),
        "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa-agent", "alg": "PS512"}, private=True),
        "stranger": ECKey.generate_key("P-256", parameters={"kid": "stranger"}, private=True),
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = _agent_keys()
    public = {name: dict(key.as_dict(private=False)) for name, key in keys.items()}
    trusted = {"keys": [public["ed"], public["ec"], public["rsa"]]}
    secret = b"s" * 16 + bytes(range(16))
    oct_in_jwks = {"kty": "oct", "kid": "oct-in-jwks", "k": b64url(b"o" * 32)}
    files = {
        "agents.json": trusted,
        "agents-and-oct.json": {"keys": [*trusted["keys"], oct_in_jwks]},
        "secrets.json": {"keys": [{"kty": "oct", "kid": "shared-1", "k": b64url(secret)}]},
    }
    root = tmp_path_factory.mktemp("signatures")
    # a file holding the stranger's key, which a keyid must never be able to name
    (root / "attacker.json").write_text(json.dumps({"keys": [public["stranger"]]}))
    issuer = SigningKey.generate("ES256", kid="issuer-1")
    issuer_jwks, evil, upstream = JWKSEndpoint(document=jwks(issuer)), JWKSEndpoint(), RecordingUpstream()
    evil.document = {"keys": [public["stranger"]]}
    with ExitStack() as stack:
        js = stack.enter_context(serving(issuer_jwks))
        evil_server = stack.enter_context(serving(evil))
        us = stack.enter_context(serving(upstream))
        urls = {}
        for name, block in ENFORCERS.items():
            directory = root / name
            directory.mkdir()
            for filename, document in files.items():
                (directory / filename).write_text(json.dumps(document))
            text = basic_policy(jwks_line=f"jwks_uri: {js.url}/jwks", upstream=f"{us.url}/mcp", extra_resource=block)
            urls[name] = stack.enter_context(serve_enforcer(directory, text))[1].url
        agents = {name: AgentKey.from_jwk(key.as_dict(private=True)) for name, key in keys.items()}
        agents["shared"] = _hmac_signer(secret, "shared-1")
        agents["oct-in-jwks"] = _hmac_signer(b"o" * 32, "oct-in-jwks")
        result = Env(urls, agents, public, issuer, issuer_jwks, evil, f"{evil_server.url}/jwks", upstream)
        result.token, result.other_token = result.mint(), result.mint(sub="bob")
        result.bound = {"ec": result.mint(cnf={"jwk": public["ec"]}), "ed": result.mint(cnf={"jwk": public["ed"]}),
                        "jkt": result.mint(cnf={"jkt": keys["ec"].thumbprint()})}
        for name in urls:  # warm up: issuer keys fetched, every enforcer answering
            assert result.send(result.signed("ed", name, token=result.bound["ed"])).status_code == 200, name
        yield result


@pytest.fixture(autouse=True)
def _clean(env: Env) -> None:
    env.upstream.requests.clear()
    env.evil.fetches = 0


def _forwarded_once(env: Env, response: httpx.Response, attempt: Attempt) -> None:
    assert response.status_code == 200, response.text
    assert len(env.upstream.requests) == 1
    got = env.upstream.requests[0]
    path, _, query = attempt.path.partition("?")
    assert (got.method, got.path, got.query, got.body) == (attempt.method, path, query, attempt.body)


# -- accepted ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", [
    pytest.param("ed", id="MS-14-ed25519"),
    pytest.param("ec", id="MS-12-ecdsa-p256-sha256"),
    pytest.param("rsa", id="MS-09-rsa-pss-sha512-from-PS512-key"),
])
def test_signed_request_is_forwarded_with_the_exact_body(env: Env, agent: str) -> None:
    attempt = env.signed(agent)
    _forwarded_once(env, env.send(attempt), attempt)


def test_ms_11_hmac_with_a_shared_secret_is_forwarded(env: Env) -> None:
    attempt = env.signed("shared", "hmac")
    assert "hmac-sha256" in attempt.header("Signature-Input")
    _forwarded_once(env, env.send(attempt), attempt)


def test_ms_27_httpx_auth_signs_what_the_enforcer_accepts(env: Env) -> None:
    auth = HTTPSignatureAuth(env.agents["ec"], token=env.token, public_origin=PUBLIC_ORIGIN, tag=TAG)
    response = httpx.post(env.urls["strict"] + "/mcp", content=BODY, headers={"Content-Type": "application/json"},
                          auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    assert [r.body for r in env.upstream.requests] == [BODY]


@pytest.mark.parametrize("make", [
    pytest.param(lambda e: e.signed("ec", path="/mcp/tools?b=2&a=%2F"), id="MS-23-target-uri-with-query"),
    pytest.param(lambda e: e.signed("ec").replace("Host", "attacker.example"), id="MS-34-host-header-plays-no-part"),
    pytest.param(lambda e: e.forged(_params(alg=None)), id="MS-05-alg-parameter-may-be-omitted"),
    pytest.param(lambda e: e.forged(_params(None, None, tag=None), stack="cnf", token=e.bound["ec"]),
                 id="WH-05-cnf-signature-without-keyid-or-alg"),
    pytest.param(lambda e: _with_digest(e, f"{content_digest(BODY, 'sha-512')}, md5=:AA==:"),
                 id="DG-03-deprecated-digest-member-ignored"),
])
def test_accepted_variants(env: Env, make: Callable[[Env], Attempt]) -> None:
    attempt = make(env)
    _forwarded_once(env, env.send(attempt), attempt)


def test_ms_27_get_without_body_needs_no_content_digest(env: Env) -> None:
    attempt = env.signed("ed", method="GET", body=b"")
    assert "content-digest" not in attempt.header("Signature-Input")
    _forwarded_once(env, env.send(attempt), attempt)


@pytest.mark.parametrize("make", [
    pytest.param(lambda e: e.signed("ed", tag="other-app").plus(e.signed("ec", label="sig2")),
                 id="MS-32-first-has-another-tag"),
    pytest.param(lambda e: e.signed("stranger").plus(e.signed("ec", label="sig2")),
                 id="MS-31-first-by-an-unknown-key"),
    pytest.param(lambda e: e.signed("ed").corrupt().plus(e.signed("ec", label="sig2")),
                 id="MS-31-first-does-not-verify"),
    pytest.param(lambda e: e.signed("ed", components=("@method", "@target-uri")).plus(e.signed("ec", label="z")),
                 id="MS-03-first-lacks-required-components"),
    pytest.param(lambda e: e.signed("ec", label="proxy-sig"), id="MS-30-label-carries-no-meaning"),
])
def test_ms_30_31_signature_is_chosen_by_policy_not_by_label(env: Env, make: Callable[[Env], Attempt]) -> None:
    attempt = make(env)
    _forwarded_once(env, env.send(attempt), attempt)


@pytest.mark.parametrize("agent, token", [
    pytest.param("ec", "ec", id="WH-05-cnf-jwk"),
    pytest.param("ed", "ed", id="WH-05-cnf-jwk-ed25519"),
    pytest.param("ec", "jkt", id="DP-16-cnf-jkt-against-the-key-set"),
])
def test_token_bound_key_is_accepted(env: Env, agent: str, token: str) -> None:
    attempt = env.signed(agent, "cnf", token=env.bound[token])
    _forwarded_once(env, env.send(attempt), attempt)


def test_ms_03_unsigned_request_passes_where_signatures_are_optional(env: Env) -> None:
    attempt = Attempt("optional", "POST", "/mcp", tuple(_base_headers(env.token, BODY)), BODY)
    _forwarded_once(env, env.send(attempt), attempt)


# -- refused -------------------------------------------------------------------------------------------

SIG = (401, "invalid_signature")


def _refusal(failure: str | None, status_error: tuple[int, str] = SIG) -> tuple[int, str, str | None]:
    return (*status_error, failure)


REFUSALS = [
    # presence and parsing (RFC 9421 3.2 steps 1-3)
    pytest.param(lambda e: e.signed().replace("Signature", None).replace("Signature-Input", None),
                 _refusal("missing_signature"), id="MS-35-no-signature"),
    pytest.param(lambda e: e.signed("ec", "cnf", token=e.bound["ec"]).replace("Signature", None)
                 .replace("Signature-Input", None), _refusal("missing_signature"), id="MS-35-no-signature-cnf"),
    pytest.param(lambda e: e.signed().replace("Signature-Input", None), _refusal("malformed_signature"),
                 id="MS-01-signature-without-signature-input"),
    pytest.param(lambda e: e.signed().replace("Signature", None), _refusal("malformed_signature"),
                 id="MS-01-signature-input-without-signature"),
    pytest.param(lambda e: e.signed("ec").plus(e.signed("ed")), _refusal("malformed_signature"),
                 id="MS-29-same-label-on-two-field-lines"),
    pytest.param(lambda e: e.signed("ec").add("Signature-Input", e.signed("ed").header("Signature-Input")),
                 _refusal("malformed_signature"), id="MS-29-same-label-twice-in-signature-input-only"),
    pytest.param(lambda e: e.signed("ec").add("Signature", e.signed("ed").header("Signature")),
                 _refusal("malformed_signature"), id="MS-29-same-label-twice-in-signature-only"),
    pytest.param(lambda e: _many_signatures(e, 9), _refusal("malformed_signature"), id="MS-31-more-than-8-signatures"),
    pytest.param(lambda e: e.signed().replace("Signature-Input", 'sig1="@method";created=1'),
                 _refusal("malformed_signature"), id="MS-02-signature-input-member-not-an-inner-list"),
    pytest.param(lambda e: e.signed().edit("Signature-Input", '"authorization"', "authorization"),
                 _refusal("malformed_signature"), id="MS-02-covered-component-is-a-token"),
    pytest.param(lambda e: e.signed().replace("Signature", 'sig1="c2lnbmF0dXJl"'), _refusal("malformed_signature"),
                 id="MS-02-signature-member-not-a-byte-sequence"),
    pytest.param(lambda e: e.signed().replace("Signature", "sig1=(:c2lnbmF0dXJl:)"), _refusal("malformed_signature"),
                 id="MS-02-signature-member-an-inner-list"),
    # coverage
    pytest.param(lambda e: e.signed(components=("@method", "@target-uri", "content-digest")),
                 _refusal("missing_component"), id="MS-27-authorization-not-covered"),
    pytest.param(lambda e: e.signed(components=("@method", "@target-uri", "authorization")),
                 _refusal("missing_component"), id="MS-36-content-digest-not-covered-with-a-body"),
    pytest.param(lambda e: e.signed("ed", method="GET", body=b"").with_body(BODY), _refusal("missing_component"),
                 id="MS-36-signed-as-bodyless-then-sent-with-a-body"),
    pytest.param(lambda e: e.signed().with_body(b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call"}'),
                 _refusal(None, (400, "invalid_digest")), id="MS-36-DG-06-body-changed-after-signing"),
    pytest.param(lambda e: e.signed().with_body(b"{}").replace("Content-Digest", content_digest(b"{}")),
                 _refusal("bad_signature"), id="MS-36-body-and-content-digest-changed"),
    pytest.param(lambda e: _with_digest(e, f"{content_digest(BODY)}, {content_digest(b'x', 'sha-512')}"),
                 _refusal(None, (400, "invalid_digest")), id="DG-04-one-of-two-active-digests-wrong"),
    pytest.param(lambda e: _with_digest(e, f"md5=:{_b64(hashlib.md5(BODY, usedforsecurity=False).digest())}:"),
                 _refusal(None, (400, "invalid_request")), id="DG-03-only-a-deprecated-digest"),
    pytest.param(lambda e: e.signed(body=b"x" * (MAX_BODY + 1)), _refusal(None, (413, "invalid_request")),
                 id="DG-07-body-over-max-body-bytes"),
    # parameters (3.2 step 4)
    pytest.param(lambda e: e.signed(now=lambda: time.time() - 1000), _refusal("too_old"), id="MS-26-created-too-old"),
    pytest.param(lambda e: e.signed(now=lambda: time.time() + 1000), _refusal("created_in_future"),
                 id="MS-26-created-in-the-future"),
    pytest.param(lambda e: e.signed(expires_in=-100), _refusal("expired"), id="MS-26-expires-passed"),
    pytest.param(lambda e: e.forged(_params(created=str(int(time.time()))), "ec"), _refusal("missing_created"),
                 id="MS-25-created-is-a-string"),
    pytest.param(lambda e: e.forged(_params(created=True)), _refusal("missing_created"),
                 id="MS-25-created-is-a-boolean"),
    pytest.param(lambda e: e.forged(_params(created=None)), _refusal("missing_created"), id="MS-26-no-created"),
    pytest.param(lambda e: e.forged(_params(expires=str(int(time.time()) + 60))), _refusal("malformed_signature"),
                 id="MS-25-expires-is-a-string"),
    pytest.param(lambda e: e.signed().edit("Signature-Input", 'keyid="ec-agent"', "keyid=ec-agent"),
                 _refusal("malformed_signature"), id="MS-25-keyid-is-a-token"),
    pytest.param(lambda e: e.signed(nonce=False), _refusal("missing_nonce"), id="MS-26-no-nonce"),
    pytest.param(lambda e: e.forged(_params(nonce="")), _refusal("missing_nonce"), id="MS-26-empty-nonce"),
    pytest.param(lambda e: e.replayed(), _refusal("replayed_nonce"), id="MS-28-replayed-nonce"),
    pytest.param(lambda e: e.signed(tag="other-app"), _refusal("wrong_tag"), id="MS-32-wrong-tag"),
    pytest.param(lambda e: e.signed(tag=None), _refusal("wrong_tag"), id="MS-32-no-tag"),
    pytest.param(lambda e: e.signed(tag=TAG.upper()), _refusal("wrong_tag"), id="MS-32-tag-in-another-case"),
    # keys (step 5)
    pytest.param(lambda e: e.signed("stranger"), _refusal("unknown_key"), id="MS-04-unknown-keyid"),
    pytest.param(lambda e: e.forged(_params(keyid=None)), _refusal("unknown_key"), id="MS-04-no-keyid"),
    pytest.param(lambda e: e.forged(_params(e.evil_url), "stranger"), _refusal("unknown_key"),
                 id="MS-04-keyid-is-a-url"),
    pytest.param(lambda e: e.forged(_params("https://evil/jwks"), "stranger"), _refusal("unknown_key"),
                 id="MS-04-keyid-is-an-https-url"),
    pytest.param(lambda e: e.forged(_params("../../etc/passwd"), "stranger"), _refusal("unknown_key"),
                 id="MS-04-keyid-is-a-path"),
    pytest.param(lambda e: e.forged(_params("../attacker.json"), "stranger"), _refusal("unknown_key"),
                 id="MS-04-keyid-names-a-file-holding-the-signing-key"),
    # algorithms (step 6) and cryptography (steps 7-9)
    pytest.param(lambda e: e.forged(_params(alg="ed25519")), _refusal("algorithm_mismatch"),
                 id="MS-05-alg-disagrees-with-the-key"),
    pytest.param(lambda e: e.forged(_params(alg="ES256")), _refusal("algorithm_mismatch"),
                 id="MS-15-jwa-name-as-alg"),
    pytest.param(lambda e: e.forged(_params("ec-agent", "hmac-sha256", tag=None), stack="hmac",
                                    signer=_hmac_signer(_spki(e.public["ec"]), "ec-agent")),
                 _refusal("algorithm_mismatch"), id="MS-05-hmac-with-an-ec-public-key-as-secret"),
    pytest.param(lambda e: e.forged(_params("ed-agent", None, tag=None), stack="hmac",
                                    signer=_hmac_signer(_raw_okp(e.public["ed"]), "ed-agent")),
                 _refusal("bad_signature"), id="MS-07-hmac-with-an-ed25519-public-key-no-alg"),
    pytest.param(lambda e: e.signed("oct-in-jwks", "hmac"), _refusal("unknown_key"),
                 id="MS-11-oct-key-outside-shared-secrets-file"),
    pytest.param(lambda e: e.signed().corrupt(), _refusal("bad_signature"), id="MS-07-signature-bit-flipped"),
    pytest.param(lambda e: e.signed().replace("Signature", structured.serialize_dictionary({"sig1": Item(bytes(64))})),
                 _refusal("bad_signature"), id="MS-12-ecdsa-r-and-s-zero"),
    # the base is rebuilt from what arrived, with derived components from public_origin
    pytest.param(lambda e: e.signed(public_origin=e.urls["strict"],
                                    components=("@method", "@authority", *REQUIRED[1:])),
                 _refusal("bad_signature"), id="MS-34-authority-signed-as-the-connected-host"),
    pytest.param(lambda e: e.signed().replace("Authorization", f"Bearer {e.other_token}"),
                 _refusal("bad_signature"), id="MS-27-another-bearer-token-than-signed"),
    pytest.param(lambda e: dc_replace(e.signed(), path="/mcp/other"), _refusal("bad_signature"),
                 id="MS-23-path-changed"),
    pytest.param(lambda e: dc_replace(e.signed(), method="PUT"), _refusal("bad_signature"), id="MS-23-method-changed"),
    # keys bound to the token
    pytest.param(lambda e: e.signed("ed", "cnf", token=e.bound["ec"]), _refusal("key_not_bound"),
                 id="WH-05-key-of-another-tokens-cnf"),
    pytest.param(lambda e: e.signed("ed", "cnf", token=e.bound["ec"]).edit("Signature-Input", "ed-agent", "ec-agent")
                 .edit("Signature-Input", '"ed25519"', '"ecdsa-p256-sha256"'),
                 _refusal("bad_signature"), id="WH-05-key-of-another-tokens-cnf-keyid-and-alg-forged"),
    pytest.param(lambda e: e.signed("ed", "cnf", token=e.bound["jkt"]), _refusal("key_not_bound"),
                 id="DP-16-key-not-the-cnf-jkt-thumbprint"),
    pytest.param(lambda e: e.signed("ec", "cnf"), _refusal("token_not_bound"), id="WH-05-token-without-cnf"),
    pytest.param(lambda e: e.signed("ec", "cnf", token=e.mint(cnf={"jwk": {**e.public["ec"], "d": "AAAA"}})),
                 _refusal("token_not_bound"), id="WC-02-cnf-jwk-with-private-key-material"),
    pytest.param(lambda e: e.signed("shared", "cnf", token=e.mint(cnf={"jwk": {"kty": "oct", "k": b64url(b"s" * 32)}})),
                 _refusal("token_not_bound"), id="WC-02-cnf-jwk-symmetric-key"),
    # optional signatures still have to verify
    pytest.param(lambda e: e.signed("ed", "optional").corrupt(), _refusal("bad_signature"),
                 id="MS-03-optional-resource-broken-signature"),
    pytest.param(lambda e: e.signed("stranger", "optional"), _refusal("unknown_key"),
                 id="MS-03-optional-resource-unknown-key"),
    pytest.param(lambda e: e.signed("ed", "optional").replace("Signature-Input", None),
                 _refusal("malformed_signature"), id="MS-01-optional-resource-signature-without-input"),
]


@pytest.mark.parametrize("make, expected", REFUSALS)
def test_refused_and_never_forwarded(env: Env, make: Callable[[Env], Attempt],
                                     expected: tuple[int, str, str | None]) -> None:
    attempt = make(env)
    fetches = env.issuer_jwks.fetches
    response = env.send(attempt)
    status, error, failure = expected
    assert (response.status_code, response.json()["error"], response.json().get("signature_failure")) == expected, \
        response.text
    assert env.upstream.requests == []
    assert (env.evil.fetches, env.issuer_jwks.fetches) == (0, fetches), "a signature made the enforcer fetch keys"
    _assert_no_echo(response, attempt)
    if status == 401:
        _assert_accept_signature(response, attempt.stack)


def _assert_no_echo(response: httpx.Response, attempt: Attempt) -> None:
    token = attempt.header("Authorization").removeprefix("Bearer ")
    shown = response.text + "".join(f"{n}: {v}\n" for n, v in response.headers.items())
    assert token not in shown and token.split(".")[2] not in shown
    for name, value in attempt.headers:
        if name.lower() == "signature":
            for chunk in value.split(":")[1::2]:
                assert len(chunk) < 12 or chunk not in shown


def _assert_accept_signature(response: httpx.Response, stack: str) -> None:
    """RFC 9421 section 5: what an acceptable signature covers, and with which parameters."""
    field_value = response.headers.get("accept-signature")
    assert field_value, "a signature refusal says what to sign"
    wanted = structured.parse_dictionary(field_value)
    assert list(wanted) == ["sig1"]
    member = wanted["sig1"]
    assert isinstance(member, InnerList)
    assert tuple(item.value for item in member.items) == REQUIRED
    assert member.params.get("created") is True
    assert member.params.get("tag") == TAGS.get(stack)
    assert bool(member.params.get("nonce")) == NONCES.get(stack, False)


def test_ms_35_missing_signature_asks_for_the_exact_signature(env: Env) -> None:
    attempt = env.signed().replace("Signature", None).replace("Signature-Input", None)
    first, second = env.send(attempt), env.send(attempt)
    assert (first.status_code, first.json()["signature_failure"]) == (401, "missing_signature")
    fields = [r.headers["accept-signature"] for r in (first, second)]
    for value in fields:
        assert value.startswith('sig1=("@method" "@target-uri" "authorization" "content-digest");created;nonce="')
        assert value.endswith(f';tag="{TAG}"')
    assert fields[0] != fields[1], "each challenge carries a fresh nonce"


def test_bt_11_refusal_body_never_echoes_token_or_signature_text(env: Env) -> None:
    """Malformed fields that embed the token and the signature still produce a clean refusal."""
    attempt = env.signed()
    token = env.token
    signature = attempt.header("Signature")
    attempt = attempt.replace("Signature-Input", f'sig1=("@method" {token}').replace("Signature", signature + ", (")
    response = env.send(attempt)
    assert (response.status_code, response.json()["signature_failure"]) == (401, "malformed_signature")
    assert token not in response.text and signature.split(":")[1] not in response.text
    assert env.upstream.requests == []


def test_ms_26_refused_request_does_not_burn_its_nonce(env: Env) -> None:
    attempt = env.signed("ec")
    tampered = env.send(attempt.with_body(b'{"jsonrpc": "2.0", "id": 8, "method": "tools/list"}'))
    assert (tampered.status_code, tampered.json()["error"]) == (400, "invalid_digest")
    assert env.upstream.requests == []
    _forwarded_once(env, env.send(attempt), attempt)


@pytest.mark.parametrize("size, status", [
    pytest.param(MAX_BODY, 200, id="DG-07-chunked-body-at-the-limit"),
    pytest.param(MAX_BODY + 1, 413, id="DG-07-chunked-body-over-the-limit"),
])
def test_dg_07_chunked_body_is_capped_before_hashing(env: Env, size: int, status: int) -> None:
    attempt = env.signed("ec", body=b"y" * size)
    chunks = iter([attempt.body[:1000], attempt.body[1000:]])
    response = httpx.post(env.urls["strict"] + "/mcp", headers=list(attempt.headers), content=chunks, timeout=10)
    assert response.status_code == status, response.text
    assert [r.body for r in env.upstream.requests] == ([attempt.body] if status == 200 else [])


# -- helpers for the tables ------------------------------------------------------------------------


def _many_signatures(env: Env, count: int) -> Attempt:
    attempt = env.signed("ec", label="s0")
    for index in range(1, count):
        attempt = attempt.plus(env.signed("ec", label=f"s{index}"))
    return attempt


def _with_digest(env: Env, value: str) -> Attempt:
    """A signed request whose (signed) Content-Digest field is ``value``."""
    return env.signed("ec", extra=(("Content-Digest", value),))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- key bytes an attacker may know ----------------------------------------------------------------


def _spki(jwk: dict[str, Any]) -> bytes:
    return ECKey.import_key(jwk).raw_value.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _raw_okp(jwk: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64decode(jwk["x"] + "==")
