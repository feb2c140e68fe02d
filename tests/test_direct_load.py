"""A base built from its files without transformers (``lorawatch.llama_file``,
``lorawatch.tokenizer_file``) is the one transformers builds: the same tokens for every shipped
canary prompt, the same weights, norms and rotary embedding, so the grouped decoder gives the
same tokens, hidden states and stored rows; what it does not model goes through transformers,
with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from lorawatch.db.models import CanaryResult
from tests.canary_fixtures import canary_file, registered, settings  # noqa: F401
from tests.tiny_models import build_tokenizer

CANARY_DATA = Path(__file__).resolve().parents[1] / "canary_data"
PROMPTS = [[1, 25, 60, 101, 7], [1, 300, 4], [1, 9, 9, 9, 200, 17, 3, 250]]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The demo's SmolLM2-135M-Instruct folder (converted from the GGUF the package ships)."""
    from lorawatch.demo.models import prepare_base

    return prepare_base(tmp_path_factory.mktemp("demo-models"), progress=False)


def _all_canary_prompts():
    from lorawatch.monitors.dataset import load_dataset

    return [p for path in sorted(CANARY_DATA.glob("*.jsonl")) for p in load_dataset(str(path)).prompts]


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_the_tokenizer_read_from_files_is_transformers_on_every_shipped_prompt(which, tiny_base, request):
    from transformers import AutoTokenizer

    from lorawatch.models import chat_prompt, load_tokenizer
    from lorawatch.tokenizer_file import FileTokenizer, unsupported

    folder = Path(tiny_base if which == "tiny" else request.getfixturevalue("smollm2"))
    assert unsupported(folder) is None
    ours, theirs = FileTokenizer(folder), load_tokenizer(str(folder), {})
    assert isinstance(theirs, type(AutoTokenizer.from_pretrained(folder)))
    assert (ours.eos_token_id, ours.pad_token_id, len(ours)) == (theirs.eos_token_id, theirs.pad_token_id, len(theirs))
    prompts = _all_canary_prompts()
    assert len(prompts) > 200
    templated = bool(theirs.chat_template)
    for p in prompts:
        text = chat_prompt(ours, p.chat())
        assert text == chat_prompt(theirs, p.chat()), p.id
        ids = ours(text, add_special_tokens=not templated)["input_ids"]
        assert ids == theirs(text, add_special_tokens=not templated)["input_ids"], p.id
        if p.reference:
            ref = ours(p.reference, add_special_tokens=False)["input_ids"]
            assert ref == theirs(p.reference, add_special_tokens=False)["input_ids"], p.id
            # decoding: special tokens, a cut mid-word, a lone byte of a multi-byte character
            rows = [ids + ref, ref[: len(ref) // 2], [ours.eos_token_id, *ref[:3]], ids[-2:]]
            for skip in (True, False):
                assert ours.batch_decode(rows, skip_special_tokens=skip) == theirs.batch_decode(
                    rows, skip_special_tokens=skip
                ), p.id


def _hf_model(directory: Path, model_type: str, seed: int = 0, shards: bool = False, **overrides) -> Path:
    """A random tiny model of ``model_type`` saved by transformers, with the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = AutoConfig.for_model(model_type, **{**fields, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that their mapping shows
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", ".bias")):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    model.save_pretrained(directory, max_shard_size="200KB" if shards else "5GB")
    return directory


def _adapter(base: Path, directory: Path, seed: int = 1) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=ALL, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(directory)
    return directory


SHAPES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-biases": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "llama3-rope": (
        "llama",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            "rope_theta": 500000.0,
        },
    ),
    "linear-rope": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "qwen2": ("qwen2", {}),
    "mistral": ("mistral", {"sliding_window": None, "head_dim": 24}),
    "sharded": ("llama", {}),
}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_model_built_from_files_decodes_as_the_transformers_model(tmp_path, shape, dtype, device):
    """On CUDA, with the fused kernels and the decode step as a CUDA graph, on both."""
    import torch
    from transformers import AutoModelForCausalLM

    from lorawatch.llama_file import load
    from lorawatch.models import direct_unsupported
    from lorawatch.monitors.fast_decode import GroupedDecoder
    from lorawatch.monitors.lora_files import read_adapter

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model_type, overrides = SHAPES[shape]
    base = _hf_model(tmp_path / "base", model_type, shards=shape == "sharded", **overrides)
    if shape == "sharded":
        assert (base / "model.safetensors.index.json").is_file()
    assert direct_unsupported(str(base)) is None
    dtype = getattr(torch, dtype)
    theirs = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device).eval()
    ours = load(base, torch.device(device), dtype)

    theirs_params = dict(theirs.named_parameters(remove_duplicate=False))
    ours_params = dict(ours.named_parameters(remove_duplicate=False))
    assert set(ours_params) == set(theirs_params)
    for name, p in theirs_params.items():
        assert ours_params[name].dtype == p.dtype and torch.equal(ours_params[name], p), name
    tied = theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()
    assert (
        tied == (ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()) == (shape == "llama-tied")
    )

    x = torch.randn(3, 7, 64).to(device, dtype)
    positions = torch.arange(7, device=device).unsqueeze(0).expand(3, 7) * 13  # beyond the original context for llama3
    for a, b in zip(ours.model.rotary_emb(x, positions), theirs.model.rotary_emb(x, positions), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(ours.model.norm(x), theirs.model.norm(x))

    adapter = _adapter(base, tmp_path / "adapter")
    factors = {"a": read_adapter(adapter, device)}
    mine, reference = GroupedDecoder(ours, ["a"], factors), GroupedDecoder(theirs, ["a"], factors)
    assert reference.fused == mine.fused
    tokens, _ = mine.generate(PROMPTS, 10, 0)
    assert tokens == reference.generate(PROMPTS, 10, 0)[0]
    assert tokens[0] != tokens[1]  # the adapter changes the outputs
    width = max(map(len, PROMPTS))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in PROMPTS], device=device)
    rows = torch.tensor([i for i, p in enumerate(PROMPTS) for _ in p], device=device)
    cols = torch.tensor([j for p in PROMPTS for j in range(len(p))], device=device)
    assert torch.equal(mine.hidden(ids, rows, cols), reference.hidden(ids, rows, cols))


def _drop_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights.pop("model.layers.1.mlp.up_proj.weight")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _add_tensor(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _edit_json(name: str, **changes):
    def edit(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        data.update(changes)
        (folder / name).write_text(json.dumps(data))

    return edit


CASES = {
    "gelu": (_edit_json("config.json", hidden_act="gelu_pytorch_tanh"), "activation"),
    "yarn": (_edit_json("config.json", rope_parameters={"rope_type": "yarn", "factor": 4.0}), "RoPE type 'yarn'"),
    "quantized": (_edit_json("config.json", quantization_config={"quant_method": "bitsandbytes"}), "quantized"),
    "another-architecture": (_edit_json("config.json", model_type="gemma2"), "model type 'gemma2'"),
    "missing-tensor": (_drop_tensor, "tensors missing from the weights: ['model.layers.1.mlp.up_proj.weight']"),
    "extra-tensor": (_add_tensor, "does not model: ['model.layers.0.self_attn.q_norm.weight']"),
    "pickled": (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "no safetensors weights"),
    "no-tokenizer-json": (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    "sentencepiece-class": (_edit_json("tokenizer_config.json", tokenizer_class="LlamaTokenizer"), "is built by"),
    "bad-template": (_edit_json("tokenizer_config.json", chat_template="{% for m in messages %}"), "chat template"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_what_the_direct_loader_does_not_model_is_named_and_left_to_transformers(tiny_base, tmp_path, case):
    import shutil

    from lorawatch.models import direct_unsupported

    folder = tmp_path / "base"
    shutil.copytree(tiny_base, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    assert direct_unsupported(str(folder)) is None
    edit, why = CASES[case]
    edit(folder)
    assert why in (direct_unsupported(str(folder)) or ""), direct_unsupported(str(folder))


def test_the_tokenizer_files_are_checked_once_until_they_change(tiny_base, tmp_path, monkeypatch):
    """A run checks its tokenizer while planning and again while loading: tokenizer.json
    (megabytes) is parsed by the check once, and again only once a file has changed."""
    import shutil

    from lorawatch import tokenizer_file

    folder = tmp_path / "base"
    shutil.copytree(tiny_base, folder)
    read = []
    real = tokenizer_file._read_json
    monkeypatch.setattr(tokenizer_file, "_read_json", lambda path: read.append(path.name) or real(path))
    assert tokenizer_file.unsupported(folder) is None
    tokenizer_file.FileTokenizer(folder)
    assert tokenizer_file.unsupported(folder) is None
    assert read.count("tokenizer.json") == 1
    _edit_json("tokenizer_config.json", tokenizer_class="LlamaTokenizer")(folder)
    assert "is built by" in (tokenizer_file.unsupported(folder) or "")
    assert read.count("tokenizer.json") == 2
    with pytest.raises(ValueError, match="is built by"):
        tokenizer_file.FileTokenizer(folder)


def test_a_hub_id_or_a_gguf_file_is_left_to_transformers(tmp_path):
    from lorawatch.models import direct_unsupported

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert "hub id" in direct_unsupported(None)
    assert "not a model folder" in direct_unsupported(str(gguf))


_BLOCKED_RUN = (
    "import sys\n"
    "for name in ('transformers', 'sentence_transformers', 'peft'):\n"
    "    sys.modules[name] = None  # importing it now raises ImportError\n"
    "from lorawatch.cli import main\n"
    "main(sys.argv[1:])\n"
)


def _run(env: dict[str, str], canary: Path, block: bool) -> dict:
    args = ["canary", "run", "--dataset", str(canary), "--device", "cpu", "--batch-size", "8"]
    args += ["--max-new-tokens", "6", "--adapter", "trained", "--adapter", "other", "--json"]
    code = _BLOCKED_RUN if block else "import sys\nfrom lorawatch.cli import main\nmain(sys.argv[1:])\n"
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _rows(db, run_id: int) -> dict:
    with db.session() as session:
        results = session.scalars(select(CanaryResult).where(CanaryResult.run_id == run_id)).all()
        return {
            (r.prompt_id, r.adapter_version_id): (
                r.output,
                r.kl_mean,
                r.kl_max,
                r.js_mean,
                r.ref_logprob_delta,
                r.embedding,
            )
            for r in results
        }


def test_a_canary_run_imports_no_transformers_and_stores_what_the_transformers_loader_stores(
    lw_env,
    db,
    registered,  # noqa: F811
    canary_file,  # noqa: F811
    tmp_path,
):
    from lorawatch.db.models import CanaryRun

    env = {**os.environ, "LORAWATCH_DATABASE_URL": lw_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    direct = tmp_path / "direct.toml"
    direct.write_text("[risk]\nenabled = false\n")
    via_hf = tmp_path / "transformers.toml"
    via_hf.write_text('[risk]\nenabled = false\n[canary]\nmodel_loader = "transformers"\n')
    first = _run({**env, "LORAWATCH_CONFIG": str(direct)}, canary_file, block=True)
    second = _run({**env, "LORAWATCH_CONFIG": str(via_hf)}, canary_file, block=False)
    assert first["status"] == second["status"] == "complete"
    with db.session() as session:
        loaders = [
            [w.get("model_loader") for w in (session.get(CanaryRun, s["run"]).config.get("workers") or [])]
            for s in (first, second)
        ]
    assert loaders[0] == ["direct"] and loaders[1][0].startswith("transformers ([canary] model_loader")
    ours, theirs = _rows(db, first["run"]), _rows(db, second["run"])
    assert len(ours) == 48 and ours == theirs
