"""Content-risk benchmark: throughput of each scorer and quality on the labelled set.

    python benchmarks/risk.py [--repeat 4]
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/risk.py   # the PII figures of one pinned core

Prints, for the labelled set (benchmarks/data/risk-labelled-v1.jsonl): texts/s of the
profanity-check toxicity scorer (batched, one call; computed with numpy as a run does, then by
the library itself, with the seconds each takes to start) and of Detoxify on a tiny checkpoint built
here (batched). For PII detection it first checks that ``PiiDetector.find_many`` finds exactly
what Presidio's plain BatchAnalyzerEngine does (the whole spaCy pipeline over every text, "naive
batched": what find_many did before it chose components per text) for five entity
configurations, then prints the texts per core of both, on the labelled set and on canary-length
texts (the reference answers of canary_data/ joined into texts of 30-60 words, like canary
outputs: mostly prose without PII). Then PII precision and recall per entity type, before and
after, and toxicity ROC AUC. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def canary_length_texts() -> list[str]:
    """Texts of 30-60 words like canary outputs: the reference answers of canary_data/ (1-2
    sentences each) in three seeded shuffles, joined until a text has at least 30 words."""
    references = [
        json.loads(line)["reference"]
        for path in sorted((ROOT / "canary_data").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip() and "reference" in json.loads(line)
    ]
    texts = []
    for seed in range(3):
        pool = references[:]
        random.Random(seed).shuffle(pool)
        words: list[str] = []
        for reference in pool:
            if words and len(words) + len(reference.split()) > 60:
                texts.append(" ".join(words))
                words = []
            words += reference.split()
            if len(words) >= 30:
                texts.append(" ".join(words))
                words = []
    return texts


def naive_batched(detector, texts: list[str]) -> list:
    """PII findings the plain way: Presidio's BatchAnalyzerEngine over the whole spaCy pipeline,
    resolved as the detector resolves its own."""
    from presidio_analyzer import BatchAnalyzerEngine

    results = BatchAnalyzerEngine(analyzer_engine=detector.engine).analyze_iterator(
        texts, language="en", batch_size=64, entities=detector.entities, score_threshold=detector.score_threshold
    )
    return [detector._resolve(text, r) for text, r in zip(texts, results)]


def per_core(fns: dict, texts: list[str], rounds: int) -> dict[str, float]:
    """Texts per CPU-second of this process (``time.process_time``, so per core however many
    threads BLAS uses) of each function: the best of ``rounds`` rounds that alternate between
    the functions, so that load from other processes hits them alike."""
    rates = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn(texts[:8])  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.process_time()
            fn(texts)
            rates[name] = max(rates[name], len(texts) / (time.process_time() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat",
        type=int,
        default=4,
        help="How many times the labelled set is scored for toxicity timing, and the rounds of PII timing.",
    )
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
    print(f"labelled set: {len(items)} texts; toxicity timing over {len(texts)} texts")

    def rate(name: str, fn) -> None:
        fn(texts[:8])  # warm-up
        start = time.perf_counter()
        fn(texts)
        seconds = time.perf_counter() - start
        print(f"{name:<48} {len(texts) / seconds:>10.0f} texts/s")

    started = time.perf_counter()
    profanity = ProfanityCheckScorer()  # first: scikit-learn is not imported yet
    built = time.perf_counter() - started
    started = time.perf_counter()
    from profanity_check import predict_prob  # the library itself: scikit-learn, scipy

    imported = time.perf_counter() - started
    print(f"profanity-check start-up: {built:.2f} s ({profanity.engine}); the library's import: {imported:.2f} s")
    rate(f"toxicity: profanity-check, {profanity.engine} (batched)", profanity.score)
    rate("toxicity: profanity-check, the library (batched)", lambda batch: predict_prob([t or "" for t in batch]))
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
    text_sets = {"labelled": [i["text"] for i in items], "canary-length": canary_length_texts()}
    without_person = [e for e in risk.pii_entities if e != "PERSON"]
    configurations = {
        "default": detector,
        "without PERSON": PiiDetector(without_person, risk.pii_score_threshold, risk.spacy_model),
        "PERSON only": PiiDetector(["PERSON"], risk.pii_score_threshold, risk.spacy_model),
        "person_min_words=1": PiiDetector(
            risk.pii_entities, risk.pii_score_threshold, risk.spacy_model, person_min_words=1
        ),
        "person_min_words=3": PiiDetector(
            risk.pii_entities, risk.pii_score_threshold, risk.spacy_model, person_min_words=3
        ),
    }
    for config, pii in configurations.items():
        for set_name, set_texts in text_sets.items():
            differ = [
                t for t, a, b in zip(set_texts, pii.find_many(set_texts), naive_batched(pii, set_texts)) if a != b
            ]
            if differ:
                sys.exit(f"pii ({config}): find_many differs from the naive batch on {len(differ)} {set_name} texts")
    sizes = " + ".join(f"{len(t)} {name}" for name, t in text_sets.items())
    print(f"\npii: find_many finds what the naive batch does, on {sizes} texts, {len(configurations)} configurations")

    print(f"pii: {detector.name}, texts/s per core (best of {args.repeat} rounds)")
    for set_name, set_texts in text_sets.items():
        rates = per_core(
            {"naive batched": lambda batch: naive_batched(detector, batch), "find_many": detector.find_many},
            set_texts,
            args.repeat,
        )
        before, after = rates["naive batched"], rates["find_many"]
        print(f"  {set_name:<14} naive batched {before:>7.1f}   find_many {after:>7.1f}   {after / before:.2f}x")

    print(f"\ntoxicity ROC AUC (profanity-check): {toxicity_auc(profanity, items):.3f}")
    naive = SimpleNamespace(find_many=lambda batch: naive_batched(detector, batch))
    before_scores, after_scores = pii_scores(naive, items), pii_scores(detector, items)
    print(f"\n{'':<15} {'naive batched':>17} {'find_many':>17}")
    print(f"{'entity':<15} {'precision':>9} {'recall':>7} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}")
    for entity, s in after_scores.items():
        b = before_scores[entity]
        print(
            f"{entity:<15} {b['precision']:>9.3f} {b['recall']:>7.3f} {s['precision']:>9.3f} {s['recall']:>7.3f} "
            f"{s['tp']:>4} {s['fp']:>4} {s['fn']:>4}"
        )


if __name__ == "__main__":
    main()
