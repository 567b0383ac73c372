"""Workload-identity test machinery: certificates with SPIFFE IDs, TLS listeners, JWT-SVIDs.

CAs come from trustme; trustme cannot put a URI in a subjectAltName, so SPIFFE X.509-SVIDs
are built here with ``cryptography`` and signed by the trustme CA's key. Everything is made
at test time; nothing is committed.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jws

from enforcer.tlsserver import server_settings
from tests.support import SigningKey, free_port


@dataclass
class Leaf:
    """A client certificate and its key, PEM, plus the DER of the certificate."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def spiffe_leaf(ca: trustme.CA, *uris: str, is_ca: bool = False, common_name: str = "workload") -> Leaf:
    """A client certificate issued by ``ca`` whose subjectAltName holds ``uris`` (none: no SAN)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return Leaf(certificate.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


@dataclass
class TlsFiles:
    """The listener's certificate and key, and the CA file that issues client certificates."""

    cert: Path
    key: Path
    client_ca: Path


def tls_files(directory: Path, server_ca: trustme.CA, client_ca: trustme.CA) -> TlsFiles:
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca = directory / "server.pem", directory / "server.key", directory / "client-ca.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    client_ca.cert_pem.write_to_path(str(ca))
    return TlsFiles(cert, key, ca)


def client_context(server_ca: trustme.CA, leaf: Leaf | None, directory: Path) -> ssl.SSLContext:
    """A client TLS context trusting ``server_ca``, presenting ``leaf`` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    server_ca.configure_trust(context)
    if leaf is not None:
        cert, key = leaf.write(directory, f"client-{time.monotonic_ns()}")
        context.load_cert_chain(str(cert), str(key))
    return context


class TlsServerThread:
    """An ASGI app under uvicorn on 127.0.0.1 with the proxy listener's TLS settings."""

    def __init__(self, app: Any, files: TlsFiles, *, require_client_cert: bool = True) -> None:
        self.port = free_port()
        settings = server_settings(str(files.cert), str(files.key),
                                   str(files.client_ca) if require_client_cert else None)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="on",
                                access_log=False, proxy_headers=False, server_header=False, date_header=False,
                                **settings)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("TLS server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def https_client(url: str, context: ssl.SSLContext) -> httpx.Client:
    return httpx.Client(base_url=url, verify=context, timeout=10)


# -- JWT-SVIDs ---------------------------------------------------------------------------------


def bundle(*keys: SigningKey, use: str = "jwt-svid", with_alg: bool = False) -> dict[str, Any]:
    """A SPIFFE bundle (JWKS) with ``keys`` as ``use`` keys (``alg`` only with ``with_alg``)."""
    document = []
    for key in keys:
        jwk = key.public_jwk(with_alg=with_alg)
        jwk["use"] = use
        document.append(jwk)
    return {"keys": document}


def write_bundle(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


def svid(key: SigningKey, sub: str, aud: str | list[str], *, ttl: int = 300, typ: str | None = "JWT",
         header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A JWT-SVID for ``sub`` signed by ``key``; ``header`` adds (or, with None, drops) members."""
    now = int(time.time())
    payload = {"sub": sub, "aud": aud, "exp": now + ttl, "iat": now, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    protected: dict[str, Any] = {"alg": key.alg, "kid": key.kid, **({"typ": typ} if typ else {})}
    protected.update(header or {})
    protected = {k: v for k, v in protected.items() if v is not None}
    return jws.serialize_compact(protected, json.dumps(payload).encode(), key.key, algorithms=[protected["alg"]])
