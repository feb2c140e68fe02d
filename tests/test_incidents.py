"""Incidents end to end: a risky version is promoted, a canary run scores it, the alert fires,
an incident opens by itself, the rollback (approved by a second responder) returns the alias
to the previous version, the incident resolves, and the report exports as md, html and pdf."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select


@pytest.fixture(scope="module")
def risky_adapter(tiny_base, tmp_path_factory):
    """A version that moves the model far by construction (tests/tiny_models.drift_adapter): its
    drift alert fires whatever kernels torch picks on this CPU. Its outputs are noise, so its
    risk alerts only sometimes fire, and the test does not count on them."""
    from tests.tiny_models import drift_adapter

    return drift_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "risky", seed=5)


CONFIG = """
[canary]
max_new_tokens = 24
batch_size = 4
[alerts.route]
receiver = "default"
group_wait = "0s"
[alerts.receivers.legal]
type = "file"
path = "legal.jsonl"
[alerts.receivers.support-oncall]
type = "file"
path = "support-team.jsonl"
[incidents]
auto_open_severities = ["critical", "warning"]
rollback_approval = "second_responder"
owner_receivers = { support-team = "support-oncall" }
notices = { critical = ["legal"], warning = ["legal"] }
"""


def _home(tmp_path) -> Path:
    return tmp_path / "home"


def test_risky_version_to_alert_incident_rollback_resolution_and_report(
    cli, lw_env, db, tmp_path, monkeypatch, tiny_base, trained_adapter, risky_adapter
):
    from tests.tiny_models import write_canary_dataset

    (tmp_path / "lorawatch.toml").write_text(CONFIG)
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
            "support-team",
            "--contact",
            "alice@example.com",
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
            risky_adapter,
            "--base",
            "tiny",
            "--version",
            "v2",
            "--team",
            "support-team",
            "--contact",
            "alice@example.com",
        ).code
        == 0
    )
    assert cli("registry", "promote", "support", "--version", "v2", "--reason", "release 2").code == 0
    dataset = write_canary_dataset(tmp_path / "canary.jsonl", n=8)

    # the canary run scores the risky version in production; its critical alerts fire
    run = cli("canary", "run", "--dataset", dataset, "--device", "cpu", "--no-progress", "--json")
    assert run.code == 0, run.err
    evaluation = cli("alerts", "evaluate", "--no-traffic", "--json").json()
    firing = {a["rule"]: a for a in cli("alerts", "list", "--state", "firing", "--json").json()}
    assert "logit_drift" in firing, (evaluation, firing)
    assert all(a["labels"]["version"] == "v2" for a in firing.values())

    # an incident opened by itself, one per adapter, holding the critical alerts
    [incident] = cli("incident", "list", "--json").json()
    assert incident["adapter"] == "support" and incident["state"] == "triggered" and incident["source"] == "alert"
    iid = incident["id"]
    shown = cli("incident", "show", iid, "--json").json()
    assert {a["rule"] for a in shown["alerts"]} == set(firing)
    assert shown["impact_started_at"] is not None  # the promotion of v2

    # notices went to the owner team and the legal stakeholders through the outbox
    assert cli("notify", "flush", "--no-wait").code == 0
    for name in ("legal.jsonl", "support-team.jsonl"):
        notices = [json.loads(line) for line in (_home(tmp_path) / name).read_text().splitlines()]
        assert (
            notices[0]["commonLabels"]["incident"] == str(iid)
            and "opened" in notices[0]["commonAnnotations"]["summary"]
        )

    # the alerts' own notification links to the incident they opened (chat lands on it)
    from lorawatch.alerts.channels import links
    from lorawatch.db.models import Notification

    with db.session() as s:
        sent = [n.payload for n in s.scalars(select(Notification).order_by(Notification.id))]
    alert_messages = [m for m in sent if "incident" not in m["commonLabels"] and m["status"] == "firing"]
    assert alert_messages, sent
    [linked] = alert_messages[0]["lorawatch"]["incidents"]
    assert all(m["lorawatch"]["incidents"] == [linked] for m in alert_messages)
    alert_message = alert_messages[0]
    assert linked["id"] == iid and linked["url"].endswith(f"/incidents?incident={iid}")
    assert (f"Incident {iid}", linked["url"]) in links(alert_message)

    assert cli("incident", "ack", iid).code == 0
    assert cli("incident", "note", iid, "outputs insult customers and leak an email; rolling back").code == 0

    # a rollback without the second responder's approval: refused, nothing changed
    before = cli("registry", "history", "support", "--json").json()
    refused = cli("incident", "rollback", iid, "--reason", "PII leak")
    assert (
        refused.code == 2
        and "needs approval by someone other than you" in refused.err
        and "nothing was changed" in refused.err
    )
    assert cli("registry", "show", "support", "--alias", "production", "--json").json()["version"] == "v2"
    assert cli("registry", "history", "support", "--json").json() == before
    assert cli("incident", "show", iid, "--json").json()["state"] == "acknowledged"

    # the same responder cannot approve their own rollback
    assert cli("incident", "approve", iid, "--reason", "me").code == 0
    assert cli("incident", "rollback", iid, "--reason", "PII leak").code == 2
    monkeypatch.setenv("LORAWATCH_ACTOR", "bob")
    assert cli("incident", "approve", iid, "--reason", "confirmed in samples").code == 0
    monkeypatch.setenv("LORAWATCH_ACTOR", "tester")
    done = cli("incident", "rollback", iid, "--reason", "PII leak", "--json")
    assert done.code == 0, done.err
    assert done.json()["state"] == "mitigated"
    assert cli("registry", "show", "support", "--alias", "production", "--json").json()["version"] == "v1"
    assert cli("incident", "rollback", iid, "--reason", "again").code == 2  # the approval was used once

    # the rolled-back version's alerts resolve at the next evaluation
    cli("alerts", "evaluate", "--no-traffic")
    assert cli("alerts", "list", "--state", "firing", "--json").json() == []

    assert (
        cli(
            "incident",
            "update",
            iid,
            "--summary",
            "v2 of support insulted customers and leaked contact data.",
            "--root-cause",
            "v2 was trained on an unfiltered transcript dump.",
            "--went-well",
            "The canary caught it.",
            "--went-badly",
            "v2 was promoted without the gate.",
            "--got-lucky",
            "It was a Sunday.",
        ).code
        == 0
    )
    assert (
        cli(
            "incident",
            "action",
            iid,
            "--description",
            "Run the gate in the release pipeline",
            "--owner",
            "alice",
            "--due",
            "2026-12-15",
        ).code
        == 0
    )
    resolved = cli("incident", "resolve", iid, "--note", "v1 serves again", "--json").json()
    assert resolved["state"] == "resolved" and resolved["time_to_recover_min"] is not None
    assert resolved["time_to_detect_min"] >= 0 and resolved["time_to_acknowledge_min"] >= 0

    kinds = [e["kind"] for e in resolved["timeline"]]
    for kind in (
        "opened",
        "alert_fired",
        "notice",
        "acknowledged",
        "note",
        "approval",
        "rollback",
        "state",
        "alert_resolved",
        "updated",
        "action_item",
    ):
        assert kind in kinds, (kind, kinds)
    assert kinds.index("opened") < kinds.index("acknowledged") < kinds.index("rollback") < kinds.index("alert_resolved")
    assert [e["message"] for e in resolved["timeline"] if e["kind"] == "state"][-1].endswith(
        "resolved: v1 serves again"
    )

    # the report, in all three formats
    from lorawatch.incidents.report import SECTIONS

    md = cli("incident", "export", iid, "--format", "md", "--out", tmp_path / "report.md", "--json").json()
    text = (tmp_path / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in text
    assert "v2 was trained on an unfiltered transcript dump." in text and "Run the gate in the release pipeline" in text
    assert "> adapted:" in text and "rolled back support production from v2 to v1" in text
    assert len([f for f in md["files"] if f.endswith(".png")]) == 4
    assert all(Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in md["files"] if f.endswith(".png"))

    assert cli("incident", "export", iid, "--format", "html", "--out", tmp_path / "report.html").code == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<h2>Timeline</h2>" in page and 'src="report_files' not in page

    if shutil.which("chromium") is None or shutil.which("pdftotext") is None:
        if os.environ.get("LORAWATCH_REQUIRE_CHROMIUM"):
            pytest.fail("LORAWATCH_REQUIRE_CHROMIUM is set but chromium or pdftotext is missing")
        pytest.skip("chromium and pdftotext (poppler-utils) are needed for the PDF half")
    result = cli("incident", "export", iid, "--format", "pdf", "--out", tmp_path / "report.pdf")
    assert result.code == 0, result.err
    pdf_text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    for section in SECTIONS:
        assert section in pdf_text, section
    images = subprocess.run(
        ["pdfimages", "-list", str(tmp_path / "report.pdf")], capture_output=True, text=True, check=True
    ).stdout.splitlines()[2:]
    assert len(images) >= 4, images


def test_incident_commands_refuse_bad_input_and_change_nothing(cli, lw_env, db, tmp_path):
    assert cli("incident", "show", "99").code == 2
    opened = cli("incident", "open", "--title", "latency spike", "--severity", "warning", "--json").json()
    iid = opened["id"]
    no_adapter = cli("incident", "rollback", iid, "--reason", "x")
    assert no_adapter.code == 2 and "concerns no adapter" in no_adapter.err
    assert cli("incident", "open", "--title", "x", "--adapter", "nope").code == 2
    assert cli("incident", "note", iid, "  ").code == 2
    assert cli("incident", "done", iid, "5").code == 2
    assert cli("incident", "export", iid, "--format", "md", "--out", tmp_path / "missing" / "r.md").code == 2
    assert cli("incident", "resolve", iid).code == 0
    assert cli("incident", "resolve", iid).code == 2
    assert [e["kind"] for e in cli("incident", "show", iid, "--json").json()["timeline"]] == ["opened", "state"]


def test_an_alert_still_firing_after_its_incident_resolved_opens_one_new_incident(lw_env, db):
    """Each evaluation links a firing alert to the open incident at most once, also when the
    alert is linked to resolved incidents from before."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from lorawatch.db.models import Alert, Incident, IncidentAlert, IncidentEvent
    from lorawatch.db.types import utcnow
    from lorawatch.incidents import service
    from lorawatch.settings import load_settings

    settings = load_settings()
    now = utcnow()
    with db.session() as s:
        alert = Alert(
            fingerprint="00000000000000aa",
            rule_id="pii_leak",
            labels={"adapter": "support", "version": "v2"},
            annotations={"summary": "PII leaks"},
            severity="critical",
            state="firing",
            active_at=now,
            fired_at=now,
            last_eval_at=now,
        )
        s.add(alert)
        s.flush()
        alert_id = alert.id

    def sync(minutes, transitions=()):
        with db.session() as s:
            return service.sync_with_alerts(s, settings, now + timedelta(minutes=minutes), list(transitions), set())

    def fired_events(incident_id):
        with db.session() as s:
            return s.scalar(
                select(func.count())
                .select_from(IncidentEvent)
                .where(IncidentEvent.incident_id == incident_id, IncidentEvent.kind == "alert_fired")
            )

    (first,) = sync(1)
    assert sync(2) == [] and fired_events(first) == 1
    service.resolve(db, settings, first, actor="oncall", note="rolled back")
    (second,) = sync(3)  # still firing: a new incident
    assert second != first
    assert sync(4) == [] and sync(5) == []
    assert fired_events(second) == 1 and fired_events(first) == 1
    sync(6, [{"alert": alert_id, "to": "resolved", "rule": "pii_leak", "labels": {"adapter": "support"}, "value": 0.0}])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(IncidentAlert).where(IncidentAlert.alert_id == alert_id)) == 2
        resolved_on = set(s.scalars(select(IncidentEvent.incident_id).where(IncidentEvent.kind == "alert_resolved")))
        assert resolved_on == {second}
        assert s.get(Incident, second).state == "triggered"


PAYLOADS = [
    '![x](x" onerror="alert(1))',
    "[runbook](javascript:alert(document.cookie))",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "[a](JaVaScRiPt:alert(1))",
    "[d](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<a href="javascript:alert(1)">click</a>',
    "[ok](https://wiki.example.com/runbook)",
]


def test_the_report_of_injection_payloads_holds_no_active_content(cli, lw_env, db, tmp_path):
    """Every payload goes into a field the report shows; the HTML is parsed and searched for
    anything that could run or navigate to script; the Markdown keeps no such link either."""
    from html.parser import HTMLParser

    opened = cli("incident", "open", "--title", PAYLOADS[2], "--severity", "warning", "--json").json()
    iid = str(opened["id"])
    for payload in PAYLOADS:
        assert cli("incident", "note", iid, payload).code == 0
    fields = ["--summary", "--impact", "--trigger", "--root-cause", "--resolution", "--went-well", "--went-badly"]
    args = [x for field, payload in zip(fields, PAYLOADS) for x in (field, payload)]
    assert cli("incident", "update", iid, *args).code == 0
    assert cli("incident", "action", iid, "--description", PAYLOADS[0], "--owner", PAYLOADS[3]).code == 0
    html_path, md_path = tmp_path / "report.html", tmp_path / "report.md"
    assert cli("incident", "export", iid, "--format", "html", "--out", str(html_path)).code == 0
    assert cli("incident", "export", iid, "--format", "md", "--out", str(md_path)).code == 0

    found: list[str] = []

    class Audit(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in ("script", "iframe", "object", "embed", "form", "svg", "base"):
                found.append(f"<{tag}>")
            for name, value in attrs:
                if name.startswith("on"):
                    found.append(f"{tag} {name}")
                if name in ("href", "src", "action", "formaction") and value:
                    ok = value.startswith(("http://", "https://", "mailto:", "#", "data:image/png;base64,"))
                    if not ok:
                        found.append(f"{tag} {name}={value[:40]}")

    page = html_path.read_text()
    Audit().feed(page)
    assert not found, found
    assert "default-src 'none'" in page  # and the page may run nothing even if something slipped through
    assert 'href="https://wiki.example.com/runbook"' in page  # a safe link stays a link
    assert "alert(1)" in page  # the payloads are shown, as text
    markdown = md_path.read_text()
    assert "](javascript:" not in markdown.lower() and "<script" not in markdown and "<img" not in markdown


def test_an_incident_rolls_back_once_and_going_further_back_is_a_deliberate_promotion(
    cli, lw_env, db, tiny_base, trained_adapter, second_adapter
):
    """A second rollback of the same incident (a double click, a retried command) would step
    back one more version, past the one on-call chose: it is refused with nothing changed, and
    says how to go further. Once the alias moves again, the incident may roll it back again."""
    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    for version, path in (("v1", trained_adapter), ("v2", second_adapter), ("v3", trained_adapter)):
        add = ["registry", "add", "support", "--path", path, "--base", "tiny", "--version", version]
        assert cli(*add, "--promote", "production").code == 0

    def production() -> str:
        shown = cli("registry", "show", "support", "--json").json()
        return next(v["version"] for v in shown["versions"] if any(a["alias"] == "production" for a in v["aliases"]))

    iid = cli("incident", "open", "--title", "v3 insults users", "--adapter", "support", "--json").json()["id"]
    assert cli("incident", "rollback", iid, "--reason", "v3 insults users").code == 0
    assert production() == "v2"
    shown = cli("incident", "show", iid, "--json").json()
    assert shown["acked_at"] and shown["commander"]  # rolling back acknowledges it: whoever did is commander
    again = cli("incident", "rollback", iid, "--reason", "clicked twice")
    assert again.code == 2 and "already" in again.err and "registry promote support" in again.err, again.err
    assert production() == "v2"
    assert [e["kind"] for e in cli("incident", "show", iid, "--json").json()["timeline"]].count("rollback") == 1
    assert cli("registry", "promote", "support", "--version", "v3", "--reason", "hotfix, still bad").code == 0
    assert cli("incident", "rollback", iid, "--reason", "the hotfix did not help").code == 0
    assert production() == "v2"
