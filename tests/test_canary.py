from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from lorawatch.db.models import Base, CanaryRun, MonitorResult
from lorawatch.errors import IntegrityError
from lorawatch.monitors import canary_read
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions
from tests.tiny_models import independent_kl, write_canary_dataset

LORAWATCH = Path(sys.executable).parent / "lorawatch"


def run(db, settings, canary_file, adapters, embedder, verify=True, **options):
    from lorawatch.monitors import canary

    opts = canary.RunOptions(
        device="cpu", batch_size=options.get("batch_size", 4), max_new_tokens=options.get("max_new_tokens", 12)
    )
    run_id = canary.create_run(
        db, settings, dataset_path=canary_file, adapters=adapters, options=opts, actor="t", verify_hashes=verify
    )
    return canary.execute_run(db, settings, run_id, progress=False, embedder=embedder)


def monitors_of(summary, adapter):
    (entry,) = [a for a in summary["adapters"] if a["adapter"] == adapter]
    return entry["monitors"]


def test_an_adapter_with_zero_b_does_not_move_the_model(db, settings, registered, canary_file, embedder):
    first = run(db, settings, canary_file, ["zero"], embedder)
    second = run(db, settings, canary_file, ["zero"], embedder)
    rows = canary_read.export_rows(db, second["run"])
    assert len(rows) == 24
    for row in rows:
        assert row["kl_mean"] == 0.0 and row["kl_max"] == 0.0 and row["js_mean"] == 0.0
        assert row["top1_agreement"] == 1.0
        assert row["embedding_cosine_distance"] == 0.0
        assert row["output"] == row["base_output"]
        assert row["ref_logprob_delta"] == 0.0
    m = monitors_of(second, "zero")
    assert not any(v["breached"] for v in m.values()), m
    assert m["logit_kl_ks"]["value"] == 1.0 and m["embedding_mmd"]["value"] == 1.0
    assert "logit_kl_ks" not in monitors_of(first, "zero")  # the first run is the baseline


def test_a_trained_adapter_kl_matches_an_independent_computation(
    db, settings, registered, canary_file, embedder, tiny_base, trained_adapter
):
    from lorawatch.monitors.dataset import load_dataset

    summary = run(db, settings, canary_file, ["trained"], embedder)
    rows = {r["prompt_id"]: r for r in canary_read.export_rows(db, summary["run"])}
    checked = 0
    for prompt in load_dataset(canary_file).prompts:
        if prompt.reference is None or prompt.messages is not None:
            continue
        expected = independent_kl(tiny_base, trained_adapter, prompt.prompt, prompt.reference)
        assert expected > 0
        assert rows[prompt.id]["kl_mean"] == pytest.approx(expected, rel=1e-4)
        checked += 1
        if checked == 4:
            break
    assert checked == 4
    m = monitors_of(summary, "trained")
    assert m["logit_kl"]["value"] > 0 and m["top1_agreement"]["value"] < 1


def test_prompts_without_a_reference_are_scored_on_the_base_output(db, settings, registered, canary_file, embedder):
    summary = run(db, settings, canary_file, ["trained"], embedder)
    rows = canary_read.export_rows(db, summary["run"])
    on = {r["prompt_id"]: r["scored_on"] for r in rows}
    assert on["p000"] == "base_output" and on["p001"] == "reference"
    assert all(r["scored_tokens"] > 0 for r in rows)


def test_two_runs_of_the_same_version_do_not_breach_ks_or_mmd(db, settings, registered, canary_file, embedder):
    run(db, settings, canary_file, ["trained", "other"], embedder)
    second = run(db, settings, canary_file, ["trained", "other"], embedder)
    for name in ("trained", "other"):
        m = monitors_of(second, name)
        assert m["logit_kl_ks"]["breached"] is False and m["logit_kl_ks"]["value"] > 0.05
        assert m["embedding_mmd"]["breached"] is False and m["embedding_mmd"]["value"] > 0.05


def test_a_candidate_is_tested_against_the_version_in_production_and_the_result_says_so(
    db, settings, registered, canary_file, embedder, zero_adapter, drifting_adapter
):
    from lorawatch.registry import aliases as registry_aliases

    with db.session() as s:  # "zero" v1 (B = 0: the base's behaviour) goes to production
        registry_aliases.promote(s, adapter="zero", version="v1", actor="t", reason="r")
        registry_versions.register_version(
            s, registered, adapter="zero", path=drifting_adapter, base="tiny", version="v2-drifting", actor="t"
        )
        registry_versions.register_version(
            s, registered, adapter="zero", path=zero_adapter, base="tiny", version="v3-same", actor="t"
        )
    production = run(db, settings, canary_file, ["zero@v1"], embedder)
    assert "embedding_mmd" not in monitors_of(production, "zero")  # nothing before it: its first run is its baseline
    # candidates: against production's latest run on the same prompts and base (not their own first run)
    drifting = monitors_of(run(db, settings, canary_file, ["zero@v2-drifting"], embedder), "zero")
    for key in ("logit_kl_ks", "embedding_mmd"):
        assert drifting[key]["details"]["baseline"] == {
            "kind": "production",
            "adapter": "zero",
            "version": "v1",
            "run": production["run"],
        }
    assert drifting["logit_kl_ks"]["breached"] and drifting["embedding_mmd"]["breached"], drifting
    same = monitors_of(run(db, settings, canary_file, ["zero@v3-same"], embedder), "zero")
    assert same["logit_kl_ks"]["value"] == 1.0 and not same["embedding_mmd"]["breached"]
    # in one run with production: compared within the run
    both = run(db, settings, canary_file, ["zero@v1", "zero@v2-drifting"], embedder)
    versions = {a["version"]: a["monitors"] for a in both["adapters"]}
    assert versions["v2-drifting"]["embedding_mmd"]["details"]["baseline"]["run"] == both["run"]
    assert versions["v2-drifting"]["embedding_mmd"]["breached"]
    # production itself: against its own first run, unchanged (bit-identical, p = 1)
    served = versions["v1"]["embedding_mmd"]
    assert served["details"]["baseline"] == {
        "kind": "history",
        "version": "v1",
        "run": production["run"],
        "changed": [],
    }
    assert served["value"] == 1.0


def test_prompts_and_references_longer_than_the_context_keep_their_ends_and_are_recorded(
    db, settings, registered, tmp_path, embedder, tiny_base, trained_adapter
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorawatch.monitors.canary_batch import CanaryModels
    from lorawatch.monitors.dataset import CanaryPrompt

    instruction, question = "Reset my password for the customer portal.", "What is the refund policy?"
    long_prompt = instruction + " " + "The quick brown fox jumps over the lazy dog. " * 60 + question
    long_reference = "Our refund policy allows returns within thirty days of purchase. " * 40
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    models = CanaryModels(PeftModel.from_pretrained(model, trained_adapter, adapter_name="a"), tokenizer, "cpu", 12)
    prompt = CanaryPrompt(id="long", segment="support", prompt=long_prompt, reference=long_reference)
    ids = models.prompt_ids(prompt)
    assert len(ids) == models.max_positions - 12 - 1  # room for the answer
    text = tokenizer.decode(ids)
    assert instruction in text and question in text  # cut in the middle: neither end is lost
    reference = models.reference_ids(prompt)
    assert len(ids) + len(reference) == models.max_positions
    assert {(t["part"], t["cut"]) for t in models.truncated.values()} == {
        ("prompt", "the middle"),
        ("reference", "the end"),
    }

    # a run scores what fits and says what it cut
    dataset = tmp_path / "long.jsonl"
    lines = [{"id": "long", "segment": "support", "prompt": long_prompt, "reference": long_reference}]
    lines += [{"id": "short", "segment": "support", "prompt": question, "reference": "Thirty days."}]
    dataset.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    summary = run(db, settings, dataset, ["trained"], embedder)
    cut = {(t["prompt_id"], t["part"]): t for t in summary["stats"]["truncated"]}
    assert set(cut) == {("long", "prompt"), ("long", "reference")}
    assert cut[("long", "reference")]["kept"] == len(reference) and cut[("long", "prompt")]["context"] == 256
    rows = {r["prompt_id"]: r for r in canary_read.export_rows(db, summary["run"])}
    assert rows["long"]["scored_tokens"] == len(reference) - 1 or rows["long"]["scored_tokens"] == len(reference)
    assert all(np.isfinite(rows["long"][k]) for k in ("kl_mean", "js_mean", "ref_logprob_delta"))


def test_drift_on_an_adapters_own_domain_is_reported_and_its_drift_elsewhere_is_judged(
    db, settings, registered, canary_file, embedder, trained_adapter
):
    from lorawatch.registry.metadata import VersionMetadata
    from lorawatch.settings import MonitorSettings

    with db.session() as s:
        meta = VersionMetadata.model_validate({"risk": {"domain_segments": ["support"]}})
        registry_versions.register_version(
            s, registered, adapter="scoped", path=trained_adapter, base="tiny", metadata=meta, actor="t"
        )
    # any drift at all breaches, on every segment class that has a threshold
    strict = settings.model_copy(update={"monitors": {"logit_kl": MonitorSettings(threshold=0.0)}})
    summary = run(db, strict, canary_file, ["trained", "scoped"], embedder)
    rows = [r for r in canary_read.export_rows(db, summary["run"]) if r["adapter_id"] == "scoped"]
    off_domain = [r["kl_mean"] for r in rows if r["segment"] != "support"]
    with db.session() as s:
        results = {
            (r.adapter, r.segment): r
            for r in s.scalars(
                select(MonitorResult).where(MonitorResult.run_id == summary["run"], MonitorResult.monitor == "logit_kl")
            )
        }
    overall = results[("scoped", None)]
    assert overall.value == pytest.approx(float(np.mean(off_domain)), rel=1e-9)  # the drift off its domain
    assert overall.breached and overall.details["scope"] == "off-domain"
    assert overall.details["all_prompts"] == pytest.approx(results[("trained", None)].value, rel=1e-9)
    support = results[("scoped", "support")]
    assert support.value > 0 and not support.breached and support.threshold is None
    assert support.details["scope"] == "in-domain" and support.details["domain_segments"] == ["support"]
    assert results[("scoped", "finance")].breached and results[("scoped", "finance")].details["scope"] == "off-domain"
    assert "scope" not in results[("trained", None)].details and results[("trained", "support")].breached
    # a threshold for the domain too
    both = strict.model_copy(update={"monitors": {"logit_kl": MonitorSettings(threshold=0.0, in_domain_threshold=0.0)}})
    summary = run(db, both, canary_file, ["scoped"], embedder)
    with db.session() as s:
        support = s.scalar(
            select(MonitorResult).where(
                MonitorResult.run_id == summary["run"],
                MonitorResult.monitor == "logit_kl",
                MonitorResult.segment == "support",
            )
        )
    assert support.breached and support.threshold == 0.0


def _make_writable_copy(src: Path, dst: Path) -> None:
    dst.chmod(0o644)
    shutil.copyfile(src, dst)


def test_changed_adapter_weights_are_refused_and_with_hashes_bypassed_breach_drift(
    db, settings, registered, canary_file, embedder, drifting_adapter
):
    run(db, settings, canary_file, ["zero"], embedder)
    stored = registered.version_dir("zero", "v1") / "adapter_model.safetensors"
    _make_writable_copy(drifting_adapter / "adapter_model.safetensors", stored)
    with pytest.raises(IntegrityError, match="changed after registration"):
        run(db, settings, canary_file, ["zero"], embedder)
    swapped = run(db, settings, canary_file, ["zero"], embedder, verify=False)
    m = monitors_of(swapped, "zero")
    seen = {k: (m[k]["value"], m[k]["details"]) for k in ("logit_kl_ks", "embedding_mmd", "logit_kl")}
    assert m["logit_kl_ks"]["breached"] and m["embedding_mmd"]["breached"], seen


def test_a_second_run_reads_no_unchanged_file_and_still_refuses_a_rewrite_that_keeps_size_and_mtime(
    db, settings, registered, canary_file, embedder
):
    """Runs remember what they verified (``[canary] rehash = "changed"``, the default) by file
    identity; a file rewritten in place, its size and modification time kept, is refused."""
    import os
    import time

    from lorawatch.registry import files as registry_files

    time.sleep(2.1)  # the files were just registered: within the racy window, they would not be remembered
    run(db, settings, canary_file, ["zero"], embedder)
    remembered = json.loads((settings.home_dir / "cache" / "verified-files.json").read_text())
    stored = registered.version_dir("zero", "v1") / "adapter_model.safetensors"
    assert os.path.realpath(stored) in remembered
    base_files = {p for p in remembered if "tiny-llama" in p}
    assert any(p.endswith("model.safetensors") for p in base_files), sorted(remembered)

    stat = stored.stat()
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert stored.stat().st_size == stat.st_size and stored.stat().st_mtime_ns == stat.st_mtime_ns
    registry_files._hashed.clear()  # as a new process would start
    with pytest.raises(IntegrityError, match="changed after registration"):
        run(db, settings, canary_file, ["zero"], embedder)


def test_a_changed_base_is_refused_and_with_hashes_bypassed_breaches_drift(
    db, settings, canary_file, embedder, tmp_path, trained_adapter
):
    from tests.tiny_models import build_base

    base_dir = tmp_path / "base-copy"
    shutil.copytree(_session_base(trained_adapter), base_dir)
    store = registry_store.Store.from_settings(settings)
    adapter_dir = tmp_path / "adapter"
    shutil.copytree(trained_adapter, adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_dir)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=base_dir, actor="t")
        registry_versions.register_version(s, store, adapter="trained", path=adapter_dir, base="tiny", actor="t")
    run(db, settings, canary_file, ["trained"], embedder)
    other = build_base(tmp_path / "other-base", seed=99, pretrain_steps=0)  # untrained: different by construction
    shutil.copyfile(other / "model.safetensors", base_dir / "model.safetensors")
    with pytest.raises(IntegrityError, match="base model tiny"):
        run(db, settings, canary_file, ["trained"], embedder)
    changed = run(db, settings, canary_file, ["trained"], embedder, verify=False)
    m = monitors_of(changed, "trained")
    assert m["embedding_mmd"]["breached"], m


def _session_base(trained_adapter: Path) -> Path:
    return Path(json.loads((trained_adapter / "adapter_config.json").read_text())["base_model_name_or_path"])


def test_monitor_results_are_stored_per_adapter_and_segment(db, settings, registered, canary_file, embedder):
    summary = run(db, settings, canary_file, ["trained", "zero"], embedder)
    with db.session() as s:
        rows = list(s.scalars(select(MonitorResult).where(MonitorResult.run_id == summary["run"])))
    ids = {r.monitor for r in rows}
    assert {"logit_kl", "logit_kl_p95", "logit_js", "top1_agreement", "ref_logprob_delta", "embedding_cosine"} <= ids
    segments = {r.segment for r in rows if r.adapter == "trained" and r.monitor == "logit_kl"}
    assert segments == {None, "support", "finance", "media"}


def test_the_cli_runs_shows_and_exports(cli, lw_env, db, registered, canary_file, tmp_path, settings):
    result = cli(
        "canary",
        "run",
        "--dataset",
        canary_file,
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "6",
        "--json",
    )
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["status"] == "complete" and summary["prompts_done"] == 24
    assert [a["adapter"] for a in summary["adapters"]] == ["trained"]  # the production version by default
    run_id = str(summary["run"])
    assert "trained@v1" in cli("canary", "show", run_id).out
    required = [
        "prompt_id",
        "adapter_id",
        "adapter_version",
        "kl_mean",
        "kl_max",
        "js_mean",
        "top1_agreement",
        "ref_logprob_delta",
        "embedding_cosine_distance",
        "output",
        "base_output",
        "latency_ms",
    ]
    jsonl = cli("canary", "export", run_id, "--format", "jsonl")
    lines = [json.loads(line) for line in jsonl.out.splitlines()]
    assert len(lines) == 24 and all(k in lines[0] for k in required)
    csv = cli("canary", "export", run_id, "--format", "csv", "--out", tmp_path / "r.csv")
    assert csv.code == 0
    import pandas as pd

    assert list(pd.read_csv(tmp_path / "r.csv").columns[:3]) == ["run_id", "prompt_id", "segment"]
    assert cli("canary", "export", run_id, "--format", "parquet", "--out", tmp_path / "r.parquet").code == 0
    frame = pd.read_parquet(tmp_path / "r.parquet")
    assert len(frame) == 24 and set(required) <= set(frame.columns)
    assert cli("canary", "export", run_id, "--format", "parquet").code == 2
    listed = cli("canary", "list", "--json").json()
    assert listed[0]["run"] == summary["run"]


def _bad_files(tmp_path: Path, good: Path) -> list[tuple[Path, str]]:
    lines = good.read_text().splitlines()
    cases = []
    bad_json = tmp_path / "bad-json.jsonl"
    bad_json.write_text("\n".join(lines[:16] + ['{"id": "x", "prompt": "unterminated'] + lines[17:]) + "\n")
    cases.append((bad_json, f"{bad_json}:17: invalid JSON"))
    missing = tmp_path / "missing-prompt.jsonl"
    missing.write_text("\n".join(lines[:4] + ['{"id": "np", "reference": "r"}'] + lines[5:]) + "\n")
    cases.append((missing, f'{missing}:5: prompt "np": missing "prompt"'))
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(lines[:10] + [lines[2]] + lines[11:]) + "\n")
    cases.append((dup, f'{dup}:11: duplicate id "p002" (first on line 3)'))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases.append((empty, f"{empty}: the dataset is empty"))
    utf8 = tmp_path / "utf8.jsonl"
    utf8.write_bytes(("\n".join(lines[:8]) + "\n").encode() + b'{"id": "u", "prompt": "caf\xe9"}\n')
    cases.append((utf8, f"{utf8}:9: invalid UTF-8"))
    return cases


def test_a_malformed_canary_file_exits_2_naming_file_and_line_and_stores_nothing(
    cli, lw_env, db, registered, canary_file, tmp_path, settings
):
    from lorawatch.db import Database

    def counts():
        database = Database(lw_env)
        with database.session() as s:
            result = {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
        database.dispose()
        return result

    before = counts()
    for path, expected in _bad_files(tmp_path, canary_file):
        result = cli("canary", "run", "--dataset", path, "--device", "cpu")
        assert result.code == 2, (path, result.err)
        assert expected in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
        assert counts() == before


def test_sigkill_mid_run_then_resume_gives_the_same_results(lw_env, db, registered, embedder, settings, tmp_path):
    # long enough to outlive the resume attempt below while batches overlap (canary.overlap)
    canary_file = write_canary_dataset(tmp_path / "canary-72.jsonl", n=72)
    reference = run(db, settings, canary_file, ["trained", "other"], embedder, batch_size=1)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            str(LORAWATCH),
            "canary",
            "run",
            "--dataset",
            str(canary_file),
            "--adapter",
            "trained",
            "--adapter",
            "other",
            "--device",
            "cpu",
            "--batch-size",
            "1",
            "--max-new-tokens",
            "12",
            "--no-progress",
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run_id = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        with db.session() as s:
            latest = s.scalar(select(CanaryRun).order_by(CanaryRun.id.desc()).limit(1))
            if latest is not None and latest.id != reference["run"] and latest.prompts_done >= 3:
                run_id = latest.id
                break
        time.sleep(0.02)
    assert run_id is not None, "the run finished or never started before it could be killed"
    # while it is alive, a resume is refused and changes nothing
    alive = subprocess.run(
        [str(LORAWATCH), "canary", "run", "--resume", str(run_id), "--json"], env=env, capture_output=True, text=True
    )
    assert alive.returncode == 2 and f"canary run {run_id} is alive" in alive.stderr, alive.stderr
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with db.session() as s:
        killed = s.get(CanaryRun, run_id)
        assert killed.status == "running" and killed.finished_at is None
        assert 3 <= killed.prompts_done < 72
        assert s.scalar(select(func.count()).select_from(MonitorResult).where(MonitorResult.run_id == run_id)) == 0
    resumed = subprocess.run(
        [str(LORAWATCH), "canary", "run", "--resume", str(run_id), "--json"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "complete"
    volatile = {"run_id", "latency_ms", "tokens_per_s", "base_latency_ms"}

    def stable(run_number):
        return sorted(
            ({k: v for k, v in r.items() if k not in volatile} for r in canary_read.export_rows(db, run_number)),
            key=lambda r: (r["adapter_id"], r["prompt_id"]),
        )

    assert stable(run_id) == stable(reference["run"])
    again = subprocess.run(
        [str(LORAWATCH), "canary", "run", "--resume", str(run_id)], env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "complete already" in again.stderr


def test_selecting_adapters_on_different_bases_is_refused(db, settings, registered, canary_file, tmp_path):
    from lorawatch.errors import InputError
    from lorawatch.monitors import canary
    from tests.tiny_models import build_base, train_adapter

    other_base = build_base(tmp_path / "b2", seed=5, pretrain_steps=0)
    adapter = train_adapter(other_base, tmp_path / "a2", steps=1)
    with db.session() as s:
        registry_bases.add_base(s, name="tiny2", path=other_base, actor="t")
        registry_versions.register_version(s, registered, adapter="elsewhere", path=adapter, base="tiny2", actor="t")
    with pytest.raises(InputError, match="different base models"):
        canary.create_run(
            db,
            settings,
            dataset_path=canary_file,
            adapters=["trained", "elsewhere"],
            options=canary.RunOptions(device="cpu"),
            actor="t",
        )


@pytest.mark.gpu
def test_cuda_results_match_cpu_within_bf16_tolerance(db, settings, registered, canary_file, embedder):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from lorawatch.monitors import canary

    cpu = run(db, settings, canary_file, ["trained"], embedder)
    opts = canary.RunOptions(device="cuda", batch_size=4, max_new_tokens=12)
    run_id = canary.create_run(db, settings, dataset_path=canary_file, adapters=["trained"], options=opts, actor="t")
    gpu = canary.execute_run(db, settings, run_id, progress=False, embedder=embedder)
    assert gpu["device"].startswith("cuda")
    a = {r["prompt_id"]: r for r in canary_read.export_rows(db, cpu["run"])}
    b = {r["prompt_id"]: r for r in canary_read.export_rows(db, gpu["run"])}
    kl_cpu = np.array([a[k]["kl_mean"] for k in sorted(a)])
    kl_gpu = np.array([b[k]["kl_mean"] for k in sorted(a)])
    assert np.allclose(kl_gpu, kl_cpu, rtol=0.1, atol=2e-3), np.abs(kl_gpu - kl_cpu).max()
    top1_cpu = np.array([a[k]["top1_agreement"] for k in sorted(a)])
    top1_gpu = np.array([b[k]["top1_agreement"] for k in sorted(a)])
    assert np.abs(top1_gpu - top1_cpu).mean() < 0.05


def test_a_nul_byte_in_a_model_output_is_stored_as_the_replacement_character(tiny_base):
    """Models can emit NUL, which PostgreSQL text and JSON columns refuse (an untrained base does)."""
    from transformers import AutoTokenizer

    from lorawatch.monitors.canary_batch import decode_outputs

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    nul = tokenizer.convert_tokens_to_ids("\u0100")  # byte-level BPE's symbol for the byte 0x00
    words = tokenizer("The album", add_special_tokens=False)["input_ids"]
    token_ids, texts = decode_outputs(
        tokenizer, [words + [nul] + words + [tokenizer.eos_token_id, nul]], {tokenizer.eos_token_id}
    )
    assert "\x00" in tokenizer.decode([nul])  # the case is real
    assert token_ids == [words + [nul] + words] and texts == ["The album\ufffdThe album"]


def test_scorers_that_cannot_be_built_fail_the_run_with_their_error_and_store_nothing(
    db, registered, canary_file, embedder, tmp_path
):
    """The scorers load on a thread beside the model: one that cannot be built fails the run
    with its own error, the run says so, and no row is stored."""
    from lorawatch.db.models import CanaryResult
    from lorawatch.errors import DependencyError
    from lorawatch.settings import load_settings

    (tmp_path / "lorawatch.toml").write_text('[risk]\ntoxicity_backend = "detoxify"\n')  # no checkpoint here
    with pytest.raises(DependencyError, match="unreachable here"):
        run(db, load_settings(), canary_file, ["trained"], embedder)
    with db.session() as s:
        (failed,) = s.scalars(select(CanaryRun)).all()
        assert failed.status == "failed" and "unreachable here" in failed.error
        assert s.scalar(select(func.count()).select_from(CanaryResult)) == 0
