"""Functional ops for the model files, each backed by a kernel that exists on the current device.

MindSpore 2.10's `mint` API mirrors torch but many of its kernels are not registered on CPU (embedding, layer_norm,
gelu, log_softmax, stack, cumsum, topk, arange, ...). The legacy `ops` twins run everywhere. Where `mint` has a CPU
kernel we use it; otherwise we use `ops` on CPU and keep `mint` for GPU/Ascend (`_MINT_ONLY_DEVICE`).
Every function here keeps torch's semantics (argument meaning, dtype rules), so model files read like HF's.
All functions are usable both in PyNative and inside `mindspore.jit`.
"""

import math

import mindspore as ms
import numpy as np
from mindspore import mint, nn, ops

from . import native, runtime

# Kernels that only exist on GPU/Ascend are chosen with this flag; on CPU the `ops` twin is used.
_MINT_ONLY_DEVICE = not runtime.is_cpu()

FLOAT_DTYPES = (ms.float16, ms.bfloat16, ms.float32, ms.float64)


def cast(x, dtype):
    """`x` in `dtype`, returned as it is when it already is. In PyNative even a same-dtype `astype` launches a kernel
    (~24 µs on CPU, measured), and the norms, softmax and losses below (and `generate`, on every step's logits) cast
    on every call; under `jit` the check folds away."""
    return x if x.dtype == dtype else x.astype(dtype)


def finfo_min(dtype) -> float:
    """Most negative finite value of a float dtype (torch.finfo(dtype).min): the additive mask value HF uses."""
    if dtype == ms.float16:
        return -65504.0
    if dtype == ms.bfloat16:
        return -3.3895313892515355e38
    if dtype == ms.float64:
        return -1.7976931348623157e308
    return -3.4028234663852886e38


# ----------------------------------------------------------------------------------------------------------------
# Linear algebra and lookups
# ----------------------------------------------------------------------------------------------------------------


_matmul_nt = ops.MatMul(transpose_b=True)
_batch_matmul_nt = ops.BatchMatMul(transpose_b=True)
_batch_matmul = ops.BatchMatMul()
# x @ w.T for a single float32 row (batch-1 decoding) on CPU: MindSpore's MatMul streams the weights at ~10 GB/s,
# the native kernel at ~17 GB/s (see native.py); None when native kernels are unavailable
_native_linear_nt = native.linear_nt_op()


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, weight in torch's (out_features, in_features) layout.

    On CPU `mint.nn.functional.linear` costs ~7 ms per call in PyNative whatever the size (measured: 20x a 2-D
    MatMul with transpose_b on a decode-step input) and ~1.4x inside jit, so CPU flattens to 2-D and uses MatMul,
    or for a single float32 row the native matrix-vector kernel (`native.linear_nt_op`, ~1.5x faster).
    """
    if _MINT_ONLY_DEVICE:
        return mint.nn.functional.linear(x, weight, bias)
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    # an exported graph holds MindSpore's operators only; the export check comes first so that it decides while the
    # graph is traced even when the row count is a dynamic axis (else both branches would be traced)
    if (runtime.native_ops_allowed() and _native_linear_nt is not None and x.shape[0] == 1
            and x.dtype == ms.float32 and weight.dtype == ms.float32):
        out = _native_linear_nt(x, weight)
    elif bias is not None and x.dtype == ms.float16:
        # torch's fp16 addmm adds the bias to the float32 accumulator and rounds once; an fp16 MatMul followed by an
        # fp16 add rounds twice (measured: 284 of 888 outputs of a 24x32 @ 32x37 layer off by an fp16 ulp). fp16
        # values multiply exactly in float32, so the float32 kernel gives torch's numbers
        out = _matmul_nt(x.astype(ms.float32), weight.astype(ms.float32)) + bias.astype(ms.float32)
        return out.astype(ms.float16).reshape(shape[:-1] + (weight.shape[0],))
    else:
        out = _matmul_nt(x, weight)
    if bias is not None:
        # BiasAdd, not a broadcasting Add: on CPU the Add kernel costs ~3 ns per output element when it broadcasts
        # the bias (8x257 rows x 1536: +10 ms on a 15 ms MatMul, one core), BiasAdd ~1 ns (torch's addmm: ~0.5)
        out = _bias_add(out, bias) if out.dtype == bias.dtype else out + bias
    return out.reshape(shape[:-1] + (weight.shape[0],))


_bias_add = ops.BiasAdd()


_native_swap_axes12 = native.swap_axes12_op()


def swap_axes(x, axis0, axis1):
    """x.swapaxes(axis0, axis1) for two adjacent axes (non-negative, axis0 < axis1). In a compiled training step
    (`runtime.training_graph`) on a 4-D float32 tensor a native copy kernel: MindSpore's CPU Transpose kernel keeps
    ~2 output-sized buffers until the compiled graph ends (`benchmarks/probe_graph_buffers.py`), which for the
    attention's head transposes of a training step was ~0.4 GB on SmolLM2-135M (batch 4 x 128); `mint.permute`
    frees them but made the step ~20% slower."""
    if _native_swap_axes12 is not None and runtime.in_training_graph():
        if x.ndim == 4 and x.dtype == ms.float32:
            a, b, c, d = x.shape
            if axis0 == 1 and axis1 == 2:
                return _native_swap_axes12(x)
            if axis0 == 0 and axis1 == 1:
                return _native_swap_axes12(x.reshape(1, a, b, c * d)).reshape(b, a, c, d)
    return x.swapaxes(axis0, axis1)


def matmul(a, b):
    return ops.matmul(a, b)


def _same_batch_matmul(a, b):
    """a @ b for equal batch dimensions. On CPU the BatchMatMul primitive: `ops.matmul`'s (MatMulExt) backward
    transposes its inputs with Transpose kernels, which inside a compiled graph hold ~2 output-sized buffers until
    it ends (`benchmarks/probe_graph_buffers.py`); BatchMatMul's backward folds the transposes into its kernels."""
    if _MINT_ONLY_DEVICE:
        return ops.matmul(a, b)
    return _batch_matmul(a, b)


def embedding(input_ids, weight, padding_idx=None):
    """Row lookup; `mint.nn.functional.embedding` has no CPU kernel, `ops.gather` runs everywhere.

    As in torch, the `padding_idx` row receives no gradient (its lookups are cut from the graph).
    """
    if _MINT_ONLY_DEVICE:
        out = mint.nn.functional.embedding(input_ids, weight)
    else:
        out = ops.gather(weight, input_ids, 0)
    if padding_idx is not None:
        keep = (input_ids != padding_idx)[..., None]
        out = ops.where(keep, out, ops.stop_gradient(out))
    return out


# MindSpore lists its FFT kernels (FFTN) for Ascend and CPU only
_HAS_FFT_KERNEL = runtime.device_target() in ("CPU", "Ascend")


def fft2_real(x):
    """Real part of the 2-D discrete Fourier transform over the last two axes, torch's
    `torch.fft.fftn(x, dim=(-2, -1)).real` (FNet's token mixing), in float32 and cast back to x's dtype.

    Where MindSpore has an FFT kernel, `ops.fftn` (on CPU 2e-7 from numpy relative to the mean, gradients included,
    in PyNative and jit; ~15x faster than the matmul form at 512 x 768); elsewhere the same numbers as four matmuls
    with the DFT's cosine and sine matrices (`_dft2_real`).
    """
    x32 = cast(x, ms.float32)
    y = ops.real(ops.fftn(x32, dim=(-2, -1))) if _HAS_FFT_KERNEL else _dft2_real(x32)
    return cast(y, x.dtype)


def _dft_cos_sin(n):
    # angles from (j * k) mod n so large indices lose no precision
    angle = 2.0 * np.pi * (np.outer(np.arange(n), np.arange(n)) % n) / n
    return ms.Tensor(np.cos(angle), ms.float32), ms.Tensor(np.sin(angle), ms.float32)


def _dft2_real(x):
    """Re(F_S x F_H) with F_n = C_n - i S_n (the DFT matrix; C, S symmetric) is C_S x C_H - S_S x S_H."""
    cos_s, sin_s = _dft_cos_sin(x.shape[-2])
    cos_h, sin_h = _dft_cos_sin(x.shape[-1])
    return ops.matmul(ops.matmul(cos_s, x), cos_h) - ops.matmul(ops.matmul(sin_s, x), sin_h)


def index_select(x, axis, index):
    """The entries of `x` at the integer positions `index` (1-D) along `axis`, as a new tensor (torch.index_select).

    Not `x[index]`: in PyNative (MindSpore 2.10) the result of indexing keeps a reference to its input, so a tensor
    re-indexed every step (`cache = cache[beam_idx]` in beam search) keeps every earlier version alive and memory
    grows by one copy per step. `mint.index_select` has no CPU kernel; `ops.gather` runs everywhere and releases it.
    """
    return ops.gather(x, index, axis)


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------


# LayerNorm rows as a native kernel (native.layer_norm_op, with its gradient); None when native kernels are unavailable
_native_layer_norm = native.layer_norm_op()


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis, computed in float32 (fp16 layer norms overflow easily) and cast back.

    On CPU the native kernel (`native.layer_norm_op`: statistics in double, rounded once; PyNative and graphs, with
    its gradient) except while exporting: MindSpore's LayerNorm kernel costs ~10x torch's on DINOv2-S's rows."""
    dtype = x.dtype
    if weight is None:
        weight = ops.ones(x.shape[-1:], ms.float32)
    if bias is None:
        bias = ops.zeros(x.shape[-1:], ms.float32)
    if _native_layer_norm is not None and runtime.export_format() is None:
        y = _native_layer_norm(cast(x, ms.float32), cast(weight, ms.float32), cast(bias, ms.float32),
                               ms.Tensor([eps], ms.float32))
        return cast(y, dtype)
    if _MINT_ONLY_DEVICE:
        y = mint.nn.functional.layer_norm(cast(x, ms.float32), x.shape[-1:], cast(weight, ms.float32),
                                          cast(bias, ms.float32), eps)
    else:
        # the functional LayerNormExt has no CPU kernel; the LayerNorm primitive does
        y, _, _ = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)(
            cast(x, ms.float32), cast(weight, ms.float32), cast(bias, ms.float32)
        )
    return cast(y, dtype)


def _rsqrt(x):
    """1 / sqrt(x); a division while exporting to ONNX (MindSpore's ONNX exporter has no Rsqrt nor Reciprocal)."""
    if runtime.export_format() == "ONNX":
        return ops.ones_like(x) / ops.sqrt(x)
    return ops.rsqrt(x)


# RMSNorm of float32 rows in one kernel (six MindSpore kernels otherwise), graph-safe and differentiable; None when
# native kernels are unavailable
_native_rms_norm = native.rms_norm_graph_op()
# the compiled training step's variant: its own gradient kernel, the backward keeps only x
_native_rms_norm_training = native.rms_norm_training_op()


def broadcast_operand(t, shape):
    """`t` expanded to `shape` for an elementwise op with a `shape`-sized tensor: a per-row statistic (..., 1), an
    attention mask (1, 1, Sq, Sk) against (B, H, Sq, Sk) scores.

    Inside a compiled graph on CPU, an elementwise kernel that broadcasts an operand holds ~4 output-sized buffers
    until the graph ends (measured: a chain of `x * x.mean(-1, keepdims)` grows by 4 x.size float32 per link, of
    `scores + mask` by 4 scores-sizes, the same chains with an explicit BroadcastTo by none). In a compiled training
    step that made the norms, the masked softmax and the loss its largest memory items (`docs/performance.md`,
    "Training memory"). PyNative frees them, so there the operand stays as it is."""
    if runtime.in_graph() and not _MINT_ONLY_DEVICE and t.shape != shape:
        return ops.broadcast_to(t, shape)
    return t


def _rms_normalize(x, eps):
    """x / sqrt(mean(x^2) + eps) in float32; `x * x` rather than `pow(x, 2)`: MindSpore's CPU Pow kernel was measured
    ~10x slower than Mul."""
    h = cast(x, ms.float32)
    inv_rms = _rsqrt((h * h).mean(-1, keep_dims=True) + eps)
    return h * broadcast_operand(inv_rms, h.shape)


def rms_norm(x, weight, eps=1e-6):
    """weight * x / sqrt(mean(x^2) + eps), with the statistics in float32 as HF does.

    In compiled graphs (float32) one native kernel does it (`native.rms_norm_graph_op`, C++ shape inference, its
    gradient from MindSpore's kernels): a decode step launches ~60 norms, six MindSpore kernels each, and every
    launch costs more than the norm's work; a 512-token prefill spent ~5% of its kernel time in those kernels."""
    if (_native_rms_norm_training is not None and weight is not None and runtime.in_training_graph()
            and x.dtype == ms.float32 and weight.dtype == ms.float32):
        # compiled training step: the backward keeps only x (MindSpore's ops: ~4 row-sized tensors per norm)
        return _native_rms_norm_training(x, weight, ms.Tensor([eps], ms.float32))
    if (_native_rms_norm is not None and runtime.export_format() is None and runtime.in_graph() and weight is not None
            and x.dtype == ms.float32 and weight.dtype == ms.float32):
        return _native_rms_norm(x, weight, ms.Tensor([eps], ms.float32))
    h = cast(_rms_normalize(x, eps), x.dtype)
    if weight is None:
        return h
    return broadcast_operand(weight, h.shape) * h


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """torch's group_norm on (B, C, *): statistics over each group of C / num_groups channels and all positions,
    biased variance, in float32 (cast back), then a per-channel affine."""
    dtype = x.dtype
    batch, channels = x.shape[0], x.shape[1]
    h = cast(x, ms.float32).reshape(batch, num_groups, -1)
    mean = h.mean(-1, keep_dims=True)
    centred = h - mean
    variance = (centred * centred).mean(-1, keep_dims=True)
    h = (centred * _rsqrt(variance + eps)).reshape(x.shape)
    affine_shape = (1, channels) + (1,) * (x.ndim - 2)
    if weight is not None:
        h = h * cast(weight, ms.float32).reshape(affine_shape)
    if bias is not None:
        h = h + cast(bias, ms.float32).reshape(affine_shape)
    return cast(h, dtype)


def weight_norm(g, v, dim=0):
    """torch's weight_norm parametrization: v * g / ||v||, the norm taken over every axis but `dim` (float32)."""
    axes = tuple(a for a in range(v.ndim) if a != dim % v.ndim)
    v32 = cast(v, ms.float32)
    norm = ops.sqrt((v32 * v32).sum(axes, keepdims=True))
    return cast(v32 * (cast(g, ms.float32) / norm), v.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Activations (names as in HF's ACT2FN)
# ----------------------------------------------------------------------------------------------------------------


# exact GELU as a native kernel (native.gelu_erf_op); None when native kernels are unavailable
_native_gelu = native.gelu_erf_op()


def gelu(x):
    """Exact (erf) GELU; `mint` GeluExt has no CPU kernel.

    On CPU the native kernel (`native.gelu_erf_op`, with its own backward), in PyNative and in graphs (its shape is
    inferred in C++, see `native._graph_safe_custom`): MindSpore's GeLU kernel is ~30x slower on large tensors
    (DINOv2/BERT/Whisper MLPs). Never while exporting (an exported file could not carry it).
    fp16 runs in float32 and rounds once, as torch's CPU kernel does: MindSpore's fp16 kernel is up to 2e-3 off
    torch's fp16 result, which doubled the fp16 error of Wav2Vec2's GELU-after-every-conv feature encoder.
    """
    if runtime.export_format() == "ONNX":
        x32 = cast(x, ms.float32)
        return cast(x32 * 0.5 * (1.0 + _erf_rational(x32 * _SQRT1_2)), x.dtype)
    if x.dtype == ms.float16:
        return gelu(x.astype(ms.float32)).astype(ms.float16)
    if _native_gelu is not None and x.dtype == ms.float32 and runtime.export_format() is None:
        return _native_gelu(x)
    return ops.gelu(x, approximate="none")


_SQRT1_2 = 1.0 / math.sqrt(2.0)
# erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4] (clamped outside, where erf is +-1 in float32): the float32 rational
# approximation of Eigen's / XLA's erf, 4.2e-7 from math.erf at most (measured on a 1e-4 grid over [-6, 6])
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def _erf_rational(x):
    """erf from Mul/Add/Div only: what ONNX export uses (MindSpore's ONNX exporter has no Erf)."""
    x = ops.clamp(x, -4.0, 4.0)
    x2 = x * x
    p = x2 * _ERF_P[0] + _ERF_P[1]
    for c in _ERF_P[2:]:
        p = p * x2 + c
    q = x2 * _ERF_Q[0] + _ERF_Q[1]
    for c in _ERF_Q[2:]:
        q = q * x2 + c
    return x * p / q


_GELU_TANH_C2 = 2.0 * math.sqrt(2.0 / math.pi)
# tanh GELU and quick GELU as native kernels (graph-safe, with gradients); None when native kernels are unavailable
_native_gelu_tanh = native.gelu_tanh_op()
_native_quick_gelu = native.quick_gelu_op()


def gelu_tanh(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    On CPU in float32 the native kernel (`native.gelu_tanh_op`: computed in double, rounded once; PyNative and
    graphs, with its gradient), except while exporting. Otherwise, in fp32, written as the equal x / (1 + exp(-2z)):
    MindSpore's CPU GeLU(tanh) kernel costs ~25-35 ns per element (8x257x1536: ~110 ms forward, ~230 ms forward +
    backward in jit; this form ~50 / ~105 ms); below ~16k elements (a decode step) its one launch is cheaper than
    the form's nine. Not the tanh form (the CPU Tanh kernel is off by 1e-4, see `tanh`), not x * sigmoid(2z) (its
    gradient is 9e-6 from float64: sigmoid's backward rounds s (1 - s) near s = 1); this one is 6e-7 (forward) and
    3e-6 (gradient) from float64, as the kernel. -2z is clamped to +-80 so exp cannot overflow (the derivative there
    is below 1e-30 either way).
    """
    if _native_gelu_tanh is not None and x.dtype == ms.float32 and runtime.export_format() is None:
        return _native_gelu_tanh(x)
    if _MINT_ONLY_DEVICE or x.dtype != ms.float32 or x.size < 16384:
        return ops.gelu(x, approximate="tanh")
    return x / (1.0 + ops.exp(ops.clamp(x * -_GELU_TANH_C2 * (1.0 + 0.044715 * (x * x)), -80.0, 80.0)))


def quick_gelu(x):
    """x * sigmoid(1.702 x); on CPU in float32 one native kernel (`native.quick_gelu_op`, with its gradient) instead of
    three MindSpore kernels, except while exporting."""
    if _native_quick_gelu is not None and x.dtype == ms.float32 and runtime.export_format() is None:
        return _native_quick_gelu(x)
    return x * ops.sigmoid(1.702 * x)


def silu(x):
    return mint.nn.functional.silu(x)


def relu(x):
    return ops.relu(x)


def tanh(x):
    """MindSpore's CPU fp32 Tanh kernel is off by up to 1e-4 for 3 < |x| < 7 (torch: 3e-8), e.g. tanh(5) > 1.
    tanh(|x|) = -expm1(-2|x|) / (2 + expm1(-2|x|)) is within 1.2e-7 (2*sigmoid(2x)-1 was 1.6e-6, enough to push
    BERT's pooled logits past the 1e-5 parity bar). |x| and the sign go through `where`, whose gradient is exact at 0.
    The fp16 kernel is within fp16 rounding, so fp16 keeps it; so does ONNX export (no Expm1 in MindSpore's ONNX
    exporter; the runtime executing the file brings its own Tanh)."""
    if _MINT_ONLY_DEVICE or x.dtype != ms.float32 or runtime.export_format() == "ONNX":
        return ops.tanh(x)
    positive = x >= 0
    e = ops.expm1(-2 * ops.where(positive, x, -x))
    t = -e / (2 + e)
    return ops.where(positive, t, -t)


def sigmoid(x):
    return ops.sigmoid(x)


def gelu_fast(x):
    """HF's FastGELU is the tanh GELU with sqrt(2/pi) rounded to 0.7978845608: the GeLU kernel is one op and precise."""
    return gelu_tanh(x)


ACT2FN = {
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "silu": silu,
    "swish": silu,
    "tanh": tanh,
    "sigmoid": sigmoid,
}


def get_activation(name: str):
    try:
        return ACT2FN[name]
    except KeyError:
        raise ValueError(f"activation {name!r} is not supported; choose one of {sorted(ACT2FN)}") from None


# ----------------------------------------------------------------------------------------------------------------
# Softmax, attention, dropout
# ----------------------------------------------------------------------------------------------------------------


def softmax(x, axis=-1, dtype=None):
    """Softmax; with `dtype` the input is cast first (HF computes attention softmax in float32).

    On CPU an fp16 softmax runs in fp32 and is cast back: MindSpore's fp16 Softmax kernel is ~7x slower than its fp32
    one (16x128x128: 5.4 vs 0.8 ms) and less accurate (8x16x128x128 vs torch fp32: 8.4e-2 forward, 0.42 gradient,
    against 3.1e-2 and 4.9e-2 for fp32-and-cast, which is what torch's own fp16 softmax gets).
    """
    if dtype is not None:
        x = cast(x, dtype)
    if not _MINT_ONLY_DEVICE and x.dtype == ms.float16:
        return ops.softmax(x.astype(ms.float32), axis).astype(ms.float16)
    return ops.softmax(x, axis)


def softmax_exp(x, axis=-1):
    """Softmax written as exp(x - max) / sum, for where the `Softmax` primitive's PyNative gradient was wrong.

    MindSpore 2.10 CPU, PyNative: in MobileViTV2 (separable attention: a softmax over the patches of a one-channel
    query, then a weighted sum of the keys) the parameter gradients of every block *before* the last two attention
    blocks came out 5-20x off torch (graph mode was right; each block alone, or the last two chained, was right too;
    a minimal two-softmax chain did not reproduce it). The same math through exp / sum differentiates correctly.
    """
    shifted = x - ops.stop_gradient(x.max(axis, keepdims=True))
    e = ops.exp(shifted)
    return e / e.sum(axis, keepdims=True)


def log_softmax(x, axis=-1):
    """`mint` LogSoftmaxExt has no CPU kernel; `ops.log_softmax` runs everywhere."""
    return ops.log_softmax(x, axis)


def log_sigmoid(x):
    """torch's logsigmoid as min(x, 0) - log1p(exp(-|x|)): finite for large |x| in both directions."""
    return ops.minimum(x, ops.zeros((), x.dtype)) - ops.log1p(ops.exp(-ops.abs(x)))


def gumbel_softmax(logits, tau=1.0, hard=False, gumbels=None):
    """torch's gumbel_softmax over the last axis, in float32 (cast back). `gumbels` (same shape) replaces the drawn
    Gumbel(0, 1) noise (for reproducible tests). `hard`: the one-hot argmax forward with the soft sample's gradient
    (straight-through)."""
    x = cast(logits, ms.float32)
    if gumbels is None:
        uniform = ops.clamp(ops.rand(x.shape, dtype=ms.float32), 1e-20, 1.0 - 1e-7)
        gumbels = -ops.log(-ops.log(uniform))
    y_soft = softmax((x + cast(gumbels, ms.float32)) / tau, -1)
    if hard:
        index = y_soft.argmax(-1)
        y_hard = (index[..., None] == ops.arange(0, x.shape[-1], dtype=index.dtype)).astype(ms.float32)
        y_soft = y_hard - ops.stop_gradient(y_soft) + y_soft
    return cast(y_soft, logits.dtype)


def dropout(x, p=0.5, training=False):
    if not training or p == 0.0:
        return x
    # mint's DropoutExt has no CPU kernel
    return ops.dropout(x, p=p, training=True)


def repeat_kv(x, n_rep: int):
    """(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D), each kv head repeated n_rep times (grouped-query attention)."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    # reshape, not x[:, :, None]: that indexing compiles to a StridedSlice copy of the whole cache (0.4 ms per call
    # on a 256-slot SmolLM2 cache, 60 per decode step)
    x = ops.broadcast_to(x.reshape(b, h, 1, s, d), (b, h, n_rep, s, d))
    return x.reshape(b, h * n_rep, s, d)


# decode-step attention products (native.batch_matmul_*_op) and the whole decode attention
# (native.decode_attention_op); None when native kernels are unavailable
_native_bmm_nt = native.batch_matmul_nt_op()
_native_bmm = native.batch_matmul_op()
_native_attention = native.decode_attention_op()


def _decode_mask_ok(attn_mask, b, h, sq, sk):
    """Whether the native decode attention takes this additive mask: 4-D (B or 1, H or 1, Sq or 1, Sk)."""
    if attn_mask is None or attn_mask.ndim != 4 or attn_mask.shape[-1] != sk:
        return False
    bm, hm, qm = attn_mask.shape[0], attn_mask.shape[1], attn_mask.shape[2]
    return bm in (1, b) and hm in (1, h) and qm in (1, sq)
# query rows (per kv head) up to which they are used: a decode step has (query heads / kv heads) rows
_NATIVE_ATTENTION_ROWS = 8


def attention(query, key, value, attn_mask=None, scale=None, dropout_p=0.0, training=False):
    """Eager scaled dot-product attention, HF's `eager_attention_forward` math.

    query (B, H, Sq, D), key/value (B, H_kv, Sk, D) where H_kv divides H (grouped-query attention: query head i uses
    kv head i // (H / H_kv), as HF's `repeat_kv`); attn_mask is additive and broadcastable to (B, H, Sq, Sk).
    `scale=None` means 1/sqrt(D); T5 passes 1.0. Returns (output (B, H, Sq, D), weights (B, H, Sq, Sk)).
    Softmax runs in float32 so fp16 scores near the mask value do not overflow.

    A query row whose keys are all masked (the padding positions of a left-padded causal batch) gets eager torch's
    value by default: the row's equal mask values softmax into a uniform average over all keys (future ones
    included). With `set_fully_masked_rows("sdpa")` such rows output zeros instead, as torch's
    `scaled_dot_product_attention` (HF's default "sdpa" attention) gives; the returned `weights` stay eager's (HF
    returns eager weights when asked for attentions). See `set_fully_masked_rows`.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    b, h, sq, d = query.shape
    h_kv = key.shape[1]
    if h_kv != h:
        # the query heads of one group share a kv head: fold them into the rows of one matmul against that head,
        # instead of materialising repeated keys/values (a whole-cache copy per layer and decode step)
        query = query.reshape(b, h_kv, (h // h_kv) * sq, d)
    # a decode step's few query rows: the native loops (MindSpore's BatchMatMul costs ~10x the work here)
    # the (constant) permission first: with a dynamic row count the comparison would not decide while tracing
    native_rows = (runtime.native_ops_allowed() and _native_bmm_nt is not None
                   and query.shape[-2] <= _NATIVE_ATTENTION_ROWS
                   and query.dtype == ms.float32 and key.dtype == ms.float32 and value.dtype == ms.float32)
    # (no gradient: only in generate()'s compiled steps)
    if (native_rows and _native_attention is not None and runtime.in_graph() and query.shape[:-2] == key.shape[:-2]
            and _decode_mask_ok(attn_mask, b, h, sq, key.shape[-2]) and not (training and dropout_p > 0.0)):
        # scores, scale, mask, softmax and the weighted values in one kernel (five MindSpore kernels otherwise)
        out, weights = _native_attention(query, key, value, cast(attn_mask, ms.float32),
                                         ms.Tensor([scale], ms.float32))
        out = out.reshape(b, h, sq, value.shape[-1])
        if _FULLY_MASKED_ROWS == "sdpa":
            out = out * _unmasked_rows(attn_mask, out.dtype)
        return out, weights.reshape(b, h, sq, weights.shape[-1])
    if native_rows and query.shape[:-2] == key.shape[:-2]:
        scores = _native_bmm_nt(query, key)
    elif _MINT_ONLY_DEVICE or query.shape[:-2] != key.shape[:-2]:
        scores = ops.matmul(query, key.swapaxes(-1, -2))
    else:
        # transpose_b inside the kernel: swapaxes materialises a transposed copy of the keys on CPU
        scores = _batch_matmul_nt(query, key)
    scores = scores.reshape(b, h, sq, scores.shape[-1])
    if (_native_masked_softmax is not None and scores.dtype == ms.float32 and runtime.export_format() is None
            and (attn_mask is None or _native_mask_ok(attn_mask, scores.shape))):
        # scale, mask and softmax in one native pass (four MindSpore kernels otherwise: ~8x the work at 512 tokens)
        mask = ops.zeros((1, 1, 1, 1), ms.float32) if attn_mask is None else cast(attn_mask, ms.float32)
        weights = _native_masked_softmax(scores, mask, ms.Tensor([scale], ms.float32))
    else:
        weights = _scaled_masked_softmax(scores, attn_mask, scale)
    weights = cast(weights, query.dtype)
    weights = dropout(weights, dropout_p, training)
    if h_kv != h:
        grouped = weights.reshape(b, h_kv, (h // h_kv) * sq, weights.shape[-1])
        out = _native_bmm(grouped, value) if native_rows else _same_batch_matmul(grouped, value)
        out = out.reshape(b, h, sq, value.shape[-1])
    else:
        out = _native_bmm(weights, value) if native_rows else _same_batch_matmul(weights, value)
    if attn_mask is not None and _FULLY_MASKED_ROWS == "sdpa":
        out = out * _unmasked_rows(attn_mask, out.dtype)
    return out, weights


# softmax(scores * scale + mask) in one native kernel (native.masked_softmax_op); None when unavailable
_native_masked_softmax = native.masked_softmax_op()


def _native_mask_ok(attn_mask, shape):
    """Whether the native masked softmax takes this additive mask: 4-D, each axis 1 or the scores' size."""
    if attn_mask.ndim != 4:
        return False
    m = attn_mask.shape
    return ((m[0] == 1 or m[0] == shape[0]) and (m[1] == 1 or m[1] == shape[1]) and (m[2] == 1 or m[2] == shape[2])
            and (m[3] == 1 or m[3] == shape[3]))


def _scaled_masked_softmax(scores, attn_mask, scale):
    """softmax(scores * scale + attn_mask) in float32 with MindSpore's kernels."""
    if scale != 1.0:
        if scores.dtype == ms.float16:
            # MindSpore would round the scale to fp16 first (8 ** -0.5 is off by 1.5e-4 relative), biasing every
            # score; scaled in float32 and kept there up to the (float32) softmax, one rounding fewer than torch's
            scores = scores.astype(ms.float32) * scale
        else:
            scores = scores * scale
    if attn_mask is not None:
        scores = scores + broadcast_operand(cast(attn_mask, scores.dtype), scores.shape)
    return softmax(scores, -1, ms.float32)


_FULLY_MASKED_ROWS = "eager"


def set_fully_masked_rows(mode: str):
    """What `attention` outputs for a query row whose keys are all masked: "eager" (default; HF's eager attention,
    the reference of this project's parity tests: a uniform average over every key) or "sdpa" (zeros, as torch's
    `scaled_dot_product_attention`, HF's default `attn_implementation`, gives).

    Only padding rows differ, but with `labels=input_ids` on a left-padded batch (no -100; or -100 on the padding,
    since the last padding position predicts the first real token) their logits enter the loss: "sdpa" makes the
    loss equal torch's with HF's default attention, "eager" torch's with `attn_implementation="eager"` (they differ
    by ~1e-3 relative on a tiny Llama). Process-wide and read when a graph is traced: set it before the first call of
    a model (graphs compiled earlier keep the mode they were traced with).
    """
    global _FULLY_MASKED_ROWS
    if mode not in ("eager", "sdpa"):
        raise ValueError(f"set_fully_masked_rows: mode must be 'eager' or 'sdpa', got {mode!r}")
    _FULLY_MASKED_ROWS = mode


def _unmasked_rows(attn_mask, dtype):
    """(..., Sq, 1): 1 where a query row of the additive mask allows at least one key, else 0. A row counts as fully
    masked when its largest entry is below half the dtype's minimum (mask value plus any bounded bias, e.g. T5's)."""
    threshold = finfo_min(attn_mask.dtype) / 2
    return (ops.ReduceMax(keep_dims=True)(attn_mask, -1) > threshold).astype(dtype)


@ops.constexpr
def _rotation_bases(rotary_dim, head_dim, interleaved, dtype):
    """(D, D) constants of `rotary_matrix`: the identity on the first `rotary_dim` features, the signed permutation P
    pairing them (x @ P == rotate_half(x) == cat(-x[R/2:R], x[:R/2]), or, interleaved, rotate_every_two(x) ==
    (-x1, x0, -x3, x2, ...)), and the identity on the features past `rotary_dim` (None when there are none)."""
    rotated = np.zeros((head_dim, head_dim), np.float32)
    rotated[np.arange(rotary_dim), np.arange(rotary_dim)] = 1.0
    perm = np.zeros((head_dim, head_dim), np.float32)
    if interleaved:
        even = np.arange(0, rotary_dim, 2)
        perm[even + 1, even] = -1.0
        perm[even, even + 1] = 1.0
    else:
        half = rotary_dim // 2
        perm[np.arange(half) + half, np.arange(half)] = -1.0
        perm[np.arange(half), np.arange(half) + half] = 1.0
    passed = None
    if head_dim > rotary_dim:
        passed = ms.Tensor(np.eye(head_dim, dtype=np.float32) - rotated, dtype)
    return ms.Tensor(rotated, dtype), ms.Tensor(perm, dtype), passed


def unbind(x, dim=0):
    """torch.unbind: the slices of `x` along `dim`, as a tuple. One Unstack kernel: inside a compiled graph on CPU,
    indexing `x[0], x[1], x[2]` runs a StridedSlice kernel each, ~20x slower (3 x (10, 256, 64) float32: 10.4 ms
    against 0.55 ms for the three)."""
    return ops.unstack(x, dim)


def rotate_half(x):
    """HF's `rotate_half`, cat(-x[..., D/2:], x[..., :D/2]), as one matmul with `_rotation_bases`' signed permutation
    (exact: one +-1 term per output). Written out it is two slices, a negation and a concatenation, and on CPU a
    StridedSlice of a large activation is slow (a 256-patch vision transformer spent a third of its compiled
    forward in them)."""
    _, perm, _ = _rotation_bases(x.shape[-1], x.shape[-1], False, x.dtype)
    return matmul(x, perm)


def rotary_matrix(cos, sin, scale=1.0, head_dim=None, interleaved=False):
    """HF's rotary embedding as one (D, D) matrix per position: for cos/sin tables (..., R) returns R (..., D, D) with
    `x @ R == (x * cos + rotate(x) * sin) * scale` on the first R features of rows x (..., D) and `x * scale` on the
    other D - R (partial rotary: GPT-NeoX, Phi, GPT-J, CodeGen; `head_dim` D defaults to R).

    `rotate` is HF's `rotate_half` (Llama, GPT-NeoX, Phi: the tables are cat(freqs, freqs)) or, with
    `interleaved=True`, `rotate_every_two` (GPT-J, CodeGen: feature pairs (2i, 2i+1), the tables repeat each frequency
    twice in a row).

    Built once per forward and shared by every layer, it turns RoPE into one batched matmul per tensor instead of
    seven or more kernels (slices, neg, concat, muls, add, and the pass-through concat): the kernel count of a
    compiled decode step is what bounds its speed on CPU. Each output element is still one cos and one sin product
    (the other terms are exact zeros). `scale` lets queries carry the attention scale (then attention runs with
    scale 1). No gradient flows into the tables (they depend on positions only).
    """
    rotary_dim = cos.shape[-1]
    dim = rotary_dim if head_dim is None else head_dim
    rotated, perm, passed = _rotation_bases(rotary_dim, dim, interleaved, cos.dtype)
    if dim > rotary_dim:
        cos = pad(cos, (0, dim - rotary_dim))
        sin = pad(sin, (0, dim - rotary_dim))
    # reshape rather than cos[..., None, :]: inside a compiled graph that indexing runs a StridedSlice kernel
    rows = cos.shape[:-1] + (1, dim)
    rotation = cos.reshape(rows) * rotated + sin.reshape(rows) * perm
    if passed is not None:
        rotation = rotation + passed
    if scale != 1.0:
        rotation = rotation * scale
    return ops.stop_gradient(rotation)


def apply_rotary_matrix(x, rotation):
    """RoPE with `rotary_matrix`'s matrices, returning heads first: x (B, S, H, D) rows, rotation (B, S, D, D) or
    (1, S, D, D) (positions shared by the batch, e.g. training) -> (B, H, S, D), the layout attention takes.

    With a shared rotation and B > 1, a batched matmul would broadcast the (S, D, D) matrices to every row of the
    batch (a BroadcastTo of B * S * D * D elements, forward and backward: ~5 ms each on CPU for B=4, S=128, D=64);
    instead the positions become the matmul's batch: (S, B * H, D) @ (S, D, D).
    """
    b, s, h, d = x.shape
    if rotation.shape[0] == b:
        if (runtime.native_ops_allowed() and _native_bmm is not None and h <= 16 and x.dtype == ms.float32
                and rotation.dtype == ms.float32):
            # a decode step's (H, D) @ (D, D) per position: the native loop (MindSpore's BatchMatMul: ~10x the work)
            return _native_bmm(x, rotation).swapaxes(1, 2)
        return matmul(x, rotation).swapaxes(1, 2)
    rows = swap_axes(x, 0, 1).reshape(s, b * h, d)
    out = _same_batch_matmul(rows, rotation.reshape(s, d, d)).reshape(s, b, h, d)
    if runtime.in_training_graph():
        return swap_axes(swap_axes(out, 0, 1), 1, 2)  # (see swap_axes)
    return out.transpose(1, 2, 0, 3)


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------


def _precise_log_softmax(x):
    """x - max - log(sum(exp(x - max))) over the last axis, written out: MindSpore's CPU LogSoftmax kernel is
    1.5e-6 (forward) and 8.4e-6 (gradient) from float64 on 64x7 logits, against 4.6e-7 and 1.6e-6 for this form
    (torch fp32: ~1e-8); its gradient error reaches every parameter gradient of a classifier."""
    shifted = x - broadcast_operand(ops.stop_gradient(x.max(-1, keepdims=True)), x.shape)
    return shifted - broadcast_operand(ops.log(ops.exp(shifted).sum(-1, keepdims=True)), x.shape)


_FLOAT64_LOSS_MAX_CLASSES = 64

# a decode step's routed experts straight from the stacked weights (native.routed_swiglu_op); None when unavailable
_native_routed_swiglu = native.routed_swiglu_op()


def routed_swiglu_experts(hidden_states, gate_up_proj, down_proj, top_k_index, top_k_weights, act_fn, expert_ids):
    """Mixture-of-experts SwiGLU (HF 5's stacked expert layout): sum over each token's top-k experts e of
    weight * down_e(act(gate_e x) * up_e x).

    hidden_states (T, H); gate_up_proj (E, 2I, H) (gate rows first); down_proj (E, H, I); top_k_index / top_k_weights
    (T, k); expert_ids (E,) = 0..E-1. Returns (T, H) in hidden_states' dtype; each expert output is weighted in the
    routing weights' dtype and the k (or E) terms summed in float32, as HF adds them.

    Static shapes either way (one graph per input shape). Few tokens (T * k < E: a decode step) gather the picked
    experts' weights and run only those; otherwise every expert runs on every token as one batched matmul and a
    combine matrix that is zero off each token's top-k keeps the routed outputs (E / k times the expert FLOPs, but
    no data-dependent shapes; the gradients equal HF's sparse loop's). Inside generate()'s compiled float32 steps
    with a SiLU activation, the few-token case is one native kernel reading the picked experts' weights in place
    (the gather copies them at every step and MindSpore's batched matmul costs ~10x the work of one row).
    """
    tokens, k = top_k_index.shape
    experts, hidden = gate_up_proj.shape[0], hidden_states.shape[-1]
    inter = down_proj.shape[-1]
    # (no gradient: only in generate()'s compiled steps; `==`, as `is` between functions does not compile)
    if (tokens * k < experts and _native_routed_swiglu is not None and runtime.native_ops_allowed()
            and runtime.in_graph() and act_fn == silu and hidden_states.dtype == ms.float32
            and gate_up_proj.dtype == ms.float32 and down_proj.dtype == ms.float32
            and top_k_weights.dtype == ms.float32):
        return _native_routed_swiglu(hidden_states, gate_up_proj, down_proj, top_k_index, top_k_weights)
    if tokens * k < experts:
        picked = top_k_index.reshape(-1)
        x = ops.broadcast_to(hidden_states.reshape(tokens, 1, 1, hidden), (tokens, k, 1, hidden))
        gate_up = _batch_matmul_nt(x.reshape(tokens * k, 1, hidden), ops.gather(gate_up_proj, picked, 0))
        gate, up = gate_up[..., :inter], gate_up[..., inter:]
        out = _batch_matmul_nt(act_fn(gate) * up, ops.gather(down_proj, picked, 0)).reshape(tokens, k, hidden)
        weighted = out.astype(top_k_weights.dtype) * top_k_weights[..., None]
        return weighted.astype(ms.float32).sum(1).astype(hidden_states.dtype)
    # combine[t, e] = weight of expert e for token t (0 when not routed), in the routing weights' dtype
    combine = ((top_k_index[..., None] == expert_ids).astype(top_k_weights.dtype) * top_k_weights[..., None]).sum(1)
    states = ops.broadcast_to(hidden_states[None], (experts,) + hidden_states.shape)
    # transpose_b inside the kernel: swapaxes would copy every expert's weights at every call
    gate_up = _batch_matmul_nt(states, gate_up_proj)  # (E, T, 2I)
    gate, up = gate_up[..., :inter], gate_up[..., inter:]
    expert_out = _batch_matmul_nt(act_fn(gate) * up, down_proj)  # (E, T, H)
    weighted = expert_out.astype(combine.dtype) * combine.swapaxes(0, 1)[..., None]
    return weighted.astype(ms.float32).sum(0).astype(hidden_states.dtype)


def cross_entropy(logits, labels, ignore_index=-100, reduction="mean", weight=None):
    """torch.nn.functional.cross_entropy over the last axis of `logits` (float32 math; float64 on CPU for up to
    `_FLOAT64_LOSS_MAX_CLASSES` classes, see below).

    Labels equal to `ignore_index` contribute nothing; "mean" divides by the number of counted labels
    (NaN when there are none, as torch). `weight` (num_classes,) scales each label's term, and "mean" then divides
    by the summed weights of the counted labels, as torch does.
    """
    compute_dtype = ms.float32
    if not _MINT_ONLY_DEVICE and logits.shape[-1] <= _FLOAT64_LOSS_MAX_CLASSES:
        # MindSpore's CPU Exp kernel is up to 5.6e-6 relative off (numpy fp32: 6e-7), and a loss averaged over many
        # rows of few classes (per-pixel segmentation, batches of labels) sums thousands of nearly cancelling
        # softmax - onehot terms into each parameter gradient: UperNet's conv gradients came out 2e-5..1.6e-4 off
        # float64 this way, torch fp32 5e-6. Label sets (<= 64 classes) make float64 free; vocabularies, even the tiny
        # ones of the test models, stay fp32 as torch's (float64 measured 1.9x slower on 512 x 32000 logits, and a
        # 99-token Phi's gradients moved 1.01e-4 from torch fp32's)
        compute_dtype = ms.float64
    logp = _precise_log_softmax(cast(logits, compute_dtype))
    valid = labels != ignore_index
    safe = ops.where(valid, labels, ops.zeros_like(labels))
    picked = ops.gather_elements(logp, -1, safe.astype(ms.int32)[..., None]).squeeze(-1)
    counted = valid.astype(compute_dtype)
    if weight is not None:
        counted = counted * ops.gather(cast(weight, compute_dtype), safe.astype(ms.int32), 0)
    nll = -picked * counted
    if reduction == "none":
        return cast(nll, logits.dtype)
    total = nll.sum()
    if reduction == "sum":
        return cast(total, logits.dtype)
    return cast(total / counted.sum(), logits.dtype)


class _LinearCrossEntropySum(nn.Cell):
    """(sum over counted rows of -log softmax(hidden @ weight.T)[label], its gradient w.r.t. hidden, w.r.t. weight);
    the backward scales the two gradients by the incoming one (`bprop`)."""

    def construct(self, hidden, weight, safe_labels, counted):
        label = safe_labels.reshape(-1, 1)
        count = counted.reshape(-1, 1)
        logits = _matmul_nt(hidden, weight)
        shifted = logits - broadcast_operand(logits.max(-1, keepdims=True), logits.shape)
        exp = ops.exp(shifted)
        norm = exp.sum(-1, keepdims=True)
        # the label's -log p = log(sum) - shifted[label], as `cross_entropy`'s log-softmax gives it
        total = ((ops.log(norm) - ops.gather_elements(shifted, -1, label)) * count).sum()
        # d total / d logits = (softmax - onehot(label)) * count
        grad = exp * broadcast_operand(count / norm, exp.shape)
        grad = ops.tensor_scatter_elements(grad, label, ops.gather_elements(grad, -1, label) - count, axis=1)
        return total, _matmul(grad, weight), _matmul_tn(grad, hidden)

    def bprop(self, hidden, weight, safe_labels, counted, out, dout):
        scale = dout[0]
        return (out[1] * scale.astype(out[1].dtype), out[2] * scale.astype(out[2].dtype),
                ops.zeros_like(safe_labels), ops.zeros_like(counted))


_matmul = ops.MatMul()
_matmul_tn = ops.MatMul(transpose_a=True)
_linear_cross_entropy_sum = _LinearCrossEntropySum()


def linear_cross_entropy(hidden, weight, labels, ignore_index=-100, reduction="mean", num_items=None):
    """`cross_entropy(linear(hidden, weight), labels, ignore_index, reduction)` for float32 (N, H) rows and a
    (V, H) weight, without keeping the (N, V) logits: for a training step's language-model head.

    The forward also forms the gradients w.r.t. `hidden` and `weight` (the loss's gradient w.r.t. its logits
    depends on nothing after the loss but a scalar) and frees the logits-sized tensors; the backward only scales
    those two gradients. Autodiff of `cross_entropy(linear(...))` keeps the
    whole logits and several logits-sized intermediates alive through the backward (SmolLM2-135M, 512 tokens x
    49152: ~100 MB each). `reduction`: "mean" over the counted labels, or "sum"; with `num_items` the sum is
    divided by it (HF's gradient-accumulation normalisation).
    """
    valid = labels != ignore_index
    safe = ops.where(valid, labels, ops.zeros_like(labels)).astype(ms.int32)
    counted = valid.astype(ms.float32)
    total = _linear_cross_entropy_sum(hidden, weight, safe, counted)[0]
    if num_items is not None:
        return total / num_items
    if reduction == "sum":
        return total
    return total / counted.sum()


def log_softmax_kl_div(logits, target):
    """(log_softmax(logits), torch's KLDivLoss(reduction="batchmean")(log_softmax(logits), target)) over the last
    axis: sum(target * (log target - log p)) / batch, zero-target terms 0 (torch's xlogy). The log-softmax is the
    written-out one of `cross_entropy`, in float64 on CPU for up to `_FLOAT64_LOSS_MAX_CLASSES` classes (MindSpore's
    LogSoftmax gradient error reached VisualBERT's first-layer key-weight gradients: 1.1e-4 from float64)."""
    compute_dtype = ms.float32
    if not _MINT_ONLY_DEVICE and logits.shape[-1] <= _FLOAT64_LOSS_MAX_CLASSES:
        compute_dtype = ms.float64
    logp = _precise_log_softmax(cast(logits, compute_dtype))
    target = cast(target, compute_dtype)
    positive = target > 0
    target_log = ops.where(positive, target * ops.log(ops.where(positive, target, ops.ones_like(target))),
                           ops.zeros_like(target))
    loss = (target_log - target * logp).sum() / logits.shape[0]
    return cast(logp, logits.dtype), cast(loss, logits.dtype)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """torch.nn.functional.ctc_loss with padded (N, S) targets: log_probs (T, N, C), lengths (N,); float32 math.

    "mean" divides each sequence's loss by its target length, then averages over the batch (torch's rule). The
    CTCLossV2 kernel (`ops.ctc_loss`) exists on CPU; target positions past a row's length are never read. It rejects
    a target longer than its input instead of returning torch's infinite loss, so such rows are run with a shortened
    target and their loss set to inf (0 with `zero_infinity`) afterwards, with no gradient.
    """
    input_lengths, target_lengths = input_lengths.astype(ms.int64), target_lengths.astype(ms.int64)
    impossible = target_lengths > input_lengths
    loss, _ = ops.ctc_loss(cast(log_probs, ms.float32), targets.astype(ms.int64), input_lengths,
                           ops.minimum(target_lengths, input_lengths), blank=blank, reduction="none",
                           zero_infinity=zero_infinity)
    replacement = ops.zeros((), ms.float32) if zero_infinity else ops.fill(ms.float32, (), float("inf"))
    loss = ops.where(impossible, replacement, loss)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return (loss / ops.clamp(target_lengths.astype(ms.float32), min=1.0)).mean()


def mse_loss(x, y):
    """Mean squared error in float32, returned in x's dtype (torch's dtype rule)."""
    d = cast(x, ms.float32) - cast(y, ms.float32)
    return cast((d * d).mean(), x.dtype)


def binary_cross_entropy_with_logits(logits, targets):
    """Mean BCE-with-logits in float32, returned in the logits' dtype (torch's dtype rule)."""
    x = cast(logits, ms.float32)
    ones = ops.ones_like(x)
    return cast(ops.binary_cross_entropy_with_logits(x, cast(targets, ms.float32), ones, ones), logits.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Index, search and creation ops (generation and masks)
# ----------------------------------------------------------------------------------------------------------------


def arange(start, end=None, step=1, dtype=ms.int64):
    """`mint.arange` has no CPU kernel."""
    if end is None:
        start, end = 0, start
    return ops.arange(start, end, step, dtype=dtype)


def full(shape, value, dtype=ms.float32):
    """`mint.full` has no CPU kernel."""
    return ops.fill(dtype, shape, value)


def stack(tensors, axis=0):
    """`mint.stack` has no CPU kernel."""
    return ops.stack(tensors, axis)


def cat(tensors, axis=0):
    return mint.cat(tensors, axis)


def argmax(x, axis=-1, keepdims=False):
    """`mint.argmax` has no CPU kernel."""
    return ops.argmax(x, axis, keepdims)


def topk(x, k, axis=-1, largest=True, sorted=True):
    """Returns (values, int64 indices) like torch; `mint.topk` has no CPU kernel and `ops.topk` gives int32."""
    values, indices = ops.topk(x, k, axis, largest, sorted)
    return values, indices.astype(ms.int64)


def sort(x, axis=-1, descending=False):
    """Returns (values, int64 indices) like torch; `mint.sort` has no CPU kernel and `ops.sort` gives int32."""
    values, indices = ops.sort(x, axis, descending)
    return values, indices.astype(ms.int64)


def cumsum(x, axis, dtype=None):
    """`mint.cumsum` has no CPU kernel; fp16 cumsum loses precision on CPU, so it runs in float32 there."""
    in_dtype = x.dtype
    if x.dtype == ms.float16:
        x = x.astype(ms.float32)
    out = ops.cumsum(x, axis)
    return cast(out, dtype if dtype is not None else in_dtype)


def multinomial(probs, num_samples=1, replacement=False):
    """Samples int64 indices from each row of `probs` (B, V) like torch.multinomial; `mint.multinomial` has no CPU
    kernel.

    MindSpore 2.10's CPU Multinomial *without* replacement returns zero-probability categories (~0.5% of draws,
    measured), so only its with-replacement mode is used: one draw is the same either way, and several draws without
    replacement are the top-k of log(p) + Gumbel noise (the Gumbel-top-k trick), which never picks p = 0.
    """
    p = probs.astype(ms.float32)
    if replacement or num_samples == 1:
        return ops.multinomial(p, num_samples, True).astype(ms.int64)
    # ops.rand logs a deprecation in favour of mint.rand, which has no CPU kernel (InplaceUniform)
    u = ops.clamp(ops.rand(p.shape, dtype=ms.float32), 1e-20, 1.0 - 1e-7)
    return topk(ops.log(p) - ops.log(-ops.log(u)), num_samples)[1]


def where(cond, x, y):
    return ops.where(cond, x, y)


def masked_fill(x, mask, value):
    if runtime.export_format() == "ONNX":
        # MindSpore's ONNX exporter has no MaskedFillScalar
        return ops.where(mask, ops.fill(x.dtype, (), value), x)
    return x.masked_fill(mask, value)


def masked_fill_on_host(x, mask, value):
    """x.masked_fill(mask, value) in PyNative (generation's logits processors), or None where it does not apply (not
    on CPU, or a dtype NumPy cannot hold). On CPU the scores already sit in host memory: a NumPy copy with the masked
    entries set costs ~30 us per 49152-wide row, against ~0.5 ms per MindSpore MaskedFill kernel call (measured: two
    EOS-blocking processors cost 1.1 ms of a ~20 ms quantized decode step)."""
    if _MINT_ONLY_DEVICE or x.dtype not in (ms.float16, ms.float32, ms.float64):
        return None
    out = x.asnumpy().copy()
    out[np.broadcast_to(mask.asnumpy() if isinstance(mask, ms.Tensor) else np.asarray(mask), out.shape)] = value
    return ms.Tensor.from_numpy(out)


def tril(x, diagonal=0):
    """`mint.tril` has no CPU kernel."""
    return ops.tril(x, diagonal)


def triu(x, diagonal=0):
    return ops.triu(x, diagonal)


def pad(x, padding, value=0.0):
    """Constant padding with torch's `padding` tuple (last axis first); `mint` ConstantPadND has no CPU kernel.

    Not `ops.pad`: under `jit` its gradient (PadV3Grad) is right on the first run of a compiled graph and zeros or stale
    values from the second run on (MindSpore 2.10 CPU), which would corrupt every compiled training step after the
    first. The `Pad` primitive pads with zeros and differentiates correctly; another `value` is filled in with a mask.
    Negative (cropping) padding is left to `ops.pad`.
    """
    if min(padding) < 0:
        return ops.pad(x, padding, value=value)
    n = len(padding) // 2
    pairs = ((0, 0),) * (x.ndim - n) + tuple((padding[2 * i], padding[2 * i + 1]) for i in reversed(range(n)))
    zero_pad = ops.Pad(pairs)
    out = zero_pad(x)
    if value == 0:
        return out
    outside = zero_pad(ops.ones_like(x)) < 0.5
    return out.masked_fill(outside, value)


def _conv_padding(padding):
    """torch's `padding` (int, tuple, "same" or "valid") as `ops.conv*d`'s (pad_mode, padding)."""
    if isinstance(padding, str):
        return padding, 0
    return "pad", padding


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """`mint`'s conv1d is Ascend-only; `ops.conv1d` runs on CPU (its 5th argument is `pad_mode`, not `padding`).

    On CPU, ungrouped convolutions with numeric padding run as one matmul over the k shifted views of the input
    (im2col): MindSpore 2.10's CPU conv1d kernel took 1.8 s and 4.2 s for Whisper's two front-end convolutions
    (80 -> 384 and 384 -> 384 channels, 3000 frames), ~99% of the whisper-tiny encoder's time.
    """
    single = (lambda v: v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v)
    stride, padding, dilation = single(stride), single(padding), single(dilation)
    if not _MINT_ONLY_DEVICE and groups == 1 and isinstance(padding, int) and isinstance(stride, int) \
            and isinstance(dilation, int):
        return _conv1d_as_matmul(x, weight, bias, stride, padding, dilation)
    pad_mode, padding = _conv_padding(padding)
    dtype = x.dtype
    if not _MINT_ONLY_DEVICE and dtype == ms.float16:
        # as torch's fp16 convolution: float32 accumulation and one rounding (the fp16 kernel rounds differently:
        # Data2Vec-Audio's stacked grouped positional convs drifted to 1.4x torch's own fp16 error)
        x, weight = x.astype(ms.float32), weight.astype(ms.float32)
        bias = bias.astype(ms.float32) if bias is not None else None
    out = ops.conv1d(x, weight, bias, stride, pad_mode=pad_mode, padding=padding, dilation=dilation, groups=groups)
    return out.astype(dtype)


def _conv1d_as_matmul(x, weight, bias, stride, padding, dilation):
    c_out, c_in, k = weight.shape
    if padding:
        x = pad(x, (padding, padding))
    batch, length = x.shape[0], x.shape[-1]
    l_out = (length - dilation * (k - 1) - 1) // stride + 1
    # (B, C_in, k, L_out): tap j of every output position; C_in-major order matches weight.reshape(C_out, C_in * k)
    taps = [x[:, :, j * dilation:j * dilation + stride * (l_out - 1) + 1:stride] for j in range(k)]
    columns = (ops.stack(taps, 2) if k > 1 else taps[0][:, :, None]).reshape(batch, c_in * k, l_out)
    dtype = x.dtype
    if dtype == ms.float16:
        # as torch's fp16 convolution: float32 accumulation, bias added before the one rounding (see `linear`)
        weight, columns = weight.astype(ms.float32), columns.astype(ms.float32)
        bias = bias.astype(ms.float32) if bias is not None else None
    out = ops.matmul(weight.reshape(c_out, c_in * k), columns)
    if bias is not None:
        out = out + bias.reshape(1, c_out, 1)
    return out.astype(dtype)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """`mint` Conv2DExt has no CPU kernel; `ops.conv2d` does (its 5th argument is `pad_mode`, not `padding`).

    On CPU, a patch embedding (ungrouped, stride equal to the kernel, no padding or dilation: ViT, DINOv2, CLIP,
    ConvNeXt V2 stems and downsamplers) runs as one matmul over the non-overlapping patches: MindSpore 2.10's CPU
    conv2d kernel took 3.6 s for DINOv2-S/14's (8 images, 3 -> 384 channels, 14x14 patches of 224x224), the patch
    matmul 0.08 s.
    """
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    kernel = tuple(weight.shape[2:])
    if not _MINT_ONLY_DEVICE and groups == 1 and not isinstance(padding, str) and pair(padding) == (0, 0) \
            and pair(dilation) == (1, 1) and pair(stride) == kernel:
        return _conv2d_patches(x, weight, bias)
    pad_mode, padding = _conv_padding(padding)
    return ops.conv2d(x, weight, bias, stride, pad_mode=pad_mode, padding=padding, dilation=dilation, groups=groups)


def _conv2d_patches(x, weight, bias):
    c_out, c_in, kh, kw = weight.shape
    batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    rows, cols = height // kh, width // kw
    if rows * kh != height or cols * kw != width:  # like the convolution, drop the incomplete last patches
        x = x[:, :, :rows * kh, :cols * kw]
    # (B, rows * cols, C_in * kh * kw), each patch C_in-major like weight.reshape(C_out, C_in * kh * kw)
    patches = ops.transpose(x.reshape(batch, c_in, rows, kh, cols, kw), (0, 2, 4, 1, 3, 5))
    out = ops.matmul(patches.reshape(batch, rows * cols, c_in * kh * kw),
                     weight.reshape(c_out, c_in * kh * kw).swapaxes(0, 1))
    if bias is not None:
        out = out + bias
    return ops.transpose(out.reshape(batch, rows, cols, c_out), (0, 3, 1, 2))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    """torch's conv_transpose2d for (N, C_in, H, W) inputs and (C_in, C_out, kh, kw) weights with stride equal to
    the kernel and no padding (DPT's reassemble upsampling): every input pixel fills its own output block, so it is
    one matmul and a reshuffle of the blocks, on any device. Other strides / paddings are not implemented: the
    `Conv2DTranspose` primitive compiled under `jit` failed shape inference (MindSpore 2.10 CPU) and its gradient
    failed in PyNative.
    """
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    c_in, c_out, kh, kw = weight.shape
    if pair(stride) != (kh, kw) or pair(padding) != (0, 0):
        raise NotImplementedError(f"conv_transpose2d: only stride == kernel ({kh}, {kw}) without padding is "
                                  f"implemented, got stride={stride}, padding={padding}")
    batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    # (B, H*W, C_in) @ (C_in, C_out*kh*kw) -> (B, H, W, C_out, kh, kw) -> (B, C_out, H*kh, W*kw)
    pixels = ops.transpose(x, (0, 2, 3, 1)).reshape(batch, height * width, c_in)
    out = ops.matmul(pixels, weight.reshape(c_in, c_out * kh * kw)).reshape(batch, height, width, c_out, kh, kw)
    out = ops.transpose(out, (0, 3, 1, 4, 2, 5)).reshape(batch, c_out, height * kh, width * kw)
    if bias is not None:
        out = out + bias.reshape(1, c_out, 1, 1)
    return out


def max_pool2d(x, kernel_size, stride):
    """torch's max_pool2d without padding (callers pad explicitly; MindSpore's "SAME" pads with -inf where HF's
    dynamic padding pads with zeros) and without ceil mode; `mint`'s has no CPU kernel."""
    return ops.max_pool2d(x, kernel_size, stride)


def argmax_to_numpy(x):
    """Index of the first maximum over the last axis, as a numpy int64 array on the host (greedy decoding needs the
    token ids there every step). A NaN counts as the maximum, as in torch.

    On CPU the scores already sit in host memory: numpy's argmax over a 49152-wide row took ~40 us, against ~0.5 ms
    for MindSpore's Argmax kernel plus the sync of its result (measured under load).
    """
    if not _MINT_ONLY_DEVICE:
        return x.asnumpy().argmax(-1).astype(np.int64)
    return ops.argmax(x, -1).asnumpy().astype(np.int64)


def sample_categorical(probs, num_samples=1, generator=None):
    """Draws `num_samples` indices per row of `probs` (B, V) without replacement, like
    `torch.multinomial(probs, num_samples)`; returns int64 (B, num_samples).

    Not `ops.multinomial`: MindSpore 2.10's CPU Multinomial kernel returns zero-probability categories (measured about
    3 per 10^4 draws), which breaks top-k/top-p sampling. On CPU the draw runs in numpy on the (shared) host memory
    with `generator` (a `numpy.random.Generator`; MindSpore's CPU `rand`/`sort` kernels were measured 10-20x slower
    than numpy on a 49152-entry row). Elsewhere it runs on device with `ops.rand`. One sample uses the inverse CDF:
    the first index whose cumulative probability reaches u * total, u in (0, 1], which can never be a
    zero-probability index. Several samples use the Gumbel-top-k trick (top-k of log p + Gumbel noise), which is
    sampling without replacement.
    """
    if not _MINT_ONLY_DEVICE:
        p = probs.astype(ms.float32).asnumpy().astype(np.float64)
        rng = generator if generator is not None else np.random.default_rng()
        if num_samples == 1:
            cdf = np.cumsum(p, -1)
            threshold = (1.0 - rng.random((p.shape[0], 1))) * cdf[:, -1:]
            index = (cdf < threshold).sum(-1, keepdims=True)
        else:
            with np.errstate(divide="ignore"):
                keys = np.log(p) - np.log(-np.log(rng.random(p.shape).clip(1e-300, 1.0 - 1e-16)))
            index = np.argsort(-keys, -1, kind="stable")[:, :num_samples]
        return ms.Tensor(index.astype(np.int64))
    probs = probs.astype(ms.float32)
    if num_samples == 1:
        cdf = cumsum(probs, -1)
        threshold = (1.0 - ops.rand((probs.shape[0], 1), dtype=ms.float32)) * cdf[:, -1:]
        return (cdf < threshold).astype(ms.int32).sum(-1, keepdims=True).astype(ms.int64)
    uniform = ops.clamp(ops.rand(probs.shape, dtype=ms.float32), 1e-20, 1.0 - 1e-7)
    return topk(ops.log(probs) - ops.log(-ops.log(uniform)), num_samples)[1]


# ----------------------------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------------------------


def _cubic_weights(t, a=-0.75):
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 for a fractional position t (torch's A)."""
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


@ops.constexpr
def _bicubic_matrix(in_size, out_size, align_corners, dtype, scale_factor=None):
    """(out_size, in_size) matrix of torch's bicubic resampling along one axis (taps clamped at the edges); with a
    `scale_factor` (and not align_corners) the source positions step by 1 / scale_factor, as in torch."""
    matrix = np.zeros((out_size, in_size), np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    elif scale_factor is not None:
        scale = 1.0 / scale_factor
    else:
        scale = in_size / out_size
    for i in range(out_size):
        src = i * scale if align_corners else (i + 0.5) * scale - 0.5
        base = math.floor(src)
        for k, w in enumerate(_cubic_weights(src - base)):
            matrix[i, min(max(base - 1 + k, 0), in_size - 1)] += w
    return ms.Tensor(matrix, dtype)


@ops.constexpr
def _bilinear_matrix(in_size, out_size, align_corners, dtype):
    """(out_size, in_size) matrix of torch's bilinear resampling along one axis (sources below 0 clamped to 0)."""
    matrix = np.zeros((out_size, in_size), np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        scale = in_size / out_size
    for i in range(out_size):
        src = i * scale if align_corners else max((i + 0.5) * scale - 0.5, 0.0)
        low = min(int(math.floor(src)), in_size - 1)
        high = min(low + 1, in_size - 1)
        frac = src - low
        matrix[i, low] += 1.0 - frac
        matrix[i, high] += frac
    return ms.Tensor(matrix, dtype)


@ops.constexpr
def _adaptive_avg_matrix(in_size, out_size, dtype):
    """(out_size, in_size) matrix averaging torch's adaptive-pooling bins [floor(i*in/out), ceil((i+1)*in/out))."""
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return ms.Tensor(matrix, dtype)


def _separable(x, rows, cols):
    return ops.matmul(ops.matmul(rows, x), cols.swapaxes(0, 1))


def interpolate(x, size=None, mode="bicubic", align_corners=False, scale_factor=None):
    """torch.nn.functional.interpolate(x, size=(H', W'), mode="bicubic" or "bilinear") for (N, C, H, W) inputs.
    Bicubic also takes torch's `scale_factor=(sh, sw)` instead of `size`: output floor(H * sh) x floor(W * sw), the
    taps placed by the factor itself (torch's default `recompute_scale_factor=None`), not by the size ratio.

    MindSpore's CPU bicubic kernel (`ops.interpolate(mode="bicubic")`) was measured 0.27 (max abs, unit-scale input)
    away from torch's, and `mint`'s bilinear has no CPU kernel; both resizings are separable and linear, so here
    they are two matmuls with host-built (H', H) and (W', W) weight matrices with torch's taps (bicubic: A = -0.75,
    edge clamping; no antialias), any device.
    """
    if mode not in ("bicubic", "bilinear"):
        raise NotImplementedError(f"interpolate mode {mode!r} is not implemented; only 'bicubic' and 'bilinear'")
    compute_dtype = ms.float32 if x.dtype in (ms.float16, ms.bfloat16) else x.dtype
    if scale_factor is not None:
        if mode != "bicubic" or size is not None:
            raise NotImplementedError("interpolate: scale_factor is implemented for mode='bicubic' without size only")
        scale_h, scale_w = float(scale_factor[0]), float(scale_factor[1])
        rows = _bicubic_matrix(x.shape[-2], int(math.floor(x.shape[-2] * scale_h)), align_corners, compute_dtype,
                               scale_h)
        cols = _bicubic_matrix(x.shape[-1], int(math.floor(x.shape[-1] * scale_w)), align_corners, compute_dtype,
                               scale_w)
        return _separable(x.astype(compute_dtype), rows, cols).astype(x.dtype)
    out_h, out_w = size
    matrix = _bicubic_matrix if mode == "bicubic" else _bilinear_matrix
    rows = matrix(x.shape[-2], int(out_h), align_corners, compute_dtype)
    cols = matrix(x.shape[-1], int(out_w), align_corners, compute_dtype)
    return _separable(x.astype(compute_dtype), rows, cols).astype(x.dtype)


def adaptive_avg_pool2d(x, output_size):
    """torch's adaptive_avg_pool2d on (N, C, H, W) as two matmuls with averaging matrices (the bins are separable);
    `mint`'s has no CPU kernel."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    rows = _adaptive_avg_matrix(x.shape[-2], int(out_h), x.dtype)
    cols = _adaptive_avg_matrix(x.shape[-1], int(out_w), x.dtype)
    return _separable(x, rows, cols)


def roll(x, shifts, axes):
    """torch.roll over several axes by slicing and concatenating (`ops.roll`/`mint.roll` have no CPU kernel)."""
    for shift, axis in zip(shifts, axes):
        size = x.shape[axis]
        shift = shift % size
        if shift:
            x = ops.cat((x.narrow(axis, size - shift, shift), x.narrow(axis, 0, size - shift)), axis)
    return x


def batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5):
    """torch's batch_norm over axis 1 of (N, C, ...): batch statistics in training (returned with the unbiased
    variance for the running update), the running ones otherwise. Returns (output, batch mean, batch variance)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean = x.mean(axes, keep_dims=True)
        centred = x - mean
        var = (centred * centred).mean(axes, keep_dims=True)
        count = x.size // x.shape[1]
        out = centred / ops.sqrt(var + eps)
        batch_mean, batch_var = mean.reshape(-1), var.reshape(-1) * (count / max(count - 1, 1))
    else:
        out = (x - running_mean.reshape(shape)) / ops.sqrt(running_var.reshape(shape) + eps)
        batch_mean, batch_var = None, None
    if weight is not None:
        out = out * weight.reshape(shape) + bias.reshape(shape)
    return out, batch_mean, batch_var


# ----------------------------------------------------------------------------------------------------------------
# Optimizer kernels (training step)
# ----------------------------------------------------------------------------------------------------------------


# sum(x * x) of a float32 tensor in one native kernel (native.sum_of_squares_op); None when unavailable
_native_sum_of_squares = native.sum_of_squares_op()


def sum_of_squares(x):
    """sum(x * x) over all elements, in float32 (a scalar Tensor): the squared L2 norm for global-norm clipping.

    On CPU the native kernel (`native.sum_of_squares_op`: in double, rounded once, split over the native threads,
    one pass over memory). Otherwise: a reduction of a whole tensor to one value is slow on CPU (a (32000, 256)
    float32 gradient: 2.7 ms per 1M elements for `(x * x).sum()`, measured); summing the rows of the last axis first
    and then the row sums is ~2.7x faster (1.5 ms per 1M elements incl. the square) and as accurate (pairwise-like:
    short partial sums).
    """
    x = cast(x, ms.float32)
    if _native_sum_of_squares is not None and runtime.export_format() is None:
        return _native_sum_of_squares(x).reshape(())
    if _MINT_ONLY_DEVICE or x.ndim < 2:
        return (x * x).sum()
    x = x.reshape(-1, x.shape[-1])
    return (x * x).sum(-1).sum()


_adam_weight_decay = ops.AdamWeightDecay()
# torch's fused AdamW step in one pass (native.py), in place; None when native kernels are unavailable
_native_adamw = native.adamw_op()
_adamw_hyper_cache = {}


def _adamw_hyper(lr, beta1, beta2, eps, weight_decay, step, grad_scale):
    """The native kernel's coefficient vector (order: `AdamWHyper` in cpu_kernels.cc), formed in double and rounded
    to float32 once, as torch does with its Python scalars. Cached: one small Tensor per group and step, not per
    parameter."""
    key = (lr, beta1, beta2, eps, weight_decay, step, grad_scale)
    hyper = _adamw_hyper_cache.get(key)
    if hyper is None:
        if len(_adamw_hyper_cache) >= 16:
            _adamw_hyper_cache.clear()
        bias_correction1 = 1.0 - beta1 ** step
        values = [1.0 - lr * weight_decay, 1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(1.0 - beta2 ** step), eps,
                  -lr / bias_correction1, grad_scale]
        hyper = _adamw_hyper_cache[key] = ms.Tensor(np.array(values, np.float32))
    return hyper


def adamw_update_(param, exp_avg, exp_avg_sq, grad, lr, beta1, beta2, eps, weight_decay, step, grad_scale=1.0):
    """torch.optim.AdamW's update of one parameter at `step` (1, 2, ...) with gradient `grad * grad_scale`, in place
    on `param` and its moments. Call it from Python (PyNative), not inside `mindspore.jit`.

    On CPU with float32 tensors: the native kernel (`native.adamw_op`), torch's float32 arithmetic in one pass over
    memory with the scale folded in (vs torch.optim.AdamW fp32: <= 6e-8 relative per step on the weights, <= 2e-7
    over 20 steps, moments within 3e-7).

    Otherwise one fused kernel (`ops.AdamWeightDecay`, CPU/GPU/Ascend) on `grad * grad_scale` (an extra pass when
    the scale is not 1). That primitive has no bias correction (m/v update, then p -= lr * (m / (sqrt(v) + eps) +
    wd * p)); torch's

        p *= 1 - lr * wd;  p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - beta_i ** step

    is the same with lr_t = lr * sqrt(bc2) / bc1, eps_t = eps * sqrt(bc2) and wd_t = wd * lr / lr_t (so that
    lr_t * wd_t = lr * wd). Measured against torch.optim.AdamW (fp32): <= 1.2e-7 relative per step on the weights,
    <= 1.3e-6 over 20 steps; the kernel forms 1 - beta2 in float32 (0.999 -> 9.99987e-4), so exp_avg_sq is
    1.3e-5 relative below torch's (the update moves by ~6e-6 of itself).
    Neither allocates per-parameter intermediates (no graph buffers).
    """
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    grad_scale = float(grad_scale)
    if (_native_adamw is not None and param.dtype == ms.float32 and exp_avg.dtype == ms.float32
            and exp_avg_sq.dtype == ms.float32 and grad.dtype == ms.float32):
        _native_adamw(param, exp_avg, exp_avg_sq, grad,
                      _adamw_hyper(lr, beta1, beta2, eps, weight_decay, int(step), grad_scale))
        return param
    if grad_scale != 1.0:
        grad = grad * ms.Tensor(grad_scale, grad.dtype)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** step)
    lr_t = lr * bias_correction2_sqrt / bias_correction1
    eps_t = eps * bias_correction2_sqrt
    wd_t = weight_decay * lr / lr_t if lr_t != 0.0 else 0.0
    _adam_weight_decay(param, exp_avg, exp_avg_sq, float(lr_t), float(beta1), float(beta2), float(eps_t),
                       float(wd_t), grad)
    return param


def adamw_update_group_(params, exp_avgs, exp_avg_sqs, grads, lr, beta1, beta2, eps, weight_decay, step,
                        grad_scale=1.0):
    """`adamw_update_` on tensors that share their hyper-parameters (an optimizer group): params[i], exp_avgs[i],
    exp_avg_sqs[i] updated in place with gradient grads[i] * grad_scale. Call it from Python (PyNative), not inside
    `mindspore.jit`.

    On CPU the float32 tensors take one native kernel call for the whole group (the same arithmetic as
    `adamw_update_`'s, split over the native threads): one PyNative launch instead of one per tensor (~0.1 ms each,
    ~30 ms for SmolLM2-135M's 272 tensors on this VM). The others are updated one by one by `adamw_update_`."""
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    grad_scale = float(grad_scale)
    fused, rest = [], []
    for tensors in zip(params, exp_avgs, exp_avg_sqs, grads):
        if _native_adamw is not None and all(t.dtype == ms.float32 for t in tensors):
            fused.extend(tensors)
        else:
            rest.append(tensors)
    if fused:
        _native_adamw(*fused, _adamw_hyper(lr, beta1, beta2, eps, weight_decay, int(step), grad_scale))
    for tensors in rest:
        adamw_update_(*tensors, lr, beta1, beta2, eps, weight_decay, step, grad_scale=grad_scale)
