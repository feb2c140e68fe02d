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

from monitors.drift_stats import ks_test, mmd_test
from monitors.registry import Measurement, monitor


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"n": int(values.size), "mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


@monitor("logit_kl", kind="canary", threshold=0.5, breached_when="above", unit="nats")
def logit_kl(rows: dict[str, np.ndarray]) -> Measurement:
    """Mean per-token KL(adapted || base) over the canary prompts."""
    values = rows["kl_mean"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("logit_kl_p95", kind="canary", threshold=1.5, breached_when="above", unit="nats")
def logit_kl_p95(rows: dict[str, np.ndarray]) -> Measurement:
    """95th percentile over prompts of the per-prompt mean KL."""
    values = rows["kl_mean"]
    return Measurement(float(np.percentile(values, 95)), _summary(values))


@monitor("logit_js", kind="canary", threshold=0.1, breached_when="above", unit="nats")
def logit_js(rows: dict[str, np.ndarray]) -> Measurement:
    """Mean Jensen-Shannon divergence between adapted and base next-token distributions."""
    values = rows["js_mean"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("top1_agreement", kind="canary", threshold=0.6, breached_when="below", unit="ratio")
def top1_agreement(rows: dict[str, np.ndarray]) -> Measurement:
    """Share of scored positions where adapted and base agree on the top token."""
    values = rows["top1_agreement"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("ref_logprob_delta", kind="canary", threshold=-1.0, breached_when="below", unit="nats/token")
def ref_logprob_delta(rows: dict[str, np.ndarray]) -> Measurement:
    """Change in the reference answers' mean log-probability (adapted minus base)."""
    values = rows["ref_logprob_delta"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("embedding_cosine", kind="canary", threshold=0.35, breached_when="above", unit="1 - cos")
def embedding_cosine(rows: dict[str, np.ndarray]) -> Measurement:
    """Mean cosine distance between base and adapted output embeddings."""
    values = rows["embedding_cosine_distance"]
    return Measurement(float(values.mean()), _summary(values))


@monitor("logit_kl_ks", kind="drift", threshold=0.05, breached_when="p_value_below", unit="p-value")
def logit_kl_ks(baseline: dict[str, np.ndarray], current: dict[str, np.ndarray], permutations: int = 0) -> Measurement:
    """KS two-sample test of per-prompt KL, this run against the version's baseline run."""
    result = ks_test(baseline["kl_mean"], current["kl_mean"])
    return Measurement(result.p_value, {"statistic": result.statistic, "effect_size": result.effect_size,
                                        "n_baseline": result.n_baseline, "n_current": result.n_current})


@monitor("embedding_mmd", kind="drift", threshold=0.05, breached_when="p_value_below", unit="p-value")
def embedding_mmd(baseline: dict[str, np.ndarray], current: dict[str, np.ndarray], permutations: int = 1000) -> Measurement:
    """MMD² permutation test of adapted-output embeddings, this run against the baseline run."""
    result = mmd_test(baseline["embedding"], current["embedding"], permutations=permutations)
    return Measurement(result.p_value, {"mmd2": result.statistic, "effect_size": result.effect_size,
                                        "permutations": permutations, "n_baseline": result.n_baseline,
                                        "n_current": result.n_current})
