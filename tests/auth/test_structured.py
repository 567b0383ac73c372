"""The RFC 8941 Structured Field parser and serializer (``enforcer.auth.structured``).

- valid Dictionaries, Lists and Items parse and re-serialize to the canonical form (SF-06 ... SF-09,
  MS-19, MS-20), with every kind of bare item and its limits (SF-03 ... SF-05);
- a table of malformed fields, each of which must be refused as a whole (SF-01 ... SF-07);
- a differential test against the reference parser ``http_sf`` over a corpus of hand-written inputs and
  simple mutations of valid ones: both accept the same inputs and serialize them the same way, apart from
  the documented choices of this parser (canonical base64 only, RFC 8941 without RFC 9651 Dates and
  Display Strings, and ``unique=True`` refusing duplicates), which are asserted on their own.
"""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal
from typing import Any

import http_sf
import pytest

from enforcer.auth import structured
from enforcer.auth.structured import InnerList, Item, StructuredFieldError, Token

PARSERS = {"dictionary": structured.parse_dictionary, "list": structured.parse_list, "item": structured.parse_item}


def reserialize(kind: str, text: str) -> str:
    """Parse ``text`` as ``kind`` and serialize it again (raises ``StructuredFieldError``)."""
    parsed = PARSERS[kind](text)
    if kind == "dictionary":
        return structured.serialize_dictionary(parsed)
    if kind == "list":
        return structured.serialize_list(parsed)
    return structured.serialize_member(parsed)


# -- round trips to the canonical form -------------------------------------------------------

ROUND_TRIPS = [
    # dictionaries (RFC 9421 2.1.1 example, bare keys, parameters, whitespace)
    ("dictionary", "a=1,    b=2;x=1;y=2,   c=(a   b   c)", "a=1, b=2;x=1;y=2, c=(a b c)"),
    ("dictionary", "a=1, b=2;x=1;y=2, c=(a b c), d", "a=1, b=2;x=1;y=2, c=(a b c), d"),
    ("dictionary", "a=?1, b=?0", "a, b=?0"),
    ("dictionary", "a;x=1;y, b", "a;x=1;y, b"),
    ("dictionary", "a=1,b=2", "a=1, b=2"),
    ("dictionary", "a=1\t,\tb=2", "a=1, b=2"),
    ("dictionary", "   a=1   ", "a=1"),
    ("dictionary", "a=1; x=2;  y", "a=1;x=2;y"),
    ("dictionary", "a=(), b=();p=1", "a=(), b=();p=1"),
    ("dictionary", 'a=(  "x";p   1.5  );q=?0', 'a=("x";p 1.5);q=?0'),
    ("dictionary", "*k-_.9=tok", "*k-_.9=tok"),
    ("dictionary", "a=1, b=2, a=3", "a=3, b=2"),
    ("dictionary", "a;x=1;x=2", "a;x=2"),
    ("dictionary", "", ""),
    # lists
    ("list", "a,b,   c", "a, b, c"),
    ("list", '("foo" "bar"), ("baz"), ("bat" "one"), ()', '("foo" "bar"), ("baz"), ("bat" "one"), ()'),
    ("list", "(1 2);x=?1, 3;y=?0", "(1 2);x, 3;y=?0"),
    ("list", "?1, ?0, :AQID:", "?1, ?0, :AQID:"),
    ("list", "", ""),
    # items: integers
    ("item", "42", "42"),
    ("item", "-42", "-42"),
    ("item", "0042", "42"),
    ("item", "-0", "0"),
    ("item", "999999999999999", "999999999999999"),
    ("item", "-999999999999999", "-999999999999999"),
    # decimals
    ("item", "1.5", "1.5"),
    ("item", "1.50", "1.5"),
    ("item", "1.000", "1.0"),
    ("item", "-0.125", "-0.125"),
    ("item", "123456789012.123", "123456789012.123"),
    ("item", "-999999999999.999", "-999999999999.999"),
    # strings
    ("item", '"hello world"', '"hello world"'),
    ("item", '""', '""'),
    ("item", r'"a\"b\\c"', r'"a\"b\\c"'),
    ("item", '" ~!#$%&()*+,-./:;<=>?@[]^_`{|}"', '" ~!#$%&()*+,-./:;<=>?@[]^_`{|}"'),
    # tokens
    ("item", "foo", "foo"),
    ("item", "*foo", "*foo"),
    ("item", "text/html:charset", "text/html:charset"),
    ("item", "https://example.com/a", "https://example.com/a"),
    ("item", "A!#$%&'*+-.^_`|~9", "A!#$%&'*+-.^_`|~9"),
    # byte sequences and booleans
    ("item", ":aGVsbG8=:", ":aGVsbG8=:"),
    ("item", "::", "::"),
    ("item", ":AAEC/+8=:", ":AAEC/+8=:"),
    ("item", "?1", "?1"),
    ("item", "?0", "?0"),
    # parameters
    ("item", 'x;a=1;b="s";c=?0;d', 'x;a=1;b="s";c=?0;d'),
    ("item", "1;a=?1", "1;a"),
    ("item", '"@query-param";name="Pet"', '"@query-param";name="Pet"'),
]


@pytest.mark.parametrize(("kind", "text", "canonical"),
                         [pytest.param(k, t, c, id=f"{k}:{t}") for k, t, c in ROUND_TRIPS])
def test_SF_08_parses_and_serializes_canonically(kind, text, canonical):
    assert reserialize(kind, text) == canonical
    assert reserialize(kind, canonical) == canonical  # the canonical form is a fixed point


@pytest.mark.parametrize(("text", "expected", "kind"), [
    pytest.param("42", 42, int, id="integer"),
    pytest.param("-7", -7, int, id="negative-integer"),
    pytest.param("1.25", Decimal("1.25"), Decimal, id="decimal"),
    pytest.param('"a\\"b"', 'a"b', str, id="string"),
    pytest.param(":aGVsbG8=:", b"hello", bytes, id="bytes"),
    pytest.param("?1", True, bool, id="true"),
    pytest.param("?0", False, bool, id="false"),
])
def test_SF_03_SF_04_bare_item_values(text, expected, kind):
    value = structured.parse_item(text).value
    assert value == expected
    assert type(value) is kind


def test_SF_03_token_is_kept_apart_from_string():
    token, string = structured.parse_item("foo").value, structured.parse_item('"foo"').value
    assert isinstance(token, Token)
    assert not isinstance(string, Token)
    assert structured.serialize_bare_item(token) == "foo"
    assert structured.serialize_bare_item(string) == '"foo"'


def test_SF_06_bare_key_is_true_and_serializes_per_context():
    dictionary = structured.parse_dictionary("a=1, d, e;x")
    assert dictionary["d"] == Item(True, {})
    assert dictionary["e"] == Item(True, {"x": True})
    assert structured.serialize_member(dictionary["d"]) == "?1"  # RFC 9421 ;key="d" gives ?1
    assert structured.serialize_member(dictionary["e"]) == "?1;x"
    assert structured.serialize_dictionary(dictionary) == "a=1, d, e;x"


def test_SF_07_inner_list_structure():
    member = structured.parse_dictionary('sig=("@method" "@path";req);created=1;keyid="k"')["sig"]
    assert member == InnerList((Item("@method"), Item("@path", {"req": True})), {"created": 1, "keyid": "k"})


def test_SF_09_duplicate_parameter_keeps_first_position_last_value():
    item = structured.parse_item("x;created=1;keyid=a;created=2")
    assert list(item.params.items()) == [("created", 2), ("keyid", Token("a"))]


@pytest.mark.parametrize(("value", "serialized"), [
    pytest.param(Decimal("1.2345"), "1.234", id="round-half-even-down"),
    pytest.param(Decimal("1.0005"), "1.0", id="round-half-even-to-zero"),
    pytest.param(Decimal("2"), "2.0", id="whole"),
    pytest.param(Decimal("100"), "100.0", id="no-exponent"),
    pytest.param(b"", "::", id="empty-bytes"),
    pytest.param('q"\\', '"q\\"\\\\"', id="string-escapes"),
    pytest.param(Token("t/x"), "t/x", id="token"),
    pytest.param(0, "0", id="zero"),
])
def test_SF_08_serialize_bare_item(value, serialized):
    assert structured.serialize_bare_item(value) == serialized


def test_SF_04_negative_zero_decimal_serializes_as_zero():
    """RFC 8941 4.1.5 writes '-' only for a decimal less than zero; -0.0 is not."""
    assert structured.serialize_member(structured.parse_item("-0.0")) == "0.0"
    assert structured.serialize_bare_item(Decimal("-0.000")) == "0.0"


# -- malformed fields ------------------------------------------------------------------------

MALFORMED = [
    ("dictionary", "A=1", "uppercase-key"),
    ("dictionary", "a=1;X=2", "uppercase-parameter"),
    ("dictionary", "1a=1", "key-starts-with-digit"),
    ("dictionary", "a=1,", "trailing-comma"),
    ("dictionary", "a=1, ", "trailing-comma-space"),
    ("dictionary", ",a=1", "leading-comma"),
    ("dictionary", "a=1 b=2", "missing-comma"),
    ("dictionary", "a=", "empty-value"),
    ("dictionary", "a= 1", "space-after-equals"),
    ("dictionary", "a =1", "space-before-equals"),
    ("dictionary", "a=1;", "empty-parameter-key"),
    ("dictionary", "\ta=1", "leading-tab"),
    ("list", "1, 2,", "list-trailing-comma"),
    ("list", "(a\tb)", "tab-inside-inner-list"),
    ("list", '("a""b")', "no-space-between-inner-items"),
    ("list", "(a b", "unterminated-inner-list"),
    ("list", "(a b))", "extra-paren"),
    ("list", "a,,b", "empty-member"),
    ("item", r'"a\nb"', "bad-escape"),
    ("item", '"a\\', "escape-at-end"),
    ("item", '"a\x01b"', "control-char-in-string"),
    ("item", '"a\x7fb"', "del-in-string"),
    ("item", '"\u00e9"', "non-ascii-in-string"),
    ("item", "caf\u00e9", "non-ascii-token"),
    ("item", '"abc', "unterminated-string"),
    ("item", "'abc'", "single-quotes"),
    ("item", "?2", "boolean-two"),
    ("item", "?", "boolean-empty"),
    ("item", "?true", "boolean-word"),
    ("item", "1234567890123456", "integer-16-digits"),
    ("item", "-1234567890123456", "negative-integer-16-digits"),
    ("item", "1234567890123.1", "decimal-13-integer-digits"),
    ("item", "1.1234", "decimal-4-fraction-digits"),
    ("item", "1.", "decimal-ends-in-dot"),
    ("item", ".5", "decimal-starts-with-dot"),
    ("item", "-", "lone-minus"),
    ("item", "--1", "double-minus"),
    ("item", "1a", "number-then-letters"),
    ("item", "1 2", "two-items"),
    ("item", "", "empty-item"),
    ("item", ":aGVsbG8:", "bytes-missing-padding"),
    ("item", ":aGVsbG8==:", "bytes-excess-padding"),
    ("item", ":aGl=:", "bytes-nonzero-trailing-bits"),
    ("item", ":ab$c:", "bytes-bad-character"),
    ("item", ":aGVsbG8=", "bytes-unterminated"),
    ("item", "@1618884473", "rfc9651-date"),
    ("item", '%"x"', "rfc9651-display-string"),
    ("item", "(a b)", "inner-list-is-not-an-item"),
    ("item", "x;a=(1)", "inner-list-as-parameter"),
]


@pytest.mark.parametrize(("kind", "text"), [pytest.param(k, t, id=i) for k, t, i in MALFORMED])
def test_SF_01_to_SF_07_malformed_fields_are_refused(kind, text):
    with pytest.raises(StructuredFieldError):
        PARSERS[kind](text)


@pytest.mark.parametrize("text", [
    pytest.param("a=1, a=2", id="repeated-key"),
    pytest.param("a=1, b, a", id="repeated-bare-key"),
    pytest.param("a=1;x=1;x=2", id="repeated-parameter"),
    pytest.param("a=(b;x c);y=1;y", id="repeated-inner-list-parameter"),
    pytest.param("a=(b;x;x)", id="repeated-parameter-in-inner-item"),
])
def test_SF_02_MS_29_unique_refuses_duplicates(text):
    structured.parse_dictionary(text)  # fine without unique (last one wins)
    with pytest.raises(StructuredFieldError):
        structured.parse_dictionary(text, unique=True)


def test_SF_02_unique_accepts_distinct_keys():
    parsed = structured.parse_dictionary('a=1, b;x;y, c=(d;x e;x);x="v"', unique=True)
    assert list(parsed) == ["a", "b", "c"]


# -- differential test against http_sf ------------------------------------------------------

HAND_WRITTEN = [
    ("dictionary", "a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
    ("dictionary", "a=1, b=2;x=1;y=2, c=(a b c), d"),
    ("dictionary", 'sig1=("@method" "@authority" "@path");created=1618884473;keyid="test-key-rsa-pss"'),
    ("dictionary", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
    ("dictionary", "a=?1, b=?0, c"),
    ("dictionary", "a;x=?1;y=?0"),
    ("dictionary", "a=1, b=2, a=3"),
    ("dictionary", "a=(1 2 3);q=4, b=()"),
    ("dictionary", "a=1\t,\tb=2"),
    ("dictionary", "a=1 ,b=2"),
    ("dictionary", "a=1;  x=2"),
    ("dictionary", ""),
    ("dictionary", "   "),
    ("dictionary", "A=1"),
    ("dictionary", "a=1,"),
    ("dictionary", "a=1 b=2"),
    ("dictionary", "a=(1 2"),
    ("dictionary", "a=1;"),
    ("dictionary", "a=@1"),
    ("dictionary", "a=1.2345"),
    ("list", "1, 2.5, \"three\", four, :Zml2ZQ==:, ?1"),
    ("list", "(1 2);a, (\"x\";b=?0)"),
    ("list", "(  a   b  )"),
    ("list", "(a\tb)"),
    ("list", '("a""b")'),
    ("list", "a,,b"),
    ("list", "a, b, "),
    ("list", "-0.0, 0.0, -1.0"),
    ("list", "a;x=1;x=2"),
    ("list", "()"),
    ("item", "999999999999999"),
    ("item", "1000000000000000"),
    ("item", "-999999999999999"),
    ("item", "123456789012.123"),
    ("item", "1234567890123.1"),
    ("item", "1.1234"),
    ("item", "1."),
    ("item", "-0.0"),
    ("item", "0.500"),
    ("item", "007"),
    ("item", r'"a\"b\\c"'),
    ("item", r'"a\nb"'),
    ("item", '"a\x00b"'),
    ("item", '"tab\there"'),
    ("item", "foo/bar:baz"),
    ("item", "*tok"),
    ("item", "_tok"),
    ("item", "tok=en"),
    ("item", ":AQIDBA==:"),
    ("item", ":AQIDBA:"),
    ("item", ":AQIDBA===:"),
    ("item", ":=:"),
    ("item", "?1;a;b=?0"),
    ("item", "?2"),
    ("item", "@1618884473"),
    ("item", '%"caf%c3%a9"'),
    ("item", "x;A=1"),
    ("item", "x; a=1"),
    ("item", "x ;a=1"),
    ("item", "   x   "),
]

#: valid seeds for mutation, as (kind, text)
SEEDS = [
    ("dictionary", 'sig=("@method" "content-digest";req);created=1618884473;keyid="k";tag="t"'),
    ("dictionary", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
                   ", sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
    ("dictionary", "a=1, b=2;x=1;y=2, c=(a b c), d"),
    ("list", '("foo" "bar"), ("baz"), ("bat" "one"), ()'),
    ("list", "1, 2.5, tok, ?0"),
    ("item", '"@query-param";name="Pet"'),
    ("item", "12.345;q=1"),
]


def mutations(text: str) -> list[str]:
    """Small edits of a valid field: each may or may not stay valid."""
    half = len(text) // 2
    return [
        text[:-1],                      # lose the last character
        text[:half],                    # cut in the middle
        text + ",",                     # trailing comma
        "," + text,                     # leading comma
        text + " ",                     # trailing space
        "\t" + text,                    # leading tab
        text.replace(" ", "  "),        # doubled spaces
        text.replace(" ", "\t"),        # tabs for spaces
        text.replace(";", "; "),        # space after ';'
        text.replace(";", " ;"),        # space before ';'
        text.replace("=", " ="),        # space before '='
        text.upper(),                   # upper case
        text.replace('"', "'"),         # single quotes
        text + ";" + text.split("=")[0].split(";")[0].strip('"( ').lower()[:3],  # extra parameter
    ]


def corpus() -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    inputs: list[tuple[str, str]] = []
    for kind, text in HAND_WRITTEN + [(k, m) for k, t in SEEDS for m in [t, *mutations(t)]]:
        if (kind, text) not in seen:
            seen.add((kind, text))
            inputs.append((kind, text))
    return inputs


CORPUS = corpus()


def reference(kind: str, text: str) -> Any:
    """http_sf's parse of ``text``, or None when it refuses it."""
    try:
        return http_sf.parse(text.encode("ascii", "surrogateescape"), tltype=kind)
    except (http_sf.StructuredFieldError, ValueError):
        return None


def reference_serialization(structure: Any) -> str:
    if structure == {} or structure == []:
        return ""  # http_sf refuses to serialize an empty field; ours writes the empty string
    return http_sf.ser(structure)


def ours(kind: str, text: str) -> str | None:
    try:
        return reserialize(kind, text)
    except StructuredFieldError:
        return None


def bare_values(structure: Any) -> list[Any]:
    """Every bare item and parameter value in an http_sf structure."""
    if isinstance(structure, dict):
        return [v for member in structure.values() for v in bare_values(member)]
    if isinstance(structure, list):
        return [v for member in structure for v in bare_values(member)]
    if isinstance(structure, tuple):
        head, params = structure
        return bare_values(head) + list(params.values())
    return [structure]


def documented_difference(structure: Any, text: str) -> str | None:
    """Why http_sf may accept ``text`` where this parser must refuse it, if any."""
    for value in bare_values(structure):
        if isinstance(value, datetime | http_sf.DisplayString):
            return "RFC 9651 type"
        if isinstance(value, bytes) and f":{base64.b64encode(value).decode()}:" not in text:
            return "non-canonical base64"
    return None


def test_differential_corpus_is_large_enough():
    assert len(CORPUS) >= 60
    accepted = sum(reference(k, t) is not None for k, t in CORPUS)
    assert 20 <= accepted <= len(CORPUS) - 20  # both valid and invalid inputs are exercised


@pytest.mark.parametrize(("kind", "text"), [pytest.param(k, t, id=f"{k}:{t}") for k, t in CORPUS])
def test_SF_01_differential_against_http_sf(kind, text):
    expected = reference(kind, text)
    actual = ours(kind, text)
    if expected is not None and documented_difference(expected, text):
        assert actual is None, "this parser is stricter here by design and must refuse the input"
        return
    assert (actual is None) == (expected is None), f"ours={actual!r} http_sf={expected!r}"
    if actual is not None:
        assert actual == reference_serialization(expected)


@pytest.mark.parametrize(("kind", "text", "why"), [
    pytest.param("item", ":aGVsbG8:", "non-canonical base64", id="missing-padding"),
    pytest.param("item", ":aGl=:", "non-canonical base64", id="nonzero-trailing-bits"),
    pytest.param("dictionary", "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg==:", "non-canonical base64",
                 id="rfc9530-excess-padding"),
    pytest.param("item", "@1618884473", "RFC 9651 type", id="date"),
    pytest.param("item", '%"x"', "RFC 9651 type", id="display-string"),
])
def test_SF_03_SF_05_documented_differences_from_http_sf(kind, text, why):
    expected = reference(kind, text)
    assert expected is not None
    assert documented_difference(expected, text) == why
    assert ours(kind, text) is None


@pytest.mark.parametrize("text", ["a=1, a=2", "a=1;x=1;x=2, b"])
def test_SF_09_duplicates_last_wins_like_http_sf_unless_unique(text):
    assert ours("dictionary", text) == reference_serialization(reference("dictionary", text))
    with pytest.raises(StructuredFieldError):
        structured.parse_dictionary(text, unique=True)
