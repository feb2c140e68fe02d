"""Our drift and risk tests (monitors/stat_tests.py) against scipy.stats, the reference they
replace, on random samples and the edge cases each method has."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from lorawatch.monitors.stat_tests import average_ranks, binomial_tail, ks_2samp, signed_rank_greater


def close(ours: float, theirs: float, rel: float = 1e-9) -> bool:
    return ours == pytest.approx(theirs, rel=rel, abs=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_ranks_equal_scipy_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 8, size=40).astype(float) if seed % 2 else rng.normal(size=40)
    assert np.array_equal(average_ranks(values), stats.rankdata(values))
    assert average_ranks([]).size == 0


@pytest.mark.parametrize(
    ("n1", "n2", "shift"),
    [
        (256, 256, 0.0),
        (256, 256, 0.3),
        (300, 300, 1.0),
        (5, 5, 0.0),
        (1, 1, 1.0),
        (256, 250, 0.0),
        (256, 250, 0.25),
        (300, 120, 0.6),
        (7, 3, 2.0),
        (1, 9, 0.0),
        (1000, 999, 0.15),
        (40, 60, 5.0),
    ],
)
def test_ks_equals_scipys_exact_test(n1, n2, shift):
    rng = np.random.default_rng(n1 * 7 + n2)
    x, y = rng.exponential(1.0, n1), rng.exponential(1.0, n2) + shift
    theirs = stats.ks_2samp(x, y)
    d, p = ks_2samp(x, y)
    assert d == pytest.approx(float(theirs.statistic), abs=1e-12)
    if theirs.pvalue > 1e-10:
        assert close(p, float(theirs.pvalue), rel=1e-8), (p, theirs.pvalue)
    else:  # scipy's unequal-size method is 1 - P(inside), which loses the digits of tiny p-values
        assert 0 <= p <= 1e-9


def test_ks_on_ties_and_separated_samples():
    x, y = np.array([1.0, 1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    assert close(ks_2samp(x, y)[1], float(stats.ks_2samp(x, y).pvalue))
    apart = ks_2samp(np.arange(50.0), np.arange(50.0) + 100)
    assert apart[0] == 1.0 and close(apart[1], float(stats.ks_2samp(np.arange(50.0), np.arange(50.0) + 100).pvalue))
    assert ks_2samp([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        ks_2samp([], [1.0])


@pytest.mark.parametrize(
    ("n1", "n2", "shift"),
    [(20000, 30, 0.5), (20000, 1, 0.0), (20000, 100, 0.3), (12000, 8000, 0.04), (20001, 20001, 0.03)],
)
def test_ks_above_10000_values_stays_exact_where_scipys_default_approximates(n1, n2, shift):
    """scipy's default switches to an approximation above 10,000 values a sample, which is far
    off when the other sample is small; ours equals its exact method there."""
    rng = np.random.default_rng(n1 + n2)
    x, y = rng.normal(size=n1), rng.normal(shift, 1.0, size=n2)
    theirs = stats.ks_2samp(x, y, method="exact")
    d, p = ks_2samp(x, y)
    assert d == pytest.approx(float(theirs.statistic), abs=1e-12)
    assert close(p, float(theirs.pvalue), rel=1e-8), (p, theirs.pvalue)


def test_one_value_against_20000_gets_the_exact_p_value():
    """Kolmogorov's limit law, used here beyond the exact count, said 0.097 for this: no drift."""
    x, y = np.arange(20000.0), [19990.0]
    exact = float(stats.ks_2samp(x, y, method="exact").pvalue)
    assert close(ks_2samp(x, y)[1], exact, rel=1e-8) and exact < 0.002


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "rel"), [(200000, 600, 0.0, 0.01), (200000, 600, 0.2, 0.04), (12000, 11000, 0.0, 0.01)]
)
def test_ks_beyond_the_exact_count_is_close_to_the_exact_law(n1, n2, shift, rel):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=n1), rng.normal(shift, 1.0, size=n2)
    assert close(ks_2samp(x, y)[1], float(stats.ks_2samp(x, y, method="exact").pvalue), rel=rel)


@pytest.mark.parametrize(
    ("k", "n"),
    [
        (1, 1),
        (1, 2),
        (3, 3),
        (5, 20),
        (10, 20),
        (11, 20),
        (15, 20),
        (0, 5),
        (6, 5),
        (60, 100),
        (41, 100),
        (2600, 5000),
        (2400, 5000),
        (4000, 5001),
    ],
)
def test_binomial_tail_equals_scipys_binomtest(k, n):
    theirs = stats.binomtest(k, n, 0.5, alternative="greater").pvalue if 0 <= k <= n else float(k <= 0)
    assert close(binomial_tail(k, n), float(theirs), rel=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_signed_rank_equals_scipys_wilcoxon_in_each_of_its_methods(seed):
    rng = np.random.default_rng(seed)
    n = [8, 13, 20, 50, 51, 300][seed % 6]
    d = rng.normal(0.2, 1.0, size=n)
    if seed >= 6:  # ties and zeros: scores of a bounded scorer, rounded, many equal to the base's
        d = np.round(d, 1)
        d[: n // 5] = 0.0
    theirs = stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue
    assert close(signed_rank_greater(d), float(theirs), rel=1e-10), (n, seed)


def test_signed_rank_edge_cases():
    assert signed_rank_greater([]) == 1.0
    assert signed_rank_greater([0.0, 0.0, 0.0]) == 1.0
    for d in ([0.5], [-0.5], [0.0, 0.3], [0.1] * 20, [0.0] * 10 + [0.2] * 4, [-1.0, 1.0] * 30):
        theirs = stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue
        assert close(signed_rank_greater(d), float(theirs), rel=1e-10), d


def test_numpy_integers_and_huge_tie_groups_work_as_python_integers_and_small_groups():
    assert binomial_tail(np.int64(40), np.int64(64)) == binomial_tail(40, 64)
    d = np.zeros(2_200_000)
    d[:50] = 1.0  # a tie group whose size cubed overflows 64-bit integers
    theirs = stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue
    assert close(signed_rank_greater(d), float(theirs), rel=1e-9)


def test_a_nan_gives_nan_as_in_scipy():
    assert np.isnan(average_ranks([1.0, np.nan, 0.5])).all() and np.isnan(stats.rankdata([1.0, np.nan, 0.5])).all()
    x, y = np.array([0.1, np.nan, 0.3, 0.5]), np.array([0.2, 0.4, 0.6, 0.8])
    assert np.isnan(float(stats.ks_2samp(x, y).pvalue)) and all(np.isnan(v) for v in ks_2samp(x, y))
    d = np.array([0.1, np.nan, -0.2, 0.3])
    assert np.isnan(float(stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue))
    assert np.isnan(signed_rank_greater(d))


def test_the_monitors_import_no_scipy():
    code = (
        "import sys\n"
        "import lorawatch.monitors.builtin, lorawatch.monitors.risk_eval, lorawatch.monitors.canary_finalize\n"
        "print(sorted(m for m in sys.modules if m.startswith('scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
