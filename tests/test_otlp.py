"""OTLP/HTTP traces in (``POST /v1/traces``): spans sent by the real OpenTelemetry SDK and
exporter to a real server on loopback become request records, through the same validation and
sketches as ``lorawatch ingest requests``; malformed, oversized, unauthorised and excess batches
are refused whole, and a batch sent twice counts once."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from openapi_spec_validator import validate
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status as SdkStatus
from opentelemetry.trace import StatusCode
from sqlalchemy import func, select

from lorawatch import access
from lorawatch.db.models import AuditLog, IngestedFile, TrafficHour, TrafficMinute
from lorawatch.db.types import utcnow
from lorawatch.server import otlp
from lorawatch.server.app import create_app
from lorawatch.settings import ServerSettings, load_settings

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@dataclass
class Server:
    url: str
    app: FastAPI
    token: str  # ingest scope
    read_token: str  # read scope only

    def post(self, body: Any, headers: dict[str, str], token: str | None = "ingest") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.token if token == 'ingest' else token}"} if token else {}
        return httpx.post(f"{self.url}/v1/traces", content=body, headers={**headers, **auth}, timeout=30)


@pytest.fixture
def serve(lw_env, db) -> Iterator:
    """Start ``lorawatch server``'s app (uvicorn, a thread, a free loopback port) over the test
    database, with ``[server]`` settings overridden; it stops when the test ends."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**server_settings: Any) -> Server:
        settings = load_settings()
        for name, value in server_settings.items():
            setattr(settings.server, name, value)
        app = create_app(settings, db)
        with db.session() as session:
            _, token = access.create(session, name=f"collector{len(running)}", scopes=["ingest"], actor="tester")
            _, read_token = access.create(session, name=f"grafana{len(running)}", scopes=["read"], actor="tester")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        return Server(f"http://127.0.0.1:{sock.getsockname()[1]}", app, token, read_token)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)


def _value(value: Any) -> AnyValue:
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _span(name: str, start: int, duration_ns: int, error: bool = False, **attributes: Any) -> Span:
    return Span(
        trace_id=bytes(range(16)),
        span_id=start.to_bytes(8, "big"),
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=[KeyValue(key=k.replace("__", "."), value=_value(v)) for k, v in attributes.items()],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
    )


def _batch(*spans: Span, **resource: Any) -> bytes:
    message = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=ResourcePb(
                    attributes=[KeyValue(key=k.replace("__", "."), value=_value(v)) for k, v in resource.items()]
                ),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )
    return message.SerializeToString()


def _start(minutes_ago: float = 20) -> int:
    return int((utcnow().timestamp() - minutes_ago * 60) * 1e9)


def _stored(db) -> tuple[int, int, int]:
    with db.session() as s:
        return (
            s.scalar(select(func.coalesce(func.sum(TrafficMinute.requests), 0))),
            s.scalar(select(func.count()).select_from(TrafficHour)),
            s.scalar(select(func.count()).select_from(IngestedFile)),
        )


def test_spans_from_the_sdk_give_the_exact_percentiles_per_adapter(serve, db, cli):
    server = serve()
    rng = np.random.default_rng(7)
    durations_ns = {  # whole microseconds, so each duration in ms is exact
        "support": (rng.lognormal(4.5, 0.5, 400) * 1000).round().astype(np.int64) * 1000,
        "billing": (rng.lognormal(6.0, 0.4, 300) * 1000).round().astype(np.int64) * 1000,
    }
    exporter = OTLPSpanExporter(
        endpoint=f"{server.url}/v1/traces", headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "vllm", "tenant.id": "acme"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=256, schedule_delay_millis=100))
    tracer = provider.get_tracer("test")
    start = _start()
    for adapter, durations in durations_ns.items():
        for i, duration in enumerate(durations.tolist()):
            begin = start + i * 1_000_000_000
            attributes: dict[str, Any]
            if adapter == "support":  # the adapter is the model vLLM was asked for
                attributes = {"gen_ai.request.model": "support", "lora.adapter.version": "v3"}
            else:  # lora.adapter is listed first, so it wins over the base model's name
                attributes = {"lora.adapter": "billing", "gen_ai.request.model": "llama-3-8b", "tenant.id": "globex"}
            attributes |= {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.server.time_to_first_token": 0.05,
            }
            span = tracer.start_span(f"chat {adapter}", start_time=begin, attributes=attributes)
            if adapter == "billing" and i % 10 == 0:
                span.set_status(SdkStatus(StatusCode.ERROR))
            if i % 4 == 0:  # an HTTP child span: no adapter attribute, skipped
                child = tracer.start_span("POST /v1/completions", start_time=begin + 1000, attributes={"http.x": 1})
                child.end(end_time=begin + 2000)
            span.end(end_time=begin + duration)
    assert provider.force_flush(30_000)
    provider.shutdown()

    requests, _, batches = _stored(db)
    assert requests == 700 and batches >= 3  # 875 spans in batches of 256, the 175 children skipped
    result = cli("latency", "--json")
    assert result.code == 0, result.err
    rows = {r["adapter"]: r for r in result.json()}
    assert set(rows) == {"support", "billing"}
    for adapter, durations in durations_ns.items():
        exact_ms = durations / 1e6
        assert rows[adapter]["count"] == len(durations)
        for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            # DDSketch returns the lower order statistic at rank q * (n - 1), within 0.5% relative
            assert rows[adapter][key] == pytest.approx(np.quantile(exact_ms, q, method="lower"), rel=0.01)
        assert rows[adapter]["ttft_p50_ms"] == pytest.approx(50.0, rel=0.01)
    assert rows["billing"]["errors"] == 30 and rows["support"]["errors"] == 0
    with db.session() as s:
        buckets = s.execute(
            select(
                TrafficMinute.adapter,
                TrafficMinute.version,
                TrafficMinute.tenant,
                func.sum(TrafficMinute.prompt_tokens),
                func.sum(TrafficMinute.completion_tokens),
            ).group_by(TrafficMinute.adapter, TrafficMinute.version, TrafficMinute.tenant)
        ).all()
        assert sorted(buckets) == [("billing", "", "globex", 3000, 6000), ("support", "v3", "acme", 4000, 8000)]
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "ingest.requests")).all()
        assert {a.actor for a in audit} == {"token:collector0"} and audit[0].object_type == "otlp_batch"


def _json_batch(start: int) -> dict[str, Any]:
    """OTLP JSON as an SDK in another language writes it: ids in hex, int64 as strings or numbers."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "lorawatch.tenant", "value": {"stringValue": "initech"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "gateway"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "",
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": start + 250_000_000,
                                "attributes": [
                                    {"key": "lora.adapter", "value": {"stringValue": "search"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 9}},
                                    {"key": "gen_ai.server.time_to_first_token", "value": {"doubleValue": 0.02}},
                                ],
                                "status": {"code": 2, "message": "upstream timeout"},
                                "someFieldFromTheFuture": True,
                            },
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "0011223344556677",
                                "name": "GET /health",
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": str(start + 1000),
                            },
                        ],
                    }
                ],
            }
        ]
    }


def test_json_gzip_and_deflate_bodies_are_accepted(serve, db, cli):
    server = serve()
    answer = server.post(json.dumps(_json_batch(_start())), JSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json" and answer.json() == {}
    assert answer.headers["x-lorawatch-ingested"] == "1" and answer.headers["x-lorawatch-skipped"] == "1"

    zipped = gzip.compress(json.dumps(_json_batch(_start(19))).encode())
    answer = server.post(zipped, {**JSON, "Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.headers["x-lorawatch-ingested"] == "1", answer.text

    spans = [_span("chat", _start(18) + i, 100_000_000 + i, gen_ai__request__model="search") for i in range(5)]
    answer = server.post(gzip.compress(_batch(*spans)), {**PROTOBUF, "Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-protobuf", answer.text
    assert ExportTraceServiceResponse.FromString(answer.content) == ExportTraceServiceResponse()
    answer = server.post(zlib.compress(_batch(*spans[:2])), {**PROTOBUF, "Content-Encoding": "deflate"})
    assert answer.status_code == 200 and answer.headers["x-lorawatch-ingested"] == "2", answer.text

    # the SDK's own gzip
    exporter = OTLPSpanExporter(
        endpoint=f"{server.url}/v1/traces",
        headers={"Authorization": f"Bearer {server.token}"},
        compression=Compression.Gzip,
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    begin = _start(17)
    provider.get_tracer("t").start_span("chat", start_time=begin, attributes={"lora.adapter": "search"}).end(
        end_time=begin + 100_000_000
    )
    assert provider.force_flush(30_000)
    provider.shutdown()

    rows = {r["adapter"]: r for r in cli("latency", "--json").json()}
    assert rows["search"]["count"] == 10 and rows["search"]["errors"] == 2
    assert rows["search"]["p99_ms"] == pytest.approx(250.0, rel=0.01)
    with db.session() as s:
        query = select(TrafficMinute.tenant, func.sum(TrafficMinute.prompt_tokens)).group_by(TrafficMinute.tenant)
        tenants = dict(s.execute(query).tuples().all())
    assert tenants == {"initech": 14, "": 0}


def test_a_malformed_batch_is_refused_whole_with_the_span_and_field(serve, db):
    server = serve()
    start = _start()
    good = [_span(f"chat {i}", start + i, 120_000_000, lora__adapter="support") for i in range(4)]
    cases = [
        (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF, "not a protobuf ExportTraceServiceRequest"),
        (b'{"resourceSpans": [', JSON, "the body is not JSON"),
        (b"[1, 2]", JSON, "must be an object"),
        (b'{"resourceSpans": "all of them"}', JSON, "not an OTLP JSON ExportTraceServiceRequest"),
        (
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "name": "chat"}]}]}]}),
            JSON,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId 'xyz' is not hex",
        ),
        (
            _batch(*good[:2], _span("chat bad", start, -5_000_000, lora__adapter="support"), good[2]),
            PROTOBUF,
            "span 3 of the batch (name 'chat bad', traceId 000102030405060708090a0b0c0d0e0f, spanId",
        ),
        (
            _batch(*good[:2], _span("chat bad", start, -5_000_000, lora__adapter="support")),
            PROTOBUF,
            "negative latency_ms -5 (latency_ms is the span's endTimeUnixNano - startTimeUnixNano); the batch "
            "was refused whole, nothing was stored; fix: latency_ms must be >= 0",
        ),
        (
            _batch(*good, _span("chat", start, 1, lora__adapter="a", gen_ai__usage__input_tokens="many")),
            PROTOBUF,
            "span 5 of the batch (name 'chat'",
        ),
        (
            _batch(*good, _span("chat", start, 1, lora__adapter="a", gen_ai__usage__input_tokens="many")),
            PROTOBUF,
            "prompt_tokens 'many' is not a number (prompt_tokens is gen_ai.usage.input_tokens",
        ),
        (
            _batch(*good, _span("chat", start, 1, lora__adapter="a", gen_ai__usage__output_tokens=-3)),
            PROTOBUF,
            "negative completion_tokens -3",
        ),
        (
            _batch(_span("chat", start, 1, lora__adapter="a", gen_ai__server__time_to_first_token=float("nan"))),
            PROTOBUF,
            "ttft_ms 'NaN' is not a number",
        ),
        (_batch(*good, _span("chat", 0, 1, lora__adapter="a")), PROTOBUF, "span 5 of the batch"),
        (_batch(*good, _span("chat", 0, 1, lora__adapter="a")), PROTOBUF, "is not a plausible time"),
        (gzip.compress(_batch(*good))[:-12], {**PROTOBUF, "Content-Encoding": "gzip"}, "truncated"),
        (b"\x1f\x8b garbage", {**PROTOBUF, "Content-Encoding": "gzip"}, "does not decompress"),
    ]
    for body, headers, expected in cases:
        answer = server.post(body, headers)
        assert answer.status_code == 400, (expected, answer.text)
        assert expected in answer.json()["detail"], answer.json()["detail"]
    for headers, expected in (
        ({"Content-Type": "text/plain"}, "neither application/x-protobuf nor application/json"),
        ({**PROTOBUF, "Content-Encoding": "br"}, "content encoding 'br'"),
    ):
        answer = server.post(_batch(*good), headers)
        assert answer.status_code == 415 and expected in answer.json()["detail"], answer.text
    assert _stored(db) == (0, 0, 0)
    assert server.post(_batch(*good), PROTOBUF).status_code == 200  # the good spans alone are fine
    assert _stored(db)[0] == 4


def test_oversized_bodies_get_413_declared_chunked_or_inflated(serve, db):
    server = serve(max_body_bytes=4096)
    spans = [_span("chat", _start() + i, 1_000_000, lora__adapter="a") for i in range(200)]
    big = _batch(*spans)
    assert len(big) > 4096

    declared = server.post(big, PROTOBUF)
    assert declared.status_code == 413 and "over 4096 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    chunked = httpx.post(
        f"{server.url}/v1/traces",
        content=chunks(),
        headers={**PROTOBUF, "Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert "content-length" not in chunked.request.headers and chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.status_code == 413

    bomb = gzip.compress(big)  # small on the wire, over the limit once inflated
    assert len(bomb) < 4096
    inflated = server.post(bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert inflated.status_code == 413 and "decompressed" in inflated.json()["detail"]
    assert _stored(db) == (0, 0, 0)
    assert server.post(_batch(*spans[:10]), PROTOBUF).status_code == 200


def test_a_token_with_the_ingest_scope_is_needed(serve, db):
    server = serve()
    body = _batch(_span("chat", _start(), 1_000_000, lora__adapter="a"))
    for token in (None, "lw_" + "x" * 43, server.read_token):
        answer = server.post(body, PROTOBUF, token=token)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer"), answer.text
    assert _stored(db) == (0, 0, 0)


def test_batches_over_the_in_flight_limit_get_429_instead_of_queueing(serve, db):
    server = serve(max_ingests_in_flight=1)
    body = _batch(_span("chat", _start(), 1_000_000, lora__adapter="a"))
    slots = otlp.slots(server.app)
    assert slots.acquire(blocking=False)  # a batch being stored
    try:
        answer = server.post(body, PROTOBUF)
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1", answer.text
        assert "max_ingests_in_flight" in answer.json()["detail"]
    finally:
        slots.release()
    assert server.post(body, PROTOBUF).status_code == 200
    assert slots.acquire(blocking=False)  # released after the batch, also after a refusal
    slots.release()
    assert server.post(b"garbage", PROTOBUF).status_code == 400
    assert slots.acquire(blocking=False)
    slots.release()


def test_the_same_batch_twice_counts_once(serve, db):
    server = serve(max_ingests_in_flight=4)
    start = _start()
    body = _batch(*[_span("chat", start + i, (i + 1) * 1_000_000, lora__adapter="a") for i in range(50)])
    first = server.post(body, PROTOBUF)
    assert first.status_code == 200 and first.headers["x-lorawatch-ingested"] == "50"
    again = server.post(body, PROTOBUF)
    assert again.status_code == 200 and again.headers["x-lorawatch-ingested"] == "0"
    assert "already ingested at" in again.headers["x-lorawatch-duplicate"]
    warning = ExportTraceServiceResponse.FromString(again.content).partial_success
    assert warning.rejected_spans == 0 and "nothing counted twice" in warning.error_message
    text = json.dumps(_json_batch(start))
    assert server.post(text, JSON).headers["x-lorawatch-ingested"] == "1"
    duplicate = server.post(gzip.compress(text.encode()), {**JSON, "Content-Encoding": "gzip"})  # same spans, zipped
    assert "nothing counted twice" in duplicate.json()["partialSuccess"]["errorMessage"]
    assert _stored(db)[0] == 51 and _stored(db)[2] == 2

    # batches sent at once (each of them twice) into the same buckets: each counted, once
    others = [
        _batch(*[_span(f"chat {b}", start + 100 * b + i, 5_000_000, lora__adapter="a") for i in range(20)])
        for b in range(8)
    ]
    results: list[int] = []

    def send(payload: bytes) -> None:
        for _ in range(50):
            answer = server.post(payload, PROTOBUF)
            if answer.status_code != 429:
                results.append(answer.status_code)
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=send, args=(p,)) for p in others + others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 16
    assert _stored(db)[0] == 51 + 8 * 20


def test_the_route_is_in_the_openapi_document(serve):
    document = serve().app.openapi()
    route = document["paths"]["/v1/traces"]["post"]
    assert set(route["requestBody"]["content"]) == {"application/x-protobuf", "application/json"}
    assert {"200", "400", "401", "413", "415", "429"} <= set(route["responses"])
    validate(document)


def test_which_spans_count_and_where_their_fields_come_from():
    start = _start()
    message = ExportTraceServiceRequest.FromString(
        _batch(
            # on the span: lora.adapter is listed before gen_ai.request.model, so it wins
            _span("a", start, 1, lora__adapter="support", gen_ai__request__model="llama", tenant__id="acme"),
            # only the resource names the adapter: it counts for a GenAI span ...
            _span("b", start, 2, gen_ai__operation__name="chat", gen_ai__usage__prompt_tokens=5),
            # ... not for its HTTP or database children
            _span("c", start, 3, http__request__method="POST"),
            # an empty name is no name: the resource's lora.adapter comes before the span's model
            _span("d", start, 4, lora__adapter="", gen_ai__request__model="llama"),
            # a list is no name: the resource's name is taken
            _span("e", start, 5, lora__adapter=AnyValue(array_value={"values": [_value("x")]}), gen_ai__x=1),
            lora__adapter="from-resource",
            lorawatch__tenant="globex",
            lora__adapter__version="v2",
        )
    )
    records = otlp.spans_to_records(message, ServerSettings())
    assert records.spans == 5 and records.skipped == 1 and records.frame is not None
    frame = records.frame.set_index("_line")
    assert frame["adapter_id"].to_dict() == {1: "support", 2: "from-resource", 4: "from-resource", 5: "from-resource"}
    assert frame["tenant"].to_dict() == {1: "acme", 2: "globex", 4: "globex", 5: "globex"}
    assert set(frame["adapter_version"]) == {"v2"}
    assert frame.loc[2, "prompt_tokens"] == 5 and frame.loc[4, "latency_ms"] == 4e-6
    other = ExportTraceServiceRequest.FromString(_batch(_span("f", 2**64 - 10, 5, lora__adapter=7)))
    frame = otlp.spans_to_records(other, ServerSettings()).frame
    assert frame is not None and frame["adapter_id"].iloc[0] == "7"  # an int names an adapter too
    assert frame["ts"].iloc[0].year == 2262  # past 2262: clipped there, and refused as in the future
