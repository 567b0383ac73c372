"""OpenTelemetry spans for each request and its stages, when the ``otel`` extra is installed
and configured; nothing here is needed at run time otherwise.

Spans are made after the request finished, from the durations the pipeline recorded in the
``Outcome`` (``stages``), so the request path pays nothing for tracing it does not use and
the span tree is exactly the stages that ran: ``enforcer.request`` with children
``enforcer.token``, ``enforcer.signature``, ``enforcer.inspection``, ``enforcer.policy``,
``enforcer.upstream``. An inbound W3C ``traceparent`` makes the request span a child of
the caller's span. Attributes follow the metrics' rule: no token, no subject, no client id.
"""

from __future__ import annotations

import os
import time
from typing import Any

from enforcer.context import Outcome, RequestInfo


class Tracing:
    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()

    def record(self, request: RequestInfo, outcome: Outcome, *, allowed: bool, seconds: float) -> None:
        """Emit the spans of one finished request that took ``seconds`` and ended now."""
        end = time.time_ns()
        start = end - int(seconds * 1e9)
        carrier = {}
        if (traceparent := request.header(b"traceparent")) is not None:
            carrier["traceparent"] = traceparent.decode("latin-1")
        parent = self._propagator.extract(carrier)
        span = self._tracer.start_span("enforcer.request", context=parent, kind=self._trace.SpanKind.SERVER,
                                       start_time=start, attributes={
                                           "http.request.method": request.method,
                                           "enforcer.resource": outcome.resource_id or "",
                                           "enforcer.decision": "allow" if allowed else "deny",
                                           "enforcer.reason": str(outcome.reason),
                                           "enforcer.rule": outcome.decision.rule or "" if outcome.decision else "",
                                           "http.response.status_code": outcome.status,
                                       })
        if outcome.status >= 500 or not allowed:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(outcome.reason)))
        context = self._trace.set_span_in_context(span)
        at = start
        for stage, stage_seconds in outcome.stages.items():
            child = self._tracer.start_span(f"enforcer.{stage}", context=context, start_time=at)
            at += int(stage_seconds * 1e9)
            child.end(end_time=at)
        span.end(end_time=end)


def make_tracing() -> Tracing | None:
    """Tracing from the standard ``OTEL_*`` environment, or None when the extra is not
    installed or no exporter is configured (``OTEL_TRACES_EXPORTER`` or an OTLP endpoint)."""
    if not (os.environ.get("OTEL_TRACES_EXPORTER", "none") != "none"
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                         "enforcer")}))
    if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            return None
        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider.get_tracer("enforcer"))
