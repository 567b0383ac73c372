"""Filtering MCP list results down to what the caller may use.

A ``tools/list`` answer tells an agent (and the model behind it) what it can do. Listing a
tool the policy would refuse invites a call that can only fail, and may reveal tools the
caller should not know about. So, on MCP resources that ask for it, each entry of a list
result is judged as the call it offers, for this caller, under the same rules and at the
same instant: a tool as ``tools/call`` of its name, a prompt as ``prompts/get``, a resource
as ``resources/read`` of its URI. Entries that would be refused (for any reason,
``insufficient_scope`` included) are removed; entries without a usable name are removed too.

Results are recognised by shape, not by remembering the request: a JSON-RPC response whose
``result`` holds a ``tools``, ``prompts`` or ``resources`` array. That also covers answers
that arrive on another stream than the request went out on (the legacy SSE transport
answers every POST on its GET stream). A body that should be filtered but is not valid
JSON is never passed on (``InvalidUpstreamResponse``).
"""

from __future__ import annotations

import json
from typing import Any

from enforcer.context import Principal
from enforcer.errors import InvalidUpstreamResponse
from enforcer.mcp.inspect import JsonRpcMessage
from enforcer.policy.engine import Operation, ResourcePolicy

#: list methods whose results are filtered
LIST_METHODS = frozenset({"tools/list", "prompts/list", "resources/list"})
#: result key -> (the method an entry offers, the entry field that names it)
_OFFERS = {"tools": ("tools/call", "name"), "prompts": ("prompts/get", "name"), "resources": ("resources/read", "uri")}
MAX_RESULT_BYTES = 16 * 1024 * 1024


class ListFilter:
    """Judges list entries for one caller under one resource's rules."""

    def __init__(self, rules: ResourcePolicy, principal: Principal, operation: Operation) -> None:
        self.rules, self.principal, self.operation = rules, principal, operation
        self.removed = 0  # entries removed so far (for the audit record)

    def usable(self, method: str, name: str) -> bool:
        op = self.operation._replace(message=JsonRpcMessage("request", method, name))
        return self.rules.decide(self.principal, op, explain=False).allowed

    def filter_document(self, document: Any) -> bool:
        """Filter every list result in a JSON-RPC response or batch of responses, in place;
        True when anything was removed."""
        messages = document if isinstance(document, list) else [document]
        changed = False
        for message in messages:
            if isinstance(message, dict) and "method" not in message and isinstance(message.get("result"), dict):
                changed |= self._filter_result(message["result"])
        return changed

    def _filter_result(self, result: dict[str, Any]) -> bool:
        changed = False
        for key, (method, field) in _OFFERS.items():
            entries = result.get(key)
            if entries is None:
                continue
            if not isinstance(entries, list):
                raise InvalidUpstreamResponse(f"the upstream's {key} list is not an array")
            kept = [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get(field), str)
                    and self.usable(method, entry[field])]
            if len(kept) != len(entries):
                self.removed += len(entries) - len(kept)
                result[key] = kept
                changed = True
        return changed

    def rewrite_json(self, body: bytes) -> bytes:
        """A JSON body with its list results filtered (the same bytes when nothing was removed),
        written compactly in ASCII: escapes carry any text, lone surrogates included."""
        if len(body) > MAX_RESULT_BYTES:
            raise InvalidUpstreamResponse("the upstream's answer is too large to filter")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidUpstreamResponse("the upstream's answer is not valid JSON") from exc
        if not self.filter_document(document):
            return body
        return json.dumps(document, separators=(",", ":")).encode("utf-8")
