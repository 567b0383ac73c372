"""A tiny upstream for the demo: it echoes what the enforcer forwarded to it.

``GET /events`` streams a few server-sent events, to show streaming passing through.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import Receive, Scope, Send


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/events"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        for n in range(3):
            await send({"type": "http.response.body", "body": f"data: tick {n}\n\n".encode(), "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
        return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    answer = {
        "method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode("latin-1"),
        "identity": {k: v for k, v in headers.items() if k.startswith("x-enforcer-")},
        "saw_authorization": "authorization" in headers,
        "body_bytes": len(body),
    }
    payload = json.dumps(answer, indent=2).encode() + b"\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
