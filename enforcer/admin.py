"""The admin listener: liveness, readiness (with per-issuer key detail) and metrics.

It runs on its own port so that probes and scrapes never share the proxy's routes or
its authentication, and so it can stay off the public network.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enforcer.app import EnforcerApp


def create_admin_app(enforcer: EnforcerApp) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, detail = enforcer.readiness()
        return JSONResponse(detail, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        enforcer.readiness()  # refreshes the key gauges
        return Response(generate_latest(enforcer.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    ])
