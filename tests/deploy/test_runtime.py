"""What the container image relies on, with real ``enforcer serve`` processes.

A container is stopped with SIGTERM and then, after the orchestrator's grace period, killed;
its root filesystem may be read-only, with only ``/tmp`` (and mounted volumes) writable; and a
restarted container runs the enforcer as pid 1 again, over the same ``/tmp/metrics`` when that
lives on a volume. So, with one process and with two workers:

* a request in flight at SIGTERM completes, new connections are refused meanwhile, its audit
  record reaches stdout, and the process exits 0;
* a stream that outlasts ``--shutdown-grace-seconds`` is cut when the grace period ends, and
  the process still exits 0, promptly;
* a worker that does not stop at all is killed once grace + audit drain + a margin have passed;
* nothing is written to the working directory or ``HOME``, and metric value files only under
  ``PROMETHEUS_MULTIPROC_DIR``;
* counters start from zero after a restart over the same ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from enforcer.workers import STOP_MARGIN_SECONDS
from tests.observability.helpers import Served, enforcer_process
from tests.observability.scrape import Scrape
from tests.support import HELD_EVENT, HeldWorld, basic_policy, held_world, wait_for

#: variables an image or a CI machine may set that change how ``enforcer serve`` runs
SERVE_ENV = ("ENFORCER_WORKERS", "ENFORCER_SHUTDOWN_GRACE_SECONDS", "ENFORCER_REPLAY_STORE",
             "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without ``SERVE_ENV``, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k not in SERVE_ENV} | extra


@pytest.fixture
def world(tmp_path: Path) -> Iterator[HeldWorld]:
    def policy(jwks_url: str, upstream_url: str) -> str:
        return basic_policy(jwks_line=f"jwks_uri: {jwks_url}", upstream=f"{upstream_url}/mcp")

    with held_world(tmp_path / "policy" / "policy.yaml", policy) as world:
        yield world


@contextmanager
def running(world: HeldWorld, tmp_path: Path, *args: str, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> Iterator[tuple[Served, Path, Path]]:
    """``enforcer serve`` for ``world``: (the process, its stdout file, its stderr file)."""
    out, err = tmp_path / f"stdout-{time.monotonic_ns()}", tmp_path / f"stderr-{time.monotonic_ns()}"
    with ExitStack() as files:
        stdout, stderr = files.enter_context(out.open("w")), files.enter_context(err.open("w"))
        with enforcer_process(world.policy, "--log-level", "info", *args, stdout=stdout, stderr=stderr,
                              cwd=cwd or tmp_path, env=env if env is not None else environment()) as served:
            yield served, out, err


def _refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _in_background(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _audit_records(stdout: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.read_text().splitlines() if line.startswith("{")]


def _worker_pids(served: Served) -> list[int]:
    return [worker["pid"] for worker in httpx.get(f"{served.admin}/readyz", timeout=5).json()["workers"]]


# -- SIGTERM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_the_request_in_flight_audits_it_and_exits_0(world: HeldWorld, tmp_path: Path,
                                                                      workers: str) -> None:
    with running(world, tmp_path, "--workers", workers) as (served, stdout, stderr):
        assert httpx.get(f"{served.url}/mcp/quick", headers=world.auth()).status_code == 200
        thread, answer = _in_background(
            lambda: httpx.get(f"{served.url}/mcp/slow", headers=world.auth(), timeout=30))
        [request_id] = wait_for(lambda: world.received("/mcp/slow"), "the request to reach the upstream")
        served.process.send_signal(signal.SIGTERM)
        wait_for(lambda: _refuses_connections(served.url), "the proxy port to close")
        assert served.process.poll() is None  # still finishing the request in flight
        assert thread.is_alive()
        world.release.set()
        thread.join(10)
        [response] = answer
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200 and response.text == "done"
        assert served.process.wait(timeout=30) == 0, stderr.read_text()
    records = {record["request_id"]: record for record in _audit_records(stdout)}
    assert records[request_id]["path"] == "/mcp/slow"
    assert records[request_id]["status"] == 200 and records[request_id]["decision"] == "allow"
    assert len(records) == 2  # the quick one too, and nothing else


@pytest.mark.parametrize(("workers", "grace_from_env"), [("1", False), ("2", True)],
                         ids=["1-worker-flag", "2-workers-env"])
def test_a_stream_that_outlasts_the_grace_period_is_cut_and_the_process_exits_0(
        world: HeldWorld, tmp_path: Path, workers: str, grace_from_env: bool) -> None:
    grace = 1.0
    args = ["--workers", workers]
    env = environment()
    if grace_from_env:
        env["ENFORCER_SHUTDOWN_GRACE_SECONDS"] = str(grace)
    else:
        args += ["--shutdown-grace-seconds", str(grace)]
    with running(world, tmp_path, *args, env=env) as (served, stdout, stderr), \
            httpx.Client(timeout=30) as client, \
            client.stream("GET", f"{served.url}/mcp/stream", headers=world.auth()) as stream:
        assert stream.status_code == 200
        chunks = stream.iter_raw()
        assert next(chunks) == HELD_EVENT
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=grace + 15) == 0, stderr.read_text()
        elapsed = time.monotonic() - started
        with pytest.raises(httpx.HTTPError):  # cut, not ended as if complete
            list(chunks)
    assert grace <= elapsed < grace + 4, elapsed
    log = stderr.read_text()
    assert "did not stop in time" not in log  # each worker stopped by itself
    assert "Task exception was never retrieved" not in log  # the relay's helper tasks went with the request
    [record] = [r for r in _audit_records(stdout) if r["path"] == "/mcp/stream"]
    assert record["request_id"] in world.received("/mcp/stream")


def test_a_worker_that_does_not_stop_is_killed_after_grace_and_audit_drain(world: HeldWorld, tmp_path: Path) -> None:
    """The parent waits for grace + audit drain + ``STOP_MARGIN_SECONDS``, not longer: a worker
    that cannot act on SIGTERM (stopped here with SIGSTOP) is then killed."""
    grace, drain = 1.0, 1.0
    with running(world, tmp_path, "--workers", "2", "--shutdown-grace-seconds", str(grace),
                 "--audit-drain-seconds", str(drain)) as (served, _, stderr):
        stuck, other = _worker_pids(served)
        os.kill(stuck, signal.SIGSTOP)
        try:
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            served.process.wait(timeout=grace + drain + STOP_MARGIN_SECONDS + 15)
            elapsed = time.monotonic() - started
        finally:
            with suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGKILL)
    limit = grace + drain + STOP_MARGIN_SECONDS
    assert limit <= elapsed < limit + 4, elapsed
    log = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
    killed = [entry for entry in log if "did not stop in time" in entry.get("message", entry.get("msg", ""))]
    assert [entry["pid"] for entry in killed] == [stuck], log
    for pid in (stuck, other):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- a read-only root: only TMPDIR and the metrics directory are written ----------------------


def _files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*"))


def test_nothing_is_written_outside_tmpdir_and_the_metrics_directory(world: HeldWorld, tmp_path: Path) -> None:
    """Two workers (``ENFORCER_WORKERS``, as the image sets it) started in an empty working
    directory with an empty ``HOME``: after requests and a stop both are still empty, and the
    metric value files are under ``PROMETHEUS_MULTIPROC_DIR`` (inside ``TMPDIR``), which the
    process created."""
    workdir, home, scratch = tmp_path / "workdir", tmp_path / "home", tmp_path / "scratch"
    for directory in (workdir, home, scratch):
        directory.mkdir()
    metrics = scratch / "metrics"
    before = {path: path.stat().st_mtime_ns for path in _files_under(world.policy.parent)}
    env = environment(ENFORCER_WORKERS="2", HOME=str(home), TMPDIR=str(scratch),
                      PROMETHEUS_MULTIPROC_DIR=str(metrics))
    with running(world, tmp_path, cwd=workdir, env=env) as (served, _, stderr):
        assert len(_worker_pids(served)) == 2
        for _ in range(6):
            assert httpx.get(f"{served.url}/mcp/quick", headers=world.auth()).status_code == 200
        scrape = Scrape.parse(httpx.get(f"{served.admin}/metrics").text)
        assert scrape.value("enforcer_requests_total", resource="demo", decision="allow", reason="allowed") == 6
        private = [path for path in scratch.iterdir() if path != metrics]
        assert [path.name.startswith("enforcer-run-") for path in private] == [True]  # the workers' status files
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0, stderr.read_text()
    assert _files_under(workdir) == [] and _files_under(home) == []
    assert {path: path.stat().st_mtime_ns for path in _files_under(world.policy.parent)} == before
    assert [path.name for path in scratch.iterdir()] == ["metrics"]  # the run directory went at exit
    assert all(path.is_file() and path.suffix == ".db" for path in metrics.iterdir())
    assert list(metrics.glob("counter_*.db")), _files_under(scratch)


# -- a restart over the same PROMETHEUS_MULTIPROC_DIR ------------------------------------------


def _allowed(served: Served) -> float:
    scrape = Scrape.parse(httpx.get(f"{served.admin}/metrics", timeout=5).text)
    return scrape.value("enforcer_requests_total", resource="demo", decision="allow", reason="allowed")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_counters_start_from_zero_after_a_restart_over_the_same_directory(world: HeldWorld, tmp_path: Path,
                                                                          workers: str) -> None:
    """As when a container restarts with ``/tmp/metrics`` on a volume that survives it: the
    previous run's value files must not be added to the new run's counters (a missing
    directory is created)."""
    metrics = tmp_path / "volume" / "metrics"
    env = environment(PROMETHEUS_MULTIPROC_DIR=str(metrics))
    for run, requests in enumerate((3, 2)):
        with running(world, tmp_path, "--workers", workers, env=env) as (served, _, stderr):
            assert _allowed(served) == 0, f"run {run} started from the previous run's counts"
            for _ in range(requests):
                assert httpx.get(f"{served.url}/mcp/quick", headers=world.auth()).status_code == 200
            assert _allowed(served) == requests
            served.process.send_signal(signal.SIGTERM)
            assert served.process.wait(timeout=30) == 0, stderr.read_text()
        assert list(metrics.glob("counter_*.db"))  # the values were kept in files, in that directory


def test_importing_the_command_line_leaves_prometheus_client_unimported() -> None:
    """``enforcer serve`` empties the metrics directory before prometheus_client is imported
    (it opens its value files from the first metric on): the command line must not import it."""
    code = ("import sys, enforcer.cli, enforcer.observability.metricsdir; "
            "from enforcer.policy.loader import load_policy; load_policy(['policies/example.yaml']); "
            "sys.exit('prometheus_client' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or "prometheus_client was imported"
