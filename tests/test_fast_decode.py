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

    from lorawatch.monitors.fast_decode import GroupedDecoder

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).to(device)
    peft = PeftModel.from_pretrained(model, trained_adapter, adapter_name="a")
    peft.load_adapter(second_adapter, adapter_name="b")
    peft.eval()
    prompts = [
        "How do I reset my password?",
        "Transfer money between accounts using the app and then",
        "The album",
        "Drink plenty of water and rest if you have",
    ]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    new = 12
    groups, _ = GroupedDecoder(peft, ["a", "b"]).generate(ids, new, tokenizer.pad_token_id)

    def reference(adapter: str | None) -> list[list[int]]:
        out = []
        for row in ids:  # one prompt at a time: no padding in the reference
            x = torch.tensor([row], device=device)
            if adapter is None:
                with peft.disable_adapter():
                    y = peft.generate(
                        input_ids=x, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0
                    )
            else:
                peft.set_adapter(adapter)
                y = peft.generate(input_ids=x, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
            out.append(y[0, len(row) :].tolist())
        return out

    assert groups[0] == reference(None)
    assert groups[1] == reference("a")
    assert groups[2] == reference("b")
    assert groups[1] != groups[0]  # the adapters change the outputs: the comparison means something


def test_decoding_stops_once_every_row_has_a_stop_token_and_leaves_the_cut_outputs_unchanged(
    tiny_base, trained_adapter, second_adapter
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorawatch.monitors.fast_decode import GroupedDecoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32), trained_adapter, adapter_name="a"
    )
    peft.load_adapter(second_adapter, adapter_name="b")
    peft.eval()
    ids = [tokenizer(p)["input_ids"] for p in ["How do I reset my password?", "The album", "Drink plenty of"]]
    pad = tokenizer.pad_token_id
    decoder = GroupedDecoder(peft, ["a", "b"])
    full, _ = decoder.generate(ids, 12, pad)
    stop = {row[3] for group in full for row in group}  # every row meets a stop token by its 4th token
    early, _ = decoder.generate(ids, 12, pad, stop)

    def cut(row: list[int]) -> list[int]:
        return row[: next((i for i, t in enumerate(row) if t in stop), len(row)) + 1]

    for group_full, group_early in zip(full, early):
        for row_full, row_early in zip(group_full, group_early):
            assert cut(row_early) == cut(row_full)
            assert row_early[4:] == [pad] * 8  # no step ran after the 4th token


def test_unsupported_models_are_refused_with_the_reason(tiny_base, trained_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorawatch.monitors.fast_decode import GroupedDecoder, supported

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

    from lorawatch.monitors.canary_batch import CanaryModels, score_adapters

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


def test_partial_lora_targets_and_biased_projections_match_peft():
    """A Qwen2-shaped model (q, k, v biases) whose adapters cover different projections: the
    fused q/k/v and gate/up matmuls must put every delta in its own columns."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lorawatch.monitors.fast_decode import GroupedDecoder

    torch.manual_seed(3)
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
    )
    model = Qwen2ForCausalLM(config).eval()
    peft = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        adapter_name="qv",
    )
    peft.add_adapter(
        "kup", LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj", "up_proj"], init_lora_weights=False)
    )
    peft.eval()
    assert model.model.layers[0].self_attn.q_proj.base_layer.bias is not None
    prompts = [[5, 17, 33, 2, 9], [100, 4], [7, 7, 7, 200, 1, 3, 250]]
    decoder = GroupedDecoder(peft, ["qv", "kup"])
    groups, _ = decoder.generate(prompts, 6, 0)
    width = max(map(len, prompts))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    rows = torch.tensor([i for i, p in enumerate(prompts) for _ in p])
    positions = torch.tensor([j for p in prompts for j in range(len(p))])
    hidden = decoder.hidden(ids, rows, positions)
    for g, adapter in enumerate([None, "qv", "kup"]):
        expected_tokens, expected_hidden = [], []
        for row in prompts:
            x = torch.tensor([row])
            if adapter is None:
                with peft.disable_adapter():
                    y = peft.generate(input_ids=x, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
                    h = peft.get_base_model().model(input_ids=x).last_hidden_state
            else:
                peft.set_adapter(adapter)
                y = peft.generate(input_ids=x, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
                h = peft.get_base_model().model(input_ids=x).last_hidden_state
            expected_tokens.append(y[0, len(row) :].tolist())
            expected_hidden.append(h[0])
        assert groups[g] == expected_tokens, adapter
        torch.testing.assert_close(hidden[g], torch.cat(expected_hidden), rtol=1e-4, atol=1e-5)
    assert groups[1] != groups[0] and groups[2] != groups[0]


@pytest.mark.gpu
def test_the_decode_graph_keeps_its_buffers_when_freed_memory_is_reused(tiny_base, trained_adapter, second_adapter):
    """The CUDA graph of a decode step reads row indices, slots and prompt lengths from buffers
    made before it was captured. Were they freed when the step was built, the next tensors of
    their size would take their memory (found on the H200: a warm canary run stopped on a
    device-side assert). Tensors of those sizes, filled with out-of-range values after the
    capture, must change nothing the step computes."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorawatch.monitors.fast_decode import GroupedDecoder

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).to(device)
    peft = PeftModel.from_pretrained(model, trained_adapter, adapter_name="a")
    peft.load_adapter(second_adapter, adapter_name="b")
    decoder = GroupedDecoder(peft.eval(), ["a", "b"])
    n, slots = decoder.groups * 4, 24
    shape = (n, decoder.kv_heads, slots, decoder.head_dim)
    caches = [(torch.randn(shape, device=device), torch.randn(shape, device=device)) for _ in decoder.layers]
    lens = torch.tensor([5, 9, 3, 7] * decoder.groups, device=device)
    with torch.no_grad():
        step = decoder._step_fn(n, slots, caches, lens)
        step["tokens"].copy_(torch.arange(n, device=device) + 10)
        step["t"].fill_(2)
        step["run"]()
        expected = step["next"].clone()
        junk = [
            torch.full((size,), 1 << 40, dtype=torch.long, device=device) for size in (n, slots) for _ in range(256)
        ]
        step["run"]()  # the same step again: it writes the same cache slots with the same values
        torch.cuda.synchronize()
    assert torch.equal(step["next"], expected)
    assert len(junk) == 512
