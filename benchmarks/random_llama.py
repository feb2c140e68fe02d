"""The benchmarks' model: a Llama-3.2-1B-shaped model with random weights (nothing can be
fetched on a GPU machine) and rank-16 LoRA adapters on every linear layer, with a tokenizer for
prompts written as token ids."""

from __future__ import annotations

import re

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Tokens:
    """The few tokenizer attributes the runner reads; a text is its token ids ("17 4 99")."""

    def __init__(self, vocab: int) -> None:
        self.eos_token_id = vocab - 1
        self.pad_token_id = 0
        self.chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(t) for t in re.findall(r"\d+", text)]}

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(map(str, row)) for row in rows]


def build(names: list[str], small: bool, device, dtype, seeded: bool = False, adapter_dtype=None, vocab=None):
    """The PeftModel with one adapter per name, its config and the base's parameter count.

    Adapter weights: PEFT's non-zero init scaled by 0.05 (so KL is non-zero), or with
    ``seeded`` drawn from a generator seeded by the adapter's number, so an adapter has the
    same weights whichever other adapters share its process. They are in ``dtype`` like the
    base, or in ``adapter_dtype`` (fp32: as ``PeftModel.from_pretrained`` loads adapters onto a
    bf16 base, which is how ``lorawatch canary run`` loads them). ``vocab`` overrides the
    vocabulary's size (a real tokenizer's ids must fit).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if small:
        cfg = LlamaConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1024,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )
    else:
        cfg = LlamaConfig(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    if vocab is not None:
        cfg.vocab_size = vocab
    with torch.device(device):
        base = LlamaForCausalLM(cfg).to(dtype)
    base.eval()
    n_params = sum(p.numel() for p in base.parameters())
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False)
    model = get_peft_model(base, lora, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, lora)
    with torch.no_grad():
        for key in names:
            generator = torch.Generator().manual_seed(1000 + int(key.lstrip("a"))) if seeded else None
            for name, p in model.named_parameters():
                if "lora_" in name and f".{key}." in name:
                    if seeded:
                        p.copy_((torch.randn(p.shape, generator=generator) * 0.05 / p.shape[-1] ** 0.5).to(p.dtype))
                    else:
                        p.mul_(0.05)
    model.to(dtype).eval()
    if adapter_dtype is not None:
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data = p.data.to(adapter_dtype)
    return model, cfg, n_params
