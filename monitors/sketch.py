"""DDSketch: a mergeable quantile sketch with relative accuracy (Masson, Rim and Lee, 2019).

Values are counted in logarithmic buckets ``ceil(log_gamma(x))`` with
``gamma = (1 + alpha) / (1 - alpha)``, so any quantile is returned within ``alpha`` relative
error of an exact one, and two sketches merge by adding their bucket counts. That is what
lets a P99 over any window, adapter or tenant set be computed by merging per-minute sketches
instead of scanning requests. Adding values is vectorised with numpy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np

# 0.5%: half the 1% the percentiles must meet, leaving room for rank discretisation
DEFAULT_ALPHA = 0.005
_MIN_VALUE = 1e-9  # values at or below this count in the zero bucket


class DDSketch:
    """A DDSketch over non-negative values (latencies)."""

    __slots__ = ("alpha", "gamma", "log_gamma", "bins", "zero_count", "count", "total", "min", "max")

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self.log_gamma = math.log(self.gamma)
        self.bins: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: Iterable[float] | np.ndarray) -> DDSketch:
        """Add many values at once."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            return self
        if np.any(array < 0) or not np.all(np.isfinite(array)):
            raise ValueError("DDSketch values must be finite and non-negative")
        self.count += int(array.size)
        self.total += float(array.sum())
        self.min = min(self.min, float(array.min()))
        self.max = max(self.max, float(array.max()))
        positive = array[array > _MIN_VALUE]
        self.zero_count += int(array.size - positive.size)
        if positive.size:
            keys, counts = np.unique(np.ceil(np.log(positive) / self.log_gamma).astype(np.int64), return_counts=True)
            bins = self.bins
            for key, n in zip(keys.tolist(), counts.tolist()):
                bins[key] = bins.get(key, 0) + n
        return self

    def merge(self, other: DDSketch) -> DDSketch:
        """Add another sketch's counts into this one (same alpha)."""
        if abs(other.alpha - self.alpha) > 1e-12:
            raise ValueError(f"cannot merge sketches with alpha {self.alpha} and {other.alpha}")
        for key, n in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + n
        self.zero_count += other.zero_count
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), within ``alpha`` relative error; None when empty."""
        if self.count == 0:
            return None
        if not 0 <= q <= 1:
            raise ValueError(f"q must be in [0, 1], got {q}")
        rank = q * (self.count - 1)
        if rank < self.zero_count:
            return 0.0
        seen = self.zero_count
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                # the bucket (gamma^(k-1), gamma^k] is represented by the value with equal
                # relative error to both ends
                value = 2 * self.gamma**key / (self.gamma + 1)
                return min(max(value, self.min), self.max)
        return self.max

    def count_above(self, threshold: float) -> int:
        """How many values exceed ``threshold`` (to the bucket's precision), for SLO burn rates."""
        if threshold <= _MIN_VALUE:
            return self.count - self.zero_count
        cut = math.ceil(math.log(threshold) / self.log_gamma)
        return sum(n for key, n in self.bins.items() if key > cut)

    @property
    def mean(self) -> float | None:
        """The exact mean of the added values."""
        return self.total / self.count if self.count else None

    # ------------------------------------------------------------ storage

    _HEADER = struct.Struct("<dqqddd I")

    def to_bytes(self) -> bytes:
        """A compact binary form: a header, then (key, count) pairs as int32/int64."""
        keys = np.fromiter(self.bins.keys(), dtype=np.int32, count=len(self.bins))
        counts = np.fromiter(self.bins.values(), dtype=np.int64, count=len(self.bins))
        header = self._HEADER.pack(
            self.alpha,
            self.zero_count,
            self.count,
            self.total,
            self.min if self.count else 0.0,
            self.max if self.count else 0.0,
            len(keys),
        )
        return header + keys.astype("<i4").tobytes() + counts.astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DDSketch:
        """Read a sketch written by ``to_bytes``."""
        alpha, zero, count, total, low, high, n = cls._HEADER.unpack_from(data)
        sketch = cls(alpha)
        offset = cls._HEADER.size
        keys = np.frombuffer(data, dtype="<i4", count=n, offset=offset)
        counts = np.frombuffer(data, dtype="<i8", count=n, offset=offset + 4 * n)
        sketch.bins = dict(zip(keys.tolist(), counts.tolist()))
        sketch.zero_count, sketch.count, sketch.total = zero, count, total
        sketch.min, sketch.max = (low, high) if count else (math.inf, -math.inf)
        return sketch


def merged(blobs: Iterable[bytes], alpha: float = DEFAULT_ALPHA) -> DDSketch:
    """One sketch from many stored ones."""
    result = DDSketch(alpha)
    for blob in blobs:
        if blob:
            result.merge(DDSketch.from_bytes(blob))
    return result


def sketches_by_group(
    groups: np.ndarray, values: np.ndarray, alpha: float = DEFAULT_ALPHA, n_groups: int | None = None
) -> list[bytes]:
    """One stored sketch per group, built without a Python loop over values.

    ``groups`` holds group numbers 0..G-1 for each value (G is ``n_groups``, or the largest
    number plus one); the result has G entries in the ``DDSketch.to_bytes`` format.
    """
    groups = np.asarray(groups, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if n_groups is None:
        n_groups = int(groups.max()) + 1 if groups.size else 0
    gamma = (1 + alpha) / (1 - alpha)
    count = np.bincount(groups, minlength=n_groups)
    total = np.bincount(groups, weights=values, minlength=n_groups)
    low = np.full(n_groups, np.inf)
    high = np.full(n_groups, -np.inf)
    np.minimum.at(low, groups, values)
    np.maximum.at(high, groups, values)
    positive = values > _MIN_VALUE
    zero = np.bincount(groups[~positive], minlength=n_groups)
    keys = np.ceil(np.log(values[positive]) / math.log(gamma)).astype(np.int64)
    pos_groups = groups[positive]
    # one int64 per (group, key): group in the high bits, key (offset to be >= 0) in the low
    offset = 1 << 20
    combined = (pos_groups << 22) + (keys + offset)
    unique, counts = np.unique(combined, return_counts=True)
    unique_groups = unique >> 22
    unique_keys = (unique & ((1 << 22) - 1)) - offset
    bounds = np.searchsorted(unique_groups, np.arange(n_groups + 1)).tolist()
    key_bytes = unique_keys.astype("<i4").tobytes()
    count_bytes = counts.astype("<i8").tobytes()
    pack = DDSketch._HEADER.pack
    zero, count, total = zero.tolist(), count.tolist(), total.tolist()
    low, high = np.where(np.isfinite(low), low, 0.0).tolist(), np.where(np.isfinite(high), high, 0.0).tolist()
    blobs = []
    for g in range(n_groups):
        a, b = bounds[g], bounds[g + 1]
        blobs.append(
            pack(alpha, zero[g], count[g], total[g], low[g], high[g], b - a)
            + key_bytes[4 * a : 4 * b]
            + count_bytes[8 * a : 8 * b]
        )
    return blobs


def merge_many(blobs: list[bytes], alpha: float = DEFAULT_ALPHA) -> DDSketch:
    """Merge many stored sketches at once: their bins are concatenated and summed with numpy,
    so a window of a million adapter-minutes merges without a Python loop over bins."""
    result = DDSketch(alpha)
    if not blobs:
        return result
    header = DDSketch._HEADER
    heads = [header.unpack_from(b) for b in blobs]
    if any(abs(h[0] - alpha) > 1e-12 for h in heads):
        raise ValueError("cannot merge sketches with different alpha")
    keys = np.concatenate([np.frombuffer(b, dtype="<i4", count=h[6], offset=header.size) for b, h in zip(blobs, heads)])
    counts = np.concatenate(
        [np.frombuffer(b, dtype="<i8", count=h[6], offset=header.size + 4 * h[6]) for b, h in zip(blobs, heads)]
    )
    if keys.size:
        unique, inverse = np.unique(keys, return_inverse=True)
        summed = np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64)
        result.bins = dict(zip(unique.tolist(), summed.tolist()))
    nonempty = [h for h in heads if h[2]]
    result.zero_count = sum(h[1] for h in heads)
    result.count = sum(h[2] for h in heads)
    result.total = float(sum(h[3] for h in heads))
    if nonempty:
        result.min = min(h[4] for h in nonempty)
        result.max = max(h[5] for h in nonempty)
    return result
