"""``lorawatch ingest``, ``latency``, ``costs`` and ``traffic``: serving traffic per adapter."""

from __future__ import annotations

from pathlib import Path

import click

from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, table
from lorawatch.errors import InputError, did_you_mean
from lorawatch.monitors import traffic as traffic_service
from lorawatch.monitors import traffic_eval
from lorawatch.monitors.prometheus_pull import pull_latency


@click.group()
def ingest() -> None:
    """Load serving logs and KPI tables (JSONL, CSV or Parquet; all or nothing; never twice)."""


@ingest.command("requests")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
@pass_app
def ingest_requests(app: AppContext, file: Path, as_json: bool) -> None:
    """Request records: ts, adapter_id, latency_ms [, adapter_version, base_model_id, tenant,
    ttft_ms, prompt_tokens, completion_tokens, gpu_seconds, status]."""

    result = traffic_service.ingest_requests(app.database, file, actor=app.actor, progress=not as_json)
    text = (
        f"{file}: already ingested, nothing counted twice ({result['reason']})"
        if result["skipped"]
        else f"{file}: {result['rows']} requests into {result['minutes']} adapter-minutes"
    )
    emit(result, as_json, text)


@ingest.command("kpis")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
@pass_app
def ingest_kpis(app: AppContext, file: Path, as_json: bool) -> None:
    """KPI observations: ts, adapter_id, kpi, value [, tenant] (conversion, RPM, CSAT, ...)."""

    result = traffic_service.ingest_kpis(app.database, file, actor=app.actor)
    emit(result, as_json, f"{file}: " + ("already ingested" if result["skipped"] else f"{result['rows']} KPI values"))


@click.command()
@click.option("--adapter", help="Only this adapter.")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--window", default="7d", show_default=True, help="How far back: 30m, 6h, 7d, 2w.")
@json_option
@pass_app
def latency(app: AppContext, adapter, tenant, window, as_json) -> None:
    """P50, P95 and P99 latency (and TTFT) with counts per adapter, from merged sketches."""

    if adapter and adapter not in (known := traffic_service.known_adapters(app.database)):
        raise InputError(f'no adapter "{adapter}"' + did_you_mean(adapter, known), fix="check the name")
    rows = traffic_service.latency(
        app.database, window=traffic_service.parse_window(window), adapter=adapter, tenant=tenant
    )
    emit(
        rows,
        as_json,
        lambda: table(rows, ["adapter", "count", "error_rate", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms"]),
    )


@click.command()
@click.option("--window", default="30d", show_default=True, help="How far back: 6h, 7d, 30d.")
@json_option
@pass_app
def costs(app: AppContext, window, as_json) -> None:
    """Adapter hit rate (requests, tokens), GPU hours per adapter and tenant, daily roll-ups."""

    data = traffic_eval.costs(app.database, window=traffic_service.parse_window(window))
    emit(data, as_json, lambda: table(data["adapters"]) + "\n\n" + table(data["tenants"]))


@click.group()
def traffic() -> None:
    """Traffic monitors: latency SLO burn rates, P99, KPI drops."""


@traffic.command("evaluate")
@json_option
@pass_app
def evaluate(app: AppContext, as_json) -> None:
    """Compute and store the traffic monitors for every adapter now."""

    rows = traffic_eval.evaluate_traffic(app.database, app.settings)
    emit(rows, as_json, lambda: table(rows, ["monitor", "adapter", "value", "threshold", "breached"]))


@ingest.command("prometheus")
@click.option("--url", required=True, help="Prometheus server, e.g. http://127.0.0.1:9090")
@click.option("--metric", default="lorawatch_request_latency_seconds", show_default=True, help="Histogram to read.")
@click.option("--window", default="5m", show_default=True, help="Rate window of the query.")
@json_option
@pass_app
def ingest_prometheus(app: AppContext, url, metric, window, as_json) -> None:
    """Pull P50/P95/P99 per adapter from Prometheus (histogram_quantile by adapter_id)."""

    rows = pull_latency(app.database, url, metric=metric, window=window)
    emit(rows, as_json, lambda: table(rows, ["monitor", "adapter", "value"]))
