"""Everything the proxy derives from one loaded policy, built once and swapped as a whole.

A policy reload must never leave a request half on the old policy and half on the new one,
so the router, the token and signature verifiers, the compiled rules and the metadata index
live together in one ``PolicyState``. The app reads its current state once when a request
starts and uses that object to the end: a request in flight finishes on the policy it began
with, and a swap is one attribute assignment.

Key caches are the expensive part (a JWKS fetch, a refresh loop). A new state takes over the
cache of every issuer, and the agent key ring of every signed resource, whose settings did not
change, keys and all; only new or changed ones start empty and fetch. Token exchangers
(``downstream_token``) are carried over the same way, with their cached downstream tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from enforcer.auth.dpop import DPoPVerifier
from enforcer.auth.httpsig import SignatureVerifier
from enforcer.auth.jwks import KeyCache
from enforcer.auth.keys import SignatureKeyring
from enforcer.auth.keysources import make_source
from enforcer.auth.replay import ReplayCache
from enforcer.auth.tokens import TokenVerifier
from enforcer.clock import Clock
from enforcer.mcp.sessions import SessionStore
from enforcer.metadata import MetadataIndex
from enforcer.pipeline import Pipeline
from enforcer.policy.loader import Policy
from enforcer.policy.model import Resource
from enforcer.proxy.downstream import TokenExchanger
from enforcer.routing import Route


@dataclass(frozen=True)
class Services:
    """What every state shares with the app and with the states before and after it."""

    http: httpx.AsyncClient
    clock: Clock
    replay: ReplayCache
    sessions: SessionStore  # MCP session bindings (the same kind of store as the nonces)
    on_fetch: Callable[[str, bool], None]  # (issuer id, fetch succeeded): the JWKS fetch metric


@dataclass(frozen=True)
class PolicyState:
    policy: Policy
    keys: dict[str, KeyCache]  # issuer id -> its key cache
    signatures: dict[str, SignatureVerifier]  # resource id -> its request-signature verifier
    pipeline: Pipeline
    metadata: MetadataIndex
    #: resource id -> its RFC 8693 exchanger (only resources with ``downstream_token``)
    exchangers: dict[str, TokenExchanger] = field(default_factory=dict)

    @classmethod
    def build(cls, policy: Policy, services: Services, previous: PolicyState | None = None) -> PolicyState:
        keys = {issuer_id: _issuer_keys(issuer_id, policy, services, previous) for issuer_id in policy.issuers}
        signatures = {r.id: _signature_verifier(r, services, previous)
                      for r in policy.resources if r.signatures is not None}
        # DPoP proofs' jti share the replay store of signature nonces (memory, or Redis across replicas)
        dpop = {r.id: DPoPVerifier(r, services.replay, services.clock) for r in policy.resources if r.dpop != "off"}
        pipeline = Pipeline(policy, TokenVerifier(keys, services.clock), signatures, services.sessions, dpop=dpop)
        exchangers = {r.id: _exchanger(r, services, previous) for r in policy.resources if r.downstream_token}
        return cls(policy, keys, signatures, pipeline, MetadataIndex(policy.resources), exchangers=exchangers)

    def key_caches(self) -> Iterator[KeyCache]:
        """Every key cache this state reads: issuers' and agents'."""
        yield from self.keys.values()
        for verifier in self.signatures.values():
            yield from verifier.keyring.caches


def _issuer_keys(issuer_id: str, policy: Policy, services: Services, previous: PolicyState | None) -> KeyCache:
    issuer = policy.issuers[issuer_id]
    if previous is not None and previous.policy.issuers.get(issuer_id) == issuer:
        return previous.keys[issuer_id]
    cache = KeyCache(issuer, make_source(issuer, services.http), services.clock)
    cache.on_fetch = lambda ok: services.on_fetch(issuer_id, ok)
    return cache


def _exchanger(resource: Resource, services: Services, previous: PolicyState | None) -> TokenExchanger:
    """The previous exchanger of this resource (its cached tokens too) when its ``downstream_token``
    did not change, else a new one."""
    config = resource.downstream_token
    assert config is not None
    before = previous.exchangers.get(resource.id) if previous is not None else None
    if before is not None and before.config == config:
        return before
    return TokenExchanger(resource.id, config, services.http, services.clock)


def _signature_verifier(resource: Resource, services: Services, previous: PolicyState | None) -> SignatureVerifier:
    config = resource.signatures
    assert config is not None
    keyring = _reusable_keyring(resource, previous)
    if keyring is None:
        keyring = SignatureKeyring(resource.id, config.keys, config.algorithms, services.clock, services.http)
    route = Route.for_resource(resource)
    return SignatureVerifier(config, keyring, services.replay, services.clock, resource_id=resource.id,
                             public_scheme=route.public_scheme, public_host=route.public_host)


def _reusable_keyring(resource: Resource, previous: PolicyState | None) -> SignatureKeyring | None:
    """The previous key ring of this resource when it reads the same keys the same way."""
    if previous is None or resource.id not in previous.signatures:
        return None
    before = next(r for r in previous.policy.resources if r.id == resource.id).signatures
    after = resource.signatures
    assert before is not None and after is not None
    if (before.keys, before.algorithms) != (after.keys, after.algorithms):
        return None
    return previous.signatures[resource.id].keyring
