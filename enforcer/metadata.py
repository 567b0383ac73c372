"""RFC 9728 protected-resource metadata and the ``WWW-Authenticate`` challenges that point to it.

Every URL here is derived from the configured ``resource`` identifier, never from the
Host or X-Forwarded-Host of a request: a client discards metadata whose ``resource``
differs from the URL it called, and an attacker-chosen Host must not be able to
redirect an agent to another authorization server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from enforcer.errors import EnforcerError
from enforcer.policy.model import Issuer, Resource

WELL_KNOWN = "/.well-known/oauth-protected-resource"
_UNSAFE_IN_QUOTED = str.maketrans({'"': "'", "\\": "/"})


def metadata_path(resource_uri: str) -> str:
    """Path (and query) of the metadata document, per RFC 9728 section 3.1 path insertion."""
    parts = urlsplit(resource_uri)
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    return WELL_KNOWN + path + (f"?{parts.query}" if parts.query else "")


def metadata_url(resource_uri: str) -> str:
    parts = urlsplit(resource_uri)
    return f"{parts.scheme}://{parts.netloc}{metadata_path(resource_uri)}"


def metadata_document(resource: Resource, issuers: dict[str, Issuer]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": resource.resource,
        "authorization_servers": [issuers[i].issuer for i in resource.issuers],
        "bearer_methods_supported": ["header"],
        "resource_name": resource.resource_name or resource.id,
    }
    scopes = [s for s in resource.scopes_supported if s != "offline_access"]
    if scopes:
        document["scopes_supported"] = scopes
    if resource.signatures is not None:
        document["http_message_signatures"] = signature_requirements(resource)
    if resource.dpop != "off":  # RFC 9728 section 2 (RFC 9449)
        document["dpop_signing_alg_values_supported"] = list(resource.dpop_options.algorithms)
        document["dpop_bound_access_tokens_required"] = resource.dpop == "required"
    workload = resource.workload_identity
    if workload is not None and (workload.mtls or workload.client_cert_header is not None):
        # RFC 9728 section 2 (RFC 8705): this resource sees client certificates and checks cnf x5t#S256
        document["tls_client_certificate_bound_access_tokens"] = True
    return document


def signature_requirements(resource: Resource) -> dict[str, Any]:
    """What an agent must sign, as an extension member (RFC 9728 section 2 allows them;
    no registered member describes RFC 9421 request signatures)."""
    signatures = resource.signatures
    assert signatures is not None
    requirements: dict[str, Any] = {
        "required": signatures.required,
        "covered_components": list(signatures.components),
        "algorithms": list(signatures.algorithms),
        "max_age_seconds": signatures.max_age_seconds,
        "nonce_required": signatures.require_nonce,
        "content_digest_algorithms": ["sha-256", "sha-512"],
        "key_binding": "token_cnf" if signatures.keys.from_token_cnf else "keyid",
    }
    if signatures.tag is not None:
        requirements["tag"] = signatures.tag
    return requirements


def challenge(error: EnforcerError, resource: Resource | None) -> str:
    """``Bearer k="v", ...`` for ``error``; ``resource_metadata`` whenever a resource is known.

    A resource with DPoP (RFC 9449 section 7.1) answers ``DPoP error=..., algs="<proof algs>", ...``
    when it takes DPoP only (``dpop: required``) or the error is about DPoP; with ``dpop: allowed``
    a request without credentials is offered both schemes in one field (``Bearer ..., DPoP algs=...``)."""
    params = list(error.challenge_params())
    sent = len(params)  # no params: the request carried no credentials
    if resource is not None:
        params.append(("resource_metadata", metadata_url(resource.resource)))
        if not params[:-1] and resource.scopes_supported:
            # no credentials sent: tell the client which scopes to ask for (MCP scope selection)
            params.append(("scope", " ".join(s for s in resource.scopes_supported if s != "offline_access")))
    if resource is not None and resource.dpop != "off":
        algs = ("algs", " ".join(resource.dpop_options.algorithms))
        if resource.dpop == "required" or error.dpop_scheme:
            return "DPoP " + _rendered([*params[:sent], algs, *params[sent:]])
        if not sent:
            return "Bearer " + _rendered(params) + ", DPoP " + _rendered([algs])
    rendered = _rendered(params)
    return "Bearer" + (" " + rendered if rendered else "")


def _rendered(params: list[tuple[str, str]]) -> str:
    return ", ".join(f'{name}="{_quoted(value)}"' for name, value in params)


def _quoted(value: str) -> str:
    """RFC 6750 section 3 forbids '"' and '\\' in these values; keep them printable ASCII."""
    cleaned = value.translate(_UNSAFE_IN_QUOTED)
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in cleaned)


class MetadataIndex:
    """Which resource's document a metadata path serves. Identifiers that differ only in
    their host (``https://a.test/mcp``, ``https://b.test/mcp``) share a path; the Host picks
    among them exactly as routing does (``match.host`` first, then a resource without one).
    With a single resource, the root form is served too (RFC 9728 / MCP client fallback)."""

    def __init__(self, resources: tuple[Resource, ...]) -> None:
        self._by_path: dict[str, list[Resource]] = {}
        for resource in resources:
            self._by_path.setdefault(metadata_path(resource.resource), []).append(resource)
        if len(resources) == 1:
            self._by_path.setdefault(WELL_KNOWN, [resources[0]])

    def lookup(self, path: str, host: str) -> Resource | None:
        candidates = self._by_path.get(path, [])
        host = host.lower()
        for resource in candidates:
            if resource.match.host is not None and resource.match.host.lower() == host:
                return resource
        return next((r for r in candidates if r.match.host is None), None)
