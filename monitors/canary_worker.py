"""The work of a canary run, as every worker does it: in the run's own process (the local
backend) or in a Ray actor on its own GPU (``lorawatch.monitors.canary_ray``).

A worker is built from a ``WorkerSpec`` (plain values: paths, recorded hashes, options), so it
can be shipped to another process or host. It loads the base and its share of the run's
adapters, then turns batches of prompts into ``BatchRows``: the rows of one batch for its
adapters, embeddings and content risk included, ready to be written in one transaction by
whoever holds the database (``lorawatch.monitors.canary.store_rows``). Workers never touch the database.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorawatch.models import attach_adapters, load_base, pick_device
from lorawatch.monitors.dataset import CanaryPrompt
from lorawatch.monitors.embeddings import Embedder, cosine_distance, to_bytes
from lorawatch.monitors.risk import RiskScorers, prompt_text
from lorawatch.registry import files as registry_files


@dataclass
class WorkerSpec:
    """What a worker needs to load its models: no database, no secrets."""

    base_path: str | None
    base_hub: str | None
    # adapter key -> (directory, recorded files with hashes, label); hashes are re-checked where the worker runs
    adapters: dict[str, tuple[str, dict[str, dict] | None, str]]
    base_files: dict[str, dict] | None
    device: str = "auto"
    max_new_tokens: int = 48
    fast_decode: bool = True
    embedding_model: str | None = None
    risk: Any = None  # RiskSettings, or None when content risk is off

    def shard(self, keys: list[str]) -> WorkerSpec:
        """The same spec for a subset of the adapters."""
        return WorkerSpec(**{**self.__dict__, "adapters": {k: self.adapters[k] for k in keys}})

    def checked(self) -> WorkerSpec:
        """The same spec without hashes, for a worker where they were just re-checked."""
        adapters = {k: (directory, None, label) for k, (directory, _, label) in self.adapters.items()}
        return WorkerSpec(**{**self.__dict__, "adapters": adapters, "base_files": None})


@dataclass
class BatchRows:
    """One batch's results for some adapters, as plain values."""

    prompt_ids: list[str]
    version_ids: list[int]
    base: list[dict[str, Any]]  # CanaryBaseOutput columns, one per prompt
    results: list[dict[str, Any]]  # CanaryResult columns, one per (adapter, prompt)
    device: str


class CanaryWorker:
    """The base with some adapters, an embedder and the risk scorers, on one device.

    ``models``, ``embedder`` and ``risk`` may be given ready-made (tests, benchmarks); else
    they are loaded from the spec. ``risk=False`` turns content risk off whatever the spec says.
    """

    def __init__(self, spec: WorkerSpec, models=None, embedder=None, risk=None, featurize: bool = True) -> None:
        # Deferred: imports torch, which only the worker's model work needs.
        from lorawatch.monitors.canary_batch import CanaryModels

        self.spec = spec
        self.keys = list(spec.adapters)
        if models is None:
            self._verify()
            choice = pick_device(spec.device)
            model, tokenizer = load_base(spec.base_path, spec.base_hub, choice)
            dirs = {key: Path(directory) for key, (directory, _, _) in spec.adapters.items()}
            models = CanaryModels(
                attach_adapters(model, dirs),
                tokenizer,
                choice.device,
                spec.max_new_tokens,
                fast_decode=spec.fast_decode,
            )
            self.device_label = choice.label
        else:
            self.device_label = str(models.device)
        self.models = models
        device = str(models.device)
        if featurize and embedder is None:
            embedder = Embedder(spec.embedding_model, device=device)
        self.embedder = embedder
        if risk is None and featurize and spec.risk is not None and spec.risk.enabled:
            risk = RiskScorers.from_risk_settings(spec.risk, device=device)
        self.risk = risk or None
        self.identity = {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device_label}

    def _verify(self) -> None:
        spec = self.spec
        if spec.base_files is not None and spec.base_path:
            path = Path(spec.base_path)
            registry_files.verify_files(path.parent if path.is_file() else path, spec.base_files, "the base model")
        for directory, files, label in spec.adapters.values():
            if files is not None:
                registry_files.verify_files(Path(directory), files, label)

    def describe(self) -> dict[str, Any]:
        """Where it runs and which risk backends it uses (recorded on the run)."""
        info = {**self.identity, "adapters": list(self.keys)}
        if self.risk is not None:
            info["risk"] = {**self.risk.names, "toxicity_threshold": self.risk.threshold}
        return info

    def lengths(self, prompts: list[CanaryPrompt]) -> list[int]:
        """Tokens per prompt (prompt and reference), which the batch plan sorts by."""
        m = self.models
        return [len(m.prompt_ids(p)) + len(m.reference_ids(p) or []) for p in prompts]

    def process(self, prompts: list[CanaryPrompt], version_ids: dict[str, int]) -> BatchRows:
        """One batch through the base and this worker's adapters, ready to store."""
        # Deferred: imports torch, which only the worker's model work needs.
        from lorawatch.monitors.canary_batch import run_batch

        result = run_batch(self.models, prompts, self.keys)
        return featurize(result, {k: version_ids[k] for k in self.keys}, self.embedder, self.risk, self.device_label)


def featurize(result, version_ids: dict[str, int], embedder, risk, device_label: str) -> BatchRows:
    """Embeddings, embedding drift and content risk of a batch's outputs, as rows."""

    prompts = result.prompts
    keys = list(version_ids)
    n = len(prompts)
    texts = list(result.base.texts)
    for key in keys:
        texts += result.adapters[key]["generation"].texts
    if embedder is not None:
        vectors = embedder.encode(texts)
    else:  # benchmarks of the language model alone
        vectors = np.zeros((len(texts), 1), dtype=np.float32)
    base_vectors = vectors[:n]
    toxicity: list[float | None] = [None] * len(texts)
    pii: list[list[dict] | None] = [None] * len(texts)
    if risk is not None:
        toxicity, pii = risk.score([prompt_text(p) for p in prompts] * (len(keys) + 1), texts)
    base_ms = result.base.seconds * 1000.0
    base_rows = [
        dict(
            prompt_id=p.id,
            segment=p.segment,
            output=result.base.texts[i],
            new_tokens=len(result.base.token_ids[i]),
            latency_ms=base_ms,
            embedding=to_bytes(base_vectors[i]),
            toxicity=toxicity[i],
            pii_leaks=pii[i],
        )
        for i, p in enumerate(prompts)
    ]
    results = []
    for k, key in enumerate(keys):
        gen = result.adapters[key]["generation"]
        scores = result.adapters[key]["scores"]
        adapted = vectors[n * (k + 1) : n * (k + 2)]
        same = [a == b for a, b in zip(gen.texts, result.base.texts)]
        distance = cosine_distance(base_vectors, adapted, same) if embedder is not None else np.zeros(n)
        latency_ms = gen.seconds * 1000.0
        for i, p in enumerate(prompts):
            new_tokens = len(gen.token_ids[i])
            results.append(
                dict(
                    prompt_id=p.id,
                    segment=p.segment,
                    adapter_version_id=version_ids[key],
                    scored_tokens=int(scores["scored_tokens"][i]),
                    scored_on=result.scored_on[i],
                    kl_mean=scores["kl_mean"][i],
                    kl_max=scores["kl_max"][i],
                    js_mean=scores["js_mean"][i],
                    top1_agreement=scores["top1_agreement"][i],
                    ref_logprob_base=scores["ref_logprob_base"][i],
                    ref_logprob_adapted=scores["ref_logprob_adapted"][i],
                    ref_logprob_delta=scores["ref_logprob_adapted"][i] - scores["ref_logprob_base"][i],
                    output=gen.texts[i],
                    new_tokens=new_tokens,
                    latency_ms=latency_ms,
                    tokens_per_s=new_tokens / gen.seconds if gen.seconds > 0 else 0.0,
                    embedding_cosine_distance=float(distance[i]),
                    embedding=to_bytes(adapted[i]),
                    toxicity=toxicity[n * (k + 1) + i],
                    pii_leaks=pii[n * (k + 1) + i],
                )
            )
    return BatchRows(
        prompt_ids=[p.id for p in prompts],
        version_ids=list(version_ids.values()),
        base=base_rows,
        results=results,
        device=device_label,
    )
