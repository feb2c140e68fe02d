"""CI: the dashboard on the demo database. Streamlit's AppTest renders every page; then a real
headless Chromium opens every page of a running `lorawatch dashboard` and saves screenshots.

Usage: python .ci/check_dashboard.py SCREENSHOT_DIR   (LORAWATCH_HOME points at the demo's home)
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.browser import check_pages, running_dashboard  # noqa: E402

PAGES = ["overview", "adapter", "alerts", "incidents", "canary_runs", "registry", "costs", "jobs"]
APP = Path(__file__).resolve().parents[1] / "app" / "dashboard.py"
shots = Path(sys.argv[1])

for page in PAGES:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, (page, [e.value for e in at.exception])
    print(f"AppTest on the demo database: {page} rendered")

with running_dashboard() as (url, _):
    results = check_pages(shutil.which("chromium"), url, PAGES, shots)
for page, result in results.items():
    print(f"Chromium: {page}: {'ok' if result['ok'] else result['exceptions']}")
assert all(r["ok"] for r in results.values()), results
print(f"dashboard checks passed; screenshots in {shots}")
