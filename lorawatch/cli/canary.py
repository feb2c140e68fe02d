"""``lorawatch canary``: run canary datasets through the base and its adapters."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, table
from lorawatch.errors import InputError
from lorawatch.models import cuda_likely, preload_libraries
from lorawatch.monitors import canary as service
from lorawatch.monitors import canary_finalize, canary_read
from lorawatch.monitors.canary_ray import connect, preflight
from lorawatch.monitors.gate import run_gate


@click.group()
def canary() -> None:
    """Canary runs: logit and embedding drift of adapters against their base."""


@canary.command("run")
@click.option(
    "--dataset",
    "dataset",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Canary dataset (JSONL). Required unless --resume.",
)
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    help="NAME (its production version, else its newest) or NAME@VERSION; repeatable. Default: every production version.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="auto: CUDA in bf16 when available, else CPU in fp32 (default: canary.device).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Prompts per batch (default: canary.batch_size, else 32 on GPUs and 8 on the CPU).",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Generated tokens per prompt (default: canary.max_new_tokens).",
)
@click.option("--resume", "resume", type=int, default=None, help="Finish an interrupted run instead of starting one.")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="local: this process; ray: Ray workers, one per GPU of the cluster (default: canary.backend).",
)
@click.option(
    "--address",
    default=None,
    help="With --backend ray: the cluster (ray://HEAD:10001, or auto on a node); default: canary.ray.address, "
    "$RAY_ADDRESS, else a local Ray.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="With --backend ray: how many workers (default: one per GPU of the cluster, one without GPUs).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def run(
    app: AppContext,
    dataset,
    adapters,
    device,
    batch_size,
    max_new_tokens,
    resume,
    backend,
    address,
    workers,
    no_progress,
    as_json,
) -> None:
    """Run a canary dataset through the base and each adapter; prints the run id.

    Per (prompt, adapter): teacher-forced KL, JS, top-1 agreement and reference log-prob
    change; greedy outputs of adapter and base; cosine distance of their embeddings. Per
    adapter: monitor results, and KS and MMD tests against the version's baseline run.

    With --backend ray the work runs on Ray workers, one per GPU of the cluster, and this
    process stores the results; a worker that dies is restarted and its batches retried.
    """

    backend = backend or app.settings.canary.backend
    if backend != "ray" and (address or workers):
        raise InputError("--address and --workers apply to --backend ray", fix="add --backend ray, or drop them")
    if backend != "ray":
        summary = _execute(
            app, dataset, adapters, device, batch_size, max_new_tokens, resume, backend, None, no_progress, as_json
        )
    else:
        # Ray prints its workers' errors (a worker died, a task is retried) on stdout: send them to
        # stderr, stdout is the command's own output (one JSON document with --json)
        with contextlib.redirect_stdout(sys.stderr):
            # join (or start) Ray first: a cluster that cannot be reached leaves no run behind
            started_ray = connect(address or app.settings.canary.ray.address)
            try:
                if resume is None:  # what the cluster cannot do is refused before a run is recorded
                    preflight(app.settings, device or app.settings.canary.device, workers)
                summary = _execute(
                    app,
                    dataset,
                    adapters,
                    device,
                    batch_size,
                    max_new_tokens,
                    resume,
                    backend,
                    workers,
                    no_progress,
                    as_json,
                )
            finally:
                if started_ray:
                    # Deferred: Ray is optional (the cluster extra) and slow to import.
                    import ray

                    ray.shutdown()
    emit(summary, as_json, lambda: _summary_text(summary))


def _execute(
    app: AppContext,
    dataset,
    adapters,
    device,
    batch_size,
    max_new_tokens,
    resume,
    backend,
    workers,
    no_progress,
    as_json,
) -> dict:
    db = app.database
    pii_pool = None
    if (backend or app.settings.canary.backend) == "local":
        # PII workers load Presidio and spaCy while this process imports torch and opens the run
        where = device or app.settings.canary.device
        pii_pool = service.start_pii_early(app.settings, where)
        preload_libraries(kernels=cuda_likely(where))  # while the run's files are checked
    try:
        if resume is not None:
            run_id = resume
        else:
            if dataset is None:
                raise InputError("--dataset is required", fix="pass --dataset FILE.jsonl (or --resume RUN)")
            options = service.RunOptions.from_settings(
                app.settings, backend=backend, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens
            )
            run_id = service.create_run(
                db,
                app.settings,
                dataset_path=dataset,
                adapters=list(adapters) or None,
                options=options,
                actor=app.actor,
            )
            if not as_json:
                click.echo(f"canary run {run_id} started", err=True)
        return service.execute_run(
            db,
            app.settings,
            run_id,
            progress=not (no_progress or as_json),
            backend=backend,
            ray_options={"workers": workers},
            resume=resume is not None,
            pii_pool=pii_pool,
        )
    finally:
        if pii_pool is not None:
            pii_pool.close()  # the run's worker closed it already, unless the run never started


def _summary_text(s: dict) -> str:
    lines = [
        f"run {s['run']}  {s['status']}  dataset {s['dataset']} ({s['prompts']} prompts)  base {s['base']}  device {s['device']}"
    ]
    rows = []
    for a in s["adapters"]:
        m = a["monitors"]

        def value(key, m=m):
            item = m.get(key)
            return None if item is None or item["value"] is None else item["value"]

        breached = [k for k, v in m.items() if v["breached"]]
        rows.append(
            {
                "adapter": f"{a['adapter']}@{a['version']}",
                "kl": value("logit_kl"),
                "kl_p95": value("logit_kl_p95"),
                "top1": value("top1_agreement"),
                "cos_dist": value("embedding_cosine"),
                "ks_p": value("logit_kl_ks"),
                "mmd_p": value("embedding_mmd"),
                "breached": ",".join(breached) or "-",
            }
        )
    lines.append(table(rows))
    cut = (s.get("stats") or {}).get("truncated") or []
    if cut:
        parts = ", ".join(sorted({f"{t['prompt_id']} ({t['part']})" for t in cut}))
        lines.append(f"cut to fit the model's context of {cut[0]['context']} tokens: {parts}")
    for finding in s.get("base_findings") or []:
        lines.append(f"base is unsafe (fails no gate): {finding['finding']}")
    return "\n".join(lines)


@canary.command("show")
@click.argument("run_id", type=int)
@json_option
@pass_app
def show(app: AppContext, run_id, as_json) -> None:
    """A run: status, device, and each adapter's monitor results."""

    summary = canary_read.run_summary(app.database, run_id)
    emit(summary, as_json, lambda: _summary_text(summary))


@canary.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@pass_app
def list_runs(app: AppContext, limit, as_json) -> None:
    """The newest canary runs."""

    rows = canary_read.list_runs(app.database, limit)
    emit(rows, as_json, lambda: table(rows))


@canary.command("export")
@click.argument("run_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl", show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Output file (default: stdout for jsonl and csv; required for parquet).",
)
@pass_app
def export(app: AppContext, run_id, fmt, out) -> None:
    """One row per (prompt, adapter): drift scores, outputs side by side, latency."""

    # Deferred: pandas takes ~0.3 s to import; only this export needs it.
    import pandas as pd

    rows = canary_read.export_rows(app.database, run_id)
    frame = pd.DataFrame(rows, columns=canary_read.EXPORT_COLUMNS)
    if fmt == "parquet":
        if out is None:
            raise InputError("parquet needs --out FILE", fix="pass --out run.parquet")
        frame.to_parquet(out, index=False)
    elif fmt == "csv":
        frame.to_csv(out if out else sys.stdout, index=False)
    else:
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        if out:
            Path(out).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    if out:
        click.echo(f"wrote {len(frame)} rows to {out}", err=True)


@canary.command("baseline")
@click.argument("adapter")
@click.option("--version", "version", required=True)
@click.option("--run", "run_id", type=int, required=True, help="The complete run to compare later runs with.")
@json_option
@pass_app
def baseline(app: AppContext, adapter, version, run_id, as_json) -> None:
    """Pin the baseline run a version's later runs on that dataset are compared with."""

    with app.database.session() as session:
        row = canary_finalize.pin_baseline(session, adapter=adapter, version=version, run_id=run_id, actor=app.actor)
        data = {"adapter": adapter, "version": version, "run": row.run_id, "pinned": row.pinned}
    emit(data, as_json, f"baseline of {adapter}@{version} on that dataset: run {run_id} (pinned)")


@click.command()
@click.argument("adapter")
@click.option("--version", "version", required=True, help="The candidate version.")
@click.option(
    "--dataset", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Canary dataset (JSONL)."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None)
@json_option
@pass_app
def gate(app: AppContext, adapter, version, dataset, device, batch_size, max_new_tokens, as_json) -> int:
    """CI/CD promotion gate: exit 0 when the candidate passes, 3 when it fails.

    Runs a canary on the candidate (and on the version in production, when it differs),
    checks every drift monitor against its budget, the risk monitors against the base's on the
    same prompts (a paired one-sided test) and the risk rates against production's, needs at
    least [risk] min_prompts prompts, and records the verdict on the version in the registry.
    The base's own risk above a budget is reported as a finding and fails no gate.
    """

    options = service.RunOptions.from_settings(
        app.settings, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    verdict = run_gate(
        app.database,
        app.settings,
        adapter=adapter,
        version=version,
        dataset_path=dataset,
        options=options,
        actor=app.actor,
        progress=not as_json,
    )

    def text() -> str:
        head = f"gate {adapter}@{version}: {'PASS' if verdict['passed'] else 'FAIL'} (run {verdict['run']}"
        head += f", compared with {verdict['compared_with']})" if verdict["compared_with"] else ")"
        rows = [
            {
                "check": c["check"],
                "value": c["value"],
                "limit": c.get("threshold", c.get("production")),
                "result": "ok" if c["passed"] else "FAIL",
            }
            for c in verdict["checks"]
        ]
        notes = [f"base is unsafe (fails no gate): {f['finding']}" for f in verdict.get("findings") or []]
        return "\n".join([head, table(rows), *notes])

    emit(verdict, as_json, text)
    return 0 if verdict["passed"] else 3
