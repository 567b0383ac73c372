"""The admin listener: liveness, readiness (with per-issuer key detail) and metrics.

It runs on its own port so that probes and scrapes never share the proxy's routes or
its authentication, and so it can stay off the public network. ``admin_app`` takes the
three answers as functions, so the single-process server and the parent of several
workers (``enforcer.workers``) serve the same routes with their own view of the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enforcer.app import EnforcerApp
from enforcer.observability.exposition import exposition

Probe = Callable[[], tuple[bool, dict[str, Any]]]


def create_admin_app(enforcer: EnforcerApp) -> Starlette:
    def scrape() -> bytes:
        enforcer.readiness()  # refreshes the key gauges
        return exposition(enforcer.metrics.registry)

    return admin_app(readiness=enforcer.readiness, scrape=scrape)


def _always_live() -> tuple[bool, dict[str, Any]]:
    return True, {"status": "ok"}


def admin_app(*, readiness: Probe, scrape: Callable[[], bytes], liveness: Probe = _always_live) -> Starlette:
    async def healthz(request: Request) -> Response:
        live, detail = liveness()
        return JSONResponse(detail, status_code=200 if live else 503)

    async def readyz(request: Request) -> Response:
        ready, detail = readiness()
        return JSONResponse(detail, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(scrape(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    ])
