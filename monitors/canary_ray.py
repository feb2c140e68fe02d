"""The Ray backend of canary runs: Ray actors, one per GPU, each holding the base and a shard
of the run's adapters (all of them, unless the fleet outgrows ``adapters_per_worker``).

Each actor is a ``lorawatch.monitors.canary_worker.CanaryWorker`` (the code the local backend runs in
its own process); it turns batches into rows and never touches the database. This process,
the driver, owns the run: it plans the batches once, spreads each shard's pending batches over
the workers holding it, and writes every batch's rows as they arrive, one
transaction each (``lorawatch.monitors.canary_store.store_rows``), into the shared store (PostgreSQL when the
workers are on other hosts; any store when they are not).

A worker that dies (a lost node, the OOM killer) is restarted by Ray and its unfinished batches
are retried (``max_restarts``, ``max_task_retries``). A batch's rows are written when its result
reaches the driver, and a retried batch replaces rather than adds (unique per run, prompt and
version), so nothing is duplicated. If the driver dies, ``--resume`` picks up the batches not
stored.

Locally (no address) ``ray.init()`` starts a Ray instance on this machine, on its CPUs and
GPUs; ``address`` joins a cluster (``ray://head:10001`` through Ray Client, or ``auto`` on a
node of the cluster).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from lorawatch.db.models import CanaryRun
from lorawatch.db.types import utcnow
from lorawatch.errors import DependencyError, InputError, LoraWatchError
from lorawatch.monitors.canary_store import plan_batches, progress_bar, record_workers, store_rows
from lorawatch.monitors.canary_worker import CanaryWorker
from lorawatch.monitors.pii_pool import default_workers
from lorawatch.settings import Settings

# What workers on any node need: nothing may be fetched from a model hub.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# One Ray run at a time per process: the scheduler runs jobs in threads, and Ray's driver
# state (init, shutdown) is per process.
_RAY_LOCK = threading.Lock()


@dataclass
class RayPlan:
    """How a run is laid out on the cluster: adapter shards, and which shard each worker holds."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    device: str
    shards: list[list[str]]
    shard_of: list[int]  # worker index -> shard index


def import_ray():
    try:
        # Deferred: Ray is optional (the cluster extra) and slow to import.
        import ray
    except ImportError:
        raise DependencyError(
            "the Ray backend needs Ray, which is not installed",
            fix="pip install 'lorawatch[ray]' (or use --backend local)",
        ) from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or start a local Ray); True when this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address and address not in {"auto", "local"}:
        _probe(address)
    try:
        ray.init(
            address=address or None,
            include_dashboard=False,
            runtime_env={"env_vars": WORKER_ENV},
            # workers' output stays in Ray's session logs: stdout is the command's (one JSON document with --json)
            logging_level="WARNING",
            log_to_driver=False,
        )
    except ConnectionError as exc:
        where = address or "$RAY_ADDRESS"
        raise InputError(
            f"cannot reach the Ray cluster at {where}: {exc}",
            fix="check --address (ray://HEAD:10001, or auto on a cluster node) and that the cluster is up",
        ) from None
    return True


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens at (Ray itself retries for minutes)."""

    scheme, _, hostport = address.rpartition("://")
    hostport = hostport.rstrip("/")
    host, _, port = hostport.rpartition(":")
    if scheme == "ray" and not port.isdigit():  # Ray Client's default port
        host, port = hostport, "10001"
    if not host or not port.isdigit():
        raise InputError(
            f"Ray address {address!r} is not HOST:PORT, ray://HOST[:PORT] or auto",
            fix="pass --address ray://HEAD:10001 (Ray Client), or HEAD:6379 or auto from a node of the cluster",
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at {address}: {exc}", fix="check --address and that the cluster is up"
        ) from None


def plan(
    keys: list[str],
    device: str,
    resources: dict[str, float],
    workers: int | None,
    gpus_per_worker: float,
    cpus_per_worker: float,
    adapters_per_worker: int = 64,
) -> RayPlan:
    """Shards, workers and per-worker resources from the cluster's resources.

    Workers: one per ``gpus_per_worker`` GPUs (``cuda``, or ``auto`` on a cluster with GPUs);
    on a cluster without GPUs one (each worker loads every model), unless ``workers`` is given.
    More workers than the cluster has room for are refused: they would never start. Adapters
    are dealt round-robin (in key order) into the fewest shards of at most
    ``adapters_per_worker``, one shard per worker at most; workers are dealt round-robin over
    the shards. A worker holds its shard's adapters and the base, and runs them in one grouped
    pass per batch: few large shards share each base pass over more adapters, while several
    workers of one shard split its batches between them.
    """
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 0.0))
    if device == "cuda" and gpus <= 0:
        raise DependencyError(
            "--device cuda was asked for, but the Ray cluster has no GPUs",
            fix="add GPU nodes to the cluster, or pass --device cpu",
        )
    on_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    capacity = int(gpus // gpus_per_worker) if on_gpu else int(cpus // cpus_per_worker)
    if workers is not None and workers > capacity:
        unit = f"{gpus_per_worker:g} GPU(s)" if on_gpu else f"{cpus_per_worker:g} CPU(s)"
        raise InputError(
            f"{workers} workers of {unit} each were asked for; the Ray cluster has room for {capacity}",
            fix=f"pass --workers {max(capacity, 1)} or fewer, or add nodes to the cluster first",
        )
    if capacity < 1:
        raise DependencyError(
            f"the Ray cluster has no room for one worker ({gpus:g} GPUs, {cpus:g} CPUs)",
            fix="lower canary.ray.gpus_per_worker or cpus_per_worker, or add nodes",
        )
    n = workers if workers is not None else (capacity if on_gpu else 1)
    n_shards = max(1, min(n, -(-len(keys) // max(adapters_per_worker, 1))))
    ordered = sorted(keys, key=lambda k: (len(k), k))  # a0, a1, ..., a10 in numeric order
    shards = [ordered[i::n_shards] for i in range(n_shards)]
    return RayPlan(
        workers=n,
        gpus_per_worker=gpus_per_worker if on_gpu else 0.0,
        cpus_per_worker=cpus_per_worker,
        device="cuda" if on_gpu else "cpu",
        shards=shards,
        shard_of=[i % n_shards for i in range(n)],
    )


def preflight(settings: Settings, device: str, workers: int | None) -> None:
    """Refuse what the connected cluster cannot run (no GPUs for cuda, more workers than fit)."""
    cfg = settings.canary.ray
    plan(
        ["a0"],
        device,
        import_ray().cluster_resources(),
        workers or cfg.workers,
        cfg.gpus_per_worker,
        cfg.cpus_per_worker,
        cfg.adapters_per_worker,
    )


def _deferring(worker_class):
    """``worker_class`` as a Ray actor whose start-up errors (a changed file, a missing path)
    are raised by its first call as themselves, rather than killing the actor, which Ray would
    only restart and then report as a dead actor."""

    class RayWorker(worker_class):
        def __init__(self, *args, **kwargs) -> None:
            self._startup_error = None
            try:
                super().__init__(*args, **kwargs)
            except LoraWatchError as exc:
                self._startup_error = exc

        def _check(self) -> None:
            if self._startup_error is not None:
                raise self._startup_error

        def describe(self):
            self._check()
            return super().describe()

        def lengths(self, prompts):
            self._check()
            return super().lengths(prompts)

        def process(self, prompts, version_ids):
            self._check()
            return super().process(prompts, version_ids)

    RayWorker.__name__ = RayWorker.__qualname__ = worker_class.__name__
    return RayWorker


def start_workers(spec, layout: RayPlan, max_restarts: int, worker_factory=None):
    """One actor per worker, holding its shard; ``worker_factory`` (default ``CanaryWorker``) builds what each holds."""
    ray = import_ray()

    actor = ray.remote(_deferring(worker_factory or CanaryWorker)).options(
        num_gpus=layout.gpus_per_worker,
        num_cpus=layout.cpus_per_worker,
        max_restarts=max_restarts,
        max_task_retries=max_restarts,
        # two batches at once: one on the model while the other's outputs are scored (CanaryWorker.process)
        max_concurrency=2,
    )
    actors = []
    try:
        for s in layout.shard_of:
            actors.append(actor.remote(_worker_spec(spec, layout.shards[s], layout)))
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    return actors


def wait_ready(actors, layout: RayPlan, timeout_s: float) -> list[dict]:
    """Each worker's ``describe()``, once all are placed and loaded; fails after ``timeout_s``."""
    ray = import_ray()
    refs = [a.describe.remote() for a in actors]
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        unit = f"{layout.gpus_per_worker:g} GPU(s)" if layout.gpus_per_worker else f"{layout.cpus_per_worker:g} CPU(s)"
        raise DependencyError(
            f"{len(pending)} of {len(refs)} Ray workers did not start within {timeout_s:g} s "
            f"(each needs {unit}; other jobs may hold them)",
            fix="free or add resources, lower --workers, or raise canary.ray.start_timeout",
        )
    return ray.get(refs)


def _worker_spec(spec, shard: list[str], layout: RayPlan):
    """One actor's spec. On the CPU, where ``[risk] pii_workers`` is unset, an actor's default
    is taken from the CPUs Ray reserves for it (``cpus_per_worker``): Ray pins it to no cores,
    so the default from the cores its process sees would count the whole host's."""
    part = spec.shard(shard)
    part.device = layout.device
    risk = part.risk
    if risk is not None and risk.pii_workers is None and not str(layout.device).startswith("cuda"):
        part.risk = risk.model_copy(update={"pii_workers": default_workers(layout.device, layout.cpus_per_worker)})
    return part


def run_on_ray(db, run_id: int, execution, *, progress: bool, options: dict[str, Any], settings: Settings) -> float:
    """Execute a run's pending batches on Ray workers, storing each batch's rows as they arrive;
    returns the seconds the batches took (workers' start-up excluded)."""

    ray = import_ray()
    cfg = settings.canary.ray
    with (
        _RAY_LOCK,
        contextlib.redirect_stdout(sys.stderr),
    ):  # Ray prints workers' errors on stdout; ours is the caller's
        started_here = connect(options.get("address") or cfg.address)
        try:
            return _run(ray, db, run_id, execution, progress, options, cfg, mask=not settings.risk.store_raw_outputs)
        finally:
            if started_here:
                ray.shutdown()


def _run(ray, db, run_id, ex, progress, options, cfg, *, mask: bool) -> float:
    spec, dataset, keys, version_ids = ex.spec, ex.dataset, ex.keys, ex.version_ids
    actors = []
    try:
        layout = plan(
            list(keys),
            spec.device,
            ray.cluster_resources(),
            options.get("workers") or cfg.workers,
            cfg.gpus_per_worker,
            cfg.cpus_per_worker,
            cfg.adapters_per_worker,
        )
        actors = start_workers(spec, layout, cfg.max_restarts)
        record_workers(db, run_id, "ray", wait_ready(actors, layout, cfg.start_timeout.total_seconds()))
        lengths = ray.get(actors[0].lengths.remote(dataset.prompts))
        batches = plan_batches(dataset.prompts, lengths, ex.batch_size)
        work = [ex.pending(batches, [version_ids[k] for k in shard]) for shard in layout.shards]
        total = len(dataset.prompts) * len(keys)
        remaining = sum(len(b) * len(shard) for shard, shard_work in zip(layout.shards, work) for b in shard_work)
        bar = progress_bar(
            progress,
            total=total,
            initial=total - remaining,
            desc=f"canary run {run_id} on {layout.workers} Ray worker(s)",
            unit="pair",
        )

        def on_rows(rows) -> None:
            bar.update(store_rows(db, run_id, rows, keys, mask=mask))

        def on_wait() -> None:  # the run is alive while batches take long

            with db.session() as session:
                session.get(CanaryRun, run_id).heartbeat_at = utcnow()

        started = time.perf_counter()
        dispatch(
            actors,
            layout.shard_of,
            work,
            version_ids,
            on_rows,
            on_wait=on_wait,
            stall_s=cfg.stall_timeout.total_seconds(),
        )
        bar.close()
        return time.perf_counter() - started
    finally:
        for a in actors:
            ray.kill(a)


def dispatch(
    actors,
    shard_of: list[int],
    work: list[list[list]],
    version_ids: dict[str, int],
    on_rows,
    depth: int = 2,
    on_wait=None,
    stall_s: float | None = None,
    poll_s: float = 60.0,
) -> None:
    """Run every shard's batches (``work[s]``) on the workers that hold that shard, and hand each
    batch's rows to ``on_rows`` as they finish.

    Each worker has ``depth`` batches queued at most, and takes its shard's next batch when one
    returns, so faster workers do more. Ray retries a batch whose worker died on the restarted
    worker; one that fails past its retries raises here, as does ``stall_s`` seconds without a
    finished batch. ``on_wait`` is called every ``poll_s`` seconds of waiting.
    """

    ray = import_ray()
    queues = [deque(batches) for batches in work]
    in_flight: dict[Any, int] = {}

    def feed(i: int) -> None:
        queue = queues[shard_of[i]]
        if queue:
            in_flight[actors[i].process.remote(queue.popleft(), version_ids)] = i

    for i in range(len(actors)):
        for _ in range(depth):
            feed(i)
    last = time.monotonic()
    while in_flight:
        timeout = poll_s if stall_s is None else max(0.0, min(poll_s, stall_s - (time.monotonic() - last)))
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=timeout)
        if not ready:
            if stall_s is not None and time.monotonic() - last >= stall_s:
                raise DependencyError(
                    f"no batch finished in {stall_s:g} s ({len(in_flight)} in flight): a worker hangs "
                    "or cannot be placed again",
                    fix="look at the workers' logs in Ray's session "
                    "directory; --resume the run once the cluster is healthy",
                )
            if on_wait is not None:
                on_wait()
            continue
        last = time.monotonic()
        for ref in ready:
            i = in_flight.pop(ref)
            rows = ray.get(ref)
            feed(i)  # keep the worker busy while the rows are stored
            on_rows(rows)
