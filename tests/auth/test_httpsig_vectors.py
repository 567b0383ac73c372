"""Published test vectors for request signatures and body digests, run against the real modules.

- RFC 9421 signature examples (``tests/data/vectors/rfc9421/rfc9421-*.json``): the signature base we
  build equals the one printed in the RFC byte for byte, verification gives the expected answer
  (including the negative cases), and tampering with the signature, a covered field or the signature
  parameters makes a valid signature fail (MS-06, MS-07, MS-16, MS-18, MS-34).
- RFC 9421 section 2 component values (``rfc9421/components.json``): each identifier yields the
  printed ``"<id>": <value>`` line, and the negative cases are refused (MS-17 ... MS-23).
- RFC 9530 digests (``rfc9530/*.json``): ``check_content_digest`` accepts exactly the valid cases
  (DG-01 ... DG-10).

The vectors are copies of the shared RFC vectors kept under ``tests/data/vectors`` (see its README)
so the tests run on a fresh clone.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from enforcer.auth import structured
from enforcer.auth.digest import DigestError, check_content_digest, content_digest
from enforcer.auth.keys import SignatureKey, signature_key
from enforcer.auth.sigbase import (
    SignatureBaseError,
    SignedMessage,
    component_value,
    headers_from_pairs,
    normalize_authority,
    signature_base,
)
from enforcer.auth.structured import InnerList, Item

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"

#: RFC 9421 algorithm names -> the JOSE name put in the JWK ``alg`` to bind the key to it
RFC_TO_JOSE = {"ed25519": "EdDSA", "ecdsa-p256-sha256": "ES256", "ecdsa-p384-sha384": "ES384",
               "rsa-pss-sha512": "PS512", "rsa-v1_5-sha256": "RS256", "hmac-sha256": "HS256"}
ALL_ALGORITHMS = tuple(RFC_TO_JOSE)  # `allowed` takes RFC 9421 names


# -- loading ---------------------------------------------------------------------------------


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def signature_vectors() -> list[dict[str, Any]]:
    return [load(path) for path in sorted((VECTORS / "rfc9421").glob("rfc9421-*.json"))]


def component_cases() -> list[dict[str, Any]]:
    return load(VECTORS / "rfc9421" / "components.json")


def digest_vectors() -> list[dict[str, Any]]:
    return [load(path) for path in sorted((VECTORS / "rfc9530").glob("*.json"))]


SIGNATURES = signature_vectors()
VALID_SIGNATURES = [v for v in SIGNATURES if v["expect"]["valid"]]
COMPONENTS = component_cases()
DIGESTS = digest_vectors()


def by_name(vectors: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


# -- building messages, bases and keys -------------------------------------------------------


def message(spec: dict[str, Any], related: dict[str, Any] | None = None) -> SignedMessage:
    """A ``SignedMessage`` from a vector's message description (``related`` is the request of a response)."""
    url = spec.get("url", "https://example.com/")
    parts = urlsplit(url)
    return SignedMessage(
        method=spec.get("method", ""),
        scheme=parts.scheme,
        authority=normalize_authority(parts.scheme, parts.netloc),
        path=parts.path or "/",
        query=parts.query if "?" in url else None,
        headers=headers_from_pairs(spec["headers"]),
        status=spec.get("status"),
        request_target=spec.get("request_target"),
        request=message(related) if related else None,
    )


def covered(vector: dict[str, Any]) -> InnerList:
    member = structured.parse_dictionary(vector["signature_input"], unique=True)[vector["label"]]
    assert isinstance(member, InnerList)
    return member


def signature_bytes(vector: dict[str, Any]) -> bytes:
    member = structured.parse_dictionary(vector["signature"], unique=True)[vector["label"]]
    assert isinstance(member, Item) and isinstance(member.value, bytes)
    return member.value


def base_of(vector: dict[str, Any], *, inputs: InnerList | None = None) -> str:
    msg = message(vector["message"], vector.get("related_request"))
    return signature_base(inputs if inputs is not None else covered(vector), msg)


def key_of(vector: dict[str, Any]) -> SignatureKey:
    files = vector["key_files"]
    jwk = load(VECTORS / (files.get("public_jwk") or files["jwk"]))
    shared = jwk["kty"] == "oct"
    return signature_key(dict(jwk, alg=RFC_TO_JOSE[vector["alg"]]), ALL_ALGORITHMS, shared_secret=shared)


def verifies(vector: dict[str, Any], *, signature: bytes | None = None, inputs: InnerList | None = None) -> bool:
    try:
        base = base_of(vector, inputs=inputs)
    except SignatureBaseError:
        return False
    return key_of(vector).verify(signature if signature is not None else signature_bytes(vector), base.encode())


def covered_fields(vector: dict[str, Any]) -> list[Item]:
    return [c for c in covered(vector).items if isinstance(c.value, str) and not c.value.startswith("@")]


def with_changed_field(vector: dict[str, Any], component: Item) -> dict[str, Any]:
    """A copy of ``vector`` whose first field line named by ``component`` has one character more."""
    changed = copy.deepcopy(vector)
    target = changed["related_request"] if component.params.get("req") else changed["message"]
    for pair in target["headers"]:
        if pair[0].lower() == component.value:
            pair[1] = pair[1] + "x"
            return changed
    raise AssertionError(f"{component.value} is covered but not in the message")


def field_mutations() -> list[Any]:
    params = []
    for vector in VALID_SIGNATURES:
        for component in covered_fields(vector):
            ident = structured.serialize_member(component).replace('"', "")
            params.append(pytest.param(vector, component, id=f"{vector['name']}:{ident}"))
    return params


# -- RFC 9421 signature vectors --------------------------------------------------------------


def test_vector_set_is_complete():
    assert len(SIGNATURES) == 23
    assert len(COMPONENTS) == 39
    assert sum(not v["expect"]["valid"] for v in SIGNATURES) == 3
    assert len(DIGESTS) == 15


@pytest.mark.parametrize("vector", by_name([v for v in SIGNATURES if v["signature_base"] is not None]))
def test_MS_06_MS_16_signature_base_matches_rfc_text(vector):
    assert base_of(vector) == vector["signature_base"]


@pytest.mark.parametrize("vector", by_name(SIGNATURES))
def test_MS_07_verification_result_matches_vector(vector):
    assert verifies(vector) is vector["expect"]["valid"]


@pytest.mark.parametrize("vector", by_name(VALID_SIGNATURES))
def test_MS_07_one_flipped_signature_byte_fails(vector):
    signature = bytearray(signature_bytes(vector))
    signature[len(signature) // 2] ^= 0x01
    assert verifies(vector, signature=bytes(signature)) is False


@pytest.mark.parametrize("vector", by_name(VALID_SIGNATURES))
def test_MS_07_truncated_signature_fails(vector):
    assert verifies(vector, signature=signature_bytes(vector)[:-1]) is False


@pytest.mark.parametrize(("vector", "component"), field_mutations())
def test_MS_18_changed_covered_field_value_fails(vector, component):
    changed = with_changed_field(vector, component)
    assert base_of(changed) != base_of(vector)
    assert verifies(changed) is False


@pytest.mark.parametrize("vector", by_name(VALID_SIGNATURES))
def test_MS_06_changed_signature_parameters_fail(vector):
    inputs = covered(vector)
    params = dict(inputs.params)
    params["created"] = params.get("created", 1618884473) + 1
    assert verifies(vector, inputs=InnerList(inputs.items, params)) is False


@pytest.mark.parametrize("vector", by_name(VALID_SIGNATURES))
def test_MS_06_signature_params_line_is_the_canonical_input(vector):
    """The RFC's Signature-Input values are canonical, so the re-serialized member is the raw text."""
    prefix, _, member = base_of(vector).rsplit("\n", 1)[-1].partition(": ")
    assert prefix == '"@signature-params"'
    assert f"{vector['label']}={member}" in vector["signature_input"]


def test_MS_34_proxy_rewrite_breaks_authority_but_not_the_original():
    names = {v["name"]: v for v in SIGNATURES}
    before, after = names["rfc9421-4.3-client-sig1"], names["rfc9421-4.3-sig1-after-proxy-rewrite"]
    assert signature_bytes(before) == signature_bytes(after)
    assert verifies(before) is True
    assert verifies(after) is False


# -- RFC 9421 section 2 component values -----------------------------------------------------


def component_line(case: dict[str, Any]) -> str:
    component = structured.parse_item(case["component_id"])
    msg = message(case["message"], case.get("related_request"))
    return f"{structured.serialize_member(component)}: {component_value(component, msg)}"


@pytest.mark.parametrize("case", by_name([c for c in COMPONENTS if c["expect"]["valid"]]))
def test_MS_18_to_MS_23_component_line_matches_rfc(case):
    assert component_line(case) == case["expected_line"]


@pytest.mark.parametrize("case", by_name([c for c in COMPONENTS if not c["expect"]["valid"]]))
def test_MS_17_MS_21_negative_component_cases(case):
    try:
        line = component_line(case)
    except SignatureBaseError:
        return
    # only a ;bs case may build a line: it must differ from the combined-value line it mimics
    assert structured.parse_item(case["component_id"]).params.get("bs") is True
    assert line != case["expected_line"]


FIELD_LINES = SignedMessage(headers=headers_from_pairs([
    ("X-OWS-Header", "   Leading and trailing whitespace.   "),
    ("X-Tabs", "\tvalue\t"),
    ("Cache-Control", "max-age=60"),
    ("Cache-Control", "   must-revalidate"),
    ("X-Empty-Header", ""),
    ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)  "),
]))


@pytest.mark.parametrize(("identifier", "expected"), [
    pytest.param('"x-ows-header"', "Leading and trailing whitespace.", id="spaces-trimmed"),
    pytest.param('"x-tabs"', "value", id="tabs-trimmed"),
    pytest.param('"cache-control"', "max-age=60, must-revalidate", id="lines-joined"),
    pytest.param('"x-empty-header"', "", id="empty"),
    pytest.param('"example-dict";sf', "a=1, b=2;x=1;y=2, c=(a b c)", id="sf-after-trimming"),
    pytest.param('"example-dict";key="c"', "(a b c)", id="key-after-trimming"),
    pytest.param('"cache-control";bs', ":bWF4LWFnZT02MA==:, :bXVzdC1yZXZhbGlkYXRl:", id="bs-per-trimmed-line"),
])
def test_MS_18_MS_21_field_lines_are_trimmed_then_combined(identifier, expected):
    assert component_value(structured.parse_item(identifier), FIELD_LINES) == expected


@pytest.mark.parametrize("identifier", [
    pytest.param('"X-OWS-Header"', id="uppercase-name"),
    pytest.param('"cache-control";sf;bs', id="sf-with-bs"),
    pytest.param('"example-dict";key="zz"', id="missing-key"),
    pytest.param('"cache-control";key="max-age";bs', id="key-with-bs"),
    pytest.param('"x-ows-header";key="a"', id="key-on-non-dictionary"),
    pytest.param('"cache-control";unknown', id="unknown-parameter"),
    pytest.param('"cache-control";req', id="req-on-a-request"),
    pytest.param('"@signature-params"', id="signature-params-covered"),
    pytest.param('"@nonsense"', id="unknown-derived"),
    pytest.param('"@status"', id="status-on-a-request"),
    pytest.param('"@query-param"', id="query-param-without-name"),
    pytest.param('"@method";name="x"', id="parameter-on-derived"),
])
def test_MS_17_unresolvable_components_are_errors(identifier):
    with pytest.raises(SignatureBaseError):
        component_value(structured.parse_item(identifier), FIELD_LINES)


def test_MS_16_repeated_component_and_non_ascii_are_errors():
    msg = SignedMessage(method="GET", authority="example.com", headers=headers_from_pairs([("X-A", "caf\u00e9")]))
    with pytest.raises(SignatureBaseError):
        signature_base(InnerList((Item("@method"), Item("@method"))), msg)
    with pytest.raises(SignatureBaseError):
        signature_base(InnerList((Item("x-a"),)), msg)
    assert signature_base(InnerList((Item("@method"), Item("@authority"))), msg) == (
        '"@method": GET\n"@authority": example.com\n"@signature-params": ("@method" "@authority")')


@pytest.mark.parametrize(("query", "name", "expected"), [
    pytest.param("a=~x", "a", "%7Ex", id="tilde-in-value"),
    pytest.param("a=%7Ex", "a", "%7Ex", id="encoded-tilde-in-value"),
    pytest.param("%7E=1", "%7E", "1", id="tilde-in-name"),
    pytest.param("a=b+c", "a", "b%20c", id="plus-is-space"),
    pytest.param("a=*-._", "a", "*-._", id="form-safe-characters"),
    pytest.param("a=%2F%3F", "a", "%2F%3F", id="reserved-stay-encoded"),
])
def test_MS_23_query_param_uses_form_urlencoded_percent_encode_set(query, name, expected):
    """The application/x-www-form-urlencoded percent-encode set keeps only ALPHA, DIGIT and ``*-._``."""
    component = Item("@query-param", {"name": name})
    msg = SignedMessage(method="GET", authority="example.com", path="/", query=query)
    assert component_value(component, msg) == expected


# -- RFC 9530 digests ------------------------------------------------------------------------


def digest_passes(value: str, body: bytes) -> bool:
    try:
        check_content_digest(value, body)
    except DigestError:
        return False
    return True


@pytest.mark.parametrize("vector", by_name(DIGESTS))
def test_DG_01_to_DG_10_digest_vectors(vector):
    # Content-Digest and Repr-Digest share the dictionary format; for Repr-Digest the vector's
    # "content" is the full representation, which is what that field is computed over.
    assert vector["field"].lower() in ("content-digest", "repr-digest")
    assert digest_passes(vector["value"], vector["content"].encode("utf-8")) is vector["expect"]["valid"]


HELLO = b'{"hello": "world"}'
SHA256 = ":X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
SHA512 = ":WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
OTHER_SHA512 = content_digest(b"something else", "sha-512").split("=", 1)[1]


@pytest.mark.parametrize(("value", "mismatch"), [
    pytest.param("md5=:Sd/dVLAcvNLSq16eXua5uQ==:", False, id="md5-only"),
    pytest.param("sha=:" + "A" * 28 + ":", False, id="sha1-only"),
    pytest.param("md5=:Sd/dVLAcvNLSq16eXua5uQ==:, sha=:" + "A" * 28 + ":", False, id="md5-and-sha1"),
    pytest.param("unixsum=30637", False, id="unixsum-only"),
    pytest.param("", False, id="empty-field"),
])
def test_DG_03_no_active_algorithm_fails(value, mismatch):
    with pytest.raises(DigestError) as caught:
        check_content_digest(value, HELLO)
    assert caught.value.mismatch is mismatch


def test_DG_03_deprecated_member_is_ignored_beside_a_matching_sha256():
    check_content_digest(f"md5=:AAAAAAAAAAAAAAAAAAAAAA==:, sha-256={SHA256}", HELLO)


def test_DG_04_every_active_member_must_match():
    check_content_digest(f"sha-256={SHA256}, sha-512={SHA512}", HELLO)
    for value in (f"sha-256={SHA256}, sha-512={OTHER_SHA512}", f"sha-512={OTHER_SHA512}, sha-256={SHA256}"):
        with pytest.raises(DigestError) as caught:
            check_content_digest(value, HELLO)
        assert caught.value.mismatch is True


def test_DG_04_changed_body_is_a_mismatch():
    with pytest.raises(DigestError) as caught:
        check_content_digest(f"sha-256={SHA256}", HELLO + b" ")
    assert caught.value.mismatch is True


def test_DG_08_non_canonical_padding_is_malformed_not_a_mismatch():
    body = HELLO + b"\n"
    check_content_digest("sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:", body)
    with pytest.raises(DigestError) as caught:
        check_content_digest("sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg==:", body)
    assert caught.value.mismatch is False


@pytest.mark.parametrize("value", [
    pytest.param(f'sha-256="{SHA256[1:-1]}"', id="string-not-bytes"),
    pytest.param(f"sha-256=({SHA256})", id="inner-list"),
    pytest.param(f"sha-256={SHA256}, sha-256={SHA256}", id="duplicate-key"),
    pytest.param(f"sha-256={SHA256},", id="trailing-comma"),
])
def test_DG_02_malformed_field_is_not_a_mismatch(value):
    with pytest.raises(DigestError) as caught:
        check_content_digest(value, HELLO)
    assert caught.value.mismatch is False


@pytest.mark.parametrize("algorithm", ["sha-256", "sha-512"])
def test_DG_02_content_digest_round_trips(algorithm):
    value = content_digest(HELLO, algorithm)
    expected = {"sha-256": SHA256, "sha-512": SHA512}[algorithm]
    assert value == f"{algorithm}={expected}"
    check_content_digest(value, HELLO)
