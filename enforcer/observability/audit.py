"""The audit trail: one JSON line per decision, answering "what did this agent do, and who
authorised it?" after the fact.

``audit_record`` turns the request and its ``Outcome`` (the single decision record the
pipeline fills) into the documented field set, ``AUDIT_FIELDS``. Secrets never enter it:
the token appears only as ``token_hash`` (a short SHA-256), a signature only as its key
id, thumbprint and coverage, and the query string (which may carry credentials) not at all.

``AuditLog`` writes records asynchronously through a bounded queue to its sinks; with the
``block`` overflow policy (the default) a full queue makes the request wait, so nothing is
lost; with ``drop`` the record is dropped and counted. ``close`` drains the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from enforcer.context import Outcome, RequestInfo

log = logging.getLogger("enforcer.audit")

#: every record has exactly these keys (``prev`` and ``hash`` are added by the hash chain)
AUDIT_FIELDS = (
    "time", "request_id", "trace_id", "resource", "method", "path", "mcp", "client",
    "iss", "sub", "client_id", "act", "scope", "jti", "token_hash",
    "signature", "workload", "decision", "rule", "reason", "status", "upstream_status",
    "duration_ms", "stages_ms", "policy", "shadow",
)


def audit_record(request: RequestInfo, outcome: Outcome, *, allowed: bool, seconds: float, policy_hash: str,
                 now: float) -> dict[str, Any]:
    principal, decision, signature = outcome.principal, outcome.decision, outcome.signature
    return {
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": request.request_id,
        "trace_id": request.request_id if request.header(b"traceparent") is not None else None,
        "resource": outcome.resource_id or None,
        "method": request.method,
        "path": outcome.path or None,
        "mcp": list(outcome.mcp) or None,
        "client": request.client,
        "iss": principal.iss if principal else None,
        "sub": principal.sub if principal else None,
        "client_id": principal.client_id if principal else None,
        "act": principal.act if principal else None,
        "scope": " ".join(sorted(principal.scopes)) if principal else None,
        "jti": principal.jti if principal else None,
        "token_hash": principal.token_hash if principal else None,
        "signature": {"keyid": signature.keyid, "key_thumbprint": signature.key_thumbprint, "alg": signature.alg,
                      "label": signature.label, "covered": list(signature.covered), "created": signature.created,
                      "tag": signature.tag} if signature is not None else None,
        "workload": None,
        "decision": "allow" if allowed else "deny",
        "rule": decision.rule if decision else None,
        "reason": str(outcome.reason),
        "status": outcome.status,
        "upstream_status": outcome.status if outcome.forwarded else None,
        "duration_ms": round(seconds * 1000, 3),
        "stages_ms": {stage: round(value * 1000, 3) for stage, value in outcome.stages.items()},
        "policy": policy_hash,
        "shadow": [],
    }


class AuditSink(Protocol):
    name: str

    async def write(self, lines: list[bytes]) -> None:
        """Write a batch of JSON lines (each ends in a newline); raise on failure."""
        ...

    async def close(self) -> None: ...


class StdoutSink:
    name = "stdout"

    async def write(self, lines: list[bytes]) -> None:
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.buffer.flush()

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class AuditSettings:
    stdout: bool = True
    file: str | None = None
    queue_size: int = 10_000
    overflow: str = "block"  # or "drop"


class AuditLog:
    """A bounded queue in front of the sinks, drained by one background task."""

    def __init__(self, sinks: list[AuditSink], *, queue_size: int = 10_000, overflow: str = "block",
                 metrics: Any = None) -> None:
        if overflow not in ("block", "drop"):
            raise ValueError("overflow is 'block' or 'drop'")
        self.sinks = sinks
        self.overflow = overflow
        self.metrics = metrics
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None

    def sink_names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def submit(self, record: dict[str, Any]) -> None:
        if self.overflow == "drop":
            try:
                self._queue.put_nowait(record)
            except asyncio.QueueFull:
                for sink in self.sinks:
                    self._count(sink.name, "dropped")
            return
        await self._queue.put(record)

    async def _run(self) -> None:
        while True:
            record = await self._queue.get()
            if record is None:
                return
            batch = [record]
            while not self._queue.empty() and len(batch) < 500:
                item = self._queue.get_nowait()
                if item is None:
                    await self._write(batch)
                    return
                batch.append(item)
            await self._write(batch)

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        lines = [json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in batch]
        for sink in self.sinks:
            try:
                await sink.write(lines)
            except Exception as exc:  # a failing sink is counted and logged, the others still write
                log.error("audit sink failed", extra={"sink": sink.name, "error": type(exc).__name__})
                self._count(sink.name, "failed", len(lines))
            else:
                self._count(sink.name, "written", len(lines))

    def _count(self, sink: str, result: str, n: int = 1) -> None:
        if self.metrics is not None:
            for _ in range(n):
                self.metrics.audit_record(sink, result)

    async def close(self) -> None:
        if self._task is not None:
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sink in self.sinks:
            await sink.close()
