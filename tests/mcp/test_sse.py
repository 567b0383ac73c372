"""Event-by-event rewriting of ``text/event-stream`` answers (``enforcer/mcp/sse.py``).

Whatever the chunks the upstream's bytes arrive in, the rewriter must see the same events and
send on the same bytes: each stream below is fed in one piece, byte by byte, and split in two
at every offset. Line endings are LF, CRLF or CR (WHATWG HTML, "Server-sent events", parsing
an event stream); an event ends at an empty line, and an unfinished last event is dropped at
the end of the stream, as a client would drop it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from enforcer.errors import InvalidUpstreamResponse
from enforcer.mcp import sse
from enforcer.mcp.sse import Event, EventStreamRewriter

REPLACED = "replaced"


class Recorder:
    """The callback: records every event; replaces those whose data is REPLACE, drops DROP."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> bytes | None:
        self.events.append(event)
        if event.data == "REPLACE":
            return event.with_data(REPLACED)
        if event.data == "DROP":
            return b""
        return None


def run(chunks: Sequence[bytes]) -> tuple[bytes, list[Event]]:
    """What the rewriter sends on for ``chunks`` (then the end of the stream), and the events it saw."""
    recorder = Recorder()

    async def go() -> bytes:
        rewriter = EventStreamRewriter(recorder)
        out = [await rewriter.feed(chunk) for chunk in chunks]
        return b"".join(out) + await rewriter.finish()

    return asyncio.run(go()), recorder.events


LF_STREAM = (b": keep-alive comment\n"
             b"id: 1\n"
             b"event: message\n"
             b'data: {"jsonrpc":"2.0","id":1,"result":{}}\n'
             b"\n"
             b"retry: 3000\n"
             b"data: line one\n"
             b"data:line two\n"
             b"data:  leading space kept\n"
             b"\n"
             b"event: endpoint\n"
             b"data: /messages?session_id=abc\n"
             b"\n"
             b"id: 7\n"
             b": note\n"
             b"data: REPLACE\n"
             b"\n"
             b"data: DROP\n"
             b"\n"
             b"\n\n"  # an empty event: two empty lines
             b"data: unfinished")
EXPECTED_EVENTS = [("message", '{"jsonrpc":"2.0","id":1,"result":{}}'),
                   ("message", "line one\nline two\n leading space kept"),
                   ("endpoint", "/messages?session_id=abc"),
                   ("message", "REPLACE"),
                   ("message", "DROP"),
                   ("message", "")]


def expected_output(stream: bytes, eol: bytes) -> bytes:
    """The stream as sent on: the REPLACE event rewritten (always with LF), DROP removed, the
    unfinished event left out."""
    replace = b"id: 7" + eol + b": note" + eol + b"data: REPLACE" + eol + eol
    drop = b"data: DROP" + eol + eol
    assert stream.count(replace) == 1 and stream.count(drop) == 1
    out = stream.replace(replace, b"id: 7\n: note\ndata: replaced\n\n").replace(drop, b"")
    return out[:out.rindex(b"data: unfinished")]


STREAMS = {
    "lf": (LF_STREAM, expected_output(LF_STREAM, b"\n"), EXPECTED_EVENTS),
    "crlf": (LF_STREAM.replace(b"\n", b"\r\n"), expected_output(LF_STREAM.replace(b"\n", b"\r\n"), b"\r\n"),
             EXPECTED_EVENTS),
    "cr": (LF_STREAM.replace(b"\n", b"\r"), expected_output(LF_STREAM.replace(b"\n", b"\r"), b"\r"), EXPECTED_EVENTS),
    # endings mixed within one stream, within one event, and CRLF split by the empty line's own ending
    "mixed": (b"data: a\r\ndata: b\n\r\n"
              b"data: c\r\r"
              b"event: x\ndata: d\r\n\n"
              b"data: e\n\r"
              b"data: f\r\r\n"
              b"data: g\r\n\r\n"
              b"data: unfinished\r\n",
              b"data: a\r\ndata: b\n\r\ndata: c\r\revent: x\ndata: d\r\n\ndata: e\n\rdata: f\r\r\ndata: g\r\n\r\n",
              [("message", "a\nb"), ("message", "c"), ("x", "d"), ("message", "e"), ("message", "f"),
               ("message", "g")]),
}


def check(stream: str, chunks: Sequence[bytes]) -> None:
    _, expected, events = STREAMS[stream]
    out, seen = run(chunks)
    assert out == expected
    assert [(e.type, e.data) for e in seen] == events


@pytest.mark.parametrize("stream", STREAMS)
def test_one_piece(stream: str) -> None:
    check(stream, [STREAMS[stream][0]])


@pytest.mark.parametrize("stream", STREAMS)
def test_byte_by_byte(stream: str) -> None:
    data = STREAMS[stream][0]
    check(stream, [data[i:i + 1] for i in range(len(data))])


@pytest.mark.parametrize("stream", STREAMS)
def test_two_parts_at_every_offset(stream: str) -> None:
    data = STREAMS[stream][0]
    one_piece = run([data])
    for i in range(len(data) + 1):
        assert run([data[:i], data[i:]]) == one_piece, f"split at {i}: {data[:i][-6:]!r} | {data[i:][:6]!r}"


def test_three_parts_at_every_pair_of_offsets() -> None:
    data = STREAMS["mixed"][0]
    one_piece = run([data])
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert run([data[:i], data[i:j], data[j:]]) == one_piece, (i, j)


def test_events_are_raw_bytes_exactly_as_received() -> None:
    _, events = run([STREAMS["crlf"][0]])
    assert [e.raw for e in events][:2] == [
        b': keep-alive comment\r\nid: 1\r\nevent: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n',
        b"retry: 3000\r\ndata: line one\r\ndata:line two\r\ndata:  leading space kept\r\n\r\n"]


def test_bytes_are_sent_on_as_soon_as_an_event_is_complete() -> None:
    recorder = Recorder()

    async def go() -> list[bytes]:
        rewriter = EventStreamRewriter(recorder)
        return [await rewriter.feed(b"data: a\n"), await rewriter.feed(b"\ndata: b"), await rewriter.feed(b"\n\n"),
                await rewriter.feed(b"data: c\r"), await rewriter.feed(b"\r"), await rewriter.feed(b"x")]

    outs = asyncio.run(go())
    # "data: c\r\r" might still be followed by LF (CRLF): it is sent when the next byte shows it is not
    assert outs == [b"", b"data: a\n\n", b"data: b\n\n", b"", b"", b"data: c\r\r"]
    assert [e.data for e in recorder.events] == ["a", "b", "c"]


@pytest.mark.parametrize(("stream", "sent", "data"), [
    (b"data: a\n\ndata: partial", b"data: a\n\n", ["a"]),
    (b"data: a\n\ndata: partial\n", b"data: a\n\n", ["a"]),
    (b"data: a\r\n\r\ndata: partial\r\n", b"data: a\r\n\r\n", ["a"]),
    (b"data: a\r\n\r\ndata: partial\r", b"data: a\r\n\r\n", ["a"]),
    (b"data: partial", b"", []),
    (b"", b"", []),
], ids=["no-line-end", "one-line-end", "crlf", "cr", "only-unfinished", "empty"])
def test_unfinished_last_event_is_dropped_at_the_end(stream: bytes, sent: bytes, data: list[str]) -> None:
    out, events = run([stream])
    assert out == sent
    assert [e.data for e in events] == data


def test_finish_sends_nothing_more_and_forgets_the_unfinished_event() -> None:
    recorder = Recorder()

    async def go() -> tuple[bytes, bytes, bytes]:
        rewriter = EventStreamRewriter(recorder)
        first = await rewriter.feed(b"data: a\n\ndata: half")
        return first, await rewriter.finish(), await rewriter.finish()

    assert asyncio.run(go()) == (b"data: a\n\n", b"", b"")
    assert [e.data for e in recorder.events] == ["a"]


@pytest.mark.parametrize("stream", [b"data: a\r\r", b"data: a\n\r", b"data: a\r\n\r", b"data: a\n\ndata: b\r\r"],
                         ids=["cr-cr", "lf-cr", "crlf-cr", "second-event"])
def test_a_stream_ending_in_cr_delivers_its_last_event(stream: bytes) -> None:
    """An event ended by CR at the very end of the stream is complete (a client dispatches it): the
    rewriter may hold it back while a LF could follow, but not drop it when the stream ends."""
    out, events = run([stream])
    assert out == stream
    assert events[-1].data == stream.rstrip(b"\r\n").rsplit(b"data: ", 1)[1].decode()


def test_replacement_and_removal_by_the_callback() -> None:
    stream = b"data: keep\n\ndata: REPLACE\n\ndata: DROP\n\ndata: keep too\n\n"
    out, events = run([stream])
    assert out == b"data: keep\n\ndata: replaced\n\ndata: keep too\n\n"
    assert len(events) == 4


# --- Event ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "kind", "data"), [
    (b"data: a\n\n", "message", "a"),
    (b"data:a\n\n", "message", "a"),
    (b"data:  a\n\n", "message", " a"),
    (b"data: a \n\n", "message", "a "),
    (b"data: a\ndata: b\ndata: c\n\n", "message", "a\nb\nc"),
    (b"data: a\r\ndata: b\r\n\r\n", "message", "a\nb"),
    (b"data: a\rdata: b\r\r", "message", "a\nb"),
    (b"data: \ndata: b\n\n", "message", "\nb"),
    (b"event: endpoint\ndata: /messages?session_id=1\n\n", "endpoint", "/messages?session_id=1"),
    (b"event: x\nevent: y\ndata: a\n\n", "y", "a"),
    (b": data: not data\ndata: a\n\n", "message", "a"),
    (b"id: 1\nretry: 5\nunknown: z\ndata: a\n\n", "message", "a"),
    (b"Data: a\nEVENT: x\n\n", "message", ""),
    (b"data: a: b: c\n\n", "message", "a: b: c"),
    (b"data: caf\xc3\xa9\n\n", "message", "café"),
    (b"data: \xff\n\n", "message", "\ufffd"),
    # a field name without a colon has the empty string as its value (WHATWG)
    (b"data: a\ndata\ndata: b\n\n", "message", "a\n\nb"),
    # an empty event type is the default type, "message" (WHATWG)
    (b"event:\ndata: a\n\n", "message", "a"),
    (b"event\ndata: a\n\n", "message", "a"),
], ids=["space", "no-space", "one-space-removed", "trailing-space", "multi-line", "crlf", "cr", "empty-first-line",
        "event-type", "last-event-type-wins", "comment", "other-fields", "field-names-case-sensitive",
        "colons-in-value", "utf8", "invalid-utf8", "bare-data-field", "empty-event-type", "bare-event-field"])
def test_event_fields(raw: bytes, kind: str, data: str) -> None:
    event = Event.parse(raw)
    assert (event.type, event.data, event.raw) == (kind, data, raw)


def test_a_byte_order_mark_at_the_start_of_the_stream_is_not_part_of_the_first_field() -> None:
    """WHATWG: one leading U+FEFF is ignored; a client reads the first event's data, and so must the enforcer."""
    out, events = run([b"\xef\xbb\xbfdata: first\n\ndata: second\n\n"])
    assert [(e.type, e.data) for e in events] == [("message", "first"), ("message", "second")]


@pytest.mark.parametrize(("raw", "replaced"), [
    (b"data: a\n\n", b"data: x\n\n"),
    (b": comment\nid: 7\nevent: message\nretry: 10\ndata: a\ndata: b\n\n",
     b": comment\nid: 7\nevent: message\nretry: 10\ndata: x\n\n"),
    (b": comment\r\nid: 7\r\nevent: message\r\nretry: 10\r\ndata: a\r\ndata: b\r\n\r\n",
     b": comment\nid: 7\nevent: message\nretry: 10\ndata: x\n\n"),
    (b": comment\rid: 7\rdata: a\revent: e\r\r", b": comment\nid: 7\nevent: e\ndata: x\n\n"),
    (b"data:a\ndata\nid: 1\n\n", b"id: 1\ndata: x\n\n"),
    (b"id: 1\n\n", b"id: 1\ndata: x\n\n"),
    (b": only a comment\n\n", b": only a comment\ndata: x\n\n"),
    (b"Data: kept\ndata: a\n\n", b"Data: kept\ndata: x\n\n"),
], ids=["data-only", "fields-kept-in-order", "crlf-becomes-lf", "cr-becomes-lf", "every-data-line-replaced",
        "no-data-before", "comment-only", "other-case-is-another-field"])
def test_with_data_keeps_comments_and_other_fields(raw: bytes, replaced: bytes) -> None:
    out = Event.parse(raw).with_data("x")
    assert out == replaced
    again = Event.parse(out)
    assert (again.type, again.data) == (Event.parse(raw).type, "x")


def test_with_data_encodes_utf8() -> None:
    assert Event.parse(b"data: a\n\n").with_data('{"text":"ça"}') == 'data: {"text":"ça"}\n\n'.encode()


# --- limits ---------------------------------------------------------------------------------------------


def test_an_oversize_pending_event_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 32)

    async def go() -> None:
        rewriter = EventStreamRewriter(Recorder())
        assert await rewriter.feed(b"data: " + b"x" * 20) == b""
        assert await rewriter.feed(b"x" * 6) == b""  # 32 bytes waiting: at the limit
        with pytest.raises(InvalidUpstreamResponse, match="too large"):
            await rewriter.feed(b"x")

    asyncio.run(go())


def test_the_limit_is_on_what_waits_not_on_whole_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 32)
    big = b"data: " + b"y" * 100 + b"\n\n"
    out, events = run([big, b"data: short"])
    assert out == big and [len(e.data) for e in events] == [100]

    async def go() -> None:
        rewriter = EventStreamRewriter(Recorder())
        with pytest.raises(InvalidUpstreamResponse):
            await rewriter.feed(big + b"data: " + b"z" * 30)  # a complete event, then 36 bytes waiting

    asyncio.run(go())


def test_default_event_limit() -> None:
    assert sse.MAX_EVENT_BYTES == 16 * 1024 * 1024
