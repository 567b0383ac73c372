"""Issuer signing keys: which JWKS entries are loaded (``parse_jwks``) and how ``KeyCache``
keeps them fresh (STANDARDS.md JB-01, JB-06, JA-05, JA-12, JA-19; DESIGN.md "Issuer key
sources"). Real keys throughout; key sources are a small in-memory ``KeySource`` (for
counting fetches and failing on demand) and a real JWKS endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.errors import SecurityWarning
from joserfc.jwk import RSAKey

from enforcer.auth.jwks import MAX_KEYS, KeyCache, parse_jwks
from enforcer.auth.keysources import DiscoveryKeySource, FileKeySource, KeySourceError, UriKeySource, max_age
from enforcer.auth.tokens import TokenVerifier
from enforcer.clock import FrozenClock
from enforcer.errors import InvalidToken
from enforcer.policy.model import Issuer
from tests.support import ISSUER, RESOURCE, JWKSEndpoint, SigningKey, b64url, claims, jwks, serving, sign

NOW = 1_760_000_000
ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")

ES = SigningKey.generate("ES256", kid="k1")
ES_OTHER = SigningKey.generate("ES256", kid="k1")  # same kid, different key material
ES_NEW = SigningKey.generate("ES256", kid="k2")
ES384 = SigningKey.generate("ES384", kid="p384")
RS = SigningKey.generate("RS256", kid="rsa")
ED = SigningKey.generate("EdDSA", kid="ed")


def weak_rsa_jwk() -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (JA-12 on purpose)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        jwk = dict(RSAKey.import_key(private).as_dict(private=False))
    return {**jwk, "kid": "weak", "alg": "RS256", "use": "sig"}


def with_(key: SigningKey, **members: Any) -> dict[str, Any]:
    """The public JWK of ``key`` with members changed (``None`` removes one)."""
    jwk = {**key.public_jwk(), **members}
    return {k: v for k, v in jwk.items() if v is not None}


def off_curve(key: SigningKey) -> dict[str, Any]:
    x = bytearray(json.loads(json.dumps(key.public_jwk()))["x"].encode())
    x[5] = ord("A") if x[5] != ord("A") else ord("B")
    return with_(key, x=x.decode())


def doc(*entries: Any) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


# -- parse_jwks: which keys load, bound to which algorithm --------------------------------------

LOAD_CASES = [
    # (jwks entries, issuer algorithms, {kid: bound alg} expected, substring of the skip note or "")
    pytest.param([ES.public_jwk()], ALGORITHMS, {"k1": "ES256"}, "", id="JB-01-control-es256-loaded"),
    pytest.param([RS.public_jwk()], ALGORITHMS, {"rsa": "RS256"}, "", id="JB-01-control-rs256-loaded"),
    pytest.param([weak_rsa_jwk()], ALGORITHMS, {}, "shorter than 2048", id="JA-12-rsa-1024-skipped"),
    pytest.param([off_curve(ES)], ALGORITHMS, {}, "not on the curve", id="JA-12-ec-point-not-on-curve-skipped"),
    pytest.param([with_(RS, n=None)], ALGORITHMS, {}, "malformed", id="JA-12-rsa-without-modulus-skipped"),
    pytest.param([{**ES.key.as_dict(private=True), "kid": "k1", "alg": "ES256"}], ALGORITHMS, {}, "private",
                 id="JB-04-ec-private-key-skipped"),
    pytest.param([{**RS.key.as_dict(private=True), "kid": "rsa", "alg": "RS256"}], ALGORITHMS, {}, "private",
                 id="JB-04-rsa-private-key-skipped"),
    pytest.param([with_(ES, d=b64url(b"\x01" * 32))], ALGORITHMS, {}, "private", id="JB-04-stray-d-member-skipped"),
    pytest.param([{"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64url(b"s" * 32)}], ALGORITHMS + ("HS256",),
                 {}, "symmetric", id="JA-12-oct-key-skipped-even-if-hs256-listed"),
    pytest.param([{"kty": "oct", "kid": "hmac", "alg": "HS256"}], ALGORITHMS, {}, "unsupported kty",
                 id="JA-12-oct-key-without-k-skipped"),
    pytest.param([with_(ES, use="enc")], ALGORITHMS, {}, "use is not 'sig'", id="JB-09-use-enc-skipped"),
    pytest.param([with_(ES, use=None)], ALGORITHMS, {"k1": "ES256"}, "", id="JB-09-use-absent-loaded"),
    pytest.param([with_(RS, alg="RS512")], ("RS256", "ES256"), {}, "not allowed",
                 id="JB-01-alg-not-in-allowlist-skipped"),
    pytest.param([with_(RS, alg="none")], ALGORITHMS, {}, "not allowed", id="JA-01-jwk-alg-none-skipped"),
    pytest.param([with_(RS, alg="HS256")], ALGORITHMS + ("HS256",), {}, "does not fit",
                 id="JA-02-rsa-jwk-alg-hs256-skipped"),
    pytest.param([with_(RS, alg="rs256")], ALGORITHMS, {}, "not allowed", id="JB-01-jwk-alg-compared-case-sensitively"),
    pytest.param([ES.public_jwk(with_alg=False)], ("RS256",), {}, "no allowed algorithm",
                 id="JB-01-ec-without-alg-and-no-fitting-algorithm-skipped"),
    pytest.param([with_(ES, alg="ES384")], ("ES256", "ES384"), {}, "does not fit",
                 id="JA-19-p256-key-alg-es384-skipped"),
    pytest.param([with_(ES384, alg="ES256")], ("ES256", "ES384"), {}, "does not fit",
                 id="JA-19-p384-key-alg-es256-skipped"),
    pytest.param([with_(ED, alg="ES256")], ALGORITHMS, {}, "does not fit", id="JA-19-okp-key-alg-es256-skipped"),
    pytest.param([ES384.public_jwk(with_alg=False)], ("ES256", "ES384"), {"p384": "ES384"}, "",
                 id="JB-01-p384-without-alg-bound-by-curve"),
    pytest.param([ES.public_jwk(with_alg=False)], ALGORITHMS, {"k1": "ES256"}, "", id="JB-01-p256-without-alg-es256"),
    pytest.param([ED.public_jwk(with_alg=False)], ALGORITHMS, {"ed": "EdDSA"}, "", id="JB-01-ed25519-without-alg"),
    pytest.param([RS.public_jwk(with_alg=False)], ("ES256", "PS256", "RS256"), {"rsa": "PS256"}, "",
                 id="JB-01-rsa-without-alg-bound-to-first-rsa-alg-ps256"),
    pytest.param([RS.public_jwk(with_alg=False)], ("RS256", "PS256"), {"rsa": "RS256"}, "",
                 id="JB-01-rsa-without-alg-bound-to-first-rsa-alg-rs256"),
    pytest.param([{"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64url(b"\x09" * 32)}], ALGORITHMS, {},
                 "no allowed algorithm", id="JB-01-okp-x25519-skipped"),
    pytest.param([with_(ES, kid=7)], ALGORITHMS, {}, "kid must be a string", id="JA-05-jwk-kid-number-skipped"),
    pytest.param([with_(ES, kid="k" * 257)], ALGORITHMS, {}, "kid must be a string",
                 id="JA-05-jwk-kid-too-long-skipped"),
    pytest.param(["not a key", 7, None], ALGORITHMS, {}, "not an object", id="JB-08-entries-not-objects-skipped"),
    pytest.param([with_(ES, kty="EC2")], ALGORITHMS, {}, "unsupported kty", id="JB-08-unknown-kty-skipped"),
    pytest.param([weak_rsa_jwk(), ES.public_jwk(), with_(RS, use="enc")], ALGORITHMS, {"k1": "ES256"}, "",
                 id="JA-12-bad-keys-do-not-spoil-good-ones"),
]


@pytest.mark.parametrize(("entries", "algorithms", "expected", "note"), LOAD_CASES)
@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_JB_01_JA_12_parse_jwks_loading_rules(entries, algorithms, expected, note):
    keys, skipped = parse_jwks(doc(*entries), algorithms)
    assert {kid: key.alg for kid, key in keys.items()} == expected
    assert len(skipped) == len(entries) - len(expected)
    if note:
        assert any(note in s for s in skipped), skipped


def test_JB_01_duplicate_kid_keeps_the_first_key():
    keys, skipped = parse_jwks(doc(ES.public_jwk(), ES_OTHER.public_jwk()), ALGORITHMS)
    assert list(keys) == ["k1"]
    assert keys["k1"].key.thumbprint() == ES.key.thumbprint() != ES_OTHER.key.thumbprint()
    assert len(skipped) == 1 and "appears twice" in skipped[0]


def test_JA_13_only_the_first_MAX_KEYS_entries_are_read():
    entries = [with_(ES, kid=f"k{i}") for i in range(MAX_KEYS + 5)]
    keys, _ = parse_jwks(doc(*entries), ALGORITHMS)
    assert len(keys) == MAX_KEYS and f"k{MAX_KEYS - 1}" in keys and f"k{MAX_KEYS}" not in keys


@pytest.mark.parametrize("data", [
    pytest.param(b"not json", id="JB-08-not-json"),
    pytest.param(b'{"keys": [], "keys": []}', id="JA-14-duplicate-members"),
    pytest.param(b'{"keys": {}}', id="JB-08-keys-not-an-array"),
    pytest.param(b"[]", id="JB-08-top-level-array"),
    pytest.param(b'{"keys": [' + b'"x",' * 300_000 + b'"x"]}', id="JA-13-larger-than-1-MiB"),
    pytest.param(b'{"keys": ["\xff"]}', id="JB-05-invalid-utf8"),
])
def test_JB_08_malformed_jwks_document_is_a_source_error(data: bytes):
    with pytest.raises(KeySourceError):
        parse_jwks(data, ALGORITHMS)


# -- KeyCache -------------------------------------------------------------------------------


class MemorySource:
    """A ``KeySource`` holding a JWKS in memory: counts fetches, fails on demand."""

    def __init__(self, document: dict[str, Any] | bytes, announced: int | None = None) -> None:
        self.document = document
        self.announced = announced
        self.failure: str | None = None
        self.fetches = 0

    async def fetch(self) -> tuple[bytes, int | None]:
        self.fetches += 1
        await asyncio.sleep(0)  # let concurrent callers interleave, as a network fetch would
        if self.failure is not None:
            raise KeySourceError(self.failure)
        data = self.document if isinstance(self.document, bytes) else json.dumps(self.document).encode()
        return data, self.announced

    def describe(self) -> str:
        return "memory"


def make_issuer(issuer_id: str = "test", issuer: str = ISSUER, **fields: Any) -> Issuer:
    values: dict[str, Any] = {"algorithms": ALGORITHMS, "jwks_uri": "https://issuer.test/jwks", **fields}
    return Issuer(id=issuer_id, issuer=issuer, **values)


def token(key: SigningKey, iss: str = ISSUER, **overrides: Any) -> str:
    return sign(key, claims(iss=iss, iat=NOW, exp=NOW + 600, **overrides))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_JA_05_unknown_kid_refetches_at_most_once_per_interval():
    clock = FrozenClock(NOW)
    source = MemorySource(jwks(ES))
    keys = KeyCache(make_issuer(jwks_refetch_interval_seconds=10), source, clock)

    async def scenario() -> None:
        assert await keys.refresh("startup")
        assert source.fetches == 1
        assert (await keys.get_or_refetch("k1")).kid == "k1" and source.fetches == 1  # known: no fetch
        for _ in range(3):  # within the interval since the startup fetch
            assert await keys.get_or_refetch("unknown") is None
        assert source.fetches == 1
        clock.advance(10)
        for _ in range(5):  # one refetch, then the interval holds again
            assert await keys.get_or_refetch("unknown") is None
        assert source.fetches == 2
        clock.advance(9.9)
        assert await keys.get_or_refetch("unknown") is None
        assert source.fetches == 2
        clock.advance(0.1)
        assert await keys.get_or_refetch("unknown") is None
        assert source.fetches == 3
        clock.advance(10)  # a burst of unknown kids from many requests at once: still one fetch
        results = await asyncio.gather(*(keys.get_or_refetch(f"attacker-{i}") for i in range(50)))
        assert results == [None] * 50 and source.fetches == 4
        source.document = jwks(ES, ES_NEW)  # rotation: a new kid appears and is found by one refetch
        clock.advance(10)
        assert (await keys.get_or_refetch("k2")).kid == "k2"
        assert source.fetches == 5

    run(scenario())


def test_JA_05_unknown_kid_through_the_verifier_is_rate_limited():
    clock = FrozenClock(NOW)
    source = MemorySource(jwks(ES))
    keys = KeyCache(make_issuer(jwks_refetch_interval_seconds=10), source, clock)
    run(keys.refresh("startup"))
    verifier = TokenVerifier({"test": keys}, clock)
    for kid in ("../../etc/passwd", "' OR 1=1 --", "x\x00", "k2"):
        with pytest.raises(InvalidToken, match="kid is not among"):
            run(verifier.verify(sign(SigningKey(ES.key, "ES256", kid), claims(iat=NOW, exp=NOW + 600)),
                                ("test",), RESOURCE))
    assert source.fetches == 1


def test_stale_if_error_keeps_serving_last_good_keys_and_records_last_error():
    clock = FrozenClock(NOW)
    source = MemorySource(jwks(ES))
    keys = KeyCache(make_issuer(jwks_refetch_interval_seconds=10, jwks_min_cache_seconds=60), source, clock)
    verifier = TokenVerifier({"test": keys}, clock)
    good = token(ES)
    assert run(keys.refresh("startup")) and keys.last_error is None
    generation = keys.generation
    for breakage, expected in (("failure", "connection refused"), (b"{not json", "not valid JSON"),
                               (doc({"kty": "oct", "kid": "o", "k": "AAAA"}), "no usable signing key")):
        clock.advance(5)
        if breakage == "failure":
            source.failure = "connection refused"
        else:
            source.failure, source.document = None, breakage
        assert run(keys.refresh("scheduled")) is False
        assert expected in (keys.last_error or "")
        assert keys.status()["last_error"] == keys.last_error and keys.status()["ready"] is True
        assert list(keys.keys) == ["k1"] and keys.generation == generation
        assert keys.next_refresh == clock.monotonic() + 10  # retried sooner: min(refetch interval, min cache)
        assert run(verifier.verify(good, ("test",), RESOURCE)).sub == "alice"
        verifier._cache.clear()  # and not only from the verified-token cache: verify afresh next round
    source.failure, source.document = None, jwks(ES)
    assert run(keys.refresh("scheduled")) and keys.last_error is None and keys.generation == generation


def test_no_keys_yet_means_not_ready_and_a_retryable_invalid_token():
    clock = FrozenClock(NOW)
    source = MemorySource(jwks(ES))
    source.failure = "HTTP 503"
    keys = KeyCache(make_issuer(), source, clock)
    assert run(keys.refresh("startup")) is False and keys.ready is False
    assert keys.status()["last_error"] == "HTTP 503"
    with pytest.raises(InvalidToken, match="unavailable"):
        run(TokenVerifier({"test": keys}, clock).verify(token(ES), ("test",), RESOURCE))


@pytest.mark.parametrize(("announced", "lifetime"), [
    pytest.param(300, 300, id="max-age-within-bounds"),
    pytest.param(5, 60, id="max-age-below-min-raised"),
    pytest.param(0, 60, id="no-store-raised-to-min"),
    pytest.param(10**6, 3600, id="max-age-above-max-capped"),
    pytest.param(None, 3600, id="no-cache-control-uses-max"),
])
def test_cache_control_max_age_is_honoured_within_bounds(announced: int | None, lifetime: int):
    clock = FrozenClock(NOW)
    clock.advance(123)
    keys = KeyCache(make_issuer(jwks_min_cache_seconds=60, jwks_max_cache_seconds=3600),
                      MemorySource(jwks(ES), announced), clock)
    assert run(keys.refresh("startup"))
    assert keys.next_refresh == 123 + lifetime


@pytest.mark.parametrize(("header", "lifetime"), [
    pytest.param("public, max-age=120", 120, id="max-age-120"),
    pytest.param("no-store", 60, id="no-store"),
    pytest.param(None, 3600, id="absent"),
    pytest.param("max-age=99999999", 3600, id="above-max"),
])
def test_cache_control_from_a_real_jwks_endpoint(header: str | None, lifetime: int):
    endpoint = JWKSEndpoint(document=jwks(ES), cache_control=header)
    clock = FrozenClock(NOW)

    async def scenario(url: str) -> tuple[float, KeyCache]:
        async with httpx.AsyncClient() as client:
            keys = KeyCache(make_issuer(jwks_uri=url), UriKeySource(url, client), clock)
            assert await keys.refresh("startup"), keys.last_error
            scheduled = keys.next_refresh
            endpoint.status = 500  # stale-if-error over real HTTP as well
            clock.advance(1)
            assert await keys.refresh("scheduled") is False
            return scheduled, keys

    with serving(endpoint) as server:
        scheduled, keys = run(scenario(f"{server.url}/jwks"))
    assert scheduled == lifetime
    assert endpoint.fetches == 2
    assert "HTTP 500" in (keys.last_error or "") and list(keys.keys) == ["k1"]
    assert keys.last_success == 0 and keys.last_attempt == 1


@pytest.mark.parametrize(("value", "expected"), [
    ("max-age=300", 300), ("public, max-age=120", 120), ('max-age="60"', 60), ("MAX-AGE=7", 7),
    ("max-age=300, must-revalidate", 300), ("s-maxage=50", None), ("max-age=abc", None), ("private", None),
    ("no-store", 0), ("no-cache, max-age=300", 0), ("", None), (None, None),
])
def test_max_age_parsing(value: str | None, expected: int | None):
    assert max_age(value) == expected


def test_file_source_is_reread_every_refetch_interval(tmp_path: Path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(ES)))
    clock = FrozenClock(NOW)
    keys = KeyCache(make_issuer(jwks_uri=None, jwks_file=str(path), jwks_refetch_interval_seconds=7),
                      FileKeySource(str(path)), clock)
    assert run(keys.refresh("startup")) and keys.next_refresh == 7
    path.write_text("{")
    assert run(keys.refresh("scheduled")) is False and "not valid JSON" in (keys.last_error or "")
    path.unlink()
    assert run(keys.refresh("scheduled")) is False and "cannot read" in (keys.last_error or "")
    assert list(keys.keys) == ["k1"]


class DiscoveryMetadata:
    """An RFC 8414 metadata endpoint on 127.0.0.1 announcing whatever ``jwks_uri`` a test sets."""

    def __init__(self, jwks_uri: str) -> None:
        self.jwks_uri = jwks_uri
        self.issuer = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"issuer": self.issuer, "jwks_uri": self.jwks_uri}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("jwks_uri", [
    pytest.param("http://[::1/jwks", id="unparseable-ipv6-literal"),
    pytest.param("http://127.0.0.1:99999/jwks", id="port-out-of-range"),
    pytest.param("http://127.0.0.1:1/jwks", id="connection-refused"),
])
def test_stale_if_error_when_discovery_announces_a_broken_jwks_uri(jwks_uri: str):
    """A refresh never raises: whatever the source does, it is recorded for /readyz and the
    last good keys keep serving (a raise would kill the background refresher, fail startup,
    or turn an unknown-kid refetch into a 500)."""
    metadata = DiscoveryMetadata(jwks_uri)
    with serving(metadata) as server:
        metadata.issuer = server.url

        async def scenario() -> KeyCache:
            async with httpx.AsyncClient() as client:
                keys = KeyCache(make_issuer(issuer=server.url, jwks_uri=None, discovery=True),
                                  DiscoveryKeySource(server.url, client), FrozenClock(NOW))
                assert await keys.refresh("startup") is False
                assert await keys.get_or_refetch("k1") is None
                return keys

        keys = run(scenario())
    assert keys.ready is False and keys.last_error and "Traceback" not in keys.last_error


def test_stale_if_error_when_a_source_fails_unexpectedly():
    class BrokenSource(MemorySource):
        async def fetch(self) -> tuple[bytes, int | None]:
            if self.failure == "unexpected":
                raise RuntimeError("secret detail")
            return await super().fetch()

    clock = FrozenClock(NOW)
    source = BrokenSource(jwks(ES))
    keys = KeyCache(make_issuer(), source, clock)
    assert run(keys.refresh("startup"))
    source.failure = "unexpected"
    assert run(keys.refresh("scheduled")) is False
    assert keys.last_error == "memory: unexpected RuntimeError" and list(keys.keys) == ["k1"]
    assert run(TokenVerifier({"test": keys}, clock).verify(token(ES), ("test",), RESOURCE)).sub == "alice"


# -- rotation and the verified-token cache -------------------------------------------------------


def rotation_setup() -> tuple[FrozenClock, MemorySource, KeyCache, TokenVerifier]:
    clock = FrozenClock(NOW)
    source = MemorySource(jwks(ES))
    keys = KeyCache(make_issuer(), source, clock)
    assert run(keys.refresh("startup"))
    return clock, source, keys, TokenVerifier({"test": keys}, clock)


def test_unchanged_key_set_keeps_the_generation():
    _, source, keys, _ = rotation_setup()
    generation = keys.generation
    assert run(keys.refresh("scheduled")) and keys.generation == generation  # same document
    source.document = jwks(ES, RS)  # a key added: the set changed
    assert run(keys.refresh("scheduled")) and keys.generation == generation + 1
    source.document = jwks(RS, ES)  # same keys in another order: nothing changed
    assert run(keys.refresh("scheduled")) and keys.generation == generation + 1


def test_removed_key_bumps_generation_and_cached_token_fails():
    _, source, keys, verifier = rotation_setup()
    old = token(ES)
    assert run(verifier.verify(old, ("test",), RESOURCE)).sub == "alice"
    assert run(verifier.verify(old, ("test",), RESOURCE)).sub == "alice"  # cached
    generation = keys.generation
    source.document = jwks(ES_NEW)
    assert run(keys.refresh("rotation")) and keys.generation == generation + 1
    with pytest.raises(InvalidToken, match="kid is not among"):
        run(verifier.verify(old, ("test",), RESOURCE))
    assert run(verifier.verify(token(ES_NEW), ("test",), RESOURCE)).sub == "alice"


def test_key_replaced_under_the_same_kid_bumps_generation_and_cached_token_fails():
    _, source, keys, verifier = rotation_setup()
    old = token(ES)
    assert run(verifier.verify(old, ("test",), RESOURCE)).sub == "alice"
    generation = keys.generation
    source.document = jwks(ES_OTHER)  # kid "k1" again, new key material (e.g. after a compromise)
    assert run(keys.refresh("rotation")) and keys.generation == generation + 1
    with pytest.raises(InvalidToken, match="signature is invalid"):
        run(verifier.verify(old, ("test",), RESOURCE))
    assert run(verifier.verify(token(ES_OTHER), ("test",), RESOURCE)).sub == "alice"


def test_JA_19_key_rebound_to_another_alg_bumps_generation_and_cached_token_fails():
    clock = FrozenClock(NOW)
    source = MemorySource(jwks(RS))
    keys = KeyCache(make_issuer(), source, clock)
    assert run(keys.refresh("startup"))
    verifier = TokenVerifier({"test": keys}, clock)
    old = token(RS)
    assert run(verifier.verify(old, ("test",), RESOURCE)).sub == "alice"
    source.document = {"keys": [with_(RS, alg="PS256")]}
    assert run(keys.refresh("rotation")) and keys.keys["rsa"].alg == "PS256"
    with pytest.raises(InvalidToken, match="does not match the algorithm bound"):
        run(verifier.verify(old, ("test",), RESOURCE))


# -- JB-06: keys belong to their issuer ---------------------------------------------------------


def test_JB_06_kid_of_issuer_a_never_verifies_a_token_of_issuer_b():
    clock = FrozenClock(NOW)
    key_a = SigningKey.generate("ES256", kid="shared")
    key_b = SigningKey.generate("ES256", kid="shared")
    assert key_a.key.thumbprint() != key_b.key.thumbprint()
    issuer_a, issuer_b = "https://a.example.test", "https://b.example.test"
    keys = {
        "a": KeyCache(make_issuer("a", issuer_a), MemorySource(jwks(key_a)), clock),
        "b": KeyCache(make_issuer("b", issuer_b), MemorySource(jwks(key_b)), clock),
    }
    for issuer_keys in keys.values():
        assert run(issuer_keys.refresh("startup"))
    verifier = TokenVerifier(keys, clock)
    both = ("a", "b")
    assert run(verifier.verify(token(key_a, issuer_a), both, RESOURCE)).issuer_id == "a"
    assert run(verifier.verify(token(key_b, issuer_b), both, RESOURCE)).issuer_id == "b"
    for forged in (token(key_a, issuer_b), token(key_b, issuer_a)):
        with pytest.raises(InvalidToken, match="signature is invalid"):
            run(verifier.verify(forged, both, RESOURCE))
    with pytest.raises(InvalidToken, match="not accepted"):
        run(verifier.verify(token(key_b, issuer_b), ("a",), RESOURCE))
