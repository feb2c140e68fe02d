"""The tests behind drift and risk verdicts, in numpy and Python integers, without scipy.stats.

Importing scipy.stats takes about a second here and 3 to 4 s on a loaded GPU host, and a canary
run paid it after its last batch for three tests. They are written here with the choices of
scipy's defaults, so verdicts and stored p-values stay what they were:

- ``ks_2samp``: ``scipy.stats.ks_2samp(x, y)`` up to 10,000 values a sample, where both are
  exact (the lattice-path count; by the alternating series when the samples are the same size).
  Above that scipy switches to an approximation (the one-sample law at n1 n2 / (n1 + n2)
  values: 10% off for one value against 20,000); this stays exact, as
  ``ks_2samp(x, y, method="exact")``, for samples of one size and wherever n1 n2 <= 10^8 and
  n1 + n2 <= 200,000 (at most about 3 s on 2 cores), and takes Kolmogorov's limit with
  Stephens' correction only beyond (within 1% of the exact law near p = 0.3 and 4% near
  p = 1e-5 at 600 and 200,000 values);
- ``binomial_tail``: ``scipy.stats.binomtest(k, n, 0.5, alternative="greater").pvalue``,
  exactly, in integers;
- ``signed_rank_greater``: ``scipy.stats.wilcoxon(d, zero_method="zsplit",
  alternative="greater").pvalue``: the exact law up to 50 differences without ties or zeros,
  every sign flip up to 13 with them, the normal approximation with the tie correction
  (and, as scipy's default, no continuity correction) otherwise.

tests/test_stat_tests.py holds each against scipy on random and edge-case samples.
"""

from __future__ import annotations

import math
import operator

import numpy as np

KS_EXACT_PAIRS = 10**8  # unequal samples get the exact count up to n1 n2 (0.7 s on 2 cores) ...
KS_EXACT_VALUES = 200_000  # ... and n1 + n2 (one step each: 3 s on 2 cores)
SIGNED_RANK_EXACT_MAX = 50
SIGNED_RANK_ENUMERATE_MAX = 13


def average_ranks(values) -> np.ndarray:
    """Ranks from 1, tied values sharing their average rank (scipy.stats.rankdata's default)."""
    return _ranks_and_ties(values)[0]


def _ranks_and_ties(values) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks, and the size of each group of equal values (1 for a value without a tie)."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"ranks need a flat array, got shape {values.shape}")
    if values.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    if values.dtype.kind in "fc" and np.isnan(values).any():  # no order to rank by, as scipy
        return np.full(values.size, np.nan), np.ones(values.size, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sizes = np.diff(np.append(starts, ordered.size))
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(starts + (sizes + 1) / 2.0, sizes)
    return ranks, sizes


def ks_2samp(x, y) -> tuple[float, float]:
    """The two-sided two-sample Kolmogorov-Smirnov statistic D and its p-value (both NaN where
    a value is NaN, as scipy's)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    y = np.sort(np.asarray(y, dtype=np.float64))
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        raise ValueError("the Kolmogorov-Smirnov test needs two non-empty samples")
    if np.isnan(x).any() or np.isnan(y).any():
        return math.nan, math.nan
    both = np.concatenate([x, y])
    gap = np.searchsorted(x, both, side="right") / n1 - np.searchsorted(y, both, side="right") / n2
    d = max(float(gap.max()), float(np.clip(-gap.min(), 0.0, 1.0)))
    if n1 != n2 and (n1 * n2 > KS_EXACT_PAIRS or n1 + n2 > KS_EXACT_VALUES):
        return d, _kolmogorov_sf(d, n1 * n2 / (n1 + n2))
    # D is a multiple of 1/lcm(n1, n2): count in those units so the boundary is exact
    lcm = math.lcm(n1, n2)
    h = round(d * lcm)
    d = h / lcm
    if h == 0:
        return d, 1.0
    p = _outside_square(n1, h) if n1 == n2 else _outside_band(n1, n2, lcm, h)
    return d, min(max(p, 0.0), 1.0)


def _outside_square(n: int, h: int) -> float:
    """P(D >= h/n) for two samples of n: 2 sum_k (-1)^(k-1) C(2n, n-kh) / C(2n, n)
    (Gnedenko and Korolyuk), summed from the innermost term as A0 (1 - A1 (1 - A2 (...))),
    where A0 = C(2n, n-h) / C(2n, n) and A_k = C(2n, n-(k+1)h) / C(2n, n-kh)."""
    total = 0.0
    for k in range(n // h, -1, -1):
        ratio = 1.0
        for j in range(h):
            ratio = ratio * (n - k * h - j) / (n + k * h + j + 1)
        total = ratio * (1.0 - total)
    return 2.0 * total


def _outside_band(n1: int, n2: int, lcm: int, h: int) -> float:
    """The share of lattice paths from (0, 0) to (n1, n2) that touch |i/n1 - j/n2| >= h/lcm.

    Walked one anti-diagonal at a time: the chance that a uniformly drawn path to (i, j) has
    touched the boundary is 1 on it, else i/(i+j) of that at (i-1, j) plus j/(i+j) of that at
    (i, j-1). Every term is a probability, so small p-values keep their relative precision."""
    step_x, step_y = lcm // n1, lcm // n2
    index = np.arange(n1 + 1, dtype=np.int64)
    touched = np.zeros(n1 + 2)  # touched[i + 1]: cell (i, k - i) of the last diagonal; [0] is a zero pad
    for k in range(1, n1 + n2 + 1):
        lo, hi = max(0, k - n2), min(k, n1)
        i = index[lo : hi + 1]
        came_from_x = touched[lo : hi + 1]  # (i - 1, k - i)
        came_from_y = touched[lo + 1 : hi + 2]  # (i, k - 1 - i)
        walked = (i * came_from_x + (k - i) * came_from_y) / k
        boundary = np.abs(i * step_x - (k - i) * step_y) >= h
        touched[lo + 1 : hi + 2] = np.where(boundary, 1.0, walked)
    return float(touched[n1 + 1])


def _kolmogorov_sf(d: float, effective_n: float) -> float:
    """P(D >= d) by Kolmogorov's limit law at lambda = (sqrt(n) + 0.12 + 0.11 / sqrt(n)) d,
    n = n1 n2 / (n1 + n2) (Stephens, 1970)."""
    root = math.sqrt(effective_n)
    lam = (root + 0.12 + 0.11 / root) * d
    if lam < 0.2:  # the series converges slowly here and is 1 to double precision
        return 1.0
    total, k = 0.0, 1
    while True:
        term = math.exp(-2.0 * k * k * lam * lam)
        total += term if k % 2 else -term
        if term < 1e-17 * max(total, 1e-300):
            break
        k += 1
    return min(max(2.0 * total, 0.0), 1.0)


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), summed exactly in integers over the shorter tail
    (n is a count of prompts: 20 ms at 20,000, 0.8 s at 100,000)."""
    k, n = operator.index(k), operator.index(n)  # numpy integers would overflow in 1 << n
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if 2 * k > n:
        return _tail_count(k, n) / (1 << n)
    # P(X >= k) = 1 - P(X <= k - 1) = 1 - P(X >= n - k + 1), by symmetry
    return ((1 << n) - _tail_count(n - k + 1, n)) / (1 << n)


def _tail_count(k: int, n: int) -> int:
    """sum over i = k..n of C(n, i)."""
    term = total = math.comb(n, k)
    for i in range(k, n):
        term = term * (n - i) // (i + 1)
        total += term
    return total


def signed_rank_greater(differences) -> float:
    """One-sided p-value of the Wilcoxon signed-rank test that paired differences lean positive,
    zeros split between the two signs (Pratt's ranks, half of each zero's rank to each side);
    NaN where a difference is NaN, as scipy's."""
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if np.isnan(d).any():
        return math.nan
    if n == 0 or not np.any(d):
        return 1.0
    ranks, sizes = _ranks_and_ties(np.abs(d))
    r_plus = float(np.sum(ranks[d > 0]) + np.sum(ranks[d == 0]) / 2.0)
    ties_or_zeros = bool(np.any(sizes > 1) or np.any(d == 0))
    if n <= SIGNED_RANK_EXACT_MAX and not ties_or_zeros:
        return _signed_rank_exact_sf(math.floor(r_plus), n)
    if n <= SIGNED_RANK_ENUMERATE_MAX:
        return _signed_rank_by_flips(d, ranks, r_plus)
    mean = n * (n + 1) / 4.0
    spread = math.sqrt((n * (n + 1) * (2 * n + 1) - float(np.sum(sizes.astype(np.float64) ** 3 - sizes)) / 2.0) / 24.0)
    z = (r_plus - mean) / spread
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _signed_rank_exact_sf(k: int, n: int) -> float:
    """P(T+ >= k) with T+ the sum of a random subset of the ranks 1..n, each in with chance 1/2."""
    ways = [1] + [0] * (n * (n + 1) // 2)
    top = 0
    for rank in range(1, n + 1):  # subsets of 1..rank: add `rank` to each subset of 1..rank-1
        top += rank
        for total in range(top, rank - 1, -1):
            ways[total] += ways[total - rank]
    k = max(k, 0)
    return sum(ways[k:]) / (1 << n)


def _signed_rank_by_flips(d: np.ndarray, ranks: np.ndarray, r_plus: float) -> float:
    """The share of all 2^n sign flips of the differences whose T+ reaches the observed one
    (a flipped zero stays zero); T+ within 100 epsilon of it counts as reaching it."""
    n = d.size
    signs = (np.arange(1 << n)[:, None] >> np.arange(n)[None, :]) & 1  # every assignment, 1 = as observed
    positive = np.where(signs == 1, d > 0, d < 0)
    null = positive @ ranks + float(np.sum(ranks[d == 0])) / 2.0
    reached = null >= r_plus - abs(r_plus) * 100 * np.finfo(np.float64).eps
    return float(np.count_nonzero(reached)) / (1 << n)
