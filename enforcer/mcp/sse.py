"""Event-by-event rewriting of a ``text/event-stream`` (the WHATWG server-sent events format).

MCP servers answer over event streams; to filter a list result or learn a legacy session id,
the enforcer has to see whole events without holding the stream back. ``EventStreamRewriter``
cuts the bytes it is fed into events (an event ends at an empty line; lines end with CRLF,
LF or CR), hands each complete event to a callback, and emits the event's bytes unchanged
unless the callback returns a replacement. Bytes of an unfinished event wait for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from enforcer.errors import InvalidUpstreamResponse

#: a line ending followed by an empty line; atomic groups keep CRLF one line ending
_EVENT_END = re.compile(rb"(?>\r\n|\n|\r)(?>\r\n|\n|\r)")
_LINE = re.compile(rb"\r\n|\n|\r")
MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    """One parsed event: its type (``message`` when none is given), its data lines joined
    with LF, and its raw bytes including the terminating empty line."""

    type: str
    data: str
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Event:
        kind, data = "message", []
        for line in _LINE.split(raw):
            name, colon, value = line.partition(b":")
            if not colon or not name:
                continue  # an empty line or a comment (":...")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event":
                kind = value.decode("utf-8", "replace")
            elif name == b"data":
                data.append(value.decode("utf-8", "replace"))
        return cls(kind, "\n".join(data), raw)

    def with_data(self, data: str) -> bytes:
        """This event with its data replaced (one ``data:`` line; other fields kept, in order)."""
        kept = [line for line in _LINE.split(self.raw) if line and line.partition(b":")[0] != b"data"]
        lines = [*kept, b"data: " + data.encode("utf-8")]
        return b"\n".join(lines) + b"\n\n"


OnEvent = Callable[[Event], Awaitable[bytes | None]]


class EventStreamRewriter:
    """Feed it upstream chunks; it returns what to send on (possibly nothing yet)."""

    def __init__(self, on_event: OnEvent) -> None:
        self.on_event = on_event
        self._pending = b""

    async def feed(self, chunk: bytes) -> bytes:
        buffer = self._pending + chunk
        out, start = [], 0
        while match := _EVENT_END.search(buffer, start):
            # A CR at the very end may be the first half of a CRLF: wait for the next byte.
            if match.end() == len(buffer) and buffer.endswith(b"\r"):
                break
            raw = buffer[start:match.end()]
            replacement = await self.on_event(Event.parse(raw))
            out.append(raw if replacement is None else replacement)
            start = match.end()
        self._pending = buffer[start:]
        if len(self._pending) > MAX_EVENT_BYTES:
            raise InvalidUpstreamResponse("an event of the upstream's stream is too large to inspect")
        return b"".join(out)

    async def finish(self) -> bytes:
        """The end of the stream: an unfinished last event is dropped (a client would drop it too)."""
        self._pending = b""
        return b""
