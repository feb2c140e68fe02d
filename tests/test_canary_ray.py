"""The Ray backend of canary runs, on a real local Ray instance (on the CPU here).

The same run through ``--backend ray`` (adapters sharded over two Ray workers, each in its own
process) and through the local backend must store the same rows; a worker killed mid-run
must be restarted by Ray and its batches retried, leaving exactly one row per pair.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import pytest
import ray  # noqa: F401  (a dev dependency: `make test` installs it, and these tests never skip)
from sqlalchemy import func, select

from lorawatch.db.models import CanaryResult, CanaryRun, MonitorResult
from lorawatch.monitors import canary_read
from tests.test_canary import LORAWATCH, run

ADAPTERS = ["trained", "zero", "other"]
VOLATILE = {"run_id", "latency_ms", "tokens_per_s", "base_latency_ms"}


def rows_of(db, run_id):
    return sorted(
        ({k: v for k, v in r.items() if k not in VOLATILE} for r in canary_read.export_rows(db, run_id)),
        key=lambda r: (r["adapter_id"], r["prompt_id"]),
    )


def assert_same_rows(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a["adapter_id"], a["prompt_id"]) == (b["adapter_id"], b["prompt_id"])
        for key, value in b.items():
            if isinstance(value, float) and not math.isnan(value):
                assert a[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (key, a["adapter_id"], a["prompt_id"])
            else:
                assert a[key] == value, (key, a["adapter_id"], a["prompt_id"])


def monitor_values(db, run_id):
    with db.session() as s:
        return {
            (r.adapter, r.monitor, r.segment): r.value
            for r in s.scalars(select(MonitorResult).where(MonitorResult.run_id == run_id))
        }


def ray_cli(*args, batch_size=4):
    return [
        str(LORAWATCH),
        "canary",
        "run",
        *[x for a in ADAPTERS for x in ("--adapter", a)],
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--max-new-tokens",
        "12",
        "--backend",
        "ray",
        *args,
    ]


@pytest.mark.slow
def test_the_ray_backend_stores_what_the_local_backend_stores(
    lw_env, db, registered, canary_file, embedder, settings, tmp_path
):
    from lorawatch.settings import load_settings

    # content risk on (workers score toxicity and PII too), two adapters a worker at most (the adapters are sharded)
    (tmp_path / "lorawatch.toml").write_text("[risk]\nenabled = true\n[canary.ray]\nadapters_per_worker = 2\n")
    local = run(db, load_settings(), canary_file, ADAPTERS, embedder)
    done = subprocess.run(
        ray_cli("--dataset", str(canary_file), "--workers", "2", "--json", "--no-progress"),
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "complete" and summary["prompts_done"] == 24
    assert summary["config"]["backend"] == "ray"
    workers = summary["config"]["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
    assert [w["adapters"] for w in workers] == [["a0", "a2"], ["a1"]]
    assert os.getpid() not in {w["pid"] for w in workers}
    assert_same_rows(rows_of(db, summary["run"]), rows_of(db, local["run"]))
    assert all(r["toxicity"] is not None for r in rows_of(db, summary["run"]))
    assert summary["config"]["toxicity_backend"] == local["config"]["toxicity_backend"]
    got, want = monitor_values(db, summary["run"]), monitor_values(db, local["run"])
    assert want.keys() <= got.keys()  # the Ray run has drift tests too: the local run is its baseline
    assert {k for k in got if k[1] in ("logit_kl_ks", "embedding_mmd")} == {
        (a, m, None) for a in ADAPTERS for m in ("logit_kl_ks", "embedding_mmd")
    }
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key


@pytest.mark.slow
def test_a_killed_ray_worker_is_restarted_and_no_pair_is_stored_twice(
    lw_env, db, registered, canary_file, embedder, settings
):
    local = run(db, settings, canary_file, ADAPTERS, embedder, batch_size=1)
    proc = subprocess.Popen(
        ray_cli("--dataset", str(canary_file), "--workers", "2", "--json", "--no-progress", batch_size=1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    victim = run_id = stored_then = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        with db.session() as s:
            latest = s.scalar(
                select(CanaryRun).where(CanaryRun.id != local["run"]).order_by(CanaryRun.id.desc()).limit(1)
            )
            workers = (latest.config.get("workers") if latest is not None else None) or []
            if len(workers) == 2:
                stored = s.scalar(
                    select(func.count()).select_from(CanaryResult).where(CanaryResult.run_id == latest.id)
                )
                if stored >= 3:  # a first batch (one prompt, three adapters) is stored
                    run_id, victim, stored_then = latest.id, workers[0]["pid"], stored
                    break
        time.sleep(0.02)
    assert victim is not None, "the run finished or never started before a worker could be killed"
    # three adapters fit one worker: both hold all of them and split the batches
    assert [w["adapters"] for w in workers] == [["a0", "a1", "a2"]] * 2
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert stored_then <= 72 - 12, "the run was nearly done before the worker was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    summary = json.loads(out)
    assert summary["run"] == run_id and summary["status"] == "complete"
    with db.session() as s:
        pairs = s.execute(
            select(CanaryResult.prompt_id, CanaryResult.adapter_version_id).where(CanaryResult.run_id == run_id)
        ).all()
    assert len(pairs) == len(set(pairs)) == 24 * 3
    assert_same_rows(rows_of(db, run_id), rows_of(db, local["run"]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(") ")[-1][:1] != "Z"


@pytest.mark.slow
def test_a_killed_driver_is_resumed_on_ray_without_duplicates(
    lw_env, db, registered, canary_file, embedder, settings, tmp_path
):
    local = run(db, settings, canary_file, ADAPTERS, embedder, batch_size=1)
    with (tmp_path / "lorawatch.toml").open("a") as f:  # two shards: each resumes its own pending batches
        f.write("[canary.ray]\nadapters_per_worker = 2\n")
    proc = subprocess.Popen(
        ray_cli("--dataset", str(canary_file), "--workers", "2", "--json", "--no-progress", batch_size=1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    run_id = workers = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        with db.session() as s:
            latest = s.scalar(
                select(CanaryRun).where(CanaryRun.id != local["run"]).order_by(CanaryRun.id.desc()).limit(1)
            )
            if latest is not None and latest.config.get("workers"):
                stored = s.scalar(
                    select(func.count()).select_from(CanaryResult).where(CanaryResult.run_id == latest.id)
                )
                if stored >= 3:
                    run_id, workers = latest.id, [w["pid"] for w in latest.config["workers"]]
                    break
        time.sleep(0.02)
    assert run_id is not None, "the run finished or never started before its driver could be killed"
    proc.kill()
    proc.communicate()
    deadline = time.time() + 60  # the driver's local Ray and its workers share its fate
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)
    with db.session() as s:
        assert s.get(CanaryRun, run_id).status == "running"
        stored = s.scalar(select(func.count()).select_from(CanaryResult).where(CanaryResult.run_id == run_id))
    assert 3 <= stored < 72
    resumed = subprocess.run(
        [str(LORAWATCH), "canary", "run", "--resume", str(run_id), "--backend", "ray", "--workers", "2", "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "complete"
    with db.session() as s:
        pairs = s.execute(
            select(CanaryResult.prompt_id, CanaryResult.adapter_version_id).where(CanaryResult.run_id == run_id)
        ).all()
    assert len(pairs) == len(set(pairs)) == 24 * 3
    assert_same_rows(rows_of(db, run_id), rows_of(db, local["run"]))


@pytest.mark.slow
def test_a_file_changed_where_a_worker_runs_fails_the_run_with_the_integrity_error(
    lw_env, db, registered, canary_file, settings
):
    """Workers re-check the hashes of what they read: a mismatch there is the user's IntegrityError
    (exit status 2 from the CLI), not a dead actor that Ray restarts."""
    from lorawatch.errors import IntegrityError
    from lorawatch.monitors import canary
    from lorawatch.monitors.canary_ray import connect, plan, start_workers, wait_ready

    opts = canary.RunOptions(device="cpu", batch_size=4, max_new_tokens=4)
    run_id = canary.create_run(db, settings, dataset_path=canary_file, adapters=["trained"], options=opts, actor="t")
    spec = canary.prepare_execution(db, settings, run_id).spec
    directory, files, label = spec.adapters["a0"]
    name = next(iter(files))
    spec.adapters["a0"] = (directory, {**files, name: {**files[name], "sha256": "0" * 64}}, label)
    started = connect(None)
    try:
        layout = plan(["a0"], "cpu", {"CPU": 2.0}, 1, 1.0, 1.0)
        actors = start_workers(spec, layout, max_restarts=2)
        with pytest.raises(IntegrityError, match=f"{label}: file {name} was changed after registration"):
            wait_ready(actors, layout, 120)
    finally:
        if started:
            ray.shutdown()


def test_shards_follow_the_cluster(lw_env):
    from lorawatch.errors import DependencyError, InputError
    from lorawatch.monitors.canary_ray import plan

    keys = [f"a{i}" for i in range(16)]
    # few adapters: one shard, its batches split over both GPUs (one base pass per batch, not two)
    two_gpus = plan(keys, "auto", {"GPU": 2.0, "CPU": 32.0}, None, 1.0, 1.0)
    assert two_gpus.workers == 2 and two_gpus.device == "cuda" and two_gpus.gpus_per_worker == 1.0
    assert two_gpus.shards == [[f"a{i}" for i in range(16)]] and two_gpus.shard_of == [0, 0]
    # more adapters than a worker holds: dealt round-robin into shards, workers over the shards
    small = plan(keys, "auto", {"GPU": 4.0}, None, 1.0, 1.0, adapters_per_worker=8)
    assert small.shards == [[f"a{i}" for i in range(0, 16, 2)], [f"a{i}" for i in range(1, 16, 2)]]
    assert small.shard_of == [0, 1, 0, 1]
    crowded = plan(keys, "cuda", {"GPU": 2.0}, None, 1.0, 1.0, adapters_per_worker=4)
    assert len(crowded.shards) == 2 and crowded.shard_of == [0, 1]  # never more shards than workers
    # without GPUs one worker by default (each loads every model), more when asked for
    assert plan(keys[:3], "auto", {"CPU": 8.0}, None, 1.0, 2.0).workers == 1
    cpu_only = plan(keys[:3], "auto", {"CPU": 8.0}, 4, 1.0, 2.0, adapters_per_worker=1)
    assert cpu_only.workers == 4 and cpu_only.device == "cpu" and cpu_only.gpus_per_worker == 0.0
    assert cpu_only.shards == [["a0"], ["a1"], ["a2"]] and cpu_only.shard_of == [0, 1, 2, 0]
    assert plan(keys, "cpu", {"GPU": 8.0, "CPU": 4.0}, 3, 1.0, 1.0, 4).shards[2] == ["a2", "a5", "a8", "a11", "a14"]
    with pytest.raises(InputError, match="has room for 2"):  # they would never start
        plan(keys, "auto", {"GPU": 2.0}, 4, 1.0, 1.0)
    with pytest.raises(DependencyError, match="no room for one worker"):
        plan(keys, "auto", {"GPU": 1.0}, None, 2.0, 1.0)
    with pytest.raises(DependencyError, match="no GPUs"):
        plan(keys, "cuda", {"CPU": 8.0}, None, 1.0, 1.0)


def test_ray_options_without_the_ray_backend_and_an_unreachable_cluster_are_refused(
    lw_env, db, registered, canary_file
):
    done = subprocess.run(
        [str(LORAWATCH), "canary", "run", "--dataset", str(canary_file), "--workers", "2"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert done.returncode == 2 and "--backend ray" in done.stderr
    import socket

    with socket.socket() as sock:  # a port nothing listens at
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [
            str(LORAWATCH),
            "canary",
            "run",
            "--dataset",
            str(canary_file),
            "--backend",
            "ray",
            "--address",
            f"ray://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )
    assert done.returncode == 2 and f"cannot reach the Ray cluster at ray://127.0.0.1:{port}" in done.stderr
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(CanaryRun)) == 0


def test_a_shard_whose_base_output_differs_is_compared_with_the_stored_one(
    lw_env, db, registered, canary_file, settings
):
    """Two shards each generate the base's output; the first one stored is kept, and the second
    shard's embedding distances are computed against it, not against its own."""
    import numpy as np

    from lorawatch.monitors import canary, canary_store
    from lorawatch.monitors.canary_worker import BatchRows
    from lorawatch.monitors.embeddings import to_bytes

    opts = canary.RunOptions(device="cpu", batch_size=4, max_new_tokens=4)
    run_id = canary.create_run(
        db,
        settings,
        dataset_path=canary_file,
        adapters=["trained", "zero"],
        options=opts,
        actor="t",
        verify_hashes=False,
    )
    with db.session() as s:
        keys = {a["key"]: a for a in s.get(CanaryRun, run_id).adapters}
    e = np.eye(3, dtype=np.float32)

    def rows(key, base_output, base_vec, output, vec):
        base = dict(
            prompt_id="p1",
            segment="s",
            output=base_output,
            new_tokens=2,
            latency_ms=1.0,
            embedding=to_bytes(base_vec),
            toxicity=None,
            pii_leaks=None,
        )
        result = dict(
            prompt_id="p1",
            segment="s",
            adapter_version_id=keys[key]["version_id"],
            scored_tokens=3,
            scored_on="reference",
            kl_mean=0.1,
            kl_max=0.2,
            js_mean=0.01,
            top1_agreement=1.0,
            ref_logprob_base=-1.0,
            ref_logprob_adapted=-1.0,
            ref_logprob_delta=0.0,
            output=output,
            new_tokens=2,
            latency_ms=1.0,
            tokens_per_s=2.0,
            embedding_cosine_distance=0.0,
            embedding=to_bytes(vec),
            toxicity=None,
            pii_leaks=None,
        )
        return BatchRows(
            prompt_ids=["p1"], version_ids=[keys[key]["version_id"]], base=[base], results=[result], device="cpu"
        )

    assert canary_store.store_rows(db, run_id, rows("a0", "hello there", e[0], "hello there", e[0]), keys) == 1
    # the second shard's base said "hello world", like its adapter: its own distance would be 0
    assert canary_store.store_rows(db, run_id, rows("a1", "hello world", e[1], "hello world", e[1]), keys) == 1
    with db.session() as s:
        (base,) = s.scalars(select(canary.CanaryBaseOutput).where(canary.CanaryBaseOutput.run_id == run_id)).all()
        stored = {
            r.adapter_version_id: r.embedding_cosine_distance
            for r in s.scalars(select(CanaryResult).where(CanaryResult.run_id == run_id))
        }
        assert base.output == "hello there" and s.get(CanaryRun, run_id).prompts_done == 1
    assert stored[keys["a0"]["version_id"]] == 0.0
    assert stored[keys["a1"]["version_id"]] == pytest.approx(1.0)  # orthogonal to the stored base's embedding


def test_a_cpu_actor_finds_pii_on_a_process_of_its_own_only_with_two_cpus(lw_env):
    """Ray reserves CPUs for an actor without pinning it to them: an actor's PII workers follow
    ``cpus_per_worker``, not the host's cores, where ``[risk] pii_workers`` is unset."""
    from lorawatch.monitors.canary_ray import _worker_spec, plan
    from lorawatch.monitors.canary_worker import WorkerSpec
    from lorawatch.settings import RiskSettings

    keys = ["a0", "a1"]
    spec = WorkerSpec("base", None, {k: (k, None, k) for k in keys}, None, risk=RiskSettings())
    for cpus, workers in ((1.0, 0), (2.0, 1), (4.0, 1)):
        layout = plan(keys, "cpu", {"CPU": 8.0}, None, 1.0, cpus)
        assert _worker_spec(spec, keys, layout).risk.pii_workers == workers
    assert spec.risk.pii_workers is None  # the run's own settings are left as they were
    asked = WorkerSpec("base", None, {k: (k, None, k) for k in keys}, None, risk=RiskSettings(pii_workers=3))
    assert _worker_spec(asked, keys, plan(keys, "cpu", {"CPU": 8.0}, None, 1.0, 1.0)).risk.pii_workers == 3
    on_gpu = _worker_spec(spec, keys, plan(keys, "auto", {"GPU": 1.0, "CPU": 8.0}, None, 1.0, 1.0))
    assert on_gpu.device == "cuda" and on_gpu.risk.pii_workers is None  # the GPU default, on the actor's host
    off = WorkerSpec("base", None, {k: (k, None, k) for k in keys}, None, risk=None)
    assert _worker_spec(off, keys, plan(keys, "cpu", {"CPU": 8.0}, None, 1.0, 2.0)).risk is None
