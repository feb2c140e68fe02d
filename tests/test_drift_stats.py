from __future__ import annotations

import numpy as np
import pytest

from lorawatch.monitors.drift_stats import ks_test, mmd_test


def mmd2_by_loops(x, y):
    """The biased MMD² with the median-heuristic RBF kernel, written out plainly."""
    z = np.concatenate([x, y])
    d2 = np.array([[np.sum((a - b) ** 2) for b in z] for a in z])
    sigma2 = np.median(d2[~np.eye(len(z), dtype=bool)])
    k = np.exp(-d2 / (2 * sigma2))
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def test_mmd_statistic_matches_a_plain_computation():
    rng = np.random.default_rng(42)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.0, size=(25, 5))
    assert mmd_test(x, y, permutations=10).statistic == pytest.approx(mmd2_by_loops(x, y), rel=1e-9)


def test_mmd_finds_a_shift_and_not_a_resample():
    rng = np.random.default_rng(42)
    base = rng.normal(size=(200, 16))
    shifted = rng.normal(0.4, 1.0, size=(200, 16))
    same = rng.normal(size=(200, 16))
    assert mmd_test(base, shifted, permutations=500).p_value <= 0.01
    assert mmd_test(base, same, permutations=500).p_value > 0.05


def test_identical_samples_have_p_value_one():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(40, 8))
    assert mmd_test(x, x.copy()).p_value == 1.0
    assert ks_test(x[:, 0], x[:, 0].copy()).p_value == 1.0
    same_point = np.ones((10, 4))
    assert mmd_test(same_point, same_point).p_value == 1.0


def test_ks_finds_a_shift():
    rng = np.random.default_rng(42)
    result = ks_test(rng.exponential(1.0, 300), rng.exponential(1.5, 300))
    assert result.p_value < 0.01 and 0 < result.effect_size < 1


def test_mmd_is_vectorised_for_1000_by_1000_embeddings():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(1000, 384)).astype(np.float32)
    y = rng.normal(size=(1000, 384)).astype(np.float32)
    result = mmd_test(x, y, permutations=1000)  # about half a second on 2 cores; not asserted
    assert result.n_baseline == 1000 and 0 < result.p_value <= 1
