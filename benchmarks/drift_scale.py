"""Can the drift and risk monitors tell how far an adapter moves the model? The demo's drifted
adapter with its LoRA B scaled (x0 changes nothing, x2 is twice the drift), registered as versions
of one adapter whose production version is x0, beside the healthy adapter, run through the real
commands a user runs: one canary run of every version, a rerun of production (against its own
baseline run), and the promotion gate (``--gate VERSION ...``; every version by default).

    python benchmarks/drift_scale.py --dataset core-v1 | tee benchmarks/results/drift_scale_cpu.txt

Prints per version: KL, top-1, cosine distance, the monitors breached, the KS and MMD p-values
against production (same run, same prompts) and the gate's exit code; then the rerun's p-values.
What should show: x0 passes the gate and breaches nothing; the healthy adapter breaches nothing; x0.5 and above breach a drift monitor; KS or MMD fires for x1 and x2 and not
for x0 or the rerun. Runs in its own $LORAWATCH_HOME (``--home``, a temporary one by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DRIFT = ["logit_kl", "logit_kl_p95", "logit_js", "top1_agreement", "embedding_cosine", "ref_logprob_delta"]


def lorawatch(*args: str, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "lorawatch", *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"lorawatch {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def scaled_adapter(source: Path, scale: float, out: Path) -> Path:
    """A copy of ``source`` with every LoRA B matrix multiplied by ``scale``."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy2(item, out / item.name)
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file(
        {k: (v * scale).to(v.dtype) if "lora_B" in k else v for k, v in tensors.items()},
        str(out / "adapter_model.safetensors"),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="core-v1", help="canary set (a shipped name or a JSONL file)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--gate", nargs="*", default=None, help="versions to run the gate for (default: every scaled one)"
    )
    parser.add_argument("--home", type=Path, default=None, help="LORAWATCH_HOME to use (default: a temporary one)")
    args = parser.parse_args(argv)

    from lorawatch.demo import models as demo
    from lorawatch.monitors.dataset import resolve_dataset

    home = args.home or Path(tempfile.mkdtemp(prefix="lorawatch-scale-"))
    env = {**os.environ, "LORAWATCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("LORAWATCH_DATABASE_URL", None)
    env.pop("LORAWATCH_CONFIG", None)
    dataset = resolve_dataset(args.dataset)
    tokens = ["--max-new-tokens", str(args.max_new_tokens)]
    started = time.perf_counter()
    base = demo.prepare_base(home / "demo" / "models", progress=False)
    lorawatch("registry", "add-base", demo.BASE_NAME, "--path", base, "--hub-id", demo.BASE_HUB_ID, env=env)
    healthy, drifted = (demo.shipped_adapter(spec) for spec in demo.DEMO_ADAPTERS[:2])
    common = ["--base", demo.BASE_NAME, "--domain", "customer_support"]
    # the healthy adapter is an adapter of its own; the scaled ones are versions of "drifted",
    # whose production version is x0 (the release that changes nothing): candidates are judged
    # against it, as a new release is against the one it replaces
    lorawatch(
        "registry", "add", "healthy", "--path", healthy, "--version", "v1", *common, "--promote", "production", env=env
    )
    versions = ["healthy@v1"]
    for scale in sorted(args.scales, key=lambda s: s != 0):
        name = f"x{scale:g}"
        path = scaled_adapter(drifted, scale, home / "scaled" / name)
        promote = ["--promote", "production"] if scale == 0 else []
        lorawatch("registry", "add", "drifted", "--path", path, "--version", name, *common, *promote, env=env)
        versions.append(f"drifted@{name}")
    print(f"# drift by scale: {dataset.name}, {args.max_new_tokens} new tokens, {', '.join(versions)}")

    t = time.perf_counter()
    adapters = [a for v in versions for a in ("--adapter", v)]
    run = lorawatch("canary", "run", "--dataset", dataset, *tokens, *adapters, "--json", env=env)
    run_id = json.loads(run.stdout)["run"]
    shown = json.loads(lorawatch("canary", "show", run_id, "--json", env=env).stdout)
    print(f"canary run {run_id}: {time.perf_counter() - t:.0f} s")
    gates = {}
    for name in versions:
        adapter, version = name.split("@")
        if args.gate is not None and version not in args.gate and name not in args.gate:
            continue
        gate = lorawatch(
            "gate", adapter, "--version", version, "--dataset", dataset, *tokens, "--json", env=env, ok=(0, 3)
        )
        gates[name] = gate.returncode
    t = time.perf_counter()
    rerun = lorawatch("canary", "run", "--dataset", dataset, *tokens, "--adapter", "drifted@x0", "--json", env=env)
    rerun_shown = json.loads(lorawatch("canary", "show", json.loads(rerun.stdout)["run"], "--json", env=env).stdout)
    print(f"rerun of drifted's production (x0): {time.perf_counter() - t:.0f} s\n")

    print("| version | KL mean | top-1 | cos dist | breached | KS p vs production | MMD p vs production | gate exit |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for name in versions:
        results = _results(shown, *name.split("@"))
        breached = sorted(m for m, r in results.items() if r.get("breached"))
        print(
            f"| {name} | {_v(results, 'logit_kl')} | {_v(results, 'top1_agreement')} "
            f"| {_v(results, 'embedding_cosine')} | {', '.join(breached) or '-'} | {_v(results, 'logit_kl_ks')} "
            f"| {_v(results, 'embedding_mmd')} | {gates.get(name, '-')} |"
        )
    again = _results(rerun_shown, "drifted", "x0")
    print(
        f"\nrerun of drifted's production (x0) against its baseline run: KS p {_v(again, 'logit_kl_ks')}, "
        f"MMD p {_v(again, 'embedding_mmd')}, breached: "
        f"{', '.join(sorted(m for m, r in again.items() if r.get('breached'))) or '-'}"
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s; home {home}")
    return 0


def _results(shown: dict, adapter: str, version: str) -> dict[str, dict]:
    """The overall (all segments) result per monitor of one version in ``canary show --json``."""
    for entry in shown.get("adapters", []):
        if entry.get("adapter") == adapter and entry.get("version") == version:
            return entry.get("monitors", {})
    return {}


def _v(results: dict[str, dict], monitor: str) -> str:
    value = (results.get(monitor) or {}).get("value")
    return "-" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    raise SystemExit(main())
