"""PII detection on a pool of worker processes, so that a canary run's GPU never waits for it.

Presidio and spaCy run in Python and hold the interpreter's lock: one process finds PII in a
few hundred texts a second, while one GPU batch of a 1B model makes thousands of outputs a
second (benchmarks/README.md). A ``PiiPool`` starts ``workers`` processes (``spawn``: the
parent may hold CUDA, which a forked child must not touch), each building the same
``PiiDetector`` from the same arguments; ``find_many`` cuts the texts into one contiguous
part per worker and joins the parts in order, so its findings equal the detector's own in
the parent.

The processes are started when the pool is made and build their detectors while the caller
loads its models and runs its first batch; the first ``find_many`` waits for them.

Given the ``[risk]`` settings of a toxicity backend that runs on the CPU alone
(``POOLED_TOXICITY``: profanity-check, a linear model over words), each worker scores
toxicity too (``score_many``): toxicity is then scored on every worker instead of one thread
of the caller, beside the model.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from lorawatch.monitors.pii import UNUSED_BY_DETECTOR, Finding, PiiDetector, RefuseImports
from lorawatch.monitors.toxicity import ToxicityScorer, build_scorer

# Toxicity backends a worker may run: on the CPU, light, and the same scores in any process.
POOLED_TOXICITY = frozenset({"profanity-check"})

# The detector (and toxicity scorer) of a pool's worker process, built once by ``_start``, or why it could not be.
_detector: PiiDetector | None = None
_toxicity: ToxicityScorer | None = None
_start_error: BaseException | None = None
_start_warnings: list[str] = []


# One thread per worker process: the pool has a process per core, and numerical libraries
# that each start a thread per core (OpenMP, BLAS, torch, which thinc imports) oversubscribe them.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


# What the detector leaves out anywhere (pii.UNUSED_BY_DETECTOR), and torch: importing them took
# 12 of a worker's 16 s of start-up on the H200's host, so the workers were not ready for the
# first batch (tests/test_pipeline.py: the same findings as in one process).
UNUSED_IN_WORKERS = UNUSED_BY_DETECTOR | {"torch"}


def _start(arguments: dict[str, Any], toxicity: Any = None) -> None:
    global _detector, _toxicity
    for name in _ONE_THREAD:  # before the detector imports the libraries that read them
        os.environ[name] = "1"
    sys.meta_path.insert(0, RefuseImports(UNUSED_IN_WORKERS))
    # a spawned worker ends through the interpreter's full teardown, which for Presidio, spaCy
    # and scikit-learn took a second and a half of every run's finish (the run waits for its
    # workers to stop); it has nothing to write then, so its first exit handler ends it
    atexit.register(_end_now)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="watch-parent", daemon=True).start()
    global _start_error
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _detector = PiiDetector(**arguments)
            if toxicity is not None:
                _toxicity = build_scorer(toxicity, "cpu")
        _start_warnings[:] = [str(w.message) for w in caught]
    except Exception as exc:  # raised by the first call, in the parent, as itself
        _start_error = exc


def _end_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (killed, say): it would otherwise wait for work
    forever, since it holds both ends of the pipe its work comes through."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> PiiDetector:
    if _start_error is not None:
        raise _start_error
    assert _detector is not None
    return _detector


def _describe() -> tuple[str, list[str]]:
    return _ready().name, list(_start_warnings)


def _find(texts: list[str]) -> list[list[Finding]]:
    return _ready().find_many(texts)


def _toxicity_of(texts: list[str]) -> np.ndarray:
    _ready()
    assert _toxicity is not None, "this pool was started without a toxicity backend"
    return _toxicity.score(texts)


def _score(texts: list[str]) -> tuple[np.ndarray, list[list[Finding]]]:
    return _toxicity_of(texts), _ready().find_many(texts)


@contextlib.contextmanager
def _main_kept_out() -> Iterator[None]:
    """Start processes without the caller's main module: a spawned child runs the parent's
    ``__main__`` again unless it is guarded (a user's script, a Streamlit page, a test runner
    that ran one); the workers need only ``lorawatch.monitors.pii_pool``."""
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        for name in saved:
            setattr(main, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def detector_name(spacy_model: str | None) -> str:
    """``PiiDetector.name`` for a pipeline, known without loading it (a run records it before
    the workers have started)."""
    try:
        installed = bool(spacy_model) and bool(importlib.metadata.distribution(str(spacy_model)))
    except importlib.metadata.PackageNotFoundError:
        installed = False
    return f"presidio:{spacy_model if installed else 'blank-en (patterns only)'}"


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Four keep up with one H200: a worker finds PII in 380 to 490 canary outputs a second and the
# GPU makes about 400 pairs a second; with two the first batch waited for them. Eight start
# beside the run's torch import and slowed it: start-up 10.0-10.2 s against 8.9-9.3 s with
# four, the steady state no faster (benchmarks/README.md, "Fourth round").
MAX_DEFAULT_WORKERS = 4


def default_workers(device: str, cores: float | None = None) -> int:
    """``[risk] pii_workers`` left unset, for a run on ``device`` with ``cores`` CPU cores (the
    usable cores of this process when None): on a GPU, the cores minus two (one for the run's
    own process, one for the system), at least 1 and at most ``MAX_DEFAULT_WORKERS``; on the
    CPU one where there are two cores or more, else 0 (in the run's own process). On 2 CPU
    cores one worker, started beside the run's own imports, had the demo's first batch start
    3 to 4 s sooner and its model no slower (benchmarks/README.md, "Fifth round")."""
    cores = usable_cores() if cores is None else cores
    if not str(device).startswith("cuda"):
        return 1 if cores >= 2 else 0
    return max(1, min(MAX_DEFAULT_WORKERS, int(cores) - 2))


class PiiPool:
    """``PiiDetector(**arguments)`` in ``workers`` processes, with the detector's ``find_many``;
    with ``toxicity`` (``[risk]`` settings naming a backend of ``POOLED_TOXICITY``), the
    backend's scorer in each of them too, and ``score_many``."""

    # Fewer texts than this per process cost more in messages than they save.
    MIN_PART = 16

    def __init__(self, arguments: dict[str, Any], workers: int, toxicity: Any = None) -> None:
        if workers < 1:
            raise ValueError("a PII pool needs at least one worker process")
        if toxicity is not None and toxicity.toxicity_backend not in POOLED_TOXICITY:
            raise ValueError(f"toxicity backend {toxicity.toxicity_backend!r} runs in the caller's process")
        self.workers = workers
        # the backend's name, known without loading it (a run records it before the workers start)
        self.toxicity_name: str | None = toxicity.toxicity_backend if toxicity is not None else None
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(dict(arguments), toxicity),
        )
        with _main_kept_out():
            # one call per worker makes the executor start them all now, not on first use
            self._started: list[Future] | None = [self._executor.submit(_describe) for _ in range(workers)]
        self.name = detector_name(arguments.get("spacy_model"))

    def wait(self) -> None:
        """Wait for the workers to start: a start-up failure is raised here as itself, and
        start-up warnings are given once, in this process."""
        if self._started is None:
            return
        name, messages = self._started[0].result()
        for future in self._started[1:]:
            future.result()
        self._started = None
        for message in messages:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.name = name

    def find_many(self, texts: list[str]) -> list[list[Finding]]:
        """``PiiDetector.find_many`` over the workers, results in the order of ``texts``."""
        found: list[list[Finding]] = []
        for part in self._map(_find, texts):
            found.extend(part)
        return found

    def score_many(self, texts: list[str]) -> tuple[np.ndarray, list[list[Finding]]]:
        """Toxicity and PII of ``texts`` over the workers (a pool started with ``toxicity``),
        in the order of ``texts``: what the scorer and ``find_many`` give in one process."""
        self._check_toxicity()
        scores: list[np.ndarray] = [np.zeros(0)]
        found: list[list[Finding]] = []
        for part_scores, part_found in self._map(_score, texts):
            scores.append(np.asarray(part_scores, dtype=np.float64))
            found.extend(part_found)
        return np.concatenate(scores), found

    def toxicity_many(self, texts: list[str]) -> np.ndarray:
        """Toxicity alone of ``texts`` over the workers, in order (no PII is looked for)."""
        self._check_toxicity()
        return np.concatenate([np.zeros(0), *(np.asarray(p, dtype=np.float64) for p in self._map(_toxicity_of, texts))])

    def _check_toxicity(self) -> None:
        if self.toxicity_name is None:
            raise ValueError("this pool scores no toxicity: start it with the [risk] settings")

    def _map(self, function, texts: list[str]) -> Iterator:
        """``function`` over contiguous parts of ``texts``, one per worker (at least MIN_PART
        texts each), results in order."""
        self.wait()
        if not texts:
            return iter(())
        parts = max(1, min(self.workers, len(texts) // self.MIN_PART))
        size = -(-len(texts) // parts)
        return self._executor.map(function, [texts[i : i + size] for i in range(0, len(texts), size)])

    def close(self) -> None:
        """Stop the worker processes (work not started is dropped)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
