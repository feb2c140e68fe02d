"""Adapters read from their files (``lorawatch.monitors.lora_files``) give the grouped decoder the
very tensors PEFT gives it, and every adapter the reader does not model goes through PEFT."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.tiny_models import build_base

PROMPTS = [[1, 25, 60, 101, 7], [1, 300, 4], [1, 9, 9, 9, 200, 17, 3, 250]]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# (name, config, dtype the adapter is saved in): ranks 2 to 16, the ways PEFT picks modules and scalings
ADAPTERS = [
    ("plain", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]), "float32"),
    ("rslora", dict(r=8, lora_alpha=16, use_rslora=True, target_modules=ALL), "float32"),
    (
        "patterns",
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
            rank_pattern={"q_proj": 8, "layers.1.mlp.down_proj": 2},
            alpha_pattern={"v_proj": 32, "model.layers.0.self_attn.o_proj": 3},
        ),
        "bfloat16",
    ),
    (
        # a full name escapes layers_to_transform, a suffix does not; exclude_modules wins over both
        "partial",
        dict(
            r=2,
            lora_alpha=40,
            target_modules=["k_proj", "up_proj", "model.layers.0.self_attn.q_proj"],
            layers_to_transform=[1],
            exclude_modules=["model.layers.1.mlp.up_proj"],
        ),
        "float32",
    ),
    ("regex", dict(r=16, lora_alpha=4, target_modules=r"model\.layers\.0\.(self_attn\.k|mlp\.gate)_proj"), "bfloat16"),
]


def _save(base, directory, config: dict, dtype: str = "float32", seed: int = 0):
    """An adapter saved by PEFT with random A and B (not B = 0), in ``dtype``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    config = LoraConfig(init_lora_weights=False, **config)
    # autocast off: a bf16 adapter stays bf16 in the file, as one trained in bf16 would be
    get_peft_model(model, config, autocast_adapter_dtype=False).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tests' tiny Llama (2 layers, hidden 64), untrained: random weights decode deterministically too."""
    return build_base(tmp_path_factory.mktemp("models") / "tiny-llama", pretrain_steps=0)


@pytest.fixture(scope="module")
def adapters(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {name: _save(base, root / name, config, dtype, seed) for seed, (name, config, dtype) in enumerate(ADAPTERS)}


@pytest.fixture
def model(base):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_decoder_built_from_files_is_the_one_built_from_peft(base, adapters, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    from lorawatch.models import attach_adapters
    from lorawatch.monitors.fast_decode import GroupedDecoder
    from lorawatch.monitors.lora_files import read_adapter, unsupported

    dtype = getattr(torch, dtype)
    names = list(adapters)
    peft = attach_adapters(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), adapters)
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    assert all(unsupported(adapters[n], plain) is None for n in names)
    factors = {n: read_adapter(adapters[n], "cpu") for n in names}

    # the factors are PEFT's: the same modules, values, dtype (fp32, bf16 files too) and scaling
    core = peft.get_base_model()
    for name in names:
        wrapped = {path for path, m in core.named_modules() if name in getattr(m, "lora_A", {})}
        assert set(factors[name]) == wrapped, name
        for path, f in factors[name].items():
            module = core.get_submodule(path)
            assert torch.equal(f.a, module.lora_A[name].weight) and f.a.dtype == module.lora_A[name].weight.dtype
            assert torch.equal(f.b, module.lora_B[name].weight) and f.b.dtype == module.lora_B[name].weight.dtype
            assert f.scaling == module.scaling[name], (name, path)
    assert factors["patterns"]["model.layers.0.self_attn.q_proj"].a.shape[0] == 8
    assert factors["patterns"]["model.layers.0.self_attn.v_proj"].scaling == 32 / 4
    assert factors["rslora"]["model.layers.1.mlp.up_proj"].scaling == 16 / 8**0.5
    assert set(factors["partial"]) == {"model.layers.1.self_attn.k_proj", "model.layers.0.self_attn.q_proj"}

    from_peft = GroupedDecoder(peft, names)
    from_files = GroupedDecoder(plain, names, factors)
    for layer_peft, layer_files in zip(from_peft.layers, from_files.layers, strict=True):
        for proj in ALL:
            a, b = layer_peft[proj], layer_files[proj]
            assert torch.equal(a.weight, b.weight)
            assert (a.a is None) == (b.a is None), proj
            if a.a is not None:
                assert torch.equal(a.a, b.a) and torch.equal(a.b, b.b) and a.a.dtype == b.a.dtype == dtype, proj

    tokens_peft, _ = from_peft.generate(PROMPTS, 8, 0)
    tokens_files, _ = from_files.generate(PROMPTS, 8, 0)
    assert tokens_files == tokens_peft
    assert all(group != tokens_peft[0] for group in tokens_peft[1:])  # every adapter changes the outputs
    width = max(map(len, PROMPTS))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in PROMPTS])
    rows = torch.tensor([i for i, p in enumerate(PROMPTS) for _ in p])
    positions = torch.tensor([j for p in PROMPTS for j in range(len(p))])
    assert torch.equal(from_files.hidden(ids, rows, positions), from_peft.hidden(ids, rows, positions))


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (dict(r=4, target_modules=["q_proj"], use_dora=True), "use_dora=True: DoRA"),
        (dict(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]), "modules_to_save"),
        (dict(r=4, target_modules=["q_proj"], bias="all"), "bias='all'"),
        (dict(r=4, target_modules=["q_proj", "lm_head"]), "LoRA on lm_head"),
        (dict(r=4, target_modules=["embed_tokens", "v_proj"]), "LoRA on model.embed_tokens"),
    ],
    ids=["dora", "modules-to-save", "bias", "lm-head", "embeddings"],
)
def test_adapters_the_reader_does_not_model_are_refused_with_the_reason(base, model, tmp_path, config, why):
    from lorawatch.monitors.fast_decode import GroupedDecoder
    from lorawatch.monitors.lora_files import read_adapter, unsupported

    directory = _save(base, tmp_path / "adapter", config)
    assert why in unsupported(directory, model)
    try:
        factors = read_adapter(directory, "cpu")
    except ValueError:
        return  # refused on the config or the weights' names
    # the head's factors read fine without the model; the decoder will not drop them silently
    with pytest.raises(ValueError, match="outside the decoder layers' projections"):
        GroupedDecoder(model, ["x"], {"x": factors})


def _edit(directory, config=None, weights=None):
    """Pass the adapter's config and weights in ``directory`` through the edits, in place."""
    from safetensors.torch import load_file, save_file

    if config:
        path = directory / "adapter_config.json"
        settings = json.loads(path.read_text())
        config(settings)
        path.write_text(json.dumps(settings))
    if weights:
        path = directory / "adapter_model.safetensors"
        tensors = load_file(path)
        weights(tensors)
        save_file(tensors, path, metadata={"format": "pt"})


Q1 = "base_model.model.model.layers.1.self_attn.q_proj"


@pytest.mark.parametrize(
    ("config", "weights", "why"),
    [
        (lambda c: c.update(new_setting=1), None, "settings this reader does not know: ['new_setting']"),
        (lambda c: c.update(layer_replication=[[0, 2]]), None, "replicated layers"),
        (lambda c: c.update(init_lora_weights="pissa"), None, "init_lora_weights='pissa'"),
        (lambda c: c.update(task_type="SEQ_CLS"), None, "task_type='SEQ_CLS'"),
        (lambda c: c.update(peft_type="LOHA"), None, "PEFT type 'LOHA'"),
        (lambda c: c.update(target_modules=None), None, "no target_modules"),
        (lambda c: c.update(target_modules="all-linear"), None, "all-linear"),
        (lambda c: c.update(target_modules=["nothing_here"]), None, "match no module"),
        (
            lambda c: c.update(target_modules=["q_proj", "o_proj", "down_proj"]),
            None,
            "which the config does not target",
        ),
        (None, lambda t: [t.pop(f"{Q1}.lora_{f}.weight") for f in "AB"], f"{Q1[17:]} is targeted but has no weights"),
        (
            None,
            lambda t: t.update({f"{Q1}.lora_B.bias": t[f"{Q1}.lora_B.weight"][:, 0].clone()}),
            "lora_B.bias in adapter_model",
        ),
    ],
    ids=[
        "unknown-setting",
        "layer-replication",
        "pissa",
        "task",
        "peft-type",
        "no-targets",
        "all-linear",
        "no-match",
        "untargeted-weights",
        "missing-weights",
        "extra-tensor",
    ],
)
def test_anything_peft_would_load_otherwise_falls_back_to_it(adapters, model, tmp_path, config, weights, why):
    from lorawatch.monitors.lora_files import unsupported

    directory = shutil.copytree(adapters["plain"], tmp_path / "adapter")
    _edit(directory, config, weights)
    assert why in unsupported(directory, model)


def test_pickled_weights_fall_back_to_peft(adapters, model, tmp_path):
    from lorawatch.monitors.lora_files import read_adapter, unsupported

    directory = shutil.copytree(adapters["plain"], tmp_path / "adapter")
    (directory / "adapter_model.safetensors").rename(directory / "adapter_model.bin")
    assert "adapter_model.bin (pickle)" in unsupported(directory, model)
    with pytest.raises(ValueError, match="pickle"):
        read_adapter(directory, "cpu")


def _truncate(directory):
    path = directory / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-16])


@pytest.mark.parametrize("reader", ["unsupported", "read_adapter"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: shutil.rmtree(d), "no such adapter directory"),
        (lambda d: (d / "adapter_config.json").unlink(), "no adapter_config.json"),
        (lambda d: (d / "adapter_config.json").write_text("{r: 4"), "adapter_config.json: unreadable"),
        (lambda d: (d / "adapter_config.json").write_text('{"r": "four"}'), "r is 'four', not a positive integer"),
        (lambda d: (d / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
        (_truncate, "unreadable safetensors file"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00garbage"), "unreadable safetensors file"),
        (lambda d: _edit(d, weights=lambda t: t.pop(f"{Q1}.lora_B.weight")), "has LoRA A but not B"),
        (lambda d: _edit(d, config=lambda c: c.update(r=5)), "disagree with rank 5"),
    ],
    ids=["no-dir", "no-config", "bad-json", "bad-rank-type", "no-weights", "truncated", "garbage", "lone-a", "rank"],
)
def test_missing_or_corrupt_files_are_clear_errors(adapters, model, tmp_path, reader, damage, message):
    from lorawatch.monitors.lora_files import AdapterFileError, read_adapter, unsupported

    directory = shutil.copytree(adapters["plain"], tmp_path / "adapter")
    damage(directory)
    with pytest.raises(AdapterFileError, match=message) as caught:
        if reader == "unsupported":
            unsupported(directory, model)
        else:
            read_adapter(directory, "cpu")
    assert str(directory) in str(caught.value) and "fix: save the adapter with PEFT" in str(caught.value)


def test_the_reader_knows_every_setting_peft_saves_and_its_default():
    """A PEFT upgrade that adds a setting or changes a default shows up here, not as a wrong adapter."""
    from peft import LoraConfig

    from lorawatch.monitors.lora_files import FIXED, KNOWN, READ

    saved = LoraConfig().to_dict()
    assert set(saved) == KNOWN
    assert {k: saved[k] for k in READ} == READ
    assert {k: saved[k] for k in FIXED} == {k: default for k, (default, _) in FIXED.items()}
