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
from typing import Any
from urllib.parse import urlsplit

from enforcer.policy.conditions import GlobSet
from enforcer.policy.loader import SourceFile
from enforcer.policy.model import (
    ASYMMETRIC_ALGORITHMS,
    SIGNATURE_ALGORITHMS,
    Issuer,
    McpCondition,
    Resource,
    Rule,
    Signatures,
)
from enforcer.policy.problems import PolicyProblem, close_match, located, position
from enforcer.routing import DOT_OR_EMPTY_SEGMENT, METHOD

_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
#: the methods whose target each MCP name condition reads
_MCP_TARGETS = {"tools": ("tools/call",), "prompts": ("prompts/get",),
                "resources": ("resources/read", "resources/subscribe", "resources/unsubscribe")}


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
    if resource.mcp is False and any(rule.mcp is not None for rule in resource.rules):
        yield ("mcp",), "invalid_value", "rules of this resource have mcp conditions; remove `mcp: false`"
    seen_rules: set[str] = set()
    for r, rule in enumerate(resource.rules):
        if rule.id in seen_rules:
            yield ("rules", r, "id"), "duplicate_id", f"rule id {rule.id!r} is used twice in this resource"
        seen_rules.add(rule.id)
        for sub, code, message in _rule_problems(rule, resource.match.path_prefix.rstrip("/") or "/"):
            yield ("rules", r, *sub), code, message


_FIELD_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
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


def _rule_problems(rule: Rule, prefix: str) -> Found:
    if rule.mcp is not None:
        for sub, code, message in _mcp_problems(rule.mcp):
            yield ("mcp", *sub), code, message
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
    named = [name for name in _MCP_TARGETS if getattr(mcp, name) is not None]
    if len(named) > 1:
        yield (named[1],), "unreachable_condition", \
            f"one message names a tool, a prompt or a resource, never two: split {' and '.join(named)} into two rules"
    elif named and mcp.methods:
        methods = GlobSet.compile(mcp.methods)
        targets = _MCP_TARGETS[named[0]]
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
