"""The workload stage: who the calling process is, after the token said whom it acts for.

Runs right after the access token verified (STANDARDS.md sections 12, 14 and 15):

- **Certificate binding** (RFC 8705, MT-01/MT-02), on every resource: a token whose ``cnf``
  carries ``x5t#S256`` is accepted only with the client certificate whose SHA-256 thumbprint
  (base64url of the DER) it names; no certificate or another one is ``401 invalid_token``.
- **The client certificate** of a request: from the TLS connection (``RequestInfo.client_cert``,
  verified by the listener against ``--tls-client-ca``), or, on a resource with
  ``workload_identity.client_cert_header``, from the RFC 9440 ``Client-Cert`` header when the
  TCP peer is one of its ``trusted_proxies`` (MT-04). From any other peer that header is
  ignored; it never reaches an upstream (``proxy/headers.py``).
- **The workload identity** (``Principal.workload``), on resources with ``workload_identity``:
  the SPIFFE ID in the URI SAN of that certificate (``mtls: true``, or a trusted header) and/or
  the ``sub`` of a JWT-SVID (``auth/svid.py``). A credential that is sent must verify; two that
  name different workloads are refused; with ``required: true`` a request proving none is
  ``401 invalid_workload``.

Resources without ``workload_identity`` pay one attribute test (``Principal.cnf``) per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from dataclasses import replace
from functools import lru_cache

from cryptography import x509

from enforcer.auth.structured import StructuredFieldError, parse_item
from enforcer.auth.svid import JwtSvidVerifier, SvidError, trust_domain
from enforcer.clock import Clock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import InvalidToken, InvalidWorkload
from enforcer.policy.model import WorkloadIdentity

#: request headers that carry certificates from a TLS terminator (RFC 9440); never forwarded
CLIENT_CERT_HEADERS = frozenset({b"client-cert", b"client-cert-chain"})
MAX_CERT_BYTES = 16384
_PEER_CACHE = 1024


def thumbprint(der: bytes) -> str:
    """RFC 8705 section 3.1 ``x5t#S256``: base64url (no padding) of the SHA-256 of the DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def check_certificate_binding(principal: Principal, certificate: bytes | None) -> None:
    """``InvalidToken`` unless a token bound to a certificate (``cnf.x5t#S256``) came with it."""
    cnf = principal.cnf  # an object when present (``auth/claims.py``)
    if cnf is None:
        return
    bound = cnf.get("x5t#S256")
    if bound is None:
        return
    if not isinstance(bound, str):
        raise InvalidToken("the token's cnf x5t#S256 must be a string")
    if certificate is None:
        raise InvalidToken("the token is bound to a client certificate (cnf x5t#S256); send the request over "
                           "mutual TLS with that certificate")
    if not hmac.compare_digest(thumbprint(certificate).encode("ascii"), bound.encode("utf-8")):
        raise InvalidToken("the client certificate is not the one the token is bound to (cnf x5t#S256)")


@lru_cache(maxsize=1024)
def certificate_identity(der: bytes) -> tuple[str | None, str | None]:
    """(the SPIFFE ID of a certificate or None, why it cannot name a workload or None).

    An X.509-SVID has exactly one URI SAN, a SPIFFE ID, and is not a CA certificate. A
    certificate without any URI SAN, or whose only one is not ``spiffe:``, names no workload."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None, None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
    except ValueError:
        return None, "the client certificate cannot be parsed"
    if not uris or (len(uris) == 1 and not uris[0].startswith("spiffe://")):
        return None, None
    if len(uris) > 1:
        return None, "the client certificate has more than one URI SAN; an X.509-SVID names exactly one workload"
    if is_ca:
        return None, "the client certificate is a CA certificate, not an X.509-SVID"
    try:
        trust_domain(uris[0])
    except SvidError:
        return None, "the client certificate's URI SAN is not a valid SPIFFE ID"
    return uris[0], None


def header_certificate(request: RequestInfo) -> bytes | None:
    """The DER certificate of an RFC 9440 ``Client-Cert`` header (a structured-field byte
    sequence), or None without one; ``InvalidWorkload`` when it is malformed or repeated."""
    values = request.header_values(b"client-cert")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidWorkload("send at most one Client-Cert header")
    try:
        item = parse_item(values[0].decode("latin-1"))
    except StructuredFieldError:
        raise InvalidWorkload("the Client-Cert header is not a structured-field byte sequence (RFC 9440)") from None
    if not isinstance(item.value, bytes) or not 0 < len(item.value) <= MAX_CERT_BYTES:
        raise InvalidWorkload("the Client-Cert header must hold one DER certificate as :base64:")
    return item.value


class TrustedProxies:
    """The peers whose ``Client-Cert`` header is believed: addresses and CIDR ranges."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
        self._known: dict[str, bool] = {}

    def trusts(self, peer: str | None) -> bool:
        if peer is None:
            return False
        known = self._known.get(peer)
        if known is None:
            known = self._decide(peer)
            if len(self._known) >= _PEER_CACHE:
                self._known.clear()
            self._known[peer] = known
        return known

    def _decide(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class WorkloadVerifier:
    """The workload stage of one resource with ``workload_identity``."""

    def __init__(self, config: WorkloadIdentity, resource_uri: str, clock: Clock) -> None:
        self.mtls = config.mtls
        self.required = config.required
        self.proxies = (TrustedProxies(config.client_cert_header.trusted_proxies)
                        if config.client_cert_header is not None else None)
        self.svid: JwtSvidVerifier | None = None
        self.svid_header = b""
        if config.jwt_svid is not None:
            options = config.jwt_svid
            self.svid_header = options.header.lower().encode("latin-1")
            self.svid = JwtSvidVerifier(options.audience or (resource_uri,), dict(options.bundles),
                                        options.clock_skew_seconds, clock)
        #: request headers of this resource's credentials: never forwarded upstream
        self.strip = CLIENT_CERT_HEADERS | ({self.svid_header} if self.svid_header else frozenset())
        self.missing = "this resource requires a workload identity: " + " or ".join(_sources(config))

    def certificate(self, request: RequestInfo) -> tuple[bytes | None, bool]:
        """The client certificate of ``request``, and whether it may name the workload: a
        trusted proxy's ``Client-Cert`` (the proxy's own TLS certificate is not the client's),
        else the TLS connection's (naming the workload only with ``mtls: true``)."""
        if self.proxies is not None and self.proxies.trusts(request.client):
            return header_certificate(request), True
        return request.client_cert, self.mtls

    def identify(self, request: RequestInfo, principal: Principal) -> Principal:
        """``principal`` with its verified ``workload``, or ``InvalidToken`` / ``InvalidWorkload``."""
        certificate, names_workload = self.certificate(request)
        check_certificate_binding(principal, certificate)
        workload = None
        if certificate is not None and names_workload:
            workload, problem = certificate_identity(certificate)
            if problem is not None:
                raise InvalidWorkload(problem)
        if self.svid is not None:
            from_svid = self._svid(request)
            if from_svid is not None:
                if workload is not None and from_svid != workload:
                    raise InvalidWorkload("the client certificate and the JWT-SVID name different workloads")
                workload = from_svid
        if workload is None:
            if self.required:
                raise InvalidWorkload(self.missing)
            return principal
        return replace(principal, workload=workload)

    def _svid(self, request: RequestInfo) -> str | None:
        assert self.svid is not None
        values = request.header_values(self.svid_header)
        if not values:
            return None
        if len(values) > 1:
            raise InvalidWorkload("send at most one JWT-SVID header")
        try:
            return self.svid.verify(values[0].decode("latin-1").strip())
        except SvidError as exc:
            raise InvalidWorkload(str(exc)) from None


def _sources(config: WorkloadIdentity) -> list[str]:
    sources = []
    if config.mtls:
        sources.append("a client certificate with a SPIFFE ID (mutual TLS)")
    if config.client_cert_header is not None:
        sources.append("a client certificate with a SPIFFE ID through the trusted TLS proxy")
    if config.jwt_svid is not None:
        sources.append(f"a JWT-SVID in the {config.jwt_svid.header} header")
    return sources or ["none is configured"]
