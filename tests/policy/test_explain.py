"""``enforcer policy explain``: one request through the server's stages without a network, the
per-rule trace, the command line, and the same trace in the debug log of a live request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from enforcer.cli import main
from enforcer.errors import Reason
from enforcer.policy.evaluate import Evaluator, Probe, claims_from_token
from enforcer.policy.explain import render_json, render_text
from enforcer.policy.loader import load_policy
from tests.observability.helpers import enforcer_process, stop
from tests.support import (
    RESOURCE,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    jwks,
    serving,
    sign,
    write_policy,
)

ISS = "https://auth.example.test"
POLICY = f"""version: 1
issuers:
  - id: corp
    issuer: {ISS}
    jwks_uri: {ISS}/jwks
resources:
  - id: mcp
    resource: https://mcp.example.test/mcp
    match: {{path_prefix: /mcp}}
    upstream: http://127.0.0.1:9000/mcp
    issuers: [corp]
    limits: {{max_body_bytes: 200}}
    rules:
      - id: block-admin
        effect: deny
        paths: ["/mcp/admin", "/mcp/admin/*"]
      - id: agents-read
        effect: allow
        client_ids: ["agent-*"]
        methods: [GET]
        scopes: [tools:read]
      - id: agent-42-calls
        effect: allow
        client_ids: [agent-42]
        methods: [POST]
        scopes: [tools:call, tools:read]
      - id: watch-deletes
        effect: deny
        mode: shadow
        methods: [DELETE]
      - id: try-robots
        effect: allow
        mode: shadow
        client_ids: ["robot-*"]
  - id: api
    resource: https://api.example.test/
    match: {{path_prefix: /, host: api.example.test}}
    upstream: http://127.0.0.1:9001/
    issuers: [corp]
    signatures:
      keys: {{jwks_uri: https://keys.example.test/agents}}
    rules:
      - id: anyone
        effect: allow
  - id: legacy
    resource: https://mcp.example.test/legacy
    match: {{path_prefix: /legacy}}
    upstream: http://127.0.0.1:9002/legacy
    issuers: [corp]
    mode: shadow
    rules:
      - id: only-agent-42
        effect: allow
        client_ids: [agent-42]
"""
CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}).encode()


def who(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISS, "sub": "alice", "client_id": "agent-42", "scope": "tools:read"}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    return Evaluator(load_policy([write_policy(tmp_path_factory.mktemp("explain"), POLICY)]))


@dataclass(frozen=True)
class Case:
    id: str
    claims: dict[str, Any] | None
    probe: Probe
    status: int
    reason: Reason
    rule: str | None = None
    scopes: tuple[str, ...] = ()
    failed: str | None = None  # the stage that refused, before the rules
    shadow: tuple[str, str | None] | None = None  # (result, rule) recorded for the audit trail
    steps: tuple[str, ...] = field(default=("route", "token", "body"))


CASES = [
    Case("allow", who(), Probe("GET", "/mcp/tools"), 200, Reason.ALLOWED, "agents-read"),
    Case("deny-rule", who(), Probe("GET", "/mcp/admin/users"), 403, Reason.DENIED_BY_RULE, "block-admin"),
    Case("step-up-lists-every-scope", who(), Probe("POST", "/mcp"), 403, Reason.INSUFFICIENT_SCOPE,
         "agent-42-calls", ("tools:call", "tools:read")),
    Case("default-deny", who(client_id="bot-1"), Probe("GET", "/mcp/tools"), 403, Reason.NO_MATCHING_RULE),
    Case("shadow-would-deny", who(), Probe("DELETE", "/mcp/tools"), 403, Reason.NO_MATCHING_RULE,
         shadow=("would_deny", "watch-deletes")),
    Case("shadow-would-allow", who(client_id="robot-1"), Probe("GET", "/mcp/tools"), 403, Reason.NO_MATCHING_RULE,
         shadow=("would_allow", "try-robots")),
    Case("shadow-resource-allows", who(client_id="bot-1"), Probe("GET", "/legacy/x"), 200, Reason.ALLOWED,
         shadow=("would_deny", None)),
    Case("no-route", who(), Probe("GET", "/elsewhere"), 404, Reason.NO_ROUTE, failed="route", steps=()),
    Case("host-route-and-signature-note", who(aud="https://api.example.test/"),
         Probe("GET", "/x", (("Host", "api.example.test"),)), 200, Reason.ALLOWED, "anyone",
         steps=("route", "token", "signature", "body")),
    Case("ambiguous-path", who(), Probe("GET", "/mcp/%2e%2e/admin"), 400, Reason.INVALID_REQUEST, failed="request",
         steps=()),
    Case("no-token", None, Probe("GET", "/mcp/tools"), 401, Reason.MISSING_TOKEN, failed="token", steps=("route",)),
    Case("token-in-query", who(), Probe("GET", "/mcp/tools?access_token=x"), 400, Reason.INVALID_REQUEST,
         failed="token", steps=("route",)),
    Case("wrong-audience", who(aud="https://other.example.test/mcp"), Probe("GET", "/mcp/tools"), 401,
         Reason.INVALID_TOKEN, failed="token", steps=("route",)),
    Case("right-audience", who(aud=["https://MCP.example.test/mcp"]), Probe("GET", "/mcp/tools"), 200,
         Reason.ALLOWED, "agents-read"),
    Case("unknown-issuer", who(iss="https://evil.example.test"), Probe("GET", "/mcp/tools"), 401,
         Reason.INVALID_TOKEN, failed="token", steps=("route",)),
    Case("no-client-id", who(client_id=None), Probe("GET", "/mcp/tools"), 401, Reason.INVALID_TOKEN,
         failed="token", steps=("route",)),
    Case("mcp-headers-agree", who(scope="tools:call tools:read"),
         Probe("POST", "/mcp", (("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")), CALL), 200, Reason.ALLOWED,
         "agent-42-calls"),
    Case("mcp-headers-disagree", who(scope="tools:call tools:read"),
         Probe("POST", "/mcp", (("Mcp-Name", "delete_all"),), CALL), 400, Reason.INVALID_REQUEST, failed="body",
         steps=("route", "token")),
    Case("body-too-large", who(), Probe("POST", "/mcp", (("Mcp-Method", "tools/call"),), b" " * 201), 413,
         Reason.BODY_TOO_LARGE, failed="body", steps=("route", "token")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_evaluation(evaluator: Evaluator, case: Case) -> None:
    evaluation = evaluator.evaluate(case.claims, case.probe)
    assert (evaluation.status, evaluation.reason, evaluation.rule, evaluation.scopes) == (
        case.status, case.reason, case.rule, case.scopes)
    assert evaluation.allowed is (case.status == 200)
    ok_steps = tuple(step.stage for step in evaluation.steps if step.ok)
    assert ok_steps == case.steps
    failed = [step.stage for step in evaluation.steps if not step.ok]
    assert failed == ([case.failed] if case.failed else [])
    assert (evaluation.explanation is not None) is (case.failed is None)
    shadow = evaluation.shadow
    assert (None if shadow is None else (shadow.result, shadow.rule)) == case.shadow


def test_text_trace(evaluator: Evaluator) -> None:
    evaluation = evaluator.evaluate(who(), Probe("DELETE", "/mcp/admin"))
    assert render_text(evaluation) == """\
request    DELETE /mcp/admin
claims     iss "https://auth.example.test", sub "alice", client_id "agent-42", scope "tools:read"
route      resource mcp (path_prefix /mcp)
token      issuer corp; aud not given, not checked; signature and times not checked
body       not inspected (no Mcp-Method or Mcp-Name header)
rules      of resource mcp, in file order
  block-admin     deny           matched
      ok    paths: path in [/mcp/admin, /mcp/admin/*]
  agents-read     allow          no match: method not in [GET]
      FAIL  methods: method not in [GET]
      ok    client_ids: client_id in [agent-*]
      ok    scopes: scopes [tools:read] granted
  agent-42-calls  allow          no match: method not in [POST]
      FAIL  methods: method not in [POST]
      ok    client_ids: client_id in [agent-42]
      FAIL  scopes: missing scopes [tools:call]
  watch-deletes   deny (shadow)  matched
      ok    methods: method in [DELETE]
  try-robots      allow (shadow) no match: client_id not in [robot-*]
      FAIL  client_ids: client_id not in [robot-*]
combining  enforce-mode rules: deny rule block-admin matched: deny wins
shadow     same answer: all rules: deny rule block-admin matched: deny wins
decision   deny: 403 access_denied (reason denied_by_rule, rule block-admin)
"""


def test_text_trace_of_a_refusal_before_the_rules_and_of_a_shadow_resource(evaluator: Evaluator) -> None:
    refused = render_text(evaluator.evaluate(None, Probe("GET", "/mcp/tools")))
    assert refused.splitlines()[1:] == [
        "claims     none (the request carries no token)",
        "route      resource mcp (path_prefix /mcp)",
        "token      FAIL: this resource needs an access token: send Authorization: Bearer <token>",
        "decision   deny: 401 missing_token (reason missing_token)",
    ]
    legacy = render_text(evaluator.evaluate(who(client_id="bot-1"), Probe("GET", "/legacy/x"))).splitlines()
    assert legacy[-3:] == [
        "combining  the resource is in shadow mode: its rules are not enforced, allow",
        "shadow     would_deny: all rules: no rule matched: default deny",
        "decision   allow: 200, forwarded to the upstream, no rule (not enforced)",
    ]
    assert "  only-agent-42  allow (shadow) no match: client_id not in [agent-42]" in legacy


def test_json_document(evaluator: Evaluator) -> None:
    document = render_json(evaluator.evaluate(who(), Probe("DELETE", "/mcp/tools")))
    assert {k: document[k] for k in ("decision", "status", "error", "reason", "rule", "scopes", "resource")} == {
        "decision": "deny", "status": 403, "error": "access_denied", "reason": "no_matching_rule", "rule": None,
        "scopes": [], "resource": "mcp"}
    assert [rule["rule"] for rule in document["rules"]] == [
        "block-admin", "agents-read", "agent-42-calls", "watch-deletes", "try-robots"]
    assert document["rules"][3]["mode"] == "shadow" and document["rules"][3]["matched"] is True
    assert document["combining"] == "no rule matched: default deny"
    assert document["shadow"] == {"decision": "would_deny", "differs": True, "rule": "watch-deletes",
                                  "reason": "denied_by_rule", "scopes": [],
                                  "combining": "deny rule watch-deletes matched: deny wins"}
    no_route = render_json(evaluator.evaluate(who(), Probe("GET", "/nowhere")))
    assert (no_route["rules"], no_route["shadow"], no_route["steps"][-1]["ok"]) == (None, None, False)


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["policy", "explain", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_claims_inline_from_a_file_and_as_json(policy_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    inline = json.dumps(who())
    code, out, err = run(capsys, "--policy", str(policy_file), "--claims", inline, "--path", "/mcp/admin")
    assert (code, err) == (0, "") and out.endswith("decision   deny: 403 access_denied (reason denied_by_rule, "
                                                    "rule block-admin)\n")
    (tmp_path / "claims.json").write_text(inline)
    (tmp_path / "call.json").write_bytes(CALL)
    code, out, _ = run(capsys, "--policy", str(policy_file), "--claims", f"@{tmp_path / 'claims.json'}",
                       "-X", "POST", "--path", "/mcp", "-H", "Mcp-Method: tools/call", "-H", "Mcp-Name: echo",
                       "--body", f"@{tmp_path / 'call.json'}", "--format", "json")
    document = json.loads(out)
    assert (code, document["reason"], document["scopes"]) == (0, "insufficient_scope", ["tools:call", "tools:read"])
    assert document["steps"][-1] == {"stage": "body", "ok": True,
                                     "detail": "JSON-RPC request tools/call echo: agrees with the Mcp-* headers"}
    code, out, _ = run(capsys, "--policy", str(policy_file), "--claims", str(tmp_path / "claims.json"),
                       "--path", "/mcp/tools")
    assert code == 0 and "decision   allow: 200, forwarded to the upstream, rule agents-read" in out
    for body in (CALL.decode(), str(tmp_path / "call.json")):  # inline, or a file name as DESIGN.md writes it
        code, out, _ = run(capsys, "--policy", str(policy_file), "--claims", inline, "-X", "POST", "--path", "/mcp",
                           "-H", "Mcp-Method: tools/call", "--body", body)
        assert code == 0 and "body       JSON-RPC request tools/call echo: agrees with the Mcp-* headers" in out


def test_cli_reads_a_real_token_only_with_no_verify(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = SigningKey.generate("ES256", kid="k1")
    token = sign(key, claims(iss=ISS, aud="https://mcp.example.test/mcp", scope="tools:read"))
    code, out, err = run(capsys, "--policy", str(policy_file), "--token", token, "--path", "/mcp/tools")
    assert (code, out) == (2, "") and "--no-verify" in err
    code, out, err = run(capsys, "--policy", str(policy_file), "--token", token, "--no-verify", "--path", "/mcp/x")
    assert code == 0 and "aud includes https://mcp.example.test/mcp" in out
    assert "decision   allow: 200" in out and token not in out + err and token.split(".")[2] not in out + err
    assert claims_from_token(token)["client_id"] == "agent-42"


@pytest.mark.parametrize(("args", "message"), [
    (["--claims", "{not json"], "--claims is not JSON"),
    (["--claims", "[1]"], "--claims must be a JSON object"),
    (["--claims", "@/nonexistent/claims.json"], "--claims: cannot read /nonexistent/claims.json"),
    (["--token", "a.b", "--no-verify"], "--token: the token is not a compact JWT"),
    (["--claims", "{}", "-H", "no colon"], "--header 'no colon' is not 'Name: value'"),
    (["--claims", "{}", "--body", "@/nonexistent/body.json"], "--body: cannot read /nonexistent/body.json"),
])
def test_cli_usage_errors(policy_file: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                          message: str) -> None:
    code, out, err = run(capsys, "--policy", str(policy_file), "--path", "/mcp", *args)
    assert (code, out) == (2, "") and err.startswith("enforcer policy explain: ") and message in err, err


def test_cli_broken_policy_exits_1_with_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = write_policy(tmp_path, "version: 2\n")
    code, out, err = run(capsys, "--policy", str(broken), "--claims", "{}", "--path", "/mcp")
    assert (code, out) == (1, "") and f"{broken}:1:" in err


# -- the same trace in the debug log of live requests ---------------------------------------------


@pytest.fixture
def policy_records() -> Iterator[list[logging.LogRecord]]:
    """Records of the ``enforcer.policy`` logger, at debug level while the test runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("enforcer.policy")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_pipeline_traces_only_at_debug_level(tmp_path: Path, policy_records: list[logging.LogRecord]) -> None:
    from enforcer.pipeline import Pipeline

    policy = load_policy([write_policy(tmp_path, POLICY)])
    assert Pipeline(policy, verifier=None, signatures={}).explain is True  # type: ignore[arg-type]
    logging.getLogger("enforcer.policy").setLevel(logging.INFO)
    assert Pipeline(policy, verifier=None, signatures={}).explain is False  # type: ignore[arg-type]


def test_serve_at_debug_level_logs_each_decision_trace(tmp_path: Path) -> None:
    key = SigningKey.generate("ES256", kid="k1")
    (tmp_path / "issuer.json").write_text(json.dumps(jwks(key)))
    rules = """
      - id: allow-agents
        effect: allow
        client_ids: ["agent-*"]
      - id: watch-robots
        effect: allow
        mode: shadow
        client_ids: ["robot-*"]
"""
    with serving(RecordingUpstream()) as upstream:
        policy = write_policy(tmp_path, basic_policy(jwks_line=f"jwks_file: {tmp_path / 'issuer.json'}",
                                                     upstream=f"{upstream.url}/mcp", rules=rules))
        with enforcer_process(policy, "--log-level", "debug", "--no-audit-stdout") as served:
            robot = sign(key, claims(aud=RESOURCE, client_id="robot-7", sub="sub-zq9"))
            response = httpx.get(f"{served.url}/mcp/x", headers={"authorization": f"Bearer {robot}"})
            stderr = stop(served)
    assert response.status_code == 403
    (line,) = [json.loads(line) for line in stderr.splitlines() if '"policy decision"' in line]
    assert line["level"] == "debug" and line["resource"] == "demo" and line["reason"] == "no_matching_rule"
    assert [(t["rule"], t["mode"], t["matched"]) for t in line["trace"]] == [
        ("allow-agents", "enforce", False), ("watch-robots", "shadow", True)]
    assert line["trace"][0]["conditions"] == [
        {"condition": "client_ids", "holds": False, "detail": "client_id not in [agent-*]"}]
    assert line["shadow"] == {"decision": "would_allow", "rule": "watch-robots", "reason": "allowed"}
    assert robot not in stderr and "sub-zq9" not in stderr and "robot-7" not in stderr
