"""``lorawatch server``: LoraWatch's findings for the on-call stack. ``/metrics`` in
Prometheus' text format, OTLP/HTTP traces in (``/v1/traces``), a read-only JSON API
(``/api/v1``), ``/healthz`` and ``/readyz``. One ASGI app (FastAPI on uvicorn), built by
``lorawatch.server.app.create_app`` from the settings and the database."""
