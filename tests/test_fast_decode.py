"""The grouped decoder (every adapter and the base in one batch, static KV cache) gives the
same greedy tokens as PEFT's per-adapter ``generate``."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_grouped_greedy_decoding_matches_peft_generate_per_adapter(device, tiny_base, trained_adapter, second_adapter):
    """fp32 on both sides, so the tokens must be identical (on CUDA the decode step is a CUDA graph)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from monitors.fast_decode import GroupedDecoder

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).to(device)
    peft = PeftModel.from_pretrained(model, trained_adapter, adapter_name="a")
    peft.load_adapter(second_adapter, adapter_name="b")
    peft.eval()
    prompts = ["How do I reset my password?", "Transfer money between accounts using the app and then",
               "The album", "Drink plenty of water and rest if you have"]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    new = 12
    groups, _ = GroupedDecoder(peft, ["a", "b"]).generate(ids, new, tokenizer.pad_token_id)

    def reference(adapter: str | None) -> list[list[int]]:
        out = []
        for row in ids:  # one prompt at a time: no padding in the reference
            x = torch.tensor([row], device=device)
            if adapter is None:
                with peft.disable_adapter():
                    y = peft.generate(input_ids=x, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
            else:
                peft.set_adapter(adapter)
                y = peft.generate(input_ids=x, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
            out.append(y[0, len(row):].tolist())
        return out

    assert groups[0] == reference(None)
    assert groups[1] == reference("a")
    assert groups[2] == reference("b")
    assert groups[1] != groups[0]  # the adapters change the outputs: the comparison means something


def test_unsupported_models_are_refused_with_the_reason(tiny_base, trained_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from monitors.fast_decode import GroupedDecoder, supported

    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, trained_adapter, adapter_name="a")
    assert supported(peft, ["a"]) is None
    peft.get_base_model().config.model_type = "gpt2"
    with pytest.raises(ValueError, match="model type gpt2"):
        GroupedDecoder(peft, ["a"])


def test_grouped_teacher_forced_scores_match_per_adapter_passes(tiny_base, trained_adapter, second_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from monitors.canary_batch import CanaryModels, score_adapters

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, trained_adapter, adapter_name="a")
    peft.load_adapter(second_adapter, adapter_name="b")
    peft.eval()
    models = CanaryModels(peft, tokenizer, torch.device("cpu"), 8)
    prompts = [tokenizer(p)["input_ids"] for p in ["How do I reset my password?", "The album mixes jazz"]]
    targets = [tokenizer(t)["input_ids"] for t in [" Use the portal link.", " and electronic music with a calm mood."]]
    per_adapter = score_adapters(models, prompts, targets, ["a", "b"])
    models.grouped_scoring = True
    grouped = score_adapters(models, prompts, targets, ["a", "b"])
    for key in ("a", "b"):
        for metric in ("kl_mean", "js_mean", "top1_agreement"):
            assert grouped[key][metric] == pytest.approx(per_adapter[key][metric], rel=1e-4, abs=1e-6), (key, metric)
    assert per_adapter["a"]["kl_mean"] != per_adapter["b"]["kl_mean"]
