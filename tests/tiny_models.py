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
        vocab_size=384, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
    )
    fast.chat_template = (
        "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
    )
    fast.save_pretrained(directory)
    return fast


def build_base(directory: Path, seed: int = 42) -> Path:
    """A random 2-layer Llama (hidden 64) with its tokenizer, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def train_adapter(base_dir: Path, out_dir: Path, *, seed: int = 0, steps: int = 30, zero: bool = False,
                  texts: list[str] | None = None, rank: int = 4) -> Path:
    """A real PEFT LoRA adapter on the tiny base: trained on ``texts`` or, with ``zero``, B = 0."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                        lora_dropout=0.0, task_type="CAUSAL_LM")
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
