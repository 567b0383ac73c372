"""RFC 9421 section 2: component values and the signature base.

Both sides use this module: the verifier rebuilds the base from the request as it
arrived, the signer (``enforcer.signing``) builds it from the request it is about to
send, so the two cannot drift apart. A message is described by ``SignedMessage``, which
holds exactly what the components read; derived components (``@authority``,
``@scheme``, ``@target-uri``) come from the origin given to it, which for the enforcer is
the resource's ``public_origin``, never the Host header.

Every problem is a ``SignatureBaseError`` (the base cannot be built, so nothing verifies).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from enforcer.auth import structured
from enforcer.auth.structured import InnerList, Item, StructuredFieldError, Token


class SignatureBaseError(ValueError):
    """A covered component cannot be resolved; the reason is safe to show the client."""


# Field types for ``;sf`` (RFC 9421 2.1.1) of fields we know; others are tried as a
# Dictionary, then a List, then an Item (a signer that chose differently fails to verify).
_FIELD_TYPES = {
    "accept-signature": "dictionary", "cache-control": "dictionary", "content-digest": "dictionary",
    "repr-digest": "dictionary", "signature": "dictionary", "signature-input": "dictionary",
    "want-content-digest": "dictionary", "want-repr-digest": "dictionary", "priority": "dictionary",
    "accept-ch": "list",
}
_DERIVED_REQUEST = frozenset({"@method", "@target-uri", "@authority", "@scheme", "@request-target",
                              "@path", "@query", "@query-param"})
_FIELD_PARAMS = frozenset({"sf", "key", "bs", "req", "tr"})
#: application/x-www-form-urlencoded percent-encode set: everything but these is encoded
_FORM_SAFE = "*-._"


class SignedMessage(NamedTuple):
    """The parts of an HTTP message that signature components read (a NamedTuple: one is
    built per signed request, and it is cheap to make).

    ``headers`` maps lower-cased field names to their field lines in arrival order;
    ``query`` is the raw query without ``?`` (None when the target had none)."""

    method: str = ""
    scheme: str = "https"
    authority: str = ""
    path: str = "/"
    query: str | None = None
    headers: Mapping[str, list[str]] = MappingProxyType({})
    status: int | None = None
    request_target: str | None = None
    request: SignedMessage | None = None  # the request a response answers (``;req``)

    @property
    def is_request(self) -> bool:
        return self.status is None

    @property
    def target_uri(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}" + ("" if self.query is None else "?" + self.query)


def headers_from_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name, value in pairs:
        index.setdefault(name.lower(), []).append(value)
    return index


def normalize_authority(scheme: str, netloc: str) -> str:
    """Lower-case host[:port], with the scheme's default port left out (RFC 9110 4.2.3)."""
    authority = netloc.lower()
    default = {"https": ":443", "http": ":80"}.get(scheme)
    if default and authority.endswith(default):
        authority = authority[: -len(default)]
    return authority


def signature_base(covered: InnerList, message: SignedMessage, identifiers: Sequence[str] | None = None) -> str:
    """The signature base for ``covered`` (a Signature-Input member) over ``message``;
    ``identifiers`` are the serialized component identifiers when the caller has them."""
    if identifiers is None:
        identifiers = [component_identifier(component) for component in covered.items]
    if len(set(identifiers)) != len(identifiers):
        raise SignatureBaseError("a component is covered twice")
    lines = []
    plain = _PLAIN_DERIVED if message.status is None else {}  # a response has no request components
    for identifier, component in zip(identifiers, covered.items, strict=True):
        derive = None if component.params else plain.get(component.value)  # type: ignore[call-overload]
        value = derive(message) if derive is not None else component_value(component, message)
        lines.append(f"{identifier}: {value}")
    signature_params = "(" + " ".join(identifiers) + ")" + structured.serialize_params(covered.params)
    lines.append(f'"@signature-params": {signature_params}')
    base = "\n".join(lines)
    if not base.isascii():
        raise SignatureBaseError("the signature base contains non-ASCII characters")
    return base


_PLAIN_DERIVED = {
    "@method": lambda m: m.method,
    "@target-uri": lambda m: m.target_uri,
    "@authority": lambda m: m.authority,
    "@scheme": lambda m: m.scheme.lower(),
    "@path": lambda m: m.path or "/",
    "@query": lambda m: "?" + (m.query or ""),
}


def component_identifier(component: Item) -> str:
    value = component.value
    if type(value) is str and not component.params and '"' not in value and "\\" not in value:
        return f'"{value}"'  # the usual case, without the general serializer
    if not isinstance(value, str) or isinstance(value, Token):
        raise SignatureBaseError("covered components must be strings")
    return structured.serialize_member(component)


def component_value(component: Item, message: SignedMessage) -> str:
    name = component.value
    assert isinstance(name, str)
    params = component.params
    if params and params.get("req") is True:
        if message.request is None:
            raise SignatureBaseError(f'"{name}";req names a related request, which a request does not have')
        message = message.request
    if name.startswith("@"):
        return _derived(name, params, message)
    if name != name.lower() or not name:
        raise SignatureBaseError("field names in covered components must be lower case")
    return _field(name, params, message)


def _derived(name: str, params: Mapping, message: SignedMessage) -> str:
    if params:
        unknown = set(params) - ({"req", "name"} if name == "@query-param" else {"req"})
        if unknown:
            raise SignatureBaseError(f"{name} does not take the parameter {sorted(unknown)[0]!r}")
    if name == "@status":
        if message.status is None:
            raise SignatureBaseError("@status exists only on responses")
        return f"{message.status:03d}"
    if name == "@signature-params":
        raise SignatureBaseError("@signature-params cannot be a covered component")
    if name not in _DERIVED_REQUEST:
        raise SignatureBaseError(f"unknown derived component {name}")
    if not message.is_request:
        raise SignatureBaseError(f"{name} exists only on requests (use ;req on a response)")
    if name == "@method":
        return message.method
    if name == "@target-uri":
        return message.target_uri
    if name == "@authority":
        return message.authority
    if name == "@scheme":
        return message.scheme.lower()
    if name == "@path":
        return message.path or "/"
    if name == "@query":
        return "?" + (message.query or "")
    if name == "@request-target":
        if message.request_target is not None:
            return message.request_target
        return message.path + ("" if message.query is None else "?" + message.query)
    return _query_param(params, message)


def _query_param(params: Mapping, message: SignedMessage) -> str:
    wanted = params.get("name")
    if not isinstance(wanted, str) or isinstance(wanted, Token):
        raise SignatureBaseError('@query-param needs a name="..." parameter')
    values = [value for key, value in _form_pairs(message.query or "") if key == wanted]
    if not values:
        raise SignatureBaseError(f"the query has no parameter named {wanted!r}")
    if len(values) > 1:
        raise SignatureBaseError(f"the query parameter {wanted!r} appears more than once")
    return values[0]


def _form_pairs(query: str) -> list[tuple[str, str]]:
    """WHATWG form-urlencoded parsing, each name and value re-encoded as RFC 9421 2.2.8 says."""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_reencode(name), _reencode(value)))
    return pairs


def _reencode(text: str) -> str:
    decoded = unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "replace")
    return quote(decoded, safe=_FORM_SAFE).replace("~", "%7E")  # quote() never encodes '~'; the form set does


def _field(name: str, params: Mapping, message: SignedMessage) -> str:
    if not params:
        lines = message.headers.get(name)
        if lines is None:
            raise SignatureBaseError(f'the covered field "{name}" is not in the message')
        return ", ".join([line.strip(" \t") for line in lines])
    unknown = set(params) - _FIELD_PARAMS
    if unknown:
        raise SignatureBaseError(f'"{name}" does not take the parameter {sorted(unknown)[0]!r}')
    if params.get("tr"):
        raise SignatureBaseError("trailer fields (;tr) are not supported; sign header fields")
    if params.get("bs") and ("sf" in params or "key" in params):
        raise SignatureBaseError(f'"{name}": ;bs cannot be combined with ;sf or ;key')
    lines = message.headers.get(name)
    if lines is None:
        raise SignatureBaseError(f'the covered field "{name}" is not in the message')
    lines = [line.strip(" \t") for line in lines]
    if params.get("bs"):
        return ", ".join(":" + base64.b64encode(line.encode("latin-1")).decode() + ":" for line in lines)
    value = ", ".join(lines)
    try:
        if "key" in params:
            return _dictionary_member(name, value, params["key"])
        if params.get("sf"):
            return _reserialize(name, value)
    except StructuredFieldError as exc:
        raise SignatureBaseError(f'"{name}" is not a valid structured field: {exc}') from exc
    return value


def _dictionary_member(name: str, value: str, key: object) -> str:
    if not isinstance(key, str) or isinstance(key, Token):
        raise SignatureBaseError(f'"{name}";key must name a member as a string')
    members = structured.parse_dictionary(value)
    if key not in members:
        raise SignatureBaseError(f'"{name}" has no member {key!r}')
    return structured.serialize_member(members[key])


def _reserialize(name: str, value: str) -> str:
    kind = _FIELD_TYPES.get(name)
    if kind in (None, "dictionary"):
        try:
            return structured.serialize_dictionary(structured.parse_dictionary(value))
        except StructuredFieldError:
            if kind is not None:
                raise
    if kind in (None, "list"):
        try:
            return structured.serialize_list(structured.parse_list(value))
        except StructuredFieldError:
            if kind is not None:
                raise
    return structured.serialize_member(structured.parse_item(value))
