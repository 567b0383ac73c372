"""A private ``redis-server`` on 127.0.0.1 for the shared replay-cache tests.

Nothing is mocked: ``RedisServer`` runs Debian's ``redis-server`` binary on a free loopback
port, without persistence, in a temporary directory. ``redis_url`` (session scope) is one
server shared by every test that only needs Redis to be up; ``redis_server`` (function scope)
is a server of the test's own, for tests that stop and restart it. A machine without
``redis-server`` fails these tests (it is installed by ``.ci/run``; locally
``apt-get install redis-server``): they are not skipped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

REDIS_SERVER = "redis-server"
MISSING = ("redis-server is not installed: the replay-cache tests need a real Redis. "
           "Install it with `apt-get install redis-server` (.ci/run does this before `make test`).")


def redis_binary() -> str:
    path = shutil.which(REDIS_SERVER)
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    return path


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when something on ``port`` answers the Redis PING command with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, directory: Path, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10) -> RedisServer:
        assert not self.running, "already running"
        command = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                   "--save", "", "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no",
                   *self.extra_args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Terminate the server and wait until the port no longer answers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        assert not ping(self.port), f"something still answers on port {self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self):  # type: ignore[no-untyped-def]
        """A synchronous redis-py client, to look at what the enforcer stored."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=2)


def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="session")
def redis_url(redis_session_server: RedisServer) -> str:
    """``redis://127.0.0.1:N/0`` of a Redis shared by the session (never stopped by tests)."""
    return redis_session_server.url


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may stop and start again on the same port."""
    yield from running_redis(tmp_path_factory.mktemp("redis-own"))
