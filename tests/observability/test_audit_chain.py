"""The hash chain and its signed checkpoints, checked the way an auditor checks them:
``verify_files`` for the many cases, ``python -m enforcer.cli audit verify`` for the exit
codes and messages a person sees."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.observability.audit import AuditSettings, build_audit_log
from enforcer.observability.auditchain import (
    GENESIS,
    CheckpointKey,
    CheckpointSigner,
    HashChain,
    encode_line,
    order_files,
    record_hash,
    verify_files,
)
from tests.observability.helpers import cli, ed25519_files, record, run_log, write_log


def edit_byte(path: Path, line: int, offset: int, new: bytes) -> None:
    """Replace one byte of line ``line`` (1-based) at ``offset`` within that line."""
    lines = path.read_bytes().splitlines(keepends=True)
    target = bytearray(lines[line - 1])
    target[offset] = new[0]
    lines[line - 1] = bytes(target)
    path.write_bytes(b"".join(lines))


def drop_line(path: Path, line: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[line - 1]
    path.write_bytes(b"".join(lines))


def signed_log(path: Path, keys_dir: Path, count: int, every: int) -> CheckpointKey:
    keys = ed25519_files(keys_dir)
    write_log(path, count, HashChain(signer=CheckpointSigner.from_file(str(keys.private)), every=every))
    return CheckpointKey.from_file(str(keys.public))


def test_n_records_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 50)
    result = verify_files([str(path)])
    assert (result.records, result.checkpoints, result.from_genesis, result.broken) == (50, 0, True, None)
    completed = cli("audit", "verify", str(path))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ok: 50 records; 0 checkpoint(s)")


def test_the_hash_is_sha256_of_the_written_line_without_hash() -> None:
    line = HashChain().link(record(1))[0]
    chained = json.loads(line)
    assert chained["prev"] == GENESIS
    assert list(chained)[-1] == "hash"  # the last field, appended to the line as written
    without_hash = {k: v for k, v in chained.items() if k != "hash"}
    expected = hashlib.sha256(json.dumps(without_hash, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert chained["hash"] == expected == record_hash(chained)
    assert line == encode_line(chained)


@pytest.mark.parametrize(("field", "problem"), [
    ("sub", "hash does not match the record's content"),
    ("decision", "hash does not match the record's content"),
    ("prev", "hash does not match the record's content"),
    ("hash", "hash does not match the record's content"),
    ("status", "hash does not match the record's content"),
])
def test_one_edited_byte_fails_through_the_cli_naming_that_record(tmp_path: Path, field: str, problem: str) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 20)
    text = lines[11].decode()
    offset = text.index(f'"{field}":') + len(f'"{field}":') + 2  # inside the value
    original = text[offset]
    edit_byte(path, 12, offset, b"7" if original != "7" else b"8")
    completed = cli("audit", "verify", str(path))
    assert completed.returncode == 1
    assert completed.stderr.startswith(f"{path}:12: record req-00011: {problem}"), completed.stderr
    assert "broken after 11 good record(s)" in completed.stderr


def test_every_single_byte_change_of_a_record_is_caught_at_that_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 5)
    pristine = path.read_bytes()
    target = lines[2]
    for offset in range(len(target)):
        for replacement in (b"x", b" ", b"0"):
            if target[offset] == replacement[0]:
                continue
            path.write_bytes(pristine)
            edit_byte(path, 3, offset, replacement)
            broken = verify_files([str(path)]).broken
            assert broken is not None and broken.line == 3, (offset, replacement, broken)


def test_removing_a_record_is_caught_at_the_record_after_the_gap(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 10)
    drop_line(path, 4)
    broken = verify_files([str(path)]).broken
    assert broken is not None and broken.line == 4
    assert broken.problem == ("record req-00004: prev is not the hash of the record before it "
                              "(a record was removed, inserted or moved)")


def test_reordering_records_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 10)
    lines[5], lines[6] = lines[6], lines[5]
    path.write_bytes(b"".join(lines))
    broken = verify_files([str(path)]).broken
    assert broken is not None and broken.line == 6 and "prev is not the hash" in broken.problem


def test_a_duplicated_record_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 6)
    path.write_bytes(b"".join([*lines[:3], lines[2], *lines[3:]]))
    broken = verify_files([str(path)]).broken
    assert broken is not None and broken.line == 4


def test_a_line_rewritten_in_another_json_form_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 4)
    document = json.loads(lines[1])
    lines[1] = json.dumps(document, indent=None, separators=(", ", ": ")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    broken = verify_files([str(path)]).broken
    assert broken is not None and broken.line == 2 and "not in the form the enforcer writes" in broken.problem


def test_unchained_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(encode_line(record(1)))
    broken = verify_files([str(path)]).broken
    assert broken is not None and broken.problem == "record req-00001: no hash chain fields (prev, hash)"


# -- checkpoints --------------------------------------------------------------------------


def test_checkpoints_verify_with_the_public_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    key = signed_log(path, tmp_path, 23, every=5)
    documents = [json.loads(line) for line in path.read_bytes().splitlines()]
    checkpoints = [d for d in documents if d.get("type") == "checkpoint"]
    assert [c["seq"] for c in checkpoints] == [5, 10, 15, 20]
    assert all(set(c) == {"type", "time", "seq", "hash", "key_id", "signature"} for c in checkpoints)
    assert checkpoints[0]["hash"] == documents[4]["hash"] and checkpoints[0]["key_id"] == "audit-key-1"
    # the last three records have no checkpoint after them: with a key, that is a failure
    broken = verify_files([str(path)], key).broken
    assert broken is not None and broken.line == 25 and "not covered by a signed checkpoint" in broken.problem
    result = verify_files([str(path)])  # without a key only the chain and the checkpoints' heads count
    assert (result.records, result.checkpoints, result.broken) == (23, 4, None)


def test_a_closed_log_ends_with_a_checkpoint_and_verifies_through_the_cli(tmp_path: Path) -> None:
    keys = ed25519_files(tmp_path)
    path = tmp_path / "audit.log"
    settings = AuditSettings(stdout=False, file=str(path), chain=True, checkpoint_key=str(keys.private),
                             checkpoint_every=4)
    run_log(build_audit_log(settings), [record(n) for n in range(10)])
    run_log(build_audit_log(settings), [record(n) for n in range(10, 15)])  # a restart continues chain and seq
    seqs = [d["seq"] for d in map(json.loads, path.read_bytes().splitlines()) if d.get("type") == "checkpoint"]
    assert seqs == [4, 8, 10, 14, 15]
    ok = cli("audit", "verify", "--public-key", str(keys.public), str(path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "ok: 15 records; 5 checkpoint(s); signatures verified with key audit-key-1\n"
    other = ed25519_files(tmp_path, "other", kid="other-key")
    refused = cli("audit", "verify", "--public-key", str(other.public), str(path))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"{path}:5: checkpoint seq 4: signature does not verify with key other-key "
                                     "(signed as audit-key-1)"), refused.stderr


def test_after_a_crash_the_next_run_covers_the_unsigned_records(tmp_path: Path) -> None:
    keys = ed25519_files(tmp_path)
    path = tmp_path / "audit.log"
    signer = CheckpointSigner.from_file(str(keys.private))
    write_log(path, 7, HashChain(signer=signer, every=5))  # 5 signed, 2 not: as if the process died
    settings = AuditSettings(stdout=False, file=str(path), chain=True, checkpoint_key=str(keys.private),
                             checkpoint_every=5)
    run_log(build_audit_log(settings), [record(n) for n in range(7, 9)])
    result = verify_files([str(path)], CheckpointKey.from_file(str(keys.public)))
    assert (result.records, result.checkpoints, result.broken) == (9, 2, None)


def test_rewriting_the_whole_chain_passes_the_hashes_but_not_the_signatures(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    key = signed_log(path, tmp_path, 10, every=5)
    forged_chain = HashChain()
    forged = []
    for line in path.read_bytes().splitlines():
        document = json.loads(line)
        if document.get("type") == "checkpoint":
            document["hash"] = forged_chain.head
            forged.append(encode_line(document))
            continue
        document.pop("prev"), document.pop("hash")
        if document["request_id"] == "req-00002":
            document["decision"] = "allow-everything"
        forged += forged_chain.link(document)
    path.write_bytes(b"".join(forged))
    assert verify_files([str(path)]).broken is None  # the chain alone is consistent again
    broken = verify_files([str(path)], key).broken
    assert broken is not None and broken.line == 6 and "signature does not verify" in broken.problem


def test_removing_checkpoints_does_not_hide_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    key = signed_log(path, tmp_path, 10, every=5)
    lines = [line for line in path.read_bytes().splitlines(keepends=True) if b'"checkpoint"' not in line]
    path.write_bytes(b"".join(lines))
    broken = verify_files([str(path)], key).broken
    assert broken is not None and broken.line == 1 and "not covered by a signed checkpoint" in broken.problem


@pytest.mark.parametrize("member", ["seq", "hash"])
def test_an_altered_checkpoint_is_caught_without_the_key(tmp_path: Path, member: str) -> None:
    path = tmp_path / "audit.log"
    signed_log(path, tmp_path, 10, every=5)
    lines = path.read_bytes().splitlines(keepends=True)
    checkpoint = json.loads(lines[5])
    checkpoint[member] = 4 if member == "seq" else "f" * 64
    lines[5] = encode_line(checkpoint)
    path.write_bytes(b"".join(lines))
    broken = verify_files([str(path)]).broken
    assert broken is not None and broken.line == 6 and broken.problem.startswith("checkpoint seq")


def test_pem_keys_sign_and_verify(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "pub.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path = tmp_path / "audit.log"
    signer = CheckpointSigner.from_file(str(tmp_path / "key.pem"))
    write_log(path, 6, HashChain(signer=signer, every=3))
    key = CheckpointKey.from_file(str(tmp_path / "pub.pem"))
    assert key.key_id == signer.key_id  # the RFC 7638 thumbprint, when the file names no kid
    assert verify_files([str(path)], key).broken is None
    assert verify_files([str(path)], CheckpointKey.from_file(str(tmp_path / "key.pem"))).broken is None


def test_keys_that_are_not_ed25519_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ec.jwk").write_text(json.dumps({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}))
    with pytest.raises(ValueError, match="not an Ed25519 JWK"):
        CheckpointSigner.from_file(str(tmp_path / "ec.jwk"))
    (tmp_path / "junk.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="neither a JWK nor an unencrypted PEM key"):
        CheckpointKey.from_file(str(tmp_path / "junk.pem"))


# -- rotated files ------------------------------------------------------------------------


def rotated_log(tmp_path: Path, count: int = 40) -> list[str]:
    path = tmp_path / "audit.log"
    settings = AuditSettings(stdout=False, file=str(path), file_max_bytes=4000, file_backups=100, chain=True)
    run_log(build_audit_log(settings), [record(n) for n in range(count)])
    return order_files([str(p) for p in tmp_path.iterdir() if p.name.startswith("audit.log")])


def test_files_are_put_oldest_first() -> None:
    assert order_files(["a.log", "a.log.1", "b.log", "a.log.10", "a.log.2"]) == [
        "a.log.10", "a.log.2", "a.log.1", "a.log", "b.log"]


def test_verification_across_rotated_files_in_any_order(tmp_path: Path) -> None:
    files = rotated_log(tmp_path)
    assert len(files) >= 6
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    completed = cli("audit", "verify", *shuffled)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ok: 40 records")


def test_a_missing_middle_file_is_caught_at_the_next_one(tmp_path: Path) -> None:
    files = rotated_log(tmp_path)
    missing = files[2]
    broken = verify_files([f for f in files if f != missing]).broken
    assert broken is not None and broken.file == files[3] and broken.line == 1
    assert "prev is not the hash of the record before it" in broken.problem


def test_without_the_oldest_files_the_chain_verifies_and_says_so(tmp_path: Path) -> None:
    files = rotated_log(tmp_path)
    completed = cli("audit", "verify", *files[2:])
    assert completed.returncode == 0, completed.stderr
    assert "the first record continues an earlier chain" in completed.stdout


def test_an_edit_in_a_rotated_file_names_that_file_and_line(tmp_path: Path) -> None:
    files = rotated_log(tmp_path)
    edit_byte(Path(files[1]), 2, 30, b"Z")
    completed = cli("audit", "verify", *files)
    assert completed.returncode == 1
    assert completed.stderr.startswith(f"{files[1]}:2: "), completed.stderr


def test_verify_reports_unreadable_input_with_exit_2(tmp_path: Path) -> None:
    completed = cli("audit", "verify", str(tmp_path / "nope.log"))
    assert completed.returncode == 2 and "nope.log" in completed.stderr
