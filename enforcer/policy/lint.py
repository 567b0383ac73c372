"""Warnings: legal policy choices that are dangerous or almost certainly not meant.

A warning never stops a policy from loading (``enforcer serve`` logs each one once at
start); ``enforcer policy validate`` prints them, and refuses them only with
``--warnings-as-errors``. The rule warnings are about the rules as they are enforced:
shadow rules (``mode: shadow`` on the rule or its resource) decide nothing, so they are not
linted, but a shadow resource is a warning of its own.

=====================  ==========================================================================
code                   what it flags
=====================  ==========================================================================
no_rules               a resource without rules: every request to it is denied
unconditional_allow    an allow rule with no condition (or only ``*`` globs): any token accepted
                       for the resource is allowed to do anything there
any_agent              an allow rule that names no client, no subject and no scope, only methods
                       or paths: any agent with any accepted token may do that
deny_by_scope          a deny rule with ``scopes``: it only stops tokens that carry those scopes,
                       so a token asked for with fewer scopes walks past it
forward_token          ``forward_token: true``: the upstream receives the agent's bearer token
                       and can replay it wherever that token is accepted
signatures_optional    ``signatures.required: false``: unsigned requests are let through, so the
                       signature settings protect nothing until it is true
shadow_resource        ``mode: shadow`` on a resource: its rules refuse nothing, so any token
                       accepted for it is let through
=====================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from enforcer.policy.loader import SourceFile
from enforcer.policy.model import Resource, Rule
from enforcer.policy.problems import WARNING, PolicyProblem, located

Found = Iterator[tuple[tuple[Any, ...], str, str]]


def lint_sources(sources: Sequence[SourceFile]) -> list[PolicyProblem]:
    """Every warning of ``sources``, located like the errors."""
    warnings: list[PolicyProblem] = []
    for source in sources:
        for r, resource in source.resources():
            for sub, code, message in _resource_warnings(resource):
                loc = source.tree_loc(("resources", r, *sub))
                if code == "no_rules" and _written(source.tree, loc):
                    continue  # every rule it has was left out of the checks for errors of its own
                warnings.append(located(source.path, source.tree, loc, code, message, severity=WARNING))
    return warnings


def _resource_warnings(resource: Resource) -> Found:
    enforced = _mode(resource) == "enforce"
    if not enforced:
        yield ("mode",), "shadow_resource", \
            "the resource is in shadow mode: its rules refuse nothing, so any token accepted for it is let through"
    if enforced and not resource.rules:
        yield ("rules",), "no_rules", "the resource has no rules, so every request to it is denied"
    if resource.forward_token:
        yield ("forward_token",), "forward_token", \
            "the upstream receives the agent's access token and could replay it wherever it is accepted"
    if resource.signatures is not None and not resource.signatures.required:
        yield ("signatures", "required"), "signatures_optional", \
            "unsigned requests are let through (only a signature that is sent is verified)"
    for k, rule in enumerate(resource.rules):
        if enforced and _mode(rule) == "enforce":
            for sub, code, message in _rule_warnings(rule):
                yield ("rules", k, *sub), code, message


def _rule_warnings(rule: Rule) -> Found:
    anyone = _matches_anything(rule.client_ids) and _matches_anything(rule.subjects)
    if rule.effect == "deny":
        if rule.scopes:
            yield ("scopes",), "deny_by_scope", \
                "this deny rule applies only to tokens that carry these scopes; a token without them is not denied"
        return
    narrowed = (rule.scopes or rule.mcp is not None or rule.actors is not None or rule.workloads is not None
                or rule.workload_is_client_id)
    if not anyone or narrowed:
        return
    if rule.methods is None and _matches_anything(rule.paths):
        yield (), "unconditional_allow", \
            "this allow rule has no conditions: any token accepted for this resource may make any request"
    else:
        yield (), "any_agent", \
            "this allow rule names no client_ids, subjects or scopes: any agent with an accepted token may use it"


def _written(tree: Any, loc: tuple[Any, ...]) -> bool:
    node = tree
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return bool(node)


def _matches_anything(globs: tuple[str, ...] | None) -> bool:
    """An absent condition, or one with a glob made only of ``*`` (which matches any value)."""
    return globs is None or any(glob and set(glob) == {"*"} for glob in globs)


def _mode(item: Resource | Rule) -> str:
    return str(getattr(item, "mode", "enforce"))
