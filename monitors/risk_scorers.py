"""The scorers of content risk: toxicity and the PII an output leaks, as a canary worker
builds them from the ``[risk]`` section (in the run's process or a Ray actor). No database
here: a worker imports this and never the store (``lorawatch.monitors.risk`` reads and writes
the stored scores and reviewers' verdicts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lorawatch.monitors.pii import PiiDetector, leaks
from lorawatch.monitors.pii_pool import POOLED_TOXICITY, PiiPool, default_workers
from lorawatch.monitors.toxicity import build_scorer
from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer  # noqa: F401  (registers minilm-classifier)


@dataclass
class RiskScorers:
    """The toxicity scorer and PII detector a run uses."""

    toxicity: Any
    pii: Any
    threshold: float

    @classmethod
    def from_risk_settings(cls, risk, device: str = "cpu", *, pii_workers: int | None = None) -> RiskScorers:
        """Build both from the ``[risk]`` section alone (what a canary worker is given).

        PII is found in this process, or on ``pii_workers`` processes (default: ``[risk]
        pii_workers``, else ``pii_pool.default_workers(device)``), which start now and load
        their detectors while the caller goes on."""
        return cls.finish(risk, device, cls.start_pii(risk, device, pii_workers=pii_workers))

    @staticmethod
    def start_pii(risk, device: str = "cpu", *, pii_workers: int | None = None) -> PiiPool | None:
        """The PII worker processes ``from_risk_settings`` would use, started now (they load while
        the caller does other work); None when PII is found in this process."""
        if pii_workers is None:
            pii_workers = risk.pii_workers if risk.pii_workers is not None else default_workers(device)
        if pii_workers <= 0:
            return None
        pooled = risk if risk.toxicity_backend in POOLED_TOXICITY else None  # toxicity on the workers too
        return PiiPool(detector_arguments(risk), pii_workers, toxicity=pooled)

    @classmethod
    def finish(cls, risk, device: str, pool: PiiPool | None) -> RiskScorers:
        """The scorers around ``pool`` (from ``start_pii``; None: a detector in this process).
        The pool is stopped if the rest cannot be built."""
        try:
            pii = pool if pool is not None else PiiDetector(**detector_arguments(risk))
            toxicity = PooledToxicity(pool) if pool is not None and pool.toxicity_name else build_scorer(risk, device)
            return cls(toxicity, pii, risk.toxicity_threshold)
        except BaseException:
            if pool is not None:
                pool.close()
            raise

    def close(self) -> None:
        """Stop the PII worker processes, if any."""
        if isinstance(self.pii, PiiPool):
            self.pii.close()

    @property
    def names(self) -> dict[str, str]:
        """The backends, named next to every figure they produce."""
        return {"toxicity_backend": self.toxicity.name, "pii_detector": self.pii.name}

    def score(self, prompts: list[str], outputs: list[str]) -> tuple[list[float], list[list[dict]]]:
        """Toxicity of each output and the PII it leaks (entities not in its prompt)."""

        if isinstance(self.toxicity, PooledToxicity):  # one round trip to the workers for both
            scores, findings = self.toxicity.pool.score_many(outputs)
        else:
            scores, findings = self.toxicity.score(outputs), self.pii.find_many(outputs)
        found = [[f.to_dict() for f in leaks(p, found)] for p, found in zip(prompts, findings)]
        return scores.tolist(), found


@dataclass
class PooledToxicity:
    """The toxicity scorer of a ``PiiPool``'s workers (``pii_pool.POOLED_TOXICITY``)."""

    pool: PiiPool

    @property
    def name(self) -> str:
        assert self.pool.toxicity_name is not None
        return self.pool.toxicity_name

    def score(self, texts: list[str]) -> np.ndarray:
        return self.pool.toxicity_many(texts)


def detector_arguments(risk) -> dict[str, Any]:
    """``PiiDetector``'s arguments from the ``[risk]`` section."""
    return {
        "entities": list(risk.pii_entities),
        "score_threshold": risk.pii_score_threshold,
        "spacy_model": risk.spacy_model,
        "person_min_words": risk.person_min_words,
        "ignore_toll_free": risk.ignore_toll_free_numbers,
    }


def prompt_text(prompt) -> str:
    """All the text of a canary prompt (every message), against which leaks are judged."""
    return "\n".join(m["content"] for m in prompt.chat())
