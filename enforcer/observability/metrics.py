"""Every Prometheus metric the enforcer exports, defined in this one module.

Labels are low-cardinality by construction: resource ids from the policy and reason
codes from ``errors.Reason``; never a subject, client id, path or address.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from enforcer.errors import Reason


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "enforcer_requests_total", "Requests by resource, decision and reason.",
            ["resource", "decision", "reason"], registry=self.registry,
        )
        self.duration = Histogram(
            "enforcer_request_duration_seconds", "Time from request start to the end of the response.",
            ["resource"], registry=self.registry,
        )
        self.inflight = Gauge("enforcer_inflight_requests", "Requests in progress.", registry=self.registry)
        self.jwks_keys = Gauge("enforcer_jwks_keys", "Usable keys per issuer.", ["issuer"], registry=self.registry)
        # label children bound once per label set: a labels() lookup per request costs more
        self._request_children: dict[tuple[str, bool, Reason], tuple[Any, Any]] = {}

    def preinitialise(self, resource_ids: list[str]) -> None:
        for resource in resource_ids:
            self.duration.labels(resource)
            for reason in (Reason.ALLOWED, Reason.UPSTREAM_UNAVAILABLE, Reason.UPSTREAM_TIMEOUT,
                           Reason.CLIENT_DISCONNECTED):
                self.requests.labels(resource, "allow", reason)
            for reason in Reason:
                if reason is not Reason.ALLOWED:
                    self.requests.labels(resource, "deny", reason)

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
