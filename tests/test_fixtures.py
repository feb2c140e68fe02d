"""The fixtures that must drift do so by a wide margin, and the ones that must not are exact,
whatever kernels torch picks on this CPU (CI runs this file again under ATEN_CPU_CAPABILITY=avx2)."""

from __future__ import annotations

import pytest

from tests.tiny_models import CORPUS, independent_kl

# the default threshold of logit_kl (mean), which the gate also holds a candidate to
KL_THRESHOLD = 0.55


def _mean_kl(base, adapter, n: int = 6) -> list[float]:
    texts = sorted(set(CORPUS))
    return [independent_kl(base, adapter, texts[i] + f" ({i})", texts[(i + 3) % len(texts)]) for i in range(n)]


def test_the_drifting_adapter_moves_kl_five_times_past_the_threshold_on_every_prompt(tiny_base, drifting_adapter):
    kls = _mean_kl(tiny_base, drifting_adapter)
    assert min(kls) > 5 * KL_THRESHOLD, kls


def test_the_zero_adapter_leaves_every_log_prob_exactly_as_the_base_has_it(tiny_base, zero_adapter):
    assert _mean_kl(tiny_base, zero_adapter, n=3) == [0.0, 0.0, 0.0]


def test_the_logit_kl_threshold_these_margins_assume_is_the_default():
    from lorawatch.monitors.registry import get_monitor

    assert get_monitor("logit_kl").threshold == pytest.approx(KL_THRESHOLD)
