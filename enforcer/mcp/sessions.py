"""MCP sessions bound to the caller that received them.

An upstream MCP server hands out a session id (the ``Mcp-Session-Id`` response header, or
the ``session_id`` of the legacy SSE transport's ``endpoint`` event) and then treats it as
the conversation's key. MCP forbids using it as authentication, but an upstream behind a
proxy sees only the proxy; if anyone holding the id could use it, a leaked id would be a
session hijack. So the enforcer records, when the id is issued, *who* received it (issuer,
``sub`` and ``client_id`` of the verified token) and answers 404 to anyone else presenting
it, and to ids it never saw issued (MCP's answer for an unknown session: the client starts
over). Every request is still authorised on its own token; the binding only adds a check.

Bindings live where signature nonces live: in memory for one process, or in Redis
(``enforcer:session:<sha256>``, value the caller's fingerprint, expiring after the idle
time, renewed on use) for replicas and workers that must agree. The store fails closed:
when it cannot answer, the request is refused with 503.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from enforcer.auth.replay import RedisStore, replay_store_problem
from enforcer.clock import Clock
from enforcer.context import Principal
from enforcer.errors import SessionStoreUnavailable

log = logging.getLogger("enforcer.sessions")

MAX_MEMORY_SESSIONS = 100_000


def session_key(resource_id: str, session_id: str) -> str:
    digest = hashlib.sha256(f"{resource_id}\x00{session_id}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"enforcer:session:{digest}"


def owner_of(principal: Principal) -> str:
    """The caller a session is bound to, as a digest: no claim value is stored."""
    who = f"{principal.iss}\x00{principal.sub}\x00{principal.client_id}"
    return hashlib.sha256(who.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore(Protocol):
    async def bind(self, key: str, owner: str, ttl_seconds: int) -> None:
        """Record ``owner`` for ``key``; an existing binding to someone else is kept."""
        ...

    async def owner(self, key: str, ttl_seconds: int) -> str | None:
        """The owner of ``key`` (its idle time starts again), or None."""
        ...

    async def forget(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemorySessionStore:
    """Bindings of one process, least recently used first. When full, the least recently used
    binding is dropped: its session then answers 404 and its client starts a new one. That only
    ever takes access away, so one caller opening sessions in a loop cannot block everyone's
    new sessions (as refusing every new binding would)."""

    def __init__(self, clock: Clock, max_entries: int = MAX_MEMORY_SESSIONS) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._sessions: dict[str, tuple[str, float]] = {}  # key -> (owner, expiry), oldest use first
        self._evicted_since_log = 0

    async def bind(self, key: str, owner: str, ttl_seconds: int) -> None:
        now = self.clock.monotonic()
        current = self._sessions.pop(key, None)
        if current is not None and current[1] > now and current[0] != owner:
            log.warning("session id issued again to another caller; the first binding is kept")
            self._sessions[key] = current
            return
        if len(self._sessions) >= self.max_entries:
            self._make_room(now)
        self._sessions[key] = (owner, now + ttl_seconds)

    def _make_room(self, now: float) -> None:
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        while len(self._sessions) >= self.max_entries:
            del self._sessions[next(iter(self._sessions))]
            self._evicted_since_log += 1
        if self._evicted_since_log >= max(1, self.max_entries // 100):
            log.warning("MCP session bindings dropped to make room", extra={"dropped": self._evicted_since_log})
            self._evicted_since_log = 0

    async def owner(self, key: str, ttl_seconds: int) -> str | None:
        now = self.clock.monotonic()
        current = self._sessions.pop(key, None)
        if current is None or current[1] <= now:
            return None
        self._sessions[key] = (current[0], now + ttl_seconds)  # now the most recently used
        return current[0]

    async def forget(self, key: str) -> None:
        self._sessions.pop(key, None)

    async def close(self) -> None:
        self._sessions.clear()


class RedisSessionStore:
    """Bindings shared by every replica through one Redis."""

    def __init__(self, url: str) -> None:
        self._redis = RedisStore(url, "session store")

    async def bind(self, key: str, owner: str, ttl_seconds: int) -> None:
        async with self._redis.calls("the MCP session store cannot be reached", SessionStoreUnavailable) as client:
            if not await client.set(key, owner.encode(), nx=True, ex=ttl_seconds):
                existing = await client.get(key)
                if existing is not None and existing.decode() != owner:
                    log.warning("session id issued again to another caller; the first binding is kept")
                else:
                    await client.set(key, owner.encode(), ex=ttl_seconds)

    async def owner(self, key: str, ttl_seconds: int) -> str | None:
        async with self._redis.calls("the MCP session store cannot be reached", SessionStoreUnavailable) as client:
            value = await client.getex(key, ex=ttl_seconds)
        return value.decode() if value is not None else None

    async def forget(self, key: str) -> None:
        async with self._redis.calls("the MCP session store cannot be reached", SessionStoreUnavailable) as client:
            await client.delete(key)

    async def close(self) -> None:
        await self._redis.close()


def make_session_store(url: str | None, clock: Clock) -> SessionStore:
    """The store named by the process's replay-store setting (``memory`` or a Redis URL)."""
    if not url or url == "memory":
        return MemorySessionStore(clock)
    if problem := replay_store_problem(url):
        raise ValueError(problem)
    return RedisSessionStore(url)
