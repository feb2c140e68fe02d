"""OTLP ingest benchmark: spans/s through a running `lorawatch server` next to `lorawatch ingest
requests` on the same records as a file.

    python benchmarks/otlp.py [--batches 100] [--spans 512] [--adapters 20] [--clients 1 4]

Makes ``batches`` OTLP ExportTraceServiceRequests of ``spans`` GenAI spans each (log-normal
durations, tokens, time to first token, 2% errors, over the last two hours), starts
`lorawatch server` in its own process on a fresh SQLite database, and POSTs the protobuf batches
to /v1/traces from 1 client, then from 4 at once (each count of clients on its own fresh
database and server). Then it writes the same records to JSONL and Parquet and times
`lorawatch ingest requests`' code (``monitors.traffic.ingest_requests``) on each, in this
process, into fresh databases. It checks that every way stored the same request count and
prints spans/s for each and the ratio to the file, then a breakdown of one batch inside the
server's code path (parse, spans to records, validate and store).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--spans", type=int, default=512, help="spans per batch")
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent senders, one run each")
    args = parser.parse_args()

    import pandas as pd
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from sqlalchemy import func, select

    from lorawatch.db import Database
    from lorawatch.db.models import TrafficMinute
    from lorawatch.db.types import utcnow
    from lorawatch.monitors.traffic import ingest_request_frame, ingest_requests
    from lorawatch.server.otlp import spans_to_records
    from lorawatch.settings import ServerSettings

    total = args.batches * args.spans
    t0 = time.perf_counter()
    records, bodies = _make(args.batches, args.spans, args.adapters, utcnow().timestamp())
    print(
        f"made {total:,} spans in {args.batches} batches of {args.spans} ({args.adapters} adapters), "
        f"{sum(map(len, bodies)) / args.batches / 1024:.0f} KiB protobuf per batch, in {time.perf_counter() - t0:.1f} s"
    )

    def stored(db: Database) -> int:
        with db.session() as s:
            return int(s.scalar(select(func.coalesce(func.sum(TrafficMinute.requests), 0))) or 0)

    results: list[tuple[str, float, float]] = []  # way, seconds, spans/s
    with tempfile.TemporaryDirectory() as tmp:
        for clients in args.clients:
            home = Path(tmp) / f"server-{clients}"
            url = f"sqlite:///{home / 'bench.db'}"
            home.mkdir()
            db = Database(url)
            db.upgrade()
            env = {**os.environ, "LORAWATCH_HOME": str(home), "LORAWATCH_DATABASE_URL": url, "LORAWATCH_ACTOR": "bench"}
            lorawatch = str(Path(sys.executable).with_name("lorawatch"))
            made = subprocess.run(
                [lorawatch, "tokens", "create", "bench", "--scope", "ingest", "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            token = json.loads(made.stdout)["token"]
            port = _free_port()
            # the server's log goes to a file: a pipe nobody reads would fill and stall it
            with open(home / "server.log", "wb") as log_file:
                server = subprocess.Popen(
                    [lorawatch, "server", "--port", str(port)], env=env, stdout=log_file, stderr=log_file
                )
                try:
                    base = f"http://127.0.0.1:{port}"
                    _wait(base)
                    seconds, failures = _send_all(f"{base}/v1/traces", token, bodies, clients, args.spans)
                    assert not failures, failures[:3]
                    assert stored(db) == total, (stored(db), total)
                    results.append(
                        (f"OTLP protobuf via lorawatch server, {clients} client(s)", seconds, total / seconds)
                    )
                finally:
                    server.terminate()
                    server.wait(30)
                    db.dispose()

        frame = pd.DataFrame(records)
        for suffix in ("jsonl", "parquet"):
            path = Path(tmp) / f"requests.{suffix}"
            if suffix == "jsonl":
                out = frame.copy()
                out["ts"] = [t.isoformat() for t in out["ts"]]
                out.to_json(path, orient="records", lines=True)
            else:
                frame.to_parquet(path, index=False)
            db = Database(f"sqlite:///{Path(tmp) / f'file-{suffix}.db'}")
            db.upgrade()
            t0 = time.perf_counter()
            result = ingest_requests(db, path, actor="bench")
            seconds = time.perf_counter() - t0
            assert result["rows"] == total and stored(db) == total
            results.append(
                (f"ingest requests, {suffix} file ({path.stat().st_size / 1e6:.1f} MB)", seconds, total / seconds)
            )
            db.dispose()

        # one batch inside the server's code path, in this process
        db = Database(f"sqlite:///{Path(tmp) / 'breakdown.db'}")
        db.upgrade()
        settings = ServerSettings()
        steps = {"parse protobuf": 0.0, "spans to records": 0.0, "validate, sketch and store": 0.0}
        for i, body in enumerate(bodies[:20]):
            t0 = time.perf_counter()
            message = ExportTraceServiceRequest.FromString(body)
            t1 = time.perf_counter()
            batch = spans_to_records(message, settings)
            t2 = time.perf_counter()
            ingest_request_frame(
                db, batch.frame, where="bench", unit="span", digest=f"{i:064x}", source="bench", actor="bench",
                audit_details={},
            )  # fmt: skip
            t3 = time.perf_counter()
            for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2)):
                steps[key] += dt
        db.dispose()

    file_rate = max(rate for way, _, rate in results if way.startswith("ingest requests, parquet"))
    print(f"\n{'way':<58}{'seconds':>9}{'spans/s':>11}{'vs parquet':>12}")
    for way, seconds, rate in results:
        print(f"{way:<58}{seconds:>9.2f}{rate:>11,.0f}{rate / file_rate:>11.2f}x")
    n = min(20, len(bodies))
    print(f"\none batch of {args.spans} spans in the server's code path (mean of {n}, in-process, SQLite):")
    for key, total_s in steps.items():
        print(f"  {key:<30}{total_s / n * 1000:>8.1f} ms")
    print(
        f"  {'total':<30}{sum(steps.values()) / n * 1000:>8.1f} ms  -> {args.spans * n / sum(steps.values()):,.0f} spans/s"
    )


def _send_all(url: str, token: str, bodies: list[bytes], clients: int, spans: int) -> tuple[float, list[str]]:
    """POST every body from ``clients`` threads (one connection each), waiting out 429s; the
    seconds from the first request to the last answer, and the batches not stored whole."""
    import httpx

    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"}
    failures: list[str] = []
    queue = list(range(len(bodies)))
    lock = threading.Lock()

    def send(client: httpx.Client) -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            while True:
                answer = client.post(url, content=bodies[i], headers=headers, timeout=60)
                if answer.status_code != 429:
                    break
                time.sleep(float(answer.headers.get("retry-after", "1")))
            if answer.status_code != 200 or answer.headers["x-lorawatch-ingested"] != str(spans):
                failures.append(f"batch {i}: {answer.status_code} {answer.text[:200]}")

    pool = [httpx.Client() for _ in range(clients)]
    threads = [threading.Thread(target=send, args=(client,)) for client in pool]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    for client in pool:
        client.close()
    return seconds, failures


def _make(batches: int, spans: int, adapters: int, now: float):
    """Request records and the same as protobuf ExportTraceServiceRequests."""
    import numpy as np
    import pandas as pd
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    rng = np.random.default_rng(42)
    n = batches * spans
    adapter = rng.integers(0, adapters, n)
    # in time order, as an exporter sends them: each batch covers its own slice of the two hours
    start = np.sort(((now - 7200 + rng.uniform(0, 7000, n)) * 1e9).astype(np.int64))
    duration = (rng.lognormal(5.5, 0.6, n) * 1e6).astype(np.int64)  # ns, median ~245 ms
    ttft = rng.lognormal(3.5, 0.4, n) / 1000  # s
    prompt = rng.integers(10, 500, n)
    completion = rng.integers(10, 300, n)
    error = rng.uniform(size=n) < 0.02
    tenants = ["acme", "globex", "initech", "umbrella"]
    tenant = rng.integers(0, len(tenants), n)
    records = pd.DataFrame(
        {
            "ts": pd.to_datetime(start, unit="ns", utc=True),
            "adapter_id": [f"adapter-{a:03d}" for a in adapter],
            "adapter_version": "v1",
            "tenant": [tenants[t] for t in tenant],
            "latency_ms": duration / 1e6,
            "ttft_ms": ttft * 1000,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "status": np.where(error, "error", "ok"),
        }
    )

    def kv(key: str, value) -> KeyValue:
        if isinstance(value, str):
            return KeyValue(key=key, value=AnyValue(string_value=value))
        if isinstance(value, float):
            return KeyValue(key=key, value=AnyValue(double_value=value))
        return KeyValue(key=key, value=AnyValue(int_value=int(value)))

    bodies = []
    for b in range(batches):
        by_tenant: dict[int, list] = {}
        for i in range(b * spans, (b + 1) * spans):
            by_tenant.setdefault(int(tenant[i]), []).append(
                Span(
                    trace_id=rng.bytes(16),
                    span_id=rng.bytes(8),
                    name="chat",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=int(start[i]),
                    end_time_unix_nano=int(start[i] + duration[i]),
                    attributes=[
                        kv("gen_ai.operation.name", "chat"),
                        kv("lora.adapter", f"adapter-{adapter[i]:03d}"),
                        kv("lora.adapter.version", "v1"),
                        kv("gen_ai.usage.input_tokens", prompt[i]),
                        kv("gen_ai.usage.output_tokens", completion[i]),
                        kv("gen_ai.server.time_to_first_token", float(ttft[i])),
                    ],
                    status=Status(code=Status.STATUS_CODE_ERROR if error[i] else Status.STATUS_CODE_OK),
                )
            )
        message = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=[kv("service.name", "vllm"), kv("tenant.id", tenants[t])]),
                    scope_spans=[ScopeSpans(spans=group)],
                )
                for t, group in sorted(by_tenant.items())
            ]
        )
        bodies.append(message.SerializeToString())
    return records, bodies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(base: str) -> None:
    import httpx

    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("lorawatch server did not become ready")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
