"""The README walkthrough through the real command line: serve, token, validate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from enforcer.demo.upstream import echo_app
from tests.support import free_port, serving

ROOT = Path(__file__).resolve().parent.parent
ENFORCER = [sys.executable, "-m", "enforcer.cli"]


def _example_policy(tmp_path: Path, upstream_port: int) -> Path:
    """policies/example.yaml with the demo upstream moved to a free port and the dev JWKS in tmp_path."""
    text = (ROOT / "policies" / "example.yaml").read_text()
    text = text.replace("http://127.0.0.1:9000/", f"http://127.0.0.1:{upstream_port}/")
    text = text.replace("../.enforcer-dev/jwks.json", str(tmp_path / "dev" / "jwks.json"))
    path = tmp_path / "example.yaml"
    path.write_text(text)
    return path


def _token(tmp_path: Path, *args: str) -> str:
    result = subprocess.run([*ENFORCER, "token", "--dev-dir", str(tmp_path / "dev"), *args],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    return result.stdout.strip()


def _wait_ready(admin: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "enforcer exited"
        try:
            if httpx.get(f"{admin}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("enforcer did not become ready")


@dataclass
class Served:
    port: int
    admin_port: int
    stderr: str = ""  # the process's log, once it has stopped


@contextmanager
def _served_example(tmp_path: Path) -> Iterator[Served]:
    """``enforcer serve`` on the example policy (see ``_example_policy``) until the block ends;
    it must then stop cleanly (exit 0) on SIGTERM."""
    with serving(echo_app, lifespan="off") as upstream:
        policy = _example_policy(tmp_path, upstream.port)
        served = Served(free_port(), free_port())
        process = subprocess.Popen([*ENFORCER, "serve", "--policy", str(policy), "--port", str(served.port),
                                    "--admin-port", str(served.admin_port)], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_ready(f"http://127.0.0.1:{served.admin_port}", process)
            yield served
        finally:
            process.terminate()
            _, served.stderr = process.communicate(timeout=15)
        assert process.returncode == 0, served.stderr


def test_serve_example_policy_401_200_403(tmp_path: Path) -> None:
    token = _token(tmp_path)  # creates the dev key and JWKS, as `make run` does
    assert (tmp_path / "dev" / "jwks.json").exists()
    assert oct((tmp_path / "dev" / "issuer-key.json").stat().st_mode & 0o777) == "0o600"
    with _served_example(tmp_path) as served:
        port, admin_port = served.port, served.admin_port
        base = f"http://127.0.0.1:{port}"
        missing = httpx.get(f"{base}/mcp/hello")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith(
            'Bearer resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"')
        ok = httpx.get(f"{base}/mcp/hello", headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["identity"]["x-enforcer-sub"] == "alice"
        assert ok.json()["saw_authorization"] is False
        denied = httpx.get(f"{base}/mcp/admin/users", headers={"authorization": f"Bearer {token}"})
        assert denied.status_code == 403 and denied.json()["rule"] == "block-admin"
        other_agent = _token(tmp_path, "--client-id", "agent-7")
        call = httpx.post(f"{base}/mcp", headers={"authorization": f"Bearer {other_agent}"}, json={})
        assert call.status_code == 403 and call.json()["reason"] == "no_matching_rule"
        metadata = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp").json()
        assert metadata["resource"] == "http://127.0.0.1:8080/mcp"
        assert metadata["authorization_servers"] == ["https://dev-issuer.enforcer.invalid"]
        assert httpx.get(f"http://127.0.0.1:{admin_port}/healthz").status_code == 200
        assert token not in served.stderr  # the token never reaches a log line


def test_serve_refuses_broken_policy_with_located_errors(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nissuers:\n  - id: a\n    issuer: https://a.test\n    algorithms: [none]\n")
    result = subprocess.run([*ENFORCER, "serve", "--policy", str(policy), "--port", str(free_port())],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 1
    assert f"{policy}:3:5: key_source:" in result.stderr
    assert f"{policy}:5:18: unsafe_algorithm:" in result.stderr


@pytest.mark.parametrize(("args", "files"), [(["policy", "validate", "policies/"], len(list(
    (ROOT / "policies").glob("*.yaml"))) - len(list((ROOT / "policies").glob("*_test.yaml")))),
    (["policy", "validate", "policies/example.yaml"], 1)])
def test_shipped_policies_validate(args: list[str], files: int) -> None:
    result = subprocess.run([*ENFORCER, *args], capture_output=True, text=True, cwd=ROOT, timeout=30,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {files} file(s)")


def _sign(tmp_path: Path, url: str, token: str, body: str) -> list[tuple[str, str]]:
    result = subprocess.run([*ENFORCER, "sign", "--key", str(tmp_path / "dev" / "agent-key.json"), "-X", "POST",
                             "--url", url, "-H", f"Authorization: Bearer {token}", "-d", body],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    return [tuple(line.split(": ", 1)) for line in result.stdout.splitlines()]  # type: ignore[misc]


def test_MS_01_signed_example_resource_with_enforcer_sign(tmp_path: Path) -> None:
    """The README walkthrough for /signed: a token bound to the demo agent key, `enforcer sign`
    for the headers, accepted once; the same headers again are a replay."""
    token = _token(tmp_path, "--bind-agent-key", "--aud", "http://127.0.0.1:8080/signed")
    assert oct((tmp_path / "dev" / "agent-key.json").stat().st_mode & 0o777) == "0o600"
    with _served_example(tmp_path) as served:
        port = served.port
        url, body = f"http://127.0.0.1:{port}/signed/echo", '{"hi":1}'
        auth = {"authorization": f"Bearer {token}"}
        unsigned = httpx.post(url, headers=auth, content=body)
        assert unsigned.status_code == 401, unsigned.text
        assert unsigned.json()["signature_failure"] == "missing_signature"
        assert unsigned.headers["accept-signature"].startswith(
            'sig1=("@method" "@target-uri" "authorization" "content-digest");created;nonce="')
        # agents sign the public URL of the resource, which here is 127.0.0.1:8080
        signed = _sign(tmp_path, url.replace(str(port), "8080"), token, body)
        assert [name for name, _ in signed] == ["Content-Digest", "Signature-Input", "Signature"]
        ok = httpx.post(url, headers=[*auth.items(), *signed], content=body)
        assert ok.status_code == 200, ok.text
        replay = httpx.post(url, headers=[*auth.items(), *signed], content=body)
        assert replay.status_code == 401 and replay.json()["signature_failure"] == "replayed_nonce"
        other_body = httpx.post(url, headers=[*auth.items(), *signed], content='{"hi":2}')
        assert other_body.status_code == 400 and other_body.json()["error"] == "invalid_digest"
        metadata = httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/signed").json()
        assert metadata["http_message_signatures"]["key_binding"] == "token_cnf"
        signature = dict(signed)["Signature"].split("=", 1)[1]
        assert token not in served.stderr and signature not in served.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--shutdown-grace-seconds", "-1"], {},
     "argument --shutdown-grace-seconds: must be a finite number of seconds, 0 or more, not '-1'"),
    (["--shutdown-grace-seconds", "soon"], {}, "argument --shutdown-grace-seconds: must be a number of seconds"),
    ([], {"ENFORCER_SHUTDOWN_GRACE_SECONDS": "inf"},
     "ENFORCER_SHUTDOWN_GRACE_SECONDS: must be a finite number of seconds, 0 or more, not 'inf'"),
    ([], {"ENFORCER_SHUTDOWN_GRACE_SECONDS": "25s"}, "ENFORCER_SHUTDOWN_GRACE_SECONDS: must be a number of seconds"),
    (["--workers", "two"], {}, "argument --workers: must be a whole number of processes, not 'two'"),
    ([], {"ENFORCER_WORKERS": "2.5"}, "ENFORCER_WORKERS: must be a whole number of processes, not '2.5'"),
    ([], {"ENFORCER_WORKERS": "0"}, "--workers: at least one worker is needed"),
    (["--workers", "-1"], {"ENFORCER_WORKERS": "2"}, "--workers: at least one worker is needed"),
    ([], {"PROMETHEUS_MULTIPROC_DIR": "/proc/no-such/metrics"}, "PROMETHEUS_MULTIPROC_DIR: "),
])
def test_serve_refuses_bad_settings_with_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    """Worker count, grace period, metrics directory: exit 2 with a message naming the flag or the
    environment variable, before anything is served; a flag given on the command line wins over
    the variable."""
    environment = {k: v for k, v in os.environ.items() if k not in (
        "ENFORCER_WORKERS", "ENFORCER_SHUTDOWN_GRACE_SECONDS", "PROMETHEUS_MULTIPROC_DIR")} | env
    result = subprocess.run([*ENFORCER, "serve", "--policy", "policies/example.yaml", "--port", str(free_port()),
                             "--admin-port", str(free_port()), *args], capture_output=True, text=True, cwd=ROOT,
                            env=environment, timeout=30)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_every_log_line_is_json_including_the_servers(tmp_path: Path) -> None:
    """uvicorn's own warnings (here: a request that is not HTTP) go through the JSON handler too,
    so a log pipeline can read every line the process writes."""
    _token(tmp_path)  # the dev key the example policy trusts
    with _served_example(tmp_path) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
            raw.recv(1024)
    lines = [line for line in served.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on a line that is not JSON
    assert any(r["logger"].startswith("uvicorn") and r["level"] == "warning" for r in records), lines
