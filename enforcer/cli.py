"""``enforcer`` command line (DESIGN.md section 5).

    enforcer serve --policy PATH [--policy PATH ...] [--host H] [--port P] [--admin-port P] [--workers N]
                   [--shutdown-grace-seconds S] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
    enforcer policy validate PATH... [--format text|json] [--warnings-as-errors]
    enforcer policy explain --policy PATH (--claims JSON|@FILE | --token T --no-verify) --path P [...]
    enforcer policy test PATH... [--junit FILE]
    enforcer audit verify FILE... [--public-key FILE] | enforcer audit show FILE... [filters]
    enforcer token [--sub S] [--client-id C] [--scope "a b"] [--aud URI]   (development only)
    enforcer demo                                                          (development only)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from enforcer import devissuer
from enforcer.auth.replay import replay_store_problem
from enforcer.config import Settings, serving_problem
from enforcer.observability.audit_cli import add_audit_commands, add_serve_audit_options, audit_problem, audit_settings
from enforcer.observability.logging import configure as configure_logging
from enforcer.observability.metricsdir import MULTIPROC_ENV, prepare_configured_directory
from enforcer.policy import report as policy_report
from enforcer.policy.loader import check_policy
from enforcer.signing import DEFAULT_COMPONENTS

EXAMPLE_POLICY = Path("policies/example.yaml")
WORKERS_ENV = "ENFORCER_WORKERS"
GRACE_ENV = "ENFORCER_SHUTDOWN_GRACE_SECONDS"
log = logging.getLogger("enforcer.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enforcer", description="OAuth resource-server proxy for MCP and HTTP APIs")
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy and the admin listener")
    serve.add_argument("--policy", action="append", required=True, metavar="PATH",
                       help="policy file or directory (repeatable)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--admin-host", default="127.0.0.1")
    serve.add_argument("--admin-port", type=int, default=9090)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--replay-store", default=os.environ.get("ENFORCER_REPLAY_STORE", "memory"), metavar="URL",
                       help="where signature nonces are remembered: 'memory' (one process) or a redis:// URL "
                            "shared by every replica (env ENFORCER_REPLAY_STORE)")
    serve.add_argument("--workers", type=_worker_count, default=None, metavar="N",
                       help=f"proxy processes sharing the port; the admin listener merges their metrics "
                            f"(env {WORKERS_ENV}, else 1)")
    serve.add_argument("--shutdown-grace-seconds", type=_grace_seconds, default=None, metavar="S",
                       help=f"after SIGTERM/SIGINT, how long requests in flight (streams too) may take to finish "
                            f"before they are cut; the audit queue is drained after that "
                            f"(env {GRACE_ENV}, else {Settings.shutdown_grace_seconds:g})")
    serve.add_argument("--tls-cert", default=None, metavar="FILE",
                       help="serve the proxy over TLS with this PEM certificate (chain); needs --tls-key")
    serve.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", default=None, metavar="FILE",
                       help="PEM CA certificates that issue client certificates: every client must present one "
                            "(mutual TLS; workload_identity.mtls and cnf x5t#S256 bound tokens)")
    add_serve_audit_options(serve)
    serve.set_defaults(run=_serve)

    policy = commands.add_parser("policy", help="work with policy files").add_subparsers(metavar="ACTION")
    validate = policy.add_parser(
        "validate", help="check policy files; exit 1 listing every problem",
        description="Report every error and warning of the policy made of PATH..., sorted by file, line and "
                    "column. Errors refuse the policy (exit 1); warnings flag legal but dangerous choices and "
                    "fail only with --warnings-as-errors.")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--format", choices=["text", "json"], default="text",
                          help="text: file:line:col: [warning: ]code: message lines; json: one document on stdout")
    validate.add_argument("--warnings-as-errors", action="store_true", help="exit 1 when there is any warning")
    validate.set_defaults(run=_validate)
    from enforcer.policy.schema import add_schema_command
    add_schema_command(policy)
    from enforcer.policy.policy_cli import add_policy_commands
    add_policy_commands(policy)
    add_audit_commands(commands)

    token = commands.add_parser("token", help="mint a token from the local dev issuer (development only)")
    token.add_argument("--sub", default="alice")
    token.add_argument("--client-id", default="agent-42")
    token.add_argument("--scope", default="tools:read tools:call")
    token.add_argument("--aud", default=devissuer.DEFAULT_AUDIENCE)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--dev-dir", type=Path, default=None, help="dev key directory (default .enforcer-dev)")
    token.add_argument("--bind-agent-key", action="store_true",
                       help="bind the token to the demo agent's signing key (cnf.jwk; see enforcer sign)")
    token.set_defaults(run=_token)

    signer = commands.add_parser(
        "sign", help="print Content-Digest / Signature-Input / Signature headers for a request (RFC 9421)",
        description="Sign one request and print the headers to add, one 'Name: value' per line "
                    "(curl reads them with -H @FILE).")
    signer.add_argument("--key", required=True, metavar="FILE", help="private JWK (or oct secret) as JSON")
    signer.add_argument("--keyid", default=None, help="keyid to send (default: the JWK's kid)")
    signer.add_argument("--url", required=True, help="the URL the request goes to")
    signer.add_argument("--method", "-X", default="GET")
    signer.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header the request will carry (repeatable); include Authorization to bind the token")
    signer.add_argument("--data", "-d", default=None, metavar="BODY|@FILE", help="the exact body bytes")
    signer.add_argument("--components", default=",".join(DEFAULT_COMPONENTS),
                        help="comma-separated components to cover (default: %(default)s)")
    signer.add_argument("--tag", default=None)
    signer.add_argument("--no-nonce", dest="nonce", action="store_false", help="leave out the nonce parameter")
    signer.add_argument("--expires-in", type=int, default=None, metavar="SECONDS")
    signer.add_argument("--public-origin", default=None, metavar="URL",
                        help="scheme://host[:port] to sign as, when --url is a port-forward or local address")
    signer.set_defaults(run=_sign)

    demo = commands.add_parser("demo", help="run the example policy in front of the demo upstream (development)")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--admin-port", type=int, default=9090)
    demo.add_argument("--upstream-port", type=int, default=9000)
    demo.set_defaults(run=_demo)
    return parser


def _load_or_report(paths: Sequence[str]):  # type: ignore[no-untyped-def]
    """The policy, each of its warnings logged once; or ``None`` after printing every problem."""
    checked = check_policy(paths)
    if checked.policy is None:
        for problem in checked.problems:
            print(problem, file=sys.stderr)
        print(policy_report.summary(checked), file=sys.stderr)
        return None
    for warning in checked.policy.warnings:
        log.warning("policy warning: %s", warning, extra={"policy_warning": warning.as_json()})
    return checked.policy


def _validate(args: argparse.Namespace) -> int:
    render = policy_report.as_json if args.format == "json" else policy_report.as_text
    status, out, err = render(check_policy(args.paths), warnings_as_errors=args.warnings_as_errors)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


def _worker_count(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of processes, not {text!r}") from None


def _grace_seconds(text: str) -> float:
    try:
        seconds = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, not {text!r}")
    return seconds


def _from_environment(value, name: str, parse, fallback):  # type: ignore[no-untyped-def]
    """``value`` when given on the command line, else the environment variable ``name``
    (through ``parse``; unset or empty means ``fallback``). ``ArgumentTypeError`` names the variable."""
    if value is not None:
        return value
    text = os.environ.get(name, "")
    if not text.strip():
        return fallback
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{name}: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        worker_count = _from_environment(args.workers, WORKERS_ENV, _worker_count, 1)
        grace = _from_environment(args.shutdown_grace_seconds, GRACE_ENV, _grace_seconds,
                                  Settings.shutdown_grace_seconds)
    except argparse.ArgumentTypeError as exc:
        print(f"enforcer serve: {exc}", file=sys.stderr)
        return 2
    settings = Settings(tuple(args.policy), args.host, args.port, args.admin_host, args.admin_port, args.log_level,
                        args.replay_store, audit=audit_settings(args), shutdown_grace_seconds=grace,
                        workers=worker_count, tls_cert=args.tls_cert, tls_key=args.tls_key,
                        tls_client_ca=args.tls_client_ca)
    from enforcer.tlsserver import tls_problem
    if problem := tls_problem(settings.tls_cert, settings.tls_key, settings.tls_client_ca):
        print(f"enforcer serve: {problem}", file=sys.stderr)
        return 2
    if problem := replay_store_problem(settings.replay_store):
        print(f"--replay-store: {problem}", file=sys.stderr)
        return 2
    if problem := audit_problem(settings.audit):
        print(f"audit: {problem}", file=sys.stderr)
        return 2
    policy = _load_or_report(settings.policy_paths)
    if policy is None:
        return 1
    try:
        # before anything imports prometheus_client (enforcer.app does): see observability.metricsdir
        prepare_configured_directory()
    except OSError as exc:
        print(f"{MULTIPROC_ENV}: {exc}", file=sys.stderr)
        return 2
    if settings.workers != 1:
        from enforcer import workers

        return workers.serve(settings, policy)
    if problem := serving_problem(settings, policy):
        print(f"enforcer serve: {problem}", file=sys.stderr)
        return 2
    asyncio.run(_run_servers(settings, policy))
    return 0


def _token(args: argparse.Namespace) -> int:
    directory = args.dev_dir or devissuer.default_dev_dir()
    extra = None
    if args.bind_agent_key:
        extra = {"cnf": {"jwk": devissuer.public_jwk(devissuer.ensure_agent_key(directory))}}
    print(devissuer.mint(directory, sub=args.sub, client_id=args.client_id, scope=args.scope,
                         audience=args.aud, ttl_seconds=args.ttl, extra=extra))
    return 0


def _sign(args: argparse.Namespace) -> int:
    from enforcer.signing import SigningKey, sign_headers

    try:
        key = SigningKey.from_jwk_file(args.key, keyid=args.keyid)
        headers = [_header_pair(h) for h in args.header]
        body = _body_argument(args.data)
        added = sign_headers(key, args.method.upper(), args.url, headers, body,
                             components=tuple(c.strip() for c in args.components.split(",") if c.strip()),
                             tag=args.tag, nonce=args.nonce, expires_in=args.expires_in,
                             public_origin=args.public_origin)
    except (OSError, ValueError, KeyError) as exc:
        print(f"enforcer sign: {exc}", file=sys.stderr)
        return 2
    for name, value in added:
        print(f"{name}: {value}")
    return 0


def _header_pair(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"--header {text[:40]!r} is not 'Name: value'")
    return name.strip(), value.strip()


def _body_argument(data: str | None) -> bytes:
    if data is None:
        return b""
    if data.startswith("@"):
        with open(data[1:], "rb") as handle:
            return handle.read()
    return data.encode()


def _demo(args: argparse.Namespace) -> int:
    from enforcer.demo.upstream import echo_app

    configure_logging("info")
    devissuer.ensure_key(devissuer.default_dev_dir())
    devissuer.ensure_agent_key(devissuer.default_dev_dir())
    if not EXAMPLE_POLICY.exists():
        print(f"run this from the project directory ({EXAMPLE_POLICY} not found)", file=sys.stderr)
        return 1
    policy = _load_or_report([str(EXAMPLE_POLICY)])
    if policy is None:
        return 1
    settings = Settings((str(EXAMPLE_POLICY),), "127.0.0.1", args.port, "127.0.0.1", args.admin_port)
    base = f"http://127.0.0.1:{args.port}"
    print(f"""
enforcer demo: {base}/mcp -> demo upstream on 127.0.0.1:{args.upstream_port}
  curl -i {base}/mcp/hello                                          # 401 + resource_metadata challenge
  TOKEN=$(.venv/bin/enforcer token --sub alice --client-id agent-42)
  curl -i -H "Authorization: Bearer $TOKEN" {base}/mcp/hello        # 200, echoed by the upstream
  curl -i -H "Authorization: Bearer $TOKEN" {base}/mcp/admin/users  # 403, rule block-admin
  curl -s {base}/.well-known/oauth-protected-resource/mcp           # RFC 9728 metadata
  curl -s http://127.0.0.1:{args.admin_port}/readyz

{base}/signed also requires an RFC 9421 signature by the key bound to the token:
  TOKEN=$(.venv/bin/enforcer token --bind-agent-key --aud {base}/signed)
  curl -i -H "Authorization: Bearer $TOKEN" -d '{{"hi":1}}' {base}/signed/echo   # 401 + Accept-Signature
  .venv/bin/enforcer sign --key .enforcer-dev/agent-key.json -X POST --url {base}/signed/echo \
      -H "Authorization: Bearer $TOKEN" -d '{{"hi":1}}' > sig.headers
  curl -i -H @sig.headers -H "Authorization: Bearer $TOKEN" -d '{{"hi":1}}' {base}/signed/echo   # 200
""", flush=True)
    upstream = uvicorn.Config(echo_app, host="127.0.0.1", port=args.upstream_port, log_level="warning",
                              lifespan="off")
    asyncio.run(_run_servers(settings, policy, extra=[upstream]))
    return 0


class _QuietServer(uvicorn.Server):
    """A server that leaves signal handling to the main one and stops when told."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


async def _run_servers(settings: Settings, policy, extra: Sequence[uvicorn.Config] = ()) -> None:  # type: ignore[no-untyped-def]
    """Proxy, admin (and demo) listeners in one event loop; SIGINT/SIGTERM stop them all.

    On the signal the proxy stops accepting connections and gives the requests in flight
    ``settings.shutdown_grace_seconds`` to finish (uvicorn's graceful shutdown); whatever is
    still running then, a long event stream say, is cancelled. The app's lifespan shutdown
    follows and drains the audit queue (at most ``--audit-drain-seconds``); then the other
    listeners stop. uvicorn re-raises the stop signal after its graceful shutdown; the
    no-op handlers installed here receive it, so a clean stop exits 0 instead of dying by
    the signal.
    """
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's startup takes it over for reloads
    from enforcer.admin import create_admin_app
    from enforcer.app import EnforcerApp
    from enforcer.tlsserver import server_settings
    from enforcer.worker import SERVER_SETTINGS

    app = EnforcerApp.from_settings(settings, policy)
    proxy = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on",
                                          timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                                          **SERVER_SETTINGS, **server_settings(settings.tls_cert, settings.tls_key,
                                                                               settings.tls_client_ca)))
    admin = uvicorn.Config(create_admin_app(app), host=settings.admin_host, port=settings.admin_port,
                           lifespan="off", timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                           **SERVER_SETTINGS)
    helpers = [_QuietServer(config) for config in (*extra, admin)]
    log.info("enforcer starting", extra={
        "proxy": f"{settings.host}:{settings.port}", "admin": f"{settings.admin_host}:{settings.admin_port}",
        "policy": policy.version_hash, "files": list(policy.files), "resources": [r.id for r in policy.resources]})
    helper_tasks = [asyncio.ensure_future(server.serve()) for server in helpers]
    try:
        await proxy.serve()
    finally:
        for server in helpers:
            server.should_exit = True
        await asyncio.gather(*helper_tasks, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(main())
