"""``enforcer audit show``: what a person reading the trail sees, and how they narrow it down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enforcer.observability.auditchain import CheckpointSigner, HashChain
from tests.observability.helpers import cli, ed25519_files, record

# request n happens at 2027-01-15T08:00:00Z + n seconds (see helpers.record)
PEOPLE = [("alice", "agent-42", True), ("bob", "agent-42", False), ("alice", "agent-7", False),
          ("carol", "agent-7", True), ("bob", "agent-42", True), ("alice", "agent-42", False)]


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """Six records in two rotated files, a checkpoint, a path with terminal escapes, a junk line."""
    chain = HashChain(signer=CheckpointSigner.from_file(str(ed25519_files(tmp_path).private)), every=3)
    lines = []
    for n, (sub, client_id, allowed) in enumerate(PEOPLE):
        document = record(n, sub=sub, client_id=client_id, allowed=allowed)
        if n == 4:
            document["path"] = "/mcp/\x1b[2J\x1b[31mred\u202eevil"
        lines += chain.link(document)
    (tmp_path / "audit.log.1").write_bytes(b"".join(lines[:4]))  # three records and the first checkpoint
    (tmp_path / "audit.log").write_bytes(b"".join(lines[4:]) + b"not json at all\n")
    return tmp_path / "audit.log"


def show(trail: Path, *args: str) -> tuple[list[str], str]:
    completed = cli("audit", "show", str(trail), f"{trail}.1", *args)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.splitlines(), completed.stderr


def ids(lines: list[str]) -> list[str]:
    return [line.rsplit("request_id=", 1)[1] for line in lines if "request_id=" in line]


def test_everything_in_order_one_line_each(trail: Path) -> None:
    lines, stderr = show(trail)
    assert len(lines) == 8  # six records, two checkpoints
    assert ids(lines) == [f"req-{n:05d}" for n in range(6)]
    assert lines[0] == ("2027-01-15T08:00:00.000Z  allow  200  allowed               POST /mcp/tools/0  "
                        'sub=alice  client_id=agent-42  scope="tools:read"  rule=allow-agents  resource=demo  '
                        "request_id=req-00000")
    assert "checkpoint seq=3 hash=" in lines[3] and "key_id=audit-key-1" in lines[3]
    assert f"{trail}:5: not a JSON record (skipped)" in stderr
    assert stderr.rstrip().endswith("8 record(s)")


def test_control_characters_are_shown_escaped(trail: Path) -> None:
    lines, _ = show(trail, "--sub", "bob")
    assert "\x1b" not in "".join(lines) and "\u202e" not in "".join(lines)
    assert "POST /mcp/\\x1b[2J\\x1b[31mred\\u202eevil" in lines[1]


@pytest.mark.parametrize(("args", "expected"), [
    (["--sub", "alice"], [0, 2, 5]),
    (["--client-id", "agent-7"], [2, 3]),
    (["--decision", "deny"], [1, 2, 5]),
    (["--sub", "alice", "--decision", "allow"], [0]),
    (["--since", "2027-01-15T08:00:02Z", "--until", "2027-01-15T08:00:04Z", "--decision", "allow"], [3, 4]),
    (["--since", "2027-01-15T09:00:02+01:00"], [2, 3, 4, 5]),
    (["--sub", "nobody"], []),
])
def test_filters(trail: Path, args: list[str], expected: list[int]) -> None:
    lines, _ = show(trail, *args)
    assert ids(lines) == [f"req-{n:05d}" for n in expected]
    assert not any("checkpoint" in line for line in lines)


def test_time_filters_keep_checkpoints_in_range(trail: Path) -> None:
    lines, _ = show(trail, "--since", "2000-01-01")
    assert len(lines) == 8


def test_json_prints_the_stored_lines(trail: Path) -> None:
    lines, _ = show(trail, "--client-id", "agent-7", "--json")
    documents = [json.loads(line) for line in lines]
    assert [d["request_id"] for d in documents] == ["req-00002", "req-00003"]
    assert all("hash" in d and "prev" in d for d in documents)


def test_a_bad_time_is_a_usage_error(trail: Path) -> None:
    completed = cli("audit", "show", str(trail), "--since", "yesterday")
    assert completed.returncode == 2 and "'yesterday' is not an ISO 8601 time" in completed.stderr
