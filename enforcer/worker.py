"""Inside one worker process of ``enforcer serve --workers N`` (see ``enforcer.workers``).

A worker runs what the single-process server runs, ``EnforcerApp`` under uvicorn, on the
listening socket its parent bound. Once its lifespan startup has completed it reports its
readiness to the parent through a status file, rewritten every ``HEARTBEAT_SECONDS``; the
same beat refreshes its key gauges, which the single-process server refreshes per scrape.
On SIGTERM it stops like the single-process server: no new connections, the requests in
flight get ``settings.shutdown_grace_seconds``, then the lifespan shutdown drains the audit
queue, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn

from enforcer.config import Settings
from enforcer.policy.loader import Policy

HEARTBEAT_SECONDS = 1.0
#: the listener settings of the single-process server: no trust in X-Forwarded-*, no headers of uvicorn's own,
#: and uvicorn's log lines through our JSON handler (``observability.logging``), not through handlers of its own
SERVER_SETTINGS: dict[str, Any] = {"log_level": "warning", "log_config": None, "access_log": False,
                                   "server_header": False, "date_header": False, "proxy_headers": False}


class StopFlag:
    """A signal handler that only remembers: the event loop looks at it when it is ready to act."""

    requested = False

    def __call__(self, *_: Any) -> None:
        self.requested = True


def _write_status(path: Path, document: dict[str, Any]) -> None:
    """Replace the file in one step, so the parent never reads half a document."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)


def worker_main(settings: Settings, policy: Policy, listener: socket.socket, status_path: str) -> None:
    """One worker process: the proxy on the inherited socket until SIGTERM, then a drain."""
    from enforcer.observability.logging import configure as configure_logging

    os.setpgrp()
    configure_logging(settings.log_level)
    stop = StopFlag()  # before uvicorn takes over the signals, and after it hands them back
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's startup takes it over for reloads
    started = asyncio.run(_serve_worker(settings, policy, listener, Path(status_path), stop))
    sys.exit(0 if started else 3)


async def _serve_worker(settings: Settings, policy: Policy, listener: socket.socket, status_path: Path,
                        stop: StopFlag) -> bool:
    from enforcer.app import EnforcerApp
    from enforcer.tlsserver import server_settings

    app = EnforcerApp.from_settings(settings, policy)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on",
                                           timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                                           **SERVER_SETTINGS, **server_settings(settings.tls_cert, settings.tls_key,
                                                                                settings.tls_client_ca)))
    heartbeat = asyncio.ensure_future(_heartbeat(server, app, status_path, stop))
    try:
        await server.serve(sockets=[listener])
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        status_path.unlink(missing_ok=True)
    return server.started


async def _heartbeat(server: uvicorn.Server, app: Any, status_path: Path, stop: StopFlag) -> None:
    """After startup, report readiness every ``HEARTBEAT_SECONDS`` (which also refreshes this
    worker's key gauges); stop the server on an early stop signal or when the parent is gone."""
    parent = os.getppid()
    while not server.started:
        server.should_exit = server.should_exit or stop.requested
        await asyncio.sleep(0.05)
    while not server.should_exit:
        if stop.requested or os.getppid() != parent:
            server.should_exit = True
            break
        ready, document = app.readiness()
        _write_status(status_path, {**document, "ready": ready, "pid": os.getpid(), "time": time.time()})
        await asyncio.sleep(HEARTBEAT_SECONDS)
    status_path.unlink(missing_ok=True)  # draining: no longer ready
