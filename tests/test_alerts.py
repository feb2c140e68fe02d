"""Alert rules, states, silences, inhibition, grouping and delivery.

The rule tests are data (``tests/alert_rules/rule_tests.yaml``), in the style of
``promtool test rules``. Delivery runs against real local HTTP servers and, when installed, a
real Prometheus Alertmanager.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from lorawatch.durations import parse_duration
from lorawatch.settings import Settings

RULE_TESTS = Path(__file__).parent / "alert_rules" / "rule_tests.yaml"
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _settings(tmp_path, **alerts) -> Settings:
    data = {"home": str(tmp_path / "home"), "alerts": alerts}
    return Settings.model_validate(data)


def _store(db, *, monitor, labels, ts, value, threshold=None, breached=None, run_id=None):
    from lorawatch.db.models import MonitorResult

    with db.session() as session:
        session.add(
            MonitorResult(
                ts=ts,
                monitor=monitor,
                adapter=labels.get("adapter"),
                version=labels.get("version"),
                base_model=labels.get("base_model"),
                segment=labels.get("segment"),
                tenant=labels.get("tenant"),
                value=value,
                threshold=threshold,
                run_id=run_id,
                breached=bool(breached if breached is not None else (threshold is not None and value > threshold)),
                details={k: v for k, v in labels.items() if k == "kpi"},
            )
        )


def _open(db, settings, now):
    from lorawatch.alerts.engine import list_alerts

    return list_alerts(db, settings, state="open", now=now)


def _matches(alert: dict, expected: dict) -> bool:
    for key, value in expected.items():
        if key == "state":
            if alert["state"] != value:
                return False
        elif alert["labels"].get(key) != str(value):
            return False
    return True


CASES = yaml.safe_load(RULE_TESTS.read_text())


@pytest.mark.parametrize("case", CASES["tests"], ids=[c["name"][:60] for c in CASES["tests"]])
def test_rules_promtool_style(case, db, tmp_path):
    from lorawatch.alerts.engine import evaluate, list_alerts
    from lorawatch.alerts.rules import load_file, load_rules

    settings = _settings(tmp_path)
    start = datetime.fromisoformat(CASES["start"].replace("Z", "+00:00"))
    if case.get("rules"):
        path = tmp_path / "rules.yaml"
        path.write_text(case["rules"])
        rules = load_file(path)
    else:
        rules = load_rules(settings)
    for series in case["series"]:
        step = parse_duration(series.get("interval", "1m"))
        for i, value in enumerate(series["values"]):
            if value == "_":
                continue
            _store(
                db,
                monitor=series["monitor"],
                labels=series["labels"],
                ts=start + i * step,
                value=float(value),
                threshold=series.get("threshold"),
            )
    for check in case["eval"]:
        now = start + parse_duration(check["at"])
        result = evaluate(db, settings, now=now, rules=rules)
        got = _open(db, settings, now)
        expected = check["alerts"]
        assert len(got) == len(expected), f"at {check['at']}: {[(a['rule'], a['labels'], a['state']) for a in got]}"
        for exp in expected:
            assert any(_matches(a, exp) for a in got), (
                f"at {check['at']}: no alert like {exp} in {[(a['labels'], a['state']) for a in got]}"
            )
        for exp in check.get("resolved", []):
            resolved = list_alerts(db, settings, state="resolved", now=now)
            assert any(_matches(a, exp) for a in resolved), f"at {check['at']}: {exp} not resolved"
        if "transitions" in check:
            assert len(result["transitions"]) == check["transitions"]


# --- grouping, repeat, silences, inhibition (the alerts' clock is driven; nothing sleeps) ---


def _fire(db, adapter, ts, monitor="toxicity_rate", value=0.5, version="1", **labels):
    _store(
        db,
        monitor=monitor,
        labels={"adapter": adapter, "version": version, **labels},
        ts=ts,
        value=value,
        threshold=0.05,
    )


def _queued(db):
    from sqlalchemy import select

    from lorawatch.db.models import Notification

    with db.session() as session:
        return [(n.id, n.payload) for n in session.scalars(select(Notification).order_by(Notification.id))]


def test_group_wait_interval_repeat_ack_and_send_resolved(db, tmp_path):
    from lorawatch.alerts.engine import acknowledge, evaluate

    settings = _settings(
        tmp_path,
        route={
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
    )
    ev = lambda t: evaluate(db, settings, now=T0 + t)  # noqa: E731
    _fire(db, "a", T0)
    ev(timedelta(0))
    assert _queued(db) == []  # group_wait holds the first notification
    _fire(db, "b", T0 + timedelta(seconds=10))
    ev(timedelta(seconds=10))
    assert _queued(db) == []
    ev(timedelta(seconds=30))
    notes = _queued(db)
    assert len(notes) == 1 and sorted(a["labels"]["adapter"] for a in notes[0][1]["alerts"]) == ["a", "b"]
    assert notes[0][1]["status"] == "firing" and notes[0][1]["groupLabels"] == {"alertname": "toxicity_budget"}
    _fire(db, "c", T0 + timedelta(minutes=1))
    ev(timedelta(minutes=1))
    ev(timedelta(minutes=5))
    assert len(_queued(db)) == 1  # a change waits for group_interval
    ev(timedelta(minutes=5, seconds=30))
    notes = _queued(db)
    assert len(notes) == 2 and len(notes[1][1]["alerts"]) == 3
    ev(timedelta(hours=2))
    assert len(_queued(db)) == 2  # unchanged: nothing before repeat_interval
    ev(timedelta(hours=4, minutes=5, seconds=30))
    assert len(_queued(db)) == 3  # repeated after 4h
    for alert_id in (1, 2, 3):
        acknowledge(db, str(alert_id), actor="oncall", comment="looking", now=T0 + timedelta(hours=5))
    ev(timedelta(hours=9))
    assert len(_queued(db)) == 3  # acknowledged: not repeated
    _fire(db, "a", T0 + timedelta(hours=9, minutes=1), value=0.0)
    ev(timedelta(hours=9, minutes=1))
    notes = _queued(db)
    assert len(notes) == 4
    statuses = {a["labels"]["adapter"]: a["status"] for a in notes[3][1]["alerts"]}
    assert statuses == {"a": "resolved", "b": "firing", "c": "firing"} and notes[3][1]["status"] == "firing"
    assert notes[3][1]["alerts"][-1]["endsAt"].startswith("2026-01-05T09:01")


def test_silences_and_inhibition_mute_notifications_but_not_states(db, tmp_path):
    from lorawatch.alerts.engine import evaluate, list_alerts
    from lorawatch.alerts.silences import add_silence
    from lorawatch.db.models import BaseModelRecord, CanaryDatasetRecord, CanaryRun

    settings = _settings(
        tmp_path, route={"receiver": "default", "group_by": ["alertname", "adapter"], "group_wait": "0s"}
    )
    with db.session() as session:
        base = BaseModelRecord(name="smol", sha256="0" * 64, files={}, created_by="t")
        ds = CanaryDatasetRecord(sha256="1" * 64, name="core-v1", path="x", n_prompts=1, segments={})
        session.add_all([base, ds])
        session.flush()
        ok = CanaryRun(
            dataset_id=ds.id,
            base_model_id=base.id,
            status="complete",
            started_by="t",
            config={},
            adapters=[
                {"adapter": "a", "version": "1", "version_id": 1},
                {"adapter": "b", "version": "1", "version_id": 2},
            ],
            started_at=T0 - timedelta(hours=1),
            heartbeat_at=T0 - timedelta(minutes=50),
        )
        dead = CanaryRun(
            dataset_id=ds.id,
            base_model_id=base.id,
            status="running",
            started_by="t",
            config={},
            adapters=[{"adapter": "b", "version": "1", "version_id": 2}],
            started_at=T0 - timedelta(minutes=40),
            heartbeat_at=T0 - timedelta(minutes=30),
        )
        session.add_all([ok, dead])
        session.flush()
        run_id, dead_id = ok.id, dead.id
    for adapter in ("a", "b"):
        _store(
            db,
            monitor="logit_kl",
            labels={"adapter": adapter, "version": "1"},
            ts=T0 - timedelta(minutes=50),
            value=3.0,
            threshold=1.0,
            run_id=run_id,
        )
    add_silence(
        db,
        matchers=['adapter="a"'],
        starts_at=T0 - timedelta(minutes=1),
        duration=timedelta(hours=1),
        comment="known, retraining",
        actor="oncall",
    )
    evaluate(db, settings, now=T0)
    states = {(a["rule"], a["labels"]["adapter"]): a for a in list_alerts(db, settings, state="open", now=T0)}
    assert set(states) == {("logit_drift", "a"), ("logit_drift", "b"), ("canary_job_failed", "b")}
    assert states[("logit_drift", "a")]["silenced_by"] and not states[("logit_drift", "a")]["inhibited"]
    assert states[("logit_drift", "b")]["inhibited"]  # b's latest run on core-v1 died (stale heartbeat)
    assert states[("canary_job_failed", "b")]["labels"]["dataset"] == "core-v1"
    assert states[("canary_job_failed", "b")]["context"]["run"] == dead_id
    sent = [a["labels"]["alertname"] + ":" + a["labels"]["adapter"] for _, p in _queued(db) for a in p["alerts"]]
    assert sent == ["canary_job_failed:b"]
    # the silence ends: a's drift alert is notified at the next evaluation
    evaluate(db, settings, now=T0 + timedelta(hours=1, minutes=1))
    sent = [a["labels"]["alertname"] + ":" + a["labels"]["adapter"] for _, p in _queued(db) for a in p["alerts"]]
    assert "logit_drift:a" in sent and "logit_drift:b" not in sent


def test_routes_send_by_labels_with_continue(db, tmp_path):
    from lorawatch.alerts.dispatch import build_routes, match_routes

    settings = _settings(
        tmp_path,
        receivers={"pager": {"type": "console"}, "risk-team": {"type": "console"}},
        route={
            "receiver": "default",
            "routes": [
                {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True},
                {"matchers": ['category="risk"'], "receiver": "risk-team", "group_by": ["adapter"]},
            ],
        },
    )
    root = build_routes(settings)
    names = lambda labels: [r.receiver for r in match_routes(root, labels)]  # noqa: E731
    assert names({"severity": "critical", "category": "risk"}) == ["pager", "risk-team"]
    assert names({"severity": "critical", "category": "latency"}) == ["pager"]
    assert names({"severity": "warning", "category": "drift"}) == ["default"]
    assert match_routes(root, {"severity": "warning", "category": "risk"})[0].group_by == ["adapter"]
    assert match_routes(root, {"severity": "critical"})[0].group_wait == timedelta(seconds=30)


def test_a_route_to_an_unknown_receiver_is_a_config_error(tmp_path):
    from lorawatch.errors import ConfigError
    from lorawatch.settings import load_settings

    path = tmp_path / "lorawatch.toml"
    path.write_text('[alerts.route]\nreceiver = "slack-oncall"\n')
    with pytest.raises(ConfigError, match="slack-oncall"):
        load_settings(path)


# --- delivery against real HTTP servers ---


class Script:
    """What a local HTTP server answers per path: a list of steps, the last one repeating.

    A step is (status, headers, hang_seconds); every request is recorded with its arrival time.
    """

    def __init__(self, plans: dict[str, list[tuple[int, dict, float]]]):
        self.plans = {k: list(v) for k, v in plans.items()}
        self.received: list[tuple[str, float, object]] = []
        self.lock = threading.Lock()

    def next(self, path: str):
        with self.lock:
            plan = next((v for k, v in self.plans.items() if path.startswith(k)), [(404, {}, 0)])
            return plan.pop(0) if len(plan) > 1 else plan[0]

    def bodies(self, prefix: str) -> list:
        return [b for p, _, b in self.received if p.startswith(prefix)]

    def times(self, prefix: str) -> list[float]:
        return [t for p, t, _ in self.received if p.startswith(prefix)]


@pytest.fixture
def http_server():
    servers = []

    def start(script: Script) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
                with script.lock:
                    script.received.append((self.path, time.monotonic(), body))
                status, headers, hang = script.next(self.path)
                if hang:
                    time.sleep(hang)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    payload = f"error at {self.path}".encode() if status >= 400 else b"ok"
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _all_receivers_settings(tmp_path, base: str, monkeypatch, **extra):
    monkeypatch.setenv("LW_SLACK_URL", f"{base}/slack/T000/B000/SECRET-SLACK-TOKEN")
    monkeypatch.setenv("LW_TEAMS_URL", f"{base}/teams/workflow?sig=SECRET-TEAMS-SIG")
    monkeypatch.setenv("LW_HOOK_URL", f"{base}/hook/SECRET-HOOK")
    monkeypatch.setenv("LW_HANG_URL", f"{base}/hang")
    monkeypatch.setenv("LW_PD_KEY", "SECRET-PD-ROUTING-KEY")
    receivers = {
        "slack": {"type": "slack", "url": {"env": "LW_SLACK_URL"}},
        "teams": {"type": "teams", "url": {"env": "LW_TEAMS_URL"}},
        "hook": {"type": "webhook", "url": {"env": "LW_HOOK_URL"}},
        "pager": {"type": "pagerduty", "routing_key": {"env": "LW_PD_KEY"}, "events_url": f"{base}/pd"},
        "slow": {"type": "webhook", "url": {"env": "LW_HANG_URL"}, "timeout_s": 0.5},
    }
    route = {
        "receiver": "slack",
        "group_by": ["alertname"],
        "group_wait": "0s",
        "routes": [{"receiver": name, "continue": True} for name in receivers],
    }
    return _settings(tmp_path, receivers=receivers, route=route, retry_initial_s=0.05, **extra)


def test_delivery_retries_429_500_and_hangs_and_every_alert_arrives(db, tmp_path, http_server, monkeypatch, caplog):
    from lorawatch.alerts.engine import evaluate, fingerprint
    from lorawatch.alerts.outbox import attempts_of, flush, list_notifications

    script = Script(
        {
            "/slack": [(429, {"Retry-After": "1"}, 0), (200, {}, 0)],
            "/teams": [(200, {}, 0)],
            "/hook": [(500, {}, 0), (500, {}, 0), (200, {}, 0)],
            "/pd": [(202, {}, 0)],
            "/hang": [(200, {}, 3.0)],
        }
    )
    base = http_server(script)
    settings = _all_receivers_settings(tmp_path, base, monkeypatch)
    _fire(db, "support-bot", T0)
    _fire(db, "billing-bot", T0)
    evaluate(db, settings, now=T0)
    result = flush(db, settings, now=T0 + timedelta(seconds=1), deadline_s=3.0)
    assert result["queued"] == 0 and result["delivered"] == 4 and result["deferred"] == 1, result

    slack_times = script.times("/slack")
    assert len(slack_times) == 2
    gap = slack_times[1] - slack_times[0]
    print(f"Retry-After: 1 honoured: the retry came {gap:.3f} s after the 429")
    assert gap >= 1.0
    assert len(script.bodies("/hook")) == 3 and len(script.bodies("/teams")) == 1
    slack = script.bodies("/slack")[-1]
    assert slack["blocks"][0]["type"] == "header" and slack["blocks"][-1]["type"] == "actions"
    # the critical alerts opened an incident (by default): its button comes after the alert's
    assert [e["text"]["text"] for e in slack["blocks"][-1]["elements"]] == ["Runbook", "Dashboard", "Incident 1"]
    assert slack["blocks"][-1]["elements"][2]["url"].endswith("/incidents?incident=1")
    # the header says how urgent; the Dashboard button opens the alert itself, not the front page
    assert slack["blocks"][0]["text"]["text"].startswith("[FIRING:2] CRITICAL toxicity_budget")
    assert "/alerts?alert=" in slack["blocks"][-1]["elements"][1]["url"]
    teams = script.bodies("/teams")[0]["attachments"][0]
    assert teams["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert teams["content"]["actions"][0] == {
        "type": "Action.OpenUrl",
        "title": "Runbook",
        "url": "http://127.0.0.1:8501/alerts?runbook=toxicity_budget",
    }
    hook = script.bodies("/hook")[-1]
    assert (
        hook["version"] == "4"
        and hook["status"] == "firing"
        and hook["groupLabels"] == {"alertname": "toxicity_budget"}
    )
    assert {a["labels"]["adapter"] for a in hook["alerts"]} == {"support-bot", "billing-bot"}
    events = script.bodies("/pd")
    assert {e["dedup_key"] for e in events} == {a["fingerprint"] for a in hook["alerts"]}
    assert all(e["event_action"] == "trigger" and e["payload"]["severity"] == "critical" for e in events)
    assert events[0]["links"][0]["text"] == "Runbook"
    assert {a["fingerprint"] for a in hook["alerts"]} == {fingerprint(a["labels"]) for a in hook["alerts"]}

    slow = [n for n in list_notifications(db) if n["receiver"] == "slow"][0]
    assert slow["status"] == "pending" and "ReadTimeout" in slow["last_error"] and slow["attempts"] >= 2
    hook_note = [n for n in list_notifications(db) if n["receiver"] == "hook"][0]
    assert [a["status_code"] for a in attempts_of(db, hook_note["id"])] == [500, 500, 200]
    slack_note = [n for n in list_notifications(db) if n["receiver"] == "slack"][0]
    assert attempts_of(db, slack_note["id"])[0]["retry_after_s"] == 1.0

    # the slow receiver recovers: the next flush delivers what was left, and nothing twice
    script.plans["/hang"] = [(200, {}, 0)]
    later = T0 + timedelta(minutes=2)
    result = flush(db, settings, now=later, deadline_s=3.0)
    assert result["delivered"] == 1 and result["pending"] == 0
    assert {a["labels"]["adapter"] for a in script.bodies("/hang")[-1]["alerts"]} == {"support-bot", "billing-bot"}
    assert len(script.bodies("/teams")) == 1 and len(script.bodies("/pd")) == 2

    # secrets never reach the database or the logs
    dump = json.dumps(
        [list_notifications(db)] + [attempts_of(db, n["id"]) for n in list_notifications(db)], default=str
    )
    dump += caplog.text
    for secret in ("SECRET-SLACK-TOKEN", "SECRET-TEAMS-SIG", "SECRET-HOOK", "SECRET-PD-ROUTING-KEY"):
        assert secret not in dump


def test_a_500_body_echoing_the_url_is_scrubbed(db, tmp_path, http_server, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import attempts_of, flush, list_notifications

    script = Script({"/hook": [(500, {}, 0)]})
    base = http_server(script)
    monkeypatch.setenv("LW_HOOK_URL", f"{base}/hook/SECRET-HOOK")
    settings = _settings(
        tmp_path,
        receivers={"hook": {"type": "webhook", "url": {"env": "LW_HOOK_URL"}}},
        route={"receiver": "hook", "group_wait": "0s"},
        retry_initial_s=60,  # one attempt, then deferred: however slow the machine, the deadline leaves room for it
    )
    _fire(db, "a", T0)
    evaluate(db, settings, now=T0)
    flush(db, settings, now=T0, deadline_s=10)
    note = list_notifications(db)[0]
    assert note["status"] == "pending" and note["last_error"] == "HTTP 500: error at <redacted>"
    assert all("SECRET" not in (a["error"] or "") for a in attempts_of(db, note["id"]))


def test_an_unset_secret_is_a_visible_failure_not_a_crash(db, tmp_path, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush, list_notifications

    monkeypatch.delenv("LW_UNSET_URL", raising=False)
    settings = _settings(
        tmp_path,
        receivers={"slack": {"type": "slack", "url": {"env": "LW_UNSET_URL"}}},
        route={"receiver": "slack", "group_wait": "0s"},
        retry_initial_s=60,  # one attempt, then deferred (see above)
    )
    _fire(db, "a", T0)
    evaluate(db, settings, now=T0)
    result = flush(db, settings, now=T0, deadline_s=10)
    assert result["delivered"] == 0 and result["pending"] == 1
    assert "LW_UNSET_URL is not set" in list_notifications(db)[0]["last_error"]


def test_slack_is_paced_at_one_message_a_second(db, tmp_path, http_server, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    script = Script({"/slack": [(200, {}, 0)]})
    base = http_server(script)
    monkeypatch.setenv("LW_SLACK_URL", f"{base}/slack/x")
    settings = _settings(
        tmp_path,
        receivers={"slack": {"type": "slack", "url": {"env": "LW_SLACK_URL"}}},
        route={"receiver": "slack", "group_by": ["adapter"], "group_wait": "0s"},
    )
    for adapter in ("a", "b", "c"):
        _fire(db, adapter, T0)
    evaluate(db, settings, now=T0)
    assert flush(db, settings, now=T0, deadline_s=10)["delivered"] == 3
    times = script.times("/slack")
    gaps = [b - a for a, b in zip(times, times[1:])]
    print(f"gaps between Slack messages: {[round(g, 3) for g in gaps]} s")
    assert len(times) == 3 and min(gaps) >= 0.95


def _write_config(tmp_path, text: str) -> Path:
    path = tmp_path / "lorawatch.toml"
    path.write_text(text)
    return path


def test_nothing_is_lost_when_processes_die_between_evaluation_and_flush(
    db, lw_env, tmp_path, http_server, monkeypatch
):
    from sqlalchemy import select

    from lorawatch.alerts.outbox import flush, list_notifications
    from lorawatch.db.models import Notification
    from lorawatch.settings import load_settings

    script = Script({"/hook": [(200, {}, 30.0), (200, {}, 0)]})
    base = http_server(script)
    config = _write_config(
        tmp_path,
        '[alerts]\nretry_initial_s = 0.05\n[alerts.route]\nreceiver = "hook"\ngroup_wait = "0s"\n'
        '[alerts.receivers.hook]\ntype = "webhook"\nurl = { env = "LW_HOOK_URL" }\ntimeout_s = 25\n',
    )
    env = {
        **os.environ,
        "LW_HOOK_URL": f"{base}/hook",
        "LORAWATCH_CONFIG": str(config),
        "LORAWATCH_DATABASE_URL": lw_env,
    }
    now = datetime.now(UTC)
    _fire(db, "support-bot", now - timedelta(minutes=1))
    # process 1 evaluates and exits: the notification is in the outbox, not yet sent
    subprocess.run(
        [sys.executable, "-m", "lorawatch", "alerts", "evaluate", "--no-traffic"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert [n["status"] for n in list_notifications(db)] == ["pending"] and script.received == []
    # process 2 starts delivering and is killed while the receiver holds the request
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorawatch", "notify", "flush"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not script.received and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert len(script.received) == 1
    with db.session() as session:
        note = session.scalar(select(Notification))
        assert note.status == "pending" and note.claimed_until is not None
        lease_end = note.claimed_until
    settings = load_settings(config)
    monkeypatch.setenv("LW_HOOK_URL", f"{base}/hook")
    assert flush(db, settings, now=datetime.now(UTC), deadline_s=1)["delivered"] == 0  # still leased
    result = flush(db, settings, now=lease_end + timedelta(seconds=1), deadline_s=5)
    assert result["delivered"] == 1 and result["pending"] == 0
    assert len(script.received) == 2 and script.received[1][2]["alerts"][0]["labels"]["adapter"] == "support-bot"


# --- a real Prometheus Alertmanager ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path):
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        if os.environ.get("LORAWATCH_REQUIRE_ALERTMANAGER"):
            pytest.fail("LORAWATCH_REQUIRE_ALERTMANAGER is set but prometheus-alertmanager is not installed")
        pytest.skip("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    port = _free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"alertmanager did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_a_real_alertmanager_receives_and_lists_our_alerts(db, tmp_path, alertmanager, monkeypatch):
    import httpx

    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    monkeypatch.setenv("LW_AM_URL", alertmanager)
    settings = _settings(
        tmp_path,
        receivers={"am": {"type": "alertmanager", "url": {"env": "LW_AM_URL"}}},
        route={"receiver": "am", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1m"},
    )
    now = datetime.now(UTC)
    earlier = now - timedelta(minutes=3)
    _fire(db, "support-bot", earlier - timedelta(seconds=5), version="7")
    _store(
        db,
        monitor="logit_kl",
        labels={"adapter": "support-bot", "version": "7"},
        ts=earlier - timedelta(seconds=5),
        value=2.5,
        threshold=1.0,
    )
    evaluate(db, settings, now=earlier)
    assert flush(db, settings, now=earlier, deadline_s=10)["delivered"] == 2
    listed = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    by_name = {a["labels"]["alertname"]: a for a in listed}
    assert set(by_name) == {"toxicity_budget", "logit_drift"}
    tox = by_name["toxicity_budget"]
    assert tox["labels"]["adapter"] == "support-bot" and tox["labels"]["version"] == "7"
    assert tox["labels"]["severity"] == "critical" and tox["status"]["state"] == "active"
    assert (
        tox["annotations"]["runbook_url"].endswith("runbook=toxicity_budget") and tox["annotations"]["value"] == "0.5"
    )
    # the drift resolves: after group_interval our resolved notification ends it in Alertmanager too
    _store(
        db,
        monitor="logit_kl",
        labels={"adapter": "support-bot", "version": "7"},
        ts=now - timedelta(seconds=1),
        value=0.2,
        threshold=1.0,
    )
    evaluate(db, settings, now=now)
    assert flush(db, settings, now=now, deadline_s=10)["delivered"] == 1
    listed = httpx.get(f"{alertmanager}/api/v2/alerts", params={"active": "true"}, timeout=5).json()
    assert {a["labels"]["alertname"] for a in listed} == {"toxicity_budget"}


# --- rules files, runbooks, CLI ---

BAD_RULES = {
    "unknown key": (
        "groups:\n  - name: g\n    rules:\n      - id: r1\n        monitor: logit_kl\n        threshhold: 2\n",
        ":6",
        "rule r1: unknown key 'threshhold'",
    ),
    "bad condition": (
        "groups:\n  - name: g\n    rules:\n      - id: ok_rule\n        monitor: logit_kl\n"
        "      - id: r2\n        monitor: logit_kl\n        condition: 'above 2'\n",
        ":8",
        "rule r2:",
    ),
    "unknown monitor": (
        "groups:\n  - name: g\n    rules:\n      - id: r3\n        monitor: logit_kll\n",
        ":5",
        "rule r3: unknown monitor 'logit_kll'",
    ),
    "duplicate id": (
        "groups:\n  - name: g\n    rules:\n      - id: r4\n        monitor: logit_kl\n"
        "      - id: r4\n        monitor: logit_js\n",
        ":6",
        "rule r4 is defined twice",
    ),
    "bad template": (
        "groups:\n  - name: g\n    rules:\n      - id: r5\n        monitor: logit_kl\n"
        "        annotations: {summary: '{{ labels.adapter '}\n",
        ":4",
        "rule r5: annotation 'summary'",
    ),
    "bad yaml": ("groups:\n  - name: g\n    rules:\n      - id: r6\n       monitor: [\n", ":5", "invalid YAML"),
    "bad duration": (
        "groups:\n  - name: g\n    rules:\n      - id: r7\n        monitor: logit_kl\n        for: 5 minutes\n",
        ":6",
        "rule r7:",
    ),
    "metric without condition": (
        "groups:\n  - name: g\n    rules:\n      - id: r8\n        metric: canary_job_failed\n",
        ":4",
        "rule r8: a metric has no breached flag",
    ),
}


@pytest.mark.parametrize("name", list(BAD_RULES))
def test_a_bad_rules_file_exits_2_with_file_line_and_rule_id(name, cli, tmp_path):
    text, line, message = BAD_RULES[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = cli("alerts", "rules", "--check", path)
    assert result.code == 2, result.out
    assert f"{path}{line}:" in result.err and message in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_a_bad_rules_file_in_config_stops_evaluation_and_stores_nothing(cli, lw_env, db, tmp_path):
    from sqlalchemy import func, select

    from lorawatch.db.models import Alert

    (tmp_path / "mine.yaml").write_text(BAD_RULES["unknown monitor"][0])
    _write_config(tmp_path, '[alerts]\nrules_files = ["mine.yaml"]\n')
    _fire(db, "a", datetime.now(UTC) - timedelta(minutes=1))
    result = cli("alerts", "evaluate", "--no-traffic")
    assert result.code == 2 and "mine.yaml:5" in result.err and "rule r3" in result.err
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0


def test_user_rules_replace_builtins_by_id_and_can_be_disabled(cli, lw_env, db, tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "groups:\n  - name: mine\n    rules:\n      - id: logit_drift\n        monitor: logit_kl\n"
        "        condition: '> 3'\n        severity: critical\n"
    )
    _write_config(tmp_path, '[alerts]\nrules_files = ["mine.yaml"]\ndisabled_rules = ["adapter_review_overdue"]\n')
    rules = {r["id"]: r for r in cli("alerts", "rules", "--json").json()}
    assert rules["logit_drift"]["condition"] == "> 3" and rules["logit_drift"]["severity"] == "critical"
    assert "adapter_review_overdue" not in rules and "pii_leak" in rules


def test_p_values_in_summaries_read_as_p_values_not_float_noise():
    from lorawatch.alerts.rules import load_rules

    kpi = next(r for r in load_rules(Settings()) if r.id == "kpi_drop")
    context = {
        "labels": {"adapter": "support-risky", "kpi": "conversion"},
        "threshold": 0.05,
        "context": {"details": {"relative_change": -0.238, "baseline_mean": 0.0823, "current_mean": 0.0627}},
    }
    tiny = kpi.render_annotations({**context, "value": 1.8e-23})["summary"]
    assert tiny == "support-risky: conversion fell 23.8% against its baseline (p < 0.0001)"
    assert "p = 0.012" in kpi.render_annotations({**context, "value": 0.01234})["summary"]


def test_every_rule_has_a_runbook_with_every_section():
    from lorawatch.alerts.rules import load_rules, runbook_path

    sections = ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Escalation"]
    for rule in load_rules(Settings(), include_disabled=True):
        path = runbook_path(rule.id)
        assert path.is_file(), f"rule {rule.id} has no runbook at {path}"
        text = path.read_text()
        positions = [text.find(s) for s in sections]
        assert all(p >= 0 for p in positions), f"{path}: missing {[s for s, p in zip(sections, positions) if p < 0]}"
        assert positions == sorted(positions), f"{path}: sections out of order"
        assert "lorawatch " in text.split("## Diagnosis")[1], f"{path}: Diagnosis names no command"


def test_cli_evaluate_list_ack_silence_and_notify(cli, lw_env, db, tmp_path):
    _write_config(tmp_path, '[alerts.route]\nreceiver = "default"\ngroup_wait = "0s"\n')
    now = datetime.now(UTC)
    _fire(db, "support-bot", now - timedelta(minutes=1))
    _fire(db, "billing-bot", now - timedelta(minutes=1))
    result = cli("alerts", "evaluate", "--no-traffic", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["firing"] == 2 and data["notifications_queued"] == 1
    listed = cli("alerts", "list", "--json").json()
    assert [a["state"] for a in listed] == ["firing", "firing"]
    text = cli("alerts", "list").out
    assert "toxicity_budget" in text and "support-bot" in text
    first = listed[0]["id"]
    assert cli("alerts", "ack", first, "--comment", "rolling back").code == 0
    assert cli("alerts", "ack", "999").code == 2
    shown = cli("alerts", "show", first, "--json").json()
    assert shown["acked_by"] == "tester" and [e["to"] for e in shown["events"]] == ["firing", "firing"]
    bad = cli("alerts", "silence", "-m", "adapter~support", "--comment", "x")
    assert bad.code == 2 and "matcher" in bad.err
    silence = cli(
        "alerts", "silence", "-m", 'adapter="billing-bot"', "--duration", "1h", "--comment", "deploy", "--json"
    ).json()
    assert silence["state"] == "active"
    assert [a["labels"]["adapter"] for a in cli("alerts", "list", "--state", "silenced", "--json").json()] == [
        "billing-bot"
    ]
    assert cli("alerts", "expire", silence["id"]).code == 0
    assert cli("alerts", "silences", "--json").json() == []
    flushed = cli("notify", "flush", "--json").json()
    assert flushed["delivered"] == 1 and flushed["pending"] == 0
    log = cli("notify", "list", "--json").json()
    assert log[0]["status"] == "sent" and log[0]["receiver"] == "default"
    lines = (Path(os.environ["LORAWATCH_HOME"]) / "notifications.jsonl").read_text().splitlines()
    assert len(lines) == 1 and len(json.loads(lines[0])["alerts"]) == 2
    audit = cli("audit", "list", "--json").json()
    assert {"alert.ack", "silence.create", "silence.expire"} <= {e["action"] for e in audit}


def test_a_rollback_resolves_the_rolled_back_versions_alerts_and_lifecycle_rules_fire(
    cli, lw_env, db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    from lorawatch.alerts.engine import evaluate, list_alerts
    from lorawatch.db.models import AdapterVersion
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
            "--data-expires",
            "2026-01-01",
        ).code
        == 0
    )
    assert cli("registry", "add", "support", "--path", second_adapter, "--base", "tiny", "--version", "v2").code == 0
    for version in ("v1", "v2"):
        assert cli("registry", "promote", "support", "--version", version, "--reason", "release").code == 0
    with db.session() as session:
        ids = {v.version: v.id for v in session.query(AdapterVersion)}
    now = datetime.now(UTC)
    from lorawatch.db.models import MonitorResult

    with db.session() as session:
        for version, value in (("v1", 0.0), ("v2", 0.4)):
            session.add(
                MonitorResult(
                    ts=now - timedelta(hours=1),
                    monitor="toxicity_rate",
                    adapter="support",
                    version=version,
                    adapter_version_id=ids[version],
                    value=value,
                    threshold=0.05,
                    breached=value > 0.05,
                )
            )
    settings = load_settings()
    evaluate(db, settings, now=now)
    firing = {(a["rule"], a["labels"].get("version")) for a in list_alerts(db, settings, now=now)}
    assert ("toxicity_budget", "v2") in firing and ("toxicity_budget", "v1") not in firing
    assert ("canary_job_missed", None) not in firing  # promoted minutes ago: not missed yet
    assert cli("registry", "rollback", "support", "--reason", "toxic outputs").code == 0
    evaluate(db, settings, now=now + timedelta(minutes=1))
    open_now = {
        (a["rule"], a["labels"].get("version")) for a in list_alerts(db, settings, now=now + timedelta(minutes=1))
    }
    assert ("toxicity_budget", "v2") not in open_now
    assert ("adapter_data_expired", "v1") in open_now  # v1 serves again, and its data expired on 2026-01-01
    later = now + timedelta(days=9)
    evaluate(db, settings, now=later)
    rules = {a["rule"] for a in list_alerts(db, settings, now=later)}
    assert "canary_job_missed" in rules  # served for 9 days without a complete canary run
    evaluate(db, settings, now=now + timedelta(days=120))
    overdue = [
        a for a in list_alerts(db, settings, now=now + timedelta(days=120)) if a["rule"] == "adapter_review_overdue"
    ]
    assert overdue and overdue[0]["labels"]["version"] == "v1" and 29 < overdue[0]["value"] < 31


def test_evaluate_says_why_nothing_was_queued_yet(cli, lw_env, db, tmp_path):
    _write_config(tmp_path, '[alerts.route]\nreceiver = "default"\ngroup_wait = "30s"\n')
    _fire(db, "support-bot", datetime.now(UTC) - timedelta(minutes=1))
    result = cli("alerts", "evaluate", "--no-traffic")
    assert result.code == 0 and "1 firing" in result.out and "0 notifications queued" in result.out
    assert "group_wait" in result.out and "notify flush --no-wait" in result.out
