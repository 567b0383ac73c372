"""JSON parsing for attacker-controlled input: strict UTF-8, no duplicate members, capped.

Python's ``json`` keeps the last of two equal member names, so ``{"sub":"a","sub":"b"}``
would mean different things to different parsers (RFC 8725 section 2.6). It also
accepts ``NaN`` and ``Infinity``; none of these are JSON, and all are refused here.
"""

from __future__ import annotations

import base64
import json
from typing import Any


class StrictJSONError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise StrictJSONError(f"duplicate member {key[:64]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def _check_strings(value: Any) -> None:
    """Refuse lone UTF-16 surrogates (``"\\ud800"``): not Unicode text (RFC 8259 section 8.2),
    and any later attempt to encode them (a header, a log line) would fail."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def loads(data: bytes, *, max_bytes: int, max_depth: int = 32) -> Any:
    """Parse ``data`` or raise ``StrictJSONError`` (never anything else)."""
    if len(data) > max_bytes:
        raise StrictJSONError(f"larger than {max_bytes} bytes")
    if _nesting(data, max_depth) > max_depth:
        raise StrictJSONError(f"nested deeper than {max_depth}")
    try:
        text = data.decode("utf-8", errors="strict")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        if "\\u" in text:  # only escapes can produce a lone surrogate
            _check_strings(value)
        return value
    except StrictJSONError:
        raise
    except UnicodeEncodeError as exc:
        raise StrictJSONError("contains a lone UTF-16 surrogate") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StrictJSONError("not valid JSON") from exc


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting(data: bytes, limit: int) -> int:
    """A bracket depth past ``limit`` if the data reaches one, else 0 (brackets inside strings
    count too: conservative).

    Only the brackets are walked in Python (``translate`` drops the rest in C), and the walk
    stops as soon as ``limit`` is passed: a 1 MiB request body costs little here."""
    depth = 0
    for byte in data.translate(None, _NOT_BRACKETS):
        if byte in (0x7B, 0x5B):
            depth += 1
            if depth > limit:
                return depth
        else:
            depth -= 1
    return 0


def jws_segment(segment: str, max_bytes: int) -> dict[str, Any]:
    """The JSON object in one base64url segment of a compact JWS (a header or a payload).
    The encoding must be canonical (a second spelling of the same bytes would let two parties
    disagree on what was signed). ``StrictJSONError`` says what is wrong, as a predicate
    ("is not canonical base64url") that callers put after the segment's name."""
    if len(segment) % 4 == 1:
        raise StrictJSONError("is not valid base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise StrictJSONError("is not canonical base64url")
    try:
        value = loads(raw, max_bytes=max_bytes)
    except StrictJSONError as exc:
        raise StrictJSONError(f"is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise StrictJSONError("is not a JSON object")
    return value
