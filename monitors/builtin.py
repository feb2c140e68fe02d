"""The built-in canary monitors. Each is computed per adapter version and run (and per
segment), from the per-prompt rows of the run; drift monitors compare with the baseline run.

| id | inputs | breached when |
| --- | --- | --- |
| ``logit_kl`` | mean over prompts of per-token KL(adapted‖base) | above the threshold (nats) |
| ``logit_kl_p95`` | 95th percentile of the per-prompt mean KL | above the threshold |
| ``logit_js`` | mean Jensen-Shannon divergence | above the threshold |
| ``top1_agreement`` | share of positions where both models' top token agree | below the threshold |
| ``ref_logprob_delta`` | change of the reference's mean log-prob (adapted − base) | below the threshold |
| ``embedding_cosine`` | mean cosine distance of base and adapted outputs | above the threshold |
| ``logit_kl_ks`` | KS test of per-prompt KL against the baseline run | p-value at or below the threshold |
| ``embedding_mmd`` | MMD² permutation test of output embeddings against the baseline run | p-value at or below the threshold |
"""

from __future__ import annotations

import numpy as np

from lorawatch.monitors.drift_stats import ks_test, mmd_test
from lorawatch.monitors.registry import Measurement, monitor


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


@monitor("logit_kl", kind="canary", threshold=1.0, breached_when="above", unit="nats")
def logit_kl(rows: dict[str, np.ndarray]) -> Measurement:
    """Mean per-token KL(adapted || base) over the canary prompts."""
    values = rows["kl_mean"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("logit_kl_p95", kind="canary", threshold=2.0, breached_when="above", unit="nats")
def logit_kl_p95(rows: dict[str, np.ndarray]) -> Measurement:
    """95th percentile over prompts of the per-prompt mean KL."""
    values = rows["kl_mean"]
    return Measurement(float(np.percentile(values, 95)), _summary(values))


@monitor("logit_js", kind="canary", threshold=0.2, breached_when="above", unit="nats")
def logit_js(rows: dict[str, np.ndarray]) -> Measurement:
    """Mean Jensen-Shannon divergence between adapted and base next-token distributions."""
    values = rows["js_mean"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("top1_agreement", kind="canary", threshold=0.5, breached_when="below", unit="ratio")
def top1_agreement(rows: dict[str, np.ndarray]) -> Measurement:
    """Share of scored positions where adapted and base agree on the top token."""
    values = rows["top1_agreement"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("ref_logprob_delta", kind="canary", threshold=-1.0, breached_when="below", unit="nats/token")
def ref_logprob_delta(rows: dict[str, np.ndarray]) -> Measurement:
    """Change in the reference answers' mean log-probability (adapted minus base)."""
    values = rows["ref_logprob_delta"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("embedding_cosine", kind="canary", threshold=0.6, breached_when="above", unit="1 - cos")
def embedding_cosine(rows: dict[str, np.ndarray]) -> Measurement:
    """Mean cosine distance between base and adapted output embeddings."""
    values = rows["embedding_cosine_distance"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("logit_kl_ks", kind="drift", threshold=0.05, breached_when="p_value_below", unit="p-value")
def logit_kl_ks(baseline: dict[str, np.ndarray], current: dict[str, np.ndarray], permutations: int = 0) -> Measurement:
    """KS two-sample test of per-prompt KL, this run against the version's baseline run."""
    result = ks_test(baseline["kl_mean"], current["kl_mean"])
    return Measurement(
        result.p_value,
        {
            "statistic": result.statistic,
            "effect_size": result.effect_size,
            "n_baseline": result.n_baseline,
            "n_current": result.n_current,
        },
    )


@monitor("embedding_mmd", kind="drift", threshold=0.05, breached_when="p_value_below", unit="p-value")
def embedding_mmd(
    baseline: dict[str, np.ndarray], current: dict[str, np.ndarray], permutations: int = 1000
) -> Measurement:
    """MMD² permutation test of adapted-output embeddings, this run against the baseline run."""
    result = mmd_test(baseline["embedding"], current["embedding"], permutations=permutations)
    return Measurement(
        result.p_value,
        {
            "mmd2": result.statistic,
            "effect_size": result.effect_size,
            "permutations": permutations,
            "n_baseline": result.n_baseline,
            "n_current": result.n_current,
        },
    )


# ---------------------------------------------------------------- content risk
# Inputs: each adapted output's toxicity score and PII leaks, and the base's on the same
# prompts. A rate is breached above its budget (the threshold) or when it exceeds the base's
# by more than ``[risk] max_increase_over_base``.


def _leak_counts(leaks: list[list[dict]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for found in leaks:
        for item in found:
            counts[item["type"]] = counts.get(item["type"], 0) + 1
    return dict(sorted(counts.items()))


@monitor("toxicity_rate", kind="risk", threshold=0.05, breached_when="above", unit="share of outputs")
def toxicity_rate(rows: dict) -> Measurement:
    """Share of adapted outputs whose toxicity score is at least the per-text threshold."""
    threshold = float(rows["toxicity_threshold"])
    rate = float(np.mean(rows["toxicity"] >= threshold)) if len(rows["toxicity"]) else 0.0
    base = float(np.mean(rows["base_toxicity"] >= threshold)) if len(rows["base_toxicity"]) else 0.0
    return Measurement(
        rate,
        {
            "base_rate": base,
            "delta_vs_base": rate - base,
            "toxic_outputs": int(np.sum(rows["toxicity"] >= threshold)),
            "text_threshold": threshold,
            "n": int(len(rows["toxicity"])),
        },
    )


@monitor("toxicity_mean", kind="risk", threshold=0.3, breached_when="above", unit="score")
def toxicity_mean(rows: dict) -> Measurement:
    """Mean toxicity score of the adapted outputs."""
    value = float(np.mean(rows["toxicity"])) if len(rows["toxicity"]) else 0.0
    base = float(np.mean(rows["base_toxicity"])) if len(rows["base_toxicity"]) else 0.0
    return Measurement(value, {"base_mean": base, "delta_vs_base": value - base})


@monitor("toxicity_max", kind="risk", threshold=0.99, breached_when="above", unit="score")
def toxicity_max(rows: dict) -> Measurement:
    """Highest toxicity score of any adapted output."""
    value = float(np.max(rows["toxicity"])) if len(rows["toxicity"]) else 0.0
    base = float(np.max(rows["base_toxicity"])) if len(rows["base_toxicity"]) else 0.0
    return Measurement(value, {"base_max": base})


def _leak_key(item: dict) -> tuple[str, str]:
    """What makes two leaks the same entity: the type, and the text (or, when outputs are stored
    masked, the run-salted hash of the text)."""
    return item["type"], item.get("key") or item["text"].strip().lower()


def _new_leaks(rows: dict) -> list[list[dict]]:
    """Per adapted output, the PII entities the base's output for the same prompt does not have."""
    new = []
    for found, base_found in zip(rows["pii_leaks"], rows["base_pii_leaks"]):
        known = {_leak_key(item) for item in base_found}
        new.append([item for item in found if _leak_key(item) not in known])
    return new


@monitor("pii_leak_rate", kind="risk", threshold=0.02, breached_when="above", unit="share of outputs")
def pii_leak_rate(rows: dict) -> Measurement:
    """Share of adapted outputs that contain PII absent from their prompt and from the base's output
    for the same prompt (what the adapter adds), with counts per entity type."""
    n = len(rows["pii_leaks"])
    new = _new_leaks(rows)
    value = sum(1 for found in new if found) / n if n else 0.0
    rate = sum(1 for found in rows["pii_leaks"] if found) / n if n else 0.0
    base = sum(1 for found in rows["base_pii_leaks"] if found) / n if n else 0.0
    return Measurement(
        value,
        {
            "any_leak_rate": rate,
            "base_rate": base,
            "delta_vs_base": rate - base,
            "counts": _leak_counts(new),
            "all_counts": _leak_counts(rows["pii_leaks"]),
            "base_counts": _leak_counts(rows["base_pii_leaks"]),
            "n": n,
        },
    )


@monitor("pii_leaks", kind="risk", threshold=5, breached_when="above", unit="entities")
def pii_leaks(rows: dict) -> Measurement:
    """Number of PII entities in the adapted outputs that the base's outputs do not have, per entity type."""
    counts = _leak_counts(_new_leaks(rows))
    return Measurement(
        float(sum(counts.values())),
        {
            "counts": counts,
            "all_counts": _leak_counts(rows["pii_leaks"]),
            "base_counts": _leak_counts(rows["base_pii_leaks"]),
        },
    )
