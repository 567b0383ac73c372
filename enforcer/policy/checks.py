"""Checks on the meaning of well-shaped policy files, across all files at once.

Each check yields located ``PolicyProblem``s; none stops at the first. These are the
mistakes that would otherwise fail open or fail confusingly at run time: unsafe
algorithms, two key sources, a resource trusting an issuer nobody defined, an insecure
JWKS URL, two resources claiming the same route, or an MCP condition that can never hold
(a deny rule that never matches is a hole). Each message starts with the field path
of what it is about; an issuer id nobody defined comes with the closest id that exists.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enforcer.mcp.inspect import TARGET_METHODS
from enforcer.policy.conditions import GlobSet
from enforcer.policy.loader import SourceFile
from enforcer.policy.model import (
    ASYMMETRIC_ALGORITHMS,
    SIGNATURE_ALGORITHMS,
    DownstreamToken,
    Issuer,
    McpCondition,
    Resource,
    Rule,
    Signatures,
    WorkloadIdentity,
)
from enforcer.policy.problems import PolicyProblem, close_match, located, position
from enforcer.routing import DOT_OR_EMPTY_SEGMENT, METHOD

_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def check_sources(sources: Sequence[SourceFile], *, complete: bool = True,
                  issuer_ids: Iterable[str] = ()) -> list[PolicyProblem]:
    """All semantic problems of ``sources`` (partial ones too: see ``SourceFile``).
    ``issuer_ids`` are issuer ids written in the files whose issuer has errors of its own;
    ``complete`` is false when some issuer id could not be read (a file is not YAML, an id is
    missing), and then references to issuer ids are not checked (their target may be there)."""
    problems: list[PolicyProblem] = []
    known_issuers = {i.id for s in sources for i in s.model.issuers} | set(issuer_ids) if complete else None
    seen_issuers: dict[str, str] = {}  # id -> where it was first defined
    seen_resources: dict[str, str] = {}
    seen_routes: dict[tuple[str | None, str], str] = {}  # (host, prefix) -> resource id
    seen_identifiers: dict[str, str] = {}  # resource identifier -> resource id
    for source in sources:
        def report(loc: tuple[Any, ...], code: str, message: str, suggestion: str | None = None,
                   source: SourceFile = source) -> None:
            problems.append(located(source.path, source.tree, source.tree_loc(loc), code, message,
                                    suggestion=suggestion))

        def where(loc: tuple[Any, ...], source: SourceFile = source) -> str:
            line, col = position(source.tree, source.tree_loc(loc))
            return f"{source.path}:{line}:{col}"

        for i, issuer in source.issuers():
            loc = ("issuers", i)
            if issuer.id in seen_issuers:
                report((*loc, "id"), "duplicate_id", f"issuer id {issuer.id!r} is already defined at "
                       f"{seen_issuers[issuer.id]}")
            seen_issuers.setdefault(issuer.id, where((*loc, "id")))
            for sub, code, message in _issuer_problems(issuer):
                report((*loc, *sub), code, message)
        for r, resource in source.resources():
            loc = ("resources", r)
            if resource.id in seen_resources:
                report((*loc, "id"), "duplicate_id", f"resource id {resource.id!r} is already defined at "
                       f"{seen_resources[resource.id]}")
            seen_resources.setdefault(resource.id, where((*loc, "id")))
            host, prefix = resource.match.host, resource.match.path_prefix.rstrip("/") or "/"
            route = (host.lower() if host else None, prefix)
            if route in seen_routes:
                served = f"path_prefix {prefix}, " + (f"host {host}" if host else "any host")
                report((*loc, "match"), "duplicate_route",
                       f"resource {seen_routes[route]!r} already serves this route ({served})")
            seen_routes.setdefault(route, resource.id)
            if resource.resource in seen_identifiers:
                # one identifier = one audience and one metadata document; two resources
                # sharing it would accept each other's tokens
                report((*loc, "resource"), "duplicate_resource",
                       f"resource {seen_identifiers[resource.resource]!r} already uses this identifier")
            seen_identifiers.setdefault(resource.resource, resource.id)
            for s, issuer_id in enumerate(resource.issuers):
                if known_issuers is not None and issuer_id not in known_issuers:
                    report((*loc, "issuers", s), "unknown_issuer", f"no issuer has id {issuer_id!r}",
                           close_match(issuer_id, known_issuers))
            for sub, code, message in _resource_problems(resource):
                report((*loc, *sub), code, message)
            if resource.downstream_token is not None:
                for sub, code, message in _downstream_problems(resource, Path(source.path).parent):
                    report((*loc, "downstream_token", *sub), code, message)
    return problems


Found = Iterator[tuple[tuple[Any, ...], str, str]]


def _issuer_problems(issuer: Issuer) -> Found:
    sources = [k for k in ("jwks_uri", "jwks_file", "discovery") if getattr(issuer, k)]
    if len(sources) != 1:
        found = ", ".join(sources) if sources else "none"
        yield (), "key_source", f"give exactly one of jwks_uri, jwks_file or discovery: true (found {found})"
    if not issuer.algorithms:
        yield ("algorithms",), "invalid_value", "list at least one algorithm"
    for a, alg in enumerate(issuer.algorithms):
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            yield ("algorithms", a), "unsafe_algorithm", f"{alg!r} is never accepted for access tokens"
        elif alg not in ASYMMETRIC_ALGORITHMS:
            allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            hint = next((f" (names are case-sensitive: {known!r})" for known in sorted(ASYMMETRIC_ALGORITHMS)
                         if known.lower() == alg.lower()), "")
            yield ("algorithms", a), "unknown_algorithm", f"{alg!r} is not one of {allowed}{hint}"
    if not issuer.token_types:
        yield ("token_types",), "invalid_value", "list at least one token type"
    if issuer.jwks_min_cache_seconds > issuer.jwks_max_cache_seconds:
        yield ("jwks_min_cache_seconds",), "invalid_value", "must not exceed jwks_max_cache_seconds"
    if issuer.jwks_uri is not None and (msg := _secure_url_problem(issuer.jwks_uri)):
        yield ("jwks_uri",), "insecure_url", msg
    if issuer.discovery and _secure_url_problem(issuer.issuer):
        yield ("issuer",), "insecure_url", \
            "discovery: true needs an https issuer (plain http is accepted only for loopback hosts)"


def _resource_problems(resource: Resource) -> Found:
    if msg := _resource_identifier_problem(resource.resource):
        yield ("resource",), "invalid_value", msg
    if msg := _upstream_problem(resource.upstream):
        yield ("upstream",), "invalid_value", msg
    if resource.public_origin is not None and (msg := _origin_problem(resource.public_origin)):
        yield ("public_origin",), "invalid_value", msg
    prefix = resource.match.path_prefix
    if not prefix.startswith("/") or "*" in prefix or "%" in prefix or "/." in prefix:
        yield ("match", "path_prefix"), "invalid_value", \
            f"{prefix!r} must be a plain absolute path such as /mcp (no *, %-escapes or dot segments)"
    if not resource.issuers:
        yield ("issuers",), "invalid_value", "list at least one issuer id"
    for s, scope in enumerate(resource.scopes_supported):
        if not _SCOPE_TOKEN.match(scope):
            yield ("scopes_supported", s), "invalid_value", f"{scope!r} is not a valid scope token"
    if resource.signatures is not None:
        for sub, code, message in _signature_problems(resource.signatures):
            yield ("signatures", *sub), code, message
    for sub, code, message in _dpop_problems(resource):
        yield ("dpop_options", *sub), code, message
    if resource.mcp is False and any(rule.mcp is not None for rule in resource.rules):
        yield ("mcp",), "invalid_value", "rules of this resource have mcp conditions; remove `mcp: false`"
    yield from _workload_problems(resource)
    seen_rules: set[str] = set()
    for r, rule in enumerate(resource.rules):
        if rule.id in seen_rules:
            yield ("rules", r, "id"), "duplicate_id", f"rule id {rule.id!r} is used twice in this resource"
        seen_rules.add(rule.id)
        for sub, code, message in _rule_problems(rule, resource.match.path_prefix.rstrip("/") or "/"):
            yield ("rules", r, *sub), code, message


def _dpop_problems(resource: Resource) -> Found:
    """DPoP proof algorithms: at least one, asymmetric and known (RFC 9449 section 4.3 check 5)."""
    algorithms = resource.dpop_options.algorithms
    if not algorithms:
        yield ("algorithms",), "invalid_value", "list at least one algorithm"
    for a, alg in enumerate(algorithms):
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            yield ("algorithms", a), "unsafe_algorithm", f"{alg!r} is never accepted for DPoP proofs"
        elif alg not in ASYMMETRIC_ALGORITHMS:
            allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            yield ("algorithms", a), "unknown_algorithm", f"{alg!r} is not one of {allowed}"


_FIELD_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
#: SPIFFE-ID.md section 2.1: the characters of a trust domain name
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+\Z")
#: headers that mean something else: a JWT-SVID cannot travel in them
_NOT_SVID_HEADERS = frozenset({"authorization", "proxy-authorization", "dpop", "signature", "signature-input",
                               "content-digest", "client-cert", "client-cert-chain", "cookie", "host",
                               "content-type", "content-length", "transfer-encoding", "connection",
                               "mcp-session-id", "mcp-method", "mcp-name"})


def _workload_problems(resource: Resource) -> Found:
    """``workload_identity`` itself, and rule workload conditions that can never hold (a deny
    rule that never matches is a hole): they need a resource with ``workload_identity``."""
    config = resource.workload_identity
    if config is not None:
        for sub, code, message in _workload_identity_problems(config):
            yield ("workload_identity", *sub), code, message
    for r, rule in enumerate(resource.rules):
        if rule.workloads is not None and not rule.workloads:
            yield ("rules", r, "workloads"), "invalid_value", \
                "an empty list matches nothing; remove the key to match anything"
        for w, pattern in enumerate(rule.workloads or ()):
            if not pattern:
                yield ("rules", r, "workloads", w), "invalid_value", "an empty string is not a valid value"
        if rule.workload_is_client_id is False:
            yield ("rules", r, "workload_is_client_id"), "invalid_value", \
                "only `true` is meaningful (the workload identity must equal client_id); remove the key"
        if config is None and (rule.workloads is not None or rule.workload_is_client_id):
            key = "workloads" if rule.workloads is not None else "workload_is_client_id"
            yield ("rules", r, key), "unreachable_condition", \
                "this resource has no workload_identity, so no request has a workload identity; configure " \
                "workload_identity or remove the condition"


def _workload_identity_problems(config: WorkloadIdentity) -> Found:
    if not (config.mtls or config.client_cert_header is not None or config.jwt_svid is not None):
        yield (), "invalid_value", "name at least one source: mtls: true, client_cert_header or jwt_svid"
    if config.client_cert_header is not None:
        proxies = config.client_cert_header.trusted_proxies
        if not proxies:
            yield ("client_cert_header", "trusted_proxies"), "invalid_value", \
                "list at least one proxy address; without one, remove client_cert_header"
        for p, entry in enumerate(proxies):
            try:
                ipaddress.ip_network(entry, strict=True)
            except ValueError:
                yield ("client_cert_header", "trusted_proxies", p), "invalid_value", \
                    f"{entry!r} is not an IP address or CIDR range (such as 10.0.0.0/8 or 127.0.0.1)"
    svid = config.jwt_svid
    if svid is None:
        return
    header = svid.header.lower()
    if not _FIELD_NAME.match(header) or header in _NOT_SVID_HEADERS or header.startswith("x-enforcer-"):
        yield ("jwt_svid", "header"), "invalid_value", \
            f"{svid.header!r} is not a header a JWT-SVID can travel in; use a name of its own such as Workload-Identity"
    if svid.audience is not None and (not svid.audience or not all(svid.audience)):
        yield ("jwt_svid", "audience"), "invalid_value", \
            "list at least one non-empty audience, or remove the key to use the resource identifier"
    if not svid.bundles:
        yield ("jwt_svid", "bundles"), "invalid_value", "name at least one trust domain and its bundle file"
    for domain, path in svid.bundles.items():
        if not _TRUST_DOMAIN.match(domain):
            yield ("jwt_svid", "bundles", domain), "invalid_value", \
                f"{domain[:64]!r} is not a SPIFFE trust domain name (lower-case letters, digits, '.', '-', '_')"
        elif not path:
            yield ("jwt_svid", "bundles", domain), "invalid_value", "give the path of the trust domain's bundle"


_SIGNABLE_DERIVED = frozenset({"@method", "@target-uri", "@authority", "@scheme", "@request-target",
                               "@path", "@query"})


def _signature_problems(signatures: Signatures) -> Found:
    if not signatures.components:
        yield ("components",), "invalid_value", \
            "a signature covering no components proves only key possession; list what must be signed"
    for c, component in enumerate(signatures.components):
        if component.startswith("@") and component not in _SIGNABLE_DERIVED:
            yield ("components", c), "invalid_value", \
                f"{component!r} is not a request component; use one of {', '.join(sorted(_SIGNABLE_DERIVED))}"
        elif not component.startswith("@") and not _FIELD_NAME.match(component):
            yield ("components", c), "invalid_value", f"{component!r} is not a lower-case header field name"
    if not signatures.algorithms:
        yield ("algorithms",), "invalid_value", "list at least one algorithm"
    for a, alg in enumerate(signatures.algorithms):
        if alg not in SIGNATURE_ALGORITHMS:
            yield ("algorithms", a), "unsafe_algorithm", \
                f"{alg!r} is not an RFC 9421 algorithm; use one of {', '.join(SIGNATURE_ALGORITHMS)}"
    if signatures.tag == "":
        yield ("tag",), "invalid_value", "an empty tag matches nothing; remove the key or name the application"
    keys = signatures.keys
    if not (keys.jwks_file or keys.jwks_uri or keys.from_token_cnf or keys.shared_secrets_file):
        yield ("keys",), "key_source", "give jwks_file, jwks_uri, shared_secrets_file or from_token_cnf: true"
    if keys.jwks_file and keys.jwks_uri:
        yield ("keys",), "key_source", "give jwks_file or jwks_uri, not both"
    if keys.jwks_uri and (msg := _secure_url_problem(keys.jwks_uri)):
        yield ("keys", "jwks_uri"), "insecure_url", msg
    if keys.shared_secrets_file and "hmac-sha256" not in signatures.algorithms:
        yield ("keys", "shared_secrets_file"), "invalid_value", \
            "shared secrets verify only hmac-sha256 signatures; add it to algorithms or remove the file"


def _downstream_problems(resource: Resource, base: Path) -> Found:
    """``downstream_token``: one token endpoint source, safe URLs, a target, and client credentials
    that exist (files relative to the policy file; a private key must be one the enforcer can sign with)."""
    config: DownstreamToken | None = resource.downstream_token
    assert config is not None
    if resource.forward_token:
        yield (), "invalid_value", \
            "forward_token: true would pass the caller's token on; with downstream_token the upstream gets the " \
            "exchanged token only: remove forward_token"
    sources = [k for k in ("token_endpoint", "issuer") if getattr(config, k) is not None]
    if len(sources) != 1:
        yield (), "token_endpoint_source", \
            f"give exactly one of token_endpoint or issuer (found {', '.join(sources) or 'none'})"
    for name in sources:
        if msg := _secure_url_problem(getattr(config, name)):
            yield (name,), "insecure_url", msg
    if not config.client_id:
        yield ("client_id",), "invalid_value", "an empty string is not a valid client id"
    if config.audience is None and config.resource is None:
        yield (), "invalid_value", "name the upstream with audience or resource (or both): a token for no " \
                                   "particular audience must not be sent on"
    if config.audience == "":
        yield ("audience",), "invalid_value", "an empty string is not a valid audience"
    if config.resource is not None and (msg := _exchange_resource_problem(config.resource)):
        yield ("resource",), "invalid_value", msg
    if config.scope is not None:
        if not config.scope.split():
            yield ("scope",), "invalid_value", "list at least one scope, or remove the key"
        for scope in config.scope.split():
            if not _SCOPE_TOKEN.match(scope):
                yield ("scope",), "invalid_value", f"{scope!r} is not a valid scope token"
    yield from _client_credential_problems(config, base)


def _client_credential_problems(config: DownstreamToken, base: Path) -> Found:
    wanted, other = (("client_secret_file", "private_key_file") if config.client_auth == "client_secret_basic"
                     else ("private_key_file", "client_secret_file"))
    if getattr(config, other) is not None:
        yield (other,), "invalid_value", f"client_auth {config.client_auth} does not use {other}; remove it"
    path = getattr(config, wanted)
    if path is None:
        yield (), "invalid_value", f"client_auth {config.client_auth} needs {wanted}"
        return
    from enforcer.proxy.downstream import ClientCredentialError, read_private_key, read_secret

    try:
        if wanted == "private_key_file":
            read_private_key(str(base / path))
        else:
            read_secret(str(base / path))
    except ClientCredentialError as exc:
        yield (wanted,), "invalid_value", str(exc)


def _exchange_resource_problem(url: str) -> str | None:
    """RFC 8693 section 2.1: an absolute URI without a fragment."""
    parts = urlsplit(url)
    if not parts.scheme or not (parts.netloc or parts.path) or parts.fragment or "#" in url:
        return "must be an absolute URI without a fragment"
    return None


def _rule_problems(rule: Rule, prefix: str) -> Found:
    if rule.mcp is not None:
        for sub, code, message in _mcp_problems(rule.mcp):
            yield ("mcp", *sub), code, message
    if rule.actors is not None and not rule.actors:
        yield ("actors",), "invalid_value", "an empty list matches nothing; remove the key to match anything"
    for a, actor in enumerate(rule.actors or ()):
        if not (actor if isinstance(actor, str) else actor.sub) or (not isinstance(actor, str) and actor.iss == ""):
            yield ("actors", a), "invalid_value", "an empty string is not a valid value"
    if rule.require_delegation is False and (rule.actors is not None or rule.max_delegation_depth):
        yield ("require_delegation",), "unreachable_condition", \
            "a direct token has no actor: actors and max_delegation_depth above 0 need delegated tokens"
    for name in ("client_ids", "subjects", "paths", "methods", "scopes"):
        values = getattr(rule, name)
        if values is not None and not values:
            yield (name,), "invalid_value", "an empty list matches nothing; remove the key to match anything"
        for v, value in enumerate(values or ()):
            if not value:
                yield (name, v), "invalid_value", "an empty string is not a valid value"
    for m, method in enumerate(rule.methods or ()):
        if not METHOD.match(method):
            yield ("methods", m), "invalid_value", f"{method!r} is not an upper-case HTTP method"
    for s, scope in enumerate(rule.scopes or ()):
        if scope and not _SCOPE_TOKEN.match(scope):
            yield ("scopes", s), "invalid_value", f"{scope!r} is not a valid scope token"
    for p, path in enumerate(rule.paths or ()):
        if not path:
            continue
        if not path.startswith(("/", "*")):
            yield ("paths", p), "invalid_value", f"{path!r} must start with / (or be *)"
        elif message := _unreachable_path(path, prefix):
            yield ("paths", p), "unreachable_path", message


def _mcp_problems(mcp: McpCondition) -> Found:
    """Empty lists, and combinations no single JSON-RPC message can satisfy."""
    for name in ("methods", "tools", "resources", "prompts"):
        values = getattr(mcp, name)
        if values is not None and not values:
            yield (name,), "invalid_value", "an empty list matches nothing; remove the key to match anything"
        for v, value in enumerate(values or ()):
            if not value:
                yield (name, v), "invalid_value", "an empty string is not a valid value"
    named = [name for name in TARGET_METHODS if getattr(mcp, name) is not None]
    if len(named) > 1:
        yield (named[1],), "unreachable_condition", \
            f"one message names a tool, a prompt or a resource, never two: split {' and '.join(named)} into two rules"
    elif named and mcp.methods:
        methods = GlobSet.compile(mcp.methods)
        targets = TARGET_METHODS[named[0]]
        if not any(methods.matches(method) for method in targets):
            yield ("methods",), "unreachable_condition", \
                f"{named[0]} are named only by {', '.join(targets)}, which these methods do not include"


def _unreachable_path(path: str, prefix: str) -> str | None:
    """Why a rule path can never match a routed request, if it cannot.

    Rules see the absolute, decoded, normalised path: requests with escapes that matter,
    dot or empty segments or ';' are refused before any rule runs, and only paths under
    the resource's ``path_prefix`` reach its rules. A deny rule that can never match is a
    hole, so these are load errors rather than quiet no-ops."""
    if "%" in path or ";" in path or "\\" in path:
        return (f"{path!r}: rules see the decoded path (write characters as themselves, no %-escapes), "
                "and requests with ';' or '\\' are refused before any rule runs")
    if DOT_OR_EMPTY_SEGMENT.search(path.replace("*", "x").encode()):
        return f"{path!r} has '.', '..' or empty segments, which requests may not contain"
    head = path.split("*", 1)[0]
    under_prefix = prefix == "/" or head == prefix or head.startswith(prefix + "/")
    if "*" in path:
        under_prefix = under_prefix or (prefix + "/").startswith(head)
    if not under_prefix:
        return f"{path!r} is outside this resource's path_prefix {prefix}; rule paths are absolute"
    return None


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secure_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return None
    return "must be an https URL (plain http is accepted only for loopback hosts)"


def _resource_identifier_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL (RFC 8707)"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "must use https (plain http is accepted only for loopback hosts)"
    if parts.fragment or "#" in url:
        return "must not contain a fragment"
    return None


def _upstream_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.query or parts.fragment:
        return "must not contain a query or fragment"
    return None


def _origin_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return "must be scheme://host[:port] with no path"
    return None
