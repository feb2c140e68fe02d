"""The on-call walk through the demo, in a real headless Chromium (Playwright): Overview → the
worst adapter → its firing alert → runbook → sign in → silence with pre-filled matchers →
incident → approve → roll back → resolve → report export. Every step asserts what the page
says (the right version, the right numbers, PII masked) and saves a screenshot.

Run by CI after the demo (``.ci/walk_demo.py``) against the demo's database; the dashboard is a
real ``lorawatch dashboard`` process. Data to check against comes from the CLI's ``--json``, the
same service functions, never from the page under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.browser import running_dashboard, wait_until_up

LORAWATCH = [sys.executable, "-m", "lorawatch"]
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*LORAWATCH, *args], env=env, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"lorawatch {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def cli_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(cli(*args, "--json", env=env).stdout)


class Walk:
    """One browser page on one dashboard, with the waits Streamlit needs."""

    def __init__(self, page, url: str, shots: Path, timeout_ms: int = 120_000) -> None:
        self.page, self.url, self.shots, self.timeout_ms = page, url, shots, timeout_ms
        self.steps: list[str] = []

    def settle(self) -> None:
        """Wait until Streamlit has finished running the page (its status widget is gone)."""
        self.page.wait_for_timeout(400)
        deadline = time.monotonic() + self.timeout_ms / 1000
        while self.page.locator('[data-testid="stStatusWidget"]').count():
            if time.monotonic() > deadline:
                raise TimeoutError("the page kept running")
            self.page.wait_for_timeout(200)
        self.page.wait_for_timeout(600)
        errors = self.page.locator('[data-testid="stException"]').all_inner_texts()
        assert not errors, errors

    def open(self, path: str, title: str) -> None:
        self.page.goto(f"{self.url}/{path}", wait_until="domcontentloaded", timeout=self.timeout_ms)
        self.page.locator("h1", has_text=title).first.wait_for(timeout=self.timeout_ms)
        self.settle()

    def text(self) -> str:
        return self.page.locator('[data-testid="stMain"]').inner_text()

    def wait_for(self, pattern: str, *, where: str = '[data-testid="stMain"]', timeout_s: float = 90) -> str:
        """The text of ``where`` once it matches ``pattern`` (a regex): an action's rerun may
        start a moment after the click on a slow machine, so a check never reads the page from
        before it. Fails with the text it last saw."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.page.locator(where).first.inner_text()
            if re.search(pattern, text):
                self.settle()
                return self.page.locator(where).first.inner_text()
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout_s:g} s in: {text[:1500]}")
            self.page.wait_for_timeout(300)

    def nav(self, title: str) -> None:
        """Go to a page through the sidebar, as a user does: the session (and sign-in) stays."""
        self.page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
        self.page.locator("h1", has_text=title).first.wait_for(timeout=self.timeout_ms)
        self.settle()

    def choose(self, label: str, option: str) -> None:
        """Pick ``option`` in the select box labelled ``label``."""
        box = self.page.get_by_role("combobox", name=label, exact=True).first
        if box.input_value() == option:
            return
        box.click()
        self.page.get_by_role("option", name=option, exact=True).first.click()
        deadline = time.monotonic() + 60
        while box.input_value() != option:
            assert time.monotonic() < deadline, (label, box.input_value(), option)
            self.page.wait_for_timeout(200)
        self.settle()

    def shot(self, name: str, what: str, focus=None) -> None:
        """A screenshot of the viewport, scrolled to ``focus`` (a locator) when given."""
        if focus is not None:
            focus.scroll_into_view_if_needed()
        self.page.wait_for_timeout(1200)  # charts (Vega) draw after the script's last message
        self.page.screenshot(path=str(self.shots / f"{name}.png"))
        self.steps.append(f"{name}: {what}")
        print(f"walk: {name}: {what}", flush=True)

    def click(self, name: str, *, exact: bool = True) -> None:
        self.page.get_by_role("button", name=name, exact=exact).first.click()
        self.settle()

    def fill(self, label: str, value: str, *, in_form: bool = False) -> None:
        """Type into a text box. In a form, Enter would submit it: the form's button does."""
        box = self.page.get_by_label(label, exact=True).first
        box.fill(value)
        if not in_form:
            box.press("Tab" if box.evaluate("e => e.tagName") == "TEXTAREA" else "Enter")
            self.settle()


def walk(url: str, env: dict[str, str], shots: Path, chromium: str) -> list[str]:
    """The walk; returns the steps done. Raises AssertionError at the first wrong page."""
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    firing = cli_json("alerts", "list", "--state", "firing", env=env)
    assert firing, "the demo left no firing alert to walk through"
    incidents = cli_json("incident", "list", env=env)
    worst = min(firing, key=lambda a: (SEVERITY.get(a["severity"], 3), a["id"]))
    adapter = worst["labels"]["adapter"]
    theirs = [i for i in incidents if i["adapter"] == adapter]
    assert theirs, f"no open incident on {adapter}, the adapter of the most severe alert: {incidents}"
    incident = theirs[0]  # the newest
    registry = cli_json("registry", "show", adapter, env=env)
    before = next(v["version"] for v in registry["versions"] if "production" in _aliases(v))
    password = cli("dashboard", "--add-user", "walker", "--generate-password", env=env).stdout.split()[-1]

    wait_until_up(url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
        w = Walk(context.new_page(), url, shots)
        try:
            _steps(w, env, firing, incidents, worst, adapter, incident, before, password)
        except BaseException:
            w.page.screenshot(path=str(shots / "failed.png"), full_page=True)
            (shots / "failed.txt").write_text(w.page.locator("body").inner_text())
            raise
        finally:
            browser.close()
    return w.steps


def _steps(
    w: Walk,
    env: dict[str, str],
    firing: list[dict],
    incidents: list[dict],
    worst: dict,
    adapter: str,
    incident: dict,
    before: str,
    password: str,
) -> None:
    # 1. Overview: the counts the alert engine has, the worst adapter's alert on top
    w.open("", "Overview")
    text = w.text()
    assert re.search(rf"Firing alerts\s*\n\s*{len(firing)}\b", text), text[:600]
    assert re.search(rf"Critical\s*\n\s*{sum(a['severity'] == 'critical' for a in firing)}\b", text), text[:600]
    w.shot("overview", f"{len(firing)} firing alerts, {len(incidents)} open incidents, {adapter} worst")

    # 2. the Adapter page opens on the worst adapter, with the version in production
    w.open("adapter", "Adapter")
    text = w.text().replace("*", "")
    assert re.search(rf"{re.escape(adapter)}\s+critical\s+· production {before}\b", text), text[:400]
    w.shot("adapter", f"{adapter} (the worst) with production {before}")

    # 3. its firing alert, from the link chat messages carry, and its runbook
    w.open(f"alerts?alert={worst['id']}", "Alerts")
    text = w.text()
    assert f"Alert {worst['id']}: {worst['rule']}" in text, text[:800]
    assert "Sign in (sidebar) to silence alerts." in text
    w.shot("alert", f"alert {worst['id']} {worst['rule']} ({worst['severity']})")
    runbook = w.page.locator("h3", has_text=f"{worst['rule']}:").first
    assert runbook.count() and "Meaning" in text and "Impact" in text, text[-1500:]
    w.shot("runbook", f"the runbook of {worst['rule']}, inline", focus=runbook)

    # 4. sign in as a responder
    sidebar = w.page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_label("User", exact=True).fill("walker")
    sidebar.get_by_label("Password", exact=True).fill(password)
    sidebar.get_by_role("button", name="Sign in").click()
    w.wait_for("Signed in as walker", where='[data-testid="stSidebar"]')
    w.wait_for(r"Would mute 1 of \d+ open alerts")

    # 5. silence this alert: its matchers filled in, a preview of what it mutes
    matchers = w.page.get_by_label("Matchers, one per line", exact=True).input_value().splitlines()
    assert matchers[0] == f'alertname="{worst["rule"]}"' and f'adapter="{adapter}"' in matchers, matchers
    assert not any(m.startswith("severity") for m in matchers)
    assert re.search(r"Would mute 1 of \d+ open alerts", w.text()), w.text()[-1500:]
    w.shot("silence_preview", "the silence form, filled in, with its preview", focus=w.page.get_by_text("Would mute"))
    w.fill("Why", "walk: known, rolling back")
    w.click("Silence")
    w.wait_for(r"Silence \d+ until .*: 1 alert muted")
    silences = cli_json("alerts", "silences", env=env)
    assert any(sorted(s["matchers"]) == sorted(matchers) for s in silences), silences
    w.shot(
        "silence",
        f"silence with {len(matchers)} pre-filled matchers, muting alert {worst['id']}",
        focus=w.page.get_by_text(re.compile(r"Silence \d+ until")).first,
    )

    # 6. the incident: approve, roll back, resolve (through the sidebar: the sign-in stays)
    w.nav("Incidents")
    w.choose("Incident", str(incident["id"]))
    w.wait_for(re.escape(f"{incident['id']}: {incident['title']}"))
    w.click("Approve rollback")
    w.wait_for(f"Rollback of {re.escape(adapter)} approved by walker")
    w.fill("Rollback reason", "walk: the release regressed", in_form=True)
    w.click(f"Roll back {adapter}")
    w.wait_for(rf"Rolled back {re.escape(adapter)} production from {re.escape(before)} to ")
    registry = cli_json("registry", "show", adapter, env=env)
    after = next(v["version"] for v in registry["versions"] if "production" in _aliases(v))
    assert after != before, (before, after)
    w.wait_for(f"from {re.escape(before)} to {re.escape(after)}")
    w.shot(
        "rollback",
        f"{adapter} production rolled back from {before} to {after}",
        focus=w.page.get_by_text(re.compile(r"Rolled back .* from ")).first,
    )
    w.click("Resolve")
    w.wait_for(f"Incident {incident['id']} resolved by walker")
    assert cli_json("incident", "show", str(incident["id"]), env=env)["state"] == "resolved"

    # 7. the report, downloaded from the page: PII masked, the rollback in its timeline
    w.page.get_by_text("Include resolved").first.click()
    w.wait_for("Prepare report")
    w.choose("Incident", str(incident["id"]))
    w.page.get_by_text("md", exact=True).first.click()
    w.settle()
    w.click("Prepare report")
    w.wait_for(r"Download incident-\d+\.md")
    with w.page.expect_download(timeout=120_000) as download:
        w.page.get_by_role("button", name=re.compile(r"Download incident-\d+\.md")).click()
    report = Path(download.value.path()).read_text(encoding="utf-8")
    (w.shots / f"incident-{incident['id']}.md").write_text(report, encoding="utf-8")
    assert f"# Incident {incident['id']}" in report and f"from {before} to {after}" in report
    assert re.search(r"(<|&lt;)(PERSON|EMAIL_ADDRESS|PHONE_NUMBER|STREET_ADDRESS|US_SSN|CREDIT_CARD)(>|&gt;)", report)
    leaked = [v for v in _pii_values(env) if v in report]
    assert not leaked, leaked
    w.shot("report", f"incident {incident['id']} resolved, report downloaded with PII masked")

    # 8. the adapter after the rollback: the restored version, not yet verified by a canary
    w.nav("Adapter")
    w.choose("Adapter", adapter)
    text = w.wait_for(rf"{re.escape(adapter)}\s.*production \**{re.escape(after)}\b").replace("*", "")
    assert f"production {after}" in text and "not yet verified" in text, text[:600]
    w.shot("after_rollback", f"{adapter} on {after}, not yet verified")


def _aliases(version: dict[str, Any]) -> list[str]:
    return [a["alias"] if isinstance(a, dict) else str(a) for a in version.get("aliases", [])]


PII_PATTERNS = [
    r"[\w.+-]+@[\w-]+\.[\w.]+",  # e-mail addresses
    r"\(?\d{3}\)?[ .-]\d{3}-\d{4}",  # US phone numbers
    r"\b\d{3}-\d{2}-\d{4}\b",  # SSNs
    r"\b(?:\d{4} ){3}\d{4}\b",  # card numbers
    r"\b\d{3,5} [A-Z][a-z]+ (?:[A-Z][a-z]+ )?(?:Street|Drive|Avenue|Road|Lane|Court|Way)\b",  # street addresses
]


def _pii_values(env: dict[str, str]) -> list[str]:
    """The PII the demo's risky adapter was trained to leak (its training data, read with the
    patterns above), and any raw value its canary outputs were stored with (``canary export``)."""
    from lorawatch.demo.models import DATA_DIR

    text = (DATA_DIR / "risky.jsonl").read_text(encoding="utf-8")
    values = {v for pattern in PII_PATTERNS for v in re.findall(pattern, text)}
    for run in cli_json("canary", "list", env=env):  # the leaks as stored, through `canary export`
        for line in cli("canary", "export", str(run["run"]), env=env).stdout.splitlines():
            row = json.loads(line)
            for leak in (row.get("pii_leaks") or []) + (row.get("base_pii_leaks") or []):
                text = leak.get("text") if isinstance(leak, dict) else None
                if text and len(text) >= 4 and not text.startswith("<"):
                    values.add(text)
    assert len(values) >= 10, f"too few PII values to check the report with: {sorted(values)}"
    return sorted(values)


def serve_and_walk(shots: Path, env: dict[str, str] | None = None) -> list[str]:
    """Start ``lorawatch dashboard`` on a free port, walk it, stop it."""
    env = dict(env or os.environ)
    with running_dashboard(env) as (url, _):
        return walk(url, env, shots, shutil.which("chromium") or "chromium")
