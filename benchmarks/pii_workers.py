"""Start-up and shutdown of the PII worker processes of a canary run (2 CPU cores here).

    python benchmarks/pii_workers.py [--repeat 2] [--workers 2]

1. A worker's start-up, in fresh processes: build the detector and the profanity-check scorer
   as ``pii_pool._start`` does and score one text, with the model libraries refused
   (``pii_pool.UNUSED_IN_WORKERS``, what workers do) and allowed (what they did before). The
   findings must be the same either way.
2. A ``PiiPool`` of ``--workers`` processes as a run uses it: seconds until it answers, and
   seconds ``close()`` takes (the run waits for its workers to stop).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = "Call Anna Schmidt on +44 20 7946 0958 or write to anna@example.com, you idiot."

WORKER = """
import sys, time
started = time.perf_counter()
sys.path.insert(0, {root!r})
from lorawatch.monitors import pii_pool
if {refuse}:
    sys.meta_path.insert(0, pii_pool.RefuseImports(pii_pool.UNUSED_IN_WORKERS))
else:  # what Presidio imported before (the detector now refuses it wherever it is not loaded yet)
    import torch, transformers
from lorawatch.monitors.pii import PiiDetector
from lorawatch.monitors.risk_scorers import detector_arguments
from lorawatch.monitors.toxicity import build_scorer
from lorawatch.settings import load_settings
risk = load_settings().risk
detector, toxicity = PiiDetector(**detector_arguments(risk)), build_scorer(risk, "cpu")
found = [(f.type, f.text) for f in detector.find_many([{text!r}])[0]]
score = float(toxicity.score([{text!r}])[0])
print(round(time.perf_counter() - started, 2), "torch" in sys.modules, found, round(score, 6))
"""


def worker_start(refuse: bool) -> tuple[float, bool, str]:
    code = WORKER.format(root=str(ROOT), refuse=refuse, text=TEXT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    seconds, torch_loaded, rest = out.split(" ", 2)
    return float(seconds), torch_loaded == "True", rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    results = {}
    for refuse in (True, False):
        runs = [worker_start(refuse) for _ in range(args.repeat)]
        results[refuse] = runs
        label = "model libraries refused (now)" if refuse else "model libraries allowed (before)"
        print(
            f"worker start-up, {label}: "
            + ", ".join(f"{s:.2f} s" for s, _, _ in runs)
            + f"; torch imported: {runs[0][1]}; findings and toxicity: {runs[0][2]}"
        )
    assert results[True][0][2] == results[False][0][2], "the findings differ"

    from lorawatch.monitors.pii_pool import PiiPool
    from lorawatch.monitors.risk_scorers import detector_arguments
    from lorawatch.settings import load_settings

    risk = load_settings().risk
    started = time.perf_counter()
    pool = PiiPool(detector_arguments(risk), args.workers, toxicity=risk)
    scores, found = pool.score_many([TEXT] * 64)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    pool.close()
    closed = time.perf_counter() - started
    print(f"pool of {args.workers}: first answer after {ready:.2f} s (64 texts), close() {closed:.2f} s")


if __name__ == "__main__":
    main()
