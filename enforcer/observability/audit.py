"""The audit trail: one JSON line per decision, answering "what did this agent do, and who
authorised it?" after the fact.

``audit_record`` turns the request and its ``Outcome`` (the single decision record the
pipeline fills) into the documented field set, ``AUDIT_FIELDS``. Secrets never enter it:
the token appears only as ``token_hash`` (a short SHA-256), a signature only as its key
id, thumbprint and coverage, and the query string (which may carry credentials) not at all.

``AuditLog`` writes records asynchronously through a bounded queue to its sinks
(``auditsinks``), optionally linking them into a hash chain (``auditchain``). With the
``block`` overflow policy (the default) a full queue makes the request wait, so nothing is
lost; with ``drop`` the record is dropped and counted. ``close`` drains the queue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from enforcer.context import Outcome, RequestInfo
from enforcer.observability.auditchain import CheckpointSigner, HashChain, encode_line, resume_chain, rotated_paths
from enforcer.observability.auditsinks import FileSink, SinkBuffer, StdoutSink, WebhookFailed, WebhookSink

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
        "trace_id": request.trace_id,
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
        "workload": principal.workload if principal else None,
        "decision": "allow" if allowed else "deny",
        "rule": decision.rule if decision else None,
        "reason": str(outcome.reason),
        "status": outcome.status,
        "upstream_status": outcome.status if outcome.forwarded else None,
        "duration_ms": round(seconds * 1000, 3),
        "stages_ms": {stage: round(value * 1000, 3) for stage, value in outcome.stages.items()},
        "policy": policy_hash,
        # only when shadow rules would have answered differently (policy/engine.py)
        "shadow": decision.shadow.record() if decision is not None and decision.shadow is not None else None,
    }


class AuditSink(Protocol):
    name: str
    batch_size: int  # the most lines one ``write`` is given

    async def write(self, lines: list[bytes]) -> None:
        """Write a batch of JSON lines (each ends in a newline); raise on failure."""
        ...

    async def close(self) -> None: ...


OVERFLOW_POLICIES = ("block", "drop")


@dataclass(frozen=True)
class AuditSettings:
    """Where audit records go and how (``enforcer serve --audit-*``)."""

    stdout: bool = True
    file: str | None = None
    file_max_bytes: int = 100 * 1024 * 1024  # 0: never rotate
    file_backups: int = 10
    fsync: str = "batch"  # always | batch | never
    webhook_url: str | None = None
    webhook_batch: int = 100
    webhook_timeout: float = 5.0
    webhook_max_backoff: float = 30.0
    webhook_attempts: int = 5  # with overflow "drop": attempts before a batch counts as failed
    queue_size: int = 10_000  # records waiting to be written; also what each sink may hold back
    overflow: str = "block"  # or "drop"
    chain: bool = False
    checkpoint_key: str | None = None  # Ed25519 private key (JWK or PEM) that signs checkpoints
    checkpoint_every: int = 1000
    drain_seconds: float = 30.0  # at shutdown: how long to keep writing what is queued


def build_audit_log(settings: AuditSettings, metrics: Any = None) -> AuditLog | None:
    """The audit log these settings describe, or None when no sink is enabled.

    With a file, the chain continues from the file's last record (and its checkpoint
    count), so one file holds one chain across restarts; without one, every start begins
    a fresh chain (``prev`` of 64 zeros) in the stdout and webhook streams."""
    sinks: list[AuditSink] = []
    if settings.stdout:
        sinks.append(StdoutSink())
    chain = None
    if settings.chain:
        signer = CheckpointSigner.from_file(settings.checkpoint_key) if settings.checkpoint_key else None
        start = None
        if settings.file:
            start = resume_chain(rotated_paths(settings.file, settings.file_backups), count=signer is not None)
        chain = HashChain(start, signer, settings.checkpoint_every)
    if settings.file:
        sinks.append(FileSink(settings.file, max_bytes=settings.file_max_bytes, backups=settings.file_backups,
                              fsync=settings.fsync))
    if settings.webhook_url:
        sinks.append(WebhookSink(settings.webhook_url, batch_size=settings.webhook_batch,
                                 timeout=settings.webhook_timeout, max_backoff=settings.webhook_max_backoff,
                                 attempts=settings.webhook_attempts if settings.overflow == "drop" else None))
    if not sinks:
        return None
    return AuditLog(sinks, queue_size=settings.queue_size, overflow=settings.overflow, metrics=metrics, chain=chain,
                    drain_seconds=settings.drain_seconds)


_BATCH = 500  # records taken from the queue at once


class AuditLog:
    """A bounded queue in front of the sinks.

    One dispatcher task takes records in batches, links them into the hash chain (when
    there is one: a single task, so the chain has a single order), encodes them once and
    hands the lines to every sink's buffer (``SinkBuffer``). Under ``block`` a full buffer
    makes the dispatcher wait, the queue fills, and ``submit`` waits; under ``drop`` a record that finds the
    queue full, or lines that find a buffer full, are dropped and counted (per sink).
    """

    def __init__(self, sinks: list[AuditSink], *, queue_size: int = 10_000, overflow: str = "block",
                 metrics: Any = None, chain: HashChain | None = None, drain_seconds: float = 30.0) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError("overflow is 'block' or 'drop'")
        self.sinks = sinks
        self.overflow = overflow
        self.metrics = metrics
        self.chain = chain
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=queue_size)
        self._buffers = [SinkBuffer(sink, queue_size) for sink in sinks]
        self.drain_seconds = drain_seconds
        self._dispatcher: asyncio.Task[None] | None = None

    def sink_names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def start(self) -> None:
        for buffer in self._buffers:
            buffer.task = asyncio.ensure_future(self._drain(buffer))
        self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def submit(self, record: dict[str, Any]) -> None:
        if self.overflow == "drop":
            try:
                self._queue.put_nowait(record)
            except asyncio.QueueFull:
                for sink in self.sinks:
                    self._count(sink.name, "dropped")
            return
        await self._queue.put(record)

    async def close(self, drain_seconds: float | None = None) -> None:
        """Write everything queued (and a final checkpoint), then close the sinks.

        A sink that cannot take the records (a webhook that stays down under ``block``)
        would hold shutdown for ever; after ``drain_seconds`` whatever is still waiting is
        counted as ``failed``, logged, and the log closes anyway."""
        if self._dispatcher is not None:
            tasks = [self._dispatcher, *(buffer.task for buffer in self._buffers if buffer.task is not None)]

            async def drain() -> None:
                await self._queue.put(None)  # may itself wait for room under block
                await asyncio.gather(*tasks)

            try:
                await asyncio.wait_for(drain(), self.drain_seconds if drain_seconds is None else drain_seconds)
            except TimeoutError:
                for task in tasks:
                    task.cancel()
                self._abandon()
            self._dispatcher = None
        for sink in self.sinks:
            await sink.close()

    def _abandon(self) -> None:
        """The drain deadline passed: count what was not written, per sink, and say so."""
        queued = self._queue.qsize()
        for buffer in self._buffers:
            lost = buffer.lines + queued
            if lost:
                log.error("audit records not written before shutdown", extra={"sink": buffer.sink.name,
                                                                               "records": lost})
                self._count(buffer.sink.name, "failed", lost)

    async def _dispatch(self) -> None:
        closing = False
        while not closing:
            batch, closing = await self._next_batch()
            if not batch:
                continue
            try:
                lines = self._encode(batch)
            except Exception as exc:  # a record that cannot be encoded must not stop the writer
                log.error("audit records could not be encoded", extra={"error": type(exc).__name__})
                for sink in self.sinks:
                    self._count(sink.name, "failed", len(batch))
                continue
            await self._fan_out(lines)
        final = self.chain.final_checkpoint() if self.chain is not None else None
        if final is not None:
            await self._fan_out([encode_line(final)])
        for buffer in self._buffers:
            buffer.close()

    async def _next_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``_BATCH`` records (waiting for the first), and whether the log is closing."""
        batch: list[dict[str, Any]] = []
        item = await self._queue.get()
        while item is not None:
            batch.append(item)
            if len(batch) >= _BATCH or self._queue.empty():
                return batch, False
            item = self._queue.get_nowait()
        return batch, True

    def _encode(self, batch: list[dict[str, Any]]) -> list[bytes]:
        if self.chain is None:
            return [encode_line(record) for record in batch]
        return [line for record in batch for line in self.chain.link(record)]

    async def _fan_out(self, lines: list[bytes]) -> None:
        for buffer in self._buffers:
            if not await buffer.put(lines, wait=self.overflow == "block"):
                self._count(buffer.sink.name, "dropped", len(lines))

    async def _drain(self, buffer: SinkBuffer) -> None:
        while (lines := await buffer.take(buffer.sink.batch_size)) is not None:
            await self._write(buffer.sink, lines)
            buffer.done(len(lines))

    async def _write(self, sink: AuditSink, lines: list[bytes]) -> None:
        try:
            await sink.write(lines)
        except Exception as exc:  # a failing sink is counted and logged, the others still write
            detail = str(exc)[:200] if isinstance(exc, OSError | WebhookFailed) else ""  # never a URL or a body
            log.error("audit sink failed", extra={"sink": sink.name, "records": len(lines),
                                                  "error": type(exc).__name__, "detail": detail})
            self._count(sink.name, "failed", len(lines))
        else:
            self._count(sink.name, "written", len(lines))

    def _count(self, sink: str, result: str, n: int = 1) -> None:
        if self.metrics is not None:
            for _ in range(n):
                self.metrics.audit_record(sink, result)
