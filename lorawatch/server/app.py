"""The server's ASGI app: health, ``/metrics``, and the routers of ``otlp`` and ``api``."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from lorawatch import __version__
from lorawatch.db import Database
from lorawatch.server import api, metrics, otlp
from lorawatch.server.auth import require
from lorawatch.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, database: Database) -> FastAPI:
    """The app over ``database``; every route reads the settings given here."""
    app = FastAPI(
        title="LoraWatch",
        version=__version__,
        description="LoraWatch's findings for the on-call stack: a read-only API, Prometheus metrics and "
        "OTLP/HTTP traces in. Every /api route takes a bearer token with the read scope (lorawatch tokens).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.settings = settings
    app.state.database = database

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        """The database answers (503 when it does not)."""
        try:
            with database.session() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # the reason goes to the log, not to an unauthenticated caller
            log.warning("readiness check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "reason": "the database does not answer"}, status_code=503)
        return JSONResponse({"status": "ok"})

    metrics_guard = [Depends(require("metrics"))] if settings.server.metrics_token else []

    @app.get("/metrics", include_in_schema=False, dependencies=metrics_guard)
    def prometheus_metrics() -> Response:
        """LoraWatch's state in Prometheus' text format (``lorawatch.server.metrics``)."""
        return PlainTextResponse(metrics.render(database), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(otlp.router)
    return app
