"""Two-sample tests for drift over time: KS on per-prompt KL, MMD² on output embeddings.

Both compare a run with its adapter version's baseline run. The MMD² permutation test is
vectorised: the kernel matrix is computed once and every permutation is one row of a
weight matrix, so 1000 x 1000 embeddings with 1000 permutations take about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorawatch.monitors.stat_tests import ks_2samp


@dataclass(frozen=True)
class TestResult:
    """A two-sample test's statistic, p-value and effect size."""

    statistic: float
    p_value: float
    effect_size: float
    n_baseline: int
    n_current: int


def ks_test(baseline: np.ndarray, current: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test; the effect size is the KS statistic D (identical
    samples: D = 0, p = 1)."""
    statistic, p_value = ks_2samp(baseline, current)
    return TestResult(statistic, p_value, statistic, len(baseline), len(current))


def mmd_test(baseline: np.ndarray, current: np.ndarray, permutations: int = 1000, seed: int = 42) -> TestResult:
    """MMD² (biased, RBF kernel, median-heuristic bandwidth) with a permutation p-value.

    The effect size is MMD (the square root of MMD², in kernel units).
    """
    x = np.asarray(baseline, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    # identical points give rounding noise, not distance: clear it relative to the scale
    d2[d2 <= 1e-9 * max(float(sq.max()), 1e-300)] = 0.0
    off_diagonal = d2[~np.eye(n + m, dtype=bool)]
    positive = off_diagonal[off_diagonal > 0]
    if positive.size == 0:  # every point identical: no difference to find
        return TestResult(0.0, 1.0, 0.0, n, m)
    sigma2 = float(np.median(positive))
    kernel = np.exp(-d2 / (2.0 * sigma2))

    def weights(index_x: np.ndarray) -> np.ndarray:
        w = np.full(index_x.shape, -1.0 / m)
        w[index_x] = 1.0 / n
        return w

    observed_w = weights(np.arange(n + m) < n)
    observed = float(observed_w @ kernel @ observed_w)
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((permutations, n + m)), axis=1)
    member = np.zeros((permutations, n + m), dtype=bool)
    np.put_along_axis(member, order[:, :n], True, axis=1)
    w = np.where(member, 1.0 / n, -1.0 / m)
    null = np.einsum("pi,pi->p", w @ kernel, w)
    p_value = (1.0 + float(np.sum(null >= observed - 1e-12))) / (permutations + 1.0)
    return TestResult(observed, p_value, float(np.sqrt(max(observed, 0.0))), n, m)
