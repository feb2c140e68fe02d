"""Greedy generation for the base model and every adapter of a batch at once, for Llama-style
decoders (Llama, Mistral without a sliding window, Qwen2), with a static KV cache and, on
CUDA, the decode step replayed as a CUDA graph.

Rows are grouped by adapter: ``G`` groups (the base, then each adapter) of ``B`` prompts each.
Every linear layer runs once for all ``G x B`` rows on the base weights; each adapter's LoRA
delta is added with two batched matmuls over the groups (``bmm`` of ``(G, B, in)`` with the
stacked ``A`` ``(G, in, r)`` and ``B`` ``(G, r, out)``; the base group's factors are zero). This
replaces PEFT's per-adapter passes, and HF ``generate``'s per-step host work, which dominate at
canary sizes (see benchmarks/README.md). The factors come from a PeftModel's LoRA layers or,
without PEFT, from the adapters' files (``lorawatch.monitors.lora_files``): wrapping the base in
a PeftModel only to read its factors back costs seconds per run.

On CUDA, RMSNorm, rotary embedding and SwiGLU (with the gate and up projections' LoRA deltas)
run as fused Triton kernels that round where eager PyTorch rounds (``lorawatch.monitors.kernels``).

Prompts are right-padded, so the prefill is a plain causal pass (each row's valid tokens only
see earlier valid tokens), and decode step ``t`` writes row ``i``'s key and value at slot
``len_i + t``: the valid slots of a row stay contiguous. All rows decode ``max_new_tokens``
steps; outputs are cut at the first end-of-sequence token, as HF greedy decoding does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lorawatch.monitors import kernels

SUPPORTED = {"llama", "mistral", "qwen2"}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def supported(model, adapter_keys: list[str]) -> str | None:
    """None when the fast path applies, else why not.

    ``model`` is a PeftModel holding the adapters, or the plain model (transformers', or
    ``lorawatch.llama_file``'s) whose adapters were read from their files
    (``lorawatch.monitors.lora_files``, which vets those itself).
    """
    core = _core(model)
    config = core.config
    if config.model_type not in SUPPORTED:
        return f"model type {config.model_type} is not one of {sorted(SUPPORTED)}"
    if (
        getattr(config, "sliding_window", None)
        and getattr(config, "use_sliding_window", True)
        and config.model_type == "mistral"
    ) or "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return "sliding-window attention"
    if getattr(config, "hidden_act", "silu") not in ("silu", "swish"):
        return f"activation {config.hidden_act}"
    for module in core.modules():
        if hasattr(module, "lora_magnitude_vector") and any(k in module.lora_magnitude_vector for k in adapter_keys):
            return "DoRA adapters"
        if hasattr(module, "lora_embedding_A") and any(k in module.lora_embedding_A for k in adapter_keys):
            return "LoRA on embeddings"
    return None


def _core(model):
    """The transformers model: a PeftModel's base (its layers wrapped by PEFT), or ``model`` itself."""
    get_base_model = getattr(model, "get_base_model", None)  # PeftModel's; transformers models have none
    return get_base_model() if get_base_model is not None else model


def decoder_projections(core) -> list[dict[str, tuple[str, torch.nn.Module]]]:
    """Per decoder layer, each of PROJECTIONS as (its module path in ``core``, the module): the
    linear layers the grouped decoder runs, and the only ones whose LoRA factors it applies. The
    path is the one PEFT matches ``target_modules`` against (``model.layers.0.self_attn.q_proj``)."""
    paths = {id(module): name for name, module in core.named_modules()}
    layers = []
    for layer in core.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        modules = {name: getattr(attn, name, None) or getattr(mlp, name) for name in PROJECTIONS}
        layers.append({name: (paths[id(module)], module) for name, module in modules.items()})
    return layers


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (N, heads, T, D) as transformers' ``apply_rotary_pos_emb`` computes it."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


@dataclass(frozen=True)
class LoraFactors:
    """One adapter's LoRA on one linear layer, as PEFT holds it: the delta is ``x @ a.T @ b.T * scaling``."""

    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scaling: float


def _peft_factors(module, adapter_keys: list[str]) -> dict[str, LoraFactors]:
    """The factors a PEFT LoRA layer holds for those of ``adapter_keys`` that adapt it (none on a plain layer)."""
    lora_a = getattr(module, "lora_A", {})
    return {
        k: LoraFactors(module.lora_A[k].weight, module.lora_B[k].weight, module.scaling[k])
        for k in adapter_keys
        if k in lora_a
    }


@dataclass
class _Linear:
    weight: torch.Tensor
    bias: torch.Tensor | None
    a: torch.Tensor | None  # (G, in, r), scaled
    b: torch.Tensor | None  # (G, r, out)


class GroupedDecoder:
    """The decoder's weights plus every adapter's LoRA factors stacked per group."""

    def __init__(
        self, model, adapter_keys: list[str], factors: dict[str, dict[str, LoraFactors]] | None = None
    ) -> None:
        """``model`` is a PeftModel holding ``adapter_keys``, whose layers give the factors; or,
        with ``factors`` (per adapter key, per module path: ``lorawatch.monitors.lora_files``), the
        plain transformers model, which then needs no PEFT at all."""
        why = supported(model, adapter_keys)
        if why:
            raise ValueError(f"fast decoding does not apply: {why}")
        if factors is not None and (missing := [k for k in adapter_keys if k not in factors]):
            raise ValueError(f"no LoRA factors for adapters {missing}")
        core = _core(model)
        self.core = core
        self.config = core.config
        self.keys = list(adapter_keys)
        self.groups = 1 + len(self.keys)  # the base first
        inner = core.model
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head = core.get_output_embeddings()
        self.dtype = self.embed.weight.dtype
        self.device = self.embed.weight.device
        self.kernels_on = kernels.available(self.device)  # read once: _linear pads ranks for them
        self.layers = []
        projections = decoder_projections(core)
        for layer, modules in zip(inner.layers, projections):
            entry = {"in_norm": layer.input_layernorm, "post_norm": layer.post_attention_layernorm}
            for name, (path, module) in modules.items():
                if factors is None:
                    present = _peft_factors(module, self.keys)
                else:
                    present = {k: factors[k][path] for k in self.keys if path in factors[k]}
                entry[name] = self._linear(module, present)
            gate, up = entry["gate_proj"], entry["up_proj"]
            if self.kernels_on and gate.a is not None and up.a is not None and gate.a.shape == up.a.shape:
                # one bmm for both projections' LoRA inputs (kernels.lora_swiglu adds the deltas)
                entry["gate_up_a"] = torch.cat([gate.a, up.a], dim=2)
            self.layers.append(entry)
        if factors is not None:
            # factors for a module the decoder does not run (an embedding, the head) would be dropped silently
            ran = {path for modules in projections for path, _ in modules.values()}
            if stray := sorted({path for k in self.keys for path in factors[k]} - ran):
                raise ValueError(f"LoRA factors for modules outside the decoder layers' projections: {stray}")
        self.heads = self.config.num_attention_heads
        self.kv_heads = getattr(self.config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.heads
        # fused norm / rotary / SwiGLU kernels that round as eager does (monitors.kernels), on CUDA
        self.fused = self.kernels_on and self._fusable()

    def _fusable(self) -> bool:
        norms = [layer[k] for layer in self.layers for k in ("in_norm", "post_norm")]  # the final norm stays eager
        if any(not kernels.is_rms_norm(m) for m in norms):
            return False
        return getattr(self.config, "partial_rotary_factor", 1.0) == 1.0 and self.head_dim % 2 == 0

    def _linear(self, module, factors: dict[str, LoraFactors]) -> _Linear:
        """The base weights of ``module`` and the factors of the adapters in ``factors`` stacked per group."""
        base = getattr(module, "base_layer", module)
        weight, bias = base.weight, base.bias
        if not factors:
            return _Linear(weight, bias, None, None)
        rank = max(f.a.shape[0] for f in factors.values())
        if self.kernels_on:  # zero-padded to 16s: kernels.lora_swiglu's tl.dot takes those
            rank = -(-rank // 16) * 16
        a = torch.zeros(self.groups, weight.shape[1], rank, dtype=weight.dtype, device=weight.device)
        b = torch.zeros(self.groups, rank, weight.shape[0], dtype=weight.dtype, device=weight.device)
        for g, key in enumerate(self.keys, start=1):
            if key in factors:
                f = factors[key]
                r = f.a.shape[0]
                a[g, :, :r] = (f.a.t() * f.scaling).to(weight.dtype)
                b[g, :r, :] = f.b.t().to(weight.dtype)
        return _Linear(weight, bias, a, b)

    # ------------------------------------------------------------ the model

    def _project(self, lin: _Linear, x: torch.Tensor, group_size: int | None, group: int | None) -> torch.Tensor:
        """x (N, T, in) -> (N, T, out): base weights for all rows, plus the LoRA delta of their group.

        Either every group's rows in order (``group_size`` rows each), or the rows of one ``group``.
        """
        out = F.linear(x, lin.weight, lin.bias)
        if lin.a is None or group == 0:
            return out
        if group is not None:
            return out + (x @ lin.a[group]) @ lin.b[group]
        n, t, d = x.shape
        # the adapters' groups only (the base's factors are zero). The delta is rounded, then
        # added, as PEFT adds the delta of bf16 factors; baddbmm_ rounds once on some backends
        # and twice on others. (Factors are stacked in the model's dtype: PEFT's fp32 factors
        # of a bf16 model give an fp32 delta, rounded once; benchmarks/README.md measures both.)
        xs = x.reshape(self.groups, group_size * t, d)[1:]
        out.view(self.groups, group_size * t, -1)[1:] += torch.bmm(torch.bmm(xs, lin.a[1:]), lin.b[1:])
        return out

    def _layer(
        self,
        layer,
        x,
        cos,
        sin,
        k_cache,
        v_cache,
        write,
        attn_mask,
        causal: bool,
        *,
        group_size: int | None = None,
        group: int | None = None,
    ):
        n, t, _ = x.shape
        fused = self.fused
        norm = layer["in_norm"]
        h = kernels.rms_norm(x, norm.weight, norm.variance_epsilon)[0] if fused else norm(x)
        q = self._project(layer["q_proj"], h, group_size, group).view(n, t, self.heads, self.head_dim)
        k = self._project(layer["k_proj"], h, group_size, group).view(n, t, self.kv_heads, self.head_dim)
        v = (
            self._project(layer["v_proj"], h, group_size, group)
            .view(n, t, self.kv_heads, self.head_dim)
            .transpose(1, 2)
        )
        if fused:
            q, k = kernels.rotary(q, cos, sin).transpose(1, 2), kernels.rotary(k, cos, sin).transpose(1, 2)
        else:
            q, k = _rotary(q.transpose(1, 2), cos, sin), _rotary(k.transpose(1, 2), cos, sin)
        write(k_cache, v_cache, k, v)
        if causal:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.heads)
        else:
            o = F.scaled_dot_product_attention(
                q, k_cache, v_cache, attn_mask=attn_mask, enable_gqa=self.kv_heads != self.heads
            )
        o = o.transpose(1, 2).reshape(n, t, self.heads * self.head_dim)
        attn = self._project(layer["o_proj"], o, group_size, group)
        norm = layer["post_norm"]
        if fused:
            h, x = kernels.rms_norm(attn, norm.weight, norm.variance_epsilon, residual=x)
        else:
            x = x + attn
            h = norm(x)
        act = self._swiglu(layer, h, group_size, group) if fused else None
        if act is None:
            gate = self._project(layer["gate_proj"], h, group_size, group)
            up = self._project(layer["up_proj"], h, group_size, group)
            act = kernels.silu_mul(gate, up) if fused else F.silu(gate) * up
        return x + self._project(layer["down_proj"], act, group_size, group)

    def _swiglu(self, layer, h: torch.Tensor, group_size: int | None, group: int | None) -> torch.Tensor | None:
        """The MLP's activation with the gate and up LoRA deltas added inside the fused kernel;
        None where it does not apply (one group at a time, partial tiles, other ranks)."""
        a = layer.get("gate_up_a")
        n, t, d = h.shape
        if a is None or group is not None or not kernels.lora_swiglu_applies(group_size * t, a.shape[2] // 2):
            return None
        gate, up = layer["gate_proj"], layer["up_proj"]
        xa = torch.bmm(h.reshape(self.groups, group_size * t, d)[1:], a[1:])
        return kernels.lora_swiglu(
            F.linear(h, gate.weight, gate.bias),
            F.linear(h, up.weight, up.bias),
            xa.reshape(-1, a.shape[2]),
            gate.b,
            up.b,
            group_size * t,
        )

    def _logits_last(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(x))

    # ------------------------------------------------------------ teacher forcing

    @torch.no_grad()
    def hidden(self, input_ids: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Final hidden states at the gathered positions for every group at once: (G, len(rows), d).

        ``input_ids`` are right-padded (B, T); one causal pass over all G x B rows, each group's
        LoRA applied to its rows. Group 0 is the base.
        """
        b, t = input_ids.shape
        ids = input_ids.repeat(self.groups, 1)
        x = self.embed(ids)
        cos, sin = self.rotary(x, torch.arange(t, device=ids.device).unsqueeze(0))  # (1, T, D): every row alike
        for layer in self.layers:
            x = self._layer(layer, x, cos, sin, None, None, lambda *a: None, None, causal=True, group_size=b)
        x = x.view(self.groups, b, t, -1)
        return self.norm(x[:, rows, positions])  # the decoder's final norm, as last_hidden_state has it

    # ------------------------------------------------------------ prefill and decode

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: list[list[int]],
        max_new_tokens: int,
        pad_id: int,
        stop_ids: set[int] | frozenset[int] = frozenset(),
    ) -> tuple[list[list[list[int]]], float]:
        """Greedy tokens per group (base first, then each adapter) for every prompt, and the seconds taken.

        Decoding stops early once every row has produced one of ``stop_ids`` (the rest of each
        row is ``pad_id``: callers cut rows at their first stop token, as HF greedy decoding does).
        """
        device = self.device
        b = len(prompt_ids)
        n = self.groups * b
        lens = torch.tensor([len(p) for p in prompt_ids], device=device)
        width = int(lens.max())
        slots = width + max_new_tokens
        ids = torch.full((b, width), pad_id, dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            ids[i, : len(p)] = torch.tensor(p)
        ids = ids.to(device)
        self._sync()
        start = time.perf_counter()
        shape = (n, self.kv_heads, slots, self.head_dim)
        caches = [
            (torch.zeros(shape, dtype=self.dtype, device=device), torch.zeros(shape, dtype=self.dtype, device=device))
            for _ in self.layers
        ]
        first = torch.empty(n, dtype=torch.long, device=device)
        positions = torch.arange(width, device=device).unsqueeze(0).expand(b, width)
        for g in range(self.groups):  # prefill, one group at a time (its LoRA is a plain matmul)
            rows = slice(g * b, (g + 1) * b)
            x = self.embed(ids)
            cos, sin = self.rotary(x, positions)

            def write(kc, vc, k, v, rows=rows):
                kc[rows, :, :width] = k
                vc[rows, :, :width] = v

            for layer, (kc, vc) in zip(self.layers, caches):
                x = self._layer(layer, x, cos, sin, kc, vc, write, None, causal=True, group=g)
            last = x[torch.arange(b, device=device), lens - 1].unsqueeze(1)
            first[rows] = self._logits_last(last)[:, 0].argmax(-1)
        all_lens = lens.repeat(self.groups)
        out = torch.empty(n, max_new_tokens, dtype=torch.long, device=device)
        out[:, 0] = first
        step = self._step_fn(n, slots, caches, all_lens)
        tokens, t_buf = step["tokens"], step["t"]
        stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device) if stop_ids else None
        finished = torch.isin(first, stop) if stop is not None else None
        # the check reads the device: every step on the CPU, every 8th on CUDA (where steps are graph replays)
        check_every = 8 if device.type == "cuda" else 1
        for t in range(1, max_new_tokens):
            if finished is not None and t % check_every == 0 and bool(finished.all()):
                out[:, t:] = pad_id
                break
            tokens.copy_(out[:, t - 1])
            t_buf.fill_(t - 1)
            step["run"]()
            out[:, t] = step["next"]
            if finished is not None:
                finished |= torch.isin(step["next"], stop)
        self._sync()
        seconds = time.perf_counter() - start
        rows = out.view(self.groups, b, max_new_tokens).tolist()
        return rows, seconds

    def _step_fn(self, n: int, slots: int, caches, lens: torch.Tensor) -> dict:
        """One decode step over static buffers; captured as a CUDA graph on CUDA."""
        device = self.device
        tokens = torch.zeros(n, dtype=torch.long, device=device)
        t_buf = torch.zeros((), dtype=torch.long, device=device)
        lens_buf = lens.clone()
        next_buf = torch.zeros(n, dtype=torch.long, device=device)
        arange_slots = torch.arange(slots, device=device)
        row_index = torch.arange(n, device=device)
        group_size = n // self.groups

        def body() -> None:
            pos = (lens_buf + t_buf).unsqueeze(1)  # (n, 1): where this token sits
            x = self.embed(tokens.unsqueeze(1))
            cos, sin = self.rotary(x, pos)
            mask = (arange_slots.unsqueeze(0) <= pos).view(n, 1, 1, slots)
            slot = pos.squeeze(1)

            def write(kc, vc, k, v):
                kc[row_index, :, slot] = k[:, :, 0]
                vc[row_index, :, slot] = v[:, :, 0]

            h = x
            for layer, (kc, vc) in zip(self.layers, caches):
                h = self._layer(layer, h, cos, sin, kc, vc, write, mask, causal=False, group_size=group_size)
            next_buf.copy_(self._logits_last(h)[:, 0].argmax(-1))

        runner = body
        if device.type == "cuda":
            # a graph is tied to its buffers; capture anew for this batch (cheap next to 64 steps)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    body()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body()
            runner = graph.replay
        # The graph reads and writes these buffers at the addresses it was captured with: they
        # must live as long as it does. A buffer dropped here would go back to the allocator, and
        # the next tensor of its size (an isin in the decode loop, an embedding batch) would sit
        # where the graph reads its row indices and positions: out-of-range writes, a device assert.
        keep = (lens_buf, arange_slots, row_index, caches, body)
        return {"tokens": tokens, "t": t_buf, "next": next_buf, "run": runner, "keep": keep}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
