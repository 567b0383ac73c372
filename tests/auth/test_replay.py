"""Signature nonce replay caches (STANDARDS.md MS-03, MS-26, MS-28, WH-06).

``MemoryReplayCache`` runs on a ``FrozenClock``; ``RedisReplayCache`` runs against a real
``redis-server`` on 127.0.0.1 (``tests/redis_support.py``): the shared one of the session
(``redis_url``) or, for tests that look at the whole keyspace or stop Redis, one of the
test's own (``redis_server``). Both caches answer the same questions the same way: a
(resource, key thumbprint, nonce) is new once per window, and when the cache cannot answer
it raises ``ReplayCacheUnavailable`` instead of guessing (the verifier then refuses with 503).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcer.auth.replay import (
    MemoryReplayCache,
    RedisReplayCache,
    ReplayCacheUnavailable,
    cache_key,
    make_replay_cache,
    replay_store_problem,
)
from enforcer.clock import FrozenClock
from tests.redis_support import RedisServer
from tests.support import free_port

NOW = 1_760_000_000
TTL = 360  # max_age 300 + 2 * clock skew 30, as the verifier asks


def parts(nonce: str | None = None, resource: str = "demo", thumbprint: str = "thumb-1") -> tuple[str, str, str]:
    return (resource, thumbprint, nonce or f"nonce-{uuid.uuid4().hex}")


@pytest.fixture
def replay_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of ``enforcer.replay``, even after the CLI's logging setup turned propagation off."""
    logger = logging.getLogger("enforcer")
    propagate = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="enforcer.replay"):
            yield caplog
    finally:
        logger.propagate = propagate


# -- MemoryReplayCache ---------------------------------------------------------------------


def test_MS_26_memory_first_use_then_replay_refused() -> None:
    cache = MemoryReplayCache(FrozenClock(NOW))
    p = parts()

    async def run() -> list[bool]:
        return [await cache.first_use(p, TTL), await cache.first_use(p, TTL), await cache.first_use(p, TTL)]

    assert asyncio.run(run()) == [True, False, False]
    assert cache.describe() == "memory"


def test_MS_26_memory_nonce_is_remembered_for_the_whole_window_and_then_forgotten() -> None:
    clock = FrozenClock(NOW)
    cache = MemoryReplayCache(clock)
    p = parts()

    async def run() -> None:
        assert await cache.first_use(p, TTL) is True
        clock.advance(TTL - 0.5)
        assert await cache.first_use(p, TTL) is False  # still inside the window
        clock.advance(0.5)
        assert await cache.first_use(p, TTL) is True  # the window has passed: recorded anew
        clock.advance(1)
        assert await cache.first_use(p, TTL) is False  # ... for a new window

    asyncio.run(run())


def test_MS_26_WH_06_memory_entries_are_independent_per_resource_key_and_nonce() -> None:
    cache = MemoryReplayCache(FrozenClock(NOW))
    base = parts("n-1", "demo", "thumb-1")
    variants = [
        base,
        ("other", "thumb-1", "n-1"),  # same key and nonce at another resource
        ("demo", "thumb-2", "n-1"),  # another agent key using the same nonce
        ("demo", "thumb-1", "n-2"),
        ("demo", "thumb-1n", "-1"),  # no ambiguity where the parts are joined
        ("demo", "thumb-1", "n-1 "),
    ]

    async def run() -> list[bool]:
        return [await cache.first_use(v, TTL) for v in variants] + [await cache.first_use(base, TTL)]

    assert asyncio.run(run()) == [True] * len(variants) + [False]
    assert len({cache_key(v) for v in variants}) == len(variants)


def test_MS_26_memory_full_cache_purges_expired_entries() -> None:
    clock = FrozenClock(NOW)
    cache = MemoryReplayCache(clock, max_entries=3)
    old = [parts() for _ in range(3)]

    async def run() -> None:
        for p in old:
            assert await cache.first_use(p, 10)
        clock.advance(10)  # all three expire exactly now
        assert await cache.first_use(parts("new"), 10) is True
        assert len(cache._expiry) == 1  # the purge dropped every expired entry, not just one

    asyncio.run(run())


def test_MS_26_memory_full_of_live_entries_fails_closed_but_still_recognises_replays() -> None:
    clock = FrozenClock(NOW)
    cache = MemoryReplayCache(clock, max_entries=2)
    live = [parts(), parts()]

    async def run() -> None:
        for p in live:
            assert await cache.first_use(p, 10)
        with pytest.raises(ReplayCacheUnavailable, match="full"):
            await cache.first_use(parts("third"), 10)
        # a replay of a remembered nonce is still a replay (False), not an outage
        assert await cache.first_use(live[0], 10) is False
        clock.advance(10)
        assert await cache.first_use(parts("third"), 10) is True  # room again once they expire

    asyncio.run(run())


def test_MS_26_memory_close_forgets_everything() -> None:
    cache = MemoryReplayCache(FrozenClock(NOW))
    p = parts()

    async def run() -> list[bool]:
        first = await cache.first_use(p, TTL)
        await cache.close()
        return [first, await cache.first_use(p, TTL)]

    assert asyncio.run(run()) == [True, True]


# -- RedisReplayCache against a real redis-server -------------------------------------------


def test_MS_26_redis_first_use_then_replay_refused(redis_url: str) -> None:
    p = parts()

    async def run() -> list[bool]:
        cache = RedisReplayCache(redis_url)
        try:
            return [await cache.first_use(p, TTL), await cache.first_use(p, TTL), await cache.first_use(p, TTL)]
        finally:
            await cache.close()

    assert asyncio.run(run()) == [True, False, False]


def test_MS_26_WH_06_redis_replicas_share_nonces_and_parts_are_independent(redis_url: str) -> None:
    nonce = f"n-{uuid.uuid4().hex}"
    base = ("demo", "thumb-1", nonce)
    variants = [("other", "thumb-1", nonce), ("demo", "thumb-2", nonce), ("demo", "thumb-1", nonce + "x")]

    async def run() -> tuple[list[bool], list[bool]]:
        replica_a, replica_b = RedisReplayCache(redis_url), RedisReplayCache(redis_url)
        try:
            shared = [await replica_a.first_use(base, TTL), await replica_b.first_use(base, TTL)]
            independent = [await replica_b.first_use(v, TTL) for v in variants]
            return shared, independent
        finally:
            await replica_a.close()
            await replica_b.close()

    shared, independent = asyncio.run(run())
    assert shared == [True, False]  # what one replica recorded, the other refuses
    assert independent == [True, True, True]


def test_MS_26_redis_stores_only_the_hashed_key_with_the_window_as_ttl(redis_server: RedisServer) -> None:
    nonce = "agent-nonce-Zm9vYmFy"
    p = ("demo", "thumb-1", nonce)

    async def run() -> None:
        cache = RedisReplayCache(redis_server.url)
        try:
            assert await cache.first_use(p, TTL)
            assert await cache.first_use(("demo", "thumb-1", "short-window"), 0)  # EX must be >= 1
        finally:
            await cache.close()

    asyncio.run(run())
    client = redis_server.client()
    keys = sorted(k.decode() for k in client.scan_iter(match="*"))
    assert len(keys) == 2
    assert cache_key(p) in keys
    for key in keys:
        assert re.fullmatch(r"enforcer:nonce:[0-9a-f]{64}", key), key
        assert nonce not in key and "thumb-1" not in key and "demo" not in key
        assert client.get(key) == b"1"
    assert TTL - 5 <= client.ttl(cache_key(p)) <= TTL
    assert 0 < client.pttl(cache_key(("demo", "thumb-1", "short-window"))) <= 1000
    client.close()


def test_MS_26_redis_nonce_is_accepted_again_after_its_ttl(redis_url: str) -> None:
    p = parts()

    async def run() -> float:
        cache = RedisReplayCache(redis_url)
        try:
            assert await cache.first_use(p, 1)
            start = time.monotonic()
            assert await cache.first_use(p, 1) is False
            while not await cache.first_use(p, 1):
                assert time.monotonic() - start < 5, "the nonce never expired"
                await asyncio.sleep(0.05)
            return time.monotonic() - start
        finally:
            await cache.close()

    assert asyncio.run(run()) > 0.5


def _assert_unavailable_quickly(url: str, limit: float = 2.0) -> ReplayCacheUnavailable:
    async def run() -> tuple[ReplayCacheUnavailable | None, float]:
        cache = RedisReplayCache(url)
        start = time.monotonic()
        try:
            await cache.first_use(parts(), TTL)
        except ReplayCacheUnavailable as exc:
            return exc, time.monotonic() - start
        finally:
            await cache.close()
        return None, time.monotonic() - start

    error, elapsed = asyncio.run(run())
    assert error is not None, "an unreachable cache must not answer 'first use'"
    assert elapsed < limit, f"took {elapsed:.2f}s"
    return error


def test_MS_26_redis_closed_port_fails_closed_quickly(replay_log: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    error = _assert_unavailable_quickly(f"redis://agent:s3cret-pw@127.0.0.1:{port}/0")
    # shown to the caller (503 body): no address, no credentials; the address is in the log only
    assert str(error) == "the shared nonce cache cannot be reached"
    [record] = [r for r in replay_log.records if r.name == "enforcer.replay"]
    assert record.levelno == logging.ERROR and record.getMessage() == "replay cache unavailable"
    assert record.store == f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    assert "s3cret-pw" not in replay_log.text


def test_MS_26_redis_stopped_server_fails_closed_quickly_and_recovers_on_restart(redis_server: RedisServer) -> None:
    p = parts()

    async def run() -> None:
        cache = RedisReplayCache(redis_server.url)
        try:
            assert await cache.first_use(p, TTL)
            redis_server.stop()
            start = time.monotonic()
            with pytest.raises(ReplayCacheUnavailable):
                await cache.first_use(parts(), TTL)
            assert time.monotonic() - start < 2
            redis_server.start()
            # an outage empties this Redis (no persistence): the nonce is new again
            assert await cache.first_use(p, TTL) is True
            assert await cache.first_use(p, TTL) is False
        finally:
            await cache.close()

    asyncio.run(run())


def test_MS_26_redis_restart_between_requests_does_not_fail_the_next_request(redis_server: RedisServer) -> None:
    """A pooled connection that Redis closed (restart, idle timeout, failover) is replaced on first use:
    the first request after the restart gets an answer, not a spurious 503."""

    async def run() -> list[bool]:
        cache = RedisReplayCache(redis_server.url)
        try:
            first = await cache.first_use(parts(), TTL)
            redis_server.stop()
            redis_server.start()
            return [first, await cache.first_use(parts(), TTL)]
        finally:
            await cache.close()

    assert asyncio.run(run()) == [True, True]


def test_MS_26_redis_that_never_answers_times_out_without_retrying() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]

        async def run() -> float:
            cache = RedisReplayCache(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.3)
            start = time.monotonic()
            try:
                with pytest.raises(ReplayCacheUnavailable):
                    await cache.first_use(parts(), TTL)
            finally:
                await cache.close()
            return time.monotonic() - start

        elapsed = asyncio.run(run())
    assert 0.25 <= elapsed < 0.6  # one timeout: a SET that timed out is not sent again


def test_MS_26_redis_read_only_replica_fails_closed(tmp_path: Path) -> None:
    """After a failover to a replica (or with a misconfigured URL) writes are refused: no nonce is recorded,
    so none may be accepted."""
    replica = RedisServer(tmp_path, extra_args=["--replicaof", "127.0.0.1", str(free_port())]).start()
    try:
        error = _assert_unavailable_quickly(replica.url)
        assert "cannot be reached" in str(error)
    finally:
        replica.stop()


# -- choosing a store ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "kind", "described"), [
    (None, MemoryReplayCache, "memory"),
    ("", MemoryReplayCache, "memory"),
    ("memory", MemoryReplayCache, "memory"),
    ("redis://127.0.0.1:6379/0", RedisReplayCache, "redis://127.0.0.1:6379/0"),
    ("redis://cache.internal/2", RedisReplayCache, "redis://cache.internal:6379/2"),
    ("rediss://agent:s3cret@cache.internal:6380/1?ssl_cert_reqs=required", RedisReplayCache,
     "rediss://cache.internal:6380/1"),
    ("redis://:s3cret@[::1]:6380/0", RedisReplayCache, "redis://[::1]:6380/0"),
    ("unix:///run/redis/redis.sock?db=3&password=s3cret", RedisReplayCache, "unix:///run/redis/redis.sock"),
])
def test_MS_26_make_replay_cache(url: str | None, kind: type, described: str) -> None:
    cache = make_replay_cache(url, FrozenClock(NOW))
    try:
        assert isinstance(cache, kind)
        assert cache.describe() == described
        assert "s3cret" not in cache.describe()
    finally:
        asyncio.run(cache.close())


@pytest.mark.parametrize(("url", "problem"), [
    ("memory", None),
    ("redis://127.0.0.1:6379/0", None),
    ("rediss://user:pw@cache.internal:6380/1", None),
    ("unix:///run/redis/redis.sock", None),
    ("Memory", "the replay store is 'memory' or a redis://, rediss:// or unix:// URL"),
    ("", "the replay store is 'memory' or a redis://, rediss:// or unix:// URL"),
    ("http://127.0.0.1:6379", "the replay store is 'memory' or a redis://, rediss:// or unix:// URL"),
    ("127.0.0.1:6379", "the replay store is 'memory' or a redis://, rediss:// or unix:// URL"),
    ("redis://127.0.0.1:notaport/0", "the replay store URL has an invalid port"),
    ("redis://127.0.0.1:70000/0", "the replay store URL has an invalid port"),
])
def test_MS_26_replay_store_problem(url: str, problem: str | None) -> None:
    assert replay_store_problem(url) == problem
    if problem is not None and url:  # unset ("" or None) means memory to make_replay_cache
        with pytest.raises(ValueError, match=re.escape(problem)):
            make_replay_cache(url, FrozenClock(NOW))
