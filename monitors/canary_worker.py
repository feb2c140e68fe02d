"""The work of a canary run, as every worker does it: in the run's own process (the local
backend) or in a Ray actor on its own GPU (``lorawatch.monitors.canary_ray``).

A worker is built from a ``WorkerSpec`` (plain values: paths, recorded hashes, options), so it
can be shipped to another process or host. It loads the base and its share of the run's
adapters, then turns batches of prompts into ``BatchRows``: the rows of one batch for its
adapters, embeddings and content risk included, ready to be written in one transaction by
whoever holds the database (``lorawatch.monitors.canary.store_rows``). Workers never touch the database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorawatch.models import (
    attach_adapters,
    direct_unsupported,
    load_base,
    load_base_direct,
    pick_device,
    use_kernel_caches,
)
from lorawatch.monitors.dataset import CanaryPrompt
from lorawatch.monitors.embeddings import Embedder, cosine_distance, needs_transformers, to_bytes
from lorawatch.monitors.pii_pool import PiiPool
from lorawatch.monitors.risk_scorers import RiskScorers, prompt_text
from lorawatch.registry import files as registry_files

log = logging.getLogger(__name__)


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
    direct_load: bool = True  # the base built without transformers where it can be (models.load_base_direct)
    embedding_model: str | None = None
    risk: Any = None  # RiskSettings, or None when content risk is off
    kernel_cache: str | None = None  # where compiled GPU kernels are kept (models.use_kernel_caches)
    # where digests verified before are kept (registry.files.DigestMemory); None: every file is read
    digests: str | None = None

    def shard(self, keys: list[str]) -> WorkerSpec:
        """The same spec for a subset of the adapters."""
        return WorkerSpec(**{**self.__dict__, "adapters": {k: self.adapters[k] for k in keys}})

    def checked(self) -> WorkerSpec:
        """The same spec without hashes, for a worker where they were just re-checked."""
        adapters = {k: (directory, None, label) for k, (directory, _, label) in self.adapters.items()}
        return WorkerSpec(**{**self.__dict__, "adapters": adapters, "base_files": None})


def direct_plan(spec: WorkerSpec) -> str | None:
    """None when the run needs no transformers at all: the base is built from its files
    (``lorawatch.models.load_base_direct``) and every adapter's factors are read from its files
    for the grouped decoder; else why not (the base then loads through transformers, as before)."""
    if not spec.fast_decode:
        return "fast_decode is off"
    if not spec.direct_load:
        return "[canary] model_loader is transformers"
    why = direct_unsupported(spec.base_path)
    if why is not None:
        return why
    # Deferred: imports torch, which only the worker's model work needs.
    from lorawatch import llama_file
    from lorawatch.monitors import fast_decode, lora_files

    assert spec.base_path is not None  # direct_unsupported says a hub id is not a folder
    shape = llama_file.skeleton(Path(spec.base_path))
    keys = list(spec.adapters)
    why = fast_decode.supported(shape, keys)
    for directory, _, label in spec.adapters.values():
        why = why or lora_files.unsupported(Path(directory), shape)
        if why is not None:
            return f"{label}: {why}"
    return why


def read_factors(model, dirs: dict[str, Path], device):
    """Every adapter's LoRA factors read from its files (``lorawatch.monitors.lora_files``) when
    the grouped decoder runs them all: PEFT then is not needed (wrapping the base costs seconds);
    None when the model or any adapter needs PEFT."""
    # Deferred: imports torch, which only the worker's model work needs.
    from lorawatch.monitors import fast_decode, lora_files

    keys = list(dirs)
    if fast_decode.supported(model, keys) is not None:
        return None
    if any(lora_files.unsupported(directory, model) is not None for directory in dirs.values()):
        return None
    return {key: lora_files.read_adapter(directory, device) for key, directory in dirs.items()}


def _scorers_need_hf(spec: WorkerSpec, build_risk: bool, embedder) -> bool:
    """Whether the scorers' thread will import transformers (Detoxify, or an embedding model
    that ``lorawatch.monitors.bert_file`` does not run)."""
    if build_risk and spec.risk.toxicity_backend == "detoxify":
        return True
    if build_risk and spec.risk.toxicity_backend == "minilm-classifier" and needs_transformers(None):
        return True  # the classifier embeds with the packaged model
    return embedder is None and needs_transformers(spec.embedding_model)


@dataclass
class BatchRows:
    """One batch's results for some adapters, as plain values."""

    prompt_ids: list[str]
    version_ids: list[int]
    base: list[dict[str, Any]]  # CanaryBaseOutput columns, one per prompt
    results: list[dict[str, Any]]  # CanaryResult columns, one per (adapter, prompt)
    device: str
    truncated: list[dict[str, Any]] = field(default_factory=list)  # prompts and references cut to fit the context


class CanaryWorker:
    """The base with some adapters, an embedder and the risk scorers, on one device.

    ``models``, ``embedder`` and ``risk`` may be given ready-made (tests, benchmarks); else
    they are loaded from the spec. ``risk=False`` turns content risk off whatever the spec says.
    """

    def __init__(
        self, spec: WorkerSpec, models=None, embedder=None, risk=None, featurize: bool = True, pii_pool=None
    ) -> None:
        # Deferred: imports torch, which only the worker's model work needs.
        from lorawatch.monitors.canary_batch import CanaryModels

        self.spec = spec
        self.keys = list(spec.adapters)
        # A batch takes the model, then the scorers: two batches in flight overlap (``process``).
        self._model_lock = threading.Lock()
        self._score_lock = threading.Lock()
        self.embedder, self.risk = embedder, risk or None
        # seconds per stage (start-up, then summed over batches) and when steps began and ended
        self.timings: dict[str, float] = {"worker_at": time.time()}
        self._own_risk: RiskScorers | None = None  # scorers built here, whose processes close() stops
        self._own_pool: PiiPool | None = pii_pool  # PII workers started before this worker, now its own
        self._timings_lock = threading.Lock()
        if models is None:
            self._verify()
            use_kernel_caches(Path(spec.kernel_cache) if spec.kernel_cache else None)
            choice = pick_device(spec.device)
            self.direct = direct_plan(spec)  # None: no transformers in this process for the model
            if self.direct is not None:
                log.info("the base loads through transformers: %s", self.direct)
            # The scorers start while the model loads: the PII processes at once, the embedding
            # model and the toxicity scorer on a thread (once torch, and transformers where they
            # or the model need it, are imported here: two threads importing one package can deadlock).
            self._start_scorers(str(choice.device), featurize, embedder, risk, model_needs_hf=self.direct is not None)
            try:
                started = time.perf_counter()
                dirs = {key: Path(directory) for key, (directory, _, _) in spec.adapters.items()}
                if self.direct is None:
                    assert spec.base_path is not None  # direct_plan checked
                    model, tokenizer = load_base_direct(spec.base_path, choice)
                else:
                    model, tokenizer = load_base(spec.base_path, spec.base_hub, choice)
                self.add_time("load_base", time.perf_counter() - started)
                started = time.perf_counter()
                factors = read_factors(model, dirs, choice.device) if spec.fast_decode else None
                models = CanaryModels(
                    model if factors is not None else attach_adapters(model, dirs),
                    tokenizer,
                    choice.device,
                    spec.max_new_tokens,
                    fast_decode=spec.fast_decode,
                    factors=factors,
                )
                if factors is not None:
                    models.grouped(self.keys)  # the factors stacked per group now, with the loading
                self.add_time("attach_adapters", time.perf_counter() - started)
            except BaseException:
                self._join_scorers(check=False)
                self.close()
                raise
            started = time.perf_counter()
            self._join_scorers()
            self.add_time("wait_for_scorers", time.perf_counter() - started)
            self.device_label = choice.label
        else:
            self.direct = "models given"
            self.device_label = str(models.device)
            self._start_scorers(str(models.device), featurize, embedder, risk, model_needs_hf=True)
            self._join_scorers()
        self.models = models
        self.timings["ready_at"] = time.time()
        self.identity = {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device_label}

    def _start_scorers(self, device: str, featurize: bool, embedder, risk, model_needs_hf: bool) -> None:
        self._scorers_thread = None
        self._scorers_error: BaseException | None = None
        spec = self.spec
        build_risk = featurize and risk is None and spec.risk is not None and spec.risk.enabled
        if not build_risk and self._own_pool is not None:
            self._own_pool.close()  # started early for scorers this worker does not build
            self._own_pool = None
        if build_risk and self._own_pool is None:
            # PII worker processes start at once (unless started before); the rest is built on the thread
            self._own_pool = RiskScorers.start_pii(spec.risk, device)
        if not featurize:
            return
        if embedder is None or build_risk:

            def build() -> None:
                try:
                    if build_risk:
                        self.risk = self._own_risk = RiskScorers.finish(spec.risk, device, self._own_pool)
                        self._own_pool = None  # the scorers own it now
                    if embedder is None:
                        self.embedder = Embedder(spec.embedding_model, device=device)
                except BaseException as exc:  # raised by _join_scorers, in the caller's thread
                    self._scorers_error = exc

            if model_needs_hf or _scorers_need_hf(spec, build_risk, embedder):
                # Deferred: transformers must be imported by this thread before another imports it.
                import transformers  # noqa: F401
            else:
                # Deferred: torch too, so that the thread does not import it while this one does.
                import torch  # noqa: F401

            self._scorers_thread = threading.Thread(target=build, name="canary-scorers", daemon=True)
            self._scorers_thread.start()

    def _join_scorers(self, check: bool = True) -> None:
        if self._scorers_thread is not None:
            self._scorers_thread.join()
            self._scorers_thread = None
        if check and self._scorers_error is not None:
            self.close()
            raise self._scorers_error

    def close(self) -> None:
        """Stop the PII worker processes this worker started, if any (the models go with the object)."""
        if self._own_risk is not None:
            self._own_risk.close()
            self._own_risk = None
        if self._own_pool is not None:  # started, but the scorers around it were never built
            self._own_pool.close()
            self._own_pool = None

    def _verify(self) -> None:
        spec = self.spec
        memory = registry_files.DigestMemory(Path(spec.digests)) if spec.digests else None
        if spec.base_files is not None and spec.base_path:
            path = Path(spec.base_path)
            registry_files.verify_files(
                path.parent if path.is_file() else path, spec.base_files, "the base model", memory
            )
        for directory, files, label in spec.adapters.values():
            if files is not None:
                registry_files.verify_files(Path(directory), files, label, memory)

    def describe(self) -> dict[str, Any]:
        """Where it runs and which risk backends it uses (recorded on the run)."""
        info = {**self.identity, "adapters": list(self.keys)}
        info["model_loader"] = "direct" if self.direct is None else f"transformers ({self.direct})"
        if self.risk is not None:
            info["risk"] = {**self.risk.names, "toxicity_threshold": self.risk.threshold}
        return info

    def lengths(self, prompts: list[CanaryPrompt]) -> list[int]:
        """Tokens per prompt (prompt and reference), which the batch plan sorts by."""
        m = self.models
        lengths = []
        for p in prompts:
            ids = m.prompt_ids(p)
            lengths.append(len(ids) + len(m.reference_ids(p, ids) or []))
        return lengths

    def process(self, prompts: list[CanaryPrompt], version_ids: dict[str, int]) -> BatchRows:
        """One batch through the base and this worker's adapters, ready to store.

        Two stages, each one batch at a time: the model's device (tokens in; outputs, drift
        scores and the outputs' embeddings out), then the scorers (toxicity, PII, the rows).
        Called from two threads, batch n's outputs are scored while batch n+1 is on the device
        (``process_all``; a Ray actor runs two calls at once)."""
        # Deferred: imports torch, which only the worker's model work needs.
        from lorawatch.monitors.canary_batch import run_batch

        with self._model_lock:
            started = time.perf_counter()
            self.timings.setdefault("first_batch_at", time.time())
            result = run_batch(self.models, prompts, self.keys)
            embedded = time.perf_counter()
            # on the model's device too, so in this stage: a CUDA graph being captured for the
            # next batch must not see another thread's kernels
            vectors = embed_outputs(result, self.keys, self.embedder)
            self.timings.setdefault("first_batch_model", embedded - started)
            self.add_time("model", embedded - started)
            self.add_time("embed", time.perf_counter() - embedded)
        with self._score_lock:
            rows = featurize(
                result,
                {k: version_ids[k] for k in self.keys},
                vectors,
                self.risk,
                self.device_label,
                embedded=self.embedder is not None,
                clock=self.add_time,
            )
            self.timings["last_batch_at"] = time.time()
            self.timings.setdefault("first_batch_done_at", self.timings["last_batch_at"])
            return rows

    def add_time(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` towards ``stage`` in ``timings``."""
        with self._timings_lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def process_all(self, batches: list[list[CanaryPrompt]], version_ids: dict[str, int], sink, overlap: bool = True):
        """``sink(rows)`` for every batch, in order. With ``overlap``, two batches are in flight
        on two threads (one on the model, one being scored) while this thread hands the one
        before to ``sink``; the rows and their order are those of one batch at a time.

        The stages keep their order: each has one lock and at most one batch waiting for it."""
        if not overlap:
            for batch in batches:
                sink(self.process(batch, version_ids))
            return
        pool = ThreadPoolExecutor(2, thread_name_prefix="canary-batch")
        in_flight: deque[Future] = deque()
        try:
            for batch in batches:
                if len(in_flight) == 2:
                    sink(in_flight.popleft().result())
                in_flight.append(pool.submit(self.process, batch, version_ids))
            while in_flight:
                sink(in_flight.popleft().result())
        finally:
            # on an error, batches not started are dropped; one already on a stage finishes first
            pool.shutdown(wait=True, cancel_futures=True)


def output_texts(result, keys: list[str]) -> list[str]:
    """A batch's outputs: the base's, then each adapter's, prompt by prompt."""
    texts = list(result.base.texts)
    for key in keys:
        texts += result.adapters[key]["generation"].texts
    return texts


def embed_outputs(result, keys: list[str], embedder) -> np.ndarray:
    """Embeddings of ``output_texts`` (zeros of width 1 without an embedder: benchmarks of the
    language model alone)."""
    texts = output_texts(result, keys)
    if embedder is None:
        return np.zeros((len(texts), 1), dtype=np.float32)
    return embedder.encode(texts)


def featurize(
    result, version_ids: dict[str, int], vectors, risk, device_label: str, *, embedded: bool = True, clock=None
) -> BatchRows:
    """Embedding drift and content risk of a batch's outputs, as rows; ``vectors`` are the
    outputs' embeddings (``embed_outputs``; ``embedded=False``: none were made). ``clock(stage,
    seconds)`` is told how long risk scoring took."""

    prompts = result.prompts
    keys = list(version_ids)
    n = len(prompts)
    texts = output_texts(result, keys)
    base_vectors = vectors[:n]
    toxicity: list[float | None] = [None] * len(texts)
    pii: list[list[dict] | None] = [None] * len(texts)
    started = time.perf_counter()
    if risk is not None:
        toxicity, pii = risk.score([prompt_text(p) for p in prompts] * (len(keys) + 1), texts)
    if clock is not None:
        clock("risk", time.perf_counter() - started)
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
        distance = cosine_distance(base_vectors, adapted, same) if embedded else np.zeros(n)
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
        truncated=list(getattr(result, "truncated", [])),
    )
