"""RFC 9530 Content-Digest: is this body the one the agent signed?

A signature over ``content-digest`` only proves the agent wrote that header; the body
must still be hashed and compared (RFC 9421 section 7.2.8). Only the active algorithms
(``sha-256``, ``sha-512``) count: deprecated or unknown members are ignored, and a field
with none of the active ones fails. Every active member present must match.
"""

from __future__ import annotations

import hashlib
import hmac

from enforcer.auth import structured
from enforcer.auth.structured import Item, StructuredFieldError

ACTIVE_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


class DigestError(ValueError):
    """The field is malformed, has no active algorithm, or does not match the body."""

    def __init__(self, message: str, *, mismatch: bool = False) -> None:
        super().__init__(message)
        self.mismatch = mismatch


def check_content_digest(field_value: str, body: bytes) -> None:
    """Raise ``DigestError`` unless every sha-256/sha-512 member of the field matches ``body``."""
    try:
        members = structured.parse_dictionary(field_value, unique=True)
    except StructuredFieldError as exc:
        raise DigestError(f"Content-Digest is not a valid structured dictionary: {exc}") from exc
    checked = 0
    for name, member in members.items():
        hasher = ACTIVE_ALGORITHMS.get(name)
        if hasher is None:
            continue  # md5, sha, crc32c ...: never evidence of integrity (RFC 9530 section 5)
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            raise DigestError(f"Content-Digest member {name} must be a byte sequence (:base64:)")
        if not hmac.compare_digest(member.value, hasher(body).digest()):
            raise DigestError(f"the body does not match its {name} Content-Digest", mismatch=True)
        checked += 1
    if not checked:
        raise DigestError("Content-Digest has no sha-256 or sha-512 member")


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """The Content-Digest field value for ``body`` (what a signer sends)."""
    return structured.serialize_dictionary({algorithm: Item(ACTIVE_ALGORITHMS[algorithm](body).digest())})
