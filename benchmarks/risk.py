"""Content-risk benchmark: throughput of each scorer and quality on the labelled set.

    python benchmarks/risk.py [--repeat 4]

Prints, for the labelled set (benchmarks/data/risk-labelled-v1.jsonl): texts/s of the
profanity-check toxicity scorer (batched, one call), of Detoxify on a tiny checkpoint built
here (batched), and of Presidio PII detection one text a call (the naive way) and batched
through spaCy's nlp.pipe (the way the canary runner calls it), side by side;
PII precision and recall per entity type; toxicity ROC AUC. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4, help="How many times the labelled set is scored for timing.")
    args = parser.parse_args()

    from lorawatch.monitors.pii import PiiDetector
    from lorawatch.monitors.risk_eval import pii_scores, toxicity_auc
    from lorawatch.monitors.toxicity import ProfanityCheckScorer, build_scorer
    from lorawatch.registry.files import sha256_file
    from lorawatch.settings import RiskSettings
    from tests.tiny_models import build_detoxify_checkpoint

    items = [
        json.loads(line) for line in (ROOT / "benchmarks" / "data" / "risk-labelled-v1.jsonl").read_text().splitlines()
    ]
    texts = [i["text"] for i in items] * args.repeat
    print(f"labelled set: {len(items)} texts; timing over {len(texts)} texts")

    def rate(name: str, fn) -> None:
        fn(texts[:8])  # warm-up
        start = time.perf_counter()
        fn(texts)
        seconds = time.perf_counter() - start
        print(f"{name:<40} {len(texts) / seconds:>10.0f} texts/s")

    profanity = ProfanityCheckScorer()
    rate("toxicity: profanity-check (batched)", profanity.score)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, config_dir = build_detoxify_checkpoint(Path(tmp))
        detox = build_scorer(
            RiskSettings(
                toxicity_backend="detoxify",
                detoxify_checkpoint=str(checkpoint),
                detoxify_sha256=sha256_file(checkpoint),
                detoxify_config_path=str(config_dir),
            )
        )
        rate("toxicity: detoxify tiny checkpoint (batch 64)", detox.score)
    risk = RiskSettings()
    detector = PiiDetector(risk.pii_entities, risk.pii_score_threshold, risk.spacy_model)
    rate(f"pii: {detector.name}, one text a call", lambda batch: [detector.find(t) for t in batch])
    rate(f"pii: {detector.name}, batched (nlp.pipe)", detector.find_many)

    print(f"\ntoxicity ROC AUC (profanity-check): {toxicity_auc(profanity, items):.3f}")
    print(f"\n{'entity':<15} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}")
    for entity, s in pii_scores(detector, items).items():
        print(f"{entity:<15} {s['precision']:>9.3f} {s['recall']:>7.3f} {s['tp']:>4} {s['fp']:>4} {s['fn']:>4}")


if __name__ == "__main__":
    main()
