"""The dashboard: every page renders (Streamlit's AppTest) on an empty database and on one with
data; anonymous viewers cannot act; a signed-in responder can, and the audit log names them.
A real headless Chromium then opens every page of a running dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
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
    assert list(fleet["adapter"]) == ["./adapter?adapter=support"] and fleet["production"][0] == "v2"
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
    # the page shows the acknowledgement at once: the action's message, and the table reread
    assert any(m.value == f"Alert {acked[0]['id']} acknowledged." for m in at.success)
    firing_tab = at.dataframe[0].value
    assert list(firing_tab.loc[firing_tab["id"] == acked[0]["id"], "acked by"]) == ["alice"]
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
    shots = Path(os.environ.get("LORAWATCH_SCREENSHOTS", tmp_path / "shots"))
    from tests.browser import check_pages, running_dashboard

    with running_dashboard({**os.environ, "LORAWATCH_DATABASE_URL": lw_env}) as (url, proc):
        results = check_pages(chromium, url, PAGES, shots)
        server = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()  # the streamlit process
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
    assert row["status"] == "critical"  # v2's toxicity alert
    assert cli("registry", "rollback", "support", "--reason", "v2 insults users").code == 0
    row = fleet(db, settings, now).iloc[0]
    assert row["production"] == "v1" and row["logit_kl"] == 0.4
    assert row["status"] != "critical"  # v2's alerts, still firing until the next evaluation, are not v1's
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


def test_the_fleet_and_the_latency_alerts_agree_and_the_worst_adapter_comes_first(cli, lw_env, db, tmp_path):
    """The Overview's latency breach is the alert rules' burn-rate monitors, not a P99 of its own:
    an adapter that was slow 20 h ago and is fast now has a high 24 h P99 and no latency breach,
    exactly as the rules fire no alert; one slow now breaches and fires, and its row comes first
    with the severity of its worst firing alert."""
    from lorawatch.alerts.engine import evaluate
    from lorawatch.monitors.series import fleet
    from lorawatch.monitors.traffic_eval import evaluate_traffic
    from lorawatch.settings import load_settings

    now = datetime.now(UTC)
    lines = []
    for i in range(24 * 60):
        ts = now - timedelta(minutes=24 * 60 - i)
        recovered_slow = 3000.0 if i < 6 * 60 else 150.0  # slow from 24 h to 18 h ago, fast since
        for adapter, ms in (("recovered", recovered_slow), ("slow-now", 150.0 if i < 20 * 60 else 2500.0)):
            lines.append(json.dumps({"ts": ts.isoformat(), "adapter_id": adapter, "latency_ms": ms}))
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    assert cli("ingest", "requests", tmp_path / "requests.jsonl").code == 0
    settings = load_settings()
    evaluate_traffic(db, settings, now=now)
    evaluate(db, settings, now=now)
    firing = cli("alerts", "list", "--state", "firing", "--json").json()
    alerting = {a["labels"]["adapter"] for a in firing if a["rule"].startswith("latency_slo_burn")}
    assert alerting == {"slow-now"}, firing

    table = fleet(db, settings, now)
    assert list(table["adapter"]) == ["slow-now", "recovered"]
    rows = {r["adapter"]: r for r in table.to_dict("records")}
    assert rows["recovered"]["p99_ms_24h"] > settings.slo.latency_ms  # the 24 h P99 alone would say breached
    assert rows["recovered"]["health"] == "ok" and rows["recovered"]["status"].endswith("ok")
    worst = min(
        (a["severity"] for a in firing if a["labels"].get("adapter") == "slow-now"),
        key=["critical", "warning", "info"].index,
    )
    assert "latency SLO" in rows["slow-now"]["health"] and rows["slow-now"]["status"].endswith(worst)


def test_silence_this_alert_fills_in_its_matchers_and_previews_what_it_mutes(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    """From a deep link to an alert, a signed-in responder finds the silence form filled in with
    that alert's labels (severity left out), sees which open alerts it would mute before making
    it, and after "Silence" the alert is listed as silenced at once, with no reload."""
    from lorawatch.app.auth import add_user
    from lorawatch.settings import load_settings

    _seed(cli, db, tmp_path, tiny_base, trained_adapter, second_adapter)
    add_user(load_settings(), "alice", "s3cret-s3cret")
    [alert] = [a for a in cli("alerts", "list", "--state", "firing", "--json").json() if a["rule"] == "logit_drift"]
    at = _apptest()
    at.run()
    at.sidebar.text_input(key="lw_user").input("alice")
    at.sidebar.text_input(key="lw_password").input("s3cret-s3cret")
    next(b for b in at.sidebar.button if b.label == "Sign in").click().run()
    at.switch_page("app_pages/alerts.py")
    at.query_params["alert"] = str(alert["id"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    matchers = at.text_area(key=f"silence-matchers-{alert['id']}").value.splitlines()
    assert matchers[0] == 'alertname="logit_drift"' and 'adapter="support"' in matchers
    assert 'version="v2"' in matchers and not any(m.startswith("severity") for m in matchers)
    assert any(c.value.startswith("Would mute 1 of ") for c in at.caption), [c.value for c in at.caption]
    at.text_area(key=f"silence-matchers-{alert['id']}").input('adapter="support"').run()
    firing = [
        a
        for a in cli("alerts", "list", "--state", "firing", "--json").json()
        if a["labels"].get("adapter") == "support"
    ]
    assert any(c.value.startswith(f"Would mute {len(firing)} of ") for c in at.caption)
    at.text_area(key=f"silence-matchers-{alert['id']}").input('adapter=~"(unclosed"').run()
    assert any("invalid regular expression" in e.value for e in at.error)
    at.text_area(key=f"silence-matchers-{alert['id']}").input("\n".join(matchers)).run()
    at.text_input(key="silence-why").input("known drift, fix in review")
    next(b for b in at.button if b.label == "Silence").click().run()
    assert not at.exception
    assert any(s.value.startswith("Silence ") and "1 alert muted" in s.value for s in at.success)
    [silence] = cli("alerts", "silences", "--json").json()
    assert sorted(silence["matchers"]) == sorted(matchers)
    shown = at.dataframe[1].value  # the Silenced tab, read in the same run as the action's message
    assert alert["id"] in list(shown["id"])


def test_responders_added_to_the_users_file_sign_in_and_the_file_holds_only_hashes(cli, lw_env, tmp_path):
    import stat

    from lorawatch.app.auth import authenticate, users_file
    from lorawatch.settings import load_settings

    result = cli("dashboard", "--add-user", "bob", "--generate-password")
    assert result.code == 0
    password = result.out.strip().removeprefix("password: ")
    settings = load_settings()
    path = users_file(settings)
    assert password not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert authenticate(settings, "bob", password) and not authenticate(settings, "bob", password + "x")
    assert cli("dashboard", "--add-user", "carol", "--generate-password").code == 0
    assert authenticate(settings, "bob", password)  # adding carol kept bob
    bad = cli("dashboard", "--add-user", "no spaces please", "--generate-password")
    assert bad.code == 2 and "not valid" in bad.err
    assert cli("dashboard", "--generate-password").code == 2


def test_without_responders_the_sidebar_says_how_to_add_one(lw_env, db):
    at = _render("alerts")
    assert not at.exception
    said = " ".join(c.value for c in at.sidebar.caption)
    assert "lorawatch dashboard --add-user NAME" in said and "oncall" in said, said
    assert not [b for b in at.sidebar.button if b.label == "Sign in"]


def test_canary_samples_show_their_prompt_and_alert_tables_show_p_values_as_p_values(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter
):
    """The Canary runs page quotes each sample's prompt (from the run's dataset, checked by its
    sha256) and rounds toxicity; the Alerts page prints a KPI drop's p-value as "p < 0.0001",
    never as 1.2e-25."""

    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    add = ["registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--version", "v1"]
    assert cli(*add, "--promote", "production").code == 0
    dataset = tmp_path / "canary.jsonl"
    prompts = {"p1": "Where is my parcel from Lisbon?", "p2": "How do I reset my password?"}
    dataset.write_text(
        "".join(
            json.dumps({"id": k, "prompt": v, "segment": "support", "reference": "Let me check that for you."}) + "\n"
            for k, v in prompts.items()
        )
    )
    run = cli("canary", "run", "--dataset", dataset, "--adapter", "support", "--max-new-tokens", "4", "--json")
    assert run.code == 0, run.err
    at = _render("canary_runs")
    assert not at.exception, [e.value for e in at.exception]
    shown = [t.value for t in at.text]
    assert all(p in shown for p in prompts.values()), shown
    assert all(
        "toxicity -" in c.value or re.search(r"toxicity \d\.\d{3} ", c.value)
        for c in at.caption
        if "toxicity" in c.value
    )

    now = datetime.now(UTC)
    kpis = [
        json.dumps(
            {
                "ts": (now - timedelta(days=d, hours=h)).isoformat(),
                "adapter_id": "support",
                "kpi": "csat",
                "value": (3.0 if d < 7 else 4.5) + (h % 3) * 0.01,
            }
        )
        for d in range(35)
        for h in range(0, 24, 4)
    ]
    (tmp_path / "kpis.jsonl").write_text("\n".join(kpis) + "\n")
    assert cli("ingest", "kpis", tmp_path / "kpis.jsonl").code == 0
    assert cli("alerts", "evaluate").code == 0
    [drop] = [a for a in cli("alerts", "list", "--state", "firing", "--json").json() if a["rule"] == "kpi_drop"]
    assert drop["value"] < 1e-4
    at = _render("alerts")
    table = at.dataframe[0].value
    row = table.loc[table["id"] == drop["id"]].iloc[0]
    assert row["value"] == "p < 0.0001" and row["threshold"] == "p = 0.05", dict(row)
