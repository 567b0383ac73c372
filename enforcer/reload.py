"""Policy hot reload: on a change of the policy files, or on SIGHUP.

The files are read and validated in full (``load_policy``: every problem of every file)
before anything changes. A policy with any problem is not applied: the last good one keeps
serving, every problem is logged, ``enforcer_policy_reload_total{result="error"}`` counts the
attempt, and ``/readyz`` reports the degraded state (still ready: traffic is served by the
last good policy, which is exactly what an orchestrator should keep routing to). A good
policy becomes a new ``PolicyState``, keeping the key caches of unchanged issuers, whose
changed or new key caches are fetched first; then the app swaps to it in one assignment.

Watching uses watchfiles (inotify) on the directories that hold the policy files, so it also
sees a Kubernetes ConfigMap update, which swaps a ``..data`` symlink rather than writing the
files. Any change there triggers a reload; one that leaves the policy text unchanged (same
version hash) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from enforcer.policy.loader import Policy, PolicyLoadError, load_policy

log = logging.getLogger("enforcer.reload")

#: how long the watcher waits for a burst of file events to settle before it reloads
DEBOUNCE_MS = 200


class PolicyReloader:
    """Reloads the policy from ``paths`` and hands a good one to ``apply``."""

    def __init__(self, paths: Sequence[str], current: Callable[[], Policy],
                 apply: Callable[[Policy], Awaitable[None]], on_result: Callable[[bool], None],
                 check: Callable[[Policy], str | None] | None = None) -> None:
        self.paths = tuple(paths)
        self._check = check  # what the process settings refuse in a policy (``config.serving_problem``)
        self._current = current
        self._apply = apply
        self._on_result = on_result  # the reload metric: True for a new policy in force, False for an error
        self._lock = asyncio.Lock()
        self.errors: tuple[str, ...] = ()  # of the last attempt; empty when it succeeded
        self.last_attempt: float | None = None
        self.last_success: float | None = None

    async def reload(self, trigger: str) -> bool:
        """Load, validate, apply. True when the files now in place are in force (changed or not)."""
        async with self._lock:
            self.last_attempt = time.time()
            try:
                policy = load_policy(self.paths)
            except PolicyLoadError as exc:
                return self._refused(trigger, [str(problem) for problem in exc.problems])
            except OSError as exc:  # a file vanished between listing and reading, say
                return self._refused(trigger, [f"{type(exc).__name__}: {exc}"])
            if self._check is not None and (problem := self._check(policy)):
                return self._refused(trigger, [f"{', '.join(map(str, policy.files))}: {problem}"])
            previous = self._current().version_hash
            if policy.version_hash != previous:
                await self._apply(policy)
                self._on_result(True)
                self.last_success = time.time()
                log.info("policy reloaded", extra={"trigger": trigger, "policy": policy.version_hash,
                                                   "previous": previous, "files": list(policy.files)})
                for warning in policy.warnings:
                    log.warning("policy warning", extra={"problem": str(warning)})
            self.errors = ()
            return True

    def _refused(self, trigger: str, problems: list[str]) -> bool:
        self.errors = tuple(problems)
        self._on_result(False)
        log.error("policy reload refused; the last good policy keeps serving",
                  extra={"trigger": trigger, "policy": self._current().version_hash, "problems": len(problems)})
        for problem in problems:
            log.error("policy problem", extra={"problem": problem})
        return False

    def status(self) -> dict[str, Any]:
        """The ``/readyz`` detail: degraded while the files on disk are not the policy in force."""
        return {"degraded": bool(self.errors), "errors": list(self.errors), "last_attempt": self.last_attempt,
                "last_success": self.last_success}

    async def watch(self) -> None:
        """Reload whenever something changes where the policy files live, until cancelled."""
        from watchfiles import awatch

        directories = sorted({str(p if p.is_dir() else p.parent) for p in map(Path, self.paths)})
        async for _changes in awatch(*directories, debounce=DEBOUNCE_MS, step=50, recursive=False,
                                     ignore_permission_denied=True):
            try:
                await self.reload("file change")
            except Exception:  # the watcher must outlive any one failed attempt
                log.exception("policy reload failed")


def run_in_background(coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
    """A task whose failure is logged, not lost."""
    task = asyncio.ensure_future(coroutine)

    def done(finished: asyncio.Task[Any]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            log.error("background task failed", extra={"error": type(finished.exception()).__name__})

    task.add_done_callback(done)
    return task


async def cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
