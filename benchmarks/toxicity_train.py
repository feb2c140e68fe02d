"""Train the minilm-classifier toxicity head and compare it with profanity-check.

    python benchmarks/toxicity_train.py | tee benchmarks/results/toxicity_cpu.txt

Embeds ``benchmarks/data/toxicity-labelled-v1.jsonl`` with the packaged all-MiniLM-L6-v2, fits a
logistic regression (class_weight="balanced", C chosen by 5-fold stratified cross-validation on
ROC AUC) and writes ``lorawatch/monitors/toxicity_head.json`` (weights rounded to 6 decimals,
the sha256 of the training set recorded). Before that it scores every text out-of-fold: an outer
5-fold split stratified by group and label, C chosen again inside each training part, so no
text is scored by a model that saw it. Scorers compared, at threshold 0.5:

- profanity-check: the existing backend (before);
- head: the embedding head alone (after; what the minilm-classifier backend ships);
- max(profanity-check, head): alert when either does;
- head + profanity-check: the head given profanity-check's probability (x3) as a 385th feature.

``benchmarks/data/risk-labelled-v1.jsonl`` (never trained on) is scored by heads fitted on the
whole labelled set, as an independent test. Then the spread of the out-of-fold ROC AUC of the
two heads over ``--seeds`` outer splits (the choice between them rests on it), a check that the
backend reading the written file scores what the fitted model does, and its texts/s. Nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAINING_SET = ROOT / "benchmarks" / "data" / "toxicity-labelled-v1.jsonl"
INDEPENDENT_SET = ROOT / "benchmarks" / "data" / "risk-labelled-v1.jsonl"
CS = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
PROFANITY_FEATURE_SCALE = 3.0  # the stacked head's extra feature: 3 x profanity-check's probability
RANDOM_STATE = 0
SCORERS = ["profanity-check", "head", "max(profanity-check, head)", "head + profanity-check"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fit_head(features: np.ndarray, labels: np.ndarray):
    """A balanced logistic regression, C chosen by stratified 5-fold CV on ROC AUC, refitted on all
    of ``features``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    search = GridSearchCV(
        LogisticRegression(class_weight="balanced", max_iter=5000, random_state=RANDOM_STATE),
        {"C": CS},
        cv=StratifiedKFold(5, shuffle=True, random_state=RANDOM_STATE + 1),
        scoring="roc_auc",
    )
    return search.fit(features, labels)


def out_of_fold(features: np.ndarray, labels: np.ndarray, strata: list[str], seed: int) -> tuple[np.ndarray, list]:
    """Each text's probability from a head (C chosen inside the fold) fitted on the other 4/5."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.zeros(len(labels))
    chosen = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, strata):
        search = fit_head(features[train], labels[train])
        scores[test] = search.predict_proba(features[test])[:, 1]
        chosen.append(search.best_params_["C"])
    return scores, chosen


def with_profanity(vectors: np.ndarray, profanity: np.ndarray) -> np.ndarray:
    return np.hstack([vectors, PROFANITY_FEATURE_SCALE * profanity[:, None]])


def figures(labels: np.ndarray, scores: np.ndarray) -> str:
    """``precision / recall / ROC AUC (flagged/n)`` at 0.5; ``-`` where a figure is undefined."""
    from sklearn.metrics import roc_auc_score

    flagged = scores >= 0.5
    tp = int(np.sum(flagged & (labels == 1)))
    precision = f"{tp / flagged.sum():.2f}" if flagged.any() and labels.any() else "-"
    recall = f"{tp / labels.sum():.2f}" if labels.any() else "-"
    auc = f"{roc_auc_score(labels, scores):.3f}" if 0 < labels.sum() < len(labels) else "-"
    return f"{precision} / {recall} / {auc} ({int(flagged.sum())}/{len(labels)})"


def table(title: str, groups: list[str], labels: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    print(f"\n### {title}\n")
    print("precision / recall / ROC AUC at threshold 0.5 (texts flagged / texts); `-`: undefined for the group\n")
    print("| group | n | toxic | " + " | ".join(SCORERS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---" for _ in SCORERS) + " |")
    names = ["all"] + sorted(set(groups), key=groups.index)
    for name in names:
        mask = np.ones(len(labels), bool) if name == "all" else np.array([g == name for g in groups])
        cells = [figures(labels[mask], scores[s][mask]) for s in SCORERS]
        row_name = f"**{name}**" if name == "all" else name
        print(f"| {row_name} | {mask.sum()} | {int(labels[mask].sum())} | " + " | ".join(cells) + " |")


def disagreements(title: str, labels: np.ndarray, head: np.ndarray, stacked: np.ndarray, profane: np.ndarray) -> None:
    """Table rows for the texts one head flags and the other does not: how many are toxic, and how
    many profanity-check flags on its own (a gain of the stacked head that profanity-check already
    has is no gain for a second signal beside it)."""
    for name, only in (
        ("flagged by head + profanity-check only", (stacked >= 0.5) & (head < 0.5)),
        ("flagged by the head only", (head >= 0.5) & (stacked < 0.5)),
    ):
        toxic = only & (labels == 1)
        print(
            f"| {title}: {name} | {only.sum()} | {toxic.sum()} | {only.sum() - toxic.sum()} | "
            f"{np.sum(profane[toxic] >= 0.5)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="Outer CV splits for the spread of the heads' AUC.")
    parser.add_argument("--no-write", action="store_true", help="Report only; leave the shipped head file alone.")
    args = parser.parse_args()

    import sklearn
    import torch
    from sklearn.metrics import roc_auc_score

    from lorawatch.monitors.embeddings import Embedder
    from lorawatch.monitors.toxicity import ProfanityCheckScorer
    from lorawatch.monitors.toxicity_embed import HEAD_DIMENSION, HEAD_MODEL, HEAD_PATH, EmbeddingToxicityScorer
    from lorawatch.registry.files import sha256_file

    items, independent = read_jsonl(TRAINING_SET), read_jsonl(INDEPENDENT_SET)
    texts, labels = [i["text"] for i in items], np.array([i["toxic"] for i in items])
    groups = [i["group"] for i in items]
    strata = [f"{i['group']}:{i['toxic']}" for i in items]
    other_texts, other_labels = [i["text"] for i in independent], np.array([i["toxic"] for i in independent])
    other_groups = [i["kind"] for i in independent]
    digest = sha256_file(TRAINING_SET)

    print("# minilm-classifier toxicity head: training and evaluation\n")
    print(
        f"{datetime.date.today()}; torch {torch.__version__} ({torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), scikit-learn {sklearn.__version__}"
    )
    print(
        f"training set: {TRAINING_SET.relative_to(ROOT)}, {len(items)} texts ({int(labels.sum())} toxic), "
        f"sha256 {digest}"
    )
    print(
        f"independent set: {INDEPENDENT_SET.relative_to(ROOT)}, {len(independent)} texts "
        f"({int(other_labels.sum())} toxic), never trained on"
    )

    embedder = Embedder(device="cpu")
    profanity = ProfanityCheckScorer()
    vectors, other_vectors = embedder.encode(texts), embedder.encode(other_texts)
    vectors64, other_vectors64 = vectors.astype(np.float64), other_vectors.astype(np.float64)
    profane, other_profane = profanity.score(texts), profanity.score(other_texts)
    stacked, other_stacked = with_profanity(vectors64, profane), with_profanity(other_vectors64, other_profane)

    # out of fold, first seed: the figures of the tables
    head_oof, head_cs = out_of_fold(vectors64, labels, strata, RANDOM_STATE)
    stacked_oof, stacked_cs = out_of_fold(stacked, labels, strata, RANDOM_STATE)
    print(f"\nC chosen inside the outer folds: head {head_cs}, head + profanity-check {stacked_cs}")

    final = fit_head(vectors64, labels)
    final_stacked = fit_head(stacked, labels)
    model = final.best_estimator_
    print(
        f"C chosen on the whole set (inner 5-fold ROC AUC): head {final.best_params_['C']} "
        f"({final.best_score_:.3f}), head + profanity-check {final_stacked.best_params_['C']} "
        f"({final_stacked.best_score_:.3f})"
    )

    table(
        "Out of fold (5-fold stratified, each text scored by a head that never saw it)",
        groups,
        labels,
        {
            "profanity-check": profane,
            "head": head_oof,
            "max(profanity-check, head)": np.maximum(profane, head_oof),
            "head + profanity-check": stacked_oof,
        },
    )
    other_head = final.predict_proba(other_vectors64)[:, 1]
    other_stacked_scores = final_stacked.predict_proba(other_stacked)[:, 1]
    table(
        "Independent set risk-labelled-v1 (heads fitted on the whole labelled set)",
        other_groups,
        other_labels,
        {
            "profanity-check": other_profane,
            "head": other_head,
            "max(profanity-check, head)": np.maximum(other_profane, other_head),
            "head + profanity-check": other_stacked_scores,
        },
    )

    print("\n### Where the two heads disagree at 0.5\n")
    print("| set | texts | toxic | not toxic | toxic ones profanity-check flags too |")
    print("| --- | ---: | ---: | ---: | ---: |")
    disagreements("out of fold", labels, head_oof, stacked_oof, profane)
    disagreements("independent", other_labels, other_head, other_stacked_scores, other_profane)

    print(f"\n### Out-of-fold ROC AUC over {args.seeds} outer splits\n")
    print("| seed | head | head + profanity-check | difference |")
    print("| ---: | ---: | ---: | ---: |")
    differences = []
    for seed in range(args.seeds):
        if seed == RANDOM_STATE:
            a, b = head_oof, stacked_oof
        else:
            a, b = out_of_fold(vectors64, labels, strata, seed)[0], out_of_fold(stacked, labels, strata, seed)[0]
        auc_a, auc_b = roc_auc_score(labels, a), roc_auc_score(labels, b)
        differences.append(auc_b - auc_a)
        print(f"| {seed} | {auc_a:.3f} | {auc_b:.3f} | {auc_b - auc_a:+.3f} |")
    print(f"| mean | | | {np.mean(differences):+.3f} (sd {np.std(differences):.3f}) |")

    head = {
        "model": HEAD_MODEL,
        "dimension": HEAD_DIMENSION,
        "weights": [round(float(w), 6) for w in model.coef_[0]],
        "bias": round(float(model.intercept_[0]), 6),
        "trained_on": f"{TRAINING_SET.relative_to(ROOT)} ({len(items)} texts, {int(labels.sum())} toxic); "
        f"LogisticRegression(class_weight='balanced', C={final.best_params_['C']}, "
        f"random_state={RANDOM_STATE}) by benchmarks/toxicity_train.py, scikit-learn {sklearn.__version__}",
        "sha256_of_training_set": digest,
    }
    head_path = HEAD_PATH
    if args.no_write:
        head_path = Path(os.environ.get("TMPDIR", "/tmp")) / "toxicity_head.json"
    head_path.write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {head_path} (C={final.best_params_['C']}, weights rounded to 6 decimals)")

    scorer = EmbeddingToxicityScorer(embedder=embedder, head_path=head_path)
    shipped = scorer.score(other_texts)
    gap = float(np.max(np.abs(shipped - other_head)))
    print(f"the backend reading that file scores the independent set within {gap:.1e} of the fitted model")
    if gap > 1e-4:
        sys.exit("the backend's scores differ from the fitted model's")

    batch = texts * 2
    scorer.score(batch[:8])  # warm-up
    start = time.perf_counter()
    scorer.score(batch)
    head_rate = len(batch) / (time.perf_counter() - start)
    start = time.perf_counter()
    profanity.score(batch)
    profanity_rate = len(batch) / (time.perf_counter() - start)
    print(
        f"texts/s on {torch.get_num_threads()} CPU threads, {len(batch)} texts in one call: minilm-classifier "
        f"{head_rate:.0f} (embedding included), profanity-check {profanity_rate:.0f}"
    )


if __name__ == "__main__":
    main()
