"""The audit trail of a real ``enforcer serve`` process: under concurrent load, across a clean
shutdown, and with every sink on at once while requests carry secrets that must stay out."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import OKPKey
from prometheus_client.parser import text_string_to_metric_families

from enforcer.observability.auditchain import order_files
from enforcer.signing import HTTPSignatureAuth
from enforcer.signing import SigningKey as AgentKey
from tests.observability.helpers import ENFORCER, Collector, cli, ed25519_files, enforcer_process, stop
from tests.support import (
    RecordingUpstream,
    SigningKey,
    b64url,
    basic_policy,
    claims,
    jwks,
    serving,
    sign,
    write_policy,
)

PUBLIC_ORIGIN = "http://127.0.0.1:8080"  # the origin of tests.support.RESOURCE
SIGNATURES = """    signatures:
      required: false
      keys: {jwks_file: agents.json}"""


@dataclass
class Stack:
    policy: Path
    issuer: SigningKey
    agent: AgentKey
    stranger: SigningKey

    def token(self, **overrides: Any) -> str:
        return sign(self.issuer, claims(**overrides))


@contextmanager
def stack(directory: Path) -> Iterator[Stack]:
    """A policy trusting a local issuer key (``jwks_file``) and one agent signing key, in front of
    a recording upstream; unsigned requests pass, a signature that is sent must verify."""
    issuer = SigningKey.generate("ES256", kid="issuer-1")
    (directory / "issuer.json").write_text(json.dumps(jwks(issuer)))
    agent = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-agent"}, private=True)
    (directory / "agents.json").write_text(json.dumps({"keys": [dict(agent.as_dict(private=False))]}))
    with serving(RecordingUpstream()) as upstream:
        text = basic_policy(jwks_line=f"jwks_file: {directory / 'issuer.json'}", upstream=f"{upstream.url}/mcp",
                            extra_resource=SIGNATURES)
        yield Stack(write_policy(directory, text), issuer, AgentKey.from_jwk(agent.as_dict(private=True)),
                    SigningKey.generate("ES256", kid="issuer-1"))


def audit_documents(directory: Path, name: str = "audit.log") -> list[dict[str, Any]]:
    files = order_files([str(p) for p in directory.iterdir() if p.name.startswith(name)])
    return [json.loads(line) for path in files for line in Path(path).read_text().splitlines()]


def written(admin: str, sink: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{admin}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "enforcer_audit_records_total" and sample.labels == {"sink": sink, "result": "written"}:
                return sample.value
    return 0.0


# -- under load ---------------------------------------------------------------------------

KINDS = ("allowed", "no_rule", "missing", "garbage", "stranger", "expired", "no_route")
EXPECTED = {"allowed": (200, "allow"), "no_rule": (403, "deny"), "missing": (401, "deny"),
            "garbage": (401, "deny"), "stranger": (401, "deny"), "expired": (401, "deny"), "no_route": (404, "deny")}


def send(client: httpx.Client, env: Stack, tokens: dict[str, str], number: int) -> tuple[str, str, int]:
    """Request ``number`` with its own W3C trace id, which becomes its audit ``request_id``."""
    kind = KINDS[number % len(KINDS)]
    trace_id = f"{number + 1:032x}"
    headers = {"traceparent": f"00-{trace_id}-{1:016x}-01"}
    if kind in tokens:
        headers["authorization"] = f"Bearer {tokens[kind]}"
    path = "/elsewhere" if kind == "no_route" else f"/mcp/items/{number}"
    return trace_id, kind, client.get(path, headers=headers).status_code


def test_every_request_of_a_concurrent_load_is_audited_and_the_chain_verifies(tmp_path: Path) -> None:
    count = 300
    keys = ed25519_files(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    collector = Collector(status=503)  # down while the load runs
    with stack(tmp_path) as env, serving(collector) as receiver:
        tokens = {"allowed": env.token(), "no_rule": env.token(client_id="robot-7"), "garbage": "not.a.token",
                  "stranger": sign(env.stranger, claims()), "expired": env.token(iat=1_000_000, exp=1_000_600)}
        with enforcer_process(env.policy, "--no-audit-stdout", "--audit-file", str(logs / "audit.log"),
                              "--audit-chain", "--audit-checkpoint-key", str(keys.private),
                              "--audit-checkpoint-every", "50", "--audit-max-bytes", "65536",
                              "--audit-backups", "50", "--audit-fsync", "always",
                              "--audit-webhook", f"{receiver.url}/audit", "--audit-webhook-batch", "5") as served:
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            with httpx.Client(base_url=served.url, timeout=30, limits=limits) as client, \
                    ThreadPoolExecutor(max_workers=24) as pool:
                answers = list(pool.map(lambda n: send(client, env, tokens, n), range(count)))
            assert collector.batches == [] and collector.refused > 0
            collector.status = 200  # back as the stop signal comes: the process waits to deliver
            stderr = stop(served)  # at once: what is still queued is written before the process exits
    assert [status for _, kind, status in answers] == [EXPECTED[kind][0] for _, kind, _ in answers]
    assert "audit sink failed" not in stderr

    documents = audit_documents(logs)
    records = [d for d in documents if d.get("type") != "checkpoint"]
    assert len(records) == count
    assert len([d for d in documents if d.get("type") == "checkpoint"]) == count // 50
    assert len(list(logs.iterdir())) >= 3  # rotated along the way
    by_id = {record["request_id"]: record for record in records}
    assert len(by_id) == count
    for trace_id, kind, status in answers:
        record = by_id[trace_id]
        assert (record["status"], record["decision"]) == (status, EXPECTED[kind][1]), kind
        assert record["sub"] == ("alice" if kind in ("allowed", "no_rule") else None)

    files = order_files([str(p) for p in logs.iterdir()])
    assert [d for batch in collector.batches for d in batch] == documents  # every line, in order, after the drain
    verified = cli("audit", "verify", "--public-key", str(keys.public), *files)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"ok: {count} records; {count // 50} checkpoint(s); signatures verified")

    middle = Path(files[len(files) // 2])
    lines = middle.read_bytes().splitlines(keepends=True)
    target = next(n for n, line in enumerate(lines[3:], start=3) if b'"type":"checkpoint"' not in line)
    victim = json.loads(lines[target])
    lines[target] = lines[target].replace(b'"method":"GET"', b'"method":"PUT"')
    middle.write_bytes(b"".join(lines))
    refused = cli("audit", "verify", "--public-key", str(keys.public), *files)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"{middle}:{target + 1}: record {victim['request_id']}: hash does not match")


# -- secrets ------------------------------------------------------------------------------


def dpop_proof() -> str:
    """Something shaped like a DPoP proof JWT; the enforcer has no reason to keep it."""
    header = b64url(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "nonce": secrets.token_hex(8)}).encode())
    return f"{header}.{b64url(secrets.token_bytes(48))}.{b64url(secrets.token_bytes(64))}"


def test_no_token_signature_or_proof_reaches_any_sink_or_the_log(tmp_path: Path) -> None:
    collector = Collector()
    logs = tmp_path / "logs"
    logs.mkdir()
    stdout_path = tmp_path / "stdout.jsonl"
    with stack(tmp_path) as env, serving(collector) as receiver, stdout_path.open("w") as stdout:
        valid, robot = env.token(), env.token(client_id="robot-7")
        stranger, expired = sign(env.stranger, claims()), env.token(iat=1_000_000, exp=1_000_600)
        proofs = [dpop_proof() for _ in range(3)]
        bogus_signature = f"sig1=:{b64url(secrets.token_bytes(64))}=:"
        bogus_input = f'sig1=("@method" "@target-uri");created={int(time.time())};keyid="ed-agent";nonce="n-1"'
        seen: dict[str, str] = {}

        def keep_signature(request: httpx.Request) -> None:
            if "signature" in request.headers:
                seen["signature"], seen["signature-input"] = request.headers["signature"], \
                    request.headers["signature-input"]

        with enforcer_process(env.policy, "--log-level", "debug", "--audit-file", str(logs / "audit.log"),
                              "--audit-chain", "--audit-webhook", f"{receiver.url}/audit",
                              stdout=stdout) as served, \
                httpx.Client(base_url=served.url, timeout=10, event_hooks={"request": [keep_signature]}) as client:
            bearer = {"authorization": f"Bearer {valid}"}
            signed = client.post("/mcp/call", content=b'{"x":1}', headers={"dpop": proofs[0]},
                                 auth=HTTPSignatureAuth(env.agent, token=valid, public_origin=PUBLIC_ORIGIN))
            statuses = [
                signed.status_code,
                client.post("/mcp/call", content=b"{}", headers={
                    **bearer, "signature": bogus_signature, "signature-input": bogus_input}).status_code,
                client.get("/mcp/x", headers={"authorization": f"Bearer {stranger}", "dpop": proofs[1]}).status_code,
                client.get(f"/mcp/x?access_token={valid}").status_code,
                client.get(f"/mcp/x?access_token={robot}", headers=bearer).status_code,
                client.get("/mcp/x", headers={"authorization": f"DPoP {valid}", "dpop": proofs[2]}).status_code,
                client.get("/mcp/x", headers={"authorization": f"Bearer {robot}"}).status_code,
                client.get("/mcp/x", headers={"authorization": f"Bearer {expired}"}).status_code,
            ]
            for _ in range(200):  # records are written asynchronously; the counts show on /metrics
                if written(served.admin, "file") == written(served.admin, "webhook") == len(statuses):
                    break
                time.sleep(0.05)
            assert written(served.admin, "stdout") == written(served.admin, "file") == len(statuses)
            stderr = stop(served)
    assert statuses == [200, 401, 401, 400, 400, 401, 403, 401], signed.text

    file_text = "".join(Path(p).read_text() for p in order_files([str(p) for p in logs.iterdir()]))
    outputs = {"stdout": stdout_path.read_text(), "file": file_text,
               "webhook": b"".join(collector.bodies).decode(), "stderr": stderr}
    for name, text in outputs.items():
        if name != "stderr":
            assert len(text.splitlines()) == len(statuses), name  # every sink saw every request
    accepted = json.loads(outputs["file"].splitlines()[0])
    assert accepted["signature"]["keyid"] == "ed-agent" and accepted["signature"]["covered"]

    secret_values = {"valid token": valid, "robot token": robot, "stranger token": stranger,
                     "expired token": expired, "bogus signature": bogus_signature,
                     "bogus signature value": bogus_signature[6:-2], "bogus signature-input": bogus_input,
                     "signature": seen["signature"], "signature value": seen["signature"].split(":")[1],
                     "signature-input": seen["signature-input"]}
    for token_name in ("valid", "robot", "stranger", "expired"):
        token = {"valid": valid, "robot": robot, "stranger": stranger, "expired": expired}[token_name]
        _, payload, signature = token.split(".")
        secret_values[f"{token_name} token payload"] = payload
        secret_values[f"{token_name} token signature"] = signature
    for n, proof in enumerate(proofs):
        secret_values[f"dpop proof {n}"] = proof
        secret_values[f"dpop proof {n} signature"] = proof.split(".")[2]
    for name, text in outputs.items():
        for what, value in secret_values.items():
            assert value not in text, f"{what} appears in {name}"


def test_serve_refuses_unusable_audit_settings(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    keys = ed25519_files(tmp_path)
    for args, message in [
        (["--audit-checkpoint-key", str(keys.private)], "--audit-checkpoint-key signs the hash chain"),
        (["--audit-chain", "--audit-checkpoint-key", str(keys.public)], "give the private key"),
        (["--audit-webhook", "http://collector.example/in"], "--audit-webhook must be an https URL"),
        (["--audit-file", str(tmp_path / "missing" / "audit.log")], "No such file or directory"),
    ]:
        completed = subprocess.run([*ENFORCER, "serve", "--policy", str(policy), *args], capture_output=True,
                                   text=True, timeout=30)
        assert completed.returncode == 2, (args, completed.stderr)
        assert completed.stderr.startswith("audit: ") and message in completed.stderr, completed.stderr
