"""JSON-RPC 2.0 inspection of MCP request bodies.

The MCP 2026-07-28 transport repeats the JSON-RPC method and the tool, prompt or resource
name in the ``Mcp-Method`` and ``Mcp-Name`` request headers. A gateway or server that
routes on the header while the body says something else is exactly the confusion a
policy bypass needs, so when either header is present the body is read (capped), parsed
strictly, and the two must agree; otherwise the request is refused with 400 and never
forwarded. The parsed messages are what rule conditions on MCP methods and tools will
evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from enforcer.auth import strictjson
from enforcer.context import RequestInfo
from enforcer.errors import HeaderMismatch, InvalidRequest

MAX_DEPTH = 64
MAX_BATCH = 100
#: the methods that name what each ``mcp:`` name condition (tools, prompts, resources) matches
TARGET_METHODS = {"tools": ("tools/call",), "prompts": ("prompts/get",),
                  "resources": ("resources/read", "resources/subscribe", "resources/unsubscribe")}
#: methods whose target is named in params, and the param that names it (what ``Mcp-Name`` repeats)
_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
             "resources/subscribe": "uri", "resources/unsubscribe": "uri",
             "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}
#: methods that mean nothing without their target
_NAME_REQUIRED = frozenset({"tools/call", "prompts/get", "resources/read"})
#: how the audit record calls each kind of target
_TARGET_FIELD = {"tools/call": "tool", "prompts/get": "prompt", "tasks/get": "task", "tasks/update": "task",
                 "tasks/cancel": "task"}
_OWS = " \t"  # optional whitespace around a header value (RFC 9110 section 5.5) is not part of it


@dataclass(frozen=True)
class JsonRpcMessage:
    """One JSON-RPC message: a request (has ``id``), a notification, or a response."""

    kind: str  # "request" | "notification" | "response"
    method: str | None
    name: str | None  # params.name / params.uri for the methods in _NAMED_BY
    id: str | int | None = None  # a request's id, for answering it with a JSON-RPC error

    def summary(self) -> dict[str, Any]:
        """What the audit record says about this message: its kind, method and target."""
        summary: dict[str, Any] = {"kind": self.kind, "method": self.method}
        if self.name is not None:
            summary[_TARGET_FIELD.get(self.method or "", "resource")] = self.name
        return summary


def error_response(messages: tuple[JsonRpcMessage, ...], code: int, message: str, data: dict[str, Any]) -> Any:
    """The JSON-RPC error answer to the requests among ``messages`` (an array for a batch), or
    None when none of them is a request (notifications and responses get no answer)."""
    answers = [{"jsonrpc": "2.0", "id": m.id, "error": {"code": code, "message": message, "data": data}}
               for m in messages if m.kind == "request"]
    if not answers:
        return None
    return answers if len(messages) > 1 else answers[0]


def needs_inspection(request: RequestInfo) -> bool:
    return request.header(b"mcp-method") is not None or request.header(b"mcp-name") is not None


def parse_messages(body: bytes, max_bytes: int) -> tuple[JsonRpcMessage, ...]:
    """Every message of a JSON-RPC body (a batch is a non-empty array), or ``InvalidRequest``."""
    try:
        document = strictjson.loads(body, max_bytes=max_bytes, max_depth=MAX_DEPTH)
    except strictjson.StrictJSONError as exc:
        raise InvalidRequest(f"the body is not valid JSON-RPC ({exc})") from exc
    items = document if isinstance(document, list) else [document]
    if not items or len(items) > MAX_BATCH:
        raise InvalidRequest(f"a JSON-RPC batch must hold 1 to {MAX_BATCH} messages")
    return tuple(_message(item) for item in items)


def _message(item: Any) -> JsonRpcMessage:
    if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
        raise InvalidRequest('each JSON-RPC message must be an object with "jsonrpc": "2.0"')
    method = item.get("method")
    if method is None:
        if "result" in item or "error" in item:
            return JsonRpcMessage("response", None, None)
        raise InvalidRequest("a JSON-RPC message needs a method, a result or an error")
    if not isinstance(method, str):
        raise InvalidRequest("the JSON-RPC method must be a string")
    params = item.get("params")
    name = None
    given = method in _NAMED_BY and isinstance(params, dict) and _NAMED_BY[method] in params
    if given or method in _NAME_REQUIRED:
        # a target the policy cannot read is never forwarded; where the target may be left out
        # (subscriptions, tasks), its absence leaves it None, which no name condition matches
        name = params.get(_NAMED_BY[method]) if isinstance(params, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest(f"{method} needs params.{_NAMED_BY[method]} as a string")
    if "id" not in item:
        return JsonRpcMessage("notification", method, name)
    request_id = item["id"]
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        raise InvalidRequest("a JSON-RPC id must be a string or an integer")
    return JsonRpcMessage("request", method, name, request_id)


def check_headers(request: RequestInfo, messages: tuple[JsonRpcMessage, ...]) -> None:
    """``Mcp-Method`` / ``Mcp-Name`` must describe the one message of the body exactly."""
    for header, field in ((b"mcp-method", "method"), (b"mcp-name", "name")):
        values = request.header_values(header)
        if not values:
            continue
        if len(values) > 1 or len(messages) != 1:
            raise InvalidRequest(f"send one {header.decode()} header, with a body of one JSON-RPC message")
        if values[0].decode("latin-1").strip(_OWS) != getattr(messages[0], field):
            raise HeaderMismatch(f"the {header.decode()} header does not match the JSON-RPC body")
