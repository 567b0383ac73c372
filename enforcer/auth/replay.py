"""Replay caches: each signature nonce is accepted once per key within its window.

Two implementations of one small interface, chosen by the process settings: an
in-memory cache for a single process and Redis (``SET key 1 NX EX ttl``, atomic) for
replicas that must agree. Either way the cache fails closed: when it cannot answer, the
caller refuses the request (``ReplayCacheUnavailable``) rather than accept a nonce it
could not record. Keys are SHA-256 digests of what the caller gives, so an agent's nonce
never reaches Redis verbatim and key length is fixed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from enforcer.clock import Clock

log = logging.getLogger("enforcer.replay")

MAX_MEMORY_ENTRIES = 200_000


class ReplayCacheUnavailable(Exception):
    """The cache could not record a nonce; the message is safe to log and to show."""


class ReplayCache(Protocol):
    async def first_use(self, parts: tuple[str, ...], ttl_seconds: int) -> bool:
        """Record ``parts`` for ``ttl_seconds``; False when they were already recorded."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def cache_key(parts: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"enforcer:nonce:{digest}"


class MemoryReplayCache:
    """Nonces of one process, forgotten after their ttl; full means fail closed."""

    def __init__(self, clock: Clock, max_entries: int = MAX_MEMORY_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}

    async def first_use(self, parts: tuple[str, ...], ttl_seconds: int) -> bool:
        key = cache_key(parts)
        now = self.clock.monotonic()
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return False
        if len(self._expiry) >= self.max_entries:
            self._purge(now)
            if len(self._expiry) >= self.max_entries:
                raise ReplayCacheUnavailable("the in-memory nonce cache is full")
        self._expiry[key] = now + ttl_seconds
        return True

    def _purge(self, now: float) -> None:
        self._expiry = {key: expiry for key, expiry in self._expiry.items() if expiry > now}

    async def close(self) -> None:
        self._expiry.clear()

    def describe(self) -> str:
        return "memory"


class RedisStore:
    """One Redis connection pool with the enforcer's failure handling, shared by the stores that
    keep state across replicas (signature nonces, MCP session bindings)."""

    def __init__(self, url: str, what: str, *, timeout_seconds: float = 0.5) -> None:
        # imported here: single-process deployments never need redis
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.errors = (redis.RedisError, OSError)
        # One immediate retry on a connection error, none on a timeout: a pooled connection that
        # Redis closed (restart, idle timeout, failover) fails on first use, and the retry runs on
        # a new connection. A timed-out SET may have been applied; repeating it would answer
        # "already used" for a fresh nonce, so a timeout is reported as unavailable instead.
        broken = (redis.ConnectionError,)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                           socket_connect_timeout=timeout_seconds,
                                           retry=Retry(NoBackoff(), 1, supported_errors=broken),
                                           retry_on_error=list(broken))
        self.where = _redacted(url)
        self.what = what
        self._last_logged = float("-inf")
        self._unlogged = 0

    @contextlib.asynccontextmanager
    async def calls(self, message: str, error: Callable[[str], Exception]) -> AsyncIterator[Any]:
        """The client, for calls whose failure becomes ``error(message)`` (logged, rate-limited)."""
        try:
            yield self.client
        except self.errors as exc:
            self._log_outage(exc)
            # the address is logged, not shown: callers must not learn the internal topology
            raise error(message) from exc

    def _log_outage(self, exc: BaseException) -> None:
        """One error line per 10 s of outage (with how many refusals it stands for), not one per request."""
        now = time.monotonic()
        if now - self._last_logged < 10:
            self._unlogged += 1
            return
        log.error(f"{self.what} unavailable", extra={"store": self.where, "error": type(exc).__name__,
                                                      "refusals_since_last_log": self._unlogged})
        self._last_logged, self._unlogged = now, 0

    async def close(self) -> None:
        await self.client.aclose()


class RedisReplayCache:
    """Nonces shared by every replica through one Redis (``redis://`` or ``rediss://`` URL)."""

    def __init__(self, url: str, *, timeout_seconds: float = 0.5) -> None:
        self._redis = RedisStore(url, "replay cache", timeout_seconds=timeout_seconds)

    async def first_use(self, parts: tuple[str, ...], ttl_seconds: int) -> bool:
        async with self._redis.calls("the shared nonce cache cannot be reached", ReplayCacheUnavailable) as client:
            stored = await client.set(cache_key(parts), b"1", nx=True, ex=max(int(ttl_seconds), 1))
        return bool(stored)

    async def close(self) -> None:
        await self._redis.close()

    def describe(self) -> str:
        return self._redis.where


def _redacted(url: str) -> str:
    """scheme://host:port/db (or unix://path) of a Redis URL, without credentials or query."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


def replay_store_problem(url: str) -> str | None:
    if url == "memory":
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "the replay store is 'memory' or a redis://, rediss:// or unix:// URL"
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "the replay store URL has an invalid port"
    return None


def make_replay_cache(url: str | None, clock: Clock) -> ReplayCache:
    if not url or url == "memory":
        return MemoryReplayCache(clock)
    if problem := replay_store_problem(url):
        raise ValueError(problem)
    return RedisReplayCache(url)
