"""The policy file, version 1, as strict frozen models (DESIGN.md section 3).

Strict means: unknown keys are errors, YAML scalars are not coerced (``"30"`` is not an
int, ``yes`` is not a string), and every parsed object is immutable. Checks that need
more than one field (exactly one key source, unsafe algorithms, references between
issuers and resources) live in ``policy/checks.py`` so that every problem of a file is
reported together, with its location.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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


def instant(value: object) -> datetime:
    """An RFC 3339 date-time: YAML's own timestamp or a string, always with a zone (a naive time
    would mean whatever zone the server runs in). TypeError / ValueError say what is expected."""
    expected = "an RFC 3339 date-time such as 2026-12-01T08:00:00Z"
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(expected) from None
    else:
        raise TypeError(expected)
    if parsed.tzinfo is None:
        raise ValueError("a date-time with a zone (Z or +01:00)")
    return parsed


class Model(BaseModel):
    # Scalars are strict (no "30" -> 30, no "yes" -> True); lists may fill tuples.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Issuer(Model):
    """An authorization server whose access tokens are accepted."""

    id: Str = Field(description="Name that resources use to reference this issuer; unique across all policy files.")
    issuer: Str = Field(
        description="Exact value of the tokens' `iss` claim, compared byte for byte (a trailing slash matters).")
    jwks_uri: Str | None = Field(
        None, description="HTTPS URL of the issuer's JWKS (plain http only for loopback hosts). "
                          "Give exactly one of `jwks_uri`, `jwks_file` or `discovery: true`.")
    jwks_file: Str | None = Field(
        None, description="JWKS file with the issuer's public keys, relative to this policy file; re-read "
                          "every `jwks_refetch_interval_seconds`. One of the three key sources.")
    discovery: Bool = Field(
        False, description="Find `jwks_uri` in the issuer's RFC 8414 metadata, then OpenID discovery; needs an "
                           "https `issuer`. One of the three key sources.")
    algorithms: tuple[Str, ...] = Field(
        ("ES256", "EdDSA", "RS256", "PS256"),
        description="JWS `alg` values accepted for this issuer's tokens (case-sensitive, at least one). Only "
                    "asymmetric algorithms: `none` and HS256/384/512 are refused at load time.")
    token_types: tuple[Str, ...] = Field(
        ("at+jwt", "application/at+jwt"),
        description="Accepted values of the token's `typ` header (RFC 9068; compared case-insensitively). "
                    "Tokens without a listed `typ`, such as ID tokens, are refused.")
    clock_skew_seconds: Int = Field(
        30, ge=0, le=300, description="Leeway in seconds for the `exp`, `nbf` and `iat` claims (0 to 300).")
    jwks_refetch_interval_seconds: Int = Field(
        10, ge=1, le=3600,
        description="Seconds between key-set refetches that a token with an unknown `kid` may cause "
                    "(at most one per interval, 1 to 3600); also how often a `jwks_file` is re-read.")
    jwks_min_cache_seconds: Int = Field(
        60, ge=1, description="Fewest seconds a fetched key set is kept, whatever its Cache-Control max-age says.")
    jwks_max_cache_seconds: Int = Field(
        3600, ge=1, description="Most seconds a fetched key set is kept, whatever its Cache-Control max-age says "
                                "(also the lifetime when no max-age is sent); at least `jwks_min_cache_seconds`.")
    max_token_bytes: Int = Field(
        8192, ge=256, le=65536,
        description="Largest access token accepted, in bytes (256 to 65536); a longer token is refused unparsed.")


class Match(Model):
    """Which requests belong to a resource. The longest matching prefix wins; for the same
    prefix, a resource that names a host wins over one that does not."""

    path_prefix: Str = Field(
        "/", description="Absolute path prefix, matched on segment boundaries (`/mcp` matches `/mcp` and "
                         "`/mcp/x`, not `/mcpx`); it is replaced by the upstream's path when forwarding. "
                         "No `*`, %-escapes or dot segments.")
    host: Str | None = Field(
        None, description="Authority (host[:port]) the request must be addressed to; absent: any host.")


class Limits(Model):
    """Bounds on what is read from a request."""

    max_body_bytes: Int = Field(
        1048576, ge=0,
        description="Largest request body, in bytes, read into memory when the body must be inspected (MCP "
                    "header checks, Content-Digest); a larger one is answered 413. Bodies that need no "
                    "inspection are streamed and not limited here.")


class Timeouts(Model):
    """Time limits towards the upstream; exceeding one is answered 504."""

    connect_seconds: Float = Field(
        5.0, gt=0, le=300, description="Seconds to wait for a connection to the upstream (more than 0, at most 300).")
    read_seconds: Float = Field(
        60.0, gt=0, le=86400,
        description="Seconds the upstream may take to start its answer, and the longest pause while a "
                    "non-streamed answer is relayed (event streams have no idle limit; at most 86400).")


class McpCondition(Model):
    """Conditions on the MCP JSON-RPC message a POST carries (each message of a batch is judged
    on its own). Every key given must hold; a key about a field the message does not have does
    not hold (`tools` never matches `tools/list`). Requests without a JSON-RPC body (the GET
    stream, DELETE) never match a rule with an `mcp` condition; `mcp: {}` matches any message."""

    methods: Globs | None = Field(
        None, description="Globs for the JSON-RPC `method`, e.g. `tools/call` or `notifications/*`. A response "
                          "the client sends (to a server's sampling or elicitation request) has no method.")
    tools: Globs | None = Field(
        None, description="Globs for the tool name: `params.name` of `tools/call` (only that method matches).")
    resources: Globs | None = Field(
        None, description="Globs for the resource URI: `params.uri` of `resources/read`, `resources/subscribe` "
                          "and `resources/unsubscribe` (only those methods match).")
    prompts: Globs | None = Field(
        None, description="Globs for the prompt name: `params.name` of `prompts/get` (only that method matches).")


class McpOptions(Model):
    """How an MCP resource is handled (`mcp: true` takes every default)."""

    filter_lists: Bool = Field(
        True, description="Rewrite `tools/list`, `prompts/list` and `resources/list` results to hold only the "
                          "entries this caller could use under the rules (judged as `tools/call`, `prompts/get`, "
                          "`resources/read`); a result that cannot be parsed is never passed on.")
    bind_sessions: Bool = Field(
        True, description="Bind each `Mcp-Session-Id` (and legacy SSE `session_id`) the upstream issues to the "
                          "caller that received it (issuer, sub, client_id); any other caller presenting it gets "
                          "404, as does an id the enforcer never saw issued.")
    error_format: Literal["oauth", "jsonrpc"] = Field(
        "oauth", description="Body of a refusal of a JSON-RPC request: `oauth`, the enforcer's JSON error body "
                             "(`error`, `error_description`, `reason`, `rule`); `jsonrpc`, a JSON-RPC error for the "
                             "request's id with that body as `error.data`, which MCP SDK clients surface to the "
                             "caller. Status and `WWW-Authenticate` are the same either way.")
    session_ttl_seconds: Int = Field(
        86400, ge=60, le=2592000,
        description="Seconds a session binding is kept after its last use (60 to 2592000); a session idle "
                    "longer must be started again.")


#: RFC 9421 signature algorithms. ``hmac-sha256`` needs a key configured as a shared secret.
SIGNATURE_ALGORITHMS = ("ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512",
                        "rsa-v1_5-sha256", "hmac-sha256")


class SignatureKeys(Model):
    """Where the agents' verification keys come from (at least one source). A signature's
    `keyid` only ever selects among these keys; it is never fetched."""

    jwks_file: Str | None = Field(
        None, description="JWKS of agent public keys, relative to this policy file (not together with jwks_uri).")
    jwks_uri: Str | None = Field(
        None, description="HTTPS URL of a JWKS of agent public keys (plain http only for loopback hosts).")
    from_token_cnf: Bool = Field(
        False, description="Use the access token's `cnf.jwk` (or check `cnf.jkt` against the key set), so a "
                           "signature is bound to the token it travels with."
    )
    shared_secrets_file: Str | None = Field(
        None, description="JWKS of `oct` keys for hmac-sha256, relative to this policy file; keep it secret. "
                          "Needs `hmac-sha256` in `algorithms`."
    )
    jwks_refetch_interval_seconds: Int = Field(
        10, ge=1, le=3600,
        description="Seconds between key-set refetches that an unknown `keyid` may cause (1 to 3600)."
    )


class Signatures(Model):
    """RFC 9421 request signatures the resource demands (RFC 9530 Content-Digest included)."""

    required: Bool = Field(True, description="Refuse unsigned requests (a signature that is sent must verify).")
    components: tuple[Str, ...] = Field(
        ("@method", "@target-uri", "authorization", "content-digest"),
        description="Components every accepted signature must cover (`content-digest` only when a body is sent).",
    )
    algorithms: tuple[Str, ...] = Field(
        SIGNATURE_ALGORITHMS,
        description="Accepted RFC 9421 algorithms (at least one; default: all six). `hmac-sha256` also needs "
                    "`keys.shared_secrets_file`.")
    max_age_seconds: Int = Field(
        300, ge=1, le=86400,
        description="Oldest accepted `created`, in seconds before now (plus `clock_skew_seconds`; 1 to 86400).")
    clock_skew_seconds: Int = Field(
        30, ge=0, le=300, description="Leeway in seconds for `created` and `expires` (0 to 300).")
    require_nonce: Bool = Field(
        False, description="Demand a `nonce`, each accepted once per key within `max_age_seconds` (replay "
                           "protection; shared across replicas with a Redis replay store).")
    tag: Str | None = Field(None, description="When set, only signatures with this `tag` count (not empty).")
    keys: SignatureKeys = Field(SignatureKeys(), description="Where agents' keys come from (at least one source).")


class ActorPattern(Model):
    """An actor written with its issuer: both globs must match the current actor's claims."""

    sub: Str = Field(description="Glob for the current actor's `sub` (the `act.sub` claim).")
    iss: Str | None = Field(
        None, description="Glob for the current actor's `iss` (`act.iss`); an actor without `iss` does not match. "
                          "Absent: any issuer, or none.")


def _mcp_setting_kind(value: object) -> str:
    return "mcp:switch" if isinstance(value, bool) else "mcp:options"


def _actor_kind(value: object) -> str:
    return "actor:pattern" if isinstance(value, dict) else "actor:glob"


#: ``mcp: true | false`` or ``mcp: {options}``: one branch is checked, so errors are about it alone
McpSetting = Annotated[Annotated[Bool, Tag("mcp:switch")] | Annotated[McpOptions, Tag("mcp:options")],
                       Discriminator(_mcp_setting_kind)]
#: an actor: a glob for ``act.sub``, or ``{sub, iss}``
ActorItem = Annotated[Annotated[Str, Tag("actor:glob")] | Annotated[ActorPattern, Tag("actor:pattern")],
                      Discriminator(_actor_kind)]
#: tags of the tagged unions above; they appear in validation locations, never in files
UNION_TAGS = frozenset({"mcp:switch", "mcp:options", "actor:glob", "actor:pattern"})


class Rule(Model):
    """One rule: every condition it states must match (an absent condition matches anything)."""

    id: Str = Field(
        description="Name of the rule, unique within its resource; named in refusals (`rule`) and audit records.")
    effect: Literal["allow", "deny"] = Field(
        description="What a match means. Any matching `deny` wins; otherwise any matching `allow` allows; "
                    "otherwise the request is denied.")
    mode: Literal["enforce", "shadow"] = Field(
        "enforce", description="`shadow`: evaluated and recorded (audit `shadow`, a metric), never enforced.")
    client_ids: Globs | None = Field(
        None, description="Globs for the token's `client_id` claim (only `*` is special; it matches any "
                          "characters, `/` included). Absent: any client.")
    subjects: Globs | None = Field(None, description="Globs for the token's `sub` claim. Absent: any subject.")
    scopes: tuple[Str, ...] | None = Field(
        None, description="Scopes the token must all hold (exact names). A request allowed but for missing "
                          "scopes is answered 403 insufficient_scope listing all of them. Absent: none needed.")
    methods: tuple[Str, ...] | None = Field(
        None, description="HTTP methods in upper case (`GET` also covers `HEAD`). Absent: any method.")
    paths: Globs | None = Field(
        None, description="Globs for the decoded request path, written in full (including the resource's "
                          "`path_prefix`); `*` spans segments. Absent: any path.")
    actors: tuple[ActorItem, ...] | None = Field(
        None, description="The current actor of a delegated token (RFC 8693 `act`: its top-level `sub`, and "
                          "`iss` when given as {sub, iss}) must match one of these globs; a token without `act` "
                          "never matches. Prior (nested) actors are recorded, never matched. Absent: any actor.")
    max_delegation_depth: Int | None = Field(
        None, ge=0, le=10,
        description="Most actors in the token's `act` chain (0: direct calls only; 1: one agent acting for the "
                    "user). Absent: any depth the token may carry (at most 10).")
    require_delegation: Bool | None = Field(
        None, description="`true`: the rule applies only to delegated tokens (with `act`); `false`: only to "
                          "direct ones (without). Absent: both.")
    workloads: Globs | None = Field(
        None, description="Globs for the caller's verified workload identity, a SPIFFE ID such as "
                          "`spiffe://corp.example/agents/*` (from the mutual-TLS client certificate, a `Client-Cert` "
                          "header from a trusted proxy, or a JWT-SVID, as the resource's `workload_identity` says). "
                          "A request without a workload identity never matches. Absent: any workload, or none.")
    workload_is_client_id: Bool | None = Field(
        None, description="`true`: the verified workload identity must equal the token's `client_id` (the workload "
                          "calling is the agent the token was issued to); a request without a workload identity "
                          "never matches. Only `true` may be written. Absent: not compared.")
    mcp: McpCondition | None = Field(
        None, description="Conditions on the MCP JSON-RPC message of a POST (method, tool, resource URI, prompt); "
                          "makes the resource an MCP resource. Absent: any request, with or without a body.")
    not_before: datetime | None = Field(
        None, description="The rule applies only from this instant on: an RFC 3339 date-time with a zone, "
                          "e.g. `2026-12-01T08:00:00Z`. Absent: no start.")
    not_after: datetime | None = Field(
        None, description="The rule applies only before this instant (RFC 3339 date-time with a zone): a "
                          "time-boxed grant, such as break-glass access, ends by itself. Absent: no end.")

    @field_validator("not_before", "not_after", mode="before")
    @classmethod
    def _instant(cls, value: object) -> datetime:
        try:
            return instant(value)
        except TypeError as exc:
            raise PydanticCustomError("datetime_type", f"Input should be {exc}") from None
        except ValueError as exc:
            raise PydanticCustomError("datetime_parsing", f"Input should be {exc}") from None

    @model_validator(mode="after")
    def _window_is_open(self) -> Rule:
        if self.not_before is not None and self.not_after is not None and self.not_before >= self.not_after:
            raise PydanticCustomError("time_window", "not_before must be earlier than not_after")
        return self


class DownstreamToken(Model):
    """RFC 8693 token exchange for the upstream call: the verified inbound token is exchanged at an
    authorization server for a token scoped to the upstream, which the upstream receives as
    `Authorization: Bearer` (the inbound token never reaches it; MCP: no token passthrough)."""

    token_endpoint: Str | None = Field(
        None, description="HTTPS URL of the authorization server's token endpoint (plain http only for loopback "
                          "hosts). Give exactly one of `token_endpoint` or `issuer`.")
    issuer: Str | None = Field(
        None, description="Issuer identifier of the authorization server (https; plain http only for loopback "
                          "hosts): its `token_endpoint` is found by RFC 8414 metadata, then OpenID discovery, "
                          "whose `issuer` must equal this value exactly. One of `token_endpoint` or `issuer`.")
    client_id: Str = Field(description="The enforcer's own client id at that authorization server.")
    client_auth: Literal["client_secret_basic", "private_key_jwt"] = Field(
        "client_secret_basic",
        description="How the enforcer authenticates to the token endpoint: `client_secret_basic` (HTTP Basic with "
                    "`client_secret_file`) or `private_key_jwt` (an RFC 7523 assertion signed with "
                    "`private_key_file`).")
    client_secret_file: Str | None = Field(
        None, description="File holding the client secret (surrounding whitespace ignored), relative to this "
                          "policy file; read at each exchange, so it can be rotated. For `client_secret_basic`.")
    private_key_file: Str | None = Field(
        None, description="File holding the private JWK (EC, RSA or OKP; `alg` and `kid` used when present) that "
                          "signs client assertions, relative to this policy file. For `private_key_jwt`.")
    audience: Str | None = Field(
        None, description="RFC 8693 `audience` asked for: the logical name of the upstream at the authorization "
                          "server. At least one of `audience` or `resource`.")
    resource: Str | None = Field(
        None, description="RFC 8693 / RFC 8707 `resource` asked for: the upstream's absolute resource identifier, "
                          "which the exchanged token should carry in `aud`. At least one of `audience` or `resource`.")
    scope: Str | None = Field(
        None, description="Space-separated scopes asked for. Only those the inbound token holds are requested, and "
                          "an exchanged token with any scope the inbound token lacks is refused (502). Absent: no "
                          "`scope` is sent and the exchanged token must still stay within the inbound scopes.")
    timeout_seconds: Float = Field(
        5.0, gt=0, le=60, description="Seconds the token endpoint (and discovery) may take to answer (at most 60); "
                                      "longer is a 502 `token_exchange_failed`.")


class DpopOptions(Model):
    """How DPoP proofs (RFC 9449) are checked on a resource with `dpop: required | allowed`."""

    algorithms: tuple[Str, ...] = Field(
        ("ES256", "EdDSA", "PS256", "RS256"),
        description="JWS `alg` values accepted for proofs (case-sensitive, at least one); advertised as "
                    "`dpop_signing_alg_values_supported` and in the challenge's `algs`. Only asymmetric "
                    "algorithms: `none` and HS256/384/512 are refused at load time.")
    max_age_seconds: Int = Field(
        300, ge=1, le=3600,
        description="Oldest accepted proof `iat`, in seconds before now (plus `clock_skew_seconds`; 1 to 3600); "
                    "each proof's `jti` is remembered that long. With `require_nonce`, also how long a server "
                    "nonce lasts (between one and two times this).")
    clock_skew_seconds: Int = Field(
        30, ge=0, le=300, description="Leeway in seconds for the proof's `iat` (0 to 300).")
    require_nonce: Bool = Field(
        False, description="Demand a server-provided `nonce` in every proof (RFC 9449 section 9): a proof without "
                           "a current one is answered 401 `use_dpop_nonce` with a fresh `DPoP-Nonce` header.")


class ClientCertHeader(Model):
    """The RFC 9440 `Client-Cert` header (the DER certificate as a structured-field byte sequence)
    set by a TLS-terminating proxy in front of the enforcer."""

    trusted_proxies: tuple[Str, ...] = Field(
        description="IP addresses or CIDR ranges (`10.0.0.0/8`, `127.0.0.1`) of the proxies whose `Client-Cert` "
                    "is believed: the request's TCP peer must be one of them. From any other peer the header is "
                    "ignored. At least one. `Client-Cert` and `Client-Cert-Chain` never reach the upstream.")


def _trust_domain_keys(schema: dict[str, object]) -> None:
    """A mapping keyed by SPIFFE trust domain names: editors flag any other key."""
    schema["patternProperties"] = {"^[a-z0-9._-]+$": schema.pop("additionalProperties")}
    schema["additionalProperties"] = False


class JwtSvidOptions(Model):
    """SPIFFE JWT-SVIDs sent in a request header, validated offline against SPIFFE bundles."""

    header: Str = Field(
        "Workload-Identity",
        description="Request header carrying the JWT-SVID (the bare compact JWT; one header). Never forwarded to "
                    "the upstream. Not `Authorization`, which carries the access token.")
    audience: tuple[Str, ...] | None = Field(
        None, description="Audiences this enforcer accepts: the SVID's `aud` must contain at least one of them. "
                          "Absent: the resource's `resource` identifier.")
    bundles: dict[Str, Str] = Field(
        json_schema_extra=_trust_domain_keys,
        description="Trust domain (`corp.example`) -> SPIFFE JWT bundle file (a JWKS whose keys have `use: "
                    "jwt-svid` and a `kid`), relative to this policy file; a file that changes is re-read within "
                    "10 seconds. An SVID is checked with the bundle of the trust domain of its `sub`, never "
                    "chosen by `iss`; an SVID from any other trust domain is refused.")
    clock_skew_seconds: Int = Field(
        30, ge=0, le=300, description="Leeway in seconds for the SVID's `exp` and `nbf` (0 to 300).")


class WorkloadIdentity(Model):
    """How the calling workload (the agent's process, not the user) proves who it is. The verified
    identity, a SPIFFE ID, is what rules' `workloads` and `workload_is_client_id` see and what the
    upstream receives as `X-Enforcer-Workload`. A credential that is sent must verify; when more
    than one is sent they must name the same workload."""

    mtls: Bool = Field(
        False, description="Take the identity from the client certificate of the TLS connection (the URI SAN of a "
                           "SPIFFE X.509-SVID); needs `enforcer serve --tls-cert --tls-key --tls-client-ca`. "
                           "Tokens bound to a certificate (`cnf.x5t#S256`, RFC 8705) are checked on every resource.")
    client_cert_header: ClientCertHeader | None = Field(
        None, description="Take the client certificate from the RFC 9440 `Client-Cert` header, only when the request "
                          "comes from a trusted proxy (a TLS terminator); it also serves `cnf.x5t#S256` binding.")
    jwt_svid: JwtSvidOptions | None = Field(
        None, description="Accept a SPIFFE JWT-SVID in a request header as the workload identity.")
    required: Bool = Field(
        False, description="Refuse requests that prove no workload identity (401 `invalid_workload`). Off: such "
                           "requests go on without one, and only rules without workload conditions can match them.")


class Resource(Model):
    """One protected resource: an RFC 8707 identifier in front of one upstream."""

    id: Str = Field(
        description="Name of the resource, unique across all policy files; used in metrics, audit records and "
                    "logs, and as the default `resource_name`.")
    resource: Str = Field(
        description="RFC 8707 resource identifier: an absolute https URL (plain http only for loopback hosts), "
                    "no fragment. Tokens must carry it in `aud`; the RFC 9728 metadata URL derives from it.")
    match: Match = Field(Match(), description="Which requests belong to this resource.")
    upstream: Str = Field(
        description="Base http(s) URL, without query or fragment, that matched requests are forwarded to; the "
                    "rest of the path after `match.path_prefix` is appended.")
    issuers: tuple[Str, ...] = Field(
        description="Ids of the issuers (defined in any loaded policy file) whose tokens are accepted; at least one.")
    scopes_supported: tuple[Str, ...] = Field(
        (), description="Scopes advertised in the RFC 9728 metadata and in challenges to clients that sent no "
                        "token. Informational: the rules decide what a scope grants.")
    resource_name: Str | None = Field(
        None, description="Human-readable name in the RFC 9728 metadata; absent: the resource `id`.")
    forward_token: Bool = Field(
        False, description="Pass the agent's `Authorization` header (and its `Signature` / `Signature-Input`) "
                           "to the upstream. Off: the upstream sees only the X-Enforcer-* identity headers.")
    downstream_token: DownstreamToken | None = Field(
        None, description="Exchange the verified token (RFC 8693) for one scoped to the upstream and send that as "
                          "the upstream's `Authorization: Bearer`; not together with `forward_token: true`. "
                          "Absent: the upstream gets no token unless `forward_token` is on.")
    public_origin: Str | None = Field(
        None, description="External scheme://host[:port] (no path) that clients call; used for "
                          "X-Forwarded-Proto/-Host and the signature components `@scheme`, `@authority` and "
                          "`@target-uri`. Absent: the origin of `resource`.")
    limits: Limits = Field(Limits(), description="Bounds on what is read from requests.")
    timeouts: Timeouts = Field(Timeouts(), description="Time limits towards the upstream.")
    signatures: Signatures | None = Field(
        None, description="RFC 9421 request signatures this resource demands; absent: signatures are not checked.")
    dpop: Literal["required", "allowed", "off"] = Field(
        "off", description="DPoP (RFC 9449): `required` accepts only `Authorization: DPoP` with DPoP-bound tokens "
                           "and a valid `DPoP` proof; `allowed` also accepts Bearer for tokens without `cnf.jkt`; "
                           "`off` accepts Bearer only. In every mode a token bound by `cnf.jkt` sent as Bearer "
                           "is refused (with `off`, unless required signatures use `keys.from_token_cnf`).")
    dpop_options: DpopOptions = Field(
        DpopOptions(), description="How DPoP proofs are checked (used when `dpop` is not `off`).")
    workload_identity: WorkloadIdentity | None = Field(
        None, description="How the calling workload proves its identity (mTLS client certificate, trusted "
                          "`Client-Cert` header, JWT-SVID). Absent: no workload identity is taken, and rules with "
                          "workload conditions never match.")
    mode: Literal["enforce", "shadow"] = Field(
        "enforce", description="`shadow`: every rule of the resource is a shadow rule; tokens are still verified.")
    mcp: McpSetting | None = Field(
        None, description="`true` (or options): the upstream is an MCP server. Every POST body must be JSON-RPC "
                           "and is judged message by message, list results are filtered and sessions bound to "
                           "their caller. Absent: `true` when a rule has an `mcp` condition, else `false`.")
    rules: tuple[Rule, ...] = Field(
        (), description="Access rules: any matching `deny` wins, else any matching `allow`, else the request is "
                        "denied (a resource without rules denies everything).")


    @property
    def mcp_options(self) -> McpOptions | None:
        """The MCP handling of this resource, or None for a plain HTTP resource."""
        if isinstance(self.mcp, McpOptions):
            return self.mcp
        if self.mcp or any(rule.mcp is not None for rule in self.rules):
            return McpOptions()
        return None


class PolicyFile(Model):
    """One policy file. Several files may be loaded together; ids are unique across all of them."""

    version: Literal[1] = Field(description="Version of the policy file format; only `1` exists.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_an_integer(cls, value: object) -> object:
        """``Literal[1]`` alone would take ``true`` and ``1.0`` (they equal 1 in Python): refuse them."""
        if type(value) is not int:
            raise PydanticCustomError("literal_error", "Input should be 1")
        return value
    issuers: tuple[Issuer, ...] = Field(
        (), description="Authorization servers whose access tokens are trusted; resources of any loaded file "
                        "refer to them by id.")
    resources: tuple[Resource, ...] = Field(
        (), description="Protected resources: each routes a path prefix (and optionally a host) to one upstream "
                        "and has its own rules.")
