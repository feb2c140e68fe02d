"""Canary runs: the platform's main job.

``create_run`` validates the dataset and the adapters (hashes re-checked) and records a run;
``execute_run`` scores every (prompt, adapter) pair batch by batch, committing each batch's
rows in one transaction, then ``finalize_run`` stores the per-adapter monitor results and the
drift tests against each version's baseline and marks the run complete. A run killed at any
point never looks complete; ``execute_run`` on it again (``--resume``) skips the batches
already stored and gives the same results as an uninterrupted run, because batches are a
fixed, deterministic partition of the dataset.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import (
    AdapterRecord,
    AdapterVersion,
    BaseModelRecord,
    CanaryBaseOutput,
    CanaryDatasetRecord,
    CanaryResult,
    CanaryRun,
)
from lorawatch.db.types import utcnow
from lorawatch.durations import format_duration
from lorawatch.errors import ConflictError, InputError, NotFoundError
from lorawatch.models import cuda_likely, pick_device
from lorawatch.monitors.canary_finalize import finalize_run
from lorawatch.monitors.canary_ray import run_on_ray
from lorawatch.monitors.canary_store import plan_batches, progress_bar, record_workers, store_rows
from lorawatch.monitors.canary_worker import CanaryWorker, WorkerSpec
from lorawatch.monitors.dataset import CanaryDataset, CanaryPrompt, load_dataset
from lorawatch.monitors.pii_pool import PiiPool
from lorawatch.monitors.risk_scorers import RiskScorers
from lorawatch.registry import files as registry_files
from lorawatch.registry.aliases import aliased_versions, resolve_alias
from lorawatch.registry.versions import get_adapter, get_version
from lorawatch.settings import Settings


@dataclass
class RunOptions:
    """How a run executes."""

    device: str = "auto"
    batch_size: int = 8
    max_new_tokens: int = 48

    @classmethod
    def from_settings(cls, settings: Settings, *, backend: str | None = None, **overrides) -> RunOptions:
        """Options from ``[canary]`` settings, with non-None overrides. Without a batch size:
        32 prompts where the run goes to GPUs (``cuda``; ``auto`` with a local GPU or on the Ray
        backend, which is meant for GPU fleets: a Ray cluster without GPUs gets 32 too), whose
        grouped pass and fused kernels need rows to be fast (benchmarks/README.md), else 8."""
        values = {
            "device": settings.canary.device,
            "batch_size": settings.canary.batch_size,
            "max_new_tokens": settings.canary.max_new_tokens,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["batch_size"] is None:
            device, backend = values["device"], backend or settings.canary.backend
            gpu = device == "cuda" or (
                device == "auto" and (backend == "ray" or pick_device("auto").device.type == "cuda")
            )
            values["batch_size"] = GPU_BATCH_SIZE if gpu else CPU_BATCH_SIZE
        return cls(**values)


GPU_BATCH_SIZE, CPU_BATCH_SIZE = 32, 8


# ---------------------------------------------------------------- choosing what to run


def production_specs_by_base(session: Session) -> dict[str, list[str]]:
    """``name@version`` of every version a production alias points at (any tenant), per base model."""
    by_base: dict[str, list[str]] = {}
    for version in aliased_versions(session, "production", tenant=None):
        if version.state == "archived":
            continue
        spec = f"{version.adapter.name}@{version.version}"
        specs = by_base.setdefault(version.adapter.base_model.name, [])
        if spec not in specs:
            specs.append(spec)
    return by_base


def select_versions(session: Session, specs: list[str] | None) -> list[AdapterVersion]:
    """The versions a run covers: ``name`` (its production version, else its newest) or ``name@version``.

    Without specs: every adapter's production version (adapters without one are skipped).
    """
    if specs:
        chosen = []
        for spec in specs:
            name, _, version = spec.partition("@")
            if version:
                chosen.append(get_version(session, name, version))
            else:
                chosen.append(_default_version(session, get_adapter(session, name)))
    else:
        chosen = aliased_versions(session, "production")
        if not chosen:
            raise InputError("no adapter has a production version", fix="pass --adapter NAME, or promote one first")
    unique: dict[int, AdapterVersion] = {v.id: v for v in chosen}
    bases = {v.adapter.base_model_id for v in unique.values()}
    if len(bases) > 1:
        names = sorted({v.adapter.base_model.name for v in unique.values()})
        raise InputError(
            f"the adapters are on different base models ({', '.join(names)})",
            fix="run once per base model, choosing its adapters with --adapter",
        )
    archived = [f"{v.adapter.name}@{v.version}" for v in unique.values() if v.state == "archived"]
    if archived:
        raise ConflictError(
            f"archived version(s): {', '.join(archived)}", fix="restore them first (lorawatch registry restore)"
        )
    return list(unique.values())


def _default_version(session: Session, adapter: AdapterRecord) -> AdapterVersion:
    production = resolve_alias(session, adapter.name, "production")
    if production is not None:
        return production
    if not adapter.versions:
        raise NotFoundError(f'adapter "{adapter.name}" has no versions', fix="register one")
    return adapter.versions[-1]


def _check_positions(base: BaseModelRecord, max_new_tokens: int) -> None:
    """Refuse a generation length the base model has no positions for (before a run is recorded)."""
    path = Path(base.path)
    config_file = (path.parent if path.is_file() else path) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a GGUF file or a config we cannot read: the model loader decides
    positions = config.get("max_position_embeddings") or config.get("n_positions") if isinstance(config, dict) else None
    if isinstance(positions, int) and max_new_tokens >= positions:
        raise InputError(
            f"--max-new-tokens {max_new_tokens} leaves no room: base model {base.name} has {positions} positions",
            fix=f"pass --max-new-tokens below {positions} (prompts need room too)",
        )


DIGESTS = Path("cache") / "verified-files.json"  # in the home: registry_files.DigestMemory


def digest_memory(settings: Settings) -> registry_files.DigestMemory | None:
    """The digests earlier runs verified, unless ``[canary] rehash = "always"``."""
    if settings.canary.rehash == "always":
        return None
    return registry_files.DigestMemory(settings.home_dir / DIGESTS)


def _file_checks(base: BaseModelRecord, versions: list[AdapterVersion]) -> list[tuple[Path, dict, str]]:
    """What re-checking a run's files means: (directory, recorded manifest, label) for the base
    and each version; an archived version is refused (its files are not in the store)."""
    path = Path(base.path)
    checks = [(path.parent if path.is_file() else path, dict(base.files or {}), f"base model {base.name}")]
    for v in versions:
        if v.state == "archived":
            raise ConflictError(
                f"{v.adapter.name}@{v.version} is archived",
                fix=f"run `lorawatch registry restore {v.adapter.name} --version {v.version}`",
            )
        checks.append((Path(v.path), dict(v.files), f"{v.adapter.name}@{v.version}"))
    return checks


# ---------------------------------------------------------------- runs


def create_run(
    db: Database,
    settings: Settings,
    *,
    dataset_path: Path,
    adapters: list[str] | None,
    options: RunOptions,
    actor: str,
    verify_hashes: bool = True,
) -> int:
    """Validate everything and record a new run; nothing is stored when anything is wrong.

    Hashes are re-checked between two short transactions, never inside one (re-reading a large
    base model must not hold the database's write lock); the checked hashes are remembered by
    this process, so executing the run right after does not read the files again."""
    dataset = load_dataset(dataset_path)
    with db.session() as session:
        versions = select_versions(session, adapters)
        checks = _file_checks(versions[0].adapter.base_model, versions)
        version_ids = [v.id for v in versions]
        _check_positions(versions[0].adapter.base_model, options.max_new_tokens)
    if verify_hashes:
        memory = digest_memory(settings)  # read once for the base and every adapter
        for root, manifest, label in checks:
            registry_files.verify_files(root, manifest, label, memory)
    with db.session() as session:
        versions = [session.get(AdapterVersion, i) for i in version_ids]
        if any(v is None or v.state == "archived" for v in versions):
            raise ConflictError("a version changed state while the run was being checked", fix="start the run again")
        base = versions[0].adapter.base_model
        now = utcnow()
        for v in versions:
            v.last_used_at = now
        record = _dataset_record(session, dataset)
        run = CanaryRun(
            dataset_id=record.id,
            base_model_id=base.id,
            status="running",
            started_by=actor,
            adapters=[
                {"key": f"a{i}", "adapter": v.adapter.name, "version": v.version, "version_id": v.id}
                for i, v in enumerate(sorted(versions, key=lambda v: (v.adapter.name, v.version)))
            ],
            config={
                "device": options.device,
                "batch_size": options.batch_size,
                "max_new_tokens": options.max_new_tokens,
                "verify_hashes": verify_hashes,
            },
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        session.add(run)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="canary.start",
            object_type="canary_run",
            object_id=str(run.id),
            details={"dataset": dataset.name, "sha256": dataset.sha256, "adapters": run.adapters},
        )
        return run.id


def _dataset_record(session: Session, dataset: CanaryDataset) -> CanaryDatasetRecord:
    record = session.scalar(select(CanaryDatasetRecord).where(CanaryDatasetRecord.sha256 == dataset.sha256))
    if record is None:
        record = CanaryDatasetRecord(
            sha256=dataset.sha256,
            name=dataset.name,
            path=str(dataset.path.resolve()),
            n_prompts=len(dataset.prompts),
            segments=dataset.segments,
        )
        session.add(record)
        session.flush()
    else:
        record.path = str(dataset.path.resolve())
    return record


def start_pii_early(settings: Settings, device: str) -> PiiPool | None:
    """The PII worker processes a local run on ``device`` will use, started now, before the run
    imports torch and opens its database: they take seconds to load Presidio and spaCy, which
    then overlap the run's own start-up (hand the pool to ``execute_run``). None where the run
    finds PII in its own process (content risk off, ``[risk] pii_workers = 0``, a single core)."""
    risk = settings.risk
    if not risk.enabled:
        return None
    return RiskScorers.start_pii(risk, "cuda" if cuda_likely(device) else "cpu")


def execute_run(
    db: Database,
    settings: Settings,
    run_id: int,
    *,
    progress: bool = True,
    embedder=None,
    models=None,
    risk=None,
    backend: str | None = None,
    ray_options: dict[str, Any] | None = None,
    resume: bool = False,
    pii_pool: PiiPool | None = None,
) -> dict[str, Any]:
    """Score every (prompt, adapter) pair not yet stored, then finalise; returns the run's summary.

    ``pii_pool``: PII workers started early (``start_pii_early``) for the local backend, which
    then owns them; the caller closes them only if this raises before the run starts (closing
    twice is harmless).

    ``resume``: the run was started earlier (``--resume``): refused while another process keeps
    its heartbeat fresh.

    ``backend``: ``local`` (this process; the default from ``canary.backend``) or ``ray``
    (Ray workers, one per GPU, ``lorawatch.monitors.canary_ray``); both run the same worker code and
    store the same rows, one transaction per batch (and shard).
    """

    backend = backend or settings.canary.backend
    if backend not in {"local", "ray"}:
        raise InputError(f"backend {backend!r} is not one of local, ray", fix="pass --backend local|ray")
    if backend == "ray" and any(x is not None for x in (models, embedder, risk)):
        raise ValueError("models, embedder and risk are built by each Ray worker; pass them only with backend='local'")
    ex = prepare_execution(db, settings, run_id, resume=resume)
    spec, dataset, keys, version_ids = ex.spec, ex.dataset, ex.keys, ex.version_ids
    timings: dict[str, float] = {}
    try:
        if not ex.pending([dataset.prompts], list(version_ids.values())):
            seconds = None  # every pair is stored (the run stopped while finishing): nothing to load
        elif backend == "ray":
            seconds = run_on_ray(db, run_id, ex, progress=progress, options=ray_options or {}, settings=settings)
        else:
            # hashes were re-checked above, in this very process
            worker = CanaryWorker(spec.checked(), models=models, embedder=embedder, risk=risk, pii_pool=pii_pool)
            try:
                record_workers(db, run_id, "local", [worker.describe()])
                batches = plan_batches(dataset.prompts, worker.lengths(dataset.prompts), ex.batch_size)
                pending = ex.pending(batches, list(version_ids.values()))
                bar = progress_bar(
                    progress,
                    total=len(dataset.prompts),
                    initial=len(dataset.prompts) - sum(map(len, pending)),
                    desc=f"canary run {run_id}",
                )

                def store(rows) -> None:
                    began = time.perf_counter()
                    store_rows(db, run_id, rows, keys, mask=not settings.risk.store_raw_outputs)
                    worker.add_time("store", time.perf_counter() - began)
                    bar.update(len(rows.prompt_ids))

                started = time.perf_counter()
                worker.process_all(pending, version_ids, store, overlap=settings.canary.overlap)
                bar.close()
                seconds = time.perf_counter() - started
                timings = worker.timings
            finally:
                worker.close()
        return finalize_run(db, settings, run_id, seconds=seconds, timings=timings)
    except BaseException as exc:
        with db.session() as session:
            run = session.get(CanaryRun, run_id)
            run.status = "failed"
            run.error = f"{type(exc).__name__}: {exc}"[:2000]
        raise


def _startable(session: Session, run_id: int, settings: Settings, *, resume: bool) -> CanaryRun:
    """The run, if it may start now: not complete and, when resuming, not alive elsewhere."""
    run = session.get(CanaryRun, run_id)
    if run is None:
        raise NotFoundError(f"no canary run {run_id}", fix="list runs with `lorawatch canary list`")
    if run.status == "complete":
        raise ConflictError(f"canary run {run_id} is complete already", fix="start a new run instead")
    stale = settings.alerts.stale_run_after
    if resume and run.status == "running" and run.heartbeat_at > utcnow() - stale and _may_live(run):
        age = (utcnow() - run.heartbeat_at).total_seconds()
        raise ConflictError(
            f"canary run {run_id} is alive: {run.host or 'a host'} (pid {run.pid}) renewed its heartbeat {age:.0f} s ago",
            fix=f"let it finish, or resume it after {format_duration(stale)} without a heartbeat (a dead run goes stale)",
        )
    return run


def _may_live(run: CanaryRun) -> bool:
    """False only when the run's process is known dead: it ran on this host and its pid is gone."""
    if run.host != socket.gethostname() or not run.pid:
        return True
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds that pid now
        return True
    return not _zombie(run.pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] == "Z"
    except OSError:
        return False


@dataclass
class Execution:
    """What executing a run needs, read once when it (re)starts."""

    spec: Any  # monitors.canary_worker.WorkerSpec
    dataset: CanaryDataset
    keys: dict[str, dict]  # adapter key -> the run's entry (adapter, version, version_id)
    batch_size: int
    stored: set[tuple[str, int]]  # (prompt id, version id) pairs already stored
    based: set[str]  # prompt ids whose base output is stored

    @property
    def version_ids(self) -> dict[str, int]:
        return {key: meta["version_id"] for key, meta in self.keys.items()}

    def pending(self, batches: list[list[CanaryPrompt]], version_ids: list[int]) -> list[list[CanaryPrompt]]:
        """The batches with some pair of these versions (or the base output) not stored yet."""
        return [
            b
            for b in batches
            if not all(p.id in self.based and all((p.id, v) in self.stored for v in version_ids) for p in b)
        ]


def prepare_execution(db: Database, settings: Settings, run_id: int, *, resume: bool = False) -> Execution:
    """Check a run can (re)start, re-check the hashes, mark it running; what executing it needs.

    With ``resume`` (``canary run --resume``) a run whose heartbeat is fresh is refused: another
    process is working on it. Hashes are re-checked outside any transaction."""
    with db.session() as session:
        run = _startable(session, run_id, settings, resume=resume)
        record = session.get(CanaryDatasetRecord, run.dataset_id)
        assert record is not None
        dataset_path, dataset_sha = record.path, record.sha256
        base = session.get(BaseModelRecord, run.base_model_id)
        assert base is not None
        versions = [session.get(AdapterVersion, a["version_id"]) for a in run.adapters]
        checks = _file_checks(base, [v for v in versions if v is not None])
        verify = run.config.get("verify_hashes", True)
    dataset = load_dataset(dataset_path)
    if dataset.sha256 != dataset_sha:
        raise ConflictError(
            f"the dataset file changed since run {run_id} started",
            where=dataset_path,
            fix="restore the file, or start a new run on the new dataset",
        )
    if verify:
        memory = digest_memory(settings)  # read once for the base and every adapter
        for root, manifest, label in checks:
            registry_files.verify_files(root, manifest, label, memory)
    with db.session() as session:
        run = _startable(session, run_id, settings, resume=resume)
        base = session.get(BaseModelRecord, run.base_model_id)
        assert base is not None
        adapters = {}
        for a in run.adapters:
            version = session.get(AdapterVersion, a["version_id"])
            assert version is not None
            label = f"{a['adapter']}@{a['version']}"
            # the hashes travel with the spec: a worker on another host re-checks what it reads
            adapters[a["key"]] = (str(version.path), dict(version.files) if verify else None, label)
            version.last_used_at = utcnow()
        run.status, run.error, run.pid, run.host, run.heartbeat_at = (
            "running",
            None,
            os.getpid(),
            socket.gethostname(),
            utcnow(),
        )
        spec = WorkerSpec(
            base_path=base.path,
            base_hub=base.hub_id,
            adapters=adapters,
            base_files=dict(base.files) if verify and base.files is not None else None,
            device=run.config["device"],
            max_new_tokens=run.config["max_new_tokens"],
            fast_decode=settings.canary.fast_decode,
            direct_load=settings.canary.model_loader == "auto",
            embedding_model=settings.canary.embedding_model,
            risk=settings.risk if settings.risk.enabled else None,
            kernel_cache=str(settings.home_dir / "cache"),
            digests=str(settings.home_dir / DIGESTS) if settings.canary.rehash == "changed" else None,
        )
        stored = {
            tuple(row)
            for row in session.execute(
                select(CanaryResult.prompt_id, CanaryResult.adapter_version_id).where(CanaryResult.run_id == run_id)
            )
        }
        based = set(session.scalars(select(CanaryBaseOutput.prompt_id).where(CanaryBaseOutput.run_id == run_id)))
        return Execution(
            spec=spec,
            dataset=dataset,
            keys={a["key"]: a for a in run.adapters},
            batch_size=int(run.config["batch_size"]),
            stored=stored,
            based=based,
        )
