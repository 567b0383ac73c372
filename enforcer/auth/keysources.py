"""Where an issuer's JWKS comes from: a file, a URL, or RFC 8414 / OpenID discovery.

A source only fetches bytes (capped, no redirects, status 200) and says how long they may
be cached; parsing and keeping keys is ``jwks.py``'s job. Discovery accepts a metadata
document only when its ``issuer`` equals the configured issuer exactly, and a ``jwks_uri``
only over https (or on a loopback host).
"""

from __future__ import annotations

import os
import re
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from enforcer.auth import strictjson
from enforcer.policy.checks import is_loopback_host
from enforcer.policy.model import Issuer

MAX_JWKS_BYTES = 1024 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)


class KeySourceError(Exception):
    """A JWKS could not be fetched or parsed; the message is safe to log."""


class KeySource(Protocol):
    async def fetch(self) -> tuple[bytes, int | None]:
        """JWKS bytes and the max-age the source announced (None when it said nothing)."""
        ...

    def describe(self) -> str: ...


class FileKeySource:
    def __init__(self, path: str) -> None:
        self.path = path

    async def fetch(self) -> tuple[bytes, int | None]:
        try:
            size = os.path.getsize(self.path)
            if size > MAX_JWKS_BYTES:
                raise KeySourceError(f"{self.path} is larger than {MAX_JWKS_BYTES} bytes")
            with open(self.path, "rb") as handle:
                return handle.read(), None
        except OSError as exc:
            raise KeySourceError(f"cannot read {self.path}: {exc.strerror}") from exc

    def describe(self) -> str:
        return self.path


class UriKeySource:
    def __init__(self, uri: str, client: httpx.AsyncClient) -> None:
        self.uri = uri
        self.client = client

    async def fetch(self) -> tuple[bytes, int | None]:
        response = await get_capped(self.client, self.uri)
        return response.content, max_age(response.headers.get("cache-control"))

    def describe(self) -> str:
        return self.uri


class DiscoveryKeySource:
    """RFC 8414 metadata, then OpenID discovery; the document's ``issuer`` must match exactly."""

    def __init__(self, issuer: str, client: httpx.AsyncClient) -> None:
        self.issuer = issuer
        self.client = client
        self.jwks: UriKeySource | None = None

    def metadata_urls(self) -> list[str]:
        parts = urlsplit(self.issuer)
        path = parts.path.rstrip("/")
        origin = f"{parts.scheme}://{parts.netloc}"
        return [f"{origin}/.well-known/oauth-authorization-server{path}",
                f"{origin}{path}/.well-known/openid-configuration"]

    async def fetch(self) -> tuple[bytes, int | None]:
        if self.jwks is None:
            self.jwks = UriKeySource(await self._discover(), self.client)
        return await self.jwks.fetch()

    async def _discover(self) -> str:
        errors = []
        for url in self.metadata_urls():
            try:
                response = await get_capped(self.client, url)
                document = strictjson.loads(response.content, max_bytes=MAX_JWKS_BYTES)
            except (KeySourceError, strictjson.StrictJSONError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                errors.append(f"{url}: metadata issuer does not equal the configured issuer")
                continue
            jwks_uri = document.get("jwks_uri")
            parts = urlsplit(jwks_uri) if isinstance(jwks_uri, str) else None
            if parts is None or not (parts.scheme == "https" or is_loopback_host(parts.hostname)):
                errors.append(f"{url}: jwks_uri missing or not https")
                continue
            return str(jwks_uri)
        raise KeySourceError("discovery failed: " + "; ".join(errors))

    def describe(self) -> str:
        return f"discovery of {self.issuer}"


async def get_capped(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET with no redirects, status 200 required, body capped."""
    try:
        async with client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise KeySourceError(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeySourceError(f"{url} sent more than {MAX_JWKS_BYTES} bytes")
            response._content = bytes(body)
            return response
    except httpx.HTTPError as exc:
        raise KeySourceError(f"{url}: {type(exc).__name__}") from exc


def max_age(cache_control: str | None) -> int | None:
    """Seconds the JWKS may be cached; 0 for no-store/no-cache (then the issuer's minimum applies)."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


def make_source(issuer: Issuer, client: httpx.AsyncClient) -> KeySource:
    if issuer.jwks_file is not None:
        return FileKeySource(issuer.jwks_file)
    if issuer.jwks_uri is not None:
        return UriKeySource(issuer.jwks_uri, client)
    return DiscoveryKeySource(issuer.issuer, client)
