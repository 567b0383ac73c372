"""Requests per second of ``enforcer serve --workers N``: the sizing figure for production.

Not a pytest test. Run from the project directory:

    .venv/bin/python tests/benchmarks/bench_workers.py [--workers 1,2] [--duration S] [--rounds N]

Unlike ``bench_proxy.py``, which runs the app in a bare uvicorn, this starts the real command
a container runs (``enforcer serve`` with its admin listener, metrics in
``PROMETHEUS_MULTIPROC_DIR`` for several workers, audit records off) in front of the same
minimal upstream, and drives it with ``wrk`` (one thread) at 32 and 64 connections beside the
upstream reached directly. Configurations are interleaved over the rounds; medians are
reported. On a small machine wrk and the upstream compete with the workers for the cores, so
the figure per worker is a floor: read it together with the machine line.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bench  # noqa: E402  (the process, token and wrk helpers)

CONNECTIONS = (32, 64)


def start_enforcer(children: bench.Children, workdir: Path, workers: int, port: int, upstream_port: int) -> int:
    policy = bench.write_policy(workdir, f"workers-{workers}", port, upstream_port)
    enforcer = str(Path(sys.executable).parent / "enforcer")
    return children.start(f"enforcer-{workers}", [
        enforcer, "serve", "--policy", str(policy), "--port", str(port), "--admin-port", str(bench.free_port()),
        "--workers", str(workers), "--no-audit-stdout", "--log-level", "warning"]).pid


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its direct children (the workers)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0.0
    for member in (pid, *map(int, found)):
        with contextlib.suppress(OSError):
            total += bench.cpu_seconds(member)
    return total


def benchmark(args: argparse.Namespace) -> None:
    bench.require_tools()
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="enforcer-bench-") as tmp:
        workdir = Path(tmp)
        children = bench.Children(workdir)
        try:
            upstream_port = bench.free_port()
            children.start("upstream", [sys.executable, bench.__file__, "_child", "upstream", str(upstream_port)])
            ports = {"direct": upstream_port, **{f"workers={n}": bench.free_port() for n in counts}}
            # one key and one token, whose audience names every enforcer's resource
            token = bench.make_token(workdir, [f"http://127.0.0.1:{ports[f'workers={n}']}/mcp" for n in counts],
                                     86400)
            headers = {"Authorization": f"Bearer {token}"}
            pids = {f"workers={count}": start_enforcer(children, workdir, count, ports[f"workers={count}"],
                                                       upstream_port) for count in counts}
            for name, port in ports.items():
                bench.wait_ready(children, name, port, headers)
            results: dict[tuple[str, int], list[float]] = {}
            cpu: dict[tuple[str, int], list[float]] = {}
            for round_index in range(args.rounds):
                order = list(ports) if round_index % 2 == 0 else list(reversed(ports))
                for name in order:
                    for connections in CONNECTIONS:
                        before = process_tree_cpu(pids[name]) if name in pids else 0.0
                        run = bench.run_wrk(ports[name], connections, args.duration, headers)
                        if name in pids:
                            used = process_tree_cpu(pids[name]) - before
                            cpu.setdefault((name, connections), []).append(used / run.requests * 1e6)
                        if run.non_2xx or run.socket_errors:
                            raise bench.BenchError(f"{name}: {run.non_2xx} non-2xx, {run.socket_errors} socket errors")
                        results.setdefault((name, connections), []).append(run.rps)
                children.check_alive()
        finally:
            children.close()
    print("\n".join(bench.machine_summary()))
    print(f"- {args.rounds} rounds x {args.duration:.0f} s per run; medians\n")
    print("| connections | " + " | ".join(f"{name} req/s" for name in ports) + " |")
    print("|---:|" + "---:|" * len(ports))
    for connections in CONNECTIONS:
        cells = [f"{statistics.median(results[(name, connections)]):,.0f}" for name in ports]
        print(f"| {connections} | " + " | ".join(cells) + " |")
    print("\nCPU per request, every process of the enforcer (µs):")
    for connections in CONNECTIONS:
        cells = [f"{name} {statistics.median(cpu[(name, connections)]):,.0f}" for name in ports if name != "direct"]
        print(f"- {connections} connections: " + ", ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    try:
        benchmark(args)
    except bench.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
