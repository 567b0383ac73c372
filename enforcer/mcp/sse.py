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
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark may open a stream; readers ignore it
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
        kind, data = "", []
        for line in _LINE.split(raw.removeprefix(BOM)):
            name, _, value = line.partition(b":")  # a line without a colon is a field with an empty value
            if not name:
                continue  # an empty line or a comment (":...")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event":
                kind = value.decode("utf-8", "replace")
            elif name == b"data":
                data.append(value.decode("utf-8", "replace"))
        return cls(kind or "message", "\n".join(data), raw)

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
        """The end of the stream: a last event held back for a CR is complete after all; an
        unfinished one is dropped (a client would drop it too)."""
        pending, self._pending = self._pending, b""
        match = _EVENT_END.search(pending)
        if match is None or match.end() != len(pending):
            return b""
        replacement = await self.on_event(Event.parse(pending))
        return pending if replacement is None else replacement
