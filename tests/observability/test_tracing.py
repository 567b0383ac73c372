"""OpenTelemetry spans: one request span with a child per stage that ran, parented on the
caller's ``traceparent``; no identity or token in the attributes."""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from enforcer.app import EnforcerApp
from enforcer.observability.tracing import Tracing, make_tracing
from enforcer.policy.loader import load_policy
from tests.support import (
    JWKSEndpoint,
    RecordingUpstream,
    ServerThread,
    SigningKey,
    basic_policy,
    claims,
    jwks,
    serving,
    sign,
    write_policy,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_spans_per_stage_under_the_callers_trace(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    key = SigningKey.generate("ES256", kid="k1")
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(RecordingUpstream()) as upstream:
        text = basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream.url}/mcp")
        app = EnforcerApp(load_policy([write_policy(tmp_path, text)]), tracing=Tracing(provider.get_tracer("t")))
        server = ServerThread(app, lifespan="on").start()
        try:
            token = sign(key, claims())
            ok = httpx.get(f"{server.url}/mcp/tools", headers={"authorization": f"Bearer {token}",
                                                                 "traceparent": PARENT})
            assert ok.status_code == 200
            denied = httpx.get(f"{server.url}/mcp/tools")
            assert denied.status_code == 401
        finally:
            server.stop()
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "enforcer.request"]
    assert len(requests) == 2
    allowed = next(s for s in requests if s.attributes["enforcer.decision"] == "allow")
    assert format(allowed.context.trace_id, "032x") == TRACE_ID
    assert format(allowed.parent.span_id, "016x") == "00f067aa0ba902b7"
    children = sorted((s for s in spans if s.parent is not None and s.parent.span_id == allowed.context.span_id),
                      key=lambda s: s.start_time)
    assert [s.name for s in children] == ["enforcer.token", "enforcer.policy", "enforcer.upstream"]
    assert all(allowed.start_time <= c.start_time <= c.end_time <= allowed.end_time for c in children)
    refused = next(s for s in requests if s.attributes["enforcer.decision"] == "deny")
    assert refused.attributes["enforcer.reason"] == "missing_token"
    assert refused.status.status_code.name == "ERROR"
    for span in spans:  # no identity or credential ever becomes an attribute
        values = " ".join(str(v) for v in span.attributes.values())
        assert token not in values and "alice" not in values and "agent-42" not in values


def test_tracing_is_off_unless_configured(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert make_tracing() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(make_tracing(), Tracing)
