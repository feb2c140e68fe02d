"""Open dashboard pages in a real headless Chromium (the system's, driven by Playwright): wait
until Streamlit has finished running the page, check for Streamlit's exception box, and save a
full-page screenshot of each page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TITLES = {
    "overview": "Overview",
    "adapter": "Adapter",
    "alerts": "Alerts",
    "incidents": "Incidents",
    "canary_runs": "Canary runs",
    "registry": "Registry",
    "costs": "Costs",
    "jobs": "Jobs",
}


@contextmanager
def running_dashboard(env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``lorawatch dashboard`` on a free loopback port: (its URL, its process), stopped (SIGTERM)
    when the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorawatch", "dashboard", "--port", str(port)],
        env=dict(os.environ if env is None else env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_until_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard at {url} did not come up")
        time.sleep(0.5)


def check_pages(binary: str, url: str, pages: list[str], shots: Path, timeout_ms: int = 90_000) -> dict[str, dict]:
    """Per page: ok when its title rendered, the script finished, and no exception box shows."""
    from playwright.sync_api import sync_playwright

    wait_until_up(url)
    shots.mkdir(parents=True, exist_ok=True)
    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for name in pages:
            page.goto(
                f"{url}/" + ("" if name == "overview" else name), wait_until="domcontentloaded", timeout=timeout_ms
            )
            page.locator("h1", has_text=TITLES[name]).first.wait_for(timeout=timeout_ms)
            # Streamlit shows a "running" status widget while the script runs; wait for it to go
            deadline = time.monotonic() + timeout_ms / 1000
            while page.locator('[data-testid="stStatusWidget"]').count() and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            page.wait_for_timeout(1500)  # charts (Vega) draw after the script's last message
            exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
            if page.get_by_text("Page not found").count():
                exceptions.append("Page not found")
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            results[name] = {"ok": not exceptions, "exceptions": exceptions, "title": TITLES[name]}
        browser.close()
    return results
