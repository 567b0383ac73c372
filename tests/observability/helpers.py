"""Audit records built the way the proxy builds them, keys, and a real ``enforcer serve``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import OKPKey

from enforcer.context import Decision, Outcome, Principal, RequestInfo
from enforcer.errors import Reason
from enforcer.observability.audit import AuditLog, audit_record
from enforcer.observability.auditchain import HashChain
from tests.support import free_port, read_body

ROOT = Path(__file__).resolve().parents[2]
ENFORCER = [sys.executable, "-m", "enforcer.cli"]


def record(n: int, *, sub: str = "alice", client_id: str = "agent-42", allowed: bool = True,
           now: float = 1_800_000_000.0) -> dict[str, Any]:
    """The audit record of request number ``n``, through ``audit_record`` itself."""
    request = RequestInfo(method="POST", raw_path=f"/mcp/tools/{n}".encode(), query_string=b"",
                          headers=((b"host", b"127.0.0.1"),), client="127.0.0.1", request_id=f"req-{n:05d}")
    principal = Principal(issuer_id="test", iss="https://issuer.test", sub=sub, client_id=client_id,
                          scopes=frozenset({"tools:read"}), jti=f"jti-{n}", exp=int(now) + 600,
                          token_hash="0123456789abcdef")
    reason = Reason.ALLOWED if allowed else Reason.NO_MATCHING_RULE
    outcome = Outcome(resource_id="demo", path=f"/mcp/tools/{n}", principal=principal,
                      decision=Decision(allowed, reason, "allow-agents" if allowed else None),
                      status=200 if allowed else 403, forwarded=allowed, reason=reason,
                      stages={"token": 0.0001, "policy": 0.00002})
    return audit_record(request, outcome, allowed=allowed, seconds=0.0021, policy_hash="p" * 12, now=now + n)


def chained_lines(count: int, chain: HashChain | None = None, start: int = 0) -> list[bytes]:
    chain = chain or HashChain()
    return [line for n in range(start, start + count) for line in chain.link(record(n))]


def write_log(path: Path, count: int, chain: HashChain | None = None) -> list[bytes]:
    lines = chained_lines(count, chain)
    path.write_bytes(b"".join(lines))
    return lines


def run_log(log: AuditLog, records: list[dict[str, Any]]) -> None:
    """Start ``log``, submit ``records`` in order, close it (which drains)."""

    async def main() -> None:
        await log.start()
        for item in records:
            await log.submit(item)
        await log.close()

    asyncio.run(main())


@dataclass(frozen=True)
class Ed25519Files:
    private: Path
    public: Path
    kid: str


def ed25519_files(directory: Path, name: str = "audit", kid: str | None = "audit-key-1") -> Ed25519Files:
    key = OKPKey.generate_key("Ed25519")
    private, public = dict(key.as_dict(private=True)), dict(key.as_dict(private=False))
    if kid:
        private["kid"] = public["kid"] = kid
    files = Ed25519Files(directory / f"{name}.private.jwk", directory / f"{name}.public.jwk", kid or "")
    files.private.write_text(json.dumps(private))
    files.private.chmod(0o600)
    files.public.write_text(json.dumps(public))
    return files


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENFORCER, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    admin: str


@contextmanager
def enforcer_process(policy: Path, *args: str, stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.PIPE,
                     cwd: Path = ROOT, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``enforcer serve`` as a user runs it, ready when ``/readyz`` says so; stopped with SIGTERM.

    ``env`` replaces the whole environment when given; output meant for a file (several
    workers, or much of it) should go to one, since a pipe nobody reads fills up and stalls."""
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen([*ENFORCER, "serve", "--policy", str(policy), "--port", str(port),
                                "--admin-port", str(admin_port), *args],
                               cwd=cwd, env=env, text=True, stdout=stdout, stderr=stderr)
    served = Served(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}")
    try:
        _wait_ready(served)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stop(served: Served) -> str:
    """SIGTERM, wait for the clean exit, and return what the process logged on stderr."""
    served.process.terminate()
    _, stderr = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, stderr
    return stderr or ""


def _wait_ready(served: Served) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"enforcer exited: {served.process.communicate()[1]}")
        try:
            if httpx.get(f"{served.admin}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("enforcer did not become ready")


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Collector:
    """A collector on 127.0.0.1: accepts NDJSON batches, or answers ``status`` without keeping them."""

    status: int = 200
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # every body received, accepted or not
    refused: int = 0
    content_types: set[str] = field(default_factory=set)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.bodies.append(body)
        headers = dict(scope["headers"])
        self.content_types.add(headers.get(b"content-type", b"").decode())
        if self.status == 200:
            self.batches.append([json.loads(line) for line in body.splitlines()])
        else:
            self.refused += 1
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    @property
    def request_ids(self) -> list[str]:
        return [document["request_id"] for batch in self.batches for document in batch]
