"""``/api/v1``: LoraWatch's findings as read-only JSON, for the on-call stack (issue #23).

Every route takes a bearer token with the ``read`` scope (``lorawatch tokens create NAME
--scope read``). The answers come from the same service functions the CLI's ``--json`` and the
dashboard read, with the same field names; the OpenAPI document (``/api/v1/openapi.json``)
describes them.

- Lists answer ``{"items": [...], "next": ..., "limit": ..., "offset": ...}``: ``limit`` (at
  most ``MAX_LIMIT``) and ``offset`` choose the page, and ``next`` is the path and query of the
  next page (null on the last one).
- Times are ISO 8601 in UTC with a ``Z``; NaN and infinities are null (JSON has neither).
- An unknown adapter, version, run, alert or incident is a 404 whose ``detail`` holds the
  error's ``message`` (with a did-you-mean where the CLI has one) and its ``fix``; a bad value
  (a window that is not a duration) is a 400 of the same shape.
- Nothing secret goes out: every answer passes through ``lorawatch.secrets.scrub_known``, as
  the CLI's output does; canary rows never carry embeddings, and PII in model outputs is
  shown as the canary run stored it (masked by default, ``[risk] store_raw_outputs``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from lorawatch.alerts.engine import find_alert, known_adapters, list_alerts
from lorawatch.db import Database
from lorawatch.db.models import AlertEvent
from lorawatch.errors import InputError, LoraWatchError, NotFoundError, did_you_mean
from lorawatch.incidents import service as incidents
from lorawatch.monitors import canary_read
from lorawatch.monitors import traffic as traffic_service
from lorawatch.registry import catalog
from lorawatch.registry.metadata import Lineage, Ownership, Performance, RiskProfile
from lorawatch.secrets import scrub, scrub_known
from lorawatch.server.auth import require
from lorawatch.settings import Settings

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00\Z")

# ---------------------------------------------------------------- plumbing


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class ApiJSONResponse(JSONResponse):
    """JSON out with NaN and infinities as null, and every registered secret masked (as the
    CLI's ``--json`` output is)."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return scrub_known(text).encode("utf-8")


class ErrorDetail(BaseModel):
    """What went wrong, and how to fix it."""

    message: str = Field(description="The problem (with a did-you-mean where one is known).")
    where: str | None = Field(None, description="The object or file concerned, when the error names one.")
    fix: str | None = Field(None, description="What to do about it.")


class ErrorResponse(BaseModel):
    """The body of a 404 or 400."""

    detail: ErrorDetail


class AuthErrorResponse(BaseModel):
    """The body of a 401: a bearer token with the read scope is needed."""

    detail: str


def _detail(exc: LoraWatchError) -> dict[str, str | None]:
    return {
        "message": scrub(exc.what),
        "where": scrub(exc.where) if exc.where else None,
        "fix": scrub(exc.fix) if exc.fix else None,
    }


@contextmanager
def _answering() -> Iterator[None]:
    """LoraWatch's own errors as HTTP answers: not found is 404, a bad value 400."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=_detail(exc)) from None
    except InputError as exc:
        raise HTTPException(status_code=400, detail=_detail(exc)) from None


def _database(request: Request) -> Database:
    return request.app.state.database


def _settings(request: Request) -> Settings:
    return request.app.state.settings


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (at most {MAX_LIMIT}).")]
Offset = Annotated[int, Query(ge=0, description="Items to skip: the page's start.")]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    next: str | None = Field(description="Path and query of the next page; null on the last page.")
    limit: int = Field(description="Items per page asked for.")
    offset: int = Field(description="Items skipped before this page.")


def _next(request: Request, limit: int, offset: int, more: bool) -> str | None:
    if not more:
        return None
    url = request.url.include_query_params(limit=limit, offset=offset + limit)
    return f"{url.path}?{url.query}"


def _page(request: Request, rows: Sequence[Any], limit: int, offset: int) -> dict[str, Any]:
    """A page of a list the service gave whole."""
    return {
        "items": list(rows[offset : offset + limit]),
        "next": _next(request, limit, offset, len(rows) > offset + limit),
        "limit": limit,
        "offset": offset,
    }


def _unknown_adapter(name: str, known: list[str]) -> NotFoundError:
    """The CLI's message for an adapter filter naming no adapter, as a 404."""
    return NotFoundError(f'no adapter "{name}"' + did_you_mean(name, known), fix="check the name")


router = APIRouter(
    prefix="/api/v1",
    dependencies=[
        Depends(require("read")),
        # Documents the bearer scheme in the OpenAPI document; require() above does the checking.
        Security(HTTPBearer(auto_error=False, description="A token with the read scope (lorawatch tokens create).")),
    ],
    default_response_class=ApiJSONResponse,
    responses={401: {"model": AuthErrorResponse, "description": "No token, or not one with the read scope."}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such object."}}
BAD_VALUE: dict[int | str, dict[str, Any]] = {400: {"model": ErrorResponse, "description": "A value is not valid."}}

# ---------------------------------------------------------------- adapters


class AliasRef(BaseModel):
    """An alias pointing at a version; tenant null is the route default (every tenant)."""

    alias: str
    tenant: str | None


class AliasTarget(BaseModel):
    """Which version an alias points at now, for a tenant (null: the route default)."""

    alias: str
    tenant: str | None
    version: str


class GateSummary(BaseModel):
    """The newest promotion-gate verdict of a version."""

    passed: bool
    run: int
    ts: datetime
    actor: str
    compared_with: str | None
    failed: list[str] = Field(description="The checks that failed.")


class Version(BaseModel):
    """An adapter version: its LoRA config, content hash, aliases, metadata and lifecycle status."""

    adapter: str
    version: str
    base: str
    state: str = Field(description="active or archived")
    rank: int
    alpha: float
    target_modules: list[str]
    base_model_name_or_path: str | None
    content_sha256: str
    storage: str = Field(description="copy (in LoraWatch's store) or reference (files left in place)")
    path: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    aliases: list[AliasRef]
    lineage: Lineage
    performance: Performance
    risk: RiskProfile
    ownership: Ownership
    data_expires_on: date | None
    expired: bool
    review_due: datetime
    review_overdue: bool
    last_reviewed_at: datetime | None
    gate: GateSummary | None


class FileEntry(BaseModel):
    """A registered file's hash and size."""

    sha256: str
    size: int


class VersionDetail(Version):
    """A version with its files."""

    files: dict[str, FileEntry]


class AliasEventOut(BaseModel):
    """One promotion or rollback of an alias."""

    ts: datetime
    alias: str
    tenant: str | None
    action: str = Field(description="promote or rollback")
    from_version: str | None
    to_version: str
    actor: str
    reason: str | None


class AdapterSummary(BaseModel):
    """An adapter with its versions and what each alias points at, per tenant."""

    adapter: str
    base: str
    aliases: list[AliasTarget]
    versions: list[Version]


class AdapterDetail(BaseModel):
    """An adapter with its versions (lineage, performance, risk, ownership), aliases and alias history."""

    adapter: str
    base: str
    created_at: datetime
    created_by: str
    aliases: list[AliasTarget]
    versions: list[VersionDetail]
    history: list[AliasEventOut] = Field(description="Every promotion and rollback, oldest first.")


class AdapterPage(Page[AdapterSummary]):
    """A page of adapters, by name."""


def _alias_targets(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = [{**a, "version": v["version"]} for v in versions for a in v["aliases"]]
    return sorted(targets, key=lambda t: (t["alias"], t["tenant"] or ""))


@router.get("/adapters", response_model=AdapterPage, tags=["adapters"], summary="Adapters")
def adapter_list(
    request: Request, database: DatabaseDep, settings: SettingsDep, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
):
    """Every adapter, by name, with its versions (as ``lorawatch registry list --json``) and the
    version each alias points at, per tenant."""
    with database.session() as session:
        rows = catalog.list_versions(session, review_days=settings.registry.review_due_days)
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = grouped.setdefault(row["adapter"], {"adapter": row["adapter"], "base": row["base"], "versions": []})
        entry["versions"].append(row)
    for entry in grouped.values():
        entry["aliases"] = _alias_targets(entry["versions"])
    return _page(request, [grouped[name] for name in sorted(grouped)], limit, offset)


@router.get(
    "/adapters/{name}", response_model=AdapterDetail, responses=NOT_FOUND, tags=["adapters"], summary="One adapter"
)
def adapter_detail(name: str, database: DatabaseDep, settings: SettingsDep):
    """An adapter as ``lorawatch registry show NAME --json``: versions with files, lineage,
    performance, risk and ownership; aliases; alias history."""
    with _answering(), database.session() as session:
        view = catalog.adapter_view(session, name, settings.registry.review_due_days)
    return {**view, "aliases": _alias_targets(view["versions"])}


# ---------------------------------------------------------------- canary runs


class RunListItem(BaseModel):
    """A canary run, as ``lorawatch canary list --json``."""

    run: int
    status: str = Field(description="running, complete or failed")
    dataset: str
    base: str
    adapters: int = Field(description="How many adapter versions the run covers.")
    prompts_done: int
    started_at: datetime
    finished_at: datetime | None
    device: str | None


class RunPage(Page[RunListItem]):
    """A page of canary runs, newest first."""


class MonitorOutcome(BaseModel):
    """A monitor's overall result for one adapter version in a run."""

    value: float | None
    threshold: float | None
    breached: bool
    details: dict[str, Any] | None


class RunAdapter(BaseModel):
    """An adapter version a run covered, with its monitors' results (by monitor id)."""

    adapter: str
    version: str
    monitors: dict[str, MonitorOutcome]


class BaseFinding(BaseModel):
    """The base model's own risk above a monitor's budget on the run's prompts (fails no gate)."""

    monitor: str
    base_value: float | None
    budget: float | None
    finding: str


class RunSummary(BaseModel):
    """A canary run, as ``lorawatch canary show RUN --json``."""

    base_findings: list[BaseFinding]
    run: int
    status: str
    dataset: str
    dataset_sha256: str
    base: str
    device: str | None
    prompts: int
    prompts_done: int
    started_at: datetime
    finished_at: datetime | None
    heartbeat_at: datetime
    started_by: str
    config: dict[str, Any]
    error: str | None
    stats: dict[str, Any] | None
    adapters: list[RunAdapter]


class ResultRow(BaseModel):
    """One (prompt, adapter version) of a run beside the base's output for the prompt, as a row of
    ``lorawatch canary export RUN`` (never the embeddings)."""

    run_id: int
    prompt_id: str
    segment: str
    adapter_id: str
    adapter_version: str
    scored_on: str
    scored_tokens: int
    kl_mean: float | None
    kl_max: float | None
    js_mean: float | None
    top1_agreement: float | None
    ref_logprob_base: float | None
    ref_logprob_adapted: float | None
    ref_logprob_delta: float | None
    embedding_cosine_distance: float | None
    output: str
    base_output: str | None
    new_tokens: int
    latency_ms: float | None
    tokens_per_s: float | None
    base_latency_ms: float | None
    toxicity: float | None
    base_toxicity: float | None
    pii_leaks: list[dict[str, Any]] | None
    base_pii_leaks: list[dict[str, Any]] | None


class ResultPage(Page[ResultRow]):
    """A page of a run's rows, by adapter then prompt id."""


RunId = Annotated[int, Path(description="The run's id.")]


@router.get("/canary/runs", response_model=RunPage, tags=["canary"], summary="Canary runs")
def canary_run_list(request: Request, database: DatabaseDep, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0):
    """Canary runs, newest first."""
    rows = canary_read.list_runs(database, offset + limit + 1)
    return _page(request, rows, limit, offset)


@router.get(
    "/canary/runs/{run_id}", response_model=RunSummary, responses=NOT_FOUND, tags=["canary"], summary="One canary run"
)
def canary_run_detail(run_id: RunId, database: DatabaseDep):
    """A run's status, dataset, device and each adapter version's monitor results."""
    with _answering():
        return canary_read.run_summary(database, run_id)


@router.get(
    "/canary/runs/{run_id}/results",
    response_model=ResultPage,
    responses=NOT_FOUND,
    tags=["canary"],
    summary="A canary run's rows",
)
def canary_run_results(
    request: Request,
    run_id: RunId,
    database: DatabaseDep,
    adapter: Annotated[str | None, Query(description="Only this adapter's rows.")] = None,
    version: Annotated[str | None, Query(description="Only this version's rows.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
):
    """One row per (prompt, adapter version): drift scores, the outputs of adapter and base side
    by side, latency, toxicity and PII findings (as ``lorawatch canary export``)."""
    with _answering():
        covered = canary_read.run_summary(database, run_id)["adapters"]
        if adapter is not None and adapter not in (names := sorted({a["adapter"] for a in covered})):
            raise NotFoundError(
                f'run {run_id} did not cover an adapter "{adapter}"' + did_you_mean(adapter, names),
                fix=f"see the run's adapters (GET /api/v1/canary/runs/{run_id})",
            )
        versions = sorted({a["version"] for a in covered if adapter is None or a["adapter"] == adapter})
        if version is not None and version not in versions:
            raise NotFoundError(
                f'run {run_id} did not cover a version "{version}"'
                + (f" of {adapter}" if adapter else "")
                + did_you_mean(version, versions),
                fix=f"see the run's adapters (GET /api/v1/canary/runs/{run_id})",
            )
    with database.session() as session:
        rows = canary_read.results_with_base(
            session, run_id, adapter=adapter, version=version, limit=limit + 1, offset=offset, embeddings=False
        )
        items = [canary_read.export_row(run_id, r, b) for r, b in rows[:limit]]
    return {"items": items, "next": _next(request, limit, offset, len(rows) > limit), "limit": limit, "offset": offset}


# ---------------------------------------------------------------- alerts


AlertState = Literal["open", "firing", "pending", "resolved", "inactive", "silenced", "all"]
Severity = Literal["critical", "warning", "info"]


class Alert(BaseModel):
    """An alert, as ``lorawatch alerts list --json``."""

    id: int
    fingerprint: str = Field(description="16 hex digits identifying the alert's labels.")
    rule: str
    state: str = Field(description="inactive, pending, firing or resolved")
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    threshold: float | None
    runbook_url: str | None
    active_at: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    acked_by: str | None
    acked_at: datetime | None
    ack_comment: str | None
    silenced_by: list[int] = Field(description="Ids of the silences muting it now.")
    inhibited: bool
    context: dict[str, Any] | None = Field(
        description="What the rule saw: the canary run, the version, when it was measured, the monitor's details."
    )

    @field_validator("context")
    @classmethod
    def _times_in_z(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """``measured_at`` and the like are stored as text: UTC with a Z here too."""
        if value is None:
            return None
        return {
            k: v[: -len("+00:00")] + "Z" if isinstance(v, str) and _ISO_UTC.match(v) else v for k, v in value.items()
        }


class AlertEventOut(BaseModel):
    """A change of an alert's state, or an acknowledgement (from = to)."""

    model_config = ConfigDict(populate_by_name=True)

    ts: datetime
    from_: str | None = Field(alias="from")
    to: str
    value: float | None
    actor: str | None


class AlertDetail(Alert):
    """An alert with its state history, as ``lorawatch alerts show ALERT --json``."""

    events: list[AlertEventOut]


class AlertPage(Page[Alert]):
    """A page of alerts: firing first, then pending, then by severity and id."""


@router.get("/alerts", response_model=AlertPage, responses=NOT_FOUND, tags=["alerts"], summary="Alerts")
def alert_list(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    state: Annotated[AlertState, Query(description="open: pending and firing; silenced: open and muted.")] = "open",
    adapter: Annotated[str | None, Query(description="Only this adapter's alerts.")] = None,
    severity: Annotated[Severity | None, Query(description="Only alerts of this severity.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
):
    """Alerts by state (firing first, then by severity), optionally of one adapter or severity."""
    with _answering():
        if adapter and adapter not in (known := known_adapters(database)):
            raise _unknown_adapter(adapter, known)
    rows = list_alerts(database, settings, state=state, adapter=adapter)
    if severity is not None:
        rows = [r for r in rows if r["severity"] == severity]
    return _page(request, rows, limit, offset)


@router.get("/alerts/{alert}", response_model=AlertDetail, responses=NOT_FOUND, tags=["alerts"], summary="One alert")
def alert_detail(
    alert: Annotated[str, Path(description="The alert's id or fingerprint.")],
    database: DatabaseDep,
    settings: SettingsDep,
):
    """An alert (by id or fingerprint) with its state history and runbook."""
    with _answering(), database.session() as session:
        row = find_alert(session, alert)
        alert_id = row.id
        events = [
            {"ts": e.ts, "from": e.from_state, "to": e.to_state, "value": e.value, "actor": e.actor}
            for e in session.scalars(select(AlertEvent).where(AlertEvent.alert_id == row.id).order_by(AlertEvent.id))
        ]
    # the list's view of it: with the silences muting it and whether it is inhibited now
    data = next((a for a in list_alerts(database, settings, state="all") if a["id"] == alert_id), None)
    if data is None:  # removed a moment ago (retention)
        gone = NotFoundError(f"alert {alert!r} does not exist", fix="see GET /api/v1/alerts?state=all")
        raise HTTPException(status_code=404, detail=_detail(gone))
    return {**data, "events": events}


# ---------------------------------------------------------------- incidents


IncidentState = Literal["open", "triggered", "acknowledged", "mitigated", "resolved", "all"]


class Incident(BaseModel):
    """An incident, as ``lorawatch incident list --json``."""

    id: int
    title: str
    adapter: str | None
    severity: str
    state: str = Field(description="triggered, acknowledged, mitigated or resolved")
    source: str = Field(description="alerts or manual")
    commander: str | None
    opened_at: datetime
    opened_by: str
    impact_started_at: datetime | None
    acked_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    time_to_detect_min: float | None
    time_to_acknowledge_min: float | None
    time_to_recover_min: float | None
    summary: str | None
    impact: str | None
    trigger: str | None
    root_cause: str | None
    resolution: str | None
    went_well: str | None
    went_badly: str | None
    got_lucky: str | None


class IncidentAlert(BaseModel):
    """An alert the incident holds."""

    id: int
    rule: str
    state: str
    severity: str
    labels: dict[str, str]
    value: float | None
    summary: str | None
    run: int | None = Field(description="The canary run behind the alert, if any.")
    fired_at: datetime | None
    resolved_at: datetime | None


class TimelineEvent(BaseModel):
    """One line of the timeline: who did or saw what, when."""

    ts: datetime
    actor: str
    kind: str
    message: str
    details: dict[str, Any] | None


class ActionItem(BaseModel):
    """A follow-up from the review."""

    id: int
    description: str
    owner: str
    due_on: date | None
    status: str


class IncidentDetail(Incident):
    """An incident with its alerts, timeline (oldest first) and action items, as
    ``lorawatch incident show ID --json``."""

    alerts: list[IncidentAlert]
    timeline: list[TimelineEvent]
    action_items: list[ActionItem]


class IncidentPage(Page[Incident]):
    """A page of incidents, newest first."""


@router.get("/incidents", response_model=IncidentPage, tags=["incidents"], summary="Incidents")
def incident_list(
    request: Request,
    database: DatabaseDep,
    state: Annotated[IncidentState, Query(description="open: every state but resolved.")] = "open",
    adapter: Annotated[str | None, Query(description="Only this adapter's incidents.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
):
    """Incidents, newest first: the open ones, those in one state, or all."""
    rows = incidents.list_incidents(database, include_resolved=state != "open", adapter=adapter)
    if state not in ("open", "all"):
        rows = [r for r in rows if r["state"] == state]
    return _page(request, rows, limit, offset)


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentDetail,
    responses=NOT_FOUND,
    tags=["incidents"],
    summary="One incident",
)
def incident_detail(incident_id: Annotated[int, Path(description="The incident's id.")], database: DatabaseDep):
    """An incident: state, times, alerts, timeline and action items."""
    with _answering():
        return incidents.show(database, incident_id)


# ---------------------------------------------------------------- latency


class LatencyRow(BaseModel):
    """Latency percentiles and TTFT of one adapter over the window, from merged sketches (1%
    relative error), as ``lorawatch latency --json``."""

    adapter: str
    count: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    ttft_p50_ms: float | None = Field(description="Time to first token, where the logs carry it.")
    ttft_p99_ms: float | None
    window_start: datetime
    window_end: datetime


class LatencyPage(Page[LatencyRow]):
    """A page of adapters' latency, by adapter name."""


@router.get("/latency", response_model=LatencyPage, responses={**NOT_FOUND, **BAD_VALUE}, tags=["latency"])
def latency_by_adapter(
    request: Request,
    database: DatabaseDep,
    window: Annotated[str, Query(description="How far back from now: 30m, 6h, 24h, 7d, 2w.")] = "24h",
    adapter: Annotated[str | None, Query(description="Only this adapter.")] = None,
    tenant: Annotated[str | None, Query(description="Only this tenant's requests.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
):
    """P50, P95 and P99 latency, TTFT, counts and error rate per adapter over the window."""
    with _answering():
        span = traffic_service.parse_window(window)
        if adapter and adapter not in (known := traffic_service.known_adapters(database)):
            raise _unknown_adapter(adapter, known)
    rows = traffic_service.latency(database, window=span, adapter=adapter, tenant=tenant)
    return _page(request, rows, limit, offset)
