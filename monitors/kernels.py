"""Fused Triton kernels for the grouped teacher-forced pass and the drift metrics on CUDA.

Each kernel does in one pass over memory what eager PyTorch does in several, and rounds where
eager rounds: a bf16 model's RMSNorm, rotary embedding and SwiGLU round every intermediate to
bf16, and those roundings move a small KL by tens of percent when a compiler keeps fp32 in
between (measured on the H200, benchmarks/README.md). So the kernels keep them:

- ``rms_norm``: optionally ``x + residual`` (rounded), then HF's ``weight * (x32 * rsqrt(mean(x32²)
  + eps)).to(dtype)``: the normalised value rounded, then the product rounded;
- ``rotary``: ``q * cos + rotate_half(q) * sin`` with both products and the sum rounded;
- ``silu_mul``: ``silu(gate)`` rounded, times ``up`` rounded; ``lora_swiglu`` the same after
  adding each adapter group's LoRA deltas to ``gate`` and ``up`` (rounded, then added, as PEFT
  adds the delta of bf16 factors);
- ``base_stats`` and ``drift``: per position the log-sum-exp and argmax of bf16 logits, then
  KL(adapted || base), Jensen-Shannon, top-1 agreement and the label's log-probs in fp32, in
  two passes over the vocabulary (the second reads the first's logits back from L2), from the
  base's bf16 logits and log-sum-exp instead of fp32 log-probs (half the bytes, same values).

They run on CUDA when Triton is installed (it ships with CUDA builds of torch). The same kernels
run on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the CPU tests
check their arithmetic against the eager code; the interpreter truncates fp32 -> bf16 instead of
rounding to nearest, so under it the kernels round by hand.
"""

import math
import os

import torch

from lorawatch.llama_file import RMSNorm

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # CPU installs without triton: the eager code runs instead
    triton = libdevice = None

    class tl:  # noqa: N801 - only so the kernels' annotations evaluate
        constexpr = None


LOG2 = math.log(2.0)
NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"}


def is_rms_norm(module) -> bool:
    """Whether ``module`` computes transformers' Llama RMSNorm (which ``rms_norm`` reproduces):
    one of NORMS, or ``lorawatch.llama_file``'s copy of it."""
    named = type(module).__name__ in NORMS and hasattr(module, "variance_epsilon")
    return named or type(module) is RMSNorm


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


INTERP = interpreting()  # read once: triton.jit picks the interpreter when a kernel is defined


def available(device: torch.device) -> bool:
    """Whether the kernels run for tensors on ``device``: on CUDA (compute capability 8.0 or
    newer) with Triton installed, unless ``LORAWATCH_FUSED_KERNELS=0``; on the CPU only under
    the interpreter with
    ``LORAWATCH_FUSED_KERNELS=interpret`` (tests: slow, but the same kernels)."""
    setting = os.environ.get("LORAWATCH_FUSED_KERNELS", "1")
    if triton is None or setting == "0":
        return False
    if device.type == "cpu":
        return INTERP and setting == "interpret"
    # bf16 tl.dot and the bf16 conversions need Ampere or newer
    return device.type == "cuda" and not INTERP and torch.cuda.get_device_capability(device) >= (8, 0)


def _jit(fn):
    return triton.jit(fn) if triton is not None else fn


@_jit
def _round(x, ROUND: tl.constexpr):
    """fp32 rounded to the nearest bf16 (ties to even), kept in fp32; by hand only under the
    interpreter, whose casts truncate."""
    if ROUND:
        bits = x.to(tl.uint32, bitcast=True)
        x = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return x


@_jit
def _exp(x, INTERP: tl.constexpr):
    if INTERP:
        return tl.exp(x)
    else:
        return libdevice.exp(x)  # expf, as torch's kernels use (tl.exp is an approximation)


@_jit
def _log(x, INTERP: tl.constexpr):
    if INTERP:
        return tl.log(x)
    else:
        return libdevice.log(x)


@_jit
def _mul(x, y, INTERP: tl.constexpr):
    if INTERP:
        return x * y
    else:
        # never contracted into an FMA with a following add: eager rounds the product first
        return libdevice.mul_rn(x, y)


@_jit
def _rsqrt(x, INTERP: tl.constexpr):
    if INTERP:
        return tl.math.rsqrt(x)
    else:
        return libdevice.rsqrt(x)


@_jit
def _div(x, y, INTERP: tl.constexpr):
    if INTERP:
        return tl.math.div_rn(x, y)
    else:
        return libdevice.div_rn(x, y)  # IEEE division, as torch's silu


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


# ----------------------------------------------------------------- kernel bodies
# ``ROUND``: round to bf16 by hand (the interpreter, bf16 tensors); ``INTERP``: the interpreter,
# which has tl.math but not libdevice.


@_jit
def _rms_norm_kernel(
    X,
    R,
    W,
    OUT,
    XOUT,
    D,
    eps,
    sx,
    sr,
    so,
    sxo,
    HAS_R: tl.constexpr,
    ROUND: tl.constexpr,
    INTERP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < D
    x = tl.load(X + row * sx + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_R:
        x = x + tl.load(R + row * sr + offs, mask=mask, other=0.0).to(tl.float32)
        x = _round(x, ROUND)
        x = x.to(XOUT.dtype.element_ty).to(tl.float32)
        tl.store(XOUT + row * sxo + offs, x.to(XOUT.dtype.element_ty), mask=mask)
    var = tl.sum(x * x, axis=0) / D
    y = x * _rsqrt(var + eps, INTERP)
    y = _round(y, ROUND)
    y = y.to(OUT.dtype.element_ty).to(tl.float32)
    w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
    out = w * y
    out = _round(out, ROUND)
    tl.store(OUT + row * so + offs, out.to(OUT.dtype.element_ty), mask=mask)


@_jit
def _rotary_kernel(
    Q,
    COS,
    SIN,
    OUT,
    T,
    H,
    HALF,
    sc_n,
    sc_t,
    ROUND: tl.constexpr,
    INTERP: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # one (sequence, position) row: all its heads
    n = row // T
    t = row % T
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < H) & (d < HALF)
    offs = row * (H * 2 * HALF) + h * (2 * HALF) + d  # Q and OUT are contiguous (N, T, H, D)
    q1 = tl.load(Q + offs, mask=mask, other=0.0).to(tl.float32)
    q2 = tl.load(Q + offs + HALF, mask=mask, other=0.0).to(tl.float32)
    cs = n * sc_n + t * sc_t + d
    c1 = tl.load(COS + cs, mask=d < HALF, other=0.0).to(tl.float32)
    c2 = tl.load(COS + cs + HALF, mask=d < HALF, other=0.0).to(tl.float32)
    s1 = tl.load(SIN + cs, mask=d < HALF, other=0.0).to(tl.float32)
    s2 = tl.load(SIN + cs + HALF, mask=d < HALF, other=0.0).to(tl.float32)
    dt = OUT.dtype.element_ty
    a1 = _mul(q1, c1, INTERP)
    b1 = -_mul(q2, s1, INTERP)
    a2 = _mul(q2, c2, INTERP)
    b2 = _mul(q1, s2, INTERP)
    a1 = _round(a1, ROUND)
    b1 = _round(b1, ROUND)
    a2 = _round(a2, ROUND)
    b2 = _round(b2, ROUND)
    o1 = a1.to(dt).to(tl.float32) + b1.to(dt).to(tl.float32)
    o2 = a2.to(dt).to(tl.float32) + b2.to(dt).to(tl.float32)
    o1 = _round(o1, ROUND)
    o2 = _round(o2, ROUND)
    tl.store(OUT + offs, o1.to(dt), mask=mask)
    tl.store(OUT + offs + HALF, o2.to(dt), mask=mask)


@_jit
def _silu_mul_kernel(G, U, OUT, N, ROUND: tl.constexpr, INTERP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    dt = OUT.dtype.element_ty
    s = _div(g, 1.0 + _exp(-g, INTERP), INTERP)  # what torch's silu computes in fp32
    s = _round(s, ROUND)
    out = s.to(dt).to(tl.float32) * u
    out = _round(out, ROUND)
    tl.store(OUT + offs, out.to(dt), mask=mask)


@_jit
def _lora_swiglu_kernel(
    GATE,
    UP,
    XA,
    BG,
    BU,
    OUT,
    N,
    GROUP_ROWS,
    R,
    sxa,
    sbg,
    sbu,
    ROUND: tl.constexpr,
    INTERP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BR: tl.constexpr,
):
    """``silu(gate + xa_g @ B_g) * (up + xa_u @ B_u)`` on a (BM, BN) tile of one group's rows: the
    adapters' LoRA deltas of the gate and up projections added where they are used (two reads
    and writes fewer of both outputs than adding them first)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m.to(tl.int64) * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    cmask = cols < N
    offs = rows[:, None] * N + cols[None, :]
    gate = tl.load(GATE + offs, mask=cmask[None, :], other=0.0).to(tl.float32)
    up = tl.load(UP + offs, mask=cmask[None, :], other=0.0).to(tl.float32)
    group = (pid_m * BM) // GROUP_ROWS  # a tile never straddles two groups
    if group > 0:  # the base's rows have no delta
        r = tl.arange(0, BR)
        xrows = rows - GROUP_ROWS  # XA holds the adapters' rows only
        rmask = r < R
        xg = tl.load(XA + xrows[:, None] * sxa + r[None, :], mask=rmask[None, :], other=0.0)
        xu = tl.load(XA + xrows[:, None] * sxa + R + r[None, :], mask=rmask[None, :], other=0.0)
        bmask = rmask[:, None] & cmask[None, :]
        bg = tl.load(BG + group.to(tl.int64) * sbg + r[:, None] * N + cols[None, :], mask=bmask, other=0.0)
        bu = tl.load(BU + group.to(tl.int64) * sbu + r[:, None] * N + cols[None, :], mask=bmask, other=0.0)
        if INTERP:  # the interpreter multiplies bf16 as raw bits: fp32 there (exact products)
            xg, bg, xu, bu = xg.to(tl.float32), bg.to(tl.float32), xu.to(tl.float32), bu.to(tl.float32)
            dg = tl.dot(xg, bg, input_precision="ieee")
            du = tl.dot(xu, bu, input_precision="ieee")
        else:
            dg = tl.dot(xg, bg)
            du = tl.dot(xu, bu)
        # the delta rounded before the sum, as PEFT rounds lora_B(lora_A(x)) of bf16 factors
        # (the grouped pass stacks every adapter's factors in the model's dtype)
        gate = gate + _round(dg, ROUND).to(OUT.dtype.element_ty).to(tl.float32)
        up = up + _round(du, ROUND).to(OUT.dtype.element_ty).to(tl.float32)
    dt = OUT.dtype.element_ty
    gate = _round(gate, ROUND).to(dt).to(tl.float32)
    up = _round(up, ROUND).to(dt).to(tl.float32)
    act = _div(gate, 1.0 + _exp(-gate, INTERP), INTERP)
    act = _round(act, ROUND).to(dt).to(tl.float32)
    out = _round(act * up, ROUND)
    tl.store(OUT + offs, out.to(dt), mask=cmask[None, :])


@_jit
def _drift_kernel(
    ZA,
    ZB,
    LSE_B,
    ARG_B,
    LAB,
    KL,
    JS,
    AGREE,
    LPB,
    LPA,
    LSE_OUT,
    ARG_OUT,
    V,
    sa,
    sb,
    log2,
    BASE: tl.constexpr,
    INTERP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One position per program. Pass 1: log-sum-exp and argmax of ZA's row. With BASE set
    that is all (the base's statistics); otherwise pass 2 (last block first, while it is still
    in L2) accumulates KL and JS against ZB's row and its given log-sum-exp.

    The per-element exponentials and logarithms use the fast hardware approximations (relative
    error about 1e-7, far below what the fp32 sums carry); the final logarithm is the exact one.
    JS's log-mixture is ``log(pa + pb) - log 2`` (one logarithm instead of logaddexp's three
    functions), zero where both probabilities underflow."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    za_row = ZA + row * sa
    # per lane: running maximum, sum of exp(z - maximum) (one exponential per element), argmax
    m = tl.full([BLOCK], -1e30, tl.float32)  # finite: masked (-inf) elements add exp(-inf) = 0
    s = tl.zeros([BLOCK], tl.float32)
    best_i = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        idx = start + offs
        z = tl.load(za_row + idx, mask=idx < V, other=-float("inf")).to(tl.float32)
        up = z > m  # strictly: a lane keeps the first index of its maximum, as torch's argmax
        e = tl.exp(-tl.abs(z - m))
        s = tl.where(up, s * e + 1.0, s + e)
        best_i = tl.where(up, idx, best_i)
        m = tl.maximum(m, z)
    mx = tl.max(m, axis=0)
    lse = mx + _log(tl.sum(s * tl.exp(m - mx), axis=0), INTERP)
    best_i = tl.min(tl.where(m == mx, best_i, V), axis=0)
    if BASE:
        tl.store(LSE_OUT + row, lse)
        tl.store(ARG_OUT + row, best_i)
    else:
        zb_row = ZB + row * sb
        lse_b = tl.load(LSE_B + row)
        kl = tl.zeros([BLOCK], tl.float32)
        js = tl.zeros([BLOCK], tl.float32)
        n_blocks = tl.cdiv(V, BLOCK)
        for i in range(n_blocks):
            idx = (n_blocks - 1 - i) * BLOCK + offs
            mask = idx < V
            la = tl.load(za_row + idx, mask=mask, other=0.0).to(tl.float32) - lse
            lb = tl.load(zb_row + idx, mask=mask, other=0.0).to(tl.float32) - lse_b
            pa = tl.exp(la)
            pb = tl.exp(lb)
            kl += tl.where(mask, pa * (la - lb), 0.0)
            both = pa + pb
            lm = tl.log(tl.where(both > 0.0, both, 1.0)) - log2
            term = 0.5 * (pa * (la - lm) + pb * (lb - lm))
            js += tl.where(mask & (la != lb) & (both > 0.0), term, 0.0)
        label = tl.load(LAB + row)
        tl.store(KL + row, tl.sum(kl, axis=0))
        tl.store(JS + row, tl.sum(js, axis=0))
        tl.store(AGREE + row, (best_i == tl.load(ARG_B + row)).to(tl.int32))
        tl.store(LPA + row, tl.load(za_row + label).to(tl.float32) - lse)
        tl.store(LPB + row, tl.load(zb_row + label).to(tl.float32) - lse_b)


# ----------------------------------------------------------------- wrappers


def _round_flag(t: torch.Tensor) -> bool:
    return INTERP and t.dtype == torch.bfloat16


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(norm(x + residual), x + residual)`` as HF's Llama RMSNorm computes them, over the last
    dimension (without ``residual``: ``(norm(x), x)``)."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    out = torch.empty((x2.shape[0], d), dtype=x.dtype, device=x.device)
    if residual is not None:
        r2 = residual.reshape(-1, d)
        r2 = r2 if r2.stride(-1) == 1 else r2.contiguous()
        xout = torch.empty_like(out)
    else:
        r2, xout = x2, out
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](
            x2,
            r2,
            weight,
            out,
            xout,
            d,
            float(eps),
            x2.stride(0),
            r2.stride(0),
            out.stride(0),
            xout.stride(0),
            HAS_R=residual is not None,
            INTERP=INTERP,
            ROUND=_round_flag(x),
            BLOCK=_pow2(d),
            num_warps=8 if d >= 4096 else 4,
        )
    return out.view(x.shape), (xout.view(x.shape) if residual is not None else x)


def rotary(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``q * cos + rotate_half(q) * sin`` for ``q`` of shape (N, T, H, D) (the projection's layout,
    last dimension contiguous) and ``cos``/``sin`` of shape (N or 1, T, D); returns (N, T, H, D)."""
    n, t, h, d = q.shape
    if cos.shape[-1] != d or sin.shape != cos.shape or cos.shape[0] not in (1, n):
        raise ValueError(f"rotary: cos/sin of shape {tuple(cos.shape)} do not fit q of shape {tuple(q.shape)}")
    q = q.contiguous()
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty_like(q)
    sc_n = 0 if cos.shape[0] == 1 else cos.stride(0)
    if n * t:
        _rotary_kernel[(n * t,)](
            q,
            cos,
            sin,
            out,
            t,
            h,
            d // 2,
            sc_n,
            cos.stride(1),
            INTERP=INTERP,
            ROUND=_round_flag(q),
            BLOCK_H=_pow2(h),
            BLOCK_D=_pow2(d // 2),
            num_warps=4,
        )
    return out


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, rounded as eager rounds."""
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate)
    n = gate.numel()
    block = 2048
    if n:
        _silu_mul_kernel[(triton.cdiv(n, block),)](
            gate, up, out, n, INTERP=INTERP, ROUND=_round_flag(gate), BLOCK=block, num_warps=4
        )
    return out


def _tile_rows(group_rows: int) -> int:
    """Rows of a ``_lora_swiglu_kernel`` tile: the largest of 64, 32, 16 that divides a group."""
    return next((bm for bm in (64, 32, 16) if group_rows % bm == 0), 0)


def lora_swiglu_applies(group_rows: int, rank: int) -> bool:
    """Whether ``lora_swiglu`` takes groups of ``group_rows`` rows (whole tiles) and this rank."""
    return _tile_rows(group_rows) > 0 and rank % 16 == 0 and rank <= 128


def lora_swiglu(
    gate: torch.Tensor, up: torch.Tensor, xa: torch.Tensor, b_gate: torch.Tensor, b_up: torch.Tensor, group_rows: int
) -> torch.Tensor:
    """``silu(gate + delta_g) * (up + delta_u)`` for rows in groups of ``group_rows`` (the base's
    first, no delta), where group ``g``'s deltas are ``xa[:, :R] @ b_gate[g]`` and
    ``xa[:, R:] @ b_up[g]``; ``gate`` and ``up`` are (rows, N) base projections, ``xa`` (rows
    of the adapters' groups, 2R) their inputs times the stacked ``A`` factors, ``b_*`` (G, R, N)."""
    n_cols = gate.shape[-1]
    gate2, up2 = gate.reshape(-1, n_cols), up.reshape(-1, n_cols)
    rank = b_gate.shape[1]
    assert gate2.is_contiguous() and up2.is_contiguous() and xa.stride(-1) == 1
    assert b_gate.is_contiguous() and b_up.is_contiguous() and lora_swiglu_applies(group_rows, rank)
    assert xa.shape[0] == gate2.shape[0] - group_rows and xa.shape[1] == 2 * rank
    out = torch.empty_like(gate2)
    bm, bn = _tile_rows(group_rows), 128
    grid = (gate2.shape[0] // bm, triton.cdiv(n_cols, bn))
    if gate2.shape[0]:
        _lora_swiglu_kernel[grid](
            gate2,
            up2,
            xa,
            b_gate,
            b_up,
            out,
            n_cols,
            group_rows,
            rank,
            xa.stride(0),
            b_gate.stride(0),
            b_up.stride(0),
            INTERP=INTERP,
            ROUND=_round_flag(gate),
            BM=bm,
            BN=bn,
            BR=_pow2(rank),
            num_warps=4,
        )
    return out.view(gate.shape)


DRIFT_LAUNCH = {"block": 2048, "num_warps": 8}  # a row per program; the fastest of 2048-8192 x 4-16 warps on the H200


def _block(v: int) -> int:
    return min(DRIFT_LAUNCH["block"], _pow2(v))


def base_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of (M, V) logits: fp32 log-sum-exp and the argmax (first index of the maximum)."""
    m, v = logits.shape
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    lse = torch.empty(m, dtype=torch.float32, device=logits.device)
    arg = torch.empty(m, dtype=torch.int32, device=logits.device)
    if m:
        # the arguments of the second pass are unused with BASE: placeholders of the right types
        _drift_kernel[(m,)](
            logits,
            logits,
            lse,
            arg,
            arg,
            lse,
            lse,
            arg,
            lse,
            lse,
            lse,
            arg,
            v,
            logits.stride(0),
            logits.stride(0),
            LOG2,
            BASE=True,
            INTERP=INTERP,
            BLOCK=_block(v),
            num_warps=DRIFT_LAUNCH["num_warps"],
        )
    return lse, arg


def drift(
    adapted: torch.Tensor, base: torch.Tensor, base_lse: torch.Tensor, base_arg: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Per row: KL(adapted || base), JS, top-1 agreement (bool), the label's base and adapted
    log-probs, from (M, V) logits of each model (last dimension contiguous) and the base's
    ``base_stats``."""
    m, v = adapted.shape
    adapted = adapted if adapted.stride(-1) == 1 else adapted.contiguous()
    base = base if base.stride(-1) == 1 else base.contiguous()
    dev = adapted.device
    kl, js, lpb, lpa = (torch.empty(m, dtype=torch.float32, device=dev) for _ in range(4))
    agree = torch.empty(m, dtype=torch.int32, device=dev)
    if m:
        _drift_kernel[(m,)](
            adapted,
            base,
            base_lse,
            base_arg,
            labels.to(torch.int64),
            kl,
            js,
            agree,
            lpb,
            lpa,
            kl,
            agree,
            v,
            adapted.stride(0),
            base.stride(0),
            LOG2,
            BASE=False,
            INTERP=INTERP,
            BLOCK=_block(v),
            num_warps=DRIFT_LAUNCH["num_warps"],
        )
    return kl, js, agree.bool(), lpb, lpa
