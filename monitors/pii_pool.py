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
"""

from __future__ import annotations

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

from lorawatch.monitors.pii import Finding, PiiDetector

# The detector of a pool's worker process, built once by ``_start``, or why it could not be.
_detector: PiiDetector | None = None
_start_error: BaseException | None = None
_start_warnings: list[str] = []


# One thread per worker process: the pool has a process per core, and numerical libraries
# that each start a thread per core (OpenMP, BLAS, torch, which thinc imports) oversubscribe them.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _start(arguments: dict[str, Any]) -> None:
    global _detector
    for name in _ONE_THREAD:  # before the detector imports the libraries that read them
        os.environ[name] = "1"
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="watch-parent", daemon=True).start()
    global _start_error
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _detector = PiiDetector(**arguments)
        _start_warnings[:] = [str(w.message) for w in caught]
    except Exception as exc:  # raised by the first call, in the parent, as itself
        _start_error = exc


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


def default_workers(device: str) -> int:
    """``[risk] pii_workers`` left unset: on a GPU, the usable cores minus two (one for the
    run's own process, one for the system), at least 1 and at most 8; on the CPU 0, since the
    model's own threads take the cores."""
    if not str(device).startswith("cuda"):
        return 0
    return max(1, min(8, usable_cores() - 2))


class PiiPool:
    """``PiiDetector(**arguments)`` in ``workers`` processes, with the detector's ``find_many``."""

    # Fewer texts than this per process cost more in messages than they save.
    MIN_PART = 16

    def __init__(self, arguments: dict[str, Any], workers: int) -> None:
        if workers < 1:
            raise ValueError("a PII pool needs at least one worker process")
        self.workers = workers
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(dict(arguments),),
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
        self.wait()
        if not texts:
            return []
        parts = max(1, min(self.workers, len(texts) // self.MIN_PART))
        size = -(-len(texts) // parts)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        found: list[list[Finding]] = []
        for part in self._executor.map(_find, chunks):
            found.extend(part)
        return found

    def close(self) -> None:
        """Stop the worker processes (work not started is dropped)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
