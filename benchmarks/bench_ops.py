"""Op-variant benchmark: which CPU kernel `backend.functional` should use, and what it costs against torch eager.

For each op, several ways to compute the same thing on MindSpore run at decoder-sized shapes, in PyNative
(synchronous dispatch, as the package configures it) and under `mindspore.jit`, next to torch eager with the same
number of threads. `err` is max|ours - torch| / mean|torch| (fp32; the tests require <= 1e-5).

    python benchmarks/bench_ops.py [--ops rms_norm softmax ...] [--threads 2] [--repeats 9]
                                   [--clock wall|cpu] [--stat median|min] [--batch-ms 10]
    taskset -c 0 python benchmarks/bench_ops.py --threads 1 --clock cpu    # on a machine shared with other jobs

Prints a markdown table of median microseconds per call. Variants without a CPU kernel print the error.
`--clock cpu` counts this process's CPU time instead of wall time: with one pinned thread it is the work done,
unaffected by other processes taking the core (MindSpore's matmul ignores the thread setting; only `taskset` limits it).
"""

import argparse
import statistics
import time

import mindspore as ms
import numpy as np
import torch
import torch.nn.functional as TF
from mindspore import mint, ops

from mindone.transformers.backend import functional as F
from mindone.transformers.backend import runtime

EPS = 1e-6

# ----------------------------------------------------------------------------------------------------------------
# Variants (module level: `mindspore.jit` reads their source)
# ----------------------------------------------------------------------------------------------------------------


def rms_functional(x, w):
    return F.rms_norm(x, w, EPS)


def rms_mul_mean(x, w):
    h = x.astype(ms.float32)
    return w * (h * ops.rsqrt((h * h).mean(-1, keep_dims=True) + EPS)).astype(x.dtype)


def rms_pow_mean(x, w):
    h = x.astype(ms.float32)
    return w * (h * ops.rsqrt(h.pow(2).mean(-1, keep_dims=True) + EPS)).astype(x.dtype)


def rms_square_reducemean(x, w):
    h = x.astype(ms.float32)
    return w * (h * ops.rsqrt(ops.ReduceMean(keep_dims=True)(ops.square(h), -1) + EPS)).astype(x.dtype)


def rms_sum_scale(x, w):
    h = x.astype(ms.float32)
    return w * (h * ops.rsqrt((h * h).sum(-1, keepdims=True) * (1.0 / h.shape[-1]) + EPS)).astype(x.dtype)


def rms_matmul_mean(x, w):
    h = x.astype(ms.float32)
    mean_col = ops.fill(ms.float32, (h.shape[-1], 1), 1.0 / h.shape[-1])
    return w * (h * ops.rsqrt(ops.matmul(h * h, mean_col) + EPS)).astype(x.dtype)


def rms_mint(x, w):
    h = x.astype(ms.float32)
    return mint.mul(w, mint.mul(h, mint.rsqrt(mint.add(mint.mean(mint.mul(h, h), -1, True), EPS))).astype(x.dtype))


def rms_layernorm_kernel(x, w):
    """LayerNorm of [x, -x] has mean 0 and variance mean(x^2): its first half is x * rsqrt(mean(x^2) + eps)."""
    h = x.astype(ms.float32)
    n = h.shape[-1]
    w2 = ops.concat((w, w), -1).astype(ms.float32)
    y, _, _ = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=EPS)(
        ops.concat((h, -h), -1), w2, ops.zeros(2 * n, ms.float32))
    return y[..., :n].astype(x.dtype)


def rms_ops_kernel(x, w):
    return ops.rms_norm(x, w, EPS)[0]


def torch_rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def ln_functional(x, w, b):
    return F.layer_norm(x, w, b, 1e-5)


def ln_ops_kernel(x, w, b):
    return ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-5)(x, w, b)[0]


def ln_manual(x, w, b):
    h = x.astype(ms.float32)
    d = h - h.mean(-1, keep_dims=True)
    return (d * ops.rsqrt((d * d).mean(-1, keep_dims=True) + 1e-5) * w + b).astype(x.dtype)


def ln_matmul_stats(x, w, b):
    h = x.astype(ms.float32)
    mean_col = ops.fill(ms.float32, (h.shape[-1], 1), 1.0 / h.shape[-1])
    d = h - ops.matmul(h, mean_col)
    return (d * ops.rsqrt(ops.matmul(d * d, mean_col) + 1e-5) * w + b).astype(x.dtype)


def ln_mint(x, w, b):
    return mint.nn.functional.layer_norm(x, x.shape[-1:], w, b, 1e-5)


def torch_ln(x, w, b):
    return TF.layer_norm(x, x.shape[-1:], w, b, 1e-5)


def softmax_functional(x):
    return F.softmax(x, -1)


def softmax_mint(x):
    return mint.nn.functional.softmax(x, -1)


def softmax_manual(x):
    e = ops.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_fp16_kernel(x):
    return ops.softmax(x, -1)


def torch_softmax(x):
    return torch.softmax(x, -1)


def gelu_functional(x):
    return F.gelu(x)


def gelu_ops_kernel(x):
    return ops.gelu(x, approximate="none")


def gelu_erf_manual(x):
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


def gelu_mint(x):
    return mint.nn.functional.gelu(x)


def gelu_tanh_functional(x):
    return F.gelu_tanh(x)


def gelu_tanh_ops_kernel(x):
    return ops.gelu(x, approximate="tanh")


def gelu_tanh_exp_form(x):
    return x / (1.0 + ops.exp(ops.clamp(x * -F._GELU_TANH_C2 * (1.0 + 0.044715 * (x * x)), -80.0, 80.0)))


def quick_gelu_functional(x):
    return F.quick_gelu(x)


def quick_gelu_sigmoid_mul(x):
    return x * ops.sigmoid(1.702 * x)


def torch_quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def silu_functional(x):
    return F.silu(x)


def silu_ops(x):
    return ops.silu(x)


def silu_sigmoid_mul(x):
    return x * ops.sigmoid(x)


def tanh_functional(x):
    return F.tanh(x)


def tanh_kernel(x):
    return ops.tanh(x)


def attention_functional(q, k, v, mask):
    return F.attention(q, k, v, mask)[0]


def attention_bmm(q, k, v, mask):
    b, h, s, d = q.shape
    t = k.shape[2]
    scores = mint.bmm(q.reshape(b * h, s, d), k.reshape(b * h, t, d).swapaxes(1, 2)) * (d ** -0.5)
    weights = mint.nn.functional.softmax(scores.reshape(b, h, s, t) + mask, -1)
    return mint.bmm(weights.reshape(b * h, s, t), v.reshape(b * h, t, d)).reshape(b, h, s, d)


def attention_prescaled_q(q, k, v, mask):
    scores = ops.matmul(q * (q.shape[-1] ** -0.5), k.swapaxes(-1, -2)) + mask
    return ops.matmul(ops.softmax(scores, -1), v)


def torch_attention(q, k, v, mask):
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# ----------------------------------------------------------------------------------------------------------------
# Shapes and inputs
# ----------------------------------------------------------------------------------------------------------------

DECODER_SHAPES = [(1, 1, 576), (1, 128, 576), (8, 128, 1024), (8, 257, 384)]
ACT_SHAPES = [(1, 1, 1536), (1, 128, 1536), (8, 128, 4096)]
SOFTMAX_SHAPES = [(1, 9, 1, 128), (1, 9, 128, 128), (8, 16, 128, 128)]
ATTENTION_SHAPES = [(1, 9, 1, 128, 64), (1, 9, 128, 128, 64), (4, 8, 64, 64, 32)]  # B, H, Sq, Sk, D


def _rows(rng, shape):
    return [rng.standard_normal(shape), rng.standard_normal(shape[-1:])]


def _ln_inputs(rng, shape):
    return [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape[-1:]), rng.standard_normal(shape[-1:])]


def _attention_inputs(rng, shape):
    b, h, sq, sk, d = shape
    allowed = np.tril(np.ones((sq, sk), bool), k=sk - sq)
    mask = np.where(allowed, 0.0, np.finfo(np.float32).min)[None, None]
    return [rng.standard_normal((b, h, sq, d)), rng.standard_normal((b, h, sk, d)), rng.standard_normal((b, h, sk, d)),
            mask]


OPS = {
    "rms_norm": (DECODER_SHAPES, _rows, torch_rms, [
        ("F.rms_norm (current)", rms_functional), ("(x*x).mean", rms_mul_mean), ("x.pow(2).mean", rms_pow_mean),
        ("ops.square+ReduceMean", rms_square_reducemean), ("sum * 1/n", rms_sum_scale),
        ("matmul(x*x, ones/n)", rms_matmul_mean), ("mint mul/mean/rsqrt", rms_mint),
        ("LayerNorm kernel on [x, -x]", rms_layernorm_kernel), ("ops.rms_norm", rms_ops_kernel)]),
    "layer_norm": (DECODER_SHAPES, _ln_inputs, torch_ln, [
        ("F.layer_norm = native LayerNormRows (current)", ln_functional),
        ("ops.LayerNorm (MindSpore's kernel)", ln_ops_kernel), ("mean/var by hand", ln_manual),
        ("matmul(.., ones/n) stats", ln_matmul_stats), ("mint layer_norm", ln_mint)]),
    "softmax": (SOFTMAX_SHAPES, lambda r, s: [r.standard_normal(s) * 3], torch_softmax, [
        ("F.softmax = ops.softmax (current)", softmax_functional), ("mint softmax", softmax_mint),
        ("exp(x-max)/sum", softmax_manual)]),
    "softmax_fp16": (SOFTMAX_SHAPES, lambda r, s: [r.standard_normal(s) * 3], torch_softmax, [
        ("ops.softmax fp16 kernel", softmax_fp16_kernel), ("F.softmax = fp32 kernel, cast back (current)",
                                                             softmax_functional)]),
    "gelu": (ACT_SHAPES, lambda r, s: [r.standard_normal(s) * 2], TF.gelu, [
        ("F.gelu = native GeluErf (current)", gelu_functional),
        ("ops.gelu erf (MindSpore's kernel)", gelu_ops_kernel), ("0.5x(1+erf(x/sqrt2))", gelu_erf_manual),
        ("mint gelu", gelu_mint)]),
    "gelu_tanh": (ACT_SHAPES, lambda r, s: [r.standard_normal(s) * 2], lambda x: TF.gelu(x, approximate="tanh"), [
        ("F.gelu_tanh = native GeluTanh (current)", gelu_tanh_functional),
        ("ops.gelu tanh (MindSpore's kernel)", gelu_tanh_ops_kernel), ("x / (1 + exp(-2z))", gelu_tanh_exp_form)]),
    "quick_gelu": (ACT_SHAPES, lambda r, s: [r.standard_normal(s) * 2], torch_quick_gelu, [
        ("F.quick_gelu = native QuickGelu (current)", quick_gelu_functional),
        ("x * sigmoid(1.702 x)", quick_gelu_sigmoid_mul)]),
    "silu": (ACT_SHAPES, lambda r, s: [r.standard_normal(s) * 2], TF.silu, [
        ("F.silu = mint silu (current)", silu_functional), ("ops.silu", silu_ops), ("x*sigmoid(x)", silu_sigmoid_mul)]),
    "tanh": (ACT_SHAPES, lambda r, s: [r.standard_normal(s) * 3], torch.tanh, [
        ("F.tanh = 2*sigmoid(2x)-1 (current)", tanh_functional), ("ops.tanh kernel", tanh_kernel)]),
    "attention": (ATTENTION_SHAPES, _attention_inputs, torch_attention, [
        ("F.attention (current)", attention_functional), ("mint.bmm + mint softmax", attention_bmm),
        ("pre-scaled q, ops.softmax", attention_prescaled_q)]),
}

INPUT_DTYPE = {"softmax_fp16": np.float16}

# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


CLOCK = time.perf_counter
STAT = statistics.median
BATCH_S = 0.01


def _batch_size(call):
    call()
    call()
    t = CLOCK()
    call()
    return max(1, min(2000, int(BATCH_S / max(CLOCK() - t, 1e-7))))


def interleaved_us(calls, repeats):
    """Median (or min, `--stat`) per call of `repeats` rounds. Every round times each call once (a batch lasting
    about `--batch-ms`), so load from other processes on a shared machine spreads over all variants."""
    sizes = [_batch_size(call) for call in calls]
    samples = [[] for _ in calls]
    for _ in range(repeats):
        for call, n, out in zip(calls, sizes, samples):
            t = CLOCK()
            for _ in range(n):
                call()
            out.append((CLOCK() - t) / n)
    return [STAT(s) * 1e6 for s in samples]


def _error(ours, ref):
    ref = ref.numpy().astype(np.float64)
    return np.abs(ours.asnumpy().astype(np.float64) - ref).max() / np.abs(ref).mean()


def _short(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("-")]
    return lines[0][:60] if lines else type(exc).__name__


def bench(op, repeats):
    shapes, make_inputs, torch_fn, variants = OPS[op]
    rows = []
    for shape in shapes:
        # torch runs in fp32 on the same (rounded) numbers
        arrays = [a.astype(INPUT_DTYPE.get(op, np.float32)) for a in make_inputs(np.random.default_rng(0), shape)]
        ms_in = [ms.Tensor(a) for a in arrays]
        torch_in = [torch.from_numpy(a.astype(np.float32)) for a in arrays]

        def torch_call():
            with torch.no_grad():
                return torch_fn(*torch_in)

        ref = torch_call()
        calls, runnable, failed = [torch_call], [], []
        for name, fn in variants:
            try:
                err = _error(fn(*ms_in), ref)
            except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
                failed.append((name, _short(exc)))
                continue
            jitted = ms.jit(fn)
            calls += [lambda fn=fn: fn(*ms_in), lambda jitted=jitted: jitted(*ms_in)]
            runnable.append((name, err))
        times = interleaved_us(calls, repeats)
        torch_us = f"{times[0]:.0f}"
        for i, (name, err) in enumerate(runnable):
            pynative_us, jit_us = times[1 + 2 * i], times[2 + 2 * i]
            rows.append((op, name, shape, f"{pynative_us:.0f}", f"{jit_us:.0f}", torch_us, f"{err:.1e}"))
        rows += [(op, name, shape, "-", "-", torch_us, f"no CPU kernel: {msg}") for name, msg in failed]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--batch-ms", type=float, default=10.0,
                        help="time per sample; short batches with --stat min catch the moments a busy machine is idle")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="min estimates the uncontended speed when other jobs share the machine")
    args = parser.parse_args()
    global CLOCK, STAT, BATCH_S
    BATCH_S = args.batch_ms / 1000
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    STAT = statistics.median if args.stat == "median" else min
    runtime.set_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"MindSpore {ms.__version__} ({runtime.device_target()}), torch {torch.__version__}, "
          f"{args.threads} threads, {args.stat} of {args.repeats}; {args.clock} time in microseconds per call\n")
    print("| op | variant | shape | PyNative | jit | torch eager | err vs torch |")
    print("|---|---|---|---|---|---|---|")
    for op in args.ops:
        for row in bench(op, args.repeats):
            print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


if __name__ == "__main__":
    main()
