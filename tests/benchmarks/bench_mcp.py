"""What MCP inspection adds to a request: the enforcer with ``mcp: true`` against the same resource without it.

Not a pytest test (pytest collects only ``test_*.py``). Run from the project directory:

    .venv/bin/python tests/benchmarks/bench_mcp.py [--duration S] [--rounds N] [--quick]

Three servers on free 127.0.0.1 ports, each in its own process group under this process:

* upstream  a minimal raw-ASGI JSON-RPC server under uvicorn (httptools, uvloop): it answers
            ``initialize`` with a session id, ``tools/list`` with 50 tools, anything else with a
            small ``tools/call`` result (reached directly, it is the ``direct`` configuration);
* plain     ``EnforcerApp(policy)`` with the resource *without* ``mcp``: the ES256 token verified,
            the rules evaluated, the body streamed to the upstream unread;
* mcp       the same resource with ``mcp: true`` and rules with ``mcp:`` conditions: every POST body
            read, parsed as JSON-RPC and judged per message, the session checked against its
            binding, ``tools/list`` answers filtered to the tools the caller may call.

``wrk`` (one thread, a Lua script for the method, body and headers) POSTs the same ``tools/call``
body to all three, and a ``tools/list`` body in a second workload (``-list``), interleaving the
configurations over several rounds; the report is the median per (configuration, connections), the
enforcer's CPU time per request read from /proc, and the ratios mcp/plain and plain/direct. An
in-process micro-benchmark (no HTTP) times parsing and judging the same body, and filtering the
50-tool answer. Needs ``wrk`` on PATH (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bench  # noqa: E402  (the process, token, wrk-output and machine helpers)

CONNECTIONS = (1, 32)
SERVERS = ("direct", "plain", "mcp")
WORKLOADS = ("call", "list")
CONFIGS = tuple(f"{server}{'' if workload == 'call' else '-list'}" for workload in WORKLOADS for server in SERVERS)
PATH = "/mcp"
SESSION_HEADER = "Mcp-Session-Id"

# -- the JSON-RPC bodies ---------------------------------------------------------------------------------

CALL_BODY = json.dumps({
    "jsonrpc": "2.0", "id": 17, "method": "tools/call",
    "params": {"name": "search_docs", "arguments": {
        "query": "How do I rotate the signing keys of the staging identity provider without logging out "
                 "the active sessions? Include the runbook steps and the dashboards that show token errors.",
        "limit": 10}, "_meta": {"progressToken": 17}},
}, separators=(",", ":")).encode()
DENIED_BODY = CALL_BODY.replace(b'"search_docs"', b'"delete_page"')
LIST_BODY = b'{"jsonrpc":"2.0","id":18,"method":"tools/list","params":{}}'
INITIALIZE_BODY = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "bench-agent", "version": "1.0"}},
}, separators=(",", ":")).encode()
BODIES = {"call": CALL_BODY, "list": LIST_BODY}

_VERBS = ("search", "get", "list", "create", "update", "delete")
_NOUNS = ("docs", "page", "space", "comment", "attachment", "label", "template", "user", "group")
TOOL_NAMES = tuple(f"{verb}_{noun}" for noun in _NOUNS for verb in _VERBS)[:50]


def _tool(name: str) -> dict:
    verb, noun = name.split("_", 1)
    return {
        "name": name, "title": f"{verb.capitalize()} {noun}",
        "description": f"{verb.capitalize()} {noun} entries of the team documentation space. Returns at most "
                       f"`limit` results, most relevant first, with their identifiers and last update time.",
        "inputSchema": {"type": "object", "properties": {
            "query": {"type": "string", "description": f"What to {verb}: words, a title or an identifier"},
            "space": {"type": "string", "description": "The space key; every space when absent"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
            "required": ["query"]},
        "annotations": {"readOnlyHint": verb in ("search", "get", "list"), "destructiveHint": verb == "delete"},
    }


LIST_RESULT = json.dumps({"jsonrpc": "2.0", "id": 18, "result": {"tools": [_tool(name) for name in TOOL_NAMES]}},
                         separators=(",", ":")).encode()
CALL_RESULT = (b'{"jsonrpc":"2.0","id":17,"result":{"content":[{"type":"text","text":"3 pages found: '
               b'Key rotation runbook, Token error dashboards, Staging IdP"}],"isError":false}}')
#: the tools the benchmark's caller may call under MCP_RULES (search_*, get_*, list_*)
CALLABLE = sum(1 for name in TOOL_NAMES if name.split("_", 1)[0] in ("search", "get", "list"))


# -- the upstream ------------------------------------------------------------------------------------------

def _answer(body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, dict]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": 200, "headers": headers + (extra or [])},
            {"type": "http.response.body", "body": body})


_CALL = _answer(CALL_RESULT)
_LIST = _answer(LIST_RESULT)
_NOT_POST = ({"type": "http.response.start", "status": 405, "headers": [(b"content-length", b"0")]},
             {"type": "http.response.body", "body": b""})


async def upstream_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """A JSON-RPC server as cheap as it gets: read the body, pick a fixed answer by a substring."""
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":  # so that a wrk run that lost its script shows as non-2xx here too
        await send(_NOT_POST[0])
        await send(_NOT_POST[1])
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if b'"tools/list"' in body:
        start, end = _LIST
    elif b'"initialize"' in body:
        session = [(b"mcp-session-id", os.urandom(16).hex().encode())]
        start, end = _answer(b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25",'
                             b'"capabilities":{"tools":{}},"serverInfo":{"name":"bench","version":"1"}}}', session)
    else:
        start, end = _CALL
    await send(start)
    await send(end)


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(upstream_app, port=port, lifespan="off", timeout_keep_alive=75,
                                  **bench.UVICORN_COMMON)).run()


def _child_main(argv: list[str]) -> int:
    if argv[0] == "upstream":
        serve_upstream(int(argv[1]))
    elif argv[0] == "enforcer":
        bench.serve_enforcer(argv[1], int(argv[2]), verify_tokens=True)
    else:
        raise SystemExit(f"unknown child {argv[0]!r}")
    return 0


# -- policies ----------------------------------------------------------------------------------------------

PLAIN_RULES = """    rules:
      - id: no-admin
        effect: deny
        paths: ["/mcp/admin", "/mcp/admin/*"]
      - id: agents
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:call]
        methods: [POST, GET, DELETE]
"""

MCP_RULES = """    mcp: true
    rules:
      - id: no-deletes
        effect: deny
        mcp: {tools: ["delete_*", "*_delete"]}
      - id: protocol
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:read]
        mcp: {methods: [initialize, ping, "notifications/*", server/discover, tools/list]}
      - id: streams-and-close
        effect: allow
        client_ids: ["agent-*"]
        methods: [GET, DELETE]
      - id: read-tools
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:call]
        mcp: {methods: [tools/call], tools: ["search_*", "get_*", "list_*"]}
      - id: maintainer-writes
        effect: allow
        client_ids: [docs-maintainer]
        scopes: [tools:call, tools:write]
        mcp: {methods: [tools/call], tools: ["create_*", "update_*"]}
"""


def write_policy(workdir: Path, name: str, port: int, upstream_port: int, *, mcp: bool) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(f"""version: 1
issuers:
  - id: bench
    issuer: {bench.ISSUER}
    jwks_file: jwks.json
    algorithms: [ES256]
resources:
  - id: bench
    resource: http://127.0.0.1:{port}/mcp
    match: {{path_prefix: /mcp}}
    upstream: http://127.0.0.1:{upstream_port}/mcp
    issuers: [bench]
    scopes_supported: [tools:read, tools:call, tools:write]
{MCP_RULES if mcp else PLAIN_RULES}""")
    return path


# -- HTTP checks and wrk -----------------------------------------------------------------------------------

def post(port: int, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_ready(children: bench.Children, name: str, port: int, headers: dict[str, str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        children.check_alive()
        try:
            last = post(port, CALL_BODY, headers, timeout=2)[0]
            if last == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise bench.BenchError(f"{name} on port {port} did not answer 200 (last: {last}):\n{children.log_tail(name)}")


def write_script(workdir: Path, name: str, body: bytes, headers: dict[str, str]) -> Path:
    """The wrk Lua script: POST ``body`` with ``headers`` on every request."""
    def lua(text: str) -> str:
        assert "]==]" not in text
        return f"[==[{text}]==]"

    lines = ['wrk.method = "POST"', f"wrk.body = {lua(body.decode())}"]
    for key, value in {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                       **headers}.items():
        lines.append(f"wrk.headers[{json.dumps(key)}] = {lua(value)}")  # header names are plain tokens
    path = workdir / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(port: int, connections: int, seconds: float, script: Path) -> bench.Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
            "-s", str(script), f"http://127.0.0.1:{port}{PATH}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=bench._die_with_parent)
    try:
        output, _ = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            bench._signal_group(proc, signal.SIGKILL)
            proc.wait()
    text = output.decode(errors="replace")
    if proc.returncode != 0 or f"{script}:" in text:  # wrk reports a Lua error and goes on with a plain GET
        raise bench.BenchError(f"wrk failed ({proc.returncode}):\n{text}")
    return bench.parse_wrk(text)


# -- the in-process micro-benchmark ------------------------------------------------------------------------

def best_us(func, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Microseconds per call: the best of ``repeat`` timings of as many calls as fill about 0.2 s."""
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def micro_benchmark(workdir: Path, repeat: int) -> list[tuple[str, float]]:
    from enforcer.context import Principal
    from enforcer.mcp.filter import ListFilter
    from enforcer.mcp.inspect import parse_messages
    from enforcer.pipeline import compile_rules
    from enforcer.policy.engine import Operation
    from enforcer.policy.loader import load_policy

    policies = {name: write_policy(workdir, f"micro-{name}", 8080, 9000, mcp=name == "mcp") for name in SERVERS[1:]}
    rules = {name: compile_rules(load_policy([path]))["bench"] for name, path in policies.items()}
    # the principal a token of make_token becomes
    principal = Principal("bench", bench.ISSUER, "alice", "agent-42", frozenset(bench.SCOPES.split()), "jti",
                          int(time.time()) + 3600, "hash")
    op = Operation("POST", PATH, time.time())
    limit = 1024 * 1024
    messages = parse_messages(CALL_BODY, limit)
    mcp, plain = rules["mcp"], rules["plain"]
    decision = mcp.decide_messages(principal, op, messages, explain=False)
    denied = mcp.decide_messages(principal, op, parse_messages(DENIED_BODY, limit), explain=False)
    if not decision.allowed or decision.rule != "read-tools" or denied.allowed or denied.rule != "no-deletes":
        raise bench.BenchError(f"unexpected decisions: {decision} / {denied}")
    list_filter = ListFilter(mcp, principal, op)
    filtered = json.loads(list_filter.rewrite_json(LIST_RESULT))["result"]["tools"]
    if len(filtered) != CALLABLE:
        raise bench.BenchError(f"the list filter kept {len(filtered)} of {len(TOOL_NAMES)} tools, not {CALLABLE}")

    def parse_and_decide() -> object:
        return mcp.decide_messages(principal, op, parse_messages(CALL_BODY, limit), explain=False)

    def stdlib_list_round_trip() -> bytes:
        return json.dumps(json.loads(LIST_RESULT), ensure_ascii=False, separators=(",", ":")).encode()

    return [
        (f"json.loads of the tools/call body ({len(CALL_BODY)} B), for reference", best_us(
            lambda: json.loads(CALL_BODY), repeat)),
        ("parse_messages (strict JSON, JSON-RPC shape)", best_us(lambda: parse_messages(CALL_BODY, limit), repeat)),
        ("ResourcePolicy.decide_messages (5 rules, one message)", best_us(
            lambda: mcp.decide_messages(principal, op, messages, explain=False), repeat)),
        ("parse_messages + decide_messages", best_us(parse_and_decide, repeat)),
        ("plain resource: ResourcePolicy.decide (2 rules, no message), for reference", best_us(
            lambda: plain.decide(principal, op, explain=False), repeat)),
        (f"ListFilter.rewrite_json, {len(TOOL_NAMES)} tools ({len(LIST_RESULT):,} B) -> {CALLABLE} kept",
         best_us(lambda: list_filter.rewrite_json(LIST_RESULT), repeat)),
        ("json.loads + json.dumps of that answer, for reference", best_us(stdlib_list_round_trip, repeat)),
    ]


# -- report ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # the enforcer's CPU per request (0 for direct)
    upstream_cpu_us: float


def summarise(runs: list[bench.Run], upstream_cpu: list[float]) -> Figures:
    return Figures(statistics.median(r.rps for r in runs), statistics.median(r.p50_ms for r in runs),
                   statistics.median(r.p99_ms for r in runs), statistics.median(r.cpu_us for r in runs),
                   statistics.median(upstream_cpu))


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def report(results: dict[tuple[str, int], list[bench.Run]], upstream_cpu: dict[tuple[str, int], list[float]],
           micro: list[tuple[str, float]], repeat: int) -> bool:
    s = {key: summarise(runs, upstream_cpu[key]) for key, runs in results.items()}
    for workload in WORKLOADS:
        suffix = "" if workload == "call" else "-list"
        body = BODIES[workload]
        answer = CALL_RESULT if workload == "call" else LIST_RESULT
        print(f"## {'tools/call' if workload == 'call' else 'tools/list'}: POST {len(body)} B, "
              f"upstream answers {len(answer):,} B")
        print()
        print("| config | connections | req/s | p50 ms | p99 ms | enforcer CPU us/req | upstream CPU us/req |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for server in SERVERS:
            for conns in CONNECTIONS:
                f = s[(server + suffix, conns)]
                cpu = f"{f.cpu_us:.0f}" if server != "direct" else "-"
                print(f"| {server + suffix} | {conns} | {f.rps:,.0f} | {_ms(f.p50_ms)} | {_ms(f.p99_ms)} | {cpu} | "
                      f"{f.upstream_cpu_us:.0f} |")
        print()
        print("| connections | plain/direct req/s | mcp/plain req/s | mcp/direct req/s | mcp - plain p50 ms "
              "| mcp/plain CPU | mcp - plain CPU us |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for conns in CONNECTIONS:
            d, p, m = (s[(server + suffix, conns)] for server in SERVERS)
            print(f"| {conns} | {p.rps / d.rps:.3f} | {m.rps / p.rps:.3f} | {m.rps / d.rps:.3f} | "
                  f"{m.p50_ms - p.p50_ms:+.3f} | {m.cpu_us / p.cpu_us:.2f} | {m.cpu_us - p.cpu_us:+.0f} |")
        print()
    print("Medians over rounds. CPU is user + system time of the process (/proc) over the run, per request: "
          "steadier than req/s on a shared machine.")
    print()
    print(f"## In process (no HTTP): microseconds per call, best of {repeat}")
    print()
    print("| operation | us per call |")
    print("|---|---:|")
    for label, micros in micro:
        print(f"| {label} | {micros:.2f} |")
    print()
    problems = [f"{config} c={conns}: {sum(r.non_2xx for r in runs)} non-2xx, "
                f"{sum(r.socket_errors for r in runs)} socket errors"
                for (config, conns), runs in results.items() if any(r.non_2xx or r.socket_errors for r in runs)]
    for line in problems:
        print(f"WARNING: {line}")
    return not problems


# -- the benchmark -----------------------------------------------------------------------------------------

def check_servers(ports: dict[str, int], auth: dict[str, str], session: dict[str, str]) -> str:
    """Each server answers as the benchmark assumes before anything is measured; a line saying what was seen."""
    headers = {**auth, **session}
    seen = []
    for name in SERVERS:
        status, _, body = post(ports[name], CALL_BODY, headers)
        if status != 200 or body != CALL_RESULT:
            raise bench.BenchError(f"{name}: tools/call answered {status} {body[:200]!r}")
    for name in ("plain", "mcp"):
        status = post(ports[name], CALL_BODY, session)[0]
        if status != 401:
            raise bench.BenchError(f"{name} answered {status} without a token (expected 401)")
    status, _, body = post(ports["mcp"], DENIED_BODY, headers)
    if status != 403 or json.loads(body).get("rule") != "no-deletes":
        raise bench.BenchError(f"mcp: tools/call of delete_page answered {status} {body[:200]!r} (expected 403)")
    seen.append("mcp refuses delete_page (403 no-deletes)")
    status = post(ports["mcp"], b"not json", headers)[0]
    if status != 400:
        raise bench.BenchError(f"mcp: a body that is not JSON-RPC answered {status} (expected 400)")
    seen.append(f"a non-JSON body (400; plain forwards it: {post(ports['plain'], b'not json', headers)[0]})")
    status = post(ports["mcp"], CALL_BODY, {**auth, SESSION_HEADER: "not-issued"})[0]
    if status != 404:
        raise bench.BenchError(f"mcp: a session it never saw issued answered {status} (expected 404)")
    seen.append("a session it never saw issued (404)")
    counts = {}
    for name in SERVERS:
        status, _, body = post(ports[name], LIST_BODY, headers)
        if status != 200:
            raise bench.BenchError(f"{name}: tools/list answered {status} {body[:200]!r}")
        counts[name] = len(json.loads(body)["result"]["tools"])
    if counts != {"direct": len(TOOL_NAMES), "plain": len(TOOL_NAMES), "mcp": CALLABLE}:
        raise bench.BenchError(f"tools/list counts {counts}: expected {len(TOOL_NAMES)} unfiltered, {CALLABLE} on mcp")
    seen.append(f"tools/list lists {counts['mcp']} of {counts['plain']} tools (plain and direct: all)")
    return ("checked: every config answers tools/call with the upstream's result; plain and mcp answer 401 without "
            "the token; " + "; ".join(seen))


def benchmark(args: argparse.Namespace) -> bool:
    duration, rounds = (2.0, 1) if args.quick else (args.duration, args.rounds)
    warmup = 1.0 if args.quick else args.warmup
    repeat = 3 if args.quick else 7
    print("# MCP inspection benchmark")
    print()
    print(*bench.machine_summary(), sep="\n")
    print(f"- runs: wrk -t1, {duration:g} s per run, {rounds} round(s), connections {list(CONNECTIONS)}, "
          f"POST {PATH} (tools/call {len(CALL_BODY)} B; tools/list answered with {len(TOOL_NAMES)} tools, "
          f"{len(LIST_RESULT):,} B){' (--quick: smoke run, numbers are noise)' if args.quick else ''}")
    print(flush=True)

    with tempfile.TemporaryDirectory(prefix="enforcer-bench-") as tmp:
        workdir = Path(tmp)
        children = bench.Children(workdir)
        try:
            ports = {name: bench.free_port() for name in SERVERS}
            expected = rounds * len(CONNECTIONS) * len(CONFIGS) * (duration + 2) + 10 * warmup + 120
            token = bench.make_token(workdir, [f"http://127.0.0.1:{ports[n]}/mcp" for n in ("plain", "mcp")],
                                     int(expected * 2) + 3600)
            micro = micro_benchmark(workdir, repeat)  # before the servers start: the machine is quieter
            auth = {"Authorization": f"Bearer {token}"}
            me = [sys.executable, str(Path(__file__).resolve()), "_child"]
            children.start("direct", [*me, "upstream", str(ports["direct"])])
            wait_ready(children, "direct", ports["direct"], {})
            for name in ("plain", "mcp"):
                policy = write_policy(workdir, name, ports[name], ports["direct"], mcp=name == "mcp")
                children.start(name, [*me, "enforcer", str(policy), str(ports[name])])
            # a session, as an MCP client holds after initialize: issued through the mcp enforcer, so bound to
            # this caller there; sent by every configuration, so all forward the same headers
            deadline = time.monotonic() + 30
            while True:
                children.check_alive()
                try:
                    status, answer, _ = post(ports["mcp"], INITIALIZE_BODY, auth, timeout=2)
                except OSError:
                    status, answer = 0, {}
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if status != 200 or "mcp-session-id" not in answer:
                raise bench.BenchError(f"mcp: initialize answered {status} {answer}:\n{children.log_tail('mcp')}")
            session = {SESSION_HEADER: answer["mcp-session-id"]}
            for name in SERVERS:
                wait_ready(children, name, ports[name], {**auth, **session})
            print(check_servers(ports, auth, session), flush=True)
            scripts = {f"{server}{'' if w == 'call' else '-list'}": write_script(
                workdir, f"{server}-{w}", BODIES[w], {**(auth if server != "direct" else {}), **session})
                for server in SERVERS for w in WORKLOADS}
            port_of = {config: ports[config.removesuffix("-list")] for config in CONFIGS}
            upstream_pid = children.procs["direct"].pid

            for config in CONFIGS:  # fill pools, caches and the token cache before anything counts
                run_wrk(port_of[config], 32, warmup, scripts[config])
            results: dict[tuple[str, int], list[bench.Run]] = {(c, n): [] for c in CONFIGS for n in CONNECTIONS}
            upstream_cpu: dict[tuple[str, int], list[float]] = {(c, n): [] for c in CONFIGS for n in CONNECTIONS}
            for round_no in range(1, rounds + 1):
                order = CONFIGS if round_no % 2 else tuple(reversed(CONFIGS))  # no config always runs last
                for conns in CONNECTIONS:
                    for config in order:
                        children.check_alive()
                        server = config.removesuffix("-list")
                        pid = children.procs[server].pid
                        before, up_before = bench.cpu_seconds(pid), bench.cpu_seconds(upstream_pid)
                        run = run_wrk(port_of[config], conns, duration, scripts[config])
                        if run.requests:
                            upstream_cpu[(config, conns)].append(
                                (bench.cpu_seconds(upstream_pid) - up_before) / run.requests * 1e6)
                            if server != "direct":
                                run = replace(run, cpu_us=(bench.cpu_seconds(pid) - before) / run.requests * 1e6)
                        results[(config, conns)].append(run)
                        bench.print_run(round_no, rounds, conns, config, run)
            children.check_alive()
            print()
            print(f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print()
            return report(results, upstream_cpu, micro, repeat)
        finally:
            children.close()


def main(argv: list[str] | None = None) -> int:
    return bench.run_benchmark_cli("bench_mcp", __doc__, benchmark, _child_main, argv, tools=("wrk",))


if __name__ == "__main__":
    sys.exit(main())
