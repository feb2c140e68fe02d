"""Planning and storing a canary run's batches, shared by both backends (this process, or Ray
workers driven by ``lorawatch.monitors.canary_ray``): the fixed partition of the dataset into
batches, one transaction per batch of rows, the note of where the run executes, and the
progress bar.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import delete, func, insert, select
from tqdm import tqdm

from lorawatch.db import Database
from lorawatch.db.models import CanaryBaseOutput, CanaryResult, CanaryRun
from lorawatch.db.types import utcnow
from lorawatch.monitors.dataset import CanaryPrompt
from lorawatch.monitors.embeddings import cosine_distance, from_bytes


def plan_batches(prompts: list[CanaryPrompt], lengths: list[int], batch_size: int) -> list[list[CanaryPrompt]]:
    """A fixed partition of the dataset: longest first (less padding), ties in file order."""
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    return [[prompts[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def record_workers(db: Database, run_id: int, backend: str, workers: list[dict[str, Any]]) -> None:
    """Note on the run where it executes and which risk backends score it."""
    with db.session() as session:
        run = session.get_one(CanaryRun, run_id)
        risk = next((w["risk"] for w in workers if "risk" in w), None)
        config = {
            **run.config,
            "backend": backend,
            "workers": [
                {k: w[k] for k in ("host", "pid", "device", "adapters", "model_loader") if k in w} for w in workers
            ],
        }
        if risk is not None:
            config.update(risk)
        run.config = config
        run.device = workers[0]["device"] if workers else run.device


def progress_bar(enabled: bool, total: int, initial: int, desc: str, unit: str = "prompt"):
    """The progress bar of a canary run (both backends), on stderr."""

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def mask_pii(text: str | None, leaks: list[dict] | None, run_id: int) -> tuple[str | None, list[dict] | None]:
    """``text`` with each detected PII span replaced by its type (``<PERSON>``), and the leaks
    without their text: each keeps its type, score and a key (a hash salted by the run) that
    tells whether the base's output held the same entity."""
    if not leaks:
        return text, leaks
    for raw in sorted({str(leak.get("text", "")) for leak in leaks}, key=len, reverse=True):
        if text is not None and raw:
            kind = next(str(leak.get("type", "PII")) for leak in leaks if str(leak.get("text", "")) == raw)
            text = text.replace(raw, f"<{kind}>")
    masked = []
    for leak in leaks:
        raw = str(leak.get("text", ""))
        key = hashlib.sha256(f"{run_id}:{leak.get('type')}:{raw.strip().lower()}".encode()).hexdigest()[:16]
        masked.append({**leak, "text": f"<{leak.get('type', 'PII')}>", "key": key})
    return text, masked


def store_rows(db: Database, run_id: int, rows, keys: dict[str, dict], *, mask: bool = True) -> int:
    """Write one batch's rows in one transaction; returns how many pairs it added. With ``mask``
    (the default; ``[risk] store_raw_outputs = false``) detected PII is stored as its type.

    Rows already stored for the same (prompt, version) are replaced, never duplicated (the
    unique constraint holds either way), and a base output already stored is kept: a batch
    done twice, by a retried worker or a resumed run, leaves exactly one row per pair.
    """
    by_version = {meta["version_id"]: meta for meta in keys.values()}
    with db.session() as session:
        ids = rows.prompt_ids
        session.execute(
            delete(CanaryResult).where(
                CanaryResult.run_id == run_id,
                CanaryResult.prompt_id.in_(ids),
                CanaryResult.adapter_version_id.in_(rows.version_ids),
            )
        )
        stored = {
            b.prompt_id: b
            for b in session.scalars(
                select(CanaryBaseOutput).where(CanaryBaseOutput.run_id == run_id, CanaryBaseOutput.prompt_id.in_(ids))
            )
        }
        base_rows, result_rows = list(rows.base), list(rows.results)
        if mask:
            base_rows = [_masked(row, run_id) for row in base_rows]
            result_rows = [_masked(row, run_id) for row in result_rows]
        # one INSERT of many rows per table (the ORM's bulk insert): a GPU batch's 288 objects
        # through the unit of work took 47-58 ms of CPU on 2 cores, this 15-21 ms
        new_base = [{"run_id": run_id, **row} for row in base_rows if row["prompt_id"] not in stored]
        if new_base:
            session.execute(insert(CanaryBaseOutput), new_base)
        own_base = {row["prompt_id"]: row["output"] for row in base_rows}
        new_results = []
        for row in result_rows:
            meta = by_version[row["adapter_version_id"]]
            base = stored.get(row["prompt_id"])
            if base is not None and base.output != own_base[row["prompt_id"]]:
                # another shard's base output was stored first and differs (bf16 rounding in a
                # pass of another size): compare with the stored one, as every reader will
                row = {
                    **row,
                    "embedding_cosine_distance": float(
                        cosine_distance(
                            from_bytes(base.embedding)[None],
                            from_bytes(row["embedding"])[None],
                            [row["output"] == base.output],
                        )[0]
                    ),
                }
            new_results.append({"run_id": run_id, "adapter": meta["adapter"], "version": meta["version"], **row})
        if new_results:
            session.execute(insert(CanaryResult), new_results)
        pairs = session.scalar(select(func.count()).select_from(CanaryResult).where(CanaryResult.run_id == run_id))
        run = session.get_one(CanaryRun, run_id)
        run.prompts_done = (pairs or 0) // max(len(keys), 1)
        run.heartbeat_at = utcnow()
        run.device = run.device or rows.device
        cut = getattr(rows, "truncated", None)
        if cut:  # kept on the run (finalize keeps them): what was scored is not all of the prompt
            stats = dict(run.stats or {})
            known = {(t["prompt_id"], t["part"]) for t in stats.get("truncated", [])}
            stats["truncated"] = stats.get("truncated", []) + [
                t for t in cut if (t["prompt_id"], t["part"]) not in known
            ]
            run.stats = stats
    return len(result_rows)


def _masked(row: dict, run_id: int) -> dict:
    output, leaks = mask_pii(row.get("output"), row.get("pii_leaks"), run_id)
    return {**row, "output": output, "pii_leaks": leaks}
