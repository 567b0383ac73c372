"""The agent side: sign outgoing requests the way an enforcer verifies them.

``HTTPSignatureAuth`` is an ``httpx.Auth``; with it an agent calls a protected resource
in three lines::

    key = SigningKey.from_jwk_file("agent.jwk.json")
    auth = HTTPSignatureAuth(key, token=access_token)
    httpx.post("https://mcp.example.test/mcp", json=call, auth=auth)

It adds ``Content-Digest`` (sha-256 of the body) and a ``Signature-Input`` /
``Signature`` pair with ``created``, a fresh ``nonce``, the ``keyid`` and, when given, a
``tag``. The signature base is built by the same code the enforcer verifies with
(``auth/sigbase.py``), so the two agree by construction. ``enforcer sign`` wraps
``sign_headers`` for curl users.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from enforcer.auth import structured
from enforcer.auth.digest import content_digest
from enforcer.auth.jwks import import_jwk
from enforcer.auth.keys import ALGORITHM_CLASSES, bind_algorithm
from enforcer.auth.sigbase import SignedMessage, headers_from_pairs, normalize_authority, signature_base
from enforcer.auth.structured import InnerList, Item

DEFAULT_COMPONENTS = ("@method", "@target-uri", "authorization", "content-digest", "content-type")
@dataclass(frozen=True)
class SigningKey:
    """A private key (or shared secret) bound to one RFC 9421 algorithm."""

    keyid: str | None
    alg: str
    _signer: Any

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any], *, keyid: str | None = None) -> SigningKey:
        """The key of a private JWK (or an oct secret), bound to its algorithm exactly as
        the enforcer binds the public half (``keys.bind_algorithm``)."""
        alg = bind_algorithm(jwk)
        key = import_jwk(jwk)
        if jwk.get("kty") == "oct":
            signer = ALGORITHM_CLASSES[alg](shared_secret=key.raw_value)
        else:
            if not key.is_private:
                raise ValueError("signing needs the private key (the JWK has no 'd')")
            signer = ALGORITHM_CLASSES[alg](private_key=key.raw_value)
        return cls(keyid if keyid is not None else jwk.get("kid"), alg, signer)

    @classmethod
    def from_jwk_file(cls, path: str, *, keyid: str | None = None) -> SigningKey:
        with open(path, "rb") as handle:
            return cls.from_jwk(json.load(handle), keyid=keyid)

    def sign(self, base: bytes) -> bytes:
        return self._signer.sign(base)


def sign_headers(key: SigningKey, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes = b"", *,
                 components: tuple[str, ...] = DEFAULT_COMPONENTS, tag: str | None = None, nonce: bool = True,
                 expires_in: int | None = None, label: str = "sig1", public_origin: str | None = None,
                 now: Callable[[], float] = time.time) -> list[tuple[str, str]]:
    """The headers to add to a request so that it carries a signature over ``components``.

    Components naming a header the request does not have are left out (``content-type``
    on a GET), except ``content-digest``, which is added for any request with a body.
    ``public_origin`` (``https://host[:port]``) is what ``@authority``/``@target-uri``
    name when the request is sent elsewhere, e.g. through a port-forward."""
    pairs = list(headers)
    added: list[tuple[str, str]] = []
    if "content-digest" in components and (body or method not in ("GET", "HEAD", "DELETE", "OPTIONS")):
        if not any(name.lower() == "content-digest" for name, _ in pairs):
            added.append(("Content-Digest", content_digest(body)))
    message = _message(method, url, [*pairs, *added], public_origin)
    covered = tuple(c for c in components if c.startswith("@") or c in message.headers)
    params: dict[str, structured.BareItem] = {"created": int(now())}
    if expires_in is not None:
        params["expires"] = int(now()) + expires_in
    if nonce:
        params["nonce"] = base64.urlsafe_b64encode(os.urandom(18)).decode()
    if key.keyid is not None:
        params["keyid"] = key.keyid
    params["alg"] = key.alg
    if tag is not None:
        params["tag"] = tag
    inner = InnerList(tuple(Item(c) for c in covered), params)
    base = signature_base(inner, message)
    signature = key.sign(base.encode("ascii"))
    added.append(("Signature-Input", structured.serialize_dictionary({label: inner})))
    added.append(("Signature", structured.serialize_dictionary({label: Item(signature)})))
    return added


def _message(method: str, url: str, headers: list[tuple[str, str]], public_origin: str | None) -> SignedMessage:
    parsed = httpx.URL(url)
    target = parsed.raw_path.decode("ascii")
    raw_path, question, raw_query = target.partition("?")
    origin = httpx.URL(public_origin) if public_origin else parsed
    authority = normalize_authority(origin.scheme, origin.netloc.decode("ascii"))
    return SignedMessage(method=method, scheme=origin.scheme, authority=authority, path=raw_path or "/",
                         query=raw_query if question else None, headers=headers_from_pairs(headers))


class HTTPSignatureAuth(httpx.Auth):
    """Signs every request (and, given ``token``, sets ``Authorization: Bearer``)."""

    requires_request_body = True

    def __init__(self, key: SigningKey, *, token: str | None = None,
                 components: tuple[str, ...] = DEFAULT_COMPONENTS, tag: str | None = None,
                 nonce: bool = True, expires_in: int | None = None, public_origin: str | None = None) -> None:
        self.key, self.token = key, token
        self.options = {"components": components, "tag": tag, "nonce": nonce, "expires_in": expires_in,
                        "public_origin": public_origin}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token is not None:
            request.headers["Authorization"] = f"Bearer {self.token}"
        pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        for name, value in sign_headers(self.key, request.method, str(request.url), pairs, request.content,
                                        **self.options):  # type: ignore[arg-type]
            request.headers[name] = value
        yield request
