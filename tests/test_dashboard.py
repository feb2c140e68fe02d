"""The dashboard: every page renders (Streamlit's AppTest) on an empty database and on one with
data; anonymous viewers cannot act; a signed-in responder can, and the audit log names them.
A real headless Chromium then opens every page of a running dashboard."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app" / "dashboard.py"
PAGES = ["overview", "adapter", "alerts", "incidents", "canary_runs", "registry", "costs", "jobs"]


def _apptest():
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_resource.clear()
    return AppTest.from_file(str(APP), default_timeout=60)


def _render(page: str, at=None):
    at = at or _apptest()
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    return at


def _texts(at) -> str:
    parts = (
        [m.value for m in at.markdown]
        + [t.value for t in at.title]
        + [i.value for i in at.info]
        + [s.value for s in at.success]
        + [c.value for c in at.caption]
        + [h.value for h in at.subheader]
    )
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_database(page, lw_env, db):
    at = _render(page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.lower().replace(" ", "_") == page


def _seed(cli, db, tmp_path, tiny_base, trained_adapter, second_adapter):
    """A registry, monitor results, a firing alert, an incident, traffic, KPIs and a job run."""
    from lorawatch.alerts.engine import evaluate
    from lorawatch.db.models import MonitorResult
    from lorawatch.settings import load_settings

    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    assert (
        cli(
            "registry",
            "add",
            "support",
            "--path",
            trained_adapter,
            "--base",
            "tiny",
            "--version",
            "v1",
            "--team",
            "cx",
            "--promote",
            "production",
        ).code
        == 0
    )
    assert (
        cli(
            "registry",
            "add",
            "support",
            "--path",
            second_adapter,
            "--base",
            "tiny",
            "--version",
            "v2",
            "--team",
            "cx",
            "--promote",
            "production",
        ).code
        == 0
    )
    now = datetime.now(UTC)
    with db.session() as session:
        for week in range(6):
            ts = now - timedelta(days=7 * (5 - week), minutes=5)
            risky = week == 5
            for monitor, value, threshold in (
                ("logit_kl", 2.4 if risky else 0.4, 1.0),
                ("toxicity_rate", 0.3 if risky else 0.0, 0.05),
                ("pii_leak_rate", 0.0, 0.02),
                ("embedding_mmd", 0.5, 0.05),
            ):
                session.add(
                    MonitorResult(
                        ts=ts,
                        monitor=monitor,
                        adapter="support",
                        version="v2" if risky else "v1",
                        value=value,
                        threshold=threshold,
                        breached=monitor != "embedding_mmd" and value > threshold,
                    )
                )
    lines = []
    for i in range(600):
        ts = now - timedelta(minutes=600 - i)
        lines.append(
            json.dumps(
                {
                    "ts": ts.isoformat(),
                    "adapter_id": "support",
                    "latency_ms": 120 + (i % 37) * 9,
                    "tenant": "acme" if i % 2 else "globex",
                    "prompt_tokens": 40,
                    "completion_tokens": 60,
                    "gpu_seconds": 0.05,
                }
            )
        )
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    assert cli("ingest", "requests", tmp_path / "requests.jsonl").code == 0
    kpis = [
        json.dumps(
            {
                "ts": (now - timedelta(days=d)).isoformat(),
                "adapter_id": "support",
                "kpi": "csat",
                "value": 4.5 - (0.4 if d < 3 else 0) + (d % 3) * 0.05,
            }
        )
        for d in range(30)
    ]
    (tmp_path / "kpis.jsonl").write_text("\n".join(kpis) + "\n")
    assert cli("ingest", "kpis", tmp_path / "kpis.jsonl").code == 0
    evaluate(db, load_settings())
    assert cli("jobs", "run", "lifecycle").code == 0


USERS = """
[dashboard.users.alice]
password_hash = "{hash}"
"""


def test_pages_render_with_data_and_only_a_signed_in_responder_can_act(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    from lorawatch.app.auth import hash_password

    (tmp_path / "lorawatch.toml").write_text(USERS.format(hash=hash_password("s3cret", iterations=1000)))
    _seed(cli, db, tmp_path, tiny_base, trained_adapter, second_adapter)
    [incident] = cli("incident", "list", "--json").json()
    for page in PAGES:
        at = _render(page)
        assert not at.exception, (page, [e.value for e in at.exception])
    overview = _render("overview")
    fleet = overview.dataframe[1].value
    assert list(fleet["adapter"]) == ["support"] and fleet["production"][0] == "v2"
    assert "breached" in fleet["health"][0] and fleet["firing_alerts"][0] >= 1

    # anonymous: no action is offered, and nothing changes
    alerts_page = _render("alerts")
    labels = [b.label for b in alerts_page.button]
    assert "Acknowledge" not in labels and "Silence" not in labels
    assert "Sign in (sidebar) to acknowledge alerts." in _texts(alerts_page)
    incidents_page = _render("incidents")
    assert not [b for b in incidents_page.button if b.label.startswith("Roll back") or b.label == "Acknowledge"]

    # a wrong password signs nobody in; the right one does, and actions carry the user
    at = _render("alerts")
    at.sidebar.text_input(key="lw_user").input("alice")
    at.sidebar.text_input(key="lw_password").input("wrong")
    next(b for b in at.sidebar.button if b.label == "Sign in").click().run()
    assert [e.value for e in at.sidebar.error] == ["Unknown user or wrong password."]
    at.sidebar.text_input(key="lw_user").input("alice")
    at.sidebar.text_input(key="lw_password").input("s3cret")
    next(b for b in at.sidebar.button if b.label == "Sign in").click().run()
    assert "Signed in as **alice**" in [c.value for c in at.sidebar.caption]
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    assert not at.exception
    acked = [a for a in cli("alerts", "list", "--json").json() if a["acked_by"]]
    assert acked and acked[0]["acked_by"] == "alice"
    # a notification that failed for good is listed, and a responder sends it again
    from lorawatch.db.models import Notification
    from lorawatch.db.types import utcnow

    with db.session() as session:
        session.add(
            Notification(
                receiver="default",
                status="failed",
                payload={"status": "firing", "alerts": []},
                attempts=1,
                failed_at=utcnow(),
                last_error="HTTP 404: no such webhook",
            )
        )
    at.run()
    assert any(t.label == "Delivery (1 failed)" for t in at.tabs)
    next(b for b in at.button if b.label == "Send again").click().run()
    assert not at.exception
    assert [
        n["status"] for n in cli("notify", "list", "--json").json() if n["last_error"] == "HTTP 404: no such webhook"
    ] == ["pending"]
    at.switch_page("app_pages/incidents.py").run()
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    assert cli("incident", "show", incident["id"], "--json").json()["commander"] == "alice"
    actions = {(e["actor"], e["action"]) for e in cli("audit", "list", "--json").json()}
    assert {("alice", "alert.ack"), ("alice", "notification.retry"), ("alice", "incident.ack")} <= actions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"  # a zombie is dead too
    except FileNotFoundError:
        return False


def test_a_real_browser_opens_every_page_of_a_running_dashboard(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("LORAWATCH_REQUIRE_CHROMIUM"):
            pytest.fail("LORAWATCH_REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _seed(cli, db, tmp_path, tiny_base, trained_adapter, second_adapter)
    port = _free_port()
    shots = Path(os.environ.get("LORAWATCH_SCREENSHOTS", tmp_path / "shots"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorawatch", "dashboard", "--port", str(port)],
        env={**os.environ, "LORAWATCH_DATABASE_URL": lw_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        from tests.browser import check_pages

        results = check_pages(chromium, f"http://127.0.0.1:{port}", PAGES, shots)
        server = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()  # the streamlit process
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert len(server) == 1
    deadline = time.time() + 30  # SIGTERM to `lorawatch dashboard` stops the server it started too
    while time.time() < deadline and _alive(int(server[0])):
        time.sleep(0.2)
    assert not _alive(int(server[0])), "the streamlit server outlived `lorawatch dashboard`"
    for page, result in results.items():
        assert result["ok"], (page, result)
        assert (shots / f"{page}.png").stat().st_size > 10_000


def test_sign_in_locks_out_guessing_audits_failures_and_costs_the_same_for_unknown_names(db, tmp_path, monkeypatch):
    import hashlib
    from datetime import timedelta

    from lorawatch.app import auth
    from lorawatch.db.types import utcnow
    from lorawatch.settings import Settings

    settings = Settings.model_validate(
        {
            "home": str(tmp_path),
            "dashboard": {"users": {"alice": {"password_hash": auth.hash_password("s3cret")}}, "lockout_failures": 3},
        }
    )
    work: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name, password, salt, iterations, *rest):
        work.append(iterations)
        return real(name, password, salt, iterations, *rest)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    now = utcnow()
    assert auth.sign_in(db, settings, "mallory", "guess", now=now) == "wrong"
    assert auth.sign_in(db, settings, "alice", "guess", now=now) == "wrong"
    assert work == [auth.ITERATIONS, auth.ITERATIONS]  # an unknown name costs what a known one does
    assert auth.sign_in(db, settings, "alice", "guess2", now=now) == "wrong"
    assert auth.sign_in(db, settings, "alice", "guess3", now=now) == "wrong"
    assert auth.sign_in(db, settings, "alice", "s3cret", now=now) == "locked"  # the right password, too late
    assert auth.sign_in(db, settings, "alice", "s3cret", now=now + timedelta(minutes=16)) == "ok"
    with db.session() as session:
        from lorawatch import audit

        actions = [(e.object_id, e.action) for e in audit.entries(session, object_type="dashboard_user")]
    assert (
        actions.count(("alice", "dashboard.sign_in_failed")) == 4 and ("mallory", "dashboard.sign_in_failed") in actions
    )
    assert actions[0] == ("alice", "dashboard.sign_in")


def test_the_fleet_row_describes_the_version_in_production(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    """After a rollback the row shows the restored version's numbers, not the bad one's; a
    version without a canary run says so instead of looking healthy."""
    import pandas as pd

    from lorawatch.monitors.series import fleet
    from lorawatch.settings import load_settings

    _seed(cli, db, tmp_path, tiny_base, trained_adapter, second_adapter)
    settings, now = load_settings(), datetime.now(UTC)
    row = fleet(db, settings, now).iloc[0]
    assert row["production"] == "v2" and row["logit_kl"] == 2.4 and "KL" in row["health"]
    assert cli("registry", "rollback", "support", "--reason", "v2 insults users").code == 0
    row = fleet(db, settings, now).iloc[0]
    assert row["production"] == "v1" and row["logit_kl"] == 0.4
    assert "KL" not in row["health"] and "toxicity" not in row["health"]
    assert cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--version", "v3").code == 0
    assert cli("registry", "promote", "support", "--version", "v3", "--reason", "hotfix").code == 0
    row = fleet(db, settings, now).iloc[0]
    assert row["production"] == "v3" and pd.isna(row["logit_kl"])
    assert "not yet verified (v3 has no canary run)" in row["health"]


def test_a_deep_link_opens_the_alerts_page_on_that_alert(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    _seed(cli, db, tmp_path, tiny_base, trained_adapter, second_adapter)
    [alert] = [a for a in cli("alerts", "list", "--state", "firing", "--json").json() if a["rule"] == "logit_drift"]
    at = _apptest()
    at.run()
    at.switch_page("app_pages/alerts.py")
    at.query_params["alert"] = str(alert["id"])
    at.run()
    assert not at.exception
    shown = [e.value for e in at.error] + [w.value for w in at.warning]
    assert any(f"Alert {alert['id']}: logit_drift" in text for text in shown), shown
    assert at.selectbox[-1].value == "logit_drift"  # its runbook is the one shown
    at.query_params["alert"] = "999999"
    at.run()
    assert any("No alert 999999" in w.value for w in at.warning)
