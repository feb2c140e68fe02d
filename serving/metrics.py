"""Prometheus instrumentation for serving code, labelled by adapter, base model and tenant.

No serving stack exports per-adapter latency today; a few lines in yours do::

    from lorawatch.serving.metrics import AdapterMetrics
    metrics = AdapterMetrics()            # registers on prometheus_client's default registry
    with metrics.track("support-healthy", "smollm2-135m", tenant="acme") as request:
        text = generate(...)
        request.tokens(prompt=412, completion=128)

or as ASGI middleware (FastAPI, Starlette) that reads the adapter and tenant from headers::

    app.add_middleware(AdapterMetricsMiddleware, metrics=metrics)

Tokens are counted per adapter so autoscalers (KEDA's Prometheus scaler) can scale on tokens
processed rather than on requests.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

LABELS = ("adapter_id", "base_model_id", "tenant")
# Latency buckets (seconds) spanning fast cached replies to long generations.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)


@dataclass
class _Request:
    metrics: AdapterMetrics
    labels: tuple[str, str, str]
    status: str = "ok"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    def tokens(self, prompt: int = 0, completion: int = 0) -> None:
        """Count this request's tokens."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def first_token(self) -> None:
        """Mark the first generated token (time to first token)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()


class AdapterMetrics:
    """The histograms and counters, on ``registry`` (prometheus_client's default when None)."""

    def __init__(self, registry=None, namespace: str = "lorawatch") -> None:
        # Deferred: prometheus_client is optional (the serving extra).
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = registry if registry is not None else REGISTRY
        self.latency = Histogram(
            "request_latency_seconds",
            "End-to-end request latency per adapter.",
            LABELS,
            namespace=namespace,
            buckets=BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "time_to_first_token_seconds",
            "Time to first token per adapter.",
            LABELS,
            namespace=namespace,
            buckets=BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "requests_total",
            "Requests per adapter and status.",
            (*LABELS, "status"),
            namespace=namespace,
            registry=registry,
        )
        self.tokens = Counter(
            "tokens_total",
            "Tokens processed per adapter (kind: prompt or completion).",
            (*LABELS, "kind"),
            namespace=namespace,
            registry=registry,
        )

    def observe(
        self,
        adapter_id: str,
        base_model_id: str,
        tenant: str,
        *,
        seconds: float,
        status: str = "ok",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        ttft_seconds: float | None = None,
    ) -> None:
        """Record one finished request."""
        labels = (adapter_id, base_model_id, tenant or "")
        self.latency.labels(*labels).observe(seconds)
        if ttft_seconds is not None:
            self.ttft.labels(*labels).observe(ttft_seconds)
        self.requests.labels(*labels, status).inc()
        if prompt_tokens:
            self.tokens.labels(*labels, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(*labels, "completion").inc(completion_tokens)

    @contextmanager
    def track(self, adapter_id: str, base_model_id: str, tenant: str = ""):
        """Time the block as one request; an exception records status ``error`` and propagates."""
        request = _Request(self, (adapter_id, base_model_id, tenant or ""))
        try:
            yield request
        except BaseException:
            request.status = "error"
            raise
        finally:
            now = time.perf_counter()
            ttft = request.first_token_at - request.started if request.first_token_at else None
            self.observe(
                *request.labels,
                seconds=now - request.started,
                status=request.status,
                prompt_tokens=request.prompt_tokens,
                completion_tokens=request.completion_tokens,
                ttft_seconds=ttft,
            )


class AdapterMetricsMiddleware:
    """ASGI middleware: times every HTTP request under the adapter, base and tenant named by
    request headers (``x-adapter-id``, ``x-base-model-id``, ``x-tenant``)."""

    def __init__(self, app, metrics: AdapterMetrics, default_base_model: str = "") -> None:
        self.app = app
        self.metrics = metrics
        self.default_base_model = default_base_model

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        adapter = headers.get("x-adapter-id")
        if not adapter:
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def capture(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.observe(
                adapter,
                headers.get("x-base-model-id", self.default_base_model),
                headers.get("x-tenant", ""),
                seconds=time.perf_counter() - started,
                status="ok" if status["code"] < 400 else "error",
            )
