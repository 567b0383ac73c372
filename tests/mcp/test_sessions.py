"""MCP sessions bound to the caller that received them (STANDARDS.md MCP-22; ``enforcer/mcp/sessions.py``).

Both stores answer the same questions the same way, so most tests run against each:
``MemorySessionStore`` on a ``FrozenClock``, and ``RedisSessionStore`` against a real
``redis-server`` on 127.0.0.1 (``tests/redis_support.py``). A binding is made once, by the
caller that received the session id; nobody else can take it over while it lives; each use
starts its idle time again; and when the store cannot answer, the request fails closed with
``SessionStoreUnavailable``, whose message names no address.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from enforcer.clock import FrozenClock
from enforcer.context import Principal
from enforcer.errors import SessionStoreUnavailable
from enforcer.mcp.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    make_session_store,
    owner_of,
    session_key,
)
from tests.redis_support import RedisServer
from tests.support import free_port

NOW = 1_760_000_000
TTL = 3600


def principal(sub: str = "alice", client_id: str = "agent-42", iss: str = "https://auth.example.test",
              scopes: str = "tools:call", jti: str = "jti-1") -> Principal:
    return Principal(issuer_id="corp", iss=iss, sub=sub, client_id=client_id, scopes=frozenset(scopes.split()),
                     jti=jti, exp=2_000_000_000, token_hash="0123abcd")


ALICE, BOB = owner_of(principal()), owner_of(principal(sub="bob"))


def new_key() -> str:
    return session_key("demo", f"session-{uuid.uuid4().hex}")


@dataclass
class Backend:
    """One kind of store, with the means to look at it from outside and to let time pass."""

    name: str
    clock: FrozenClock | None = None
    server: RedisServer | None = None

    def store(self) -> SessionStore:
        if self.server is not None:
            return RedisSessionStore(self.server.url)
        assert self.clock is not None
        return MemorySessionStore(self.clock)

    async def elapse(self, store: SessionStore, key: str, seconds: float) -> None:
        """Let ``seconds`` of the binding's idle time pass (Redis: shorten its TTL by as much)."""
        if self.clock is not None:
            self.clock.advance(seconds)
            return
        assert self.server is not None
        client = self.server.client()
        try:
            left = client.pttl(key)
            if left > 0:
                remaining = left - int(seconds * 1000)
                if remaining > 0:
                    client.pexpire(key, remaining)
                else:
                    client.delete(key)  # what Redis does once the TTL has run out
        finally:
            client.close()

    def ttl(self, store: SessionStore, key: str) -> float | None:
        """Seconds the binding of ``key`` still lives (None: no binding)."""
        if self.server is not None:
            client = self.server.client()
            try:
                left = client.pttl(key)
            finally:
                client.close()
            return left / 1000 if left >= 0 else None
        assert isinstance(store, MemorySessionStore) and self.clock is not None
        entry = store._sessions.get(key)
        return entry[1] - self.clock.monotonic() if entry is not None else None


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", clock=FrozenClock(NOW))
    else:
        yield Backend("redis", server=request.getfixturevalue("redis_session_server"))


def run(backend: Backend, steps: Callable[[SessionStore], Awaitable[Any]]) -> Any:
    """``steps`` against a new store of ``backend``, closed afterwards."""

    async def go() -> Any:
        store = backend.store()
        try:
            return await steps(store)
        finally:
            await store.close()

    return asyncio.run(go())


# --- binding and looking up ---------------------------------------------------------------------------


def test_MCP_22_bind_then_owner(backend: Backend) -> None:
    key, other = new_key(), new_key()

    async def steps(store: SessionStore) -> list[str | None]:
        before = await store.owner(key, TTL)
        await store.bind(key, ALICE, TTL)
        return [before, await store.owner(key, TTL), await store.owner(key, TTL), await store.owner(other, TTL)]

    assert run(backend, steps) == [None, ALICE, ALICE, None]


def test_MCP_22_a_binding_is_never_taken_over_by_another_caller(backend: Backend) -> None:
    key = new_key()

    async def steps(store: SessionStore) -> list[str | None]:
        await store.bind(key, ALICE, TTL)
        await store.bind(key, BOB, TTL)  # the same id issued again, to someone else
        first = await store.owner(key, TTL)
        await store.bind(key, BOB, TTL * 2)
        return [first, await store.owner(key, TTL)]

    assert run(backend, steps) == [ALICE, ALICE]


def test_MCP_22_another_caller_s_bind_does_not_extend_the_binding(backend: Backend) -> None:
    key = new_key()

    async def steps(store: SessionStore) -> tuple[float | None, str | None]:
        await store.bind(key, ALICE, 100)
        await backend.elapse(store, key, 50)
        await store.bind(key, BOB, 1000)
        return backend.ttl(store, key), await store.owner(key, 100)

    left, owner = run(backend, steps)
    assert left is not None and 45 <= left <= 50
    assert owner == ALICE


def test_MCP_22_the_owner_binding_again_starts_the_idle_time_again(backend: Backend) -> None:
    key = new_key()

    async def steps(store: SessionStore) -> tuple[float | None, str | None]:
        await store.bind(key, ALICE, 100)
        await backend.elapse(store, key, 60)
        await store.bind(key, ALICE, 300)
        return backend.ttl(store, key), await store.owner(key, 300)

    left, owner = run(backend, steps)
    assert left is not None and 295 <= left <= 300
    assert owner == ALICE


def test_MCP_22_each_use_starts_the_idle_time_again(backend: Backend) -> None:
    key = new_key()

    async def steps(store: SessionStore) -> list[Any]:
        await store.bind(key, ALICE, 100)
        after_bind = backend.ttl(store, key)
        await backend.elapse(store, key, 80)
        still = await store.owner(key, 100)  # used after 80 s: 100 s again from now
        after_use = backend.ttl(store, key)
        await backend.elapse(store, key, 80)  # 160 s after the bind, 80 s after the use
        again = await store.owner(key, 200)
        after_second_use = backend.ttl(store, key)
        return [after_bind, still, after_use, again, after_second_use]

    after_bind, still, after_use, again, after_second_use = run(backend, steps)
    assert 95 <= after_bind <= 100
    assert still == ALICE and 95 <= after_use <= 100
    assert again == ALICE and 195 <= after_second_use <= 200  # the ttl of the lookup counts


def test_MCP_22_an_idle_binding_expires(backend: Backend) -> None:
    key = new_key()

    async def steps(store: SessionStore) -> list[str | None]:
        await store.bind(key, ALICE, 100)
        await backend.elapse(store, key, 99)
        alive = await store.owner(key, 100)
        await backend.elapse(store, key, 100)
        expired = await store.owner(key, 100)
        await store.bind(key, BOB, 100)  # an expired binding is no binding: the id can be issued anew
        return [alive, expired, await store.owner(key, 100)]

    assert run(backend, steps) == [ALICE, None, BOB]


def test_MCP_22_forget(backend: Backend) -> None:
    key, other = new_key(), new_key()

    async def steps(store: SessionStore) -> list[str | None]:
        await store.bind(key, ALICE, TTL)
        await store.bind(other, ALICE, TTL)
        await store.forget(key)
        await store.forget(key)  # twice: nothing to forget, no error
        await store.forget(new_key())
        gone = await store.owner(key, TTL)
        await store.bind(key, BOB, TTL)  # forgotten: may be bound again, by anyone
        return [gone, await store.owner(key, TTL), await store.owner(other, TTL)]

    assert run(backend, steps) == [None, BOB, ALICE]


def test_MCP_22_bindings_are_shared_by_stores_of_one_backend(backend: Backend) -> None:
    """Replicas on one Redis agree; in memory, one store is one process (the clock is shared here
    only to build the second store; its bindings are its own)."""
    key = new_key()

    async def go() -> str | None:
        first, second = backend.store(), backend.store()
        try:
            await first.bind(key, ALICE, TTL)
            return await second.owner(key, TTL)
        finally:
            await first.close()
            await second.close()

    assert asyncio.run(go()) == (ALICE if backend.name == "redis" else None)


# --- memory store limits --------------------------------------------------------------------------------


def test_MCP_22_a_full_memory_store_drops_the_least_recently_used_binding() -> None:
    """Dropping a binding only takes access away (its session answers 404); refusing new
    bindings would let one caller block everyone's sessions."""
    clock = FrozenClock(NOW)
    store = MemorySessionStore(clock, max_entries=2)
    first, second, third, fourth = new_key(), new_key(), new_key(), new_key()

    async def steps() -> None:
        await store.bind(first, ALICE, 100)
        await store.bind(second, ALICE, 200)
        assert await store.owner(first, 100) == ALICE  # first is now the most recently used
        await store.bind(third, BOB, 100)  # full: second, used least recently, goes
        assert [await store.owner(k, 100) for k in (first, second, third)] == [ALICE, None, BOB]
        await store.bind(first, BOB, 100)  # an existing binding is not taken over, even when full
        assert await store.owner(first, 100) == ALICE
        clock.advance(150)  # both expired: their room is reused before anything is dropped
        await store.bind(fourth, BOB, 100)
        assert len(store._sessions) == 1 and await store.owner(fourth, 100) == BOB

    asyncio.run(steps())


def test_MCP_22_memory_close_forgets_everything() -> None:
    store = MemorySessionStore(FrozenClock(NOW))
    key = new_key()

    async def steps() -> list[str | None]:
        await store.bind(key, ALICE, TTL)
        before = await store.owner(key, TTL)
        await store.close()
        return [before, await store.owner(key, TTL)]

    assert asyncio.run(steps()) == [ALICE, None]


# --- redis unavailable ------------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[SessionStore, str], Awaitable[Any]]] = {
    "bind": lambda store, key: store.bind(key, ALICE, TTL),
    "owner": lambda store, key: store.owner(key, TTL),
    "forget": lambda store, key: store.forget(key),
}


def unavailable(url: str, operation: str) -> tuple[SessionStoreUnavailable | None, float]:
    async def go() -> tuple[SessionStoreUnavailable | None, float]:
        store = RedisSessionStore(url)
        start = time.monotonic()
        try:
            await OPERATIONS[operation](store, new_key())
        except SessionStoreUnavailable as exc:
            return exc, time.monotonic() - start
        finally:
            await store.close()
        return None, time.monotonic() - start

    return asyncio.run(go())


@pytest.mark.parametrize("operation", OPERATIONS)
def test_MCP_22_redis_not_listening_fails_closed_without_naming_the_address(operation: str) -> None:
    port = free_port()  # nothing listens there
    error, elapsed = unavailable(f"redis://agent:s3cret-pw@127.0.0.1:{port}/0", operation)
    assert error is not None, "an unreachable store must not answer"
    assert elapsed < 2
    shown = f"{error} {error.description} {error.body()}"
    assert str(error) == "the MCP session store cannot be reached"
    for secret in ("127.0.0.1", str(port), "s3cret", "agent", "redis"):
        assert secret not in shown
    assert error.status == 503 and error.body()["reason"] == "session_store_unavailable"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_MCP_22_redis_stopped_fails_closed_and_recovers(redis_server: RedisServer, operation: str) -> None:
    key = new_key()

    async def go() -> None:
        store = RedisSessionStore(redis_server.url)
        try:
            await store.bind(key, ALICE, TTL)
            redis_server.stop()
            with pytest.raises(SessionStoreUnavailable) as raised:
                await OPERATIONS[operation](store, key)
            assert str(raised.value) == "the MCP session store cannot be reached"
            assert str(redis_server.port) not in str(raised.value)
            redis_server.start()
            # this Redis keeps nothing across a restart: the binding is gone, the client starts over
            assert await store.owner(key, TTL) is None
            await store.bind(key, BOB, TTL)
            assert await store.owner(key, TTL) == BOB
        finally:
            await store.close()

    asyncio.run(go())


# --- what is stored -----------------------------------------------------------------------------------------


def test_MCP_22_redis_stores_digests_only(redis_server: RedisServer) -> None:
    session_id = "mcp-session-Zm9vYmFy"
    who = principal(sub="alice@example.test", client_id="https://agent.example.test/client.json")
    key = session_key("demo", session_id)

    async def go() -> None:
        store = RedisSessionStore(redis_server.url)
        try:
            await store.bind(key, owner_of(who), TTL)
        finally:
            await store.close()

    asyncio.run(go())
    client = redis_server.client()
    try:
        keys = [k.decode() for k in client.scan_iter(match="*")]
        assert keys == [key]
        assert re.fullmatch(r"enforcer:session:[0-9a-f]{64}", key)
        value = client.get(key).decode()
        assert value == owner_of(who) and re.fullmatch(r"[0-9a-f]{64}", value)
        for claim in (session_id, "demo", who.sub, who.client_id, who.iss, "alice", "agent.example.test"):
            assert claim not in key and claim not in value
        assert TTL - 5 <= client.ttl(key) <= TTL
    finally:
        client.close()


@pytest.mark.parametrize(("a", "b", "same"), [
    (("demo", "s-1"), ("demo", "s-1"), True),
    (("demo", "s-1"), ("demo", "s-2"), False),
    (("demo", "s-1"), ("other", "s-1"), False),  # one session id at two resources: two bindings
    (("demo", "s-1"), ("demo", "S-1"), False),
    (("demo", "s-1"), ("demo", "s-1 "), False),
    (("demo", "s-1"), ("demos", "-1"), False),
])
def test_MCP_22_session_key(a: tuple[str, str], b: tuple[str, str], same: bool) -> None:
    for resource, session in (a, b):
        assert re.fullmatch(r"enforcer:session:[0-9a-f]{64}", session_key(resource, session))
    assert (session_key(*a) == session_key(*b)) is same


@pytest.mark.parametrize(("other", "same"), [
    (principal(), True),
    (principal(scopes="tools:call admin", jti="jti-2"), True),  # a new token of the same caller
    (principal(sub="bob"), False),
    (principal(client_id="agent-7"), False),  # the same user through another agent
    (principal(iss="https://other-issuer.example.test"), False),  # the same sub from another issuer
    (principal(sub="Alice"), False),
    (principal(sub="alice", client_id="agent-4", iss="https://auth.example.test2"), False),
], ids=["same", "new-token", "other-sub", "other-client", "other-issuer", "sub-case", "shifted"])
def test_MCP_22_owner_is_the_caller_not_the_token(other: Principal, same: bool) -> None:
    mine = owner_of(principal())
    assert re.fullmatch(r"[0-9a-f]{64}", mine)
    assert (owner_of(other) == mine) is same


def test_surrogates_in_a_session_id_do_not_break_the_key() -> None:
    assert session_key("demo", "s-\udcff") != session_key("demo", "s-\udcfe")


@pytest.mark.parametrize(("url", "kind"), [
    (None, MemorySessionStore),
    ("", MemorySessionStore),
    ("memory", MemorySessionStore),
    ("redis://127.0.0.1:6379/0", RedisSessionStore),
    ("rediss://user:pw@cache.internal:6380/1", RedisSessionStore),
    ("unix:///run/redis/redis.sock", RedisSessionStore),
])
def test_make_session_store(url: str | None, kind: type) -> None:
    store = make_session_store(url, FrozenClock(NOW))
    try:
        assert isinstance(store, kind)
    finally:
        asyncio.run(store.close())


@pytest.mark.parametrize("url", ["Memory", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport/0"])
def test_make_session_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="replay store"):
        make_session_store(url, FrozenClock(NOW))
