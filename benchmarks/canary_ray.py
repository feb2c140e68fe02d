"""Scale-out benchmark: one canary round sharded over 1, then 2 (or more) Ray GPU workers.

    python benchmarks/canary_ray.py [--adapters 16] [--prompts 256] [--length 256] [--batch 32]
                                    [--new-tokens 64] [--layouts 1x64,2x64,2x8] [--small]

Starts a Ray instance on this machine and, for each layout WxA (W workers, at most A adapters
per worker: ``canary.ray.adapters_per_worker``), runs the Ray backend's own pieces
(``lorawatch.monitors.canary_ray``: ``plan`` deals the adapters into shards, ``start_workers`` starts one
``CanaryWorker`` actor per worker with ``num_gpus=1``, ``dispatch`` spreads each shard's
batches over its workers and collects the rows) on a Llama-3.2-1B-shaped model with random bf16 weights
(nothing can be fetched on a GPU machine) and N rank-16 adapters on every linear layer,
seeded per adapter so a shard holds the same weights wherever it runs. Each prompt is one
token followed by L-1 reference tokens scored teacher-forced, and each (prompt, adapter) also
generates ``--new-tokens`` greedy tokens: the work of ``CanaryWorker.process``, minus the
sentence embeddings and content-risk scoring (their models are not on the GPU machine).

What differs from ``lorawatch canary run --backend ray``: the model comes from a config, not
the registry, and rows are counted here instead of being written to the database.

Prints one JSON line per layout (pairs/s, scored tokens/s, new tokens/s, seconds, the speedup
over the first layout) and the largest KL difference from the first layout. ``--small``
shrinks everything for a CPU smoke run (workers then take one CPU each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lorawatch.monitors.canary_worker import CanaryWorker  # noqa: E402


def build_models(keys: list[str], small: bool, new_tokens: int):
    """The base and these adapters (weights seeded by adapter name), as the runner's CanaryModels."""
    import torch

    from benchmarks.random_llama import Tokens, build
    from lorawatch.monitors.canary_batch import CanaryModels

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model, cfg, _ = build(keys, small, device, torch.bfloat16 if cuda else torch.float32, seeded=True)
    models = CanaryModels(model, Tokens(cfg.vocab_size), device, new_tokens)
    models.max_positions = cfg.max_position_embeddings
    return models


class RandomWorker(CanaryWorker):
    """A ``CanaryWorker`` whose models come from a config (random weights) instead of the registry."""

    def __init__(self, spec) -> None:
        super().__init__(
            spec,
            models=build_models(list(spec.adapters), spec.base_hub == "small", spec.max_new_tokens),
            featurize=False,
        )

    def gpu(self) -> str:
        import torch

        return (
            f"{torch.cuda.get_device_name()} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})"
            if torch.cuda.is_available()
            else "cpu"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--layouts",
        default="1x64,2x64,2x8",
        help="WORKERSxADAPTERS_PER_WORKER, comma-separated: 2x64 splits the batches of one 16-adapter "
        "shard over 2 workers, 2x8 gives each worker 8 adapters.",
    )
    parser.add_argument("--small", action="store_true", help="Tiny shapes on the CPU, for a smoke run.")
    args = parser.parse_args()
    if args.small:
        args.prompts, args.length, args.batch, args.new_tokens = 16, 32, 8, 8

    import random

    import ray

    from lorawatch.monitors.canary_ray import WORKER_ENV, dispatch, plan, start_workers
    from lorawatch.monitors.canary_worker import WorkerSpec
    from lorawatch.monitors.dataset import CanaryPrompt

    # the workers import this script's helpers (benchmarks.random_llama) from the checkout
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": {**WORKER_ENV, "PYTHONPATH": path}}
    )
    resources = ray.cluster_resources()
    keys = [f"a{i}" for i in range(args.adapters)]
    version_ids = {k: i for i, k in enumerate(keys)}
    vocab = 1024 if args.small else 128256
    rng = random.Random(1)
    prompts = [
        CanaryPrompt(
            id=f"p{i}",
            prompt=str(rng.randrange(1, vocab - 1)),
            reference=" ".join(str(rng.randrange(1, vocab - 1)) for _ in range(args.length - 1)),
        )
        for i in range(args.prompts)
    ]
    batches = [prompts[s : s + args.batch] for s in range(0, len(prompts), args.batch)]
    spec = WorkerSpec(
        base_path=None,
        base_hub="small" if args.small else "llama-1b",
        base_files=None,
        adapters={k: ("", None, k) for k in keys},
        device="auto",
        max_new_tokens=args.new_tokens,
    )
    results, single = {}, None
    for name in args.layouts.split(","):
        workers, per_worker = (int(x) for x in name.split("x"))
        layout = plan(keys, "auto", resources, workers, 1.0, 1.0, per_worker)
        load = time.perf_counter()
        actors = start_workers(spec, layout, max_restarts=0, worker_factory=RandomWorker)
        gpus = ray.get([a.gpu.remote() for a in actors])
        ray.get([a.process.remote(batches[0], version_ids) for a in actors])  # warm-up: kernels, CUDA graphs
        load = time.perf_counter() - load
        kl, totals = {}, {"pairs": 0, "scored": 0, "generated": 0}

        def on_rows(rows, kl=kl, totals=totals) -> None:
            for r in rows.results:
                kl[(r["prompt_id"], r["adapter_version_id"])] = r["kl_mean"]
                totals["pairs"] += 1
                totals["scored"] += r["scored_tokens"]
                totals["generated"] += r["new_tokens"]

        started = time.perf_counter()
        dispatch(actors, layout.shard_of, [batches] * len(layout.shards), version_ids, on_rows)
        seconds = time.perf_counter() - started
        for a in actors:
            ray.kill(a)
        results[name] = kl
        line = {
            "layout": name,
            "workers": layout.workers,
            "adapters": args.adapters,
            "adapters_per_worker": [len(layout.shards[s]) for s in layout.shard_of],
            "prompts": args.prompts,
            "length": args.length,
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "seconds": round(seconds, 3),
            "pairs": totals["pairs"],
            "pairs_per_s": round(totals["pairs"] / seconds, 1),
            "scored_tok_s": round(totals["scored"] / seconds),
            "new_tok_s": round(totals["generated"] / seconds),
            "load_and_warmup_s": round(load, 1),
            "gpus": gpus,
        }
        if single is None:
            single = line
        else:
            line["speedup"] = round(single["seconds"] / seconds, 3)
            first = next(iter(results.values()))
            line["max_kl_rel_diff_vs_first"] = max(abs(v - first[k]) / max(abs(first[k]), 1e-9) for k, v in kl.items())
        print(json.dumps(line), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
