"""Every Prometheus metric the enforcer exports, defined in this one module.

Labels are low-cardinality by construction: resource ids, issuer ids and sink names from
the configuration, stages and results from fixed lists, reason codes from
``errors.Reason``; never a subject, client id, path or address. Known label values are
created up front, so a dashboard sees zeros instead of missing series.

The same objects serve one process or several (``enforcer serve --workers N``): when
``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus_client is first imported, every
value is written to that process's files in the directory and ``exposition`` merges them.
Gauges then say how: in-flight requests add up over living workers, a key count is the
lowest any living worker holds, a key age the oldest, and a policy counts as in force
while any living worker serves it. The ``live`` modes drop a worker's gauges once it is
marked dead, so an exited worker never holds a value up.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from enforcer.errors import Reason

STAGES = ("token", "signature", "inspection", "policy", "upstream")
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
JWKS_RESULTS = ("success", "failure")
RELOAD_RESULTS = ("success", "error")
AUDIT_RESULTS = ("written", "failed", "dropped")
SHADOW_RESULTS = ("would_deny", "would_allow")
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("enforcer_requests_total", "Requests by resource, decision and reason.",
                                ["resource", "decision", "reason"], registry=r)
        self.duration = Histogram("enforcer_request_duration_seconds",
                                  "Time from request start to the end of the response.", ["resource"], registry=r)
        self.stages = Histogram("enforcer_stage_duration_seconds", "Time spent in each stage of a request.",
                                ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.upstream_responses = Counter("enforcer_upstream_responses_total",
                                          "Upstream responses by resource and status class.",
                                          ["resource", "code_class"], registry=r)
        self.inflight = Gauge("enforcer_inflight_requests", "Requests in progress.", registry=r,
                              multiprocess_mode="livesum")
        self.jwks_fetches = Counter("enforcer_jwks_fetch_total", "Key-set fetches by issuer and result.",
                                    ["issuer", "result"], registry=r)
        self.jwks_keys = Gauge("enforcer_jwks_keys", "Usable keys per issuer.", ["issuer"], registry=r,
                               multiprocess_mode="livemin")
        self.jwks_age = Gauge("enforcer_jwks_age_seconds", "Seconds since the issuer's keys were last fetched.",
                              ["issuer"], registry=r, multiprocess_mode="livemax")
        self.policy_reloads = Counter("enforcer_policy_reload_total", "Policy reloads by result.", ["result"],
                                      registry=r)
        self.policy_info = Gauge("enforcer_policy_info", "The policy in force (value 1), by version hash.",
                                 ["version_hash"], registry=r, multiprocess_mode="livemax")
        self.audit_records = Counter("enforcer_audit_records_total", "Audit records by sink and result.",
                                     ["sink", "result"], registry=r)
        self.replay_cache_errors = Counter("enforcer_replay_cache_errors_total",
                                           "Nonce-cache operations that failed (requests refused, fail closed).",
                                           registry=r)
        self.shadow_decisions = Counter("enforcer_shadow_decisions_total",
                                        "Requests that shadow rules would have answered differently, by resource "
                                        "and what they would have done.", ["resource", "result"], registry=r)
        # label children bound once per label set: a labels() lookup per request costs more
        self._request_children: dict[tuple[str, bool, Reason], tuple[Any, Any]] = {}
        self._stage_children = {stage: self.stages.labels(stage) for stage in STAGES}
        self._upstream_children: dict[tuple[str, int], Any] = {}
        self._shadow_children: dict[tuple[str, str], Any] = {}
        self._policy_hash: str | None = None

    def preinitialise(self, resource_ids: list[str], issuer_ids: list[str] = (), sinks: list[str] = ()) -> None:  # type: ignore[assignment]
        for resource in resource_ids:
            self.duration.labels(resource)
            for code_class in CODE_CLASSES:
                self.upstream_responses.labels(resource, code_class)
            for reason in (Reason.ALLOWED, Reason.UPSTREAM_UNAVAILABLE, Reason.UPSTREAM_TIMEOUT,
                           Reason.CLIENT_DISCONNECTED):
                self.requests.labels(resource, "allow", reason)
            for reason in Reason:
                if reason is not Reason.ALLOWED:
                    self.requests.labels(resource, "deny", reason)
            for result in SHADOW_RESULTS:  # every resource: a reload that adds shadow rules needs no new series
                self.shadow_decisions.labels(resource, result)
        for issuer in issuer_ids:
            self.jwks_keys.labels(issuer)
            for result in JWKS_RESULTS:
                self.jwks_fetches.labels(issuer, result)
        for result in RELOAD_RESULTS:
            self.policy_reloads.labels(result)
        for sink in sinks:
            for result in AUDIT_RESULTS:
                self.audit_records.labels(sink, result)

    def observe(self, resource: str, allowed: bool, reason: Reason, seconds: float) -> None:
        """One finished request. ``allowed`` is the policy's answer: an allowed request whose
        upstream then failed counts as ``decision="allow"`` with the failure as its reason."""
        children = self._request_children.get((resource, allowed, reason))
        if children is None:
            label = resource or "none"
            children = (self.requests.labels(label, "allow" if allowed else "deny", reason),
                        self.duration.labels(label))
            self._request_children[(resource, allowed, reason)] = children
        children[0].inc()
        children[1].observe(seconds)

    def stage(self, stage: str, seconds: float) -> None:
        self._stage_children[stage].observe(seconds)

    def upstream_response(self, resource: str, status: int) -> None:
        code_class = status // 100 if 100 <= status < 600 else 5
        child = self._upstream_children.get((resource, code_class))
        if child is None:
            child = self._upstream_children[(resource, code_class)] = \
                self.upstream_responses.labels(resource, f"{code_class}xx")
        child.inc()

    def jwks_fetch(self, issuer: str, ok: bool) -> None:
        self.jwks_fetches.labels(issuer, "success" if ok else "failure").inc()

    def policy_reload(self, ok: bool) -> None:
        self.policy_reloads.labels("success" if ok else "error").inc()

    def set_policy(self, version_hash: str) -> None:
        """This process reports exactly one policy at 1: the one in force.

        The previous version is set to 0 before it is dropped, because in multiprocess mode
        prometheus_client cannot remove a series from the process's file: dropping it alone
        would leave it there at 1. In one process it is removed, so only one series remains."""
        previous, self._policy_hash = self._policy_hash, version_hash
        if previous is not None and previous != version_hash:
            self.policy_info.labels(previous).set(0)
            if not values.ValueClass._multiprocess:
                self.policy_info.remove(previous)
        self.policy_info.labels(version_hash).set(1)

    def audit_record(self, sink: str, result: str) -> None:
        self.audit_records.labels(sink, result).inc()

    def replay_cache_error(self) -> None:
        self.replay_cache_errors.inc()

    def shadow_decision(self, resource: str, result: str) -> None:
        """A request whose shadow decision differed from the live one; ``result`` is
        ``would_deny`` or ``would_allow`` (``ShadowResult.result``)."""
        child = self._shadow_children.get((resource, result))
        if child is None:
            child = self._shadow_children[(resource, result)] = self.shadow_decisions.labels(resource, result)
        child.inc()
