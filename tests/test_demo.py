"""The shipped demo adapters are what `lorawatch demo` and the registry expect: the files the
manifest records, LoRA factors shaped for SmolLM2-135M, small, and accepted by the registry."""

from __future__ import annotations

import json
import shutil

import pytest

from lorawatch.demo.models import ADAPTERS_DIR, BASE_HUB_ID, DEMO_ADAPTERS, shipped_adapter
from lorawatch.errors import DependencyError
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def smollm2_shape():
    """Hidden size, MLP size, layers and key/value width, read from the GGUF file the demo converts."""
    from gguf import GGUFReader

    from lorawatch.demo.models import gguf_path

    fields = GGUFReader(gguf_path()).fields

    def value(key: str) -> int:
        field = fields[key]
        return int(field.parts[field.data[0]][0])

    hidden = value("llama.embedding_length")
    kv = hidden // value("llama.attention.head_count") * value("llama.attention.head_count_kv")
    return {"hidden": hidden, "mlp": value("llama.feed_forward_length"), "layers": value("llama.block_count"), "kv": kv}


@pytest.mark.parametrize("spec", DEMO_ADAPTERS, ids=lambda s: s.name)
def test_each_shipped_adapter_matches_its_manifest_and_the_smollm2_shapes(spec, smollm2_shape):
    from safetensors import safe_open

    directory = shipped_adapter(spec)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == spec.rank and config["lora_alpha"] == 2 * spec.rank
    assert set(config["target_modules"]) == PROJECTIONS and config["base_model_name_or_path"] == BASE_HUB_ID
    weights = directory / "adapter_model.safetensors"
    assert weights.stat().st_size < 4_000_000  # "a few MB": it lives in git
    io = {
        "q_proj": ("hidden", "hidden"),
        "k_proj": ("hidden", "kv"),
        "v_proj": ("hidden", "kv"),
        "o_proj": ("hidden", "hidden"),
        "gate_proj": ("hidden", "mlp"),
        "up_proj": ("hidden", "mlp"),
        "down_proj": ("mlp", "hidden"),
    }
    seen = set()
    with safe_open(weights, framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118  (safe_open is not a dict)
            tensor = handle.get_tensor(name)
            layer = int(name.split(".layers.")[1].split(".")[0])
            projection = next(p for p in PROJECTIONS if f".{p}." in name)
            fan_in, fan_out = (smollm2_shape[k] for k in io[projection])
            expected = (spec.rank, fan_in) if ".lora_A." in name else (fan_out, spec.rank)
            assert tuple(tensor.shape) == expected and str(tensor.dtype) == "torch.float16", name
            assert bool(tensor.isfinite().all()) and float(tensor.abs().max()) > 0, name
            seen.add((layer, projection, ".lora_A." in name))
    assert len(seen) == smollm2_shape["layers"] * len(PROJECTIONS) * 2


def test_the_registry_accepts_every_shipped_adapter_with_the_manifest_digests(db, settings_for_demo, tiny_base):

    store = registry_store.Store.from_settings(settings_for_demo)
    manifest = json.loads((ADAPTERS_DIR / "manifest.json").read_text())
    with db.session() as s:
        # the registry checks the declared base by name, not by shape: the tiny base stands in for SmolLM2
        registry_bases.add_base(s, name="smollm2-135m-instruct", path=tiny_base, hub_id=BASE_HUB_ID, actor="t")
        for spec in DEMO_ADAPTERS:
            version = registry_versions.register_version(
                s,
                store,
                adapter=spec.name,
                path=shipped_adapter(spec),
                base="smollm2-135m-instruct",
                version="v1",
                actor="t",
            )
            assert {name: entry["sha256"] for name, entry in version.files.items()} == manifest[spec.name]


def test_a_changed_shipped_file_is_refused_with_its_name(tmp_path):
    copy = tmp_path / "adapters"
    shutil.copytree(ADAPTERS_DIR, copy)
    spec = DEMO_ADAPTERS[0]
    (copy / spec.name / "adapter_config.json").write_text("{}")
    with pytest.raises(DependencyError, match=f"{spec.name} differs from its manifest: adapter_config.json"):
        shipped_adapter(spec, copy)
    shutil.rmtree(copy / spec.name)
    with pytest.raises(DependencyError, match="is missing"):
        shipped_adapter(spec, copy)


@pytest.fixture
def settings_for_demo(lw_env):
    from lorawatch.settings import load_settings

    return load_settings()
