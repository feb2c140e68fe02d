"""Teacher-forced logit drift between a base model and an adapted one, on the model's device.

Given the final hidden states of both models at the positions that predict the scored tokens,
this computes per row: mean and max per-token KL(adapted || base), Jensen-Shannon divergence,
top-1 agreement, and the scored tokens' mean log-probability under each model. Logits are
made from the hidden states a chunk of positions at a time, so full fp32 logits of a batch
are never held; results stay on the device until the caller moves them once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lorawatch.monitors import kernels

LOG2 = math.log(2.0)


@dataclass
class DriftScores:
    """Per-row sums and maxima over scored positions (tensors on the model's device)."""

    kl_sum: torch.Tensor
    kl_max: torch.Tensor
    js_sum: torch.Tensor
    top1_sum: torch.Tensor
    logprob_base_sum: torch.Tensor
    logprob_adapted_sum: torch.Tensor
    count: torch.Tensor

    def means(self) -> dict[str, list[float]]:
        """Per-row means (and KL max) moved to the host in one transfer."""
        n = self.count.clamp(min=1).to(torch.float64)
        stacked = torch.stack(
            [
                self.kl_sum / n,
                self.kl_max,
                self.js_sum / n,
                self.top1_sum / n,
                self.logprob_base_sum / n,
                self.logprob_adapted_sum / n,
                self.count.to(torch.float64),
            ]
        ).cpu()
        keys = [
            "kl_mean",
            "kl_max",
            "js_mean",
            "top1_agreement",
            "ref_logprob_base",
            "ref_logprob_adapted",
            "scored_tokens",
        ]
        return {k: stacked[i].tolist() for i, k in enumerate(keys)}


def chunk_positions(vocab_size: int, budget_elements: int = 1 << 25) -> int:
    """How many positions fit a logits chunk of about ``budget_elements`` values."""
    return max(1, budget_elements // max(1, vocab_size))


def head_logits(lm_head, hidden: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Logits from final hidden states in fp32 (with the model's soft-capping, if any)."""
    logits = lm_head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _chunk_metrics(adapted_logits: torch.Tensor, lb: torch.Tensor, lab: torch.Tensor):
    """Per-position KL, JS, top-1 agreement and label log-probs for one chunk (fp32)."""
    la = adapted_logits.float().log_softmax(-1)
    lb = lb.float()
    pa = la.exp()
    pb = lb.exp()
    kl = (pa * (la - lb)).sum(-1)
    lm = torch.logaddexp(la, lb) - LOG2
    # where both log-probs are equal the terms are exactly zero; rounding in lm would not be
    js = 0.5 * (pa * (la - lm) + pb * (lb - lm)).masked_fill(la == lb, 0.0).sum(-1)
    agree = la.argmax(-1) == lb.argmax(-1)
    return kl, js, agree, lb.gather(-1, lab).squeeze(-1), la.gather(-1, lab).squeeze(-1)


_compiled = None


def _metrics_fn(device: torch.device):
    """On CUDA the chunk metrics are fused by torch.compile (one pass over the vocabulary
    instead of a dozen); on the CPU they run eagerly."""
    global _compiled
    if device.type != "cuda":
        return _chunk_metrics
    if _compiled is None:
        _compiled = torch.compile(_chunk_metrics, dynamic=True)
    return _compiled


@dataclass
class BaseLogits:
    """The base's logits at every gathered position in the model's dtype, with their fp32
    log-sum-exp and argmax: the same log-probs as an fp32 ``log_softmax`` in half the bytes
    (for the fused drift kernel, ``lorawatch.monitors.kernels.drift``)."""

    logits: torch.Tensor
    lse: torch.Tensor
    argmax: torch.Tensor


def base_logprobs(
    lm_head, base_hidden: torch.Tensor, softcap: float | None, dtype: torch.dtype, budget_bytes: int
) -> torch.Tensor | BaseLogits | None:
    """The base's log-probs at every gathered position, computed once per batch and shared by
    every adapter; None when they would not fit ``budget_bytes`` (then each adapter recomputes
    them a chunk at a time). Where the fused kernels run (CUDA, no soft-capping) they are
    kept as ``BaseLogits``."""
    vocab = lm_head.weight.shape[0]
    if not softcap and kernels.available(base_hidden.device):
        if base_hidden.shape[0] * vocab * base_hidden.element_size() > budget_bytes:
            return None
        logits = lm_head(base_hidden)
        return BaseLogits(logits, *kernels.base_stats(logits))
    if base_hidden.shape[0] * vocab * torch.finfo(dtype).bits // 8 > budget_bytes:
        return None
    out = torch.empty((base_hidden.shape[0], vocab), dtype=dtype, device=base_hidden.device)
    chunk = chunk_positions(vocab)
    for start in range(0, base_hidden.shape[0], chunk):
        out[start : start + chunk] = (
            head_logits(lm_head, base_hidden[start : start + chunk], softcap).log_softmax(-1).to(dtype)
        )
    return out


@torch.no_grad()
def score(
    lm_head,
    base_hidden: torch.Tensor,
    adapted_hidden: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    n_rows: int,
    *,
    softcap: float | None = None,
    base_logprobs: torch.Tensor | BaseLogits | None = None,
    chunk: int | None = None,
) -> DriftScores:
    """Drift scores for gathered positions.

    ``base_hidden`` and ``adapted_hidden`` are (M, H) hidden states of the M scored positions,
    ``labels`` the (M,) token each position predicts and ``rows`` the (M,) row it belongs to.
    ``base_logprobs`` may hold precomputed (M, V) base log-probs to skip the base head, or
    ``BaseLogits``, which the fused kernel reads.
    """
    device = adapted_hidden.device
    vocab = lm_head.weight.shape[0]
    fused = isinstance(base_logprobs, BaseLogits)
    # the fused kernel keeps only bf16 logits of a chunk: larger chunks, fewer head matmuls
    chunk = chunk or chunk_positions(vocab, 1 << 28 if fused else 1 << 25)
    # torch.compile is set up only where it runs: building it costs seconds of the first batch
    # (Inductor's imports and operator registrations) that the fused kernel never repays
    metrics = None if fused else _metrics_fn(device)
    f64 = torch.float64
    kl_sum = torch.zeros(n_rows, dtype=f64, device=device)
    kl_max = torch.zeros(n_rows, dtype=f64, device=device)
    js_sum = torch.zeros(n_rows, dtype=f64, device=device)
    top1_sum = torch.zeros(n_rows, dtype=f64, device=device)
    lpb_sum = torch.zeros(n_rows, dtype=f64, device=device)
    lpa_sum = torch.zeros(n_rows, dtype=f64, device=device)
    count = torch.zeros(n_rows, dtype=torch.long, device=device)
    for start in range(0, labels.shape[0], chunk):
        sl = slice(start, start + chunk)
        logits = lm_head(adapted_hidden[sl])
        if fused:
            base = base_logprobs
            kl, js, agree, lpb, lpa = kernels.drift(logits, base.logits[sl], base.lse[sl], base.argmax[sl], labels[sl])
        else:
            if base_logprobs is not None:
                lb = base_logprobs[sl]
            else:
                lb = head_logits(lm_head, base_hidden[sl], softcap).log_softmax(-1)
            if softcap:
                logits = torch.tanh(logits.float() / softcap) * softcap
            assert metrics is not None
            kl, js, agree, lpb, lpa = metrics(logits, lb, labels[sl].unsqueeze(-1))
        r = rows[sl]
        kl_sum.index_add_(0, r, kl.to(f64))
        kl_max.scatter_reduce_(0, r, kl.to(f64), reduce="amax")
        js_sum.index_add_(0, r, js.to(f64))
        top1_sum.index_add_(0, r, agree.to(f64))
        lpb_sum.index_add_(0, r, lpb.to(f64))
        lpa_sum.index_add_(0, r, lpa.to(f64))
        count.index_add_(0, r, torch.ones_like(r))
    return DriftScores(kl_sum, kl_max, js_sum, top1_sum, lpb_sum, lpa_sum, count)
