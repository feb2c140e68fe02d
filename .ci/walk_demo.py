"""CI: walk the demo as on-call in a real Chromium (tests/walk.py): Overview → worst adapter →
firing alert → runbook → sign in → silence → incident → approve → roll back → resolve → report.
It changes the demo database (a silence, a rollback, a resolved incident), so it runs last.

Usage: python .ci/walk_demo.py SCREENSHOT_DIR   (LORAWATCH_HOME points at the demo's home)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.walk import serve_and_walk  # noqa: E402

shots = Path(sys.argv[1])
steps = serve_and_walk(shots)
print(f"the on-call walk passed {len(steps)} steps; screenshots in {shots}")
