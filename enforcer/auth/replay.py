"""Replay caches: each signature nonce is accepted once per key within its window.

Two implementations of one small interface, chosen by the process settings: an
in-memory cache for a single process and Redis (``SET key 1 NX EX ttl``, atomic) for
replicas that must agree. Either way the cache fails closed: when it cannot answer, the
caller refuses the request (``ReplayCacheUnavailable``) rather than accept a nonce it
could not record. Keys are SHA-256 digests of what the caller gives, so an agent's nonce
never reaches Redis verbatim and key length is fixed.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

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


class RedisReplayCache:
    """Nonces shared by every replica through one Redis (``redis://`` or ``rediss://`` URL)."""

    def __init__(self, url: str, *, timeout_seconds: float = 0.5) -> None:
        import redis.asyncio as redis  # imported here: single-process deployments never need it

        self._errors = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                            socket_connect_timeout=timeout_seconds, retry_on_timeout=False)
        self._where = _redacted(url)

    async def first_use(self, parts: tuple[str, ...], ttl_seconds: int) -> bool:
        try:
            stored = await self._client.set(cache_key(parts), b"1", nx=True, ex=max(int(ttl_seconds), 1))
        except self._errors as exc:
            log.error("replay cache unavailable", extra={"store": self._where, "error": type(exc).__name__})
            raise ReplayCacheUnavailable(f"the shared nonce cache ({self._where}) cannot be reached") from exc
        return bool(stored)

    async def close(self) -> None:
        await self._client.aclose()

    def describe(self) -> str:
        return self._where


def _redacted(url: str) -> str:
    """host:port/db of a Redis URL, without credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def replay_store_problem(url: str) -> str | None:
    if url == "memory" or url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return "the replay store is 'memory' or a redis://, rediss:// or unix:// URL"


def make_replay_cache(url: str | None, clock: Clock) -> ReplayCache:
    if not url or url == "memory":
        return MemoryReplayCache(clock)
    if problem := replay_store_problem(url):
        raise ValueError(problem)
    return RedisReplayCache(url)
