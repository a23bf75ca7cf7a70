"""Native CPU kernels (MindSpore AOT custom ops) for the few places where MindSpore's own CPU kernel is the
bottleneck, compiled once per machine from `kernels/cpu_kernels.cc`.

Why: a batch-1 decode step is ~211 matrix-vector products over 540 MB of float32 weights (SmolLM2-135M); MindSpore's
CPU MatMul streams the weights at ~10 GB/s on one core of the development machine, a plain vectorised C++ loop at
~17 GB/s (numpy/torch's BLAS: ~12 GB/s). Compiled with the machine's own instruction set (`-march=native`).

The library is built with the system C++ compiler (`$CXX`, else `c++`/`g++`/`clang++`) into
`$MINDONE_TRANSFORMERS_CACHE/kernels` (default `~/.cache/mindone_transformers/kernels`), keyed by a hash of the
source, the flags, the compiler and the CPU; the file is written under a temporary name and renamed, so concurrent
processes never load a half-written library. No compiler, a failed build, a non-CPU device or
`MINDONE_TRANSFORMERS_NATIVE_KERNELS=0` means `available()` is False and callers use MindSpore's kernels (one
warning is logged when a build fails).
"""

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading

import mindspore as ms
from mindspore import ops

from . import runtime

logger = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "cpu_kernels.cc")
# -fno-math-errno: sqrt never sets errno, so loops calling it vectorise (AdamW); -ffp-contract=off: no multiply-add
# is fused unless the source says so (the kernels round where torch's do); -fno-trapping-math: loops with selects
# between computed values (the GELUs' and softmax's exp / erf) may compute both sides, so they vectorise on AVX2
# too, not only with AVX-512's masks (with exp_nonpositive's shift instead of a double -> int64 conversion: 3.5-5x
# faster on the AMD Zen 3 VM, bit-identical results: the flag changes no rounding)
_FLAG_SETS = (["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fno-trapping-math"],
              ["-O3", "-fno-math-errno", "-ffp-contract=off", "-fno-trapping-math"])

_lock = threading.Lock()
_state = {"loaded": False, "path": None, "ops": {}}

# kernel names by weight bits of the ones `native_decode` also calls directly (through `library_handle`)
RMS_NORM = "RMSNorm"
QLINEAR_Q8 = {8: "QLinearInt8Q8", 4: "QLinearInt4Q8"}
ATTENTION_INPUT_CACHE_Q8 = {8: "QAttentionInputCacheInt8Q8", 4: "QAttentionInputCacheInt4Q8"}
ATTENTION_OUTPUT_MLP_Q8 = {8: "QAttentionOutputMlpInt8Q8", 4: "QAttentionOutputMlpInt4Q8"}


def _enabled() -> bool:
    value = os.environ.get("MINDONE_TRANSFORMERS_NATIVE_KERNELS", "1").strip().lower()
    return value not in ("0", "false", "no", "off") and runtime.is_cpu() and platform.system() == "Linux"


def cache_dir() -> str:
    root = os.environ.get("MINDONE_TRANSFORMERS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                        "mindone_transformers")
    return os.path.join(root, "kernels")


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    # -march=native code only runs on a CPU with the same instruction set: key the build by the CPU's flags
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("flags", "Features", "model name"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _build(compiler: str) -> str:
    with open(SOURCE, "rb") as f:
        source = f.read()
    # the compiler's path and mtime stand for its version (no subprocess when the library is already built)
    machine = f"{compiler}:{os.stat(compiler).st_mtime_ns}:{_cpu_signature()}".encode()
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(source + repr(flags).encode() + machine)
        target = os.path.join(cache_dir(), f"cpu_kernels-{key.hexdigest()[:16]}.so")
        if os.path.exists(target):
            return target
        os.makedirs(cache_dir(), exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir())
        os.close(fd)
        cmd = [compiler, *flags, "-shared", "-fPIC", "-std=c++14", "-o", tmp, SOURCE]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            os.replace(tmp, target)
            logger.info("compiled native CPU kernels: %s", target)
            return target
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}: {result.stderr.strip()[-500:]}")
    raise RuntimeError("\n".join(errors))


def library_path():
    """Path of the compiled kernel library, building it on first use; None when native kernels are unavailable."""
    if _state["loaded"]:
        return _state["path"]
    with _lock:
        if _state["loaded"]:
            return _state["path"]
        path = None
        if _enabled():
            compiler = _compiler()
            if compiler is None:
                logger.info("no C++ compiler found: native CPU kernels disabled, using MindSpore's kernels")
            else:
                try:
                    path = _build(compiler)
                except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                    logger.warning("native CPU kernels could not be built, using MindSpore's kernels: %s", err)
                    path = None
        _state["path"] = path
        _state["loaded"] = True
        if path is not None:
            _apply_threads()
        return path


def available() -> bool:
    return library_path() is not None


def _custom(name, out_shape, out_dtype, bprop=None):
    """The library's kernel `name` as a MindSpore primitive (usable in PyNative and inside jit), or None."""
    if not available():
        return None
    if name not in _state["ops"]:
        _state["ops"][name] = ops.Custom(f"{library_path()}:{name}", out_shape=out_shape, out_dtype=out_dtype,
                                         func_type="aot", bprop=bprop)
    return _state["ops"][name]


_matmul = ops.MatMul()
_matmul_tn = ops.MatMul(transpose_a=True)


def _linear_nt_bprop(x, weight, out, dout):
    return _matmul(dout, weight), _matmul_tn(dout, x)


def _linear_nt_shape(x_shape, w_shape):
    return [x_shape[0], w_shape[0]]


def _same_dtype(x_dtype, w_dtype):
    return x_dtype


def linear_nt_op():
    """Primitive computing x (M, K) @ weight (N, K)^T in float32 with the native kernel (gradient through MindSpore's
    MatMul), or None when native kernels are unavailable. Faster than MatMul for one row of x (batch-1 decoding);
    from two rows on MindSpore's MatMul is as fast (4 rows: equal, 8 rows: faster; measured on one core)."""
    return _custom("LinearNT", _linear_nt_shape, _same_dtype, _linear_nt_bprop)


def adamw_op():
    """Primitive of torch.optim.AdamW's float32 step on one or more parameters, or None when native kernels are
    unavailable: op(param, exp_avg, exp_avg_sq, grad, [param, exp_avg, exp_avg_sq, grad, ...], hyper) updates each
    param and its moments IN PLACE (float32, contiguous, the four of a parameter the same size) and returns a
    1-element dummy; `hyper` is `F.adamw_update_`'s float32 vector of step coefficients, shared by all. PyNative
    only, never inside jit (see the kernel's comment). ~6x faster than `ops.AdamWeightDecay` on one core (0.68 vs 4.2
    ns per parameter; torch fused: 0.63), it applies a gradient scale in the same pass and splits the elements over
    the native threads."""
    # constant output shape/dtype: no Python shape-inference callback per call
    return _custom("AdamW", [1], ms.float32)


# ---- exact GELU (erf form): kernels GeluErf / GeluErfGrad (section "exact GELU" at the end of cpu_kernels.cc) ----


def _same_shape(x_shape, *other_shapes):
    return x_shape


def _first_dtype(x_dtype, *other_dtypes):
    return x_dtype


def gelu_erf_op():
    """Primitive of the exact GELU x * Phi(x) on float32 (computed in double, rounded once: within ~2 ulp of float64,
    torch's kernel is ~1e-6 off for |x| ~ 10), differentiable through `gelu_erf_grad_op`; None when native kernels
    are unavailable. MindSpore's CPU GeLU kernel is ~30x slower on large tensors (see docs/performance.md). Shapes
    and dtypes are inferred in C++ (`_graph_safe_custom`): usable in any graph."""
    grad = gelu_erf_grad_op()
    if grad is None:
        return None

    # the bprop is parsed into graphs (jit, grad): it may only name a ready primitive, not call our Python helpers
    def gelu_erf_bprop(x, out, dout):
        return (grad(x, dout),)

    return _graph_safe_custom("GeluErf", 1, gelu_erf_bprop)


def gelu_erf_grad_op():
    """Primitive (x, dy) -> dy * gelu'(x), float32, as `gelu_erf_op`; None when native kernels are unavailable."""
    return _graph_safe_custom("GeluErfGrad", 2)


# --- weight-only quantized linear layers (backend/quantization.py; kernels: the last section of cpu_kernels.cc) -------


def _quantized_linear_shape(x_shape, q_shape, *scale_shapes):
    return [x_shape[0], q_shape[0]]


def _dequantized_shape(q_shape, scale_shape, *min_shape):
    return [q_shape[0], q_shape[1] * (2 if min_shape else 1)]


def _float32(*dtypes):
    return ms.float32


def quantized_linear_op(bits: int):
    """Primitive computing x (M, K) float32 @ W^T directly on W's packed form, or None when native kernels are
    unavailable: op(x, q, scale) for bits=8 (q int8 (N, K)), op(x, q, scale, min) for bits=4 (q uint8 (N, K / 2),
    GGUF's Q4 nibble order); scale / min float32 (N, K / group_size), group_size a multiple of 32. Equal to
    dequantising W and multiplying, up to float32 summation order. For few rows of x (decoding); no gradient."""
    return _custom({8: "QLinearInt8", 4: "QLinearInt4"}[bits], _quantized_linear_shape, _float32)


def dequantize_op(bits: int):
    """Primitive returning W (N, K) float32 from its packed form (inputs as `quantized_linear_op` without x), or
    None when native kernels are unavailable; rounded as `quantization.dequantize_numpy`."""
    return _custom({8: "DequantInt8", 4: "DequantInt4"}[bits], _dequantized_shape, _float32)


_batch_matmul = ops.BatchMatMul()
_batch_matmul_nt = ops.BatchMatMul(transpose_b=True)
_batch_matmul_tn = ops.BatchMatMul(transpose_a=True)


def _batch_nt_bprop(a, b, out, dout):
    return _batch_matmul(dout, b), _batch_matmul_tn(dout, a)


def _batch_nn_bprop(a, b, out, dout):
    return _batch_matmul_nt(dout, b), _batch_matmul_tn(a, dout)


def _batch_nt_shape(a_shape, b_shape):
    return list(a_shape[:-1]) + [b_shape[-2]]


def _batch_nn_shape(a_shape, b_shape):
    return list(a_shape[:-1]) + [b_shape[-1]]


def batch_matmul_nt_op():
    """Primitive computing a (..., M, K) @ b (..., N, K)^T in float32 (same batch dims), or None when native kernels
    are unavailable. For the attention scores of a decode step (few query rows), where MindSpore's BatchMatMul costs
    far more than the work; gradient through MindSpore's BatchMatMul."""
    return _custom("BatchMatMulNT", _batch_nt_shape, _same_dtype, _batch_nt_bprop)


def batch_matmul_op():
    """Primitive computing a (..., M, N) @ b (..., N, D) in float32 (same batch dims), or None when native kernels are
    unavailable (attention weights @ values of a decode step); gradient through MindSpore's BatchMatMul."""
    return _custom("BatchMatMulNN", _batch_nn_shape, _same_dtype, _batch_nn_bprop)


# --- fused products of a decode step: one kernel launch for several packed products (quantization.py) -----------------


def _quantized_linear3_shape(x_shape, *weight_shapes):
    per = len(weight_shapes) // 3  # q, scale[, min] per weight
    rows = list(x_shape[:-1])
    return tuple(rows + [weight_shapes[i * per][0]] for i in range(3))


def _float32_x3(*dtypes):
    return (ms.float32, ms.float32, ms.float32)


def quantized_linear3_op(bits: int):
    """Primitive computing the three products x @ W1^T, x @ W2^T, x @ W3^T of packed weights of the same bits and
    group size (attention's q / k / v projections) in one kernel call, or None when native kernels are unavailable:
    op(x, q1, scale1[, min1], q2, ..., q3, ...) -> (y1, y2, y3); inputs as `quantized_linear_op`. No gradient."""
    return _custom({8: "QLinear3Int8", 4: "QLinear3Int4"}[bits], _quantized_linear3_shape, _float32_x3)


def silu_gate_up_op(bits: int):
    """Primitive computing silu(x @ Wg^T) * (x @ Wu^T) on packed weights (a SwiGLU MLP's gate and up projections)
    in one kernel call, or None when native kernels are unavailable: op(x, qg, scale_g[, min_g], qu, scale_u[,
    min_u]) -> (M, N); inputs as `quantized_linear_op`, both weights of the same shape and group size. No
    gradient."""
    return _custom({8: "QSiluGateUpInt8", 4: "QSiluGateUpInt4"}[bits], _quantized_linear_shape, _float32)


def _rms_norm_shape(x_shape, w_shape, eps_shape):
    return x_shape


def rms_norm_op():
    """Primitive computing weight * x * rsqrt(mean(x^2, -1) + eps) on float32 rows in one kernel call, or None when
    native kernels are unavailable: op(x (..., K), weight (K,), eps (1,) float32). Rounded as
    `functional.rms_norm`'s ops up to the order of the mean's sum. No gradient (compiled decode steps only)."""
    return _custom(RMS_NORM, _rms_norm_shape, _first_dtype)


def _decode_attention_shape(q_shape, k_shape, v_shape, mask_shape, scale_shape):
    return (list(q_shape[:-1]) + [v_shape[-1]], list(q_shape[:-1]) + [k_shape[-2]])


def _float32_x2(*dtypes):
    return (ms.float32, ms.float32)


def decode_attention_op():
    """Primitive computing a decode step's attention for few query rows in one call, or None when native kernels are
    unavailable: op(q (B, Hk, R, D), k (B, Hk, S, D), v (B, Hk, S, Dv), mask (Bm, Hm, Qm, S), scale (1,)) ->
    (softmax(q k^T * scale + mask) v (B, Hk, R, Dv), the weights (B, Hk, R, S)); float32; R = n_rep * Sq query
    rows per kv head (see the kernel's comment for the mask's broadcasting). No gradient."""
    return _custom("DecodeAttention", _decode_attention_shape, _float32_x2)


# --- graph-safe elementwise kernels (section "graph-safe elementwise activations" at the end of cpu_kernels.cc) -------


def _graph_safe_custom(name, num_inputs, bprop=None):
    """The library's float32 kernel `name` (one output, usually shaped as its first input) as a primitive whose shape
    and dtype MindSpore infers in C++ (`NameInferShape` / `NameInferType` in the library), or None when native
    kernels are unavailable. A Python inference callback (`_custom`) fails in a graph that falls back to dynamic
    types (any jit function returning a dict / ModelOutput: "The prim is not a PrimitivePy"); C++ inference also
    needs the registration naming inputs and outputs (without it: "The pointer[value] is null")."""
    if not available():
        return None
    key = f"graph-safe:{name}"  # the same kernel may also be registered with Python inference (`_custom`)
    if key not in _state["ops"]:
        reg = ops.CustomRegOp(name)
        for i in range(num_inputs):
            reg = reg.input(i, f"x{i}")
        reg = reg.output(0, "y").dtype_format(*([ops.DataType.F32_Default] * (num_inputs + 1))).target("CPU")
        _state["ops"][key] = ops.Custom(f"{library_path()}:{name}", out_shape=None, out_dtype=None, func_type="aot",
                                        bprop=bprop, reg_info=reg.get_op_info())
    return _state["ops"][key]


def gelu_tanh_op():
    """Primitive of the tanh GELU 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) on float32 (in double, rounded
    once), differentiable through its own gradient kernel, usable in any graph; None when native kernels are
    unavailable. MindSpore's CPU GeLU(tanh) kernel costs ~30 ns per element (see docs/performance.md)."""
    grad = _graph_safe_custom("GeluTanhGrad", 2)
    if grad is None:
        return None

    def gelu_tanh_bprop(x, out, dout):
        return (grad(x, dout),)

    return _graph_safe_custom("GeluTanh", 1, gelu_tanh_bprop)


def quick_gelu_op():
    """Primitive of x * sigmoid(1.702 x) (HF's quick_gelu) on float32 (in double, rounded once), differentiable
    through its own gradient kernel, usable in any graph; None when native kernels are unavailable."""
    grad = _graph_safe_custom("QuickGeluGrad", 2)
    if grad is None:
        return None

    def quick_gelu_bprop(x, out, dout):
        return (grad(x, dout),)

    return _graph_safe_custom("QuickGelu", 1, quick_gelu_bprop)


def layer_norm_op():
    """Primitive op(x (..., K), weight (K,), bias (K,), eps (1,)) -> layer norm of x's rows (biased variance, as
    torch), float32, statistics in double and rounded once; differentiable (dx, dweight, dbias from one native gradient
    kernel), usable in any graph; None when native kernels are unavailable. MindSpore's CPU LayerNorm kernel costs
    ~10x torch's on DINOv2-S's rows (see docs/performance.md)."""
    grad = _graph_safe_custom("LayerNormRowsGrad", 4)
    if grad is None:
        return None

    # the gradient kernel returns (rows + 2, K): dx's rows, then dweight, then dbias
    def layer_norm_bprop(x, weight, bias, eps, out, dout):
        packed = grad(x, weight, dout, eps)
        rows = packed.shape[0] - 2
        return packed[:rows].reshape(x.shape), packed[rows], packed[rows + 1], eps * 0.0

    return _graph_safe_custom("LayerNormRows", 4, layer_norm_bprop)


@ops.constexpr
def _broadcast_axes(small, full):
    """The axes on which a shape `small` of the same rank is broadcast to `full`."""
    return tuple(i for i in range(len(full)) if small[i] == 1 and full[i] != 1)


def masked_softmax_op():
    """Primitive op(scores (B, H, Sq, Sk), mask (Bm, Hm, Qm, Km), scale (1,)) -> softmax(scores * scale + mask) over
    the last axis, float32, in double and rounded once; each of Bm / Hm / Qm is 1 or the scores' size, Km is 1 or Sk.
    Differentiable in the scores and in the mask (T5's position bias and Swin's relative position table arrive as
    the mask and train through it), usable in any graph; None when native kernels are unavailable."""
    grad = _graph_safe_custom("MaskedSoftmaxGrad", 3)
    if grad is None:
        return None

    def masked_softmax_bprop(scores, mask, scale, out, dout):
        # dz = d(softmax input); the mask's gradient is dz summed over the axes it was broadcast on, the scores' dz * scale
        dz = grad(out, dout, ops.ones_like(scale))
        axes = _broadcast_axes(mask.shape, dz.shape)
        dmask = ops.ReduceSum(keep_dims=True)(dz, axes) if axes else dz
        return dz * scale, dmask, scale * 0.0

    return _graph_safe_custom("MaskedSoftmax", 3, masked_softmax_bprop)


def _rms_norm_bprop(x, weight, eps, out, dout):
    # dx = r (g - x r^2 mean(g x)), g = dout * weight, r = 1 / sqrt(mean(x^2) + eps); dweight = sum over rows of
    # dout * x * r (MindSpore's kernels: a training step's cost, as the composed forward had)
    r = ops.rsqrt((x * x).mean(-1, keep_dims=True) + eps)
    g = dout * weight
    dx = r * (g - x * (r * r) * (g * x).mean(-1, keep_dims=True))
    dweight = (dout * x * r).reshape(-1, x.shape[-1]).sum(0)
    return dx, dweight, eps * 0.0


def sum_of_squares_op():
    """Primitive op(x) -> sum(x * x) over every element of a float32 tensor, shape (1,) float32, summed in
    double in blocks that do not depend on the thread count, rounded once; split over the native threads,
    differentiable, usable in any graph. None when native kernels are unavailable. For the global gradient norm of
    clipping (`F.sum_of_squares`)."""
    if not available():
        return None

    def sum_of_squares_bprop(x, out, dout):
        return (x * (dout + dout).reshape(()),)

    return _graph_safe_custom("SumOfSquares", 1, sum_of_squares_bprop)


def rms_norm_graph_op():
    """The RMSNorm kernel of `rms_norm_op` with C++ shape inference (usable in any graph, not only generate()'s
    decode steps) and a gradient (composed of MindSpore's kernels); None when native kernels are unavailable."""
    return _graph_safe_custom(RMS_NORM, 3, _rms_norm_bprop)
# --- routed SwiGLU experts of a decode step (functional.routed_swiglu_experts; kernel RoutedSwiGLU) ------------------


def _routed_swiglu_shape(x_shape, *other_shapes):
    return x_shape


def routed_swiglu_op():
    """Primitive computing a mixture-of-experts SwiGLU for few tokens directly from the stacked expert weights, or
    None when native kernels are unavailable: op(x (T, H), gate_up (E, 2I, H), down (E, H, I), index (T, k) int64 or
    int32, weights (T, k)) -> (T, H) = sum_j weights[:, j] * down_e(silu(gate_e x) * up_e x), e = index[:, j];
    float32. No gradient (compiled decode steps only)."""
    return _custom("RoutedSwiGLU", _routed_swiglu_shape, _first_dtype)
# ---- SwapAxes12: (A, B, C, D) -> (A, C, B, D) (the last section of cpu_kernels.cc) ------------------------------


def _swap_axes12_shape(x_shape):
    return [x_shape[0], x_shape[2], x_shape[1], x_shape[3]]


def swap_axes12_op():
    """Primitive of x.swapaxes(1, 2) for a 4-D float32 tensor, differentiable (the swap is its own gradient), or
    None when native kernels are unavailable. For compiled training graphs, where MindSpore's Transpose kernel keeps
    its buffers until the graph ends."""
    if not available():
        return None
    op = None

    def swap_axes12_bprop(x, out, dout):
        return (op(dout),)

    # a constant output dtype: a dtype inferred in Python is not a constant to the graph (`astype` on it fails)
    op = _custom("SwapAxes12", _swap_axes12_shape, ms.float32, swap_axes12_bprop)
    return op


def _rms_norm_grad_shape(x_shape, w_shape, eps_shape, dy_shape):
    return (list(x_shape), list(w_shape))


def rms_norm_training_op():
    """`rms_norm_op` with a gradient (kernel RMSNormGrad, which recomputes the row statistics from x), for compiled
    training steps; constant float32 output dtype (see `swap_axes12_op`). None when native kernels are
    unavailable."""
    if not available():
        return None
    if "RMSNorm.training" not in _state["ops"]:
        grad = ops.Custom(f"{library_path()}:RMSNormGrad", out_shape=_rms_norm_grad_shape,
                          out_dtype=(ms.float32, ms.float32), func_type="aot")
        zeros_like = ops.ZerosLike()

        def rms_norm_bprop(x, weight, eps, out, dout):
            dx, dw = grad(x, weight, eps, dout)
            return dx, dw, zeros_like(eps)

        _state["ops"]["RMSNorm.training"] = ops.Custom(f"{library_path()}:RMSNorm", out_shape=_rms_norm_shape,
                                                       out_dtype=ms.float32, func_type="aot", bprop=rms_norm_bprop)
    return _state["ops"]["RMSNorm.training"]
# --- packed products with int8 activations (llama.cpp's method; cpu_kernels.cc: "with int8 activations") -------------


def quantized_linear_q8_op(bits: int):
    """As `quantized_linear_op`, but each row of x is first rounded to int8 in blocks of 32 (per block
    d = max|x| / 127, q = rint(x / d)) and the products are integer dot products (AVX512-VNNI where available):
    x @ dequantize(W)^T with x quantized, not the exact product. None when native kernels are unavailable."""
    return _custom(QLINEAR_Q8[bits], _quantized_linear_shape, _float32)


def quantized_linear3_q8_op(bits: int):
    """`quantized_linear3_op` with x rounded to int8 blocks as `quantized_linear_q8_op` (once for the three)."""
    return _custom({8: "QLinear3Int8Q8", 4: "QLinear3Int4Q8"}[bits], _quantized_linear3_shape, _float32_x3)


def silu_gate_up_q8_op(bits: int):
    """`silu_gate_up_op` with x rounded to int8 blocks as `quantized_linear_q8_op` (once for both products)."""
    return _custom({8: "QSiluGateUpInt8Q8", 4: "QSiluGateUpInt4Q8"}[bits], _quantized_linear_shape, _float32)


def _mlp_residual_shape(x_shape, *other_shapes):
    return x_shape


def mlp_residual_q8_op(bits: int):
    """Primitive computing residual + down(silu(x @ Wg^T) * (x @ Wu^T)) on packed weights with int8 activations (x,
    then the product silu(g) * u, rounded as `quantized_linear_q8_op`) in one call: a SwiGLU MLP and the residual
    add after it. op(x, qg, sg[, mg], qu, su[, mu], qd, sd[, md], residual) -> x's shape; gate / up (N, K), down
    (K, N), one bits. None when native kernels are unavailable. No gradient."""
    return _custom({8: "QMlpResidualInt8Q8", 4: "QMlpResidualInt4Q8"}[bits], _mlp_residual_shape, _float32)


def _attention_input_shape(x_shape, norm_shape, eps_shape, *other_shapes):
    # other_shapes: the q / k / v weights (2 or 3 tensors each), then the query and key rotations (Br, S, D, D)
    per = (len(other_shapes) - 2) // 3
    d = other_shapes[-1][-1]
    batch, seq = x_shape[0], x_shape[1]
    return tuple([batch, other_shapes[i * per][0] // d, seq, d] for i in range(3))


def attention_input_q8_op(bits: int):
    """Primitive computing the start of a decoder layer's decode step in one call, or None when native kernels are
    unavailable: op(x (B, S, K), norm_weight (K,), eps (1,), q, scale[, min] of Wq, of Wk, of Wv, query_rotation,
    key_rotation (B or 1, S, D, D)) -> (q (B, H, S, D), k (B, Hk, S, D), v (B, Hk, S, D)): RMSNorm, the q / k / v
    products with int8 activations (`quantized_linear3_q8_op`) and RoPE as `F.apply_rotary_matrix`, heads first.
    float32, no biases. No gradient."""
    return _custom({8: "QAttentionInputInt8Q8", 4: "QAttentionInputInt4Q8"}[bits], _attention_input_shape,
                   _float32_x3)


def _attention_input_cache_shape(x_shape, norm_shape, eps_shape, *other_shapes):
    # other_shapes: the q / k / v weights, the two rotations, the key / value storage and the slots
    d = other_shapes[-3][-1]
    return [x_shape[0], other_shapes[0][0] // d, x_shape[1], d]


def _writing_custom(name, writes, num_inputs, out_shape, out_dtype):
    """The library's kernel `name` as a primitive that writes the inputs at positions `writes` in place, declared to
    MindSpore as its own in-place ops are (ScatterNdUpdate, Assign): those inputs are RW_WRITE refs of a primitive
    with `side_effect_mem`, so inside a graph every read of the written Parameter is ordered after the call, and reads
    before it see the old values. None when native kernels are unavailable."""
    if not available():
        return None
    key = f"writing:{name}"
    if key not in _state["ops"]:
        from mindspore.ops import signature as sig

        signature = tuple(sig.make_sig(f"x{i}", sig.sig_rw.RW_WRITE if i in writes else sig.sig_rw.RW_READ)
                          for i in range(num_inputs))

        class WritingCustom(ops.Custom):
            __mindspore_signature__ = signature

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_prim_attr("side_effect_mem", True)

        _state["ops"][key] = WritingCustom(f"{library_path()}:{name}", out_shape=out_shape, out_dtype=out_dtype,
                                           func_type="aot")
    return _state["ops"][key]


def attention_input_cache_q8_op(bits: int):
    """`attention_input_q8_op` writing the keys and values straight into a KV cache's storage instead of returning
    them, or None when native kernels are unavailable: op(x, norm_weight, eps, Wq..., Wk..., Wv..., query_rotation,
    key_rotation, key_storage (B, Hk, T, D), value_storage (B, Hk, T, D), cache_position (S,) int64) -> q (B, H, S,
    D); slots cache_position[s] of both storages get this step's rotated keys / values IN PLACE (what
    `StaticCache.update`'s two ScatterNdUpdate kernels do), declared as MindSpore's in-place ops are
    (`_writing_custom`): a later read of the storage Parameters in the same graph sees the write. No gradient."""
    per = 2 if bits == 8 else 3
    storage = 3 + 3 * per + 2
    return _writing_custom(ATTENTION_INPUT_CACHE_Q8[bits],
                           (storage, storage + 1), storage + 3, _attention_input_cache_shape, _float32)


def _attention_output_mlp_shape(q_shape, k_shape, v_shape, mask_shape, *other_shapes):
    per = (len(other_shapes) - 3) // 4  # o's weight, residual, norm weight, eps, gate, up, down
    return list(other_shapes[per])


def attention_output_mlp_q8_op(bits: int):
    """Primitive computing the rest of a Llama-style decoder layer's decode step in one call, or None when native
    kernels are unavailable: op(q (B, H, S, D), k, v (B, Hk, T, D) (the cache), mask (as `decode_attention_op`'s), q,
    scale[, min] of Wo, residual (B, S, K), norm_weight (K,), eps (1,), then the gate, up and down weights) ->
    residual + attention output projection, then its RMSNorm, SwiGLU MLP and residual add (B, S, K): attention
    with scale 1 (`decode_attention_op`), head merge, o product, add, RMSNorm and `mlp_residual_q8_op`, all with
    int8 activations for the products. float32, no biases. No gradient."""
    return _custom(ATTENTION_OUTPUT_MLP_Q8[bits],
                   _attention_output_mlp_shape, _float32)


# --- threads of the native kernels (cpu_kernels.cc: section "worker threads") ---------------------------------------

# the default: the CPUs of the affinity mask, at most this many (2 measured here; more cores untested)
_DEFAULT_MAX_THREADS = 4


def _default_threads():
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _DEFAULT_MAX_THREADS))


_env_threads = os.environ.get("MINDONE_TRANSFORMERS_NATIVE_THREADS", "").strip()
_THREADS = {"n": int(_env_threads) if _env_threads else _default_threads()}


def set_threads(num_threads: int) -> None:
    """Number of threads the native kernels that split their work use (LinearNT, the int8-activation products, the
    fused quantized decoder layers; AdamW, the activations, norms, softmax, SwapAxes12 and SumOfSquares on large
    tensors); 0 or less: the CPUs of the process's affinity mask. Default: the
    affinity mask's CPUs, at most 4 (or MINDONE_TRANSFORMERS_NATIVE_THREADS). `runtime.set_threads` sets it too.
    On this 2-core VM, 2 threads decode SmolLM2-135M 1.25x (Q4_1 kept) and 1.5x (float32) faster than 1
    (docs/performance.md). Applied now if the library is loaded, else when it loads."""
    _THREADS["n"] = int(num_threads)
    if _state["loaded"] and _state["path"] is not None:
        _apply_threads()


def threads() -> int:
    """The native kernels' thread setting (0: the affinity mask's CPUs)."""
    return _THREADS["n"]


def library_handle():
    """The kernel library through ctypes (None when native kernels are unavailable): the same file MindSpore's custom
    ops load, so dlopen returns the one loaded copy and calls through it share its state (the worker pool)."""
    path = library_path()
    if path is None:
        return None
    if _state.get("handle_path") != path:
        import ctypes

        _state["handle"], _state["handle_path"] = ctypes.CDLL(path), path
    return _state["handle"]


def _apply_threads():
    import ctypes

    library_handle().NativeSetThreads(ctypes.c_int(_THREADS["n"]))
