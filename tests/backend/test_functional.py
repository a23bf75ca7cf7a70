"""Every public function of `backend.functional` against torch, in fp32 and fp16, in PyNative and under `mindspore.jit`,
forward and (for the differentiable ones) gradient.

A case is a small module-level function that calls one op with its non-tensor arguments fixed (`jit` needs real
source, and one jit wrapper per case is shared by both dtypes), a torch reference computing the same thing in fp32,
and an input builder. fp16 runs compare against torch fp32 on the same fp16-rounded inputs.
Metric (DESIGN.md): max|ours - torch| / mean|torch| <= 1e-5 (fp32) or 5e-3 (fp16); per-case exceptions say why.
Gradients: `value_and_grad` of sum(output * cotangent) against torch autograd. Under jit, a differentiable case
compiles that value_and_grad graph once per dtype and its forward outputs serve the forward test too.
bf16 is swept forward in PyNative only, to record which kernels exist (docs/backend.md).

Combinations that do not run on this device are listed in `EXPECTED_FAILURES` with the exact MindSpore error: the
test asserts that error (so it fails as soon as the kernel appears) and then reports itself as xfail.
`test_every_public_function_has_a_case` fails when `functional` gains a function without a case here.
"""

import gc
import inspect
import weakref
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import mindspore as ms
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from transformers import activations as hf_activations

from mindone.transformers.backend import functional as F
from mindone.transformers.backend import runtime

DTYPES = {
    "fp32": (ms.float32, torch.float32), "fp16": (ms.float16, torch.float16), "bf16": (ms.bfloat16, torch.bfloat16),
}
TOLERANCE = {"fp32": 1e-5, "fp16": 5e-3, "bf16": 3e-2}
# bf16 compute has almost no CPU kernels, so it is only swept forward in PyNative (for the status table in docs)
DTYPE_MODES = [("fp32", "pynative"), ("fp32", "jit"), ("fp16", "pynative"), ("fp16", "jit"), ("bf16", "pynative")]
GRAD_DTYPE_MODES = [(d, m) for d, m in DTYPE_MODES if d != "bf16"]


@dataclass
class Case:
    op: str  # the functional name this case covers
    name: str  # distinguishes several cases of one op
    fn: Callable  # MindSpore tensors -> output(s); module-level so `ms.jit` can read its source
    ref: Callable  # torch fp32 tensors -> output(s)
    inputs: Callable  # (rng, torch dtype of the test) -> list of arrays; floating arrays take the test dtype
    grad: tuple = ()  # input positions to differentiate
    grad_outputs: tuple = (0,)  # output positions the loss sums over
    tol: dict = field(default_factory=dict)  # per-dtype override of TOLERANCE
    grad_tol: dict = field(default_factory=dict)  # per-dtype override of TOLERANCE for gradients
    out_dtype: Optional[str] = None  # dtype of float outputs when it is not the inputs' dtype
    ref_uses_output: bool = False  # random ops: the reference also receives our first output (numpy)

    @property
    def id(self):
        return f"{self.op}-{self.name}" if self.name else self.op


def randn(rng, *shape):
    return rng.standard_normal(shape)


def distinct(rng, *shape):
    """Values exactly representable in fp16 with no ties, so argmax/topk/sort indices are well defined."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.25 - n * 0.125).reshape(shape)


def causal_mask(dtype, sq, sk):
    """HF's additive mask: 0 where attended, finfo(dtype).min where masked (query i sees keys <= i + sk - sq)."""
    allowed = np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq)
    return np.where(allowed, 0.0, torch.finfo(dtype).min)[None, None]


# ----------------------------------------------------------------------------------------------------------------
# Cases. Each `*_fn` is what gets jitted; references are torch's own functions where torch has one.
# ----------------------------------------------------------------------------------------------------------------


def linear_fn(x, w, b):
    return F.linear(x, w, b)


def linear_nobias_fn(x, w):
    return F.linear(x, w)


def matmul_fn(a, b):
    return F.matmul(a, b)


def embedding_fn(ids, w):
    return F.embedding(ids, w)


def embedding_padding_fn(ids, w):
    return F.embedding(ids, w, 3)


def fft2_real_fn(x):
    return F.fft2_real(x)


def dft2_real_fn(x):
    # the matmul form used where MindSpore has no FFT kernel, checked here on the same inputs
    return F.cast(F._dft2_real(F.cast(x, ms.float32)), x.dtype)


def _fft2_real_ref(x):
    return torch.fft.fftn(x, dim=(-2, -1)).real


def layer_norm_fn(x, w, b):
    return F.layer_norm(x, w, b, 1e-5)


def layer_norm_noaffine_fn(x):
    return F.layer_norm(x, None, None, 1e-12)


def rms_norm_fn(x, w):
    return F.rms_norm(x, w, 1e-6)


def rms_norm_noweight_fn(x):
    return F.rms_norm(x, None, 1e-5)


def gelu_fn(x):
    return F.gelu(x)


def gelu_tanh_fn(x):
    return F.gelu_tanh(x)


def gelu_fast_fn(x):
    return F.gelu_fast(x)


def quick_gelu_fn(x):
    return F.quick_gelu(x)


def silu_fn(x):
    return F.silu(x)


def relu_fn(x):
    return F.relu(x)


def tanh_fn(x):
    return F.tanh(x)


def sigmoid_fn(x):
    return F.sigmoid(x)


def log_sigmoid_fn(x):
    return F.log_sigmoid(x)


def softmax_fn(x):
    return F.softmax(x)


def softmax_axis1_fn(x):
    return F.softmax(x, 1)


def softmax_fp32_fn(x):
    return F.softmax(x, -1, ms.float32)


def log_softmax_fn(x):
    return F.log_softmax(x)


def dropout_eval_fn(x):
    return F.dropout(x, 0.3, False)


def gumbel_softmax_fn(x, g):
    return F.gumbel_softmax(x, 2.0, False, g)


def gumbel_softmax_hard_fn(x, g):
    return F.gumbel_softmax(x, 0.5, True, g)


def _gumbel_softmax_ref(x, g, tau, hard):
    y_soft = torch.softmax((x + g) / tau, -1)
    if not hard:
        return y_soft
    y_hard = TF.one_hot(y_soft.argmax(-1), x.shape[-1]).to(x.dtype)
    return y_hard - y_soft.detach() + y_soft


def dropout_train_fn(x):
    return F.dropout(x, 0.3, True)


def repeat_kv_fn(x):
    return F.repeat_kv(x, 3)


def broadcast_operand_fn(x, mask, stat):
    return (x + F.broadcast_operand(mask, x.shape)) * F.broadcast_operand(stat, x.shape)


def rotary_matrix_fn(x, cos, sin):
    return F.matmul(x, F.rotary_matrix(cos, sin, 0.125))


def rotary_matrix_partial_fn(x, cos, sin):
    return F.matmul(x, F.rotary_matrix(cos, sin, 0.125, head_dim=x.shape[-1]))


def rotary_matrix_interleaved_fn(x, cos, sin):
    return F.matmul(x, F.rotary_matrix(cos, sin, 0.125, head_dim=x.shape[-1], interleaved=True))


def rotate_half_fn(x):
    return F.rotate_half(x)


def unbind_fn(x):
    return F.unbind(x, 1)


def apply_rotary_matrix_fn(x, cos, sin):
    return F.apply_rotary_matrix(x, F.rotary_matrix(cos, sin, 0.125))


def attention_fn(q, k, v, mask):
    return F.attention(q, k, v, mask)


def attention_unscaled_fn(q, k, v):
    return F.attention(q, k, v, None, 1.0)


def cross_entropy_fn(logits, labels):
    return F.cross_entropy(logits, labels)


def cross_entropy_sum_fn(logits, labels):
    return F.cross_entropy(logits, labels, -100, "sum")


def cross_entropy_none_fn(logits, labels):
    return F.cross_entropy(logits, labels, -100, "none")


def mse_loss_fn(x, y):
    return F.mse_loss(x, y)


def cast_fp32_fn(x):
    return F.cast(x, ms.float32)


def sum_of_squares_fn(x):
    return F.sum_of_squares(x)


def bce_logits_fn(x, y):
    return F.binary_cross_entropy_with_logits(x, y)


def arange_fn(like):
    return F.arange(7)


def arange_float_fn(like):
    return F.arange(1, 4, 0.5, like.dtype)


def full_fn(like):
    return F.full((2, 3), 1.5, like.dtype)


def stack_fn(a, b, c):
    return F.stack((a, b, c), 1)


def index_select_fn(x, index):
    return F.index_select(x, 1, index)


def cat_fn(a, b, c):
    return F.cat((a, b, c), -1)


def argmax_fn(x):
    return F.argmax(x)


def argmax_keepdims_fn(x):
    return F.argmax(x, 0, True)


def topk_fn(x):
    return F.topk(x, 4)


def topk_smallest_fn(x):
    return F.topk(x, 3, 0, False)


def sort_fn(x):
    return F.sort(x)


def sort_descending_fn(x):
    return F.sort(x, 0, True)


def cumsum_fn(x):
    return F.cumsum(x, 1)


def cumsum_fp32_fn(x):
    return F.cumsum(x, -1, ms.float32)


def multinomial_fn(probs):
    return F.multinomial(probs, 1)


def where_fn(cond, x, y):
    return F.where(cond, x, y)


def masked_fill_fn(x, mask):
    return F.masked_fill(x, mask, -1000.0)


def tril_fn(x):
    return F.tril(x)


def tril_offset_fn(x):
    return F.tril(x, -1)


def triu_fn(x):
    return F.triu(x, 1)


def pad_fn(x):
    return F.pad(x, (1, 2))


def pad_inf_fn(x):
    return F.pad(x, (2, 0, 0, 0, 1, 1), float("-inf"))


def pad_value_fn(x):
    return F.pad(x, (0, 1, 2, 1), 1.5)


def group_norm_fn(x, w, b):
    return F.group_norm(x, 2, w, b, 1e-5)


def weight_norm_fn(g, v):
    return F.weight_norm(g, v, 2)


def _weight_norm_ref(g, v):
    return torch._weight_norm(v, g, 2)


def ctc_loss_fn(x, targets, input_lengths, target_lengths):
    return F.ctc_loss(F.log_softmax(F.cast(x, ms.float32), -1), targets, input_lengths, target_lengths, 0, "mean")


def ctc_loss_sum_fn(x, targets, input_lengths, target_lengths):
    return F.ctc_loss(F.log_softmax(F.cast(x, ms.float32), -1), targets, input_lengths, target_lengths, 0, "sum",
                      True)


def _ctc_ref(x, targets, input_lengths, target_lengths, reduction="mean", zero_infinity=False):
    return TF.ctc_loss(x.float().log_softmax(-1), targets, input_lengths, target_lengths, 0, reduction, zero_infinity)


def _ctc_inputs(r, d, impossible=False):
    """(T=9, N=3, C=5) logits, padded targets; with `impossible`, the last row's 4 labels need more than 3 frames."""
    targets = r.integers(1, 5, (3, 4))
    return [randn(r, 9, 3, 5), targets, np.array([9, 7, 3 if impossible else 9]), np.array([4, 2, 4])]


def conv1d_fn(x, w, b):
    return F.conv1d(x, w, b, 2, 1)


def conv1d_groups_fn(x, w):
    return F.conv1d(x, w, None, 1, 2, 2, 2)


def conv2d_fn(x, w, b):
    return F.conv2d(x, w, b, 1, 1)


def conv2d_strided_fn(x, w, b):
    return F.conv2d(x, w, b, (2, 1), (0, 1), 1, 2)


def conv2d_patches_fn(x, w, b):
    return F.conv2d(x, w, b, (3, 2))


def conv2d_patches_no_bias_fn(x, w):
    return F.conv2d(x, w, None, 2, 0, 1, 1)


def conv_transpose2d_blocks_fn(x, w, b):
    return F.conv_transpose2d(x, w, b, 2)


def max_pool2d_fn(x):
    return F.max_pool2d(x, 3, 2)


def softmax_exp_fn(x):
    return F.softmax_exp(x, -1)


def interpolate_fn(x):
    return F.interpolate(x, (7, 3))


def interpolate_corners_fn(x):
    return F.interpolate(x, (9, 10), "bicubic", True)


def interpolate_scale_factor_fn(x):
    # IDEFICS's position-table resize: the factor, not the output size, places the taps
    return F.interpolate(x, mode="bicubic", scale_factor=(5.1 / 3, 4.1 / 3))


def interpolate_bilinear_fn(x):
    return F.interpolate(x, (9, 7), "bilinear")


def interpolate_bilinear_corners_fn(x):
    return F.interpolate(x, (3, 2), "bilinear", True)


def adaptive_avg_pool2d_fn(x):
    return F.adaptive_avg_pool2d(x, (3, 2))


def roll_fn(x):
    return F.roll(x, (-2, 3), (1, 2))


def batch_norm_eval_fn(x, mean, var, w, b):
    return F.batch_norm(x, mean, var, w, b, False, 0.1, 1e-5)[0]


def batch_norm_train_fn(x, mean, var, w, b):
    return F.batch_norm(x, mean, var, w, b, True, 0.1, 1e-5)


def _batch_norm_train_ref(x, mean, var, w, b):
    axes = (0, 2, 3)
    return (TF.batch_norm(x, mean.clone(), var.clone(), w, b, training=True, eps=1e-5), x.mean(axes),
            x.var(axes, unbiased=True))


def _ln_ref(x, w, b, eps):
    return TF.layer_norm(x, x.shape[-1:], w, b, eps)


def _rms_ref(x, w, eps):
    h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return h if w is None else w * h


def _attention_ref(q, k, v, mask=None, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, -1)
    return weights @ v, weights


def _rotary_ref(x, cos, sin):
    """HF's apply_rotary_pos_emb on (B, S, H, D) rows with (B, S, D) tables, times a scale."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x * cos[:, :, None] + rotated * sin[:, :, None]) * 0.125


def _partial_rotary_ref(x, cos, sin, interleaved=False):
    """GPT-NeoX / Phi (rotate_half) or GPT-J / CodeGen (rotate_every_two) RoPE on the first cos.shape[-1] features of
    each row, the rest passed through, times a scale."""
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    if interleaved:
        rotated = torch.stack([-x_rot[..., 1::2], x_rot[..., ::2]], -1).flatten(-2)
    else:
        rotated = torch.cat([-x_rot[..., r // 2:], x_rot[..., :r // 2]], -1)
    out = x_rot * cos[:, :, None] + rotated * sin[:, :, None]
    return torch.cat([out, x_pass], -1) * 0.125


def _labels(rng, n, vocab, ignored=(1,)):
    labels = rng.integers(0, vocab, n)
    labels[list(ignored)] = -100
    return labels


def _dropout_ref(x, out):
    """Our own mask, applied with torch: checks the 1/(1-p) scaling and that backward uses the forward's mask."""
    keep = torch.from_numpy(np.asarray(out) != 0)
    return x * keep / 0.7


# MindSpore's CPU LogSoftmaxGrad recomputes the softmax with its Exp kernel (4e-6 relative error; torch's: 3e-7).
LOG_SOFTMAX_GRAD_TOL = {"fp32": 3e-5}
# Sharp softmaxes amplify fp16 rounding: torch's own fp16 gradients are 0.6-1.1e-2 from its fp32 ones on these inputs.
SHARP_FP16_GRAD_TOL = {"fp16": 2e-2}

# 128-wide rows: max|diff| sits on probabilities near 1 while mean|p| = 1/128, which magnifies the metric. fp32:
# MindSpore's Exp kernel has 4e-6 relative error (7e-6 per probability; torch's own fp32 softmax is 9e-6 from fp64 on
# this metric). fp16: rounding the output alone gives 2.4e-4 / (1/128) = 3.1e-2. Gradients p * (ct - sum(p * ct))
# carry the same scale.
WIDE_SOFTMAX_TOL = {"fp32": 6e-5, "fp16": 4e-2}

CASES = [
    Case("linear", "", linear_fn, TF.linear, lambda r, d: [randn(r, 2, 3, 8), randn(r, 5, 8), randn(r, 5)], (0, 1, 2)),
    Case("linear", "no_bias", linear_nobias_fn, TF.linear, lambda r, d: [randn(r, 4, 8), randn(r, 5, 8)], (0, 1)),
    # one row: the native matrix-vector kernel in fp32 (K = 64 + 6 covers its blocked loop and its tail)
    Case("linear", "one_row", linear_fn, TF.linear, lambda r, d: [randn(r, 1, 1, 70), randn(r, 40, 70), randn(r, 40)],
         (0, 1, 2)),
    Case("matmul", "", matmul_fn, torch.matmul, lambda r, d: [randn(r, 2, 3, 4, 5), randn(r, 3, 5, 6)], (0, 1)),
    Case("embedding", "", embedding_fn, lambda ids, w: TF.embedding(ids, w),
         lambda r, d: [np.array([[1, 3, 3, 0], [9, 3, 1, 1]]), randn(r, 10, 8)], (1,)),
    Case("embedding", "padding_idx", embedding_padding_fn, lambda ids, w: TF.embedding(ids, w, padding_idx=3),
         lambda r, d: [np.array([[1, 3, 3, 0], [9, 3, 1, 1]]), randn(r, 10, 8)], (1,)),
    Case("fft2_real", "", fft2_real_fn, _fft2_real_ref, lambda r, d: [randn(r, 2, 7, 12)], (0,)),
    Case("fft2_real", "dft_matmuls", dft2_real_fn, _fft2_real_ref, lambda r, d: [randn(r, 2, 7, 12)], (0,)),
    Case("index_select", "", index_select_fn, lambda x, i: torch.index_select(x, 1, i),
         lambda r, d: [randn(r, 2, 4, 3), np.array([3, 0, 0, 2, 1])], (0,)),
    Case("layer_norm", "", layer_norm_fn, lambda x, w, b: _ln_ref(x, w, b, 1e-5),
         lambda r, d: [randn(r, 2, 3, 16) * 3 + 1, randn(r, 16), randn(r, 16)], (0, 1, 2)),
    Case("layer_norm", "no_affine", layer_norm_noaffine_fn, lambda x: _ln_ref(x, None, None, 1e-12),
         lambda r, d: [randn(r, 4, 32)], (0,)),
    Case("rms_norm", "", rms_norm_fn, lambda x, w: _rms_ref(x, w, 1e-6),
         lambda r, d: [randn(r, 2, 3, 16), randn(r, 16)], (0, 1)),
    Case("rms_norm", "no_weight", rms_norm_noweight_fn, lambda x: _rms_ref(x, None, 1e-5),
         lambda r, d: [randn(r, 4, 32)], (0,)),
    Case("gelu", "", gelu_fn, TF.gelu, lambda r, d: [randn(r, 4, 33) * 2], (0,)),
    Case("gelu_tanh", "", gelu_tanh_fn, lambda x: TF.gelu(x, approximate="tanh"), lambda r, d: [randn(r, 4, 33) * 2],
         (0,)),
    Case("gelu_tanh", "large", gelu_tanh_fn, lambda x: TF.gelu(x, approximate="tanh"),
         lambda r, d: [randn(r, 4, 4096) * 3], (0,)),  # >= 16k elements: the exp form on CPU
    Case("gelu_fast", "", gelu_fast_fn, hf_activations.FastGELUActivation(), lambda r, d: [randn(r, 4, 33) * 2], (0,)),
    Case("quick_gelu", "", quick_gelu_fn, hf_activations.QuickGELUActivation(), lambda r, d: [randn(r, 4, 33) * 2],
         (0,), grad_tol=SHARP_FP16_GRAD_TOL),
    Case("silu", "", silu_fn, TF.silu, lambda r, d: [randn(r, 4, 33) * 2], (0,)),
    Case("relu", "", relu_fn, TF.relu, lambda r, d: [randn(r, 4, 33)], (0,)),
    Case("tanh", "", tanh_fn, torch.tanh, lambda r, d: [randn(r, 4, 33)], (0,)),
    Case("sigmoid", "", sigmoid_fn, torch.sigmoid, lambda r, d: [randn(r, 4, 33) * 2], (0,)),
    Case("log_sigmoid", "", log_sigmoid_fn, TF.logsigmoid, lambda r, d: [randn(r, 4, 33) * 8], (0,)),
    Case("softmax", "", softmax_fn, lambda x: torch.softmax(x, -1), lambda r, d: [randn(r, 2, 3, 7) * 3], (0,)),
    Case("softmax", "axis1", softmax_axis1_fn, lambda x: torch.softmax(x, 1), lambda r, d: [randn(r, 2, 3, 7)], (0,)),
    Case("softmax", "wide", softmax_fn, lambda x: torch.softmax(x, -1), lambda r, d: [randn(r, 4, 128) * 3], (0,),
         tol=WIDE_SOFTMAX_TOL, grad_tol=WIDE_SOFTMAX_TOL),
    Case("softmax", "in_fp32", softmax_fp32_fn, lambda x: torch.softmax(x, -1), lambda r, d: [randn(r, 3, 9) * 4],
         (0,), out_dtype="fp32"),
    Case("log_softmax", "", log_softmax_fn, lambda x: TF.log_softmax(x, -1), lambda r, d: [randn(r, 2, 3, 7) * 3],
         (0,), grad_tol=LOG_SOFTMAX_GRAD_TOL),
    Case("gumbel_softmax", "", gumbel_softmax_fn, lambda x, g: _gumbel_softmax_ref(x, g, 2.0, False),
         lambda r, d: [randn(r, 6, 7), randn(r, 6, 7)], (0,)),
    Case("gumbel_softmax", "hard", gumbel_softmax_hard_fn, lambda x, g: _gumbel_softmax_ref(x, g, 0.5, True),
         lambda r, d: [randn(r, 6, 7) * 0.5, np.zeros((6, 7))], (0,)),
    Case("dropout", "eval", dropout_eval_fn, lambda x: TF.dropout(x, 0.3, False), lambda r, d: [randn(r, 4, 8)],
         (0,)),
    Case("dropout", "train", dropout_train_fn, _dropout_ref, lambda r, d: [randn(r, 64, 64)], (0,),
         ref_uses_output=True),
    Case("repeat_kv", "", repeat_kv_fn, lambda x: x.repeat_interleave(3, 1), lambda r, d: [randn(r, 2, 2, 3, 4)],
         (0,)),
    Case("broadcast_operand", "", broadcast_operand_fn, lambda x, m, s: (x + m) * s,
         lambda r, d: [randn(r, 2, 3, 4, 5), randn(r, 1, 1, 4, 5), randn(r, 2, 3, 4, 1)], (0, 1, 2)),
    Case("rotary_matrix", "", rotary_matrix_fn, _rotary_ref,
         lambda r, d: [randn(r, 2, 3, 4, 8), randn(r, 2, 3, 8), randn(r, 2, 3, 8)], (0,)),
    # rotary on the first 4 of 10 features; the interleaved tables repeat each frequency twice (GPT-J's layout)
    Case("rotary_matrix", "partial", rotary_matrix_partial_fn, _partial_rotary_ref,
         lambda r, d: [randn(r, 2, 3, 4, 10), randn(r, 2, 3, 4), randn(r, 2, 3, 4)], (0,)),
    Case("rotary_matrix", "interleaved_partial", rotary_matrix_interleaved_fn,
         lambda x, c, s_: _partial_rotary_ref(x, c, s_, interleaved=True),
         lambda r, d: [randn(r, 2, 3, 4, 10), randn(r, 2, 3, 3).repeat(2, -1), randn(r, 2, 3, 3).repeat(2, -1)],
         (0,)),
    Case("rotate_half", "", rotate_half_fn, lambda x: torch.cat([-x[..., 4:], x[..., :4]], -1),
         lambda r, d: [randn(r, 2, 3, 8)], (0,)),
    Case("unbind", "", unbind_fn, lambda x: torch.unbind(x, 1), lambda r, d: [randn(r, 2, 3, 4)], (0,),
         grad_outputs=(0, 1, 2)),
    # returns (B, H, S, D); own (B, S, D, D) rotations, and (1, S, D, D) shared by a batch of 3 (positions as batch)
    Case("apply_rotary_matrix", "", apply_rotary_matrix_fn, lambda x, c, s_: _rotary_ref(x, c, s_).transpose(1, 2),
         lambda r, d: [randn(r, 2, 3, 4, 8), randn(r, 2, 3, 8), randn(r, 2, 3, 8)], (0,)),
    Case("apply_rotary_matrix", "shared", apply_rotary_matrix_fn,
         lambda x, c, s_: _rotary_ref(x, c.expand(3, -1, -1), s_.expand(3, -1, -1)).transpose(1, 2),
         lambda r, d: [randn(r, 3, 5, 4, 8), randn(r, 1, 5, 8), randn(r, 1, 5, 8)], (0,)),
    Case("attention", "causal", attention_fn, _attention_ref,
         lambda r, d: [randn(r, 2, 4, 5, 8), randn(r, 2, 4, 6, 8), randn(r, 2, 4, 6, 8), causal_mask(d, 5, 6)],
         (0, 1, 2), (0, 1), grad_tol=SHARP_FP16_GRAD_TOL),
    # a trainable additive bias as the mask (T5's position bias, Swin's relative position table): its gradient is
    # the softmax input's, summed over the axes it broadcasts on
    Case("attention", "bias_per_head", attention_fn, _attention_ref,
         lambda r, d: [randn(r, 2, 3, 5, 8), randn(r, 2, 3, 6, 8), randn(r, 2, 3, 6, 8), randn(r, 1, 3, 5, 6)],
         (0, 1, 2, 3), (0, 1), grad_tol=SHARP_FP16_GRAD_TOL),
    Case("attention", "bias_per_key", attention_fn, _attention_ref,
         lambda r, d: [randn(r, 2, 3, 5, 8), randn(r, 2, 3, 6, 8), randn(r, 2, 3, 6, 8), randn(r, 2, 1, 1, 6)],
         (0, 1, 2, 3), (0, 1), grad_tol=SHARP_FP16_GRAD_TOL),
    Case("attention", "unscaled", attention_unscaled_fn, lambda q, k, v: _attention_ref(q, k, v, None, 1.0),
         lambda r, d: [randn(r, 1, 2, 4, 8), randn(r, 1, 2, 4, 8), randn(r, 1, 2, 4, 8)], (0, 1, 2),
         grad_tol=SHARP_FP16_GRAD_TOL),
    Case("cross_entropy", "mean", cross_entropy_fn, TF.cross_entropy,
         lambda r, d: [randn(r, 6, 11) * 2, _labels(r, 6, 11)], (0,),
         grad_tol=LOG_SOFTMAX_GRAD_TOL),
    Case("cross_entropy", "sum_3d", cross_entropy_sum_fn,
         lambda x, y: TF.cross_entropy(x.flatten(0, 1), y.flatten(), reduction="sum"),
         lambda r, d: [randn(r, 2, 3, 11) * 2, _labels(r, 6, 11, (0, 4)).reshape(2, 3)], (0,),
         grad_tol=LOG_SOFTMAX_GRAD_TOL),
    Case("cross_entropy", "none", cross_entropy_none_fn, lambda x, y: TF.cross_entropy(x, y, reduction="none"),
         lambda r, d: [randn(r, 6, 11) * 2, _labels(r, 6, 11)], (0,),
         grad_tol=LOG_SOFTMAX_GRAD_TOL),
    Case("cross_entropy", "all_ignored", cross_entropy_fn, TF.cross_entropy,
         lambda r, d: [randn(r, 3, 5), np.full(3, -100)]),
    Case("mse_loss", "", mse_loss_fn, TF.mse_loss, lambda r, d: [randn(r, 3, 7), randn(r, 3, 7)], (0, 1)),
    Case("binary_cross_entropy_with_logits", "", bce_logits_fn, TF.binary_cross_entropy_with_logits,
         lambda r, d: [randn(r, 4, 5) * 2, r.random((4, 5))], (0, 1)),
    Case("arange", "", arange_fn, lambda like: torch.arange(7), lambda r, d: [np.zeros(1)]),
    Case("arange", "float", arange_float_fn, lambda like: torch.arange(1, 4, 0.5), lambda r, d: [np.zeros(1)]),
    Case("full", "", full_fn, lambda like: torch.full((2, 3), 1.5), lambda r, d: [np.zeros(1)]),
    Case("stack", "", stack_fn, lambda a, b, c: torch.stack((a, b, c), 1),
         lambda r, d: [randn(r, 2, 3), randn(r, 2, 3), randn(r, 2, 3)], (0, 1, 2)),
    Case("cat", "", cat_fn, lambda a, b, c: torch.cat((a, b, c), -1),
         lambda r, d: [randn(r, 2, 3), randn(r, 2, 1), randn(r, 2, 4)], (0, 1, 2)),
    Case("argmax", "", argmax_fn, lambda x: x.argmax(-1), lambda r, d: [distinct(r, 3, 7)]),
    Case("argmax", "keepdims", argmax_keepdims_fn, lambda x: x.argmax(0, True), lambda r, d: [distinct(r, 3, 7)]),
    Case("topk", "", topk_fn, lambda x: tuple(torch.topk(x, 4)), lambda r, d: [distinct(r, 3, 10)], (0,), (0,)),
    Case("topk", "smallest", topk_smallest_fn, lambda x: tuple(torch.topk(x, 3, 0, False)),
         lambda r, d: [distinct(r, 6, 4)], (0,), (0,)),
    Case("sort", "", sort_fn, lambda x: tuple(torch.sort(x)), lambda r, d: [distinct(r, 3, 10)], (0,), (0,)),
    Case("sort", "descending", sort_descending_fn, lambda x: tuple(torch.sort(x, 0, True)),
         lambda r, d: [distinct(r, 6, 4)], (0,), (0,)),
    Case("cumsum", "", cumsum_fn, lambda x: x.cumsum(1), lambda r, d: [randn(r, 3, 40)], (0,)),
    Case("cumsum", "to_fp32", cumsum_fp32_fn, lambda x: x.cumsum(-1), lambda r, d: [randn(r, 3, 40)], (0,),
         out_dtype="fp32"),
    Case("multinomial", "one_hot", multinomial_fn, lambda p: torch.multinomial(p, 1),
         lambda r, d: [np.eye(5)[[3, 0, 4]] * 0.5]),
    Case("where", "", where_fn, torch.where,
         lambda r, d: [r.random((3, 5)) > 0.5, randn(r, 3, 5), randn(r, 1, 5)], (1, 2)),
    Case("masked_fill", "", masked_fill_fn, lambda x, m: x.masked_fill(m, -1000.0),
         lambda r, d: [randn(r, 2, 3, 5), r.random((2, 1, 5)) > 0.5], (0,)),
    Case("tril", "", tril_fn, torch.tril, lambda r, d: [randn(r, 2, 5, 6)], (0,)),
    Case("tril", "offset", tril_offset_fn, lambda x: torch.tril(x, -1), lambda r, d: [randn(r, 6, 4)], (0,)),
    Case("triu", "", triu_fn, lambda x: torch.triu(x, 1), lambda r, d: [randn(r, 2, 5, 6)], (0,)),
    Case("pad", "", pad_fn, lambda x: TF.pad(x, (1, 2)), lambda r, d: [randn(r, 2, 3, 4)], (0,)),
    Case("pad", "value", pad_value_fn, lambda x: TF.pad(x, (0, 1, 2, 1), value=1.5), lambda r, d: [randn(r, 2, 3, 4)],
         (0,)),
    Case("pad", "minus_inf_3d", pad_inf_fn, lambda x: TF.pad(x, (2, 0, 0, 0, 1, 1), value=float("-inf")),
         lambda r, d: [randn(r, 2, 3, 4)]),
    Case("interpolate", "bicubic", interpolate_fn, lambda x: TF.interpolate(x, (7, 3), mode="bicubic"),
         lambda r, d: [randn(r, 2, 3, 5, 6)], (0,)),
    Case("interpolate", "bicubic_align_corners", interpolate_corners_fn,
         lambda x: TF.interpolate(x, (9, 10), mode="bicubic", align_corners=True), lambda r, d: [randn(r, 1, 2, 4, 4)],
         (0,)),
    Case("interpolate", "bicubic_scale_factor", interpolate_scale_factor_fn,
         lambda x: TF.interpolate(x, scale_factor=(5.1 / 3, 4.1 / 3), mode="bicubic", align_corners=False),
         lambda r, d: [randn(r, 1, 4, 3, 3)], (0,)),
    Case("interpolate", "bilinear", interpolate_bilinear_fn,
         lambda x: TF.interpolate(x, (9, 7), mode="bilinear", align_corners=False),
         lambda r, d: [randn(r, 2, 3, 5, 6)], (0,)),
    Case("interpolate", "bilinear_align_corners_down", interpolate_bilinear_corners_fn,
         lambda x: TF.interpolate(x, (3, 2), mode="bilinear", align_corners=True), lambda r, d: [randn(r, 1, 2, 7, 5)],
         (0,)),
    Case("adaptive_avg_pool2d", "", adaptive_avg_pool2d_fn, lambda x: TF.adaptive_avg_pool2d(x, (3, 2)),
         lambda r, d: [randn(r, 2, 3, 7, 5)], (0,)),
    Case("roll", "", roll_fn, lambda x: torch.roll(x, (-2, 3), (1, 2)), lambda r, d: [randn(r, 2, 5, 6, 3)], (0,)),
    Case("batch_norm", "eval", batch_norm_eval_fn,
         lambda x, m, v, w, b: TF.batch_norm(x, m, v, w, b, training=False, eps=1e-5),
         lambda r, d: [randn(r, 2, 3, 4, 5), randn(r, 3), r.random(3) + 0.5, randn(r, 3), randn(r, 3)], (0, 3, 4)),
    Case("batch_norm", "train", batch_norm_train_fn, _batch_norm_train_ref,
         lambda r, d: [randn(r, 2, 3, 4, 5) + 1, randn(r, 3), r.random(3) + 0.5, randn(r, 3), randn(r, 3)],
         (0, 3, 4)),
    Case("group_norm", "", group_norm_fn, lambda x, w, b: TF.group_norm(x, 2, w, b, 1e-5),
         lambda r, d: [randn(r, 2, 4, 9) * 3 + 1, randn(r, 4), randn(r, 4)], (0, 1, 2)),
    Case("weight_norm", "", weight_norm_fn, _weight_norm_ref, lambda r, d: [randn(r, 1, 1, 5), randn(r, 6, 3, 5)],
         (0, 1)),
    Case("ctc_loss", "mean", ctc_loss_fn, _ctc_ref, _ctc_inputs, (0,), out_dtype="fp32"),
    Case("ctc_loss", "sum_zero_infinity", ctc_loss_sum_fn, lambda *a: _ctc_ref(*a, "sum", True),
         lambda r, d: _ctc_inputs(r, d, impossible=True), (0,), out_dtype="fp32"),
    Case("conv1d", "", conv1d_fn, lambda x, w, b: TF.conv1d(x, w, b, 2, 1),
         lambda r, d: [randn(r, 2, 4, 10), randn(r, 6, 4, 3), randn(r, 6)], (0, 1, 2)),
    Case("conv1d", "groups_dilation", conv1d_groups_fn, lambda x, w: TF.conv1d(x, w, None, 1, 2, 2, 2),
         lambda r, d: [randn(r, 2, 4, 9), randn(r, 6, 2, 3)], (0, 1)),
    Case("conv2d", "", conv2d_fn, lambda x, w, b: TF.conv2d(x, w, b, 1, 1),
         lambda r, d: [randn(r, 2, 3, 6, 6), randn(r, 5, 3, 3, 3), randn(r, 5)], (0, 1, 2)),
    Case("conv2d", "strided_groups", conv2d_strided_fn, lambda x, w, b: TF.conv2d(x, w, b, (2, 1), (0, 1), 1, 2),
         lambda r, d: [randn(r, 1, 4, 7, 5), randn(r, 6, 2, 3, 2), randn(r, 6)], (0, 1, 2)),
    # stride == kernel, no padding: a patch embedding (on CPU one matmul over the patches); 7x5 input drops the last
    # row and column like the convolution does
    Case("conv2d", "patches", conv2d_patches_fn, lambda x, w, b: TF.conv2d(x, w, b, (3, 2)),
         lambda r, d: [randn(r, 2, 3, 7, 5), randn(r, 5, 3, 3, 2), randn(r, 5)], (0, 1, 2)),
    Case("conv2d", "patches_no_bias", conv2d_patches_no_bias_fn, lambda x, w: TF.conv2d(x, w, None, 2),
         lambda r, d: [randn(r, 1, 4, 8, 6), randn(r, 6, 4, 2, 2)], (0, 1)),
    # stride == kernel, no padding: every pixel fills its own output block (DPT's reassemble upsampling; one matmul)
    Case("conv_transpose2d", "blocks", conv_transpose2d_blocks_fn,
         lambda x, w, b: TF.conv_transpose2d(x, w, b, 2),
         lambda r, d: [randn(r, 2, 3, 4, 5), randn(r, 3, 6, 2, 2), randn(r, 6)], (0, 1, 2)),
    # no padding (callers pad explicitly), no ties (distinct values): BiT's stem pool
    Case("max_pool2d", "", max_pool2d_fn, lambda x: TF.max_pool2d(x, 3, 2),
         lambda r, d: [distinct(r, 2, 3, 9, 7)], (0,)),
    Case("softmax_exp", "", softmax_exp_fn, lambda x: torch.softmax(x, -1),
         lambda r, d: [randn(r, 2, 1, 4, 16)], (0,)),
    Case("cast", "to_fp32", cast_fp32_fn, lambda x: x.float(), lambda r, d: [randn(r, 4, 8)], (0,), out_dtype="fp32"),
    Case("sum_of_squares", "", sum_of_squares_fn, lambda x: (x.float() * x.float()).sum(),
         lambda r, d: [randn(r, 3, 50, 40)], (0,), out_dtype="fp32"),
    Case("sum_of_squares", "1d", sum_of_squares_fn, lambda x: (x.float() * x.float()).sum(),
         lambda r, d: [randn(r, 300)], (0,), out_dtype="fp32"),
]

# Functions tested by a dedicated test below rather than by a Case.
SPECIAL_TESTS = {
    "finfo_min": "test_finfo_min_matches_torch",
    "get_activation": "test_get_activation_matches_hf",
    # host-side (numpy) on CPU by design, so neither jit nor a torch-equal stream applies
    "sample_categorical": "test_sample_categorical_follows_probs_and_never_draws_zero",
    "argmax_to_numpy": "test_argmax_to_numpy_matches_torch_first_maximum_and_nan",
    "masked_fill_on_host": "test_masked_fill_on_host_matches_torch_and_keeps_its_input",
    # in place on Parameters, called from Python by the training step (not traced)
    "adamw_update_": "test_adamw_update_matches_torch_adamw",
    "adamw_update_group_": "test_adamw_update_group_equals_one_update_per_tensor",
    # a process-wide mode switch, not an op
    "set_fully_masked_rows": "test_fully_masked_rows_follow_torch_eager_or_sdpa",
    # (log-probabilities, loss) pair with a hand-written gradient, judged against float64
    "log_softmax_kl_div": "test_log_softmax_kl_div_matches_torch_and_float64_gradient",
    # two dispatch paths chosen by shape (few tokens: gather the picked experts; else dense)
    "routed_swiglu_experts": "test_routed_swiglu_experts_matches_a_per_token_loop_on_both_paths",
    # float32 rows of a training step's head, with its own forward-formed gradient
    "linear_cross_entropy": "test_linear_cross_entropy_matches_torch",
    # a native copy only inside compiled training steps, checked there against the plain swap
    "swap_axes": "test_swap_axes_native_kernel_in_training_graphs",
}

# Case id -> the kernel MindSpore 2.10 has no bfloat16 version of on CPU (everything else runs in fp32 and fp16).
BF16_MISSING_CPU_KERNEL = {
    "adaptive_avg_pool2d": "BatchMatMul", "batch_norm-eval": "Sqrt", "batch_norm-train": "ReduceMean",
    "linear": "MatMul", "linear-no_bias": "MatMul", "linear-one_row": "MatMul", "matmul": "BatchMatMul", "embedding": "Gather",
    "embedding-padding_idx": "Gather", "index_select": "Gather", "gelu": "Sqrt",
    "gelu_tanh": "GeLU", "gelu_tanh-large": "GeLU", "gelu_fast": "GeLU", "quick_gelu": "Sigmoid", "silu": "Sigmoid", "relu": "ReLU",
    "tanh": "Tanh", "sigmoid": "Sigmoid", "log_sigmoid": "Minimum", "softmax": "Softmax", "softmax-axis1": "Softmax", "softmax-wide": "Softmax",
    "softmax_exp": "ArgMaxWithValue",
    "log_softmax": "LogSoftmax",
    "dropout-train": "Dropout", "rotary_matrix": "BatchMatMul", "rotary_matrix-partial": "Pad",
    "rotary_matrix-interleaved_partial": "Pad", "apply_rotary_matrix": "BatchMatMul",
    "apply_rotary_matrix-shared": "BatchMatMul", "rotate_half": "MatMul", "attention-causal": "BatchMatMul", "attention-unscaled": "BatchMatMul",
    "attention-bias_per_head": "BatchMatMul", "attention-bias_per_key": "BatchMatMul",
    "full": "FillV2", "stack": "Stack", "argmax": "Argmax", "argmax-keepdims": "Argmax", "topk": "TopK",
    "topk-smallest": "TopK", "cumsum": "CumSum", "cumsum-to_fp32": "CumSum", "where": "Select",
    "masked_fill": "MaskedFill", "tril": "Tril", "tril-offset": "Tril", "triu": "Triu", "pad": "Pad",
    "pad-value": "Pad", "pad-minus_inf_3d": "Pad", "conv1d": "Pad", "conv1d-groups_dilation": "Conv2D", "conv2d": "Conv2D",
    "conv2d-strided_groups": "Conv2D", "conv2d-patches": "MatMul", "conv2d-patches_no_bias": "MatMul",
    "conv_transpose2d-blocks": "MatMul",
}
_SORT_BF16 = r"For primitive\[Sort\], the input argument\[inputx\] must be a type of .* but got Tensor\[BFloat16\]"

# (case id, dtype, mode, kind) -> regex of the error MindSpore raises on CPU; kind "forward"/"grad".
EXPECTED_FAILURES = {
    **{(cid, "bf16", "pynative", "forward"): rf"Select CPU operator\[{kernel}\] fail! Unsupported data type!"
       for cid, kernel in BF16_MISSING_CPU_KERNEL.items()},
    ("sort", "bf16", "pynative", "forward"): _SORT_BF16,
    ("sort-descending", "bf16", "pynative", "forward"): _SORT_BF16,
    ("max_pool2d", "bf16", "pynative", "forward"):
        r"For primitive\[MaxPoolWithArgmaxV2\], the input argument\[input\] must be a type of .* but got Tensor\[BFloat16\]",
}


# ----------------------------------------------------------------------------------------------------------------
# Harness
# ----------------------------------------------------------------------------------------------------------------

_JIT_FORWARD = {}
_JIT_GRAD = {}


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _make_loss(case):
    fn, picked = case.fn, case.grad_outputs

    def loss(cotangents, *args):
        outs = _as_tuple(fn(*args))
        total = 0.0
        for i, ct in zip(picked, cotangents):
            total = total + (outs[i].astype(ms.float32) * ct).sum()
        return total, outs

    return loss


def _grad_fn(case, jit):
    """value_and_grad of sum(output * cotangent), also returning the outputs of that same call (random ops).

    The jit version is built once per case and reused for both dtypes."""
    if jit and case.id in _JIT_GRAD:
        return _JIT_GRAD[case.id]
    positions = tuple(p + 1 for p in case.grad)
    g = ms.value_and_grad(_make_loss(case), grad_position=positions, has_aux=True)
    if jit:
        g = _JIT_GRAD[case.id] = ms.jit(g)
    return g


def _forward_fn(case, jit):
    if not jit:
        return case.fn
    if case.fn not in _JIT_FORWARD:
        _JIT_FORWARD[case.fn] = ms.jit(case.fn)
    return _JIT_FORWARD[case.fn]


def _rounded(a, dtype):
    """float32 array holding `a` rounded to the test dtype, so both sides start from the same numbers."""
    return torch.from_numpy(np.asarray(a, np.float32)).to(DTYPES[dtype][1]).float().numpy()


def _inputs(case, dtype):
    ms_dtype, torch_dtype = DTYPES[dtype]
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    arrays = [np.asarray(a) for a in case.inputs(rng, torch_dtype)]
    ours, theirs = [], []
    for i, a in enumerate(arrays):
        if np.issubdtype(a.dtype, np.floating):
            a = _rounded(a, dtype)
            ours.append(ms.Tensor(a).astype(ms_dtype))
            theirs.append(torch.tensor(a, requires_grad=i in case.grad))
        else:
            ours.append(ms.Tensor(a))
            theirs.append(torch.from_numpy(a))
    return ours, theirs


def _numpy(t):
    if t.dtype in (ms.float16, ms.bfloat16):
        t = t.astype(ms.float32)
    return t.asnumpy()


def assert_close(ours, ref, tol, what):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch {ref.shape}"
    if not np.issubdtype(ref.dtype, np.floating):
        assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != torch {ref.dtype}"
        np.testing.assert_array_equal(ours, ref, err_msg=what)
        return
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_array_equal(ours[np.isinf(ref)], ref[np.isinf(ref)], err_msg=f"{what}: infinities differ")
    ours, ref = ours[finite].astype(np.float64), ref[finite].astype(np.float64)
    if ref.size == 0:
        return
    err = np.abs(ours - ref).max() / max(np.abs(ref).mean(), 1e-30)
    assert err <= tol, f"{what}: max|diff|/mean|ref| = {err:.3g} > {tol:g}"


def _check_expected_failure(key, run):
    """Runs `run`; for a listed combination asserts MindSpore's exact error instead and reports xfail."""
    message = EXPECTED_FAILURES.get(key) if runtime.is_cpu() else None
    if message is None:
        return run()
    with pytest.raises(Exception, match=message):
        run()
    pytest.xfail(f"does not run on {runtime.device_target()}: {message}")


def _assert_output_dtypes(ours, dtype, case):
    """Float outputs keep the inputs' dtype (torch's rule) unless the op is asked for another one."""
    expected = DTYPES[case.out_dtype or dtype][0]
    for i, o in enumerate(ours):
        if o.dtype in (ms.float16, ms.float32, ms.bfloat16, ms.float64):
            assert o.dtype == expected, f"{case.id} output {i}: dtype {o.dtype}, expected {expected}"


def _run_grad(case, dtype, mode, ours_in):
    """Outputs, cotangents and input gradients of sum(output * cotangent), all from one (compiled) call."""
    rng = np.random.default_rng(0)
    shapes = [o.shape for o in _as_tuple(case.fn(*ours_in))]
    # rounded to the test dtype so both sides see the same numbers
    cts = [_rounded(rng.standard_normal(shapes[i]), dtype) for i in case.grad_outputs]
    # a plain tuple argument is a jit constant: every call would compile again. Reusing the compiled graph also means
    # test_grad runs it a second time after test_forward, which is how the ops.pad gradient bug showed up.
    (_, outs), grads = _grad_fn(case, mode == "jit")(ms.mutable(tuple(ms.Tensor(c) for c in cts)), *ours_in)
    return tuple(outs), cts, _as_tuple(grads)


GRAD_CASES = [c for c in CASES if c.grad]


@pytest.mark.parametrize("dtype, mode", DTYPE_MODES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_torch(case, dtype, mode):
    ours_in, torch_in = _inputs(case, dtype)

    def run():
        if mode == "jit" and case.grad:
            # the forward of the compiled value_and_grad graph that test_grad reuses: one compile, not two
            return _run_grad(case, dtype, mode, ours_in)[0]
        return tuple(_as_tuple(_forward_fn(case, mode == "jit")(*ours_in)))

    ours = _check_expected_failure((case.id, dtype, mode, "forward"), run)
    _assert_output_dtypes(ours, dtype, case)
    ours_np = [_numpy(o) for o in ours]
    with torch.no_grad():
        extra = {"out": ours_np[0]} if case.ref_uses_output else {}
        ref = _as_tuple(case.ref(*torch_in, **extra))
    assert len(ours) == len(ref), f"{case.id}: {len(ours)} outputs, torch has {len(ref)}"
    for i, (o, r) in enumerate(zip(ours_np, ref)):
        assert_close(o, r, case.tol.get(dtype, TOLERANCE[dtype]), f"{case.id} output {i}")
    if case.op == "dropout" and case.name == "train":
        dropped = (ours_np[0] == 0).mean()
        assert abs(dropped - 0.3) < 0.05, f"dropout(p=0.3) zeroed {dropped:.3f} of the elements"


@pytest.mark.parametrize("dtype, mode", GRAD_DTYPE_MODES, ids=str)
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_grad_matches_torch(case, dtype, mode):
    ours_in, torch_in = _inputs(case, dtype)
    outs, cts, grads = _check_expected_failure((case.id, dtype, mode, "grad"),
                                               lambda: _run_grad(case, dtype, mode, ours_in))
    extra = {"out": _numpy(outs[0])} if case.ref_uses_output else {}
    ref = _as_tuple(case.ref(*torch_in, **extra))
    for i in case.grad_outputs:  # the forward inside the differentiated graph
        assert_close(_numpy(outs[i]), ref[i], case.tol.get(dtype, TOLERANCE[dtype]), f"{case.id} output {i}")
    loss = sum((ref[i].float() * torch.from_numpy(ct)).sum() for i, ct in zip(case.grad_outputs, cts))
    wrt = [torch_in[p] for p in case.grad]
    ref_grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    tol = case.grad_tol.get(dtype, TOLERANCE[dtype])
    assert len(grads) == len(wrt)
    for p, g, r in zip(case.grad, grads, ref_grads):
        assert g.dtype == ours_in[p].dtype, f"{case.id}: grad of input {p} is {g.dtype}, input is {ours_in[p].dtype}"
        assert_close(_numpy(g), torch.zeros_like(wrt[0]) if r is None else r, tol, f"{case.id} grad of input {p}")


# ----------------------------------------------------------------------------------------------------------------
# Functions that are not tensor -> tensor ops
# ----------------------------------------------------------------------------------------------------------------


def _finfo_fill(x):
    return x + F.finfo_min(x.dtype)


@pytest.mark.parametrize("dtype", ["fp16", "fp32", "bf16", "fp64"])
def test_finfo_min_matches_torch(dtype):
    ms_dtype, torch_dtype = {"fp16": (ms.float16, torch.float16), "fp32": (ms.float32, torch.float32),
                             "bf16": (ms.bfloat16, torch.bfloat16), "fp64": (ms.float64, torch.float64)}[dtype]
    assert F.finfo_min(ms_dtype) == torch.finfo(torch_dtype).min


def test_finfo_min_is_finite_inside_jit():
    for ms_dtype in (ms.float16, ms.float32):
        out = ms.jit(_finfo_fill)(ms.Tensor(np.zeros(2), ms_dtype)).asnumpy()
        assert np.isfinite(out).all() and out[0] == F.finfo_min(ms_dtype)


@pytest.mark.parametrize("name", sorted(F.ACT2FN))
def test_get_activation_matches_hf(name):
    x = np.random.default_rng(1).standard_normal((3, 17)).astype(np.float32) * 3
    ours = F.get_activation(name)(ms.Tensor(x)).asnumpy()
    ref = hf_activations.ACT2FN[name](torch.from_numpy(x))
    assert_close(ours, ref, TOLERANCE["fp32"], name)


def test_get_activation_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="'nope' is not supported; choose one of .*'gelu'"):
        F.get_activation("nope")


def test_gumbel_softmax_draws_one_hot_samples_that_follow_the_logits():
    logits = ms.Tensor(np.log(np.array([[0.7, 0.2, 0.1]] * 4000, np.float32)))
    samples = F.gumbel_softmax(logits, 1.0, True).asnumpy()
    assert np.array_equal(samples.sum(-1), np.ones(4000)) and set(np.unique(samples)) == {0.0, 1.0}
    assert np.allclose(samples.mean(0), [0.7, 0.2, 0.1], atol=0.03)


def test_multinomial_without_replacement_draws_each_allowed_index_once():
    probs = np.array([[0.0, 0.3, 0.0, 0.7], [0.5, 0.0, 0.5, 0.0]], np.float32)
    samples = F.multinomial(ms.Tensor(probs), 2, False).asnumpy()
    np.testing.assert_array_equal(np.sort(samples, -1), [[1, 3], [0, 2]])


def _pad_loss(cotangent, x):
    return (F.pad(x, (1, 2)) * cotangent).sum()


def test_pad_gradient_is_right_on_every_run_of_a_compiled_graph():
    # ops.pad's compiled gradient was right once, then zeros or stale values (MindSpore 2.10 CPU)
    rng = np.random.default_rng(0)
    x, ct = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((2, 3, 7)).astype(np.float32)
    grad = ms.jit(ms.grad(_pad_loss, grad_position=1))
    for run in range(3):
        np.testing.assert_array_equal(grad(ms.Tensor(ct), ms.Tensor(x)).asnumpy(), ct[..., 1:5], err_msg=f"run {run}")


def _multinomial_3(probs):
    return F.multinomial(probs, 3)


@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_multinomial_never_draws_zero_probability_categories(mode):
    # MindSpore's CPU Multinomial kernel without replacement returned a zero-probability index in ~0.5% of draws
    probs = np.zeros((1000, 4096), np.float32)
    probs[:, :10] = 0.1
    sample = _multinomial_3 if mode == "pynative" else ms.jit(_multinomial_3)
    drawn = np.concatenate([sample(ms.Tensor(probs)).asnumpy() for _ in range(2)])
    assert drawn.dtype == np.int64 and drawn.shape == (2000, 3)
    assert (drawn < 10).all(), f"{(drawn >= 10).sum()} of {drawn.size} draws have probability 0"
    assert all(len(set(row)) == 3 for row in drawn), "a row drew the same index twice without replacement"


@pytest.mark.parametrize("replacement", [True, False])
def test_multinomial_frequencies_follow_probs(replacement):
    """With replacement every draw follows probs; without, the first draw of each row does."""
    probs = np.tile(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), (4000, 1))
    first = F.multinomial(ms.Tensor(probs), 2, replacement).asnumpy()[:, 0]
    np.testing.assert_allclose(np.bincount(first, minlength=4) / first.size, probs[0], atol=0.03)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_sample_categorical_follows_probs_and_never_draws_zero(dtype):
    probs = np.zeros((2000, 4096), np.float32)
    probs[:, [5, 17, 300, 4095]] = [0.1, 0.2, 0.3, 0.4]
    probs_ms = ms.Tensor(probs).astype(DTYPES[dtype][0])
    one = F.sample_categorical(probs_ms, 1, np.random.default_rng(0)).asnumpy()
    assert one.dtype == np.int64 and one.shape == (2000, 1)
    counts = {i: (one == i).mean() for i in (5, 17, 300, 4095)}
    assert sum(counts.values()) == 1.0, "drew a zero-probability index"
    np.testing.assert_allclose(list(counts.values()), [0.1, 0.2, 0.3, 0.4], atol=0.03)

    three = F.sample_categorical(probs_ms, 3, np.random.default_rng(0)).asnumpy()
    assert three.shape == (2000, 3) and np.isin(three, [5, 17, 300, 4095]).all()
    assert all(len(set(row)) == 3 for row in three), "drew an index twice (must be without replacement)"
    np.testing.assert_allclose((three[:, 0] == 4095).mean(), 0.4, atol=0.03)

    again = F.sample_categorical(probs_ms, 3, np.random.default_rng(0)).asnumpy()
    np.testing.assert_array_equal(three, again)  # the generator makes draws reproducible


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_argmax_to_numpy_matches_torch_first_maximum_and_nan(dtype):
    scores = distinct(np.random.default_rng(0), 3, 50)
    scores[1, [7, 30]] = scores[1].max() + 1  # tie: the first index wins
    scores[2, [4, 9]] = np.nan  # NaN counts as the maximum
    ours = F.argmax_to_numpy(ms.Tensor(scores).astype(DTYPES[dtype][0]))
    expected = torch.from_numpy(scores).to(DTYPES[dtype][1]).argmax(-1).numpy()
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_masked_fill_on_host_matches_torch_and_keeps_its_input(dtype):
    scores = distinct(np.random.default_rng(1), 3, 50)
    x = ms.Tensor(scores).astype(DTYPES[dtype][0])
    before = x.asnumpy().copy()
    rows = np.random.default_rng(2).random((3, 50)) < 0.3
    columns = np.zeros(50, np.bool_)
    columns[[0, 7, 49]] = True
    for mask in (ms.Tensor(rows), rows, columns):  # a tensor, a NumPy array, a (V,) mask broadcast over the rows
        ours = F.masked_fill_on_host(x, mask, float("-inf"))
        assert ours is not None and ours.dtype == x.dtype  # on CPU it applies to float dtypes
        expected = torch.from_numpy(before).masked_fill(torch.from_numpy(np.broadcast_to(mask if isinstance(
            mask, np.ndarray) else mask.asnumpy(), before.shape).copy()), float("-inf"))
        np.testing.assert_array_equal(ours.asnumpy(), expected.numpy())
        np.testing.assert_array_equal(x.asnumpy(), before)  # the input is left as it was
    assert F.masked_fill_on_host(ms.Tensor(np.zeros((2, 3), np.int32)), columns[:3], 1) is None


# ----------------------------------------------------------------------------------------------------------------
# Coverage: a public function without a case fails here
# ----------------------------------------------------------------------------------------------------------------


def public_functions():
    return sorted(name for name, obj in vars(F).items()
                  if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == F.__name__)


def test_every_public_function_has_a_case():
    covered = {c.op for c in CASES} | set(SPECIAL_TESTS)
    missing = sorted(set(public_functions()) - covered)
    assert not missing, f"backend.functional functions without a test case in {__file__}: {missing}"


def test_case_table_names_real_functions():
    unknown = sorted({c.op for c in CASES} - set(public_functions())) + [
        name for name, test in SPECIAL_TESTS.items() if test not in globals()]
    assert not unknown, f"cases for functions that do not exist: {unknown}"
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
    assert set(k[0] for k in EXPECTED_FAILURES) <= {c.id for c in CASES}, "expected failure for an unknown case"


def test_index_select_result_does_not_keep_its_input_alive():
    """`x = F.index_select(x, 0, beam_idx)` every step must free the previous `x` (with `x[beam_idx]` PyNative keeps
    it referenced from the result, and beam search's cache grew by one copy per step)."""
    index = ms.Tensor(np.array([1, 0, 0], np.int64))
    x = ms.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4)) + 0
    first = weakref.ref(x)
    for _ in range(3):
        x = F.index_select(x, 0, index)
    gc.collect()
    assert first() is None, "an earlier version of the re-indexed tensor is still alive"
    np.testing.assert_array_equal(x.asnumpy(), np.arange(12, dtype=np.float32).reshape(3, 4)[[1, 0, 0]])


def test_cross_entropy_gradient_close_to_float64():
    """The logits gradient of the loss (it scales every parameter gradient): MindSpore's CPU LogSoftmax kernel
    alone is 8.4e-6 from float64 here."""
    x = np.random.RandomState(0).randn(64, 7).astype(np.float32)
    y = np.random.RandomState(1).randint(0, 7, 64)
    exact = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    torch.nn.functional.cross_entropy(exact, torch.from_numpy(y)).backward()
    grad = ms.grad(lambda t: F.cross_entropy(t, ms.Tensor(y)))(ms.Tensor(x))
    error = np.abs(grad.asnumpy() - exact.grad.numpy()).max() / np.abs(exact.grad.numpy()).mean()
    assert error < 3e-6


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_class_weight_matches_torch(reduction):
    """torch's `weight=`: each label's term scaled, "mean" divided by the summed weights of counted labels."""
    x = np.random.RandomState(2).randn(40, 5).astype(np.float32)
    y = np.random.RandomState(3).randint(0, 5, 40)
    y[:4] = -100
    w = np.array([1.0, 0.5, 2.0, 0.1, 3.0], np.float32)
    ref = TF.cross_entropy(torch.from_numpy(x), torch.from_numpy(y), weight=torch.from_numpy(w), reduction=reduction)
    ours = F.cross_entropy(ms.Tensor(x), ms.Tensor(y), weight=ms.Tensor(w), reduction=reduction)
    np.testing.assert_allclose(ours.asnumpy(), ref.numpy(), rtol=1e-6, atol=1e-6)


def test_log_softmax_kl_div_matches_torch_and_float64_gradient():
    """torch's kl_div(log_softmax(x), target, reduction="batchmean") (zero targets contribute 0): value, the
    returned log-probabilities, and the logits gradient within torch fp32's distance of float64."""
    rng = np.random.RandomState(0)
    x = rng.randn(16, 5).astype(np.float32)
    target = rng.rand(16, 5).astype(np.float32)
    target[::3, 1] = 0.0
    exact = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    ref_loss = torch.nn.functional.kl_div(torch.log_softmax(exact, -1), torch.from_numpy(target).double(),
                                          reduction="batchmean")
    ref_loss.backward()
    logp, loss = F.log_softmax_kl_div(ms.Tensor(x), ms.Tensor(target))
    assert np.allclose(logp.asnumpy(), torch.log_softmax(exact, -1).detach().numpy(), atol=1e-6)
    assert abs(float(loss) - float(ref_loss)) < 1e-6 * abs(float(ref_loss))
    grad = ms.grad(lambda t: F.log_softmax_kl_div(t, ms.Tensor(target))[1])(ms.Tensor(x))
    error = np.abs(grad.asnumpy() - exact.grad.numpy()).max() / np.abs(exact.grad.numpy()).mean()
    assert error < 3e-6


# max relative error vs torch.optim.AdamW (default = single-tensor, fp32) over the cases below: one step on the
# weights; after 20 steps the weights, exp_avg, exp_avg_sq. Native kernel, measured: 3.4e-8 / 3.5e-8 / 0 / 0 (it
# rounds as torch's fused kernel, which the single-tensor path matches up to 1 ulp on a few weights).
# ops.AdamWeightDecay, measured: 6.9e-8 / 9.4e-7 / 2.0e-7 / 1.3e-5 (it forms 1 - beta2 in float32: 0.999 ->
# 9.99987e-4, 1.3e-5 below torch's).
_ADAMW_BOUNDS = {"native": (6e-8, 6e-8, 1e-7, 1e-7), "AdamWeightDecay": (3e-7, 3e-6, 1e-6, 2e-5)}


@pytest.mark.parametrize("path", ["native", "AdamWeightDecay"])
@pytest.mark.parametrize("lr,weight_decay,betas,eps,grad_scale", [
    (1e-3, 0.01, (0.9, 0.999), 1e-8, 1.0), (3e-3, 0.1, (0.9, 0.99), 1e-7, 0.37), (0.0, 0.1, (0.9, 0.999), 1e-8, 1.0),
    (1e-2, 0.5, (0.8, 0.95), 1e-3, 1.0), (1e-2, 0.0, (0.3, 0.9), 1e-6, 4.0)])
def test_adamw_update_matches_torch_adamw(monkeypatch, path, lr, weight_decay, betas, eps, grad_scale):
    """Per step (same weights and moments going in) and over 20 steps, against torch.optim.AdamW; gradients mix
    magnitudes 1e-6..1 so that eps and the bias corrections matter. lr=0 is HF's first warmup step; beta1 < 0.5 takes
    the other branch of torch's lerp; with grad_scale torch gets the gradient times the (float32) scale. 201 x 17
    elements: the native kernel's vector loop and its scalar tail."""
    if path == "native":
        if F._native_adamw is None:
            pytest.skip("native kernels unavailable")
    else:
        monkeypatch.setattr(F, "_native_adamw", None)
    rng = np.random.RandomState(0)
    start = rng.randn(201, 17).astype(np.float32)
    ref = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = torch.optim.AdamW([ref], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    ours = [ms.Parameter(ms.Tensor(x), name=f"adamw_{i}") for i, x in
            enumerate((start.copy(), np.zeros_like(start), np.zeros_like(start)))]
    prev_moments = [np.zeros_like(start), np.zeros_like(start)]
    bounds = _ADAMW_BOUNDS[path]
    for step in range(1, 21):
        grad = (rng.randn(*start.shape) * rng.choice([1e-6, 1e-3, 1.0], start.shape)).astype(np.float32)
        before = ref.detach().numpy().copy()
        ref.grad = torch.from_numpy(grad * np.float32(grad_scale))
        opt.step()
        expected = ref.detach().numpy()
        # one step from torch's own state
        one = [ms.Parameter(ms.Tensor(x.copy()), name=f"adamw_one_{i}") for i, x in
               enumerate((before, *prev_moments))]
        F.adamw_update_(*one, ms.Tensor(grad), lr, *betas, eps, weight_decay, step, grad_scale=grad_scale)
        scale = max(np.abs(expected).max(), 1e-12)
        assert np.abs(one[0].asnumpy() - expected).max() / scale <= bounds[0], f"step {step}"
        # the trajectory of our own state
        F.adamw_update_(*ours, ms.Tensor(grad), lr, *betas, eps, weight_decay, step, grad_scale=grad_scale)
        prev_moments = [opt.state[ref]["exp_avg"].numpy().copy(), opt.state[ref]["exp_avg_sq"].numpy().copy()]

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert rel(ours[0].asnumpy(), expected) <= bounds[1]
    assert rel(ours[1].asnumpy(), prev_moments[0]) <= bounds[2]
    assert rel(ours[2].asnumpy(), prev_moments[1]) <= bounds[3]


def test_adamw_update_uses_the_native_kernel_for_float32_on_cpu(monkeypatch):
    if F._native_adamw is None:
        pytest.skip("native kernels unavailable")
    calls = []
    real = F._native_adamw

    def spy(*args):
        calls.append(args[0].dtype)
        return real(*args)

    monkeypatch.setattr(F, "_native_adamw", spy)
    for dtype in (ms.float32, ms.float16):
        state = [ms.Parameter(ms.Tensor(np.ones((4, 3)), dtype), name=f"spy_{dtype}_{i}") for i in range(3)]
        F.adamw_update_(*state, ms.Tensor(np.ones((4, 3)), dtype), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, grad_scale=0.5)
    assert calls == [ms.float32]


@pytest.mark.parametrize("native_kernel", [True, False])
def test_adamw_update_group_equals_one_update_per_tensor(monkeypatch, native_kernel):
    """A group's update (one native call for its float32 tensors, float16 ones one by one) gives the bits of
    `adamw_update_` on each tensor; the float32 tensors take one native kernel call, all of them."""
    if native_kernel and F._native_adamw is None:
        pytest.skip("native kernels unavailable")
    if not native_kernel:
        monkeypatch.setattr(F, "_native_adamw", None)
    rng = np.random.RandomState(1)
    shapes, dtypes = [(201, 17), (5,), (64, 3), (1,), (33, 40000)], [ms.float32, ms.float32, ms.float16,
                                                                       ms.float32, ms.float32]
    starts = [[rng.randn(*s) for _ in range(3)] + [rng.randn(*s) * 1e-2] for s in shapes]

    def state(tag):
        return [[ms.Parameter(ms.Tensor(a if i != 2 else np.abs(a), d), name=f"group_{tag}_{j}_{i}")
                 for i, a in enumerate(arrays)] for j, (arrays, d) in enumerate(zip(starts, dtypes))]

    each, group = state("each"), state("group")
    calls = []
    real = F._native_adamw
    if real is not None:
        monkeypatch.setattr(F, "_native_adamw", lambda *args: calls.append(len(args)) or real(*args))
    for step in (1, 2):
        for tensors in each:
            F.adamw_update_(*tensors, 1e-3, 0.9, 0.999, 1e-8, 0.01, step, grad_scale=0.5)
        calls.clear()
        F.adamw_update_group_(*zip(*group), 1e-3, 0.9, 0.999, 1e-8, 0.01, step, grad_scale=0.5)
        if real is not None:
            assert calls == [4 * 4 + 1]
    for ours, want in zip(group, each):
        for a, b in zip(ours, want):
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_fp16_linear_with_bias_rounds_once_as_torch():
    """torch's fp16 addmm adds the bias before its one rounding; our fp16 linear gives the same bits."""
    rng = np.random.RandomState(0)
    x, w, b = (rng.randn(*s).astype(np.float16) for s in [(24, 32), (37, 32), (37,)])
    ref = TF.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(F.linear(ms.Tensor(x), ms.Tensor(w), ms.Tensor(b)).asnumpy(), ref)


def test_fp16_attention_scores_scaled_in_float32():
    """fp16 scores are scaled in float32 and stay there up to the float32 softmax: the weights are at least as close
    to the exact ones as torch's fp16 eager attention's, which round the scaled scores to fp16 once more (matching
    that rounding bit for bit left Qwen3 / Qwen3-MoE fp16 logits 1.33x torch's own fp16 error)."""
    rng = np.random.RandomState(1)
    q, k, v = ((rng.randn(2, 4, 12, 8) * scale).astype(np.float16) for scale in (4, 1, 1))
    tq, tk = torch.from_numpy(q), torch.from_numpy(k)
    torch_fp16 = torch.softmax(torch.matmul(tq, tk.transpose(-1, -2)) * 8 ** -0.5, -1, dtype=torch.float32)
    exact = torch.softmax(torch.matmul(tq.double(), tk.double().transpose(-1, -2)) * 8 ** -0.5, -1).numpy()
    _, weights = F.attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), scale=8 ** -0.5)
    ours = weights.asnumpy().astype(np.float64)
    torch_error = np.abs(torch_fp16.to(torch.float16).double().numpy() - exact)
    our_error = np.abs(ours - exact)
    assert our_error.mean() <= torch_error.mean() and our_error.max() <= torch_error.max(), \
        (our_error.mean(), torch_error.mean(), our_error.max(), torch_error.max())


def test_fully_masked_rows_follow_torch_eager_or_sdpa():
    """A query row whose keys are all masked: eager torch averages every value uniformly, torch's SDPA gives zeros;
    the other rows are the same either way."""
    rng = np.random.RandomState(0)
    q, k, v = (rng.randn(1, 2, 4, 8).astype(np.float32) for _ in range(3))
    mask = np.zeros((1, 1, 4, 4), np.float32)
    mask[..., 0, :] = np.finfo(np.float32).min  # row 0 sees nothing
    mask[..., 2, 3] = np.finfo(np.float32).min
    tq, tk, tv, tm = (torch.from_numpy(a) for a in (q, k, v, mask))
    eager = torch.softmax(tq @ tk.transpose(-1, -2) / 8 ** 0.5 + tm, -1) @ tv
    # HF hands SDPA a boolean mask (True = attend)
    sdpa = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm == 0)
    assert np.abs(sdpa[..., 0, :].numpy()).max() == 0 and np.abs(eager[..., 0, :].numpy()).max() > 0
    try:
        for mode, ref in (("eager", eager), ("sdpa", sdpa)):
            F.set_fully_masked_rows(mode)
            out, _ = F.attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), ms.Tensor(mask))
            np.testing.assert_allclose(out.asnumpy(), ref.numpy(), rtol=1e-5, atol=1e-6, err_msg=mode)
        with pytest.raises(ValueError, match="must be 'eager' or 'sdpa'"):
            F.set_fully_masked_rows("flash")
    finally:
        F.set_fully_masked_rows("eager")


# ----------------------------------------------------------------------------------------------------------------
# ONNX export forms (runtime.exporting("ONNX")): the operators MindSpore's ONNX exporter converts, same numbers
# ----------------------------------------------------------------------------------------------------------------


def test_onnx_export_forms_match_torch():
    x = np.random.RandomState(0).randn(4, 257).astype(np.float32) * 4
    t = torch.from_numpy(x)
    mask = x > 1.0
    with runtime.exporting("onnx"):
        assert runtime.export_format() == "ONNX"
        gelu = F.gelu(ms.Tensor(x)).asnumpy()
        rms = F.rms_norm(ms.Tensor(x), ms.Tensor(x[0]), 1e-6).asnumpy()
        tanh = F.tanh(ms.Tensor(x)).asnumpy()
        filled = F.masked_fill(ms.Tensor(x), ms.Tensor(mask), -5.0).asnumpy()
    assert runtime.export_format() is None
    assert np.abs(gelu - TF.gelu(t).numpy()).max() <= 2e-6
    assert np.abs(rms - _rms_ref(t, t[0], 1e-6).numpy()).max() <= 1e-5
    assert np.abs(tanh - torch.tanh(t).numpy()).max() <= 1e-4  # MindSpore's CPU Tanh kernel (onnxruntime has its own)
    np.testing.assert_array_equal(filled, np.where(mask, -5.0, x))
    with pytest.raises(ValueError, match="'MINDIR' or 'ONNX'"):
        with runtime.exporting("tflite"):
            pass


@pytest.mark.parametrize("tokens", [1, 2, 9])  # 1 * 2 < 6 and 2 * 2 < 6: gathered experts; 9 * 2 >= 6: dense
@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_routed_swiglu_experts_matches_a_per_token_loop_on_both_paths(tokens, mode):
    """HF's MoE math as a torch loop over tokens and their top-k experts, in float64: output and gradients."""
    rng = np.random.RandomState(tokens)
    experts, k, hidden, inter = 6, 2, 8, 5
    x = rng.randn(tokens, hidden).astype(np.float32)
    gate_up = rng.randn(experts, 2 * inter, hidden).astype(np.float32) * 0.3
    down = rng.randn(experts, hidden, inter).astype(np.float32) * 0.3
    index = np.stack([rng.choice(experts, k, replace=False) for _ in range(tokens)]).astype(np.int64)
    weights = rng.rand(tokens, k).astype(np.float32)

    tx, tg, td = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, gate_up, down))
    rows = []
    for t in range(tokens):
        acc = 0
        for j in range(k):
            e = int(index[t, j])
            g, u = (tg[e] @ tx[t]).split(inter)
            acc = acc + float(weights[t, j]) * (td[e] @ (TF.silu(g) * u))
        rows.append(acc)
    ref = torch.stack(rows)
    ref.sum().backward()

    def fn(x, gate_up, down):
        return F.routed_swiglu_experts(x, gate_up, down, ms.Tensor(index), ms.Tensor(weights), F.silu,
                                       ms.Tensor(np.arange(experts, dtype=np.int64)))

    def total(x, gate_up, down):
        return fn(x, gate_up, down).sum()

    grad_fn = ms.value_and_grad(total, (0, 1, 2))
    if mode == "jit":
        fn, grad_fn = ms.jit(fn), ms.jit(grad_fn)
    out = fn(ms.Tensor(x), ms.Tensor(gate_up), ms.Tensor(down))
    np.testing.assert_allclose(out.asnumpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    _, grads = grad_fn(ms.Tensor(x), ms.Tensor(gate_up), ms.Tensor(down))
    for ours, theirs in zip(grads, (tx.grad, tg.grad, td.grad)):
        np.testing.assert_allclose(ours.asnumpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("reduction,num_items", [("mean", None), ("sum", None), ("mean", 17.0)])
def test_linear_cross_entropy_matches_torch(mode, reduction, num_items):
    """Loss and gradients (hidden, weight) of the logits-free head loss equal torch's cross_entropy(linear(...)),
    ignored labels included, scaled by an outer factor (the custom backward scales by the incoming gradient)."""
    rng = np.random.RandomState(3)
    hidden = rng.randn(24, 16).astype(np.float32)
    weight = (rng.randn(301, 16) * 0.3).astype(np.float32)
    labels = rng.randint(0, 301, 24)
    labels[::5] = -100
    th, tw = torch.from_numpy(hidden).requires_grad_(), torch.from_numpy(weight).requires_grad_()
    ref = TF.cross_entropy(th @ tw.T, torch.from_numpy(labels), reduction="sum" if num_items else reduction)
    ref = ref / num_items if num_items else ref
    (ref * 3.0).backward()

    def loss_fn(h, w):
        n = None if num_items is None else ms.Tensor(num_items, ms.float32)
        return F.linear_cross_entropy(h, w, ms.Tensor(labels), reduction=reduction, num_items=n) * 3.0

    grad_fn = ms.value_and_grad(loss_fn, (0, 1))
    if mode == "graph":
        grad_fn = ms.jit(grad_fn)
    loss, (gh, gw) = grad_fn(ms.Tensor(hidden), ms.Tensor(weight))
    np.testing.assert_allclose(loss.asnumpy(), ref.item() * 3.0, rtol=1e-6)
    for ours, theirs in ((gh, th.grad), (gw, tw.grad)):
        assert np.abs(ours.asnumpy() - theirs.numpy()).max() / np.abs(theirs.numpy()).max() < 1e-5


def test_swap_axes_native_kernel_in_training_graphs():
    """Inside `runtime.training_graph` F.swap_axes runs the native copy kernel: same values and gradient as
    swapaxes."""
    from mindone.transformers.backend import native

    if native.swap_axes12_op() is None:
        pytest.skip("native kernels unavailable")
    x = np.random.RandomState(4).randn(2, 3, 5, 4).astype(np.float32)
    weight = np.random.RandomState(5).randn(3, 2, 5, 4).astype(np.float32)  # after swapping axes 0 and 1

    def fn(t):
        return (F.swap_axes(F.swap_axes(t, 0, 1), 1, 2) * ms.Tensor(weight.swapaxes(1, 2))).sum()

    def reference(t):
        return (t.swapaxes(0, 1).swapaxes(1, 2) * ms.Tensor(weight.swapaxes(1, 2))).sum()

    with runtime.training_graph():
        loss, grad = ms.jit(ms.value_and_grad(fn))(ms.Tensor(x))
    ref_loss, ref_grad = ms.value_and_grad(reference)(ms.Tensor(x))
    np.testing.assert_allclose(loss.asnumpy(), ref_loss.asnumpy(), rtol=1e-6)
    np.testing.assert_array_equal(grad.asnumpy(), ref_grad.asnumpy())
    np.testing.assert_array_equal(grad.asnumpy(), weight.swapaxes(0, 1))
