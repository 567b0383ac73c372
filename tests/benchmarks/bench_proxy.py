"""Throughput and latency of the enforcer against nginx and against itself with auth bypassed.

Not a pytest test (pytest collects only ``test_*.py``). Run from the project directory:

    .venv/bin/python tests/benchmarks/bench_proxy.py [--duration S] [--rounds N] [--quick]

Four servers on free 127.0.0.1 ports, each in its own process group under this process:

* upstream     a minimal raw-ASGI app under uvicorn (httptools, uvloop) answering a small JSON body;
* nginx        a plain reverse proxy to the upstream with upstream keepalive (the floor for any proxy);
* passthrough  ``EnforcerApp(policy, verify_tokens=False)``: the same app and forwarding, auth bypassed;
* enforcer     ``EnforcerApp(policy)``: ES256 token verified, the policy's rule evaluated, metrics recorded;
* signed       the enforcer with a ``signatures:`` block: every request also carries an RFC 9421
               ECDSA P-256 signature over six components, verified in full on every request;
* audited      the enforcer writing the audit trail to a file (hash chain on, fsync per batch):
               what auditing every request costs.

``wrk`` (one thread) drives each one with the same ``Authorization: Bearer`` header (plus the
signature headers for ``signed``), interleaving the configurations over several rounds; the report is
the median per (configuration, connections).
Needs ``nginx`` and ``wrk`` on PATH (Debian: ``apt-get install nginx-light wrk``; ``nginx`` works too).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # measure the enforcer of this checkout, wherever it is run from
    sys.path.insert(0, str(ROOT))

CONFIGS = ("nginx", "passthrough", "enforcer", "signed", "audited")
SIGNED_COMPONENTS = ("@method", "@target-uri", "@authority", "@path", "@query", "authorization")
CONNECTIONS = (1, 32, 64)
TARGET_PATH = "/mcp/tools"
ISSUER = "https://bench-issuer.enforcer.invalid"
SCOPES = "tools:read tools:call"
UVICORN_COMMON = {
    "host": "127.0.0.1", "loop": "uvloop", "http": "httptools", "workers": 1, "access_log": False,
    "log_level": "warning", "server_header": False, "date_header": False, "proxy_headers": False,
}

# Targets (see README.md beside this file).
PASSTHROUGH_VS_NGINX_MIN = 0.10  # passthrough req/s >= this x nginx req/s at 32 connections
ENFORCER_VS_PASSTHROUGH_MIN = 0.85  # enforcer req/s >= this x passthrough req/s at 32 connections
TAIL_RATIO_MAX = 1.5  # at 64 connections: enforcer p99/p50 <= this x passthrough p99/p50
SIGNED_VS_PASSTHROUGH_MIN = 0.5  # signed req/s >= this x passthrough req/s at 32 connections


# -- the child processes ---------------------------------------------------------------------------------

_UPSTREAM_BODY = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"}]}}'
_UPSTREAM_START = {
    "type": "http.response.start", "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_UPSTREAM_BODY)).encode())],
}
_UPSTREAM_END = {"type": "http.response.body", "body": _UPSTREAM_BODY}


async def upstream_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """The fastest honest upstream: drain the request, answer a fixed JSON body with Content-Length."""
    if scope["type"] != "http":
        return
    if scope["method"] not in ("GET", "HEAD"):
        while (await receive()).get("more_body"):
            pass
    await send(_UPSTREAM_START)
    await send(_UPSTREAM_END)


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(upstream_app, port=port, lifespan="off", timeout_keep_alive=75,
                                  **UVICORN_COMMON)).run()


def serve_enforcer(policy_path: str, port: int, verify_tokens: bool, audit_file: str | None = None) -> None:
    import uvicorn

    from enforcer.app import EnforcerApp
    from enforcer.observability.audit import AuditSettings, build_audit_log
    from enforcer.observability.logging import configure
    from enforcer.policy.loader import load_policy

    configure("warning")
    audit = build_audit_log(AuditSettings(stdout=False, file=audit_file, chain=True)) if audit_file else None
    app = EnforcerApp(load_policy([policy_path]), verify_tokens=verify_tokens, audit=audit)
    uvicorn.Server(uvicorn.Config(app, port=port, lifespan="on", **UVICORN_COMMON)).run()


def _child_main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "upstream":
        serve_upstream(int(argv[1]))
    elif kind == "enforcer":
        serve_enforcer(argv[1], int(argv[2]), verify_tokens=argv[3] == "verify",
                       audit_file=argv[4] if len(argv) > 4 else None)
    else:
        raise SystemExit(f"unknown child {kind!r}")
    return 0


# -- process management -----------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if this benchmark process dies, even by SIGKILL.

    SIGTERM, not SIGKILL, so that nginx's master takes its worker down with it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Children:
    """Every process this benchmark starts, each in its own process group; ``close`` ends them all."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "wb") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent, cwd=ROOT)
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}:\n{self.log_tail(name)}")

    def close(self) -> None:
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)  # stragglers, and any worker left in the group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self.procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(port: int, headers: dict[str, str], timeout: float = 5.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", TARGET_PATH, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_ready(children: Children, name: str, port: int, headers: dict[str, str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        children.check_alive()
        try:
            last = http_status(port, headers, timeout=2)
            if last == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise BenchError(f"{name} on port {port} did not answer 200 (last: {last}):\n{children.log_tail(name)}")


# -- keys, token, policy, nginx.conf ---------------------------------------------------------------------

def make_token(workdir: Path, audience: str | list[str], ttl_seconds: int) -> str:
    """A fresh ES256 key (its public half written as jwks.json) and one RFC 9068 access token."""
    from joserfc import jwt
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"})
    key.ensure_kid()
    (workdir / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "alice", "client_id": "agent-42", "aud": audience, "scope": SCOPES,
              "iat": now, "exp": now + ttl_seconds, "jti": os.urandom(8).hex()}
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, claims, key, algorithms=["ES256"])


def make_agent_key(workdir: Path) -> dict:
    """The agent's P-256 signing key (private JWK); its public half is written as agents.json."""
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"kid": "bench-agent"}, private=True)
    (workdir / "agents.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key.as_dict(private=True)


def signature_headers(agent_jwk: dict, port: int, token: str) -> dict[str, str]:
    """One signed GET: no nonce (wrk repeats it), so every request is verified in full but none is a replay."""
    from enforcer.signing import SigningKey, sign_headers

    added = sign_headers(SigningKey.from_jwk(agent_jwk), "GET", f"http://127.0.0.1:{port}{TARGET_PATH}",
                         [("Authorization", f"Bearer {token}")], components=SIGNED_COMPONENTS, nonce=False)
    return dict(added)


SIGNATURES_BLOCK = """    signatures:
      required: true
      components: [{components}]
      algorithms: [ecdsa-p256-sha256]
      max_age_seconds: 86400
      keys: {{jwks_file: agents.json}}
"""


def write_policy(workdir: Path, name: str, port: int, upstream_port: int) -> Path:
    path = workdir / f"{name}.yaml"
    signatures = SIGNATURES_BLOCK.format(components=", ".join(f'"{c}"' for c in SIGNED_COMPONENTS)) \
        if name == "signed" else ""
    path.write_text(f"""version: 1
issuers:
  - id: bench
    issuer: {ISSUER}
    jwks_file: jwks.json
    algorithms: [ES256]
resources:
  - id: bench
    resource: http://127.0.0.1:{port}/mcp
    match: {{path_prefix: /mcp}}
    upstream: http://127.0.0.1:{upstream_port}/mcp
    issuers: [bench]
    scopes_supported: [tools:read, tools:call]
{signatures}    rules:
      - id: agents-read
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:read]
        methods: [GET, HEAD]
""")
    return path


def write_nginx_conf(workdir: Path, port: int, upstream_port: int) -> Path:
    path = workdir / "nginx.conf"
    temp = workdir / "nginx-temp"
    temp.mkdir(exist_ok=True)
    path.write_text(f"""daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;  # like uvicorn: never close a busy client connection
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return path


# -- wrk ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_us: float = 0.0  # CPU time of the proxy process per request (Python proxies only)


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _percentile_ms(output: str, percent: str) -> float:
    match = re.search(rf"^\s*{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percent}% latency in wrk output:\n{output}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> Run:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if rps is None or total is None:
        raise BenchError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Run(
        rps=float(rps.group(1)), p50_ms=_percentile_ms(output, "50"), p99_ms=_percentile_ms(output, "99"),
        requests=int(total.group(1)), non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc (fields 14 and 15 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, connections: int, seconds: float, headers: dict[str, str]) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://127.0.0.1:{port}{TARGET_PATH}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    try:
        output, _ = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    text = output.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text}")
    return parse_wrk(text)


# -- report ------------------------------------------------------------------------------------------------

def machine_summary() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = []
    for tool, flag in (("nginx", "-v"), ("wrk", "-v")):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([tool, flag], capture_output=True, text=True, timeout=5)
            first = (out.stdout + out.stderr).strip().splitlines()
            versions.append(first[0] if first else tool)
    return [
        f"- machine: nproc {usable} (cpu_count {os.cpu_count()}), CPU {model}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}",
        f"- tools: {'; '.join(versions)}",
        f"- load average at start: {load}",
    ]


@dataclass(frozen=True)
class Summary:
    rps: float
    p50_ms: float
    p99_ms: float
    tail: float  # median over runs of p99/p50


def summarise(runs: list[Run]) -> Summary:
    return Summary(
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        tail=statistics.median(r.p99_ms / r.p50_ms if r.p50_ms > 0 else float("inf") for r in runs),
    )


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def report(results: dict[tuple[str, int], list[Run]]) -> bool:
    s = {key: summarise(runs) for key, runs in results.items()}
    header = ["connections", *(f"{c} req/s" for c in CONFIGS), "passthrough/nginx", "enforcer/passthrough",
              "signed/passthrough", "audited/enforcer", *(f"{c} p50/p99 ms" for c in CONFIGS),
              *(f"{c} p99/p50" for c in CONFIGS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for conns in CONNECTIONS:
        row = [s[(c, conns)] for c in CONFIGS]
        n, p, e, g, a = row
        cells = [str(conns), *(f"{x.rps:,.0f}" for x in row), f"{p.rps / n.rps:.3f}",
                 f"{e.rps / p.rps:.3f}", f"{g.rps / p.rps:.3f}", f"{a.rps / e.rps:.3f}",
                 *(f"{_ms(x.p50_ms)} / {_ms(x.p99_ms)}" for x in row), *(f"{x.tail:.2f}" for x in row)]
        print("| " + " | ".join(cells) + " |")
    print()
    print("Medians over rounds; p99/p50 is the median of each run's ratio.")
    print()
    print("CPU time of the proxy process per request (less sensitive to the machine's noise than req/s):")
    for conns in CONNECTIONS:
        p_cpu = statistics.median(r.cpu_us for r in results[("passthrough", conns)])
        e_cpu = statistics.median(r.cpu_us for r in results[("enforcer", conns)])
        g_cpu = statistics.median(r.cpu_us for r in results[("signed", conns)])
        a_cpu = statistics.median(r.cpu_us for r in results[("audited", conns)])
        print(f"- c={conns}: passthrough {p_cpu:.0f} us, enforcer {e_cpu:.0f} us "
              f"(token, policy and identity headers: {e_cpu - p_cpu:+.0f} us, {e_cpu / p_cpu:.2f}x), "
              f"signed {g_cpu:.0f} us (the request signature: {g_cpu - e_cpu:+.0f} us), "
              f"audited {a_cpu:.0f} us (the audit record: {a_cpu - e_cpu:+.0f} us)")
    problems = [f"{config} c={conns}: {sum(r.non_2xx for r in runs)} non-2xx, "
                f"{sum(r.socket_errors for r in runs)} socket errors"
                for (config, conns), runs in results.items()
                if any(r.non_2xx or r.socket_errors for r in runs)]
    for line in problems:
        print(f"WARNING: {line}")
    print()

    ratio_32 = s[("passthrough", 32)].rps / s[("nginx", 32)].rps
    enforcer_32 = s[("enforcer", 32)].rps / s[("passthrough", 32)].rps
    tail_64 = s[("enforcer", 64)].tail / s[("passthrough", 64)].tail
    signed_32 = s[("signed", 32)].rps / s[("passthrough", 32)].rps
    audited_32 = s[("audited", 32)].rps / s[("enforcer", 32)].rps
    checks = [
        (ratio_32 >= PASSTHROUGH_VS_NGINX_MIN,
         f"passthrough >= {PASSTHROUGH_VS_NGINX_MIN:.2f}x nginx req/s at 32 connections: {ratio_32:.3f}x"),
        (enforcer_32 >= ENFORCER_VS_PASSTHROUGH_MIN,
         f"enforcer >= {ENFORCER_VS_PASSTHROUGH_MIN:.2f}x passthrough req/s at 32 connections: {enforcer_32:.3f}x"),
        (tail_64 <= TAIL_RATIO_MAX,
         f"enforcer p99/p50 <= {TAIL_RATIO_MAX:.1f}x passthrough p99/p50 at 64 connections: {tail_64:.2f}x "
         f"({s[('enforcer', 64)].tail:.2f} vs {s[('passthrough', 64)].tail:.2f})"),
        (signed_32 >= SIGNED_VS_PASSTHROUGH_MIN,
         f"signed >= {SIGNED_VS_PASSTHROUGH_MIN:.2f}x passthrough req/s at 32 connections: {signed_32:.3f}x"),
    ]
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    print(f"INFO: audited (file sink, hash chain, fsync per batch) / enforcer req/s at 32 connections: "
          f"{audited_32:.3f}x (no target: what durable auditing costs)")
    return all(ok for ok, _ in checks) and not problems


# -- the benchmark -----------------------------------------------------------------------------------------

def require_tools(name: str = "bench_proxy", tools: tuple[str, ...] = ("nginx", "wrk")) -> None:
    if shutil.which("nginx") is None and Path("/usr/sbin/nginx").exists():
        os.environ["PATH"] += os.pathsep + "/usr/sbin"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join("nginx-light" if tool == "nginx" else tool for tool in tools)
        raise SystemExit(f"{name}: {' and '.join(missing)} not found on PATH; install them with\n"
                         f"    apt-get install -y {packages}")


def benchmark(args: argparse.Namespace) -> bool:
    duration, rounds = (2.0, 1) if args.quick else (args.duration, args.rounds)
    warmup = 1.0 if args.quick else args.warmup
    print("# enforcer proxy benchmark")
    print()
    print(*machine_summary(), sep="\n")
    print(f"- runs: wrk -t1, {duration:g} s per run, {rounds} round(s), connections {list(CONNECTIONS)}, "
          f"GET {TARGET_PATH}{' (--quick: smoke run, numbers are noise)' if args.quick else ''}")
    print(flush=True)

    with tempfile.TemporaryDirectory(prefix="enforcer-bench-") as tmp:
        workdir = Path(tmp)
        children = Children(workdir)
        try:
            ports = {name: free_port() for name in ("upstream", *CONFIGS)}
            expected = rounds * len(CONNECTIONS) * len(CONFIGS) * (duration + 2) + 10 * warmup + 120
            audiences = [f"http://127.0.0.1:{ports[name]}/mcp" for name in ("enforcer", "signed", "audited")]
            token = make_token(workdir, audiences, int(expected * 2) + 3600)
            auth = {"Authorization": f"Bearer {token}"}
            headers = {name: auth for name in CONFIGS}
            headers["signed"] = {**auth, **signature_headers(make_agent_key(workdir), ports["signed"], token)}
            me = [sys.executable, str(Path(__file__).resolve()), "_child"]

            children.start("upstream", [*me, "upstream", str(ports["upstream"])])
            wait_ready(children, "upstream", ports["upstream"], auth)
            conf = write_nginx_conf(workdir, ports["nginx"], ports["upstream"])
            children.start("nginx", ["nginx", "-p", str(workdir), "-e", str(workdir / "nginx-error.log"),
                                     "-c", str(conf)])
            for name, verify in (("passthrough", "bypass"), ("enforcer", "verify"), ("signed", "verify"),
                                 ("audited", "verify")):
                policy = write_policy(workdir, name, ports[name], ports["upstream"])
                audit = [str(workdir / "audit.jsonl")] if name == "audited" else []
                children.start(name, [*me, "enforcer", str(policy), str(ports[name]), verify, *audit])
            for name in CONFIGS:
                wait_ready(children, name, ports[name], headers[name])
            without = http_status(ports["enforcer"], {})
            if without != 401:
                raise BenchError(f"the full enforcer answered {without} without a token (expected 401): "
                                 "auth is not on")
            unsigned = http_status(ports["signed"], auth)
            if unsigned != 401:
                raise BenchError(f"the signed enforcer answered {unsigned} to an unsigned request (expected 401)")
            print(f"checked: every config answers 200 with its headers; enforcer answers {without} without the "
                  f"token, signed answers {unsigned} without the signature; passthrough without the token: "
                  f"{http_status(ports['passthrough'], {})}")

            for name in CONFIGS:  # fill pools, caches and the token cache before anything counts
                run_wrk(ports[name], 32, warmup, headers[name])
            results: dict[tuple[str, int], list[Run]] = {(c, n): [] for c in CONFIGS for n in CONNECTIONS}
            for round_no in range(1, rounds + 1):
                order = CONFIGS if round_no % 2 else tuple(reversed(CONFIGS))  # no config always runs last
                for conns in CONNECTIONS:
                    for name in order:
                        children.check_alive()
                        pid = children.procs[name].pid
                        before = cpu_seconds(pid) if name != "nginx" else 0.0
                        run = run_wrk(ports[name], conns, duration, headers[name])
                        if name != "nginx" and run.requests:
                            cpu_us = (cpu_seconds(pid) - before) / run.requests * 1e6
                            run = replace(run, cpu_us=cpu_us)
                        results[(name, conns)].append(run)
                        print_run(round_no, rounds, conns, name, run)
            children.check_alive()
            print()
            audited = sum(run.requests for conns in CONNECTIONS for run in results[("audited", conns)])
            written = sum(path.read_bytes().count(b"\n") for path in workdir.glob("audit.jsonl*"))
            print(f"- audit file: {written:,} records for {audited:,} measured requests (plus warm-up and checks)")
            print(f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print()
            return report(results)
        finally:
            children.close()


def print_run(round_no: int, rounds: int, conns: int, name: str, run: Run) -> None:
    """One progress line per wrk run."""
    cpu = f"  cpu {run.cpu_us:.0f} us/req" if run.cpu_us else ""
    print(f"round {round_no}/{rounds} c={conns:<2} {name:<11} {run.rps:>9,.0f} req/s  "
          f"p50 {_ms(run.p50_ms)} ms  p99 {_ms(run.p99_ms)} ms{cpu}"
          + (f"  non-2xx {run.non_2xx}" if run.non_2xx else "")
          + (f"  socket errors {run.socket_errors}" if run.socket_errors else ""), flush=True)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_benchmark_cli(name: str, doc: str, benchmark: Callable[[argparse.Namespace], bool],
                      child_main: Callable[[list[str]], int], argv: list[str] | None = None,
                      tools: tuple[str, ...] = ("nginx", "wrk")) -> int:
    """The command line the wrk benchmarks share: ``--duration --rounds --warmup --quick``, the
    ``_child`` entry point of their servers, and stopping every server on Ctrl-C or SIGTERM."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per configuration (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per run, 1 round, 1 s warm-up")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration must be >= 1 and --rounds >= 1")
    require_tools(name, tools)
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs on SIGTERM as on Ctrl-C
    started = time.monotonic()
    try:
        ok = benchmark(args)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; servers stopped", file=sys.stderr)
        return 130
    print(f"({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return run_benchmark_cli("bench_proxy", __doc__, benchmark, _child_main, argv)


if __name__ == "__main__":
    sys.exit(main())
