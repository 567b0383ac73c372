"""Choose the resource for a request and turn its raw path into an unambiguous one.

Paths are checked before any rule sees them. An encoded slash or backslash, a NUL, an
empty or dot segment (also when percent-encoded), or a ``;`` (Tomcat, Jetty and Spring
strip ``;params`` from segments and read ``..;`` as ``..``) would let the policy and the
upstream read the same bytes as two different paths, which is how path-based rules get
bypassed; such requests are answered 400 and never forwarded. What remains decodes to
exactly one path: the rules see it decoded, the upstream gets the received bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

from enforcer.errors import InvalidRequest
from enforcer.policy.model import Resource

#: encoded '/', '\\', NUL, '%' (double encoding) and ';' (path parameters, see clean_path)
_FORBIDDEN_ESCAPES = re.compile(rb"%(?:2[fF]|5[cC]|00|25|3[bB])")
_BAD_HEX = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL_OR_BACKSLASH = re.compile(rb"[\x00-\x1f\x7f\\\\;]")
#: "/./", "/../", "//" anywhere, or "/." / "/.." at the end ("/x/" with a trailing slash is fine)
DOT_OR_EMPTY_SEGMENT = re.compile(rb"/\.{0,2}(?=/)|/\.{1,2}\Z")
#: methods are upper-case tokens: rules compare them exactly and the forwarding client upper-cases them
METHOD = re.compile(r"[A-Z][A-Z-]{0,31}\Z")
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

    def upstream_url(self, raw_path: bytes, query: bytes) -> str:
        """The upstream URL for a request under this route; path suffix and query byte for byte."""
        url = self.upstream_origin + upstream_path(self.upstream_base, self.prefix, raw_path)
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
        raise InvalidRequest("the path contains an encoded '/', '\\', '%', ';' or NUL; send it unencoded or not at all")
    decoded = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    if _CONTROL_OR_BACKSLASH.search(decoded):
        raise InvalidRequest("the path contains control characters, a backslash or ';' (path parameters)")
    if DOT_OR_EMPTY_SEGMENT.search(decoded):
        raise InvalidRequest("the path contains '.', '..' or empty segments; send the normalised path")
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the path is not valid UTF-8 after percent-decoding") from exc


def upstream_path(base_path: str, prefix: str, raw_path: bytes) -> str:
    """Map ``/prefix/rest`` to ``base_path/rest``, keeping the bytes of ``rest`` as received.

    Nothing is decoded and re-encoded on the way: ``clean_path`` refused every encoding
    that could change a segment boundary, so the raw path has exactly as many segments as
    the decoded one the policy saw, and dropping the prefix's segments is exact."""
    skip = 0 if prefix == "/" else prefix.count("/")
    rest = raw_path.split(b"/")[1 + skip:]
    suffix = ("/" + "/".join(part.decode("latin-1") for part in rest)) if rest else ""
    return (base_path.rstrip("/") + suffix) or "/"
