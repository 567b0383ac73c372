"""Glob matchers for rule conditions, compiled once when a policy is loaded.

Only ``*`` is special and it matches any run of characters, ``/`` included, so
``/mcp/*`` covers ``/mcp/a/b`` and ``spiffe://corp/agents/*`` covers every agent path.
Everything else is literal: ``?`` and ``[`` carry no meaning, so client ids and URLs
never need escaping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class GlobSet:
    """Matches when any of its patterns matches the whole value."""

    patterns: tuple[str, ...]
    _regex: re.Pattern[str]

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> GlobSet:
        patterns = tuple(patterns)
        alternatives = "|".join(".*".join(re.escape(part) for part in p.split("*")) for p in patterns)
        # No patterns match nothing (``(?:)`` alone would match the empty string).
        return cls(patterns, re.compile(f"(?:{alternatives})\\Z" if patterns else "(?!)", re.DOTALL))

    def matches(self, value: str) -> bool:
        return self._regex.match(value) is not None

    def __str__(self) -> str:
        return ", ".join(self.patterns)
