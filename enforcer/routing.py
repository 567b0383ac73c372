"""Choose the resource for a request and turn its raw path into an unambiguous one.

Paths are checked before any rule sees them. An encoded slash or backslash, a NUL, an
empty or dot segment (also when percent-encoded) would let the policy and the upstream
read the same bytes as two different paths, which is how path-based rules get bypassed;
such requests are answered 400 and never forwarded. What remains decodes to exactly
one path, which both the rules and the forwarded request use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

from enforcer.errors import InvalidRequest
from enforcer.policy.model import Resource

_FORBIDDEN_ESCAPES = re.compile(rb"%(?:2[fF]|5[cC]|00|25)")
_BAD_HEX = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL_OR_BACKSLASH = re.compile(rb"[\x00-\x1f\x7f\\\\]")
#: "/./", "/../", "//" anywhere, or "/." / "/.." at the end ("/x/" with a trailing slash is fine)
_DOT_OR_EMPTY_SEGMENT = re.compile(rb"/\.{0,2}(?=/)|/\.{1,2}\Z")
_SAFE_PATH_CHARS = "/:@!$&'()*+,;=-._~"
MAX_PATH_BYTES = 8192


@dataclass(frozen=True)
class Route:
    """A resource with everything the request path needs about it worked out once."""

    resource: Resource
    prefix: str
    host: str | None
    upstream_origin: str  # scheme://authority of the upstream
    upstream_base: str  # path of the upstream URL, which the part after ``prefix`` is appended to
    public_scheme: str  # of ``public_origin`` (default: of ``resource``): what agents dialled
    public_host: str

    @classmethod
    def for_resource(cls, resource: Resource) -> Route:
        upstream = urlsplit(resource.upstream)
        public = urlsplit(resource.public_origin or resource.resource)
        return cls(
            resource=resource,
            prefix=resource.match.path_prefix.rstrip("/") or "/",
            host=resource.match.host.lower() if resource.match.host else None,
            upstream_origin=f"{upstream.scheme}://{upstream.netloc}",
            upstream_base=upstream.path,
            public_scheme=public.scheme,
            public_host=public.netloc,
        )

    def upstream_url(self, path: str, query: bytes) -> str:
        """The upstream URL for a cleaned ``path`` under this route, query kept byte for byte."""
        url = self.upstream_origin + upstream_path(self.upstream_base, self.prefix, path)
        return url + "?" + query.decode("latin-1") if query else url

    def matches(self, host: str, path: str) -> bool:
        if self.host is not None and self.host != host:
            return False
        return self.prefix == "/" or path == self.prefix or path.startswith(self.prefix + "/")


class Router:
    """Longest ``path_prefix`` wins; for the same prefix a resource with ``host`` wins."""

    def __init__(self, resources: tuple[Resource, ...]) -> None:
        routes = [Route.for_resource(r) for r in resources]
        self.routes = sorted(routes, key=lambda rt: (len(rt.prefix), rt.host is not None), reverse=True)

    def route(self, host: str, path: str) -> Route | None:
        host = host.lower()
        for route in self.routes:
            if route.matches(host, path):
                return route
        return None


def clean_path(raw_path: bytes) -> str:
    """Decode ``raw_path`` once, or raise ``InvalidRequest`` when it is ambiguous."""
    if len(raw_path) > MAX_PATH_BYTES:
        raise InvalidRequest(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if not raw_path.startswith(b"/"):
        raise InvalidRequest("the request target must be an absolute path")
    if _FORBIDDEN_ESCAPES.search(raw_path) or _BAD_HEX.search(raw_path):
        raise InvalidRequest("the path contains an encoded '/', '\\', '%' or NUL; send it unencoded or not at all")
    decoded = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    if _CONTROL_OR_BACKSLASH.search(decoded):
        raise InvalidRequest("the path contains control characters or a backslash")
    if _DOT_OR_EMPTY_SEGMENT.search(decoded):
        raise InvalidRequest("the path contains '.', '..' or empty segments; send the normalised path")
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the path is not valid UTF-8 after percent-decoding") from exc


def upstream_path(base_path: str, prefix: str, path: str) -> str:
    """Map ``/prefix/rest`` to ``base_path/rest``, re-encoded for the wire."""
    rest = path[len(prefix):] if prefix != "/" else path
    if rest and not rest.startswith("/"):
        rest = "/" + rest
    joined = base_path.rstrip("/") + rest
    return quote(joined or "/", safe=_SAFE_PATH_CHARS)
