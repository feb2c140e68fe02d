"""A Llama-family causal LM (Llama, Mistral and Qwen2 without sliding windows) built with plain
torch from its folder: ``config.json`` and the safetensors weights, read straight onto the
device in the run's dtype.

The canary's grouped decoder (``lorawatch.monitors.fast_decode``) computes every layer itself
from the model's weights, its norms and its rotary embedding; it needs nothing else of a
transformers model. Building that model through transformers cost a canary run its import
(10 to 16 s of start-up on the H200, against well under a second for torch's own modules and
safetensors). The modules here carry the names and the arithmetic of transformers' (the
``model.layers.N.self_attn.q_proj`` paths LoRA adapters target; RMSNorm and rotary embedding
computed in the same order and dtypes), so the grouped decoder gives the same tokens and
scores on either: ``tests/test_direct_load.py`` compares them.

``unsupported`` says why a folder needs transformers (another architecture, another RoPE
scaling, sliding-window attention, GGUF or pickled weights, missing or unexpected tensors);
callers then load it with transformers as before.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = {"llama", "mistral", "qwen2"}
ROPE_TYPES = {"default", "linear", "llama3"}
DEFAULT_THETA = 10000.0
# per model type: whether q, k and v have biases, whether o has one (else the config's attention_bias)
_BIASES = {"qwen2": (True, False)}


@dataclass(frozen=True)
class Config:
    """The fields of ``config.json`` the decoder reads, under transformers' names."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    rope: dict[str, Any] = field(default_factory=dict)
    final_logit_softcapping: float | None = None
    sliding_window: int | None = None
    partial_rotary_factor: float = 1.0


def _config(raw: dict[str, Any]) -> Config:
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"model type {model_type!r} is not one of {sorted(SUPPORTED)}")
    if raw.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"activation {raw.get('hidden_act')!r}")
    if model_type == "mistral" and raw.get("sliding_window"):
        raise ValueError("sliding-window attention")
    if model_type == "qwen2" and (
        raw.get("use_sliding_window") or "sliding_attention" in (raw.get("layer_types") or [])
    ):
        raise ValueError("sliding-window attention")
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial rotary embedding")
    rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    if any(isinstance(v, dict) for v in rope.values()):
        raise ValueError("RoPE parameters per layer type")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"RoPE type {rope_type!r}")
    rope["rope_type"] = rope_type
    rope.setdefault("rope_theta", raw.get("rope_theta", DEFAULT_THETA))
    if rope_type == "llama3":
        rope.setdefault("original_max_position_embeddings", raw.get("max_position_embeddings"))
    heads = int(raw["num_attention_heads"])
    hidden = int(raw["hidden_size"])
    attention_bias = bool(raw.get("attention_bias", False))
    qkv_bias, o_bias = _BIASES.get(model_type, (attention_bias, attention_bias))
    return Config(
        model_type=model_type,
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or hidden // heads),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(raw.get("max_position_embeddings") or 2048),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=bool(raw.get("mlp_bias", False)),
        rope=rope,
        final_logit_softcapping=raw.get("final_logit_softcapping"),
    )


# Modules built from their tensors: nn.Linear and nn.Embedding would first initialise weights that
# are then overwritten (and on the meta device, the first nn.Embedding imports a second of torch).
class Linear(nn.Module):
    """``nn.Linear``'s forward over given tensors."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm: the mean square in fp32, the weight applied in the input's dtype."""

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def inverse_frequencies(config: Config) -> torch.Tensor:
    """RoPE's inverse frequencies as transformers computes them (on the CPU, in fp32)."""
    rope, dim = config.rope, config.head_dim
    base = float(rope["rope_theta"])
    if rope["rope_type"] == "default":
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    factor = rope["factor"]
    if rope["rope_type"] == "linear":
        return inv_freq / factor
    low, high = rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rotary(nn.Module):
    """transformers' rotary embedding: (cos, sin) of positions, in fp32, then in ``x``'s dtype."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(config), persistent=False)
        self.attention_scaling = 1.0  # for the RoPE types above

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


Weights = dict[str, torch.Tensor]


def _linear(w: Weights, name: str) -> Linear:
    return Linear(w[f"{name}.weight"], w.get(f"{name}.bias"))


class Attention(nn.Module):
    def __init__(self, w: Weights, prefix: str) -> None:
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, name, _linear(w, prefix + name))


class MLP(nn.Module):
    def __init__(self, w: Weights, prefix: str) -> None:
        super().__init__()
        for name in ("gate_proj", "up_proj", "down_proj"):
            setattr(self, name, _linear(w, prefix + name))


class Layer(nn.Module):
    def __init__(self, c: Config, w: Weights, prefix: str) -> None:
        super().__init__()
        self.self_attn = Attention(w, prefix + "self_attn.")
        self.mlp = MLP(w, prefix + "mlp.")
        self.input_layernorm = RMSNorm(w[prefix + "input_layernorm.weight"], c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(w[prefix + "post_attention_layernorm.weight"], c.rms_norm_eps)


class Decoder(nn.Module):
    """The layers; the grouped decoder runs them (this module has no forward of its own)."""

    def __init__(self, c: Config, w: Weights) -> None:
        super().__init__()
        self.embed_tokens = Embedding(w["model.embed_tokens.weight"])
        self.layers = nn.ModuleList(Layer(c, w, f"model.layers.{i}.") for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(w["model.norm.weight"], c.rms_norm_eps)
        self.rotary_emb = Rotary(c)


class CausalLM(nn.Module):
    """The weights of a Llama-family causal LM under transformers' module paths."""

    def __init__(self, c: Config, w: Weights) -> None:
        super().__init__()
        self.config = c
        self.model = Decoder(c, w)
        if c.tie_word_embeddings:
            self.lm_head = Linear(w["model.embed_tokens.weight"], None)
            self.lm_head.weight = self.model.embed_tokens.weight  # one parameter, as transformers ties them
        else:
            self.lm_head = _linear(w, "lm_head")

    def get_decoder(self) -> Decoder:
        return self.model

    def get_output_embeddings(self) -> Linear:
        return self.lm_head


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / name for name in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError("no safetensors weights (model.safetensors or its index)")


def _expected(c: Config) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, as transformers names them."""
    hidden, kv = c.hidden_size, c.num_key_value_heads * c.head_dim
    q = c.num_attention_heads * c.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c.vocab_size, hidden)}
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, hidden)
    shapes["model.norm.weight"] = (hidden,)
    linears = {
        "self_attn.q_proj": (q, hidden, c.qkv_bias),
        "self_attn.k_proj": (kv, hidden, c.qkv_bias),
        "self_attn.v_proj": (kv, hidden, c.qkv_bias),
        "self_attn.o_proj": (hidden, q, c.o_bias),
        "mlp.gate_proj": (c.intermediate_size, hidden, c.mlp_bias),
        "mlp.up_proj": (c.intermediate_size, hidden, c.mlp_bias),
        "mlp.down_proj": (hidden, c.intermediate_size, c.mlp_bias),
    }
    for i in range(c.num_hidden_layers):
        prefix = f"model.layers.{i}."
        shapes[prefix + "input_layernorm.weight"] = (hidden,)
        shapes[prefix + "post_attention_layernorm.weight"] = (hidden,)
        for name, (out, inp, bias) in linears.items():
            shapes[f"{prefix}{name}.weight"] = (out, inp)
            if bias:
                shapes[f"{prefix}{name}.bias"] = (out,)
    return shapes


def inspect(folder: Path) -> tuple[Config, dict[str, Path]]:
    """The config and, per tensor, the file holding it; ValueError saying why when this module
    cannot build the model exactly (the caller then uses transformers)."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("no config.json") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable config.json: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("config.json is not a JSON object")
    if raw.get("quantization_config"):
        raise ValueError("quantized weights")
    try:
        config = _config(raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"config.json lacks {exc}") from None
    # Deferred: safetensors is needed only where weights are read.
    from safetensors import safe_open

    where: dict[str, Path] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for path in _weight_files(folder):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                where[name] = path
                shapes[name] = tuple(f.get_slice(name).get_shape())
    expected = _expected(config)
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)  # transformers ties it to the embeddings whatever the file holds
        where.pop("lm_head.weight", None)
    if missing := sorted(set(expected) - set(shapes)):
        raise ValueError(f"tensors missing from the weights: {missing[:3]}")
    if unexpected := sorted(set(shapes) - set(expected)):
        raise ValueError(f"tensors this decoder does not model: {unexpected[:3]}")
    if wrong := [name for name, shape in expected.items() if shapes[name] != shape]:
        raise ValueError(f"tensors of unexpected shape: {wrong[:3]}")
    return config, where


def unsupported(folder: Path) -> str | None:
    """Why the model in ``folder`` needs transformers, or None when ``load`` builds it."""
    try:
        inspect(folder)
    except ValueError as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable weights: {exc}"
    return None


def skeleton(folder: Path) -> CausalLM:
    """The model in ``folder`` on the meta device: its module paths and shapes, no weights."""
    config, _ = inspect(folder)
    weights = {name: torch.empty(shape, device="meta") for name, shape in _expected(config).items()}
    return CausalLM(config, weights)


def load(folder: Path, device: torch.device, dtype: torch.dtype, progress=None) -> CausalLM:
    """The model in ``folder`` on ``device`` in ``dtype``, in eval mode; ``progress(n)`` is told
    of each tensor read."""
    # Deferred: safetensors is needed only where weights are read.
    from safetensors import safe_open

    config, where = inspect(folder)
    weights: Weights = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in where.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for name in names:
                weights[name] = f.get_tensor(name).to(dtype)
                if progress is not None:
                    progress(1)
    model = CausalLM(config, weights)
    model.model.rotary_emb.inv_freq = inverse_frequencies(config).to(
        device
    )  # computed on the CPU, as transformers does
    return model.eval()
