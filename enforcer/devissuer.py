"""A local, development-only token issuer for the demo and the README walkthrough.

It keeps an ES256 key in a private directory (created on first use, mode 0700/0600),
publishes the public half as a JWKS file that ``policies/example.yaml`` trusts, and
mints RFC 9068 access tokens with it. Nothing here is used by ``serve``: a production
policy never names this JWKS, and the key is generated per machine, never shipped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

DEV_ISSUER = "https://dev-issuer.enforcer.invalid"
DEFAULT_AUDIENCE = "http://127.0.0.1:8080/mcp"


def default_dev_dir() -> Path:
    return Path(os.environ.get("ENFORCER_DEV_DIR", ".enforcer-dev"))


def ensure_key(directory: Path) -> ECKey:
    """Load the dev key, creating it and its JWKS on first use."""
    key_file, jwks_file = directory / "issuer-key.json", directory / "jwks.json"
    if key_file.exists():
        key = ECKey.import_key(json.loads(key_file.read_text()))
    else:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"})
        key.ensure_kid()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(key.as_dict(private=True), handle)
    if not jwks_file.exists():
        jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}, indent=2) + "\n")
    return key


def ensure_agent_key(directory: Path) -> dict[str, object]:
    """The demo agent's Ed25519 signing key (private JWK), created on first use.

    ``enforcer token --bind-agent-key`` puts its public half in the token's ``cnf.jwk``;
    ``enforcer sign --key .enforcer-dev/agent-key.json`` signs requests with it."""
    key_file = directory / "agent-key.json"
    if key_file.exists():
        return json.loads(key_file.read_text())
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "demo-agent"}, private=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(key.as_dict(private=True), handle)
    return key.as_dict(private=True)


def public_jwk(jwk: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in jwk.items() if name not in ("d", "p", "q", "dp", "dq", "qi", "k")}


def mint(directory: Path, *, sub: str, client_id: str, scope: str, audience: str,
         ttl_seconds: int = 3600, extra: dict[str, object] | None = None) -> str:
    key = ensure_key(directory)
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": DEV_ISSUER, "sub": sub, "client_id": client_id, "aud": audience,
        "iat": now, "exp": now + ttl_seconds, "jti": uuid.uuid4().hex,
    }
    if scope:
        claims["scope"] = scope
    claims.update(extra or {})
    header = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=["ES256"])
