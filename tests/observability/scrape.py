"""Reading ``/metrics`` as Prometheus would: the documented families and a parsed scrape."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

#: every family the enforcer exports (README "Metrics"): its type and its label names
FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "enforcer_requests_total": ("counter", frozenset({"resource", "decision", "reason"})),
    "enforcer_request_duration_seconds": ("histogram", frozenset({"resource"})),
    "enforcer_stage_duration_seconds": ("histogram", frozenset({"stage"})),
    "enforcer_upstream_responses_total": ("counter", frozenset({"resource", "code_class"})),
    "enforcer_inflight_requests": ("gauge", frozenset()),
    "enforcer_jwks_fetch_total": ("counter", frozenset({"issuer", "result"})),
    "enforcer_jwks_keys": ("gauge", frozenset({"issuer"})),
    "enforcer_jwks_age_seconds": ("gauge", frozenset({"issuer"})),
    "enforcer_policy_reload_total": ("counter", frozenset({"result"})),
    "enforcer_policy_info": ("gauge", frozenset({"version_hash"})),
    "enforcer_audit_records_total": ("counter", frozenset({"sink", "result"})),
    "enforcer_replay_cache_errors_total": ("counter", frozenset()),
    "enforcer_shadow_decisions_total": ("counter", frozenset({"resource", "result"})),
}
_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def family_of(sample_name: str) -> str | None:
    """The documented family a sample name belongs to (``x_bucket`` -> ``x``), or None."""
    for family in FAMILIES:
        stem = family.removesuffix("_total")
        if any(sample_name == stem + suffix for suffix in _SUFFIXES):
            return family
    return None


@dataclass
class Scrape:
    text: str
    types: dict[str, str] = field(default_factory=dict)  # family as documented -> type
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            name = family.name + "_total" if family.type == "counter" else family.name
            scrape.types[name] = family.type
            scrape.samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
        return scrape

    def value(self, name: str, **labels: str) -> float:
        """The one sample ``name{labels}``; an AssertionError when it is not exported."""
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and sample_labels == labels:
                return value
        raise AssertionError(f"{name}{labels} is not exported")

    def matching(self, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of ``name`` whose labels include ``labels``, by its full label set."""
        return {tuple(sorted(sample_labels.items())): value for sample_name, sample_labels, value in self.samples
                if sample_name == name and labels.items() <= sample_labels.items()}

    def label_values(self) -> set[str]:
        return {value for _, labels, _ in self.samples for value in labels.values()}


def check_families(scrape: Scrape) -> None:
    """Every documented family is exported with its type, every sample carries exactly the
    documented label names (plus ``le`` on histogram buckets), and nothing else is exported
    under ``enforcer_``."""
    for family, (kind, _) in FAMILIES.items():
        assert scrape.types.get(family) == kind, f"{family} is not exported as a {kind}"
    for name, labels, _ in scrape.samples:
        if not name.startswith("enforcer_"):
            continue
        family = family_of(name)
        assert family is not None, f"undocumented metric {name}"
        expected = FAMILIES[family][1] | ({"le"} if name.endswith("_bucket") else set())
        assert set(labels) == expected, f"{name} has labels {sorted(labels)}, documented {sorted(expected)}"
