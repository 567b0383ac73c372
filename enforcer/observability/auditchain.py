"""Tamper evidence for the audit trail: a SHA-256 hash chain and signed checkpoints.

Every chained record carries ``prev`` (the ``hash`` of the record before it, 64 zeros for
the first record of a log) and ``hash``: the SHA-256 hex digest of the record's canonical
JSON (sorted keys, no whitespace, UTF-8) with ``hash`` left out. Changing, removing or
reordering a record breaks the link to the record after it.

A chain alone proves nothing against someone who rewrites the file and recomputes every
hash. Checkpoints anchor it: every N records (and when the log closes) the writer adds
``{"type": "checkpoint", "time", "seq", "hash", "key_id", "signature"}`` where ``hash`` is
the chain head, ``seq`` the number of records chained so far, and ``signature`` the
base64url Ed25519 signature of the checkpoint's canonical JSON without ``signature``.
Checkpoints are not links of the chain; they sign its head. Only whoever holds the
private key can produce them, and the verifier needs only the public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enforcer.auth.jwks import import_jwk

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ROTATED = re.compile(r"(.+)\.(\d+)\Z")
_MAX_KEY_FILE = 64 * 1024


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """The chain hash of a record: SHA-256 over its line as written (``encode_line``: compact
    JSON, fields in their order) without ``hash`` and without the final newline. Hashing the
    written bytes, not a re-sorted copy, costs one JSON encoding per record, not two."""
    return _line_hash(encode_line({k: v for k, v in record.items() if k != "hash"}))


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line[:-1]).hexdigest()


def encode_line(document: dict[str, Any]) -> bytes:
    """The one way records are written: compact JSON, fields in their own order, one line."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8") + b"\n"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- keys ---------------------------------------------------------------------------------


def _thumbprint(public: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: the key id when the key file names none."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    return _b64url(hashlib.sha256(canonical(members)).digest())


def _read_key_file(path: str) -> bytes:
    data = Path(path).read_bytes()
    if len(data) > _MAX_KEY_FILE:
        raise ValueError(f"{path}: larger than {_MAX_KEY_FILE} bytes, not a key file")
    return data


def _load_key(path: str) -> tuple[Ed25519PrivateKey | Ed25519PublicKey, str | None]:
    """An Ed25519 key (private or public) from a JWK or PEM file, with the JWK's ``kid``."""
    data = _read_key_file(path)
    if data.lstrip().startswith(b"{"):
        try:
            jwk = json.loads(data)
        except ValueError:
            raise ValueError(f"{path}: not valid JSON") from None
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError(f"{path}: not an Ed25519 JWK (kty OKP, crv Ed25519)")
        key = import_jwk(jwk).raw_value
        if isinstance(key, Ed25519PrivateKey) and _b64url(key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)) != jwk.get("x"):
            raise ValueError(f"{path}: the JWK's x is not the public half of its d")
        kid = jwk.get("kid")
        return key, kid if isinstance(kid, str) and kid else None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise ValueError(f"{path}: neither a JWK nor an unencrypted PEM key") from None
    if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key, None


@dataclass(frozen=True)
class CheckpointSigner:
    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_file(cls, path: str) -> CheckpointSigner:
        key, kid = _load_key(path)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: a public key cannot sign checkpoints; give the private key")
        return cls(key, kid or _thumbprint(key.public_key()))

    def sign(self, checkpoint: dict[str, Any]) -> str:
        return _b64url(self.private_key.sign(canonical(checkpoint)))


@dataclass(frozen=True)
class CheckpointKey:
    """The public key ``audit verify`` checks checkpoint signatures with."""

    public_key: Ed25519PublicKey
    key_id: str

    @classmethod
    def from_file(cls, path: str) -> CheckpointKey:
        key, kid = _load_key(path)
        public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        return cls(public, kid or _thumbprint(public))

    def verifies(self, checkpoint: dict[str, Any]) -> bool:
        signature = checkpoint.get("signature")
        if not isinstance(signature, str):
            return False
        try:
            self.public_key.verify(_b64url_decode(signature),
                                   canonical({k: v for k, v in checkpoint.items() if k != "signature"}))
        except (InvalidSignature, ValueError):
            return False
        return True


# -- writing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """Where a chain stands: the last hash and how many records it holds."""

    hash: str = GENESIS
    seq: int = 0


class HashChain:
    """Links records as they are written. Used by one task only (the audit writer)."""

    def __init__(self, start: ChainHead | None = None, signer: CheckpointSigner | None = None,
                 every: int = 1000) -> None:
        start = start or ChainHead()
        self.head = start.hash
        self.seq = start.seq
        self.signer = signer
        self.every = every
        self._unsigned = 0  # records since the last checkpoint

    def link(self, record: dict[str, Any]) -> list[bytes]:
        """The lines of ``record`` with ``prev`` and ``hash`` (``hash`` last), followed by a
        checkpoint when one is due."""
        record["prev"] = self.head
        unhashed = encode_line(record)
        record["hash"] = self.head = _line_hash(unhashed)
        line = unhashed[:-2] + b',"hash":"' + self.head.encode("ascii") + b'"}\n'
        self.seq += 1
        self._unsigned += 1
        if self.signer is not None and self._unsigned >= self.every:
            return [line, encode_line(self.checkpoint())]
        return [line]

    def checkpoint(self) -> dict[str, Any]:
        assert self.signer is not None
        document = {"type": CHECKPOINT, "time": _now(), "seq": self.seq, "hash": self.head,
                    "key_id": self.signer.key_id}
        document["signature"] = self.signer.sign(document)
        self._unsigned = 0
        return document

    def final_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint written when the log closes, if any record is not yet signed."""
        return self.checkpoint() if self.signer is not None and self._unsigned else None


def rotated_paths(path: str, backups: int) -> list[str]:
    """The live file and its backups, newest first: ``path``, ``path.1``, ``path.2``..."""
    return [path, *(f"{path}.{n}" for n in range(1, backups + 1))]


def _lines_backwards(path: str, block: int = 65536) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        position = handle.seek(0, 2)
        rest = b""
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            parts = (handle.read(step) + rest).split(b"\n")
            rest = parts[0]
            yield from (part for part in reversed(parts[1:]) if part)
        if rest:
            yield rest


def resume_chain(paths_newest_first: list[str], *, count: bool) -> ChainHead:
    """Where an existing log's chain stands, so that appending continues it.

    The head is the last chained line (a record's ``hash`` or a checkpoint's). ``seq`` is
    only needed for checkpoints (``count``): the last checkpoint's ``seq`` plus the records
    after it, else every record found. Damaged lines (a write cut short) are skipped here;
    ``audit verify`` reports them.
    """
    head: str | None = None
    records = 0
    for path in paths_newest_first:
        if not Path(path).is_file():
            continue
        for raw in _lines_backwards(path):
            try:
                document = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(document, dict) or not isinstance(document.get("hash"), str):
                return ChainHead(head or GENESIS, records)
            if document.get("type") == CHECKPOINT:
                seq = document.get("seq")
                return ChainHead(head or document["hash"], records + (seq if isinstance(seq, int) else 0))
            head = head or document["hash"]
            records += 1
            if not count:
                return ChainHead(head, 0)
    return ChainHead(head or GENESIS, records)


# -- verifying ----------------------------------------------------------------------------


def order_files(paths: list[str]) -> list[str]:
    """Rotated files oldest first: ``log.3 log.2 log.1 log`` whatever order they were given
    in. Files of different logs keep the order of their first mention."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for path in paths:
        match = _ROTATED.match(path)
        base, number = (match.group(1), int(match.group(2))) if match else (path, 0)
        groups.setdefault(base, []).append((number, path))
    return [path for members in groups.values() for _, path in sorted(members, reverse=True)]


@dataclass(frozen=True)
class Broken:
    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


@dataclass(frozen=True)
class Verification:
    records: int
    checkpoints: int
    from_genesis: bool  # the first record starts a chain (prev is 64 zeros)
    broken: Broken | None


class _Verifier:
    """Walks the lines of a log in order, keeping the chain head and the record count."""

    def __init__(self, key: CheckpointKey | None) -> None:
        self.key = key
        self.head: str | None = None
        self.records = 0
        self.checkpoints = 0
        self.from_genesis = False
        self.seq_offset: int | None = None  # checkpoint seq minus records seen (0 from genesis)
        self.unsigned_since: tuple[str, int] | None = None  # first record no checkpoint covers yet

    def line(self, text: str, where: tuple[str, int]) -> str | None:
        try:
            document = json.loads(text)
        except ValueError:
            return "not a JSON line"
        if not isinstance(document, dict):
            return "not a JSON object"
        name = f"record {document.get('request_id')!s:.40}" if "request_id" in document else "record"
        if document.get("type") == CHECKPOINT:
            problem = self._checkpoint(document)
            name = f"checkpoint seq {document.get('seq')!s:.20}"
        else:
            problem = self._record(document, where)
        if problem is None and encode_line(document).decode("utf-8") != text + "\n":
            problem = "not in the form the enforcer writes (edited outside its values)"
        return f"{name}: {problem}" if problem else None

    def _record(self, record: dict[str, Any], where: tuple[str, int]) -> str | None:
        prev, digest = record.get("prev"), record.get("hash")
        if not (isinstance(prev, str) and _HEX64.match(prev) and isinstance(digest, str) and _HEX64.match(digest)):
            return "no hash chain fields (prev, hash)"
        if record_hash(record) != digest:
            return "hash does not match the record's content (the record was changed)"
        if self.head is None:
            self.from_genesis = prev == GENESIS
            self.seq_offset = 0 if self.from_genesis else None
        elif prev != self.head:
            return "prev is not the hash of the record before it (a record was removed, inserted or moved)"
        self.head = digest
        self.records += 1
        if self.unsigned_since is None:
            self.unsigned_since = where
        return None

    def _checkpoint(self, checkpoint: dict[str, Any]) -> str | None:
        seq = checkpoint.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return "seq is not a number"
        if self.head is not None and checkpoint.get("hash") != self.head:
            return "hash is not the chain head (records before it were changed or removed)"
        if self.seq_offset is None:
            self.seq_offset = seq - self.records
        elif seq != self.seq_offset + self.records:
            return f"seq {seq} does not count the {self.records} records before it"
        if self.key is not None and not self.key.verifies(checkpoint):
            return f"signature does not verify with key {self.key.key_id} (signed as {checkpoint.get('key_id')!s:.60})"
        if self.head is None:
            self.head = checkpoint.get("hash") if isinstance(checkpoint.get("hash"), str) else None
        self.checkpoints += 1
        self.unsigned_since = None
        return None


def _numbered_lines(path: str) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of a file; text is None for a line that is not UTF-8."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None
                continue
            yield number, text[:-1] if text.endswith("\n") else text


def verify_files(paths: list[str], key: CheckpointKey | None = None) -> Verification:
    """Check the chain across ``paths`` (in the order given) and, with ``key``, that a signed
    checkpoint covers every record. Stops at the first broken line."""
    verifier = _Verifier(key)

    def result(broken: Broken | None) -> Verification:
        return Verification(verifier.records, verifier.checkpoints, verifier.from_genesis, broken)

    for path in paths:
        for number, text in _numbered_lines(path):
            problem = "not UTF-8 text" if text is None else verifier.line(text, (path, number))
            if problem is not None:
                return result(Broken(path, number, problem))
    if key is not None and verifier.unsigned_since is not None:
        path, number = verifier.unsigned_since
        return result(Broken(path, number, "this record and the ones after it are not covered by a signed "
                                           "checkpoint (the log ends without one, or checkpoints were removed)"))
    return result(None)
