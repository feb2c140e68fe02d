"""A local canary run's model in a process of its own (``[canary] model_process``).

The run's own process imports the command line, SQLAlchemy and the settings, opens the
database, checks the model files' hashes and stores every batch's rows; the model needs torch,
seconds to import, and then a thread that feeds the device. In one process they take turns
on one interpreter lock: on the H200's host, py-spy ``--gil`` found start-up bound by it, the
thread importing torch holding it 4.8 s, the main thread 3.9 s and the command line's imports
1.0 s (benchmarks/README.md, "Sixth round"). In two processes each has its own: the model
process imports torch (and starts the PII workers) while the run's process does the rest.

The model process holds a ``CanaryWorker``, as a Ray actor does: it is given a
``WorkerSpec``, turns batches into ``BatchRows`` and never touches the database; the run's
process stores each batch as it arrives, so the rows, their order and ``--resume`` are those of
a run in one process. Errors raised there are raised here as themselves. It ends when the run
closes it, or within a second of the run's process dying (a SIGKILLed run leaves no process
behind, its PII workers included).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from lorawatch.models import cuda_likely, hash_triton_installation
from lorawatch.monitors.spawned import end_with_parent, main_kept_out

if TYPE_CHECKING:
    from lorawatch.monitors.canary_worker import CanaryWorker


def wanted(setting: str, device: str) -> bool:
    """Whether a local run on ``device`` runs its model in a process of its own: ``separate``
    always, ``same`` never, ``auto`` where it will likely use a GPU (on the CPU the model's
    threads and the run's share the same few cores, and a second process only adds its start)."""
    return setting == "separate" or (setting == "auto" and cuda_likely(device))


class ModelProcessError(RuntimeError):
    """The model process ended without answering (killed, out of memory, crashed)."""


class ModelProcess:
    """A ``CanaryWorker`` in a spawned process, with the calls a local run makes of one.

    Made as early as the run knows it will need it (the command line makes it before it
    imports the rest of itself: ``lorawatch.cli.early``): the process starts the PII workers of
    ``risk`` (the ``[risk]`` section, None when content risk is off) and imports torch at
    once, then waits for ``start(spec)``. This module imports nothing heavy until then."""

    # processes made in this process (the command line ends faster after one: ``cli.leave``)
    made = 0

    def __init__(self, risk: Any, device: str) -> None:
        ModelProcess.made += 1
        self.made_for = (risk, device)
        context = multiprocessing.get_context("spawn")  # the model process holds CUDA: never fork
        self._conn, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs, risk, device), name="lorawatch-model")
        with main_kept_out():
            self._process.start()
        theirs.close()  # this end only: the pipe reads as closed once the process is gone
        self._worker_timings: dict[str, float] = {}
        self._own_timings: dict[str, float] = {}
        self._info: dict[str, Any] = {}
        self._busy = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, spec) -> ModelProcess:
        """Load the base and adapters of ``spec`` there (its hashes are checked there unless
        the spec says they were, ``WorkerSpec.checked``)."""
        self._info = self._call("start", spec)
        return self

    def describe(self) -> dict[str, Any]:
        """``CanaryWorker.describe`` of the worker there (its pid is the model process's)."""
        return dict(self._info)

    def lengths(self, prompts) -> list[int]:
        """``CanaryWorker.lengths``, computed there (the tokenizer is there)."""
        return self._call("lengths", prompts)

    def process_all(self, batches, version_ids: dict[str, int], sink, overlap: bool = True) -> None:
        """``CanaryWorker.process_all`` there, ``sink(rows)`` here for every batch as it comes,
        in order."""
        self._send(("run", batches, version_ids, overlap))
        self._busy = True
        while True:
            kind, payload = self._receive()
            if kind != "rows":
                self._busy = False
                self._worker_timings = payload
                return
            sink(payload)

    @property
    def timings(self) -> dict[str, float]:
        """The worker's timings (``CanaryWorker.timings``, as of its last answer), with the
        seconds of work done here (``add_time``) added to their stages."""
        merged = dict(self._worker_timings)
        for stage, seconds in self._own_timings.items():
            merged[stage] = merged.get(stage, 0.0) + seconds
        return merged

    def add_time(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` of work done here (storing rows) towards ``stage`` in ``timings``."""
        self._own_timings[stage] = self._own_timings.get(stage, 0.0) + seconds

    def close(self, timeout: float = 60.0) -> None:
        """Stop the process: asked to when it is idle (it stops its PII workers itself); ended at
        once when it never started a worker (the run stopped before: a bad input should not wait
        for torch's import) or is in the middle of a batch (the run stopped on an error here).
        Closing twice is harmless."""
        process = self._process
        if self._conn.closed:
            return
        if process.is_alive() and not self._busy and self._info:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("close",))
            process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        self._conn.close()

    def _call(self, kind: str, *args):
        self._send((kind, *args))
        reply_kind, payload = self._receive()
        assert reply_kind == "ok", reply_kind
        return payload

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError):
            raise self._died() from None

    def _receive(self) -> tuple[str, Any]:
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if message[0] == "error":
            _, error, where = message
            if where and not hasattr(error, "what"):  # a bug there: its traceback, for the report
                error.add_note(f"in the model process (pid {self.pid}):\n{where}")
            raise error
        return message

    def _died(self) -> ModelProcessError:
        self._busy = False
        self._process.join(5)
        code = self._process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}" if code is not None else "stopped answering"
        return ModelProcessError(
            f"the canary run's model process (pid {self.pid}) {how} before it finished: out of memory "
            "(see the system log) or a crash; the run can be resumed with `lorawatch canary run --resume RUN`"
        )


def _serve(conn, risk: Any, device: str) -> None:
    """The model process: the PII workers started and torch imported first, then one request
    at a time from the run's process until it says close."""
    entered = time.time()
    threading.Thread(target=end_with_parent, args=(os.getppid(),), name="watch-parent", daemon=True).start()
    # the run's stdout is its own output (one JSON document with --json): nothing printed here goes there
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker: CanaryWorker | None = None
    pool = None
    status = 1
    try:
        kernels = cuda_likely(device)
        if risk is not None:
            # Deferred: the PII workers first, then torch: the parent waits for neither.
            from lorawatch.monitors.risk_scorers import RiskScorers

            pool = RiskScorers.start_pii(risk, "cuda" if kernels else "cpu")
        started = time.time()
        # Deferred: the point of this process: torch imported here while the run's process opens the run.
        import torch  # noqa: F401

        if kernels:
            hash_triton_installation()
        imported = time.time()
        # Deferred: after torch, which imports what it shares with it (numpy).
        from lorawatch.monitors.canary_worker import CanaryWorker

        while True:
            kind, *args = conn.recv()
            if kind == "close":
                status = 0
                break
            if kind == "start":
                worker = CanaryWorker(args[0], pii_pool=pool)
                pool = None  # the worker's now
                worker.timings.update(model_process_at=entered, torch_import_at=started, torch_imported_at=imported)
                reply: Any = worker.describe()
            elif kind == "lengths":
                assert worker is not None
                reply = worker.lengths(args[0])
            elif kind == "run":
                assert worker is not None
                worker.process_all(args[0], args[1], lambda rows: conn.send(("rows", rows)), overlap=args[2])
                reply = worker.timings
            else:
                raise ValueError(f"the model process was sent {kind!r}")
            conn.send(("ok", reply))
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the run's process may be gone
            conn.send(("error", _portable(exc), "" if hasattr(exc, "what") else traceback.format_exc()))
    finally:
        if worker is not None:
            worker.close()
        if pool is not None:
            pool.close()
        # nothing is left to write: skip the interpreter's teardown of torch and CUDA (a second
        # of the run's finish, which waits for this process to end)
        sys.stderr.flush()
        os._exit(status)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it comes through pickling as itself, else a RuntimeError that says what it was."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return exc
    except Exception:
        pass
    return RuntimeError(f"{type(exc).__name__}: {exc}")
