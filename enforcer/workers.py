"""``enforcer serve --workers N``: N proxy processes on one port.

One Python process runs one event loop, so a busy enforcer needs several processes. The
parent binds N sockets to the proxy port (``SO_REUSEPORT``, after checking that no other
process listens there) and hands one to each of N workers started with ``spawn`` (a fresh
interpreter each: nothing half-initialised is inherited). Each worker runs what the
single-process server runs, ``EnforcerApp`` under uvicorn, on its socket; the kernel spreads
new connections evenly over the sockets. The parent serves only the admin listener:

``/metrics``
    Workers write their values to ``PROMETHEUS_MULTIPROC_DIR``: the operator's directory
    (created if missing, its ``*.db`` files from earlier runs removed at start) or else a
    private temporary one, removed at exit (``observability.metricsdir``). Each scrape
    merges every worker's files (``observability.exposition``).
    A worker that exits is marked dead: its live gauges go, its counters stay in the sums.
``/readyz``
    Once its lifespan startup has completed, each worker rewrites a small status file in a
    private run directory every second (``worker.HEARTBEAT_SECONDS``): its own readiness
    document (keys per issuer). Ready means every worker is alive and its latest status, at most
    ``STALE_SECONDS`` old, says ready. Files keep the parent out of the workers' event
    loops: a worker that hangs simply stops writing and goes stale.
``/healthz``
    503 once any worker has exited. Nothing here restarts a worker: capacity would be
    lost silently, so the process reports itself unhealthy and the orchestrator restarts it.

SIGHUP to the parent is passed on to every worker, which reloads the policy (each also
watches the policy files itself: ``enforcer.reload``).

SIGTERM or SIGINT to the parent stops the admin listener and sends SIGTERM to every worker.
A worker stops accepting, gives its requests in flight ``--shutdown-grace-seconds`` to
finish (uvicorn's graceful shutdown; what still runs then, a long event stream say, is
cancelled), drains its audit queue for at most ``--audit-drain-seconds`` and exits 0. The
parent waits for that plus ``STOP_MARGIN_SECONDS``, kills any worker still running, and
exits 0. Workers leave the parent's process group, so a terminal's Ctrl-C reaches the
parent only and the stop happens in that order; a worker whose parent vanishes stops by
itself. When every worker has exited, the parent exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn

from enforcer.config import Settings, serving_problem
from enforcer.observability.exposition import forget_process, merged_exposition
from enforcer.observability.metricsdir import metrics_directory
from enforcer.policy.loader import Policy
from enforcer.worker import SERVER_SETTINGS, StopFlag, worker_main

log = logging.getLogger("enforcer.workers")

STALE_SECONDS = 10.0
#: beyond a worker's grace period and audit drain: its lifespan shutdown and interpreter exit
STOP_MARGIN_SECONDS = 5.0


def serve(settings: Settings, policy: Policy) -> int:
    """Run ``settings.workers`` workers and the admin listener until a stop signal; the process's exit code."""
    count = settings.workers
    if problem := serving_problem(settings, policy):
        print(f"--workers: {problem}", file=sys.stderr)
        return 2
    stop = StopFlag()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until there are workers to pass it on to
    listeners = bind_listeners(settings.host, settings.port, count)
    # set in the environment before any worker starts: prometheus_client reads it once, at import
    with metrics_directory() as metrics_dir, tempfile.TemporaryDirectory(prefix="enforcer-run-") as run_dir:
        pool = WorkerPool(settings, policy, Path(run_dir), metrics_dir)
        signal.signal(signal.SIGHUP, lambda *_: pool.reload())  # each worker reloads its own policy
        try:
            try:
                pool.start(listeners)
            finally:
                for listener in listeners:  # each worker holds its own copy; none left here once they are gone
                    listener.close()
            log.info("enforcer starting", extra={
                "proxy": f"{settings.host}:{settings.port}", "admin": f"{settings.admin_host}:{settings.admin_port}",
                "workers": count, "policy": policy.version_hash, "files": list(policy.files)})
            return asyncio.run(_supervise(settings, pool, stop))
        finally:
            pool.stop()


def bind_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker, all on the same port (``SO_REUSEPORT``).

    The kernel spreads new connections evenly over the sockets of the group. One socket shared
    by every worker does not: asyncio accepts a whole burst at once, so whichever worker wakes
    first takes every connection, and keep-alive clients (load balancers, agents) then stay on
    it while the other workers idle. A worker that exits closes its socket, which leaves the
    group."""
    port = _free_for_us(host, port)
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listeners.append(_bind(host, port))
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _free_for_us(host: str, port: int) -> int:
    """The port, after making sure no other process listens on it: sockets with ``SO_REUSEPORT``
    would otherwise join another running enforcer's group and share its traffic silently. A
    plain bind fails on a port in use, whoever holds it. (Port 0: the port the kernel picked.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return probe.getsockname()[1]


def _bind(host: str, port: int) -> socket.socket:
    """A proxy socket of the group.

    It names its protocol, ``IPPROTO_TCP``: connections accepted from it inherit it, and asyncio
    sets ``TCP_NODELAY`` only on sockets that say they are TCP. ``socket.create_server`` leaves
    the protocol 0, and then each small response waits for the client's delayed ACK (Nagle):
    about 40 ms per request on keep-alive connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    return listener


async def _supervise(settings: Settings, pool: WorkerPool, stop: StopFlag) -> int:
    admin = uvicorn.Server(uvicorn.Config(pool.admin_app(), host=settings.admin_host, port=settings.admin_port,
                                          lifespan="off", timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                                          **SERVER_SETTINGS))
    watcher = asyncio.ensure_future(_watch(pool, admin, stop))
    try:
        await admin.serve()  # uvicorn's own handlers take SIGINT/SIGTERM while it serves
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return 1 if pool.failed else 0


async def _watch(pool: WorkerPool, admin: uvicorn.Server, stop: StopFlag) -> None:
    """Mark exited workers dead as soon as they go; stop when told or when no worker is left."""
    while not admin.should_exit:
        pool.reap()
        if stop.requested:
            admin.should_exit = True
        elif pool.all_exited():
            log.error("every worker has exited; stopping")
            pool.failed = admin.should_exit = True
        await asyncio.sleep(0.2)


@dataclass
class Worker:
    index: int
    process: BaseProcess
    status_path: Path
    marked_dead: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid or 0


class WorkerPool:
    """The parent's view of its workers: start, readiness, liveness, metrics, stop."""

    def __init__(self, settings: Settings, policy: Policy, run_dir: Path, metrics_dir: Path) -> None:
        self.settings, self.policy = settings, policy
        self.run_dir, self.metrics_dir = run_dir, metrics_dir
        self.workers: list[Worker] = []
        self.failed = False
        self.stopping = False

    def start(self, listeners: list[socket.socket]) -> None:
        """One worker per listening socket."""
        context = multiprocessing.get_context("spawn")
        for index, listener in enumerate(listeners):
            status_path = self.run_dir / f"worker-{index}.json"
            process = context.Process(target=worker_main, name=f"enforcer-worker-{index}", daemon=True,
                                      args=(self.settings, self.policy, listener, str(status_path)))
            process.start()
            self.workers.append(Worker(index, process, status_path))

    def all_exited(self) -> bool:
        return all(not worker.process.is_alive() for worker in self.workers)

    def reap(self) -> None:
        """Mark every newly exited worker dead for the metrics, once."""
        for worker in self.workers:
            if worker.marked_dead or worker.process.is_alive():
                continue
            worker.marked_dead = True
            forget_process(worker.pid, self.metrics_dir)
            level = logging.INFO if self.stopping else logging.ERROR
            log.log(level, "worker exited", extra={"worker": worker.index, "pid": worker.pid,
                                                   "exitcode": worker.process.exitcode})

    @property
    def stop_seconds(self) -> float:
        """How long a worker may take to stop: its grace period, its audit drain, a margin."""
        return (max(0.0, self.settings.shutdown_grace_seconds) + max(0.0, self.settings.audit.drain_seconds)
                + STOP_MARGIN_SECONDS)

    def reload(self) -> None:
        """SIGHUP to every living worker: each reloads the policy files (they also watch them)."""
        for worker in self.workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM to every worker, time to finish and drain (``stop_seconds``), then SIGKILL
        for any still running."""
        self.stopping = True
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + self.stop_seconds
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            if worker.process.is_alive():
                log.error("worker did not stop in time; killed", extra={"worker": worker.index, "pid": worker.pid})
                worker.process.kill()
                worker.process.join(5)
        self.reap()

    # -- the admin listener's answers ---------------------------------------------------

    def admin_app(self):  # type: ignore[no-untyped-def]
        from enforcer.admin import admin_app

        return admin_app(readiness=self.readiness, scrape=self.scrape, liveness=self.liveness)

    def scrape(self) -> bytes:
        self.reap()
        return merged_exposition(self.metrics_dir)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        exited = [worker.index for worker in self.workers if not worker.process.is_alive()]
        if exited:
            return False, {"status": "worker exited", "exited_workers": exited}
        return True, {"status": "ok", "workers": len(self.workers)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        states = [_worker_state(worker, now) for worker in self.workers]
        ready = all(state["ready"] for state in states)
        # each worker reloads on its own: the policy of the pod is the one they all report (null
        # while a reload is still reaching some of them); a refused reload shows as degraded
        hashes = {state.get("policy") for state in states}
        policy = hashes.pop() if len(hashes) == 1 else None
        degraded = any(state.get("policy_reload", {}).get("degraded") for state in states)
        return ready, {"ready": ready, "policy": policy, "policy_degraded": degraded, "workers": states}


def _worker_state(worker: Worker, now: float) -> dict[str, Any]:
    state: dict[str, Any] = {"index": worker.index, "pid": worker.pid, "alive": worker.process.is_alive()}
    if not state["alive"]:
        return {**state, "ready": False, "exitcode": worker.process.exitcode}
    report = _read_status(worker.status_path)
    if report is None:
        return {**state, "ready": False, "status": "starting"}
    age = now - float(report.pop("time", 0))
    state.update(report, report_age_seconds=round(age, 1))
    if age > STALE_SECONDS:
        state.update(ready=False, status="stale")
    return state


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
