"""CPU canary benchmark on the demo's SmolLM2-135M and its three shipped adapters, in one process.

    python benchmarks/canary_cpu.py [--dataset smoke-v1] [--max-new-tokens 32] [--batch-size 8]
                                    [--threads N] [--skip-command] [--profile]

Three ways over the same (prompt, adapter) pairs, one JSON line each:

- command: ``lorawatch canary run --dataset D --device cpu --json`` as a user runs it (called in
  this process on a fresh database, after registering the base and the adapters; imports are
  warm), drift, embeddings and content risk included;
- runner: ``lorawatch.monitors.canary_batch.score_and_generate``, what that command calls per batch (the
  grouped decoder: the base and every adapter as groups of one batch, static KV cache, one
  grouped teacher-forced pass), language model only;
- plain: HF ``generate`` through PEFT, batched (the base, then each adapter), plus one
  teacher-forced PEFT forward per adapter and one for the base with a full fp32 log-softmax,
  on the same batches; the largest KL difference and how many outputs are identical.

``--profile`` prints the torch profiler's top operators for one runner batch instead.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def emit(**fields) -> None:
    """One measurement as a JSON line."""
    import torch

    fields.update(
        torch=torch.__version__, threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability()
    )
    print(json.dumps(fields), flush=True)


def batches(models, prompts, batch_size: int):
    """The run plan's batches (``plan_batches``), with their token ids."""
    from lorawatch.monitors.canary_store import plan_batches

    lengths = [len(models.prompt_ids(p)) + len(models.reference_ids(p) or []) for p in prompts]
    for chunk in plan_batches(prompts, lengths, batch_size):
        yield chunk, [models.prompt_ids(p) for p in chunk], [models.reference_ids(p) for p in chunk]


def runner(models, prompts, keys, batch_size: int) -> dict:
    """The runner's score_and_generate over every batch."""
    from lorawatch.monitors.canary_batch import score_and_generate

    kl, outputs, scored, generated = {}, {}, 0, 0
    start = time.perf_counter()
    for chunk, prompt_ids, references in batches(models, prompts, batch_size):
        base, _, adapters = score_and_generate(models, prompt_ids, references, keys)
        for key in keys:
            scores, generation = adapters[key]["scores"], adapters[key]["generation"]
            for i, prompt in enumerate(chunk):
                kl[(prompt.id, key)] = scores["kl_mean"][i]
                outputs[(prompt.id, key)] = generation.token_ids[i]
            scored += int(sum(scores["scored_tokens"]))
            generated += sum(len(t) for t in generation.token_ids)
        generated += sum(len(t) for t in base.token_ids)
    return {
        "seconds": time.perf_counter() - start,
        "kl": kl,
        "outputs": outputs,
        "scored": scored,
        "generated": generated,
    }


def plain(models, prompts, keys, batch_size: int) -> dict:
    """Batched PEFT generate per model, then one teacher-forced PEFT forward per model, full log-softmax."""
    import torch

    peft = models.peft
    kl, outputs, scored, generated = {}, {}, 0, 0
    start = time.perf_counter()
    for chunk, prompt_ids, references in batches(models, prompts, batch_size):
        with peft.disable_adapter():
            base = models.generate(prompt_ids)
        generated += sum(len(t) for t in base.token_ids)
        targets = [ref or out or sorted(models.eos_ids)[:1] for ref, out in zip(references, base.token_ids)]
        input_ids, mask, rows, positions, _ = models.layout(prompt_ids, targets)
        with torch.no_grad():
            with peft.disable_adapter():
                base_lp = peft(input_ids=input_ids, attention_mask=mask).logits[rows, positions].float().log_softmax(-1)
            for key in keys:
                peft.set_adapter(key)
                generation = models.generate(prompt_ids)
                generated += sum(len(t) for t in generation.token_ids)
                lp = peft(input_ids=input_ids, attention_mask=mask).logits[rows, positions].float().log_softmax(-1)
                per_token = (lp.exp() * (lp - base_lp)).sum(-1)
                scored += len(rows)
                for i, prompt in enumerate(chunk):
                    kl[(prompt.id, key)] = float(per_token[rows == i].mean())
                    outputs[(prompt.id, key)] = generation.token_ids[i]
    return {
        "seconds": time.perf_counter() - start,
        "kl": kl,
        "outputs": outputs,
        "scored": scored,
        "generated": generated,
    }


def command(base_dir: Path, dataset: Path, args) -> dict:
    """`lorawatch canary run` end to end on a fresh database, after registering the demo's models."""
    from lorawatch.cli import main as cli
    from lorawatch.demo.models import BASE_HUB_ID, DEMO_ADAPTERS, shipped_adapter

    def run(*argv: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                cli(list(argv))
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise RuntimeError(f"lorawatch {' '.join(argv)} exited {exc.code}") from None
        return out.getvalue()

    with tempfile.TemporaryDirectory() as home:
        os.environ["LORAWATCH_HOME"] = home
        run("init", "--json")
        run("registry", "add-base", "smollm2", "--path", str(base_dir), "--hub-id", BASE_HUB_ID, "--json")
        for spec in DEMO_ADAPTERS:
            run("registry", "add", spec.name, "--path", str(shipped_adapter(spec)), "--base", "smollm2", "--json")
        adapters = [a for spec in DEMO_ADAPTERS for a in ("--adapter", spec.name)]
        start = time.perf_counter()
        summary = json.loads(
            run(
                "canary",
                "run",
                "--dataset",
                str(dataset),
                *adapters,
                "--device",
                "cpu",
                "--batch-size",
                str(args.batch_size),
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--json",
            )
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "status": summary["status"], "prompts": summary["prompts_done"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="smoke-v1", help="a canary JSONL file or a shipped set (default smoke-v1)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".lorawatch" / "demo" / "models",
        help="where the SmolLM2 base is prepared",
    )
    parser.add_argument("--skip-command", action="store_true", help="only the runner and the plain way")
    parser.add_argument("--profile", action="store_true", help="profile one runner batch (torch profiler)")
    args = parser.parse_args()

    import torch

    from lorawatch.demo.models import DEMO_ADAPTERS, prepare_base, shipped_adapter
    from lorawatch.models import attach_adapters, load_base, pick_device, quiet_transformers
    from lorawatch.monitors.canary_batch import CanaryModels, score_and_generate
    from lorawatch.monitors.dataset import load_dataset

    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    base_dir = prepare_base(args.cache)
    dataset = load_dataset(args.dataset)
    prompts = dataset.prompts
    keys = [spec.name for spec in DEMO_ADAPTERS]
    choice = pick_device("cpu")
    model, tokenizer = load_base(str(base_dir), None, choice)
    peft = attach_adapters(model, {spec.name: shipped_adapter(spec) for spec in DEMO_ADAPTERS})
    models = CanaryModels(peft, tokenizer, choice.device, args.max_new_tokens)
    shape = dict(
        dataset=dataset.name,
        prompts=len(prompts),
        adapters=len(keys),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        chunk, prompt_ids, references = next(batches(models, prompts, args.batch_size))
        score_and_generate(models, prompt_ids, references, keys)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            score_and_generate(models, prompt_ids, references, keys)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
        return

    runner(models, prompts[: args.batch_size], keys, args.batch_size)  # warm-up: one batch
    fast = runner(models, prompts, keys, args.batch_size)
    pairs = len(prompts) * len(keys)
    emit(
        name="runner",
        **shape,
        seconds=round(fast["seconds"], 2),
        pairs_per_s=round(pairs / fast["seconds"], 2),
        scored_tok_per_s=round(fast["scored"] / fast["seconds"]),
        new_tok_per_s=round(fast["generated"] / fast["seconds"], 1),
    )
    slow = plain(models, prompts, keys, args.batch_size)
    diffs = [abs(fast["kl"][k] - v) / max(abs(v), 1e-6) for k, v in slow["kl"].items()]
    same = sum(fast["outputs"][k] == v for k, v in slow["outputs"].items())
    emit(
        name="plain_peft_generate_and_forward",
        **shape,
        seconds=round(slow["seconds"], 2),
        pairs_per_s=round(pairs / slow["seconds"], 2),
        scored_tok_per_s=round(slow["scored"] / slow["seconds"]),
        new_tok_per_s=round(slow["generated"] / slow["seconds"], 1),
        runner_speedup=round(slow["seconds"] / fast["seconds"], 2),
        kl_max_relative_difference=round(max(diffs), 6),
        outputs_identical=f"{same}/{len(slow['outputs'])}",
    )
    if not args.skip_command:
        del models, peft, model
        result = command(base_dir, dataset.path, args)
        emit(
            name="command",
            **shape,
            seconds=round(result["seconds"], 2),
            pairs_per_s=round(pairs / result["seconds"], 2),
            status=result["status"],
            note="lorawatch canary run in this process: model load, drift, embeddings, "
            "content risk and database writes included",
        )


if __name__ == "__main__":
    main()
