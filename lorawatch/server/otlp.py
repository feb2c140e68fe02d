"""``POST /v1/traces``: OTLP/HTTP traces in, their GenAI spans stored as request records.

The body is an ``ExportTraceServiceRequest``: ``application/x-protobuf``, or ``application/json``
in the OTLP JSON mapping (camelCase fields, trace and span ids in hex, int64 as strings or
numbers); ``Content-Encoding: gzip`` or ``deflate`` too, with ``[server] max_body_bytes``
applied to the body as sent and again once inflated. Both encodings parse into the one
protobuf message and follow one path from there.

Spans that name an adapter become request records and go through ``lorawatch ingest
requests``' own validation and storage (``monitors.traffic.ingest_request_frame``: sketches
and counters per minute and hour, so latency, SLOs and costs see them): the batch is stored
whole or not at all, and it is remembered by the sha256 of its (inflated) body, so an
exporter's retry counts nothing twice. Other spans (HTTP, database and other children) are
skipped. A span becomes the record:

==================  ==========================================================================
ts                  ``startTimeUnixNano``
adapter_id          the first of ``[server] otlp_adapter_attributes`` on the span, else on the
                    resource (the resource counts only for spans with a ``gen_ai.*`` attribute)
adapter_version     ``[server] otlp_version_attribute`` (span, then resource)
tenant              the first of ``[server] otlp_tenant_attributes`` (span, then resource)
latency_ms          ``endTimeUnixNano - startTimeUnixNano``
ttft_ms             ``gen_ai.server.time_to_first_token`` or ``gen_ai.response.time_to_first_chunk``
                    (seconds, as the GenAI conventions write them)
prompt_tokens       ``gen_ai.usage.input_tokens`` (or the older ``gen_ai.usage.prompt_tokens``)
completion_tokens   ``gen_ai.usage.output_tokens`` (or the older ``gen_ai.usage.completion_tokens``)
status              error when the span's status code is ERROR, else ok
==================  ==========================================================================

Answers: 200 with an ``ExportTraceServiceResponse`` in the request's content type, the counts
in ``X-LoraWatch-Ingested`` and ``X-LoraWatch-Skipped``; a batch stored before is answered the
same, with nothing counted, ``X-LoraWatch-Duplicate`` and a ``partialSuccess`` warning (0 spans
rejected). 400: a malformed batch (which span, which field), nothing stored. 401: no token with
the ingest scope. 413: over ``max_body_bytes``. 415: another content type or encoding. 429
with ``Retry-After: 1``: ``[server] max_ingests_in_flight`` batches are being stored already
(nothing queues in memory). 503 with ``Retry-After``: the database is busy or unreachable.
Error bodies are the server's JSON ``{"detail": ...}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from sqlalchemy.exc import IntegrityError, OperationalError

from lorawatch.db import Database
from lorawatch.errors import InputError
from lorawatch.monitors import traffic
from lorawatch.server.auth import require
from lorawatch.settings import ServerSettings, Settings

log = logging.getLogger(__name__)

router = APIRouter()

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
# Content-Encoding -> zlib's wbits: gzip, or HTTP's deflate, which is the zlib format (as OTel exporters send it)
ENCODINGS: dict[str, int | None] = {
    "": None,
    "identity": None,
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
TTFT_ATTRIBUTES = ("gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
# what each record column is made of, for the message of a span the validation refuses
FIELDS = {
    "ts": "the span's startTimeUnixNano",
    "latency_ms": "the span's endTimeUnixNano - startTimeUnixNano",
    "ttft_ms": f"{' or '.join(TTFT_ATTRIBUTES)} x 1000",
    "prompt_tokens": " or ".join(INPUT_TOKENS),
    "completion_tokens": " or ".join(OUTPUT_TOKENS),
}
WHERE = "ExportTraceServiceRequest"  # the validation's "where"; its unit is "span"
STORE_ATTEMPTS = 3  # a unique-key race with another process' batch (PostgreSQL) is retried
# Batches are read, parsed and converted side by side but stored one at a time per process:
# two batches of one minute would insert the same new buckets and race on the unique key (the
# loser is retried, STORE_ATTEMPTS). Across processes the bucket rows are locked while merged
# (traffic._upsert); SQLite takes its write lock at BEGIN and stores one at a time anyway.
STORING = threading.Lock()


def slots(app: FastAPI) -> threading.BoundedSemaphore:
    """The app's ingest slots (``[server] max_ingests_in_flight``), made on first use."""
    semaphore = getattr(app.state, "otlp_slots", None)
    if semaphore is None:
        semaphore = threading.BoundedSemaphore(app.state.settings.server.max_ingests_in_flight)
        app.state.otlp_slots = semaphore
    return semaphore


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP traces in",
    description="An ExportTraceServiceRequest (protobuf or OTLP JSON, gzip or deflate allowed); spans that "
    "name an adapter are stored as request records. Takes a bearer token with the ingest scope.",
    response_class=Response,
    responses={
        200: {"content": {PROTOBUF: {}, JSON: {}}, "description": "ExportTraceServiceResponse"},
        400: {"description": "A malformed batch; nothing was stored."},
        401: {"description": "No bearer token with the ingest scope."},
        413: {"description": "The body is over [server] max_body_bytes (sent or inflated)."},
        415: {"description": "Not protobuf or JSON, or an encoding other than gzip or deflate."},
        429: {"description": "[server] max_ingests_in_flight batches are being stored; retry after Retry-After."},
        503: {"description": "The database is busy or unreachable; retry after Retry-After."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def export_traces(request: Request, token: Annotated[str, Depends(require("ingest"))]) -> Response:
    """Store the batch's GenAI spans as request records (all or nothing, never twice)."""
    content_type = _content_type(request)
    wbits = _wbits(request)
    settings: Settings = request.app.state.settings
    in_flight = slots(request.app)
    if not in_flight.acquire(blocking=False):
        raise HTTPException(
            status_code=429,
            detail=f"the server is storing its limit of {settings.server.max_ingests_in_flight} batch(es) "
            "([server] max_ingests_in_flight); retry after 1 s",
            headers={"Retry-After": "1"},
        )
    try:
        body = await read_body(request, settings.server.max_body_bytes)
        return await run_in_threadpool(
            ingest_body, request.app.state.database, settings, body, content_type, wbits, token
        )
    finally:
        in_flight.release()


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, or 413 as soon as it passes ``limit`` bytes (a declared length over
    the limit is refused before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"the body is over {limit} bytes ([server] max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"the body is over {limit} bytes ([server] max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_type(request: Request) -> str:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in CONTENT_TYPES:
        raise HTTPException(
            status_code=415,
            detail=f"content type {given or '(none)'!r} is neither {PROTOBUF} nor {JSON} (OTLP/HTTP)",
        )
    return CONTENT_TYPES[given]


def _wbits(request: Request) -> int | None:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ENCODINGS:
        raise HTTPException(status_code=415, detail=f"content encoding {encoding!r} is not gzip or deflate")
    return ENCODINGS[encoding]


def ingest_body(
    database: Database, settings: Settings, body: bytes, content_type: str, wbits: int | None, token: str
) -> Response:
    """Inflate, parse, convert and store one batch (in a worker thread: all of it blocks)."""
    payload = _inflate(body, wbits, settings.server.max_body_bytes)
    message = _parse(payload, content_type)
    batch = spans_to_records(message, settings.server)
    headers = {"X-LoraWatch-Ingested": "0", "X-LoraWatch-Skipped": str(batch.skipped)}
    answer = ExportTraceServiceResponse()
    if batch.frame is not None:
        result = _store(database, batch, hashlib.sha256(payload).hexdigest(), token)
        headers["X-LoraWatch-Ingested"] = str(result["rows"])
        if result["skipped"]:
            note = f"this batch was {result['reason']} (sha256 {result['sha256'][:16]}); nothing counted twice"
            headers["X-LoraWatch-Duplicate"] = note
            answer.partial_success.error_message = note  # a warning: no span rejected
    if content_type == JSON:
        return Response(json_format.MessageToJson(answer, indent=None), media_type=JSON, headers=headers)
    return Response(answer.SerializeToString(), media_type=PROTOBUF, headers=headers)


def _store(database: Database, batch: SpanRecords, digest: str, token: str) -> dict[str, Any]:
    assert batch.frame is not None
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            with STORING:
                return traffic.ingest_request_frame(
                    database,
                    batch.frame,
                    where=WHERE,
                    unit="span",
                    digest=digest,
                    source=f"OTLP /v1/traces (token {token})",
                    actor=f"token:{token}",
                    audit_details={"source": "otlp", "token": token, "spans": batch.spans, "skipped": batch.skipped},
                    audit_object="otlp_batch",
                )
        except InputError as exc:
            raise HTTPException(status_code=400, detail=batch.explain(exc)) from None
        except IntegrityError:
            # another process inserted the same bucket (or this very batch) first; the next
            # attempt merges into its rows or finds the batch stored
            log.info("OTLP batch %s raced a concurrent one (attempt %d)", digest[:16], attempt)
        except OperationalError as exc:
            log.warning("OTLP batch %s not stored: %s", digest[:16], exc)
            break
    raise HTTPException(
        status_code=503, detail="the database is busy or unreachable; retry", headers={"Retry-After": "1"}
    )


def _inflate(body: bytes, wbits: int | None, limit: int) -> bytes:
    """The body decompressed, refused with 413 as soon as it passes ``limit`` bytes."""
    if wbits is None:
        return body
    out: list[bytes] = []
    size, rest = 0, body
    while rest:
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise HTTPException(status_code=400, detail=f"the body does not decompress ({exc})") from None
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                status_code=413, detail=f"the body is over {limit} bytes decompressed ([server] max_body_bytes)"
            )
        if not inflater.eof:
            raise HTTPException(status_code=400, detail="the compressed body is truncated")
        out.append(chunk)
        rest = inflater.unused_data
        if rest and wbits == zlib.MAX_WBITS:  # gzip allows members one after another; deflate does not
            raise HTTPException(status_code=400, detail="bytes after the end of the deflate stream")
    return b"".join(out)


def _parse(payload: bytes, content_type: str) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(payload)
        except DecodeError:
            raise HTTPException(
                status_code=400, detail="the body is not a protobuf ExportTraceServiceRequest (wire format corrupt)"
            ) from None
        return message
    try:
        document = json.loads(payload)
    except RecursionError:
        raise HTTPException(status_code=400, detail="the JSON body is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(
            status_code=400, detail=f"the body is not JSON ({getattr(exc, 'msg', 'not UTF-8')})"
        ) from None
    if not isinstance(document, dict):
        raise HTTPException(status_code=400, detail="the JSON body must be an object (ExportTraceServiceRequest)")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except RecursionError:
        raise HTTPException(status_code=400, detail="the JSON body is nested too deeply") from None
    except json_format.ParseError as exc:
        raise HTTPException(status_code=400, detail=f"not an OTLP JSON ExportTraceServiceRequest: {exc}") from None
    return message


ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP JSON writes trace and span ids in hex; protobuf's JSON mapping reads bytes as base64."""

    def items(parent: Any, *keys: str) -> list[tuple[int, Any]]:
        if isinstance(parent, dict):
            for key in keys:
                if isinstance(parent.get(key), list):
                    return list(enumerate(parent[key]))
        return []

    def rewrite(obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            return
        for key in ID_FIELDS:
            value = obj.get(key)
            if isinstance(value, str):
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    raise HTTPException(
                        status_code=400,
                        detail=f"{where}.{key} {value[:40]!r} is not hex (OTLP JSON writes trace and span ids in hex)",
                    ) from None

    for r, resource_spans in items(document, "resourceSpans", "resource_spans"):
        for s, scope_spans in items(resource_spans, "scopeSpans", "scope_spans"):
            for p, span in items(scope_spans, "spans"):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{p}]"
                rewrite(span, where)
                for n, link in items(span, "links"):
                    rewrite(link, f"{where}.links[{n}]")


# ---------------------------------------------------------------- spans to request records


@dataclass
class SpanRecords:
    """A batch's GenAI spans as request records (``frame``, None when there are none)."""

    frame: pd.DataFrame | None
    spans: int  # all spans in the batch
    skipped: int  # spans that name no adapter
    by_line: dict[int, Span] = field(default_factory=dict)  # each record's span, by its _line

    def explain(self, exc: InputError) -> str:
        """The validation's message about a record, told in the span's terms."""
        found = re.search(r"\bspan (\d+)$", exc.where or "")
        if found is None:
            return exc.one_line()
        line = int(found.group(1))
        span = self.by_line.get(line, Span())
        text = (
            f"span {line} of the batch (name {span.name[:80]!r}, traceId {span.trace_id.hex() or '(none)'}, "
            f"spanId {span.span_id.hex() or '(none)'}): {exc.what}"
        )
        column = re.search(r"\b(" + "|".join(FIELDS) + r")\b", exc.what)
        if column is not None:
            text += f" ({column.group(1)} is {FIELDS[column.group(1)]})"
        text += "; the batch was refused whole, nothing was stored"
        return text + (f"; fix: {exc.fix}" if exc.fix else "")


def spans_to_records(message: ExportTraceServiceRequest, server: ServerSettings) -> SpanRecords:
    """One request record per span that names an adapter (see the module's table)."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "ts",
            "adapter_id",
            "adapter_version",
            "tenant",
            "latency_ms",
            "ttft_ms",
            "prompt_tokens",
            "completion_tokens",
            "status",
            "_line",
        )
    }
    by_line: dict[int, Span] = {}
    number = skipped = 0
    adapter_keys, tenant_keys = server.otlp_adapter_attributes, server.otlp_tenant_attributes
    version_keys = [server.otlp_version_attribute]
    for resource_spans in message.resource_spans:
        resource = {kv.key: kv.value for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                number += 1
                attributes = {kv.key: kv.value for kv in span.attributes}
                adapter = _name(adapter_keys, attributes, resource, genai_only=True)
                if not adapter:
                    skipped += 1
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                columns["ts"].append(start)
                columns["adapter_id"].append(adapter)
                columns["adapter_version"].append(_name(version_keys, attributes, resource))
                columns["tenant"].append(_name(tenant_keys, attributes, resource))
                columns["latency_ms"].append((end - start) / 1e6)
                columns["ttft_ms"].append(_number(TTFT_ATTRIBUTES, attributes, scale=1000.0))
                columns["prompt_tokens"].append(_number(INPUT_TOKENS, attributes))
                columns["completion_tokens"].append(_number(OUTPUT_TOKENS, attributes))
                columns["status"].append("error" if span.status.code == Status.STATUS_CODE_ERROR else "ok")
                columns["_line"].append(number)
                by_line[number] = span
    frame = None
    if columns["_line"]:
        # as times (a start past 2262 is clipped there, and refused as in the future)
        starts = np.minimum(np.array(columns.pop("ts"), dtype=np.uint64), np.uint64(np.iinfo(np.int64).max))
        frame = pd.DataFrame({"ts": pd.to_datetime(starts.astype(np.int64), unit="ns", utc=True), **columns})
    return SpanRecords(frame=frame, spans=number, skipped=skipped, by_line=by_line)


def _scalar(value: AnyValue) -> Any:
    """An attribute's value: a string, int or float as such; others as a tag no number parses."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "int_value", "double_value"):
        return getattr(value, kind)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return None if kind is None else f"<{kind.removesuffix('_value')}>"


def _name(keys: list[str], span: dict[str, AnyValue], resource: dict[str, AnyValue], genai_only: bool = False) -> str:
    """The first of ``keys`` with a non-empty string or int value, on the span, else on the
    resource (with ``genai_only``: only for a span with a ``gen_ai.*`` attribute)."""
    use_resource = bool(resource) and (not genai_only or any(key.startswith("gen_ai.") for key in span))
    for key in keys:
        for attributes in (span, resource) if use_resource else (span,):
            value = attributes.get(key)
            kind = None if value is None else value.WhichOneof("value")
            if kind in ("string_value", "int_value"):
                name = str(getattr(value, kind)).strip()
                if name:
                    return name
    return ""


def _number(keys: tuple[str, ...], span: dict[str, AnyValue], scale: float = 1.0) -> Any:
    """The first of ``keys`` present on the span, times ``scale``; a value that is no number is
    passed on as written, for the validation to refuse; NaN too (as text)."""
    for key in keys:
        if key in span:
            value = _scalar(span[key])
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    return value
                return number * scale if number == number else value
            if value is None:
                return None
            return value * scale if value == value else "NaN"
    return None
