"""The policy file, version 1, as strict frozen models (DESIGN.md section 3).

Strict means: unknown keys are errors, YAML scalars are not coerced (``"30"`` is not an
int, ``yes`` is not a string), and every parsed object is immutable. Checks that need
more than one field (exactly one key source, unsafe algorithms, references between
issuers and resources) live in ``policy/checks.py`` so that every problem of a file is
reported together, with its location.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr

Str = StrictStr
Int = StrictInt
Bool = StrictBool
Float = Annotated[float, Strict()]
Globs = tuple[Str, ...]

#: JWS algorithms an issuer may list. ``none`` and the HMAC family are refused at load
#: time: a resource server must never share a secret with the issuer of bearer tokens.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)


class Model(BaseModel):
    # Scalars are strict (no "30" -> 30, no "yes" -> True); lists may fill tuples.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Issuer(Model):
    """An authorization server whose access tokens are accepted."""

    id: Str = Field(description="Name that resources use to reference this issuer.")
    issuer: Str = Field(description="Exact value of the `iss` claim (byte-wise comparison).")
    jwks_uri: Str | None = Field(None, description="HTTPS URL of the issuer's JWKS.")
    jwks_file: Str | None = Field(None, description="JWKS file, relative to the policy file.")
    discovery: Bool = Field(False, description="Find jwks_uri via RFC 8414, then OpenID discovery.")
    algorithms: tuple[Str, ...] = Field(
        ("ES256", "EdDSA", "RS256", "PS256"), description="Allowed JWS algorithms (case-sensitive)."
    )
    token_types: tuple[Str, ...] = Field(
        ("at+jwt", "application/at+jwt"), description="Accepted `typ` header values (RFC 9068)."
    )
    clock_skew_seconds: Int = Field(30, ge=0, le=300, description="Leeway for exp, nbf and iat.")
    jwks_refetch_interval_seconds: Int = Field(
        10, ge=1, le=3600, description="Minimum interval between refetches caused by an unknown kid."
    )
    jwks_min_cache_seconds: Int = Field(60, ge=1, description="Lower bound on Cache-Control max-age.")
    jwks_max_cache_seconds: Int = Field(3600, ge=1, description="Upper bound on Cache-Control max-age.")
    max_token_bytes: Int = Field(8192, ge=256, le=65536, description="Largest accepted token.")


class Match(Model):
    path_prefix: Str = Field("/", description="Path prefix, matched on segment boundaries.")
    host: Str | None = Field(None, description="Exact authority (host[:port]) the request must name.")


class Limits(Model):
    max_body_bytes: Int = Field(1048576, ge=0, description="Largest body read for inspection (413 above).")


class Timeouts(Model):
    connect_seconds: Float = Field(5.0, gt=0, le=300, description="Upstream connect timeout.")
    read_seconds: Float = Field(60.0, gt=0, le=86400, description="Upstream idle-read timeout.")


class McpCondition(Model):
    methods: Globs | None = None
    tools: Globs | None = None
    resources: Globs | None = None
    prompts: Globs | None = None


#: RFC 9421 signature algorithms. ``hmac-sha256`` needs a key configured as a shared secret.
SIGNATURE_ALGORITHMS = ("ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512",
                        "rsa-v1_5-sha256", "hmac-sha256")


class SignatureKeys(Model):
    """Where the agents' signing keys come from. ``keyid`` only ever selects among these."""

    jwks_file: Str | None = Field(None, description="JWKS of agent public keys, relative to the policy file.")
    jwks_uri: Str | None = Field(None, description="HTTPS URL of a JWKS of agent public keys.")
    from_token_cnf: Bool = Field(
        False, description="Use the access token's `cnf.jwk` (or check `cnf.jkt` against the key set)."
    )
    shared_secrets_file: Str | None = Field(
        None, description="JWKS of `oct` keys for hmac-sha256, relative to the policy file; keep it secret."
    )
    jwks_refetch_interval_seconds: Int = Field(
        10, ge=1, le=3600, description="Minimum interval between key-set refetches caused by an unknown keyid."
    )


class Signatures(Model):
    """RFC 9421 request signatures the resource demands (RFC 9530 Content-Digest included)."""

    required: Bool = Field(True, description="Refuse unsigned requests (a signature that is sent must verify).")
    components: tuple[Str, ...] = Field(
        ("@method", "@target-uri", "authorization", "content-digest"),
        description="Components every accepted signature must cover (`content-digest` only when a body is sent).",
    )
    algorithms: tuple[Str, ...] = Field(SIGNATURE_ALGORITHMS, description="Allowed RFC 9421 algorithms.")
    max_age_seconds: Int = Field(300, ge=1, le=86400, description="Oldest accepted `created`.")
    clock_skew_seconds: Int = Field(30, ge=0, le=300, description="Leeway for `created` and `expires`.")
    require_nonce: Bool = Field(False, description="Demand a `nonce`, each accepted once per key within max age.")
    tag: Str | None = Field(None, description="When set, only signatures with this `tag` count.")
    keys: SignatureKeys = Field(SignatureKeys(), description="Key sources (at least one).")


class Rule(Model):
    """One rule: every condition it states must match (an absent condition matches anything)."""

    id: Str
    effect: Literal["allow", "deny"]
    client_ids: Globs | None = Field(None, description="`client_id` claim globs.")
    subjects: Globs | None = Field(None, description="`sub` claim globs.")
    scopes: tuple[Str, ...] | None = Field(None, description="Scopes that must all be granted.")
    methods: tuple[Str, ...] | None = Field(None, description="HTTP methods (upper case).")
    paths: Globs | None = Field(None, description="Request path globs (`*` spans segments).")
    mcp: McpCondition | None = Field(None, description="MCP JSON-RPC conditions.")


class Resource(Model):
    """One protected resource: an RFC 8707 identifier in front of one upstream."""

    id: Str
    resource: Str = Field(description="RFC 8707 identifier; tokens must carry it in `aud`.")
    match: Match = Match()
    upstream: Str = Field(description="Base URL the matched requests are forwarded to.")
    issuers: tuple[Str, ...] = Field(description="Ids of the issuers whose tokens are accepted.")
    scopes_supported: tuple[Str, ...] = ()
    resource_name: Str | None = None
    forward_token: Bool = Field(False, description="Forward the inbound Authorization header upstream.")
    public_origin: Str | None = Field(None, description="External scheme://authority; default from resource.")
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    signatures: Signatures | None = None
    rules: tuple[Rule, ...] = ()


class PolicyFile(Model):
    version: Literal[1]
    issuers: tuple[Issuer, ...] = ()
    resources: tuple[Resource, ...] = ()
