"""A BERT sentence encoder read straight from its files, for the embedder.

The packaged embedding model (all-MiniLM-L6-v2) is a BERT. Running it through ``transformers``
meant importing transformers, 3 s on a CPU machine and 10-16 s on a GPU one: the largest part
of a canary run's start-up. Here the same network is built with plain torch from the folder's
``config.json`` and ``model.safetensors``, and its tokenizer runs from ``tokenizer.json`` on
``tokenizers``: the tokens are those ``AutoTokenizer`` gives and ``BertEncoder`` computes the
last hidden state as transformers' ``BertModel`` does in eval mode (``tests/test_bert_file.py``
compares both on the packaged model and on random ones).

Only what is modelled here exactly takes this path: ``unsupported`` names anything else (another
architecture, relative positions, another activation, a decoder, sharded or pickled weights, a
tokenizer whose settings disagree with its tokenizer.json), and those models go through
transformers as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
PREFIXES = ("", "bert.")  # BertModel's checkpoints, and those of BERTs with a head (BertForMaskedLM, ...)
# BertConfig's defaults, for the keys a config.json leaves out
DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}
# what AutoTokenizer loads for a BERT (None: the model type decides); others are not modelled
BERT_TOKENIZERS = (None, "BertTokenizer", "BertTokenizerFast")


def unsupported(path: Path) -> str | None:
    """Why the model in ``path`` cannot run on ``BertEncoder`` and ``BertTokenizerFile``, or None
    when it can, with the vectors transformers would give. Reads the configs and the weights
    file's header, not the weights."""
    path = Path(path)
    try:
        config = _config(path)
        _tokenizer_settings(path, config)
        with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not iterable)
        _names(shapes, config)
    except ValueError as exc:
        return str(exc)
    except (OSError, SafetensorError) as exc:
        return f"unreadable model files: {exc}"
    return None


class BertEncoder(nn.Module):
    """BERT's encoder: ``forward`` gives the last hidden state (B, T, H) of transformers'
    ``BertModel`` in eval mode (no pooler, no dropout). Built from its weights (``weights``: this
    module's names, as ``load_encoder`` maps them), with no initialisation to overwrite."""

    def __init__(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        eps = float(config["layer_norm_eps"])
        self.hidden_size = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.word = _Embedding(weights, "word")
        self.position = _Embedding(weights, "position")
        self.token_type = _Embedding(weights, "token_type")
        self.norm = _Norm(weights, "norm", eps)
        self.layers = nn.ModuleList(_Layer(weights, f"layers.{i}.", eps) for i in range(config["num_hidden_layers"]))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(length, device=input_ids.device)
        hidden = self.word(input_ids) + self.token_type(token_type_ids)  # transformers' order of the sums
        hidden = self.norm(hidden + self.position(positions))
        # Padded keys take no part (what transformers' SDPA mask does); none at all when nothing is padded.
        keep = attention_mask.bool()
        mask = None if bool(keep.all()) else keep[:, None, None, :]
        for layer in self.layers:
            hidden = layer(hidden, mask, self.heads)
        return hidden


class _Layer(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], prefix: str, eps: float) -> None:
        super().__init__()
        self.query = _Linear(weights, prefix + "query")
        self.key = _Linear(weights, prefix + "key")
        self.value = _Linear(weights, prefix + "value")
        self.attention_out = _Linear(weights, prefix + "attention_out")
        self.attention_norm = _Norm(weights, prefix + "attention_norm", eps)
        self.intermediate = _Linear(weights, prefix + "intermediate")
        self.out = _Linear(weights, prefix + "out")
        self.out_norm = _Norm(weights, prefix + "out_norm", eps)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
        batch, length, size = hidden.shape
        shape = (batch, length, heads, size // heads)
        query = self.query(hidden).view(shape).transpose(1, 2)
        key = self.key(hidden).view(shape).transpose(1, 2)
        value = self.value(hidden).view(shape).transpose(1, 2)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=(size // heads) ** -0.5)
        context = context.transpose(1, 2).reshape(batch, length, size)
        hidden = self.attention_norm(self.attention_out(context) + hidden)
        return self.out_norm(self.out(F.gelu(self.intermediate(hidden))) + hidden)


# nn.Linear, nn.LayerNorm and nn.Embedding, minus their initialisation, which costs more than the
# model's whole read (on the meta device, over a second for the first embedding)
class _Linear(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], name: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(weights[f"{name}.weight"], requires_grad=False)
        self.bias = nn.Parameter(weights[f"{name}.bias"], requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _Norm(_Linear):
    def __init__(self, weights: dict[str, torch.Tensor], name: str, eps: float) -> None:
        super().__init__(weights, name)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Embedding(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], name: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(weights[f"{name}.weight"], requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


def load_encoder(path: Path, device: str | torch.device = "cpu") -> BertEncoder:
    """The BERT in ``path`` in eval mode, its float32 weights read straight onto ``device``.

    Raises ValueError (the reason) for a model ``unsupported`` would name."""
    path = Path(path)
    config = _config(path)
    with safe_open(str(path / WEIGHTS_FILE), framework="pt", device=str(device)) as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not iterable)
        names = _names(shapes, config)
        weights = {ours: f.get_tensor(theirs).float() for ours, theirs in names.items()}
    return BertEncoder(config, weights).eval()


class BertTokenizerFile:
    """The model's ``tokenizer.json`` on ``tokenizers``, set up as ``AutoTokenizer(...)(texts,
    padding=True, truncation=True, max_length=...)`` runs it: truncation to ``max_length`` tokens
    (special tokens included), padding to the longest text of the batch."""

    def __init__(self, path: Path, max_length: int | None = None) -> None:
        path = Path(path)
        setup = _tokenizer_settings(path, _config(path))
        self.max_length: int = setup["max_length"] if max_length is None else max_length
        self.max_length = min(self.max_length, setup["max_positions"])  # beyond it BERT has no position
        self.tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(max_length=self.max_length, direction=setup["truncation_side"])
        self.tokenizer.enable_padding(
            direction=setup["padding_side"], pad_id=setup["pad_id"], pad_token=setup["pad_token"]
        )
        self.vocab: dict[str, int] = self.tokenizer.get_vocab()  # what spell_symbols reads

    def encode(
        self, texts: list[str], device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids, attention mask and token type ids (B, T) of ``texts``."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=device)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long, device=device)
        types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long, device=device)
        return ids, mask, types


def _config(path: Path) -> dict[str, Any]:
    """config.json with BertConfig's defaults; ValueError for a model this module does not run."""
    if not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"no {WEIGHTS_FILE} (sharded or pickled weights are not read here)")
    if not (path / TOKENIZER_FILE).is_file():
        raise ValueError(f"no {TOKENIZER_FILE}")
    try:
        raw = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable {CONFIG_FILE}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("model_type") != "bert":
        raise ValueError(f"model_type {raw.get('model_type') if isinstance(raw, dict) else None!r} is not bert")
    config = {**DEFAULTS, **raw}
    if config["position_embedding_type"] not in (None, "absolute"):
        raise ValueError(
            f"position_embedding_type {config['position_embedding_type']!r}: only absolute positions are modelled"
        )
    if config["hidden_act"] != "gelu":
        raise ValueError(f"hidden_act {config['hidden_act']!r}: only the exact gelu is modelled")
    if config["is_decoder"] or config["add_cross_attention"]:
        raise ValueError("a decoder (is_decoder or add_cross_attention) is not modelled")
    sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    for key in (*sizes, "max_position_embeddings", "type_vocab_size"):
        if not _is_int(config[key]) or config[key] <= 0:
            raise ValueError(f"{key} {config[key]!r} is not a positive integer")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ValueError(
            f"hidden_size {config['hidden_size']} is not a multiple of {config['num_attention_heads']} heads"
        )
    if not isinstance(config["layer_norm_eps"], int | float) or isinstance(config["layer_norm_eps"], bool):
        raise ValueError(f"layer_norm_eps {config['layer_norm_eps']!r} is not a number")
    return config


def _names(shapes: dict[str, tuple[int, ...]], config: dict[str, Any]) -> dict[str, str]:
    """``BertEncoder``'s parameter name → the checkpoint's tensor name, each shape checked.
    The pooler and heads (``cls.``, a classifier) are not read; anything else under the encoder's
    prefix that is not modelled is a ValueError."""
    prefix = next((p for p in PREFIXES if f"{p}embeddings.word_embeddings.weight" in shapes), None)
    if prefix is None:
        raise ValueError("no embeddings.word_embeddings.weight (plain or under bert.) in the weights")
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    wanted: dict[str, tuple[str, tuple[int, ...]]] = {
        "word.weight": ("embeddings.word_embeddings.weight", (config["vocab_size"], hidden)),
        "position.weight": ("embeddings.position_embeddings.weight", (config["max_position_embeddings"], hidden)),
        "token_type.weight": ("embeddings.token_type_embeddings.weight", (config["type_vocab_size"], hidden)),
    }
    norms = {"norm": "embeddings.LayerNorm"}
    for i in range(config["num_hidden_layers"]):
        theirs = f"encoder.layer.{i}."
        for ours, name, shape in (
            ("query", "attention.self.query", (hidden, hidden)),
            ("key", "attention.self.key", (hidden, hidden)),
            ("value", "attention.self.value", (hidden, hidden)),
            ("attention_out", "attention.output.dense", (hidden, hidden)),
            ("intermediate", "intermediate.dense", (inner, hidden)),
            ("out", "output.dense", (hidden, inner)),
        ):
            wanted[f"layers.{i}.{ours}.weight"] = (theirs + name + ".weight", shape)
            wanted[f"layers.{i}.{ours}.bias"] = (theirs + name + ".bias", shape[:1])
        norms[f"layers.{i}.attention_norm"] = theirs + "attention.output.LayerNorm"
        norms[f"layers.{i}.out_norm"] = theirs + "output.LayerNorm"
    for ours, theirs in norms.items():
        old = f"{prefix}{theirs}.gamma" in shapes  # checkpoints saved by old transformers
        wanted[f"{ours}.weight"] = (f"{theirs}.{'gamma' if old else 'weight'}", (hidden,))
        wanted[f"{ours}.bias"] = (f"{theirs}.{'beta' if old else 'bias'}", (hidden,))
    names = {}
    for ours, (theirs, expected) in wanted.items():
        name = prefix + theirs
        if name not in shapes:
            raise ValueError(f"the weights lack {name}")
        if shapes[name] != expected:
            raise ValueError(f"{name} has shape {list(shapes[name])}, the config says {list(expected)}")
        names[ours] = name
    read = set(names.values()) | {f"{prefix}embeddings.position_ids", f"{prefix}embeddings.token_type_ids"}
    inside = (f"{prefix}embeddings.", f"{prefix}encoder.")
    if extra := sorted(k for k in shapes if k.startswith(inside) and k not in read):
        raise ValueError(f"{extra[0]} in the weights is not modelled")
    return names


def _tokenizer_settings(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Padding, truncation and the default length as ``AutoTokenizer`` sets them for this model;
    ValueError where its tokenizer.json would be run differently than transformers runs it."""
    try:
        spec = json.loads((path / TOKENIZER_FILE).read_text(encoding="utf-8"))
        tokenizer_config = _json_file(path / "tokenizer_config.json")
        special = _json_file(path / "special_tokens_map.json")
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable tokenizer files: {exc}") from None
    kind = tokenizer_config.get("tokenizer_class")
    if kind not in BERT_TOKENIZERS:
        raise ValueError(f"tokenizer_class {kind!r} is not modelled")
    _check_bert_tokenizer(spec, tokenizer_config, special)
    padding = spec.get("padding") or {}
    pad_token = (
        _token(tokenizer_config.get("pad_token"))
        or _token(special.get("pad_token"))
        or padding.get("pad_token")
        or "[PAD]"
    )
    vocab = (spec.get("model") or {}).get("vocab") or {}
    added = {t.get("content"): t.get("id") for t in spec.get("added_tokens") or [] if isinstance(t, dict)}
    pad_id = added.get(pad_token, vocab.get(pad_token) if isinstance(vocab, dict) else None)
    if not isinstance(pad_token, str) or not _is_int(pad_id):
        raise ValueError(f"no padding token (pad_token {pad_token!r} is not in the vocabulary)")
    sides = {key: tokenizer_config.get(key, "right") for key in ("padding_side", "truncation_side")}
    if any(side not in ("left", "right") for side in sides.values()):
        raise ValueError(f"padding or truncation side {sides} is not left or right")
    positions = config["max_position_embeddings"]
    model_max = tokenizer_config.get("model_max_length")
    sane = isinstance(model_max, int) and not isinstance(model_max, bool) and 0 < model_max <= positions
    default = model_max if sane else positions  # transformers' 1e30 "no limit" would overrun the positions
    return {"pad_token": pad_token, "pad_id": pad_id, "max_length": default, "max_positions": positions, **sides}


def _check_bert_tokenizer(spec: dict, tokenizer_config: dict, special: dict) -> None:
    """transformers' BertTokenizer builds its normaliser, pre-tokeniser and [CLS] ... [SEP] template
    from tokenizer_config.json, not tokenizer.json: the two must agree."""
    normalizer = spec.get("normalizer") or {}
    expected = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": tokenizer_config.get("tokenize_chinese_chars", True),
        "strip_accents": tokenizer_config.get("strip_accents"),
        "lowercase": tokenizer_config.get("do_lower_case", True),
    }
    if {key: normalizer.get(key) for key in expected} != expected:
        raise ValueError(f"tokenizer.json's normalizer {normalizer} disagrees with tokenizer_config.json ({expected})")
    if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        raise ValueError("tokenizer.json's pre-tokenizer is not BertPreTokenizer")
    model = spec.get("model") or {}
    unk = _token(tokenizer_config.get("unk_token")) or _token(special.get("unk_token")) or "[UNK]"
    if model.get("type") != "WordPiece" or model.get("unk_token") != unk:
        raise ValueError(f"tokenizer.json's model is not WordPiece with unknown token {unk!r}")
    cls = _token(tokenizer_config.get("cls_token")) or _token(special.get("cls_token")) or "[CLS]"
    sep = _token(tokenizer_config.get("sep_token")) or _token(special.get("sep_token")) or "[SEP]"
    post = spec.get("post_processor") or {}
    template = [
        {"SpecialToken": {"id": cls, "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}},
        {"SpecialToken": {"id": sep, "type_id": 0}},
    ]
    vocab = model.get("vocab") or {}
    ids = {token: (post.get("special_tokens") or {}).get(token, {}).get("ids") for token in (cls, sep)}
    if post.get("type") != "TemplateProcessing" or post.get("single") != template:
        raise ValueError(f"tokenizer.json's post-processor is not {cls} text {sep}")
    if any(ids[token] != [vocab.get(token)] for token in (cls, sep)):
        raise ValueError(f"tokenizer.json's {cls} and {sep} ids disagree with its vocabulary")


def _json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def _token(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
