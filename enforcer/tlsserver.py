"""TLS on the proxy listener (``enforcer serve --tls-cert --tls-key [--tls-client-ca]``).

uvicorn terminates TLS but leaves the client certificate out of the ASGI scope. The protocol
class here (passed as ``uvicorn.Config(http=...)``) reads the certificate the TLS layer verified
once per connection and adds it to the scope of every request on that connection as the ASGI
TLS extension: ``scope["extensions"]["tls"]["client_cert_chain"]`` (a list holding the leaf, PEM).
``app._request_info`` turns that into ``RequestInfo.client_cert`` (DER).

With a client CA, client certificates are required (``ssl.CERT_REQUIRED``): a connection
without one, or with one the CA did not issue, fails its handshake and never reaches the app.
The single-process server and every worker of ``--workers N`` build their listener from
``server_settings`` alike.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseProtocol  # type: ignore[assignment]


class _WithTls:
    """The app, for one connection whose client presented a certificate: each request's scope
    gets the TLS extension first."""

    __slots__ = ("app", "tls")

    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app, self.tls = app, tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {"tls": self.tls}
        else:
            extensions["tls"] = self.tls
        await self.app(scope, receive, send)


class ClientCertProtocol(_BaseProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol, plus the verified client certificate in the scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = _WithTls(self.app, {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)]})


def server_settings(tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for the proxy listener (none without TLS)."""
    if tls_cert is None:
        return {}
    settings: dict[str, Any] = {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key, "http": ClientCertProtocol}
    if tls_client_ca is not None:
        settings.update(ssl_ca_certs=tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return settings


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    """Without this, OpenSSL would prompt on the terminal for the key's passphrase (and hang a container)."""
    raise _EncryptedKey


def tls_problem(tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None) -> str | None:
    """Why these files cannot make the listener's TLS context, or None (checked before serving,
    so a bad file is one clear line, not a traceback from inside uvicorn)."""
    if tls_cert is None and tls_key is None and tls_client_ca is None:
        return None
    if tls_cert is None or tls_key is None:
        return "--tls-cert and --tls-key go together (and --tls-client-ca needs both)"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls_cert, tls_key, password=_no_password)
    except _EncryptedKey:
        return "--tls-key: the key is encrypted; give an unencrypted PEM key (e.g. from a mounted secret)"
    except (OSError, ssl.SSLError) as exc:
        return f"--tls-cert/--tls-key: cannot load the certificate and key ({exc.strerror or exc})"
    if tls_client_ca is not None:
        try:
            context.load_verify_locations(tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            return f"--tls-client-ca: cannot load the CA certificates ({exc.strerror or exc})"
    return None
