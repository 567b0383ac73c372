"""The proxy sockets of ``enforcer serve --workers N``: one per worker, connections spread over
them, TCP_NODELAY on every accepted connection, and no silent sharing of a port in use.

Each worker accepts on its own socket of a ``SO_REUSEPORT`` group. With one socket shared by
every worker, one worker took a whole burst of keep-alive connections while the others idled,
and with a socket that did not name its protocol asyncio left Nagle's algorithm on, so each
small response waited for the client's delayed ACK.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from enforcer.workers import bind_listeners

CONNECTIONS = 64


@contextmanager
def group(count: int) -> Iterator[list[socket.socket]]:
    listeners = bind_listeners("127.0.0.1", 0, count)
    try:
        yield listeners
    finally:
        for listener in listeners:
            listener.close()


def accept_all(listener: socket.socket) -> list[socket.socket]:
    """Every connection waiting in this socket's queue."""
    listener.setblocking(False)
    accepted = []
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return accepted
        accepted.append(connection)


def test_every_worker_gets_a_socket_on_the_one_port() -> None:
    with group(3) as listeners:
        assert len(listeners) == 3
        assert len({listener.getsockname()[1] for listener in listeners}) == 1
        assert len({listener.fileno() for listener in listeners}) == 3


def test_a_burst_of_connections_is_spread_over_the_workers() -> None:
    with group(2) as listeners, ExitStack() as stack:
        port = listeners[0].getsockname()[1]
        for _ in range(CONNECTIONS):
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        counts = []
        for listener in listeners:
            accepted = accept_all(listener)
            counts.append(len(accepted))
            for connection in accepted:
                stack.enter_context(connection)
        assert sum(counts) == CONNECTIONS
        # a hash of 64 distinct source ports: every connection on one socket has odds of 2**-63
        assert min(counts) > 0, counts


def test_accepted_connections_have_nagle_off() -> None:
    async def nodelay_of_an_accepted_connection(listener: socket.socket) -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    with group(1) as (listener,):
        assert listener.proto == socket.IPPROTO_TCP
        assert asyncio.run(nodelay_of_an_accepted_connection(listener)) == 1


@pytest.mark.parametrize("holder", ["plain", "another_group"])
def test_a_port_in_use_is_refused_not_shared(holder: str) -> None:
    if holder == "plain":
        taken = socket.create_server(("127.0.0.1", 0))
        held = [taken]
    else:
        held = bind_listeners("127.0.0.1", 0, 2)
    try:
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", held[0].getsockname()[1], 2)
    finally:
        for sock in held:
            sock.close()
