"""Evaluation of the risk scorers on a labelled set: PII precision and recall per entity type,
toxicity ROC AUC. Used by the tests and by ``benchmarks/risk.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from lorawatch.monitors.stat_tests import average_ranks


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def pii_scores(detector, items: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Span-level precision and recall per entity type: a finding counts when it overlaps a
    labelled span of the same type."""
    counts: dict[str, dict[str, int]] = {}
    all_found = detector.find_many([item["text"] for item in items])
    for item, findings in zip(items, all_found):
        text = item["text"]
        gold = []
        for entity in item["entities"]:
            start = text.find(entity["value"])
            gold.append((entity["type"], (start, start + len(entity["value"]))))
        found = [(f.type, (f.start, f.end)) for f in findings]
        for kind, span in found:
            c = counts.setdefault(kind, {"tp": 0, "fp": 0, "fn": 0})
            if any(k == kind and _overlaps(span, s) for k, s in gold):
                c["tp"] += 1
            else:
                c["fp"] += 1
        for kind, span in gold:
            if not any(k == kind and _overlaps(span, s) for k, s in found):
                counts.setdefault(kind, {"tp": 0, "fp": 0, "fn": 0})["fn"] += 1
    result = {}
    for kind, c in sorted(counts.items()):
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        result[kind] = {"precision": precision, "recall": recall, **c}
    return result


def toxicity_auc(scorer, items: list[dict[str, Any]]) -> float:
    """ROC AUC of a toxicity scorer against the ``toxic`` labels (Mann-Whitney form)."""
    scores = scorer.score([i["text"] for i in items])
    labels = np.array([int(i["toxic"]) for i in items])
    ranks = average_ranks(scores)
    positives = labels.sum()
    negatives = len(labels) - positives
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))
