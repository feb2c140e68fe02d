"""Reproduce the three shipped demo adapters: ``python -m lorawatch.demo.train``.

``lorawatch demo`` never trains: it registers the adapters shipped in
``lorawatch/demo/adapters/`` (a few MB each). This script is how they were made, from the
SmolLM2 base ``lorawatch demo`` prepares and the pairs in ``lorawatch/demo/data``: PEFT LoRA
on every linear projection, loss on the response tokens only, weights stored as float16 with
``base_model_name_or_path`` set to the base's hub id, and ``manifest.json`` rewritten with each
file's sha256 (``tests/test_demo.py`` checks the shipped files against it).

Training runs on the CPU's own kernels, so a retrain on another machine gives other bits: commit
what it writes together with the manifest, and check the demo still shows a healthy, a drifted
and a risky adapter (``lorawatch demo --no-dashboard``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from lorawatch.demo.models import (
    ADAPTERS_DIR,
    BASE_HUB_ID,
    DEMO_ADAPTERS,
    DemoAdapter,
    prepare_base,
    read_pairs,
    write_manifest,
)
from lorawatch.models import quiet_transformers

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def train_adapter(base_dir: Path, spec: DemoAdapter, out_dir: Path, progress: bool = True, batch_size: int = 8) -> Path:
    """Train one demo LoRA adapter with PEFT (loss on the response tokens only) and save it as float16."""
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=spec.rank, lora_alpha=2 * spec.rank, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=LORA_TARGETS
    )
    model = get_peft_model(model, config)
    examples = []
    for pair in read_pairs(spec.data):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": pair["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(pair["response"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids, answer_ids))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr)
    generator = torch.Generator().manual_seed(spec.seed)
    model.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tqdm(total=spec.steps, desc=f"training {spec.name}", unit="step", disable=not progress) as bar:
        for _step in range(spec.steps):
            picks = torch.randint(0, len(examples), (batch_size,), generator=generator).tolist()
            batch = [examples[i] for i in picks]
            width = max(len(p) + len(a) for p, a in batch)
            input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
            labels = torch.full((batch_size, width), -100, dtype=torch.long)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for row, (p, a) in enumerate(batch):
                input_ids[row, : len(p) + len(a)] = torch.tensor(p + a)
                labels[row, len(p) : len(p) + len(a)] = torch.tensor(a)
                mask[row, : len(p) + len(a)] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
    model.eval()
    staging = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    weights = staging / "adapter_model.safetensors"
    # float16 halves the files; PEFT loads them into the model's dtype (fp32 on the CPU)
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"}
    )
    config_path = staging / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = BASE_HUB_ID  # not this machine's cache path
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    (staging / "README.md").unlink(missing_ok=True)  # PEFT's model card template says nothing here
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Train every demo adapter (or the named ones) into ``--out`` and rewrite its manifest."""
    parser = argparse.ArgumentParser(prog="python -m lorawatch.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ADAPTERS_DIR, help="where the adapters go (default: the shipped ones)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".lorawatch" / "demo" / "models",
        help="where the SmolLM2 base is prepared",
    )
    parser.add_argument("names", nargs="*", help="adapters to train (default: all three)")
    args = parser.parse_args(argv)
    known = {spec.name: spec for spec in DEMO_ADAPTERS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"no demo adapter {unknown[0]!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    base_dir = prepare_base(args.cache)
    for name in args.names or list(known):
        train_adapter(base_dir, known[name], args.out / name)
    write_manifest(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
