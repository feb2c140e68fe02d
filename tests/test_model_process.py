"""A local canary run's model in a process of its own (``[canary] model_process``): the same rows
as in the run's own process, errors raised as themselves, nothing left behind when either
process dies."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from lorawatch.db.models import CanaryRun
from lorawatch.errors import LoraWatchError
from lorawatch.monitors import canary_read
from tests.test_pipeline import _running, still_running

VOLATILE = {"run_id", "latency_ms", "tokens_per_s", "base_latency_ms"}


def _settings(tmp_path, text: str):
    from lorawatch.settings import load_settings

    (tmp_path / "lorawatch.toml").write_text(text)
    return load_settings()


def _run(db, settings, canary_file, adapters, verify=True):
    from lorawatch.monitors import canary

    options = canary.RunOptions(device="cpu", batch_size=4, max_new_tokens=12)
    run_id = canary.create_run(
        db, settings, dataset_path=canary_file, adapters=adapters, options=options, actor="t", verify_hashes=verify
    )
    return run_id, canary.execute_run(db, settings, run_id, progress=False)


def _stable(db, run_id):
    rows = ({k: v for k, v in r.items() if k not in VOLATILE} for r in canary_read.export_rows(db, run_id))
    return sorted(rows, key=lambda r: (r["adapter_id"], r["prompt_id"]))


def _worker_pids(db, run_id) -> list[int]:
    with db.session() as s:
        return [w["pid"] for w in s.get(CanaryRun, run_id).config["workers"]]


def test_a_model_process_stores_the_rows_a_run_in_one_process_stores(db, registered, canary_file, tmp_path):
    """Content risk on (a PII worker started by the model process, toxicity scored there too)."""
    risk = "[risk]\nenabled = true\npii_workers = 1\n"
    same = _settings(tmp_path, f'[canary]\nmodel_process = "same"\n{risk}')
    one, _ = _run(db, same, canary_file, ["trained", "other"])
    separate = _settings(tmp_path, f'[canary]\nmodel_process = "separate"\n{risk}')
    two, summary = _run(db, separate, canary_file, ["trained", "other"])
    assert summary["status"] == "complete"
    assert _worker_pids(db, one) == [os.getpid()]
    assert _worker_pids(db, two) != [os.getpid()]
    rows = _stable(db, two)
    assert len(rows) == 48 and rows == _stable(db, one)
    assert all(r["toxicity"] is not None and r["base_toxicity"] is not None for r in rows)  # scored there
    assert multiprocessing.active_children() == []


def test_an_error_in_the_model_process_is_raised_as_itself_and_fails_the_run(db, registered, canary_file, tmp_path):
    from lorawatch.registry import versions as registry_versions

    settings = _settings(tmp_path, '[canary]\nmodel_process = "separate"\n[risk]\nenabled = false\n')
    with db.session() as s:
        version = registry_versions.get_version(s, "other", "v1")
        broken = Path(version.path) / "adapter_model.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(LoraWatchError) as caught:
        _run(db, settings, canary_file, ["other"], verify=False)  # the hashes would have caught it here
    assert "adapter_model.safetensors" in str(caught.value)
    with db.session() as s:
        run = s.scalar(select(CanaryRun).order_by(CanaryRun.id.desc()).limit(1))
        assert run.status == "failed" and type(caught.value).__name__ in run.error
    assert multiprocessing.active_children() == []


def test_a_killed_model_process_is_reported_and_nothing_waits_for_it(db, registered, canary_file, settings):
    from lorawatch.monitors import canary
    from lorawatch.monitors.canary_child import ModelProcess, ModelProcessError

    options = canary.RunOptions(device="cpu", batch_size=4, max_new_tokens=12)
    run_id = canary.create_run(db, settings, dataset_path=canary_file, adapters=["trained"], options=options, actor="t")
    ex = canary.prepare_execution(db, settings, run_id)
    process = ModelProcess(None, "cpu").start(ex.spec.checked())
    got: list[list[str]] = []

    def sink(rows) -> None:
        got.append(rows.prompt_ids)
        os.kill(process.pid, signal.SIGKILL)

    batches = [ex.dataset.prompts[i : i + 4] for i in range(0, 24, 4)]
    with pytest.raises(ModelProcessError, match=r"model process \(pid \d+\) was killed by SIGKILL"):
        process.process_all(batches, ex.version_ids, sink)
    process.close()
    assert len(got) == 1 and got[0] == [p.id for p in batches[0]]
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX signals")
def test_the_model_process_and_its_pii_workers_end_with_the_run(tmp_path):
    """A run killed with SIGKILL leaves neither its model process nor that one's PII workers."""
    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys, time\n"
        "from lorawatch.monitors.canary_child import ModelProcess\n"
        "from lorawatch.settings import RiskSettings\n"
        "if __name__ == '__main__':\n"
        "    process = ModelProcess(RiskSettings(pii_workers=2, spacy_model=''), 'cpu')\n"
        "    children = []\n"
        "    while len(children) < 2:\n"
        "        time.sleep(0.1)\n"
        "        path = f'/proc/{process.pid}/task/{process.pid}/children'\n"
        "        children = open(path).read().split()\n"
        "    print(json.dumps([process.pid, *map(int, children)]), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    run = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    pids = json.loads(run.stdout.readline())
    assert len(pids) == 3 and all(_running(pid) for pid in pids)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert still_running(pids) == []


def test_a_bad_input_does_not_wait_for_the_model_process(cli, lw_env, db, registered, tmp_path):
    """The command line starts the model process before it reads the dataset; a dataset that
    is refused ends the command (exit status 2) and the model process with it."""
    (tmp_path / "lorawatch.toml").write_text('[canary]\nmodel_process = "separate"\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p1", "prompt": }\n')
    result = cli("canary", "run", "--dataset", bad, "--device", "cpu")
    assert result.code == 2 and f"{bad}:1" in result.err, result.err
    assert multiprocessing.active_children() == []


def test_the_command_line_starts_the_model_process_before_it_imports_the_run(lw_env, tmp_path):
    """``lorawatch.cli.early`` reads the arguments as the command line does, starts a model
    process only where the run will want one, and hands it to the run made for the same
    settings; one made for others is stopped."""
    from lorawatch.cli import early
    from lorawatch.settings import RiskSettings

    config = tmp_path / "other.toml"
    config.write_text('[canary]\nmodel_process = "separate"\n[risk]\nenabled = false\n')
    (tmp_path / "lorawatch.toml").write_text('[canary]\nmodel_process = "auto"\n')
    for args in (
        ["canary", "run", "--dataset", "d.jsonl", "--device", "cpu"],  # auto: not on the CPU
        ["--config", str(config), "canary", "run", "--backend", "ray"],
        ["--config", str(config), "canary", "run", "--help"],
        ["--config", str(config), "canary", "show", "1"],
        ["--verbose", "--config", str(config), "canary", "run"],
        ["--config", str(tmp_path / "missing.toml"), "canary", "run"],
    ):
        early.start(args)
        assert early.take(None, "cpu") is None, args
    for args in (
        ["--config", str(config), "canary", "run", "--dataset", "d.jsonl", "--device=cpu"],
        [f"--config={config}", "canary", "run", "--device", "cuda", "--device", "cpu"],
    ):
        early.start(args)
        process = early.take(None, "cpu")
        assert process is not None and process.made_for == (None, "cpu"), args
        process.close()
    early.start(["--config", str(config), "canary", "run", "--device", "cpu"])
    assert early.take(RiskSettings(), "cpu") is None  # made for a run without content risk
    early.start(["--config", str(config), "canary", "run", "--device", "cpu"])
    early.close()
    assert early.take(None, "cpu") is None
    assert multiprocessing.active_children() == []
