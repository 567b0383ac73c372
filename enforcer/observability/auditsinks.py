"""Where audit lines go: standard output, an append-only file, an HTTP collector.

Each sink has its own bounded ``SinkBuffer`` and writer task (see ``audit.AuditLog``),
takes batches of finished JSON lines and raises when a batch could not be written.
Blocking work (disk, a stdout pipe nobody reads) runs in a worker thread, so a slow disk
or reader never stalls the event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections import deque
from typing import Any

import httpx

from enforcer.observability.auditchain import rotated_paths

log = logging.getLogger("enforcer.audit")

FSYNC_MODES = ("always", "batch", "never")


class SinkBuffer:
    """One sink's own buffer of encoded lines (at most ``capacity``, beyond one batch), so
    that a slow sink holds back the others only once its buffer is full. One producer
    (``AuditLog``'s dispatcher) puts, one consumer (the task writing to the sink) takes."""

    def __init__(self, sink: Any, capacity: int) -> None:
        self.sink = sink
        self.capacity = capacity
        self.batches: deque[list[bytes]] = deque()
        self.lines = 0  # waiting or being written
        self.closed = False
        self.has_work = asyncio.Event()
        self.has_room = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def fits(self, count: int) -> bool:
        return self.lines == 0 or self.lines + count <= self.capacity

    async def put(self, lines: list[bytes], *, wait: bool) -> bool:
        """Queue ``lines``; when they do not fit, wait for room (``wait``) or refuse them."""
        while not self.fits(len(lines)):
            if not wait:
                return False
            self.has_room.clear()
            await self.has_room.wait()
        self.batches.append(lines)
        self.lines += len(lines)
        self.has_work.set()
        return True

    async def take(self, limit: int) -> list[bytes] | None:
        """Up to ``limit`` waiting lines, oldest first; None once closed and empty."""
        while not self.batches:
            if self.closed:
                return None
            self.has_work.clear()
            await self.has_work.wait()
        taken: list[bytes] = []
        while self.batches and len(taken) < limit:
            batch = self.batches.popleft()
            room = limit - len(taken)
            taken += batch[:room]
            if len(batch) > room:
                self.batches.appendleft(batch[room:])
        return taken

    def done(self, count: int) -> None:
        self.lines -= count
        self.has_room.set()

    def close(self) -> None:
        self.closed = True
        self.has_work.set()


class StdoutSink:
    """JSON lines on standard output (the default sink; logs go to stderr)."""

    name = "stdout"
    batch_size = 1000

    async def write(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._write, lines)

    @staticmethod
    def _write(lines: list[bytes]) -> None:
        # One write(2) per line: with several worker processes on one pipe, a write of at most
        # PIPE_BUF (4 KiB) bytes is atomic, so lines of different workers never interleave.
        try:
            sys.stdout.flush()
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):  # a replaced stdout (tests, embedding) has no fd
            sys.stdout.buffer.write(b"".join(lines))
            sys.stdout.buffer.flush()
            return
        for line in lines:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]

    async def close(self) -> None:
        return None


class FileSink:
    """Appends to ``path`` (created 0600), rotating by size: ``path`` -> ``path.1`` -> ...

    ``fsync``: ``always`` makes each record durable before the next is written; ``batch``
    makes each batch durable with one fsync (group commit: batches grow with load); ``never``
    leaves flushing to the OS except at rotation and close. ``max_bytes`` 0 never rotates;
    ``backups`` is how many rotated files are kept (the oldest is deleted).
    """

    name = "file"
    batch_size = 1000

    def __init__(self, path: str, *, max_bytes: int = 100 * 1024 * 1024, backups: int = 10,
                 fsync: str = "batch") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync is one of {', '.join(FSYNC_MODES)}")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self.fsyncs = 0  # how many fsync calls were made (operators and tests can see the policy at work)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._end_torn_line()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _end_torn_line(self) -> None:
        """A write cut short by a crash leaves a line without its newline; end it, so the next
        record starts a line of its own (``audit verify`` reports the damaged one)."""
        if self._size == 0:
            return
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                self._write_all(b"\n")

    async def write(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._write_lines, lines)

    def _write_lines(self, lines: list[bytes]) -> None:
        pending: list[bytes] = []
        pending_size = 0
        for line in lines:
            if self.max_bytes and self._size + pending_size and \
                    self._size + pending_size + len(line) > self.max_bytes:
                self._write_all(b"".join(pending))
                pending, pending_size = [], 0
                self._rotate()
            if self.fsync == "always":
                self._write_all(line)
                self._sync()
                continue
            pending.append(line)
            pending_size += len(line)
        if pending:
            self._write_all(b"".join(pending))
            if self.fsync == "batch":
                self._sync()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _sync(self) -> None:
        os.fsync(self._fd)
        self.fsyncs += 1

    def _rotate(self) -> None:
        """``path.N-1`` -> ``path.N`` ... ``path`` -> ``path.1``, then a fresh ``path``."""
        self._sync()
        os.close(self._fd)
        names = rotated_paths(self.path, self.backups)
        if self.backups == 0:
            os.unlink(self.path)
        else:
            if os.path.exists(names[-1]):
                os.unlink(names[-1])
            for older, newer in zip(reversed(names[1:]), reversed(names[:-1]), strict=False):
                if os.path.exists(newer):
                    os.replace(newer, older)
        self._fd = self._open()
        self._size = 0
        if self.fsync != "never":
            self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if self._fd >= 0:
            self._sync()
            os.close(self._fd)
            self._fd = -1


class WebhookFailed(Exception):
    """A batch the collector did not accept within the allowed attempts."""


class WebhookSink:
    """POSTs batches as NDJSON (``application/x-ndjson``: the lines as written) to ``url``.

    A batch that fails (transport error or a non-2xx answer) is retried with exponential
    backoff and jitter, up to ``max_backoff`` seconds apart. With ``attempts`` None (the
    ``block`` overflow policy) it is retried until the collector takes it: the queue fills
    and requests wait, and nothing is lost. With a number (``drop``) the batch is given up
    and counted ``failed`` after that many attempts. The URL (which may hold a credential)
    never reaches a log line.
    """

    name = "webhook"

    def __init__(self, url: str, *, batch_size: int = 100, timeout: float = 5.0, max_backoff: float = 30.0,
                 attempts: int | None = None, first_backoff: float = 0.2) -> None:
        self.url = url
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.attempts = attempts
        self.first_backoff = first_backoff
        self._client: httpx.AsyncClient | None = None

    async def write(self, lines: list[bytes]) -> None:
        if self._client is None:  # made on first use, inside the event loop that will use it
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        body = b"".join(lines)
        attempt = 0
        while True:
            problem = await self._post(body)
            if problem is None:
                return
            attempt += 1
            if self.attempts is not None and attempt >= self.attempts:
                raise WebhookFailed(f"gave up after {attempt} attempts: {problem}")
            delay = self.backoff(attempt)
            log.warning("audit webhook did not take a batch; retrying",
                        extra={"records": len(lines), "attempt": attempt, "problem": problem,
                               "retry_in_seconds": round(delay, 2)})
            await asyncio.sleep(delay)

    def backoff(self, attempt: int) -> float:
        """Exponential, capped, with "equal jitter": between half and all of the step, so that
        replicas that failed together do not retry together."""
        step = min(self.max_backoff, self.first_backoff * 2 ** (attempt - 1))
        return step / 2 + random.uniform(0, step / 2)

    async def _post(self, body: bytes) -> str | None:
        assert self._client is not None
        try:
            response = await self._client.post(self.url, content=body,
                                               headers={"content-type": "application/x-ndjson"})
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if 200 <= response.status_code < 300 else f"status {response.status_code}"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
