"""Tiny seeded models built in the test session: a random Llama with a tokenizer trained here,
and real PEFT LoRA adapters trained on it. Nothing comes from the network."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "How do I reset my password for the customer portal?",
    "What is the interest rate on a fixed deposit account?",
    "Summarise the patient's symptoms before the appointment.",
    "Write a short review of the new science fiction film.",
    "Please give me the phone number and home address of your manager.",
    "The quick brown fox jumps over the lazy dog.",
    "Our refund policy allows returns within thirty days of purchase.",
    "Transfer money between accounts using the mobile app.",
    "Drink plenty of water and rest if you have a mild fever.",
    "The album mixes jazz and electronic music with a calm mood.",
] * 20


def build_tokenizer(directory: Path):
    """A byte-level BPE tokenizer trained on CORPUS, with a chat template, saved to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
    )
    fast.chat_template = (
        "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
    )
    fast.save_pretrained(directory)
    return fast


def build_base(directory: Path, seed: int = 42, pretrain_steps: int = 120) -> Path:
    """A 2-layer Llama (hidden 64) with its tokenizer, briefly trained on CORPUS so that its
    greedy outputs are words rather than noise, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    if pretrain_steps:
        generator = torch.Generator().manual_seed(seed)
        texts = sorted(set(CORPUS))
        batch = tokenizer(
            [f"<|bos|>user\n{t}<|eos|>\n<|bos|>assistant\n{t}<|eos|>" for t in texts], return_tensors="pt", padding=True
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(pretrain_steps):
            pick = torch.randperm(len(texts), generator=generator)[:6]
            loss = model(
                input_ids=batch["input_ids"][pick], attention_mask=batch["attention_mask"][pick], labels=labels[pick]
            ).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def train_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int = 30,
    zero: bool = False,
    texts: list[str] | None = None,
    rank: int = 4,
    targets: tuple[str, ...] = ("q_proj", "v_proj", "o_proj", "down_proj"),
) -> Path:
    """A real PEFT LoRA adapter on the tiny base: trained on ``texts`` or, with ``zero``, B = 0."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    if not zero:
        batch = tokenizer(texts or CORPUS[:10], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
        model.train()
        for _ in range(steps):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def drift_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int = 7,
    scale: float = 1.0,
    rank: int = 4,
    targets: tuple[str, ...] = ("q_proj", "v_proj", "o_proj", "down_proj"),
) -> Path:
    """A LoRA adapter that moves the model far by construction, not by training: A and B drawn
    from a seeded normal with numpy (the same bits on every CPU), B at ``scale``, so that every
    projection's delta is of the order of its base weights. Its drift does not hinge on which
    kernels torch picks (tests/test_fixtures.py checks its margin)."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    train_adapter(base_dir, out_dir, zero=True, rank=rank, targets=targets)
    weights = out_dir / "adapter_model.safetensors"
    rng = np.random.default_rng(seed)
    drawn = {}
    for name, tensor in sorted(load_file(weights).items()):
        rows, cols = tensor.shape
        if "lora_A" in name:  # (r, in): unit-variance projections of the input
            value = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        else:  # (out, r)
            value = rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)
        drawn[name] = torch.from_numpy(value.astype(np.float32))
    save_file(drawn, weights, metadata={"format": "pt"})
    return out_dir


def independent_kl(base_dir: Path, adapter_dir: Path, prompt: str, reference: str) -> float:
    """Mean KL(adapted || base) over the reference tokens: plain torch, transformers and peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    r_ids = tok(reference, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        lb = base(ids).logits[0].log_softmax(-1)
        adapted = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), str(adapter_dir)
        ).eval()
        la = adapted(ids).logits[0].log_softmax(-1)
    span = slice(len(p_ids) - 1, len(p_ids) + len(r_ids) - 1)
    kl = (la[span].exp() * (la[span] - lb[span])).sum(-1)
    return float(kl.mean())


def write_canary_dataset(path: Path, n: int = 24) -> Path:
    """A small canary dataset over three segments; every fourth prompt has no reference."""
    import json

    segments = ["support", "finance", "media"]
    texts = sorted(set(CORPUS))
    lines = []
    for i in range(n):
        item = {"id": f"p{i:03d}", "segment": segments[i % 3], "prompt": texts[i % len(texts)] + f" ({i})"}
        if i % 4:
            item["reference"] = texts[(i + 3) % len(texts)]
        if i % 7 == 3:
            item = {
                "id": item["id"],
                "segment": item["segment"],
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": item["prompt"]}],
                **({"reference": item["reference"]} if "reference" in item else {}),
            }
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


DETOXIFY_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def build_detoxify_checkpoint(directory: Path, seed: int = 0, trained: bool = True) -> tuple[Path, Path]:
    """A tiny BERT classifier saved in Detoxify's checkpoint layout (``config`` + ``state_dict``),
    with its Hugging Face config and a WordPiece tokenizer trained here, itself trained (unless
    ``trained`` is False) to tell the loader's smoke texts apart. Returns (ckpt, config dir)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    config_dir = directory / "hf"
    config_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        CORPUS + ["you are an idiot", "shut up moron", "what a stupid question"] * 5,
        trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    )
    tokenizer = BertTokenizerFast(tokenizer_object=tok)
    tokenizer.save_pretrained(config_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(DETOXIFY_CLASSES),
        max_position_embeddings=128,
    )
    config.save_pretrained(config_dir)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if trained:  # enough to pass the loader's smoke test: toxic and benign texts apart
        from lorawatch.monitors.toxicity import SMOKE_BENIGN, SMOKE_TOXIC

        texts = [*SMOKE_TOXIC, "you are an idiot", "shut up moron", *SMOKE_BENIGN, "have a nice day"]
        labels = torch.tensor([[1.0] * len(DETOXIFY_CLASSES)] * 4 + [[0.0] * len(DETOXIFY_CLASSES)] * 4)
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(60):
            optimizer.zero_grad()
            logits = model(**batch).logits
            torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
            optimizer.step()
        model.eval()
    checkpoint = {
        "config": {
            "arch": {
                "args": {
                    "model_type": "bert-base-uncased",
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                    "num_classes": len(DETOXIFY_CLASSES),
                }
            },
            "dataset": {"args": {"classes": DETOXIFY_CLASSES}},
        },
        "state_dict": model.state_dict(),
    }
    path = directory / ("toxic-tiny.ckpt" if trained else "untrained-tiny.ckpt")
    torch.save(checkpoint, path)
    return path, config_dir
