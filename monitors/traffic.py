"""Serving traffic: request logs and KPI tables in, per-adapter latency percentiles, costs,
SLO burn rates and KPI drops out.

Requests are stored as per-(adapter, version, tenant, minute) counters and DDSketches, so a
percentile over any window, adapter or tenant set merges sketches instead of scanning rows.
A file is validated whole before anything is written (all or nothing) and is remembered by
content hash, so ingesting it twice counts nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from tqdm import tqdm

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import AdapterRecord, IngestedFile, KpiValue, TrafficHour, TrafficMinute
from lorawatch.db.models.traffic import bucket_table
from lorawatch.db.types import utcnow
from lorawatch.durations import parse_duration
from lorawatch.errors import DatasetError, InputError
from lorawatch.inputs import NESTED_TOO_DEEPLY
from lorawatch.monitors.sketch import DDSketch, merge_many, sketches_by_group

REQUEST_COLUMNS = {
    "ts": "time of the request (ISO 8601, or epoch seconds)",
    "adapter_id": "adapter name",
    "adapter_version": "version",
    "base_model_id": "base model",
    "tenant": "tenant",
    "latency_ms": "end-to-end latency (ms)",
    "ttft_ms": "time to first token (ms)",
    "prompt_tokens": "prompt tokens",
    "completion_tokens": "completion tokens",
    "gpu_seconds": "GPU seconds",
    "status": "HTTP status or ok/error",
}
REQUIRED_REQUEST = ("ts", "adapter_id", "latency_ms")
KPI_COLUMNS = {"ts": "time", "adapter_id": "adapter name", "kpi": "KPI name", "value": "value", "tenant": "tenant"}
REQUIRED_KPI = ("ts", "adapter_id", "kpi", "value")


# ---------------------------------------------------------------- reading files


def read_table(path: Path) -> tuple[pd.DataFrame, str, bytes]:
    """A JSONL, CSV or Parquet file as a frame with a ``_line`` column (file line or row)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror})", where=str(path), fix="pass an existing file") from None
    if not raw.strip():
        raise DatasetError("the file is empty", where=str(path), fix="write a header row or one JSON object per line")
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        records, lines = [], []
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=float)
            except RecursionError:
                raise DatasetError(
                    NESTED_TOO_DEEPLY, where=f"{path}:{number}", fix="write one flat JSON object per line"
                ) from None
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DatasetError(
                    f"invalid JSON ({getattr(exc, 'msg', 'not UTF-8')})",
                    where=f"{path}:{number}",
                    fix="write one JSON object per line",
                ) from None
            if not isinstance(obj, dict):
                raise DatasetError(
                    "a line must be a JSON object", where=f"{path}:{number}", fix="write one object per line"
                )
            records.append(obj)
            lines.append(number)
        frame = pd.DataFrame.from_records(records)
        frame["_line"] = lines
        return frame, "line", raw
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise DatasetError(
                f"unreadable CSV ({exc})", where=str(path), fix="write a header row and comma-separated values"
            ) from None
        frame = frame.replace({"": None})
        frame["_line"] = np.arange(len(frame)) + 2
        return frame, "line", raw
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DatasetError(
                f"unreadable Parquet ({exc})", where=str(path), fix="write the file with pandas or pyarrow"
            ) from None
        frame["_line"] = np.arange(len(frame)) + 1
        return frame, "row", raw
    raise InputError(f"unknown file type {suffix!r}", where=str(path), fix="use .jsonl, .csv or .parquet")


def _fail(path: Path | str, unit: str, line: int, what: str, fix: str):
    raise DatasetError(what, where=f"{path}:{line}" if unit == "line" else f"{path}: {unit} {line}", fix=fix)


def _check_columns(frame: pd.DataFrame, path: Path | str, known: dict[str, str], required: tuple[str, ...]) -> None:
    unknown = [c for c in frame.columns if c != "_line" and c not in known]
    if unknown:
        raise DatasetError(
            f"unknown column(s) {', '.join(map(str, unknown))}", where=str(path), fix=f"use only: {', '.join(known)}"
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"missing column(s) {', '.join(missing)}", where=str(path), fix=f"add {', '.join(missing)}")
    if frame.empty:
        raise DatasetError("the file has no rows", where=str(path), fix="add records")


# Epoch numbers by magnitude: seconds, milliseconds, microseconds or nanoseconds since 1970 for
# times from 2001 to 2286; anything else is refused rather than guessed.
EPOCH_UNITS = ((1e9, 1e10, "s"), (1e12, 1e13, "ms"), (1e15, 1e16, "us"), (1e18, 1e19, "ns"))
PLAUSIBLE_FROM = pd.Timestamp("2000-01-01", tz="UTC")


def _epoch_unit(values: pd.Series) -> str | None:
    magnitude = float(values.abs().median()) if len(values) else 0.0
    return next((unit for low, high, unit in EPOCH_UNITS if low <= magnitude < high), None)


def _times(frame: pd.DataFrame, path: Path | str, unit: str) -> pd.Series:
    column = frame["ts"]
    if pd.api.types.is_numeric_dtype(column):
        epoch = _epoch_unit(column)
        if epoch is None:
            _fail(
                path,
                unit,
                int(frame["_line"].iloc[0]),
                f"epoch timestamps like {column.iloc[0]!r} are neither seconds, milliseconds, microseconds nor nanoseconds",
                "write ISO 8601 (2026-11-30T14:00:00Z) or epoch seconds",
            )
        ts = pd.to_datetime(column, unit=epoch, utc=True, errors="coerce")
    elif pd.api.types.is_datetime64_any_dtype(column):
        ts = pd.to_datetime(column, utc=True)
    else:
        ts = pd.to_datetime(column.astype("string"), utc=True, errors="coerce", format="ISO8601")
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        _fail(
            path,
            unit,
            int(frame["_line"].iloc[i]),
            f"bad timestamp {frame['ts'].iloc[i]!r}",
            "write ISO 8601 (2026-11-30T14:00:00Z) or epoch seconds",
        )
    latest = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    implausible = ((ts < PLAUSIBLE_FROM) | (ts > latest)).to_numpy()
    if implausible.any():
        i = int(np.argmax(implausible))
        _fail(
            path,
            unit,
            int(frame["_line"].iloc[i]),
            f"timestamp ts {frame['ts'].iloc[i]!r} is not a plausible time (before 2000 or in the future)",
            "check the clock and the unit (ISO 8601, or epoch seconds)",
        )
    return ts


def _numbers(
    frame: pd.DataFrame,
    name: str,
    path: Path | str,
    unit: str,
    default: float | None = None,
    allow_negative: bool = False,
) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), default if default is not None else np.nan)
    raw = frame[name]
    values = pd.to_numeric(raw, errors="coerce")
    missing = raw.isna().to_numpy()
    bad = values.isna().to_numpy() & ~missing
    if bad.any():
        i = int(np.argmax(bad))
        _fail(
            path,
            unit,
            int(frame["_line"].iloc[i]),
            f"{name} {raw.iloc[i]!r} is not a number",
            f"write {name} as a number",
        )
    values = values.to_numpy(dtype=np.float64)
    infinite = np.isinf(values)
    if infinite.any():
        i = int(np.argmax(infinite))
        _fail(
            path,
            unit,
            int(frame["_line"].iloc[i]),
            f"{name} {raw.iloc[i]!r} is not finite",
            f"write {name} as a number",
        )
    if default is not None:
        values = np.where(missing, default, values)
    if allow_negative:
        return values
    negative = np.nan_to_num(values, nan=0.0) < 0
    if negative.any():
        i = int(np.argmax(negative))
        _fail(path, unit, int(frame["_line"].iloc[i]), f"negative {name} {values[i]:g}", f"{name} must be >= 0")
    return values


def _strings(frame: pd.DataFrame, name: str, path: Path | str, unit: str, required: bool = False) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    column = frame[name]
    values = column.where(column.notna(), "").astype(str).str.strip().to_numpy(dtype=object)
    if required:
        empty = values == ""
        if empty.any():
            i = int(np.argmax(empty))
            _fail(path, unit, int(frame["_line"].iloc[i]), f"empty {name}", f"give every record a {name}")
    return values


def _errors(frame: pd.DataFrame) -> np.ndarray:
    if "status" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    status = frame["status"].where(frame["status"].notna(), "ok").astype(str).str.strip().str.lower()
    numeric = pd.to_numeric(status, errors="coerce")
    return (numeric.fillna(0).to_numpy() >= 400) | status.isin(["error", "failed", "timeout", "cancelled"]).to_numpy()


@dataclass
class RequestBatch:
    """Validated request records as arrays."""

    minute: np.ndarray  # datetime64[ns, UTC] floored to the minute
    adapter: np.ndarray
    version: np.ndarray
    tenant: np.ndarray
    base_model: np.ndarray
    latency_ms: np.ndarray
    ttft_ms: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    gpu_seconds: np.ndarray
    error: np.ndarray

    def __len__(self) -> int:
        return len(self.latency_ms)


def validate_requests(frame: pd.DataFrame, path: Path | str, unit: str) -> RequestBatch:
    """Check every record of a request log; the first problem raises with its line (or the
    ``unit`` its ``_line`` counts: row, span) at ``path``."""
    _check_columns(frame, path, REQUEST_COLUMNS, REQUIRED_REQUEST)
    ts = _times(frame, path, unit)
    latency = _numbers(frame, "latency_ms", path, unit)
    if np.isnan(latency).any():
        i = int(np.argmax(np.isnan(latency)))
        _fail(path, unit, int(frame["_line"].iloc[i]), "missing latency_ms", "give every request a latency_ms")
    return RequestBatch(
        minute=ts.dt.floor("min").to_numpy(),
        adapter=_strings(frame, "adapter_id", path, unit, required=True),
        version=_strings(frame, "adapter_version", path, unit),
        tenant=_strings(frame, "tenant", path, unit),
        base_model=_strings(frame, "base_model_id", path, unit),
        latency_ms=latency,
        ttft_ms=_numbers(frame, "ttft_ms", path, unit),
        prompt_tokens=_numbers(frame, "prompt_tokens", path, unit, 0.0),
        completion_tokens=_numbers(frame, "completion_tokens", path, unit, 0.0),
        gpu_seconds=_numbers(frame, "gpu_seconds", path, unit, 0.0),
        error=_errors(frame),
    )


# ---------------------------------------------------------------- ingesting


def _already(session, kind: str, digest: str) -> IngestedFile | None:
    return session.scalar(select(IngestedFile).where(IngestedFile.kind == kind, IngestedFile.sha256 == digest))


def ingest_requests(db: Database, path: Path, *, actor: str, progress: bool = False) -> dict[str, Any]:
    """Validate a request log whole, then store its per-minute aggregates in one transaction."""
    frame, unit, raw = read_table(path)
    result = ingest_request_frame(
        db,
        frame,
        where=Path(path),
        unit=unit,
        digest=hashlib.sha256(raw).hexdigest(),
        source=str(Path(path).resolve()),
        actor=actor,
        audit_details={"path": str(path)},
        progress=progress,
        label=f"ingesting {Path(path).name}",
    )
    return {"file": str(path), **result}


def ingest_request_frame(
    db: Database,
    frame: pd.DataFrame,
    *,
    where: Path | str,
    unit: str,
    digest: str,
    source: str,
    actor: str,
    audit_details: dict[str, Any],
    audit_object: str = "file",
    progress: bool = False,
    label: str = "",
) -> dict[str, Any]:
    """Validate request records whole (``frame``: REQUEST_COLUMNS and ``_line``), then store their
    per-minute and per-hour aggregates in one transaction.

    ``digest`` is the sha256 of the content the records came in (a file, an OTLP batch): it is
    remembered with ``source``, and the same digest again counts nothing twice. A problem raises
    DatasetError at ``where`` with the record's ``_line`` in ``unit`` (line, row, span).
    """
    with db.session() as session:
        seen = _already(session, "requests", digest)
        if seen is not None:
            return {
                "sha256": digest,
                "rows": 0,
                "skipped": True,
                "reason": f"already ingested at {seen.ingested_at.isoformat()}",
                "minutes": 0,
            }
    batch = validate_requests(frame, where, unit)
    minute_rows = _bucket_rows(batch, batch.minute, progress, label)
    hours = pd.DatetimeIndex(batch.minute).floor("h").to_numpy()
    hour_rows = _bucket_rows(batch, hours, False, "")
    with db.session() as session:
        if _already(session, "requests", digest) is not None:  # another process got there first
            return {"sha256": digest, "rows": 0, "skipped": True, "reason": "ingested concurrently", "minutes": 0}
        merged_count = _upsert(session, TrafficMinute, minute_rows)
        _upsert(session, TrafficHour, hour_rows)
        record = IngestedFile(kind="requests", sha256=digest, path=source, rows=len(batch), actor=actor)
        session.add(record)
        audit.record(
            session,
            actor=actor,
            action="ingest.requests",
            object_type=audit_object,
            object_id=digest[:16],
            details={**audit_details, "rows": len(batch), "minutes": len(minute_rows)},
        )
    return {
        "sha256": digest,
        "rows": len(batch),
        "skipped": False,
        "minutes": len(minute_rows),
        "hours": len(hour_rows),
        "merged_into_existing": merged_count,
    }


def _bucket_rows(batch: RequestBatch, buckets: np.ndarray, progress: bool, label: str) -> list[dict[str, Any]]:
    """One row per (adapter, version, tenant, bucket): counters and sketches, built vectorised."""
    keys = pd.DataFrame({"adapter": batch.adapter, "version": batch.version, "tenant": batch.tenant, "bucket": buckets})
    group_ids, uniques = pd.MultiIndex.from_frame(keys).factorize()
    n_groups = len(uniques)
    latency = sketches_by_group(group_ids, batch.latency_ms, n_groups=n_groups)
    has_ttft = ~np.isnan(batch.ttft_ms)
    ttft = sketches_by_group(group_ids[has_ttft], batch.ttft_ms[has_ttft], n_groups=n_groups)
    ttft_has = np.bincount(group_ids[has_ttft], minlength=n_groups) > 0
    sums = {
        name: np.bincount(group_ids, weights=getattr(batch, name), minlength=n_groups)
        for name in ("prompt_tokens", "completion_tokens", "gpu_seconds")
    }
    requests = np.bincount(group_ids, minlength=n_groups)
    errors = np.bincount(group_ids, weights=batch.error.astype(np.float64), minlength=n_groups)
    base_of = pd.Series(batch.base_model).groupby(group_ids).first().to_numpy()
    adapters = uniques.get_level_values(0).tolist()
    versions = uniques.get_level_values(1).tolist()
    tenants = uniques.get_level_values(2).tolist()
    times = pd.DatetimeIndex(uniques.get_level_values(3)).tz_convert("UTC").to_pydatetime().tolist()
    prompt, completion, gpu = (sums[k].tolist() for k in ("prompt_tokens", "completion_tokens", "gpu_seconds"))
    requests, errors = requests.tolist(), errors.tolist()

    return [
        {
            "minute": times[g],
            "adapter": adapters[g],
            "version": versions[g],
            "tenant": tenants[g],
            "base_model": base_of[g] or "",
            "requests": requests[g],
            "errors": int(errors[g]),
            "prompt_tokens": int(prompt[g]),
            "completion_tokens": int(completion[g]),
            "gpu_seconds": gpu[g],
            "latency_sketch": latency[g],
            "ttft_sketch": ttft[g] if ttft_has[g] else None,
        }
        for g in tqdm(range(n_groups), desc=label, unit="bucket", disable=not progress, leave=False)
    ]


def _upsert(session, model, rows: list[dict[str, Any]]) -> int:
    """Insert new bucket rows; merge sketches and counters into rows that exist already.

    The rows to merge into are locked (``FOR UPDATE`` on PostgreSQL; SQLite has one writer at a
    time anyway): two ingests into the same buckets at once would otherwise each add to what
    they read, and one's counts would be lost. Two that insert the same new bucket at once: the
    second fails on the unique key and its whole transaction is rolled back, nothing lost."""
    if not rows:
        return 0
    low = min(r["minute"] for r in rows)
    high = max(r["minute"] for r in rows)
    adapters = sorted({r["adapter"] for r in rows})
    existing = {}
    for chunk in range(0, len(adapters), 500):
        for row in session.scalars(
            select(model)
            .where(model.minute >= low, model.minute <= high, model.adapter.in_(adapters[chunk : chunk + 500]))
            .with_for_update()
        ):
            existing[(row.adapter, row.version, row.tenant, row.minute.replace(tzinfo=None))] = row
    new = []
    merged_count = 0
    for r in rows:
        old = (
            existing.get((r["adapter"], r["version"], r["tenant"], r["minute"].replace(tzinfo=None)))
            if existing
            else None
        )
        if old is None:
            new.append(r)
            continue
        merged_count += 1
        old.requests += r["requests"]
        old.errors += r["errors"]
        old.prompt_tokens += r["prompt_tokens"]
        old.completion_tokens += r["completion_tokens"]
        old.gpu_seconds += r["gpu_seconds"]
        old.latency_sketch = (
            DDSketch.from_bytes(old.latency_sketch).merge(DDSketch.from_bytes(r["latency_sketch"])).to_bytes()
        )
        if r["ttft_sketch"]:
            base = DDSketch.from_bytes(old.ttft_sketch) if old.ttft_sketch else DDSketch()
            old.ttft_sketch = base.merge(DDSketch.from_bytes(r["ttft_sketch"])).to_bytes()
    if new:
        _bulk_insert(session, model, new)
    return merged_count


def _bulk_insert(session, model, rows: list[dict[str, Any]]) -> None:
    """Insert many bucket rows through the driver's executemany.

    SQLAlchemy's per-row parameter processing costs more than SQLite's own insert here, so
    the values are prepared once per column the way the column types would store them.
    """
    connection = session.connection()
    dialect = connection.dialect
    table = model.__table__
    columns = [c for c in table.c if c.name != "id"]
    compiled = table.insert().compile(dialect=dialect, column_keys=[c.name for c in columns])
    # the bind processors include the UTC TypeDecorator's conversion and the driver's own
    processors = {c.name: c.type._cached_bind_processor(dialect) for c in columns}
    names = [c.name for c in columns]
    columns_values = {}
    for name in names:
        processor = processors[name]
        raw = [r.get(name) for r in rows]
        columns_values[name] = [processor(v) for v in raw] if processor else raw
    if compiled.positiontup is not None:
        order = list(compiled.positiontup)
        params = list(zip(*(columns_values[n] for n in order)))
    else:
        params = [dict(zip(names, values)) for values in zip(*(columns_values[n] for n in names))]
    connection.exec_driver_sql(compiled.string, params)


def ingest_kpis(db: Database, path: Path, *, actor: str) -> dict[str, Any]:
    """Validate a KPI table whole (ts, adapter_id, kpi, value[, tenant]) and store it."""
    frame, unit, raw = read_table(path)
    digest = hashlib.sha256(raw).hexdigest()
    with db.session() as session:
        if _already(session, "kpis", digest) is not None:
            return {"file": str(path), "sha256": digest, "rows": 0, "skipped": True, "reason": "already ingested"}
    _check_columns(frame, Path(path), KPI_COLUMNS, REQUIRED_KPI)
    ts = _times(frame, Path(path), unit)
    value = _numbers(frame, "value", Path(path), unit, allow_negative=True)
    if np.isnan(value).any():
        i = int(np.argmax(np.isnan(value)))
        _fail(Path(path), unit, int(frame["_line"].iloc[i]), "missing value", "give every KPI observation a value")
    adapter = _strings(frame, "adapter_id", Path(path), unit, required=True)
    kpi = _strings(frame, "kpi", Path(path), unit, required=True)
    tenant = _strings(frame, "tenant", Path(path), unit)
    with db.session() as session:
        record = IngestedFile(kind="kpis", sha256=digest, path=str(Path(path).resolve()), rows=len(frame), actor=actor)
        session.add(record)
        session.flush()
        session.execute(
            KpiValue.__table__.insert(),
            [
                {"ts": t.to_pydatetime(), "adapter": a, "tenant": te, "kpi": k, "value": float(v), "file_id": record.id}
                for t, a, te, k, v in zip(ts, adapter, tenant, kpi, value)
            ],
        )
        audit.record(
            session,
            actor=actor,
            action="ingest.kpis",
            object_type="file",
            object_id=digest[:16],
            details={"path": str(path), "rows": len(frame)},
        )
    return {"file": str(path), "sha256": digest, "rows": len(frame), "skipped": False}


# ---------------------------------------------------------------- reading back


def known_adapters(db: Database) -> list[str]:
    """Adapter names with serving traffic or KPIs, and registered ones."""
    with db.session() as session:
        names = set(session.scalars(select(TrafficHour.adapter).distinct()))
        names |= set(session.scalars(select(KpiValue.adapter).distinct()))
        names |= set(session.scalars(select(AdapterRecord.name)))
    return sorted(names)


def parse_window(text: str) -> timedelta:
    """A reporting window in the one duration grammar (``30m``, ``6h``, ``7d``, ``2w``, ``1h30m``);
    it must be longer than zero."""
    try:
        window = parse_duration(text)
    except ValueError:
        window = None
    if window is None or window <= timedelta(0):
        raise InputError(
            f"window {text!r} is not a duration longer than zero", fix="write e.g. 30m, 6h, 7d, 2w or 1h30m"
        )
    return window


def _buckets(session, start: datetime, end: datetime, adapter: str | None, tenant: str | None):
    model, start = bucket_table(start, end)
    query = select(model.adapter, model.tenant, model.requests, model.errors, model.latency_sketch, model.ttft_sketch)
    query = query.where(model.minute >= start, model.minute < end)
    if adapter:
        query = query.where(model.adapter == adapter)
    if tenant is not None:
        query = query.where(model.tenant == tenant)
    return session.execute(query).all()


def latency(
    db: Database,
    *,
    window: timedelta,
    adapter: str | None = None,
    tenant: str | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """P50/P95/P99 latency (and TTFT) with counts per adapter over a window, from merged sketches
    (hourly ones for windows of 6 hours or more, see ``lorawatch.db.models.traffic.bucket_table``)."""
    end = end or utcnow()
    start = end - window
    with db.session() as session:
        rows = _buckets(session, start, end, adapter, tenant)
    per: dict[str, dict[str, Any]] = {}
    for name, _tenant, _requests, errors, blob, ttft_blob in rows:
        entry = per.setdefault(name, {"blobs": [], "ttft": [], "errors": 0})
        entry["blobs"].append(blob)
        if ttft_blob:
            entry["ttft"].append(ttft_blob)
        entry["errors"] += errors
    for entry in per.values():
        entry["sketch"] = merge_many(entry.pop("blobs"))
        entry["ttft"] = merge_many(entry["ttft"])
    result = []
    for name in sorted(per):
        s, t = per[name]["sketch"], per[name]["ttft"]
        result.append(
            {
                "adapter": name,
                "count": s.count,
                "errors": per[name]["errors"],
                "error_rate": per[name]["errors"] / s.count if s.count else 0.0,
                "p50_ms": s.quantile(0.5),
                "p95_ms": s.quantile(0.95),
                "p99_ms": s.quantile(0.99),
                "mean_ms": s.mean,
                "ttft_p50_ms": t.quantile(0.5),
                "ttft_p99_ms": t.quantile(0.99),
                "window_start": start,
                "window_end": end,
            }
        )
    return result
