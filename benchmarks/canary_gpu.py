"""GPU canary benchmark: the project's runner against the naive PEFT loop, in one process.

    python benchmarks/canary_gpu.py [--adapters 8] [--prompts 256] [--length 256] [--batch 32]
                                    [--new-tokens 64] [--naive-prompts 16] [--gen-prompt 128]
                                    [--gen-batch 256] [--hf-prompts 32] [--small] [--profile]

A Llama-3.2-1B-shaped model with random bf16 weights (nothing can be fetched on the GPU
machine) and N rank-16 LoRA adapters on every linear layer (random B, scaled so KL is
non-zero). Each prompt is one token followed by L-1 tokens scored teacher-forced, and each
(prompt, adapter) also generates ``--new-tokens`` greedy tokens.

- runner: ``lorawatch.monitors.canary_batch.score_adapters`` (scoring) and ``score_and_generate``
  (scoring and generation) on batches of prompts, the code
  ``lorawatch canary run`` uses (base hidden states once per batch and shared by every
  adapter, KL/JS/top-1 from logits made a chunk of positions at a time on the device);
- naive: per adapter, per prompt, batch 1, full fp32 log-softmax KL (on ``--naive-prompts``
  prompts, extrapolated), as in ../shared/anchors;
- generation: ``CanaryModels.generate_all`` (the grouped decoder of ``lorawatch.monitors.fast_decode``,
  what ``score_and_generate`` uses) from ``--gen-prompt``-token prompts, next to PEFT's
  ``generate`` per adapter on ``--hf-prompts`` prompts, with how many outputs agree.

Prints one JSON line per measurement: scored tokens/s, generated tokens/s, TFLOP/s (2 x
parameters per token), peak GPU memory, the speedup, and the largest KL difference between
the two ways (bf16 tolerance). ``--small`` shrinks everything for a CPU smoke run.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--naive-prompts", type=int, default=16)
    parser.add_argument("--small", action="store_true", help="Tiny shapes, for a CPU smoke run.")
    parser.add_argument(
        "--cache",
        choices=["dynamic", "static"],
        default=None,
        help="KV cache for generation (default: what the runner picks for the device).",
    )
    parser.add_argument("--skip-naive", action="store_true", help="Only the runner (for trying generation settings).")
    parser.add_argument(
        "--peft-scoring",
        action="store_true",
        help="Score with one PEFT pass per adapter instead of the grouped pass (what the runner did before).",
    )
    parser.add_argument("--gen-prompt", type=int, default=128, help="Prompt tokens for generation (the anchors' 128).")
    parser.add_argument("--gen-batch", type=int, default=256, help="Prompts per grouped generation batch.")
    parser.add_argument(
        "--hf-prompts", type=int, default=32, help="Prompts for PEFT's generate per adapter, for comparison (0: none)."
    )
    parser.add_argument(
        "--adapter-dtype",
        choices=["model", "float32"],
        default="model",
        help="LoRA weights in the model's dtype, or in fp32 as PeftModel.from_pretrained loads them "
        "onto a bf16 base (then PEFT adds an fp32 delta and rounds once).",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Only profile the runner's scoring of one batch (torch profiler): the top kernels by device time.",
    )
    args = parser.parse_args()

    import torch

    from benchmarks.random_llama import Tokens, build
    from lorawatch.monitors.canary_batch import CanaryModels, score_adapters, score_and_generate

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.small:
        args.prompts, args.length, args.batch, args.new_tokens, args.naive_prompts = 16, 32, 8, 8, 4
        args.gen_prompt, args.gen_batch, args.hf_prompts = 8, 8, 4
    model, cfg, n_params = build(
        [f"a{i}" for i in range(args.adapters)],
        args.small,
        device,
        dtype,
        adapter_dtype=torch.float32 if args.adapter_dtype == "float32" else None,
    )
    names = [f"a{i}" for i in range(args.adapters)]
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size - 1, (args.prompts, args.length), generator=generator).tolist()
    models = CanaryModels(model, Tokens(cfg.vocab_size), device, args.new_tokens)
    models.max_positions = cfg.max_position_embeddings
    models.grouped_scoring = not args.peft_scoring
    if args.cache:
        models.generation_config.cache_implementation = None if args.cache == "dynamic" else "static"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def emit(**kw):
        kw.update(
            torch=torch.__version__,
            device=torch.cuda.get_device_name() if cuda else "cpu",
            N=args.adapters,
            adapter_dtype=args.adapter_dtype,
            P=args.prompts,
            L=args.length,
            BS=args.batch,
            new_tokens=args.new_tokens,
        )
        print(json.dumps(kw), flush=True)

    def runner(generate: bool):
        results = {n: [] for n in names}
        scored = generated = 0
        for start in range(0, args.prompts, args.batch):
            chunk = ids[start : start + args.batch]
            prompt_ids = [row[:1] for row in chunk]
            references = [row[1:] for row in chunk]
            if generate:
                _, _, adapters = score_and_generate(models, prompt_ids, references, names)
            else:
                adapters = {n: {"scores": s} for n, s in score_adapters(models, prompt_ids, references, names).items()}
            for n in names:
                results[n] += adapters[n]["scores"]["kl_mean"]
                scored += int(sum(adapters[n]["scores"]["scored_tokens"]))
                if generate:
                    generated += sum(len(t) for t in adapters[n]["generation"].token_ids)
        return results, scored, generated

    # warm-up on one batch
    saved = args.prompts
    args.prompts = min(args.batch, args.prompts)
    runner(False)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            runner(False)
            sync()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70), flush=True)
        return
    args.prompts = saved
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    kl_runner, scored, _ = runner(False)
    sync()
    score_s = time.perf_counter() - t0
    flops = 2 * n_params
    emit(
        name="runner_scoring",
        grouped=not args.peft_scoring,
        seconds=round(score_s, 3),
        scored_tokens=scored,
        tok_per_s=round(scored / score_s),
        tflops=round(scored * flops / score_s / 1e12, 1),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    )

    if args.skip_naive:
        args.naive_prompts = 0
    # the naive loop: per adapter, per prompt, batch 1, full fp32 log-softmax
    t0 = time.perf_counter()
    naive_kl = {n: [] for n in names}
    with torch.no_grad():
        for n in names:
            model.set_adapter(n)
            for i in range(args.naive_prompts):
                x = torch.tensor([ids[i]], device=device)
                with model.disable_adapter():
                    lb = model(x).logits.float().log_softmax(-1)
                la = model(x).logits.float().log_softmax(-1)
                naive_kl[n].append(float((la.exp() * (la - lb)).sum(-1)[0, :-1].mean()))
    sync()
    if args.naive_prompts:
        naive_s = (time.perf_counter() - t0) * args.prompts / args.naive_prompts
        naive_tokens = args.adapters * args.prompts * (args.length - 1)
        emit(
            name="naive_extrapolated",
            seconds=round(naive_s, 3),
            scored_tokens=naive_tokens,
            tok_per_s=round(naive_tokens / naive_s),
            tflops=round(naive_tokens * flops / naive_s / 1e12, 2),
        )
        diffs = [abs(a - b) / max(abs(b), 1e-6) for n in names for a, b in zip(kl_runner[n], naive_kl[n])]
        emit(
            name="kl_agreement",
            max_relative_difference=round(max(diffs), 4),
            compared=len(diffs),
            speedup=round((scored / score_s) / (naive_tokens / naive_s), 1),
        )

    # generation: every (prompt, adapter) decodes --new-tokens greedy tokens from a --gen-prompt-token prompt
    gen_prompts = [row[: args.gen_prompt] for row in ids]

    def generation(fast: bool, prompts: list[list[int]]):
        models.fast_decode, models._grouped = fast, None
        outputs: dict[str, list[list[int]]] = {n: [] for n in names}
        base_tokens = 0
        sync()
        t0 = time.perf_counter()
        for start in range(0, len(prompts), args.gen_batch):
            chunk = prompts[start : start + args.gen_batch]
            if fast:
                base, gens = models.generate_all(chunk, names)
                base_tokens += sum(len(t) for t in base.token_ids)
                for n in names:
                    outputs[n] += gens[n].token_ids
            else:
                for n in names:
                    model.set_adapter(n)
                    outputs[n] += models.generate(chunk).token_ids
        sync()
        seconds = time.perf_counter() - t0
        return outputs, seconds, base_tokens

    generation(True, gen_prompts[: min(args.gen_batch, 16)])  # warm-up: kernels, graph capture code paths
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fast_out, fast_s, base_tokens = generation(True, gen_prompts)
    generated = sum(len(t) for rows in fast_out.values() for t in rows)
    emit(
        name="runner_generation",
        decoder="grouped static cache" + (" + CUDA graph" if cuda else ""),
        seconds=round(fast_s, 3),
        prompt_tokens=args.gen_prompt,
        generated_tokens=generated,
        generated_tok_per_s=round(generated / fast_s),
        with_base_tok_per_s=round((generated + base_tokens) / fast_s),
        gen_batch=args.gen_batch,
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    )
    if args.hf_prompts:
        hf_prompts = gen_prompts[: args.hf_prompts]
        models.generation_config.min_new_tokens = args.new_tokens
        hf_out, hf_s, _ = generation(False, hf_prompts)
        hf_generated = sum(len(t) for rows in hf_out.values() for t in rows)
        same = sum(a[:16] == b[:16] for n in names for a, b in zip(fast_out[n], hf_out[n]))
        emit(
            name="peft_generate_per_adapter",
            cache=models.generation_config.cache_implementation or "dynamic",
            prompts=len(hf_prompts),
            seconds=round(hf_s, 3),
            generated_tokens=hf_generated,
            generated_tok_per_s=round(hf_generated / hf_s),
            speedup=round((generated / fast_s) / (hf_generated / hf_s), 1),
            first16_identical=f"{same}/{len(hf_prompts) * len(names)}",
        )


if __name__ == "__main__":
    main()
