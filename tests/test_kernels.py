"""The fused Triton kernels (``lorawatch.monitors.kernels``) compute what the eager code computes, rounding
where it rounds. On the CPU they run under Triton's interpreter (conftest sets
``TRITON_INTERPRET=1`` when there is no GPU); on a GPU the same tests run compiled."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

DEVICES = ["interpreter", pytest.param("cuda", marks=pytest.mark.gpu)]


def _device(name: str):
    from lorawatch.monitors import kernels

    assert kernels.triton is not None, "triton is not installed (it is in the dev extra)"
    if name == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")
        return torch.device("cuda")
    if not kernels.INTERP:
        pytest.skip("this process compiles the kernels for the GPU (TRITON_INTERPRET is not set)")
    return torch.device("cpu")


def _same_bf16(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal, but for rare one-ulp differences where fp32 library functions (rsqrt, exp) differ."""
    assert got.shape == want.shape and got.dtype == want.dtype
    equal = (got == want).float().mean().item()
    assert equal >= 0.999, f"only {equal:.4%} of the values are equal"
    ulp = want.float().abs().clamp(min=1e-30) * 2**-7
    assert ((got.float() - want.float()).abs() <= ulp).all()


@pytest.mark.parametrize("name", DEVICES)
def test_norm_rotary_and_swiglu_round_as_eager(name):
    import torch.nn.functional as F
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

    from lorawatch.monitors import kernels

    device = _device(name)
    g = torch.Generator().manual_seed(0)
    bf = torch.bfloat16
    d = 96  # not a power of two: the kernels mask the tail
    norm = LlamaRMSNorm(d, eps=1e-5).to(device, bf)
    norm.weight.data = torch.randn(d, generator=g).to(device, bf)
    x = (torch.randn(2, 37, d, generator=g) * torch.logspace(-2, 2, 37).view(1, 37, 1)).to(device, bf)
    r = torch.randn(2, 37, d, generator=g).to(device, bf)
    out, same = kernels.rms_norm(x, norm.weight, norm.variance_epsilon)
    assert same is x
    _same_bf16(out, norm(x))
    out, summed = kernels.rms_norm(x, norm.weight, norm.variance_epsilon, residual=r)
    assert torch.equal(summed, x + r)
    _same_bf16(out, norm(x + r))

    n, t, h, hd = 3, 5, 4, 16
    q = torch.randn(n, t, h, hd, generator=g).to(device, bf) * 4
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    for positions in (torch.arange(t).view(1, t), torch.arange(n * t).view(n, t) % 7):  # shared, then per row
        freqs = positions.float().unsqueeze(-1) * inv
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos().to(device, bf), emb.sin().to(device, bf)
        want, _ = apply_rotary_pos_emb(q.transpose(1, 2), q.transpose(1, 2), cos, sin)
        _same_bf16(kernels.rotary(q, cos, sin), want.transpose(1, 2))

    gate = (torch.randn(3, 1000, generator=g) * 4).to(device, bf)
    up = torch.randn(3, 1000, generator=g).to(device, bf)
    _same_bf16(kernels.silu_mul(gate, up), F.silu(gate) * up)


@pytest.mark.parametrize("name", DEVICES)
@pytest.mark.parametrize("rows, rank", [(32, 16), (96, 48)])  # one tile a group; three tiles of 32, rank padded to 64
def test_swiglu_with_lora_deltas_matches_adding_them_first_as_peft_does(name, rows, rank):
    import torch.nn.functional as F

    from lorawatch.monitors import kernels

    device = _device(name)
    g = torch.Generator().manual_seed(2)
    bf = torch.bfloat16
    groups, d, n = 3, 48, 200  # 200 columns: the last tile is partly masked
    h = torch.randn(groups, rows, d, generator=g).to(device, bf)
    gate = torch.randn(groups, rows, n, generator=g).to(device, bf)
    up = torch.randn(groups, rows, n, generator=g).to(device, bf)
    a = (torch.randn(groups, d, 2 * rank, generator=g) * 0.3).to(device, bf)
    b_gate = (torch.randn(groups, rank, n, generator=g) * 0.3).to(device, bf)
    b_up = (torch.randn(groups, rank, n, generator=g) * 0.3).to(device, bf)
    a[0], b_gate[0], b_up[0] = 0, 0, 0  # group 0 is the base
    xa = torch.bmm(h[1:], a[1:])
    assert kernels.lora_swiglu_applies(rows, rank) and not kernels.lora_swiglu_applies(rows + 8, rank)
    got = kernels.lora_swiglu(gate, up, xa.reshape(-1, 2 * rank), b_gate, b_up, rows)
    # as PEFT adds a delta: rounded, then added (and rounded)
    want_gate = torch.cat([gate[:1], gate[1:] + torch.bmm(xa[..., :rank], b_gate[1:])])
    want_up = torch.cat([up[:1], up[1:] + torch.bmm(xa[..., rank:], b_up[1:])])
    _same_bf16(got, F.silu(want_gate) * want_up)
    assert not torch.equal(got[1:], (F.silu(gate) * up)[1:])  # the deltas were added
    assert torch.equal(got[0], (F.silu(gate) * up)[0])  # and not to the base's rows


@pytest.mark.parametrize("name", DEVICES)
def test_drift_kernel_matches_the_eager_metrics(name):
    from lorawatch.monitors import kernels
    from lorawatch.monitors.logit_drift import _chunk_metrics

    device = _device(name)
    g = torch.Generator().manual_seed(1)
    m, v = 24, 5003  # two blocks of the vocabulary, the second partly masked
    base = (torch.randn(m, v, generator=g) * 3).to(torch.bfloat16)
    adapted = (base.float() + torch.randn(m, v, generator=g) * torch.linspace(0.0, 1.0, m).view(m, 1)).to(
        torch.bfloat16
    )
    adapted[0] = base[0]  # identical rows: KL and JS exactly zero
    base[5, [7, 4900]] = 40.0  # a tie for the maximum: the first index wins, as torch's argmax
    adapted[5, 4900] = 40.0
    labels = torch.randint(0, v, (m,), generator=g)
    base, adapted, labels = base.to(device), adapted.to(device), labels.to(device)

    lse, arg = kernels.base_stats(base)
    torch.testing.assert_close(lse, base.float().logsumexp(-1), rtol=1e-6, atol=1e-5)
    assert torch.equal(arg.long(), base.float().argmax(-1))
    kl, js, agree, lpb, lpa = kernels.drift(adapted, base, lse, arg, labels)
    want = _chunk_metrics(adapted, base.float().log_softmax(-1), labels.unsqueeze(-1))
    assert kl[0].item() == 0.0 and js[0].item() == 0.0
    torch.testing.assert_close(kl, want[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(js, want[1], rtol=1e-4, atol=1e-6)
    assert torch.equal(agree, want[2])
    assert agree[5].item() is False and 0 < agree.float().mean().item() < 1
    torch.testing.assert_close(lpb, want[3], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lpa, want[4], rtol=1e-6, atol=1e-5)
    assert kl[1:].min().item() > 0 and kl[-1] > kl[2]


@pytest.mark.parametrize("name", DEVICES)
def test_fused_grouped_pass_matches_the_eager_one(name, monkeypatch, tmp_path, tiny_base):
    """bf16 end to end, adapters on every projection: the grouped decoder's hidden states,
    scores and greedy tokens with the kernels equal those without (the kernels round as eager
    rounds)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorawatch.monitors import kernels
    from lorawatch.monitors.canary_batch import CanaryModels, score_adapters
    from tests.tiny_models import CORPUS, train_adapter

    device = _device(name)
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    trained_adapter = train_adapter(tiny_base, tmp_path / "a", targets=every)
    second_adapter = train_adapter(tiny_base, tmp_path / "b", seed=1, texts=CORPUS[5:15], targets=every, rank=8)
    monkeypatch.setenv("LORAWATCH_FUSED_KERNELS", "interpret" if device.type == "cpu" else "1")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16).to(device)
    peft = PeftModel.from_pretrained(model, trained_adapter, adapter_name="a")
    peft.load_adapter(second_adapter, adapter_name="b")
    peft.eval()
    models = CanaryModels(peft, tokenizer, device, 6)
    # 16 prompts: whole 16-row tiles for the SwiGLU kernel with LoRA deltas, in the teacher-forced
    # pass and in every decode step (one row per prompt and group)
    texts = ["How do I reset my password?", "The album mixes jazz", "Drink water", "Transfer money"] * 4
    prompts = [tokenizer(p)["input_ids"][: 3 + i % 5] for i, p in enumerate(texts)]
    targets = [
        tokenizer(t)["input_ids"][:4]
        for t in [" Use the portal link.", " and electronic music.", " and rest.", " between accounts"] * 4
    ]
    input_ids, _, rows, positions, _ = models.layout(prompts, targets)

    decoder = models.grouped(["a", "b"])
    assert decoder.fused and kernels.available(device)
    rank = decoder.layers[0]["gate_up_a"].shape[2] // 2
    assert kernels.lora_swiglu_applies(input_ids.numel(), rank) and kernels.lora_swiglu_applies(len(prompts), rank)
    fused_hidden = decoder.hidden(input_ids, rows, positions)
    fused_scores = score_adapters(models, prompts, targets, ["a", "b"])
    fused_tokens = models.generate_all(prompts, ["a", "b"])

    decoder.fused = False
    monkeypatch.setenv("LORAWATCH_FUSED_KERNELS", "0")
    eager_hidden = decoder.hidden(input_ids, rows, positions)
    eager_scores = score_adapters(models, prompts, targets, ["a", "b"])
    eager_tokens = models.generate_all(prompts, ["a", "b"])

    _same_bf16(fused_hidden, eager_hidden)
    for key in ("a", "b"):
        for metric, values in eager_scores[key].items():
            assert fused_scores[key][metric] == pytest.approx(values, rel=2e-3, abs=1e-5), (key, metric)
    assert fused_tokens[0].token_ids == eager_tokens[0].token_ids
    for key in ("a", "b"):
        assert fused_tokens[1][key].token_ids == eager_tokens[1][key].token_ids
    assert eager_scores["a"]["kl_mean"] != eager_scores["b"]["kl_mean"]
