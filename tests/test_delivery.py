"""Delivery that on-call can trust (#19): fault injection against real HTTP receivers on
loopback, overlapping flushes, failed messages, rules that fail alone, signatures, and secrets
that never leave. Counts are printed (``pytest -s``) for the closing note."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lorawatch.settings import Settings
from tests.receivers import Answer, Receivers, first_then

T0 = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def receivers():
    server = Receivers()
    yield server
    server.close()


def _fire(db, adapter: str, ts: datetime, value: float = 0.5) -> None:
    """A breached toxicity result: the built-in toxicity_budget rule fires for ``adapter``."""
    from lorawatch.db.models import MonitorResult

    with db.session() as session:
        session.add(
            MonitorResult(
                ts=ts,
                monitor="toxicity_rate",
                adapter=adapter,
                version="1",
                value=value,
                threshold=0.05,
                breached=True,
                details={},
            )
        )


def _settings(tmp_path, receivers: dict, **alerts) -> Settings:
    """Each receiver gets the alerts of adapters named ``<receiver>-<n>``, one message per adapter."""
    routes = [
        {"receiver": name, "matchers": [f'adapter=~"{name}-.*"'], "group_by": ["adapter"], "group_wait": "0s"}
        for name in receivers
    ]
    data = {
        "home": str(tmp_path / "home"),
        "alerts": {
            "receivers": receivers,
            "route": {"receiver": "default", "group_wait": "0s", "routes": routes},
            "retry_initial_s": 0.05,
            **alerts,
        },
    }
    return Settings.model_validate(data)


def _webhook(monkeypatch, name: str, url: str, **extra) -> dict:
    monkeypatch.setenv(f"LW_{name.upper()}_URL", url)
    return {"type": "webhook", "url": {"env": f"LW_{name.upper()}_URL"}, **extra}


def _notes(db) -> list[dict]:
    from lorawatch.alerts.outbox import list_notifications

    return list_notifications(db, limit=1000)


def test_fault_injection_nothing_lost_nothing_twice_failures_end_and_do_not_block(db, tmp_path, receivers, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import attempts_of, flush

    reset, hang = Answer(reset=True), Answer(200, delay=2.0)
    rejected: list[str] = []

    def rejects_one(request, before):  # a 400 for the first message it sees, forever
        if not rejected:
            rejected.append(request.notification_id)
        return Answer(400, text="invalid_payload") if request.notification_id == rejected[0] else Answer(200)

    config = {
        "flaky": _webhook(monkeypatch, "flaky", receivers.on("/flaky", first_then([Answer(500), Answer(500)]))),
        "limited": _webhook(
            monkeypatch, "limited", receivers.on("/limited", first_then([Answer(429, {"Retry-After": "1"})]))
        ),
        "hangs": _webhook(monkeypatch, "hangs", receivers.on("/hangs", first_then([hang])), timeout_s=0.5),
        "resets": _webhook(monkeypatch, "resets", receivers.on("/resets", first_then([reset, reset]))),
        "rejects": _webhook(monkeypatch, "rejects", receivers.on("/rejects", rejects_one)),
        # a URL from a Kubernetes secret, with its trailing newline
        "newline": _webhook(monkeypatch, "newline", receivers.on("/newline", first_then([])) + "\n"),
        "broken": _webhook(monkeypatch, "broken", "http://exa mple.invalid:notaport/x"),
    }
    settings = _settings(tmp_path, config)
    for name in config:
        for n in range(3):
            _fire(db, f"{name}-{n}", T0)
    evaluate(db, settings, now=T0)
    queued = {n["id"]: n["receiver"] for n in _notes(db)}
    assert Counter(queued.values()) == {name: 3 for name in config}, queued

    now = T0
    for _ in range(8):
        result = flush(db, settings, now=now, deadline_s=4.0)
        assert result["seconds"] < 4.0 + 0.5 + 1.0, result  # the deadline, one request's timeout, slack
        if result["pending"] == 0:
            break
        now += timedelta(minutes=2)
    notes = {n["id"]: n for n in _notes(db) if n["receiver"] in config}
    by_state = Counter(n["status"] for n in notes.values())

    accepted = Counter()
    for name in config:
        accepted.update(receivers.accepted_ids(f"/{name}"))
    duplicates = sum(count - 1 for count in accepted.values())
    sent_ids = {str(i) for i, n in notes.items() if n["status"] == "sent"}
    lost = sent_ids - set(accepted)
    print(
        f"\nfault injection: {len(notes)} queued, {by_state['sent']} delivered, {by_state['failed']} failed, "
        f"{by_state['pending']} pending, {duplicates} duplicates, {len(lost)} lost"
    )
    assert duplicates == 0 and not lost
    assert by_state == {"sent": 17, "failed": 4}, by_state  # 7 receivers x 3 messages
    failed = {i: n for i, n in notes.items() if n["status"] == "failed"}
    assert Counter(n["receiver"] for n in failed.values()) == {"broken": 3, "rejects": 1}
    # a permanent 4xx ends at once, and the receiver's later messages went through
    [rejected_note] = [n for n in failed.values() if n["receiver"] == "rejects"]
    assert str(rejected_note["id"]) == rejected[0] and rejected_note["attempts"] == 1
    assert "HTTP 400" in rejected_note["last_error"]
    assert attempts_of(db, rejected_note["id"])[0]["permanent"]
    # an invalid URL is a permanent failure with a clear error, not a crash, and not echoed
    for note in (n for n in failed.values() if n["receiver"] == "broken"):
        assert note["attempts"] == 1 and "not a valid URL" in note["last_error"]
        assert "exa mple" not in note["last_error"]
    # retryable failures were retried until they went through
    for name, expected in (("flaky", 2), ("resets", 2), ("hangs", 1), ("limited", 1)):
        statuses = [r.answered for r in receivers.at(f"/{name}")]
        assert sum(s is None or s >= 300 for s in statuses[:expected]) >= 1, (name, statuses)
    limited = receivers.at("/limited")
    assert limited[1].at - limited[0].at >= 1.0  # Retry-After honoured
    # every request carried the notification's id, the same on each retry
    assert all(
        r.notification_id and r.headers["idempotency-key"] == f"lorawatch-{r.notification_id}"
        for r in receivers.received
    )
    assert all(r.body["notificationId"] == r.notification_id for r in receivers.received)


def test_two_overlapping_flushes_on_a_slow_receiver_never_send_one_message_twice(db, tmp_path, receivers, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    slow = receivers.on("/slow", lambda request, before: Answer(200, delay=0.25))
    settings = _settings(tmp_path, {"slow": _webhook(monkeypatch, "slow", slow)}, flush_lease="1s")
    for n in range(16):
        _fire(db, f"slow-{n}", T0)
    evaluate(db, settings, now=T0)
    results: list[dict] = []

    def run(delay: float, deadline: float) -> None:
        time.sleep(delay)
        results.append(flush(db, settings, now=T0 + timedelta(seconds=delay), deadline_s=deadline))

    # A works for ~3 s, well past its 1 s lease, renewing it; B starts after A's first lease
    # would have run out, and C with a deadline of 1 s must stop at it.
    threads = [
        threading.Thread(target=run, args=(0.0, 3.0)),
        threading.Thread(target=run, args=(1.5, 10.0)),
        threading.Thread(target=run, args=(0.2, 1.0)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = max(results, key=lambda r: r["seconds"])  # A claimed all 16 at the start
    assert first["seconds"] <= 3.0 + 0.25 + 0.5, first  # stopped at its deadline (+ one request, slack)
    assert first["delivered"] < 16 and first["deferred"] == 16 - first["delivered"]  # the rest left, in order
    assert all(r["attempts"] == 0 for r in results if r is not first)  # B and C took nothing A held
    for _ in range(5):  # later flushes deliver the rest
        if flush(db, settings, now=T0 + timedelta(minutes=5), deadline_s=10)["pending"] == 0:
            break
    accepted = Counter(receivers.accepted_ids("/slow"))
    print(
        f"\noverlapping flushes: 16 queued, {len(accepted)} delivered, "
        f"{sum(c - 1 for c in accepted.values())} duplicates; flushes took {[r['seconds'] for r in results]} s"
    )
    assert len(accepted) == 16 and set(accepted.values()) == {1}
    assert all(n["status"] == "sent" for n in _notes(db) if n["receiver"] == "slow")


def test_a_failed_message_alerts_the_fallback_receiver_and_can_be_retried(db, tmp_path, receivers, monkeypatch, cli):
    from lorawatch.alerts.engine import evaluate, list_alerts
    from lorawatch.alerts.outbox import flush, retry

    state = {"gone": True}
    hook = receivers.on("/hook", lambda r, n: Answer(404, text="no such webhook") if state["gone"] else Answer(200))
    fallback = receivers.on("/oncall", first_then([]))
    settings = _settings(
        tmp_path,
        {"hook": _webhook(monkeypatch, "hook", hook), "oncall": _webhook(monkeypatch, "oncall", fallback)},
        fallback_receiver="oncall",
    )
    _fire(db, "hook-1", T0)
    evaluate(db, settings, now=T0)
    flush(db, settings, now=T0, deadline_s=2)
    [note] = [n for n in _notes(db) if n["receiver"] == "hook"]
    assert note["status"] == "failed" and note["attempts"] == 1

    # the next evaluation raises notification_failed, which goes to the fallback whatever the routes say
    evaluate(db, settings, now=T0 + timedelta(minutes=1))
    firing = [a for a in list_alerts(db, settings, state="firing") if a["rule"] == "notification_failed"]
    assert len(firing) == 1 and firing[0]["labels"]["receiver"] == "hook" and firing[0]["value"] == 1.0
    assert "HTTP 404" in firing[0]["annotations"]["description"]
    flush(db, settings, now=T0 + timedelta(minutes=1), deadline_s=2)
    [told] = receivers.at("/oncall")
    assert told.body["alerts"][0]["labels"]["alertname"] == "notification_failed"

    # the webhook is fixed; the failed message is sent again and the alert resolves
    state["gone"] = False
    with pytest.raises(Exception, match="is sent, not failed|not failed"):
        retry(db, [n for n in _notes(db) if n["receiver"] == "oncall"][0]["id"], actor="t")
    assert retry(db, note["id"], actor="oncall-bob", now=T0 + timedelta(minutes=2))["status"] == "pending"
    result = flush(db, settings, now=T0 + timedelta(minutes=2), deadline_s=2)
    assert result["delivered"] >= 1
    assert [n["status"] for n in _notes(db) if n["id"] == note["id"]] == ["sent"]
    evaluate(db, settings, now=T0 + timedelta(minutes=3))
    assert not [a for a in list_alerts(db, settings, state="firing") if a["rule"] == "notification_failed"]


def test_a_message_fails_after_max_attempts_and_after_max_age(db, tmp_path, receivers, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    down = receivers.on("/down", lambda r, n: Answer(503))
    settings = _settings(
        tmp_path,
        {
            "down": _webhook(monkeypatch, "down", down, max_attempts=3),
            "old": _webhook(monkeypatch, "old", receivers.on("/old", lambda r, n: Answer(502)), max_age="1h"),
        },
    )
    _fire(db, "down-1", T0)
    _fire(db, "old-1", T0)
    evaluate(db, settings, now=T0)
    flush(db, settings, now=T0, deadline_s=3)
    notes = {n["receiver"]: n for n in _notes(db)}
    assert notes["down"]["status"] == "failed" and notes["down"]["attempts"] == 3
    assert notes["old"]["status"] == "pending"
    tried = notes["old"]["attempts"]
    # its next attempt fails and it is over max_age: failed (the deadline only leaves room for
    # that attempt on a slow machine; the flush ends as soon as the message fails)
    flush(db, settings, now=T0 + timedelta(hours=2), deadline_s=10)
    notes = {n["receiver"]: n for n in _notes(db)}
    assert notes["old"]["status"] == "failed"
    assert notes["old"]["attempts"] == tried + 1


RULES_WITH_ONE_BROKEN = """
groups:
  - name: mixed
    rules:
      - id: tox_good
        monitor: toxicity_rate
        condition: breached
        severity: critical
        annotations:
          summary: "{{ labels.adapter }} is toxic: {{ value | pct }}"
      - id: tox_divides
        monitor: toxicity_rate
        condition: breached
        annotations:
          summary: "{{ 1 / 0 }}"
      - id: tox_deep
        monitor: toxicity_rate
        condition: breached
        annotations:
          summary: "{{ context.details.nope.deeper }}"
"""


def test_one_broken_template_never_silences_the_other_rules(db, tmp_path, receivers, monkeypatch, cli):
    from lorawatch.alerts.engine import evaluate, list_alerts
    from lorawatch.alerts.outbox import flush

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_WITH_ONE_BROKEN)
    # --check rejects what cannot render, naming file, line and rule
    result = cli("alerts", "rules", "--check", str(rules))
    assert result.code == 2 and f"{rules}:" in result.err and "tox_divides" in result.err, result.err
    assert "ZeroDivisionError" in result.err

    hook = receivers.on("/hook", first_then([]))
    settings = _settings(tmp_path, {"hook": _webhook(monkeypatch, "hook", hook)}, rules_files=[str(rules)])
    _fire(db, "hook-1", T0)
    outcome = evaluate(db, settings, now=T0)
    firing = {a["rule"]: a for a in list_alerts(db, settings, state="firing")}
    assert {"tox_good", "tox_divides", "tox_deep", "toxicity_budget", "rule_evaluation_failed"} <= set(firing)
    assert firing["tox_good"]["annotations"]["summary"] == "hook-1 is toxic: 50.0%"
    # the broken rules still fire, with the facts instead of their template
    assert "value 0.5" in firing["tox_divides"]["annotations"]["summary"]
    broken = [a for a in list_alerts(db, settings, state="firing") if a["rule"] == "rule_evaluation_failed"]
    assert {a["labels"]["rule"] for a in broken} == {"tox_divides", "tox_deep"}
    assert any("ZeroDivisionError" in a["annotations"]["summary"] for a in broken)
    assert outcome["notifications_queued"] >= 1
    flush(db, settings, now=T0, deadline_s=2)
    sent = {a["labels"]["alertname"] for r in receivers.at("/hook") for a in r.body["alerts"]}
    assert "tox_good" in sent


def test_webhook_bodies_are_signed_and_verify_with_the_documented_recipe(db, tmp_path, receivers, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    monkeypatch.setenv("LW_SIGNING", "s3cr3t-signing-key")
    hook = receivers.on("/signed", first_then([]))
    settings = _settings(
        tmp_path, {"signed": _webhook(monkeypatch, "signed", hook, signing_secret={"env": "LW_SIGNING"})}
    )
    _fire(db, "signed-1", T0)
    evaluate(db, settings, now=T0)
    assert flush(db, settings, now=T0, deadline_s=2)["delivered"] == 1
    [request] = receivers.at("/signed")
    # the recipe in docs/alerts.md: HMAC-SHA256 over "<timestamp>.<raw body>", hex, prefixed v1=
    timestamp = request.headers["x-lorawatch-timestamp"]
    expected = (
        "v1=" + hmac.new(b"s3cr3t-signing-key", timestamp.encode() + b"." + request.raw, hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(expected, request.headers["x-lorawatch-signature"])
    assert abs(time.time() - int(timestamp)) < 60
    tampered = request.raw.replace(b"signed-1", b"signed-2")
    forged = "v1=" + hmac.new(b"s3cr3t-signing-key", timestamp.encode() + b"." + tampered, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(forged, request.headers["x-lorawatch-signature"])


def test_planted_secrets_never_reach_stderr_logs_the_database_or_config_show(
    db, database_url, tmp_path, receivers, monkeypatch
):
    """Secrets planted in every place a secret lives; every output is searched for them."""
    planted = {
        "LW_HOOK_URL": receivers.on("/hook", lambda r, n: Answer(401, text="unknown api key APIKEYVALUE987"))
        + "/T0/B0/HOOKTOKEN123456?apikey=APIKEYVALUE987",
        "LW_SLACK_URL": receivers.on("/slack", lambda r, n: Answer(500, text="boom at /slack/SLACKTOKEN987654"))
        + "/services/T1/B1/SLACKTOKEN987654",
        "LW_SIGNING": "SIGNINGSECRET55555",
        "LW_PD_KEY": "PDROUTINGKEY77777",
    }
    config = tmp_path / "lorawatch.toml"
    config.write_text(
        f'home = "{tmp_path / "home"}"\n'
        '[alerts]\nretry_initial_s = 0.05\nflush_deadline = "1s"\n'
        '[alerts.route]\nreceiver = "hook"\ngroup_wait = "0s"\n'
        '[[alerts.route.routes]]\nreceiver = "slack"\nmatchers = [\'adapter="b"\']\n'
        '[[alerts.route.routes]]\nreceiver = "pd"\nmatchers = [\'adapter="c"\']\n'
        '[alerts.receivers.hook]\ntype = "webhook"\nurl = { env = "LW_HOOK_URL" }\nsigning_secret = { env = "LW_SIGNING" }\n'
        '[alerts.receivers.slack]\ntype = "slack"\nurl = { env = "LW_SLACK_URL" }\nmin_interval_s = 0\n'
        f'[alerts.receivers.pd]\ntype = "pagerduty"\nrouting_key = {{ env = "LW_PD_KEY" }}\nevents_url = "{receivers.url}/pd"\n'
    )
    receivers.on("/pd", lambda r, n: Answer(400, text=f"bad routing key {r.body.get('routing_key')}"))
    db_password = "DBPASSWORD31337"
    env = {
        **os.environ,
        **planted,
        "LORAWATCH_CONFIG": str(config),
        "LORAWATCH_DATABASE_URL": database_url,
    }
    for adapter in ("a", "b", "c"):
        _fire(db, adapter, datetime.now(UTC) - timedelta(minutes=1))

    def run(*args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lorawatch", *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    outputs = [run("alerts", "evaluate", "--no-traffic"), run("notify", "flush"), run("notify", "flush")]
    outputs.append(run("notify", "list", "--json"))
    outputs.append(run("notify", "list", "--status", "failed"))
    outputs.append(run("config", "show"))
    outputs.append(run("config", "show", "--json"))
    # the database URL's password, from the environment: config show and a failed connection
    bad_url = f"postgresql+psycopg://lw:{db_password}@127.0.0.1:1/nowhere"
    outputs.append(run("config", "show", extra={"LORAWATCH_DATABASE_URL": bad_url}))
    outputs.append(run("notify", "list", extra={"LORAWATCH_DATABASE_URL": bad_url}))
    # a literal webhook URL in the file: the settings error names the key, not the value
    literal = tmp_path / "literal.toml"
    literal.write_text(f'[alerts.receivers.x]\ntype = "slack"\nurl = "{planted["LW_SLACK_URL"]}"\n')
    outputs.append(run("config", "show", extra={"LORAWATCH_CONFIG": str(literal)}))
    assert outputs[-1].returncode == 2 and "alerts.receivers.x" in outputs[-1].stderr

    text = "\n".join(o.stdout + o.stderr for o in outputs)
    assert "HTTP 401" in text and "<redacted>" in text  # the errors are there, scrubbed
    stored = b""
    if database_url.startswith("sqlite"):
        stored = Path(database_url.removeprefix("sqlite:///")).read_bytes()
    else:
        from sqlalchemy import text as sql

        with db.session() as session:
            for table in ("notifications", "delivery_attempts", "audit_log", "alerts"):
                stored += json.dumps(
                    [list(map(str, r)) for r in session.execute(sql(f"SELECT * FROM {table}"))]
                ).encode()
    hits = {
        name: where
        for name, value in {**planted, "password": db_password}.items()
        for where, haystack in (("output", text.encode()), ("database", stored))
        for secret in [value.split("/")[-1].split("?")[0] if "://" in value else value, "APIKEYVALUE987"]
        if secret.encode() in haystack
    }
    print(
        f"\nplanted {len(planted) + 1} secrets; searched {len(text)} characters of output and "
        f"{len(stored)} bytes of database: {len(hits)} hits"
    )
    assert not hits, hits


# --- e-mail: a real SMTP server on loopback, with STARTTLS and login ---


@pytest.fixture
def smtp_server(tmp_path):
    """aiosmtpd on 127.0.0.1 with a self-signed certificate for localhost; STARTTLS and login required."""
    import shutil
    import socket
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test server's certificate (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received: list = []
    logins: list[tuple[str, str]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            received.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"lw", b"SMTPPASS123")
        logins.append((mechanism, "ok" if ok else "refused"))
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    controller.start()
    yield {"port": port, "ca": str(cert), "received": received, "logins": logins}
    controller.stop()


def _email(monkeypatch, smtp_server, **extra) -> dict:
    monkeypatch.setenv("LW_SMTP_PASSWORD", "SMTPPASS123")
    return {
        "type": "email",
        "to": ["oncall@example.com"],
        "from": "lorawatch@example.com",
        "smarthost": f"localhost:{smtp_server['port']}",
        "auth_username": "lw",
        "auth_password": {"env": "LW_SMTP_PASSWORD"},
        "tls_ca_file": smtp_server["ca"],
        **extra,
    }


def test_email_is_delivered_over_starttls_with_login(db, tmp_path, smtp_server, monkeypatch):
    from email import message_from_bytes

    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    template = {"title": "[{{ status | upper }}] {{ groupLabels.adapter }} needs a look"}
    settings = _settings(tmp_path, {"mail": _email(monkeypatch, smtp_server, template=template)})
    _fire(db, "mail-1", T0)
    evaluate(db, settings, now=T0)
    assert flush(db, settings, now=T0, deadline_s=10)["delivered"] == 1
    [envelope] = smtp_server["received"]
    assert envelope.rcpt_tos == ["oncall@example.com"] and smtp_server["logins"][-1][1] == "ok"
    mail = message_from_bytes(envelope.original_content)
    assert mail["Subject"] == "[FIRING] mail-1 needs a look"
    [note] = _notes(db)
    assert mail["X-LoraWatch-Notification-Id"] == str(note["id"]) and str(note["id"]) in mail["Message-ID"]
    body = mail.get_payload(decode=True).decode()
    assert "Runbook: http://127.0.0.1:8501/alerts?runbook=toxicity_budget" in body and "Dashboard: " in body
    assert "adapter: mail-1" in body


def test_email_failures_say_whether_a_retry_can_help(db, tmp_path, smtp_server, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    wrong_password = _email(monkeypatch, smtp_server, auth_password={"env": "LW_WRONG"})
    monkeypatch.setenv("LW_WRONG", "not-the-password")
    untrusted = _email(monkeypatch, smtp_server)
    untrusted.pop("tls_ca_file")  # the system's CAs do not sign the test certificate
    settings = _settings(tmp_path, {"badlogin": wrong_password, "untrusted": untrusted})
    _fire(db, "badlogin-1", T0)
    _fire(db, "untrusted-1", T0)
    evaluate(db, settings, now=T0)
    for receiver in ("badlogin", "untrusted"):  # one at a time: the test server is single-threaded
        flush(db, settings, now=T0, deadline_s=5, receivers=[receiver])
    notes = {n["receiver"]: n for n in _notes(db)}
    assert notes["badlogin"]["status"] == "failed" and "SMTP 535" in notes["badlogin"]["last_error"], notes["badlogin"]
    assert notes["untrusted"]["status"] == "failed" and "certificate" in notes["untrusted"]["last_error"]
    assert "not-the-password" not in json.dumps(notes, default=str)
    assert smtp_server["received"] == []


def test_a_muted_route_sends_nothing_inside_its_interval_and_sends_after_it(db, tmp_path, receivers, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    hook = receivers.on("/quiet", first_then([]))
    settings = Settings.model_validate(
        {
            "home": str(tmp_path / "home"),
            "alerts": {
                "receivers": {"quiet": _webhook(monkeypatch, "quiet", hook)},
                "time_intervals": {
                    "nights": [{"times": [{"start_time": "22:00", "end_time": "07:00"}], "location": "Europe/Berlin"}],
                    "weekends": [{"weekdays": ["saturday", "sunday"], "location": "Europe/Berlin"}],
                },
                "route": {
                    "receiver": "default",
                    "routes": [
                        {
                            "receiver": "quiet",
                            "matchers": ['adapter=~"quiet-.*"'],
                            "group_wait": "0s",
                            "mute_time_intervals": ["nights", "weekends"],
                        }
                    ],
                },
            },
        }
    )
    night = datetime(2026, 1, 5, 0, 30, tzinfo=UTC)  # Monday 01:30 in Berlin
    _fire(db, "quiet-1", night)
    for minutes in (0, 60, 300):  # evaluations and flushes through the night: nothing goes out
        at = night + timedelta(minutes=minutes)
        evaluate(db, settings, now=at)
        flush(db, settings, now=at, deadline_s=2)
    assert receivers.at("/quiet") == [] and [n for n in _notes(db) if n["receiver"] == "quiet"] == []
    morning = datetime(2026, 1, 5, 6, 5, tzinfo=UTC)  # 07:05 in Berlin: the interval is over
    evaluate(db, settings, now=morning)
    flush(db, settings, now=morning, deadline_s=2)
    [sent] = receivers.at("/quiet")
    assert sent.body["alerts"][0]["labels"]["adapter"] == "quiet-1"

    # Saturday noon in Berlin is muted by the weekend interval; unknown names are a settings error
    from lorawatch.alerts.dispatch import build_routes

    route = build_routes(settings).routes[1]
    assert route.receiver == "quiet" and route.muted_at(datetime(2026, 1, 10, 11, 0, tzinfo=UTC))
    assert not route.muted_at(datetime(2026, 1, 9, 11, 0, tzinfo=UTC))  # Friday noon
    with pytest.raises(Exception, match="time interval 'holidays'"):
        Settings.model_validate({"alerts": {"route": {"receiver": "default", "mute_time_intervals": ["holidays"]}}})
    with pytest.raises(Exception, match="not an IANA time zone"):
        Settings.model_validate({"alerts": {"time_intervals": {"x": [{"location": "Mars/Olympus"}]}}})


def test_receiver_templates_word_the_message_and_keep_the_links(db, tmp_path, receivers, monkeypatch):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    slack = receivers.on("/slack", first_then([]))
    monkeypatch.setenv("LW_SLACK_URL", slack)
    template = {
        "title": "{{ commonLabels.severity | upper }}: {{ groupLabels.adapter }}",
        "text": "{% for a in alerts %}{{ a.labels.adapter }} is at {{ '%.0f' % (a.value * 100) }}%{% endfor %}",
    }
    settings = _settings(
        tmp_path,
        {"slack": {"type": "slack", "url": {"env": "LW_SLACK_URL"}, "min_interval_s": 0, "template": template}},
    )
    _fire(db, "slack-1", T0)
    evaluate(db, settings, now=T0)
    assert flush(db, settings, now=T0, deadline_s=2)["delivered"] == 1
    blocks = receivers.at("/slack")[0].body["blocks"]
    assert blocks[0]["text"]["text"] == "CRITICAL: slack-1"
    assert blocks[1]["text"]["text"] == "slack-1 is at 50%"
    # the buttons stay whatever the template, the incident the critical alert opened included
    assert [e["text"]["text"] for e in blocks[-1]["elements"]] == ["Runbook", "Dashboard", "Incident 1"]
    # a template that cannot render is a settings error at load, naming the receiver's key
    with pytest.raises(Exception, match="cannot render a sample alert"):
        _settings(tmp_path, {"x": {"type": "slack", "url": {"env": "X"}, "template": {"text": "{{ 1 / 0 }}"}}})
    with pytest.raises(Exception, match="not valid Jinja"):
        _settings(tmp_path, {"x": {"type": "slack", "url": {"env": "X"}, "template": {"title": "{% for %}"}}})


def test_messages_for_a_receiver_removed_from_the_settings_fail_instead_of_waiting_forever(
    db, tmp_path, receivers, monkeypatch
):
    from lorawatch.alerts.engine import evaluate
    from lorawatch.alerts.outbox import flush

    hook = receivers.on("/gone", first_then([]))
    settings = _settings(tmp_path, {"gone": _webhook(monkeypatch, "gone", hook)})
    _fire(db, "gone-1", T0)
    evaluate(db, settings, now=T0)
    without = _settings(tmp_path, {})  # the receiver was removed before the flush
    result = flush(db, without, now=T0, deadline_s=2)
    assert result["failed"] == 1 and result["pending"] == 0
    [note] = [n for n in _notes(db) if n["receiver"] == "gone"]
    assert note["status"] == "failed" and "not configured" in note["last_error"]
