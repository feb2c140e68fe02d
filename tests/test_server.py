"""lorawatch server: tokens, health, /metrics, and a real Prometheus scraping it with every
expression of the shipped Grafana dashboard evaluated against what it scraped."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from lorawatch import access
from lorawatch.db.models import ApiToken, AuditLog
from tests.prometheus import start_prometheus

GRAFANA = Path(__file__).resolve().parent.parent / "lorawatch" / "server" / "grafana" / "lorawatch.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(settings, db):
    from fastapi.testclient import TestClient

    from lorawatch.server.app import create_app

    return TestClient(create_app(settings, db))


def test_a_token_is_shown_once_stored_as_its_hash_and_refused_once_revoked_or_expired(db):
    with db.session() as s:
        record, token = access.create(s, name="grafana", scopes=["read"], actor="t")
        assert token.startswith("lw_") and len(token) == 46
        assert record.token_sha256 == access.digest(token) and token not in json.dumps(access.listing(s), default=str)
    with db.session() as s:
        assert access.check(s, token, "read").name == "grafana"
        assert access.check(s, token, "ingest") is None  # scope not granted
        assert access.check(s, token + "x", "read") is None
        assert access.check(s, "Bearer " + token, "read") is None
        assert access.check(s, "lw_" + "a" * 500, "read") is None
        assert s.get(ApiToken, record.id).last_used_at is not None
        access.revoke(s, name="grafana", actor="t")
    with db.session() as s:
        assert access.check(s, token, "read") is None
        _, short = access.create(s, name="short", scopes=["ingest"], actor="t", expires_in=timedelta(seconds=1))
        s.scalar(select(ApiToken).where(ApiToken.name == "short")).expires_at -= timedelta(seconds=5)
    with db.session() as s:
        assert access.check(s, short, "ingest") is None
        states = {t["name"]: t["state"] for t in access.listing(s)}
        assert states == {"grafana": "revoked", "short": "expired"}
        actions = [a.action for a in s.scalars(select(AuditLog).order_by(AuditLog.id))]
        assert actions[-3:] == ["token.create", "token.revoke", "token.create"]
        # the token's text is nowhere in the database
        for table in ("api_tokens", "audit_log"):
            dump = json.dumps([list(r) for r in s.execute(text(f"SELECT * FROM {table}"))], default=str)
            assert token not in dump and short not in dump


def test_the_tokens_cli_creates_lists_and_revokes_and_refuses_bad_input(cli, lw_env, db):
    made = cli("tokens", "create", "prom", "--scope", "metrics", "--expires", "90d", "--json")
    assert made.code == 0, made.err
    shown = json.loads(made.out)
    assert shown["token"].startswith("lw_") and shown["scopes"] == ["metrics"] and shown["expires_at"]
    listed = cli("tokens", "list", "--json")
    assert shown["token"] not in listed.out and json.loads(listed.out)[0]["state"] == "active"
    again = cli("tokens", "create", "prom", "--scope", "read")
    assert again.code == 2 and "exists" in again.err
    bad = cli("tokens", "create", "no spaces", "--scope", "read")
    assert bad.code == 2 and "not valid" in bad.err
    assert cli("tokens", "create", "x", "--scope", "admin").code == 2
    assert cli("tokens", "revoke", "nope").code == 2
    assert cli("tokens", "revoke", "prom").code == 0
    assert json.loads(cli("tokens", "list", "--json").out)[0]["state"] == "revoked"


def test_health_and_readiness(db, settings):
    from lorawatch.db import Database

    client = _client(settings, db)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    dead = _client(settings, Database(f"postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/none?connect_timeout=2"))
    answer = dead.get("/readyz")
    assert answer.status_code == 503 and "nobody" not in answer.text
    scraped = dead.get("/metrics")  # a scrape still answers, and says the database is out of reach
    assert scraped.status_code == 200 and _samples(scraped.text) == {"lorawatch_up": 0.0}


def _canary_run(db, settings, canary_file, embedder) -> int:
    from lorawatch.monitors import canary

    opts = canary.RunOptions(device="cpu", batch_size=8, max_new_tokens=8)
    run_id = canary.create_run(
        db, settings, dataset_path=canary_file, adapters=["trained", "other"], options=opts, actor="t"
    )
    canary.execute_run(db, settings, run_id, progress=False, embedder=embedder)
    return run_id


def _samples(exposition: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_carry_the_latest_monitor_results_of_aliased_versions(db, settings, registered, canary_file, embedder):
    from lorawatch.db.models import MonitorResult

    _canary_run(db, settings, canary_file, embedder)
    client = _client(settings, db)
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = _samples(answer.text)
    with db.session() as s:
        kl = s.scalar(
            select(MonitorResult).where(
                MonitorResult.adapter == "trained", MonitorResult.monitor == "logit_kl", MonitorResult.segment.is_(None)
            )
        )
    key = 'lorawatch_monitor_value{adapter="trained",monitor="logit_kl",version="v1"}'
    assert samples[key] == pytest.approx(kl.value)
    assert samples[key.replace("_value", "_breached")] == float(kl.breached)
    assert samples[key.replace("_value", "_threshold")] == pytest.approx(kl.threshold)
    # "other" has no alias: it is not deployed, so its monitors are not exported
    assert not any('adapter="other"' in k for k in samples if k.startswith("lorawatch_monitor_"))
    assert 0 <= samples['lorawatch_canary_last_run_age_seconds{adapter="trained"}'] < 600
    assert samples["lorawatch_up"] == 1.0
    for family in ("lorawatch_alerts", "lorawatch_outbox_notifications", "lorawatch_incidents_open"):
        assert f"# TYPE {family} gauge" in answer.text


def test_metrics_can_ask_for_a_token(db, settings):
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"metrics_token": True})})
    with db.session() as s:
        _, token = access.create(s, name="prom", scopes=["metrics"], actor="t")
        _, reader = access.create(s, name="reader", scopes=["read"], actor="t")
    client = _client(settings, db)
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {reader}"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def _grafana_expressions() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


@pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("LORAWATCH_REQUIRE_PROMETHEUS"),
    reason="the prometheus server is not installed (CI installs it and requires this test)",
)
def test_a_real_prometheus_scrapes_the_server_and_the_grafana_dashboard_evaluates(
    lw_env, db, settings, registered, canary_file, embedder, tmp_path
):
    _canary_run(db, settings, canary_file, embedder)
    with db.session() as s:
        from lorawatch.db.models import MonitorResult

        breached = s.scalar(
            select(MonitorResult.breached).where(
                MonitorResult.adapter == "trained", MonitorResult.monitor == "logit_kl", MonitorResult.segment.is_(None)
            )
        )
    port, prom_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lorawatch", "server", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,  # uvicorn's access log (a line a scrape: the pipe does not fill)
        stderr=subprocess.PIPE,
    )
    prometheus = start_prometheus(tmp_path, "lorawatch", f"127.0.0.1:{port}", prom_port)
    url = f"http://127.0.0.1:{prom_port}/api/v1/query"
    try:
        query = 'lorawatch_monitor_breached{adapter="trained",monitor="logit_kl"}'
        result: list = []
        deadline = time.time() + 90
        while time.time() < deadline and not result:
            time.sleep(1)
            try:
                result = httpx.get(url, params={"query": query}, timeout=5).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                result = []
        assert result, f"prometheus never scraped the server: {server.stderr.read1().decode()[-2000:]}"
        assert float(result[0]["value"][1]) == float(breached)
        assert result[0]["metric"]["version"] == "v1"
        for expr in _grafana_expressions():
            concrete = re.sub(r"\$adapter", ".*", expr)
            if concrete.startswith("label_values("):
                metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", concrete).groups()
                answer = httpx.get(
                    f"http://127.0.0.1:{prom_port}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=5
                ).json()
                assert answer["status"] == "success" and "trained" in answer["data"], (expr, answer)
                continue
            answer = httpx.get(url, params={"query": concrete}, timeout=5).json()
            assert answer["status"] == "success", (expr, answer)
    finally:
        prometheus.terminate()
        server.terminate()
        prometheus.wait(timeout=20)
        server.wait(timeout=20)
    log = server.stdout.read().decode() + server.stderr.read().decode()
    # the access log is written (the secret scrubber keeps uvicorn's arguments), never a logging error
    assert '"GET /metrics HTTP/1.1" 200' in log and "Logging error" not in log, log[-3000:]
