"""The native routed-SwiGLU kernel of a decode step (`native.routed_swiglu_op`, used by
`F.routed_swiglu_experts` inside generate()'s compiled steps): equal to a float64 loop over tokens and their experts,
and dispatched only where it may be (few tokens, float32, SiLU, a graph traced inside `runtime.native_ops_in_graph`)."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindone.transformers.backend import functional as F
from mindone.transformers.backend import native, runtime

pytestmark = pytest.mark.skipif(not (runtime.is_cpu() and native.available()), reason="native CPU kernels only")


def _problem(tokens, experts=6, k=2, hidden=70, inter=33, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(tokens, hidden).astype(np.float32)
    gate_up = (rng.randn(experts, 2 * inter, hidden) * 0.3).astype(np.float32)
    down = (rng.randn(experts, hidden, inter) * 0.3).astype(np.float32)
    index = np.stack([rng.choice(experts, k, replace=False) for _ in range(tokens)]).astype(np.int64)
    weights = rng.rand(tokens, k).astype(np.float32)
    return x, gate_up, down, index, weights


def _reference(x, gate_up, down, index, weights):
    """HF's math in float64: sum over each token's top-k experts e of weight * down_e(silu(gate_e x) * up_e x)."""
    inter = down.shape[-1]
    out = np.zeros(x.shape, np.float64)
    for t in range(x.shape[0]):
        for j in range(index.shape[1]):
            e = index[t, j]
            gu = gate_up[e].astype(np.float64) @ x[t].astype(np.float64)
            g, u = gu[:inter], gu[inter:]
            out[t] += weights[t, j] * (down[e].astype(np.float64) @ (g / (1 + np.exp(-g)) * u))
    return out


@pytest.mark.parametrize("tokens", [1, 2])
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_routed_swiglu_kernel_matches_float64(tokens, index_dtype, mode):
    x, gate_up, down, index, weights = _problem(tokens, seed=tokens)
    op = native.routed_swiglu_op()

    def run(*args):
        return op(*args)

    fn = ms.jit(run) if mode == "jit" else run
    out = fn(ms.Tensor(x), ms.Tensor(gate_up), ms.Tensor(down), ms.Tensor(index.astype(index_dtype)),
             ms.Tensor(weights)).asnumpy()
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(x, gate_up, down, index, weights), rtol=1e-5, atol=1e-5)


def test_routed_swiglu_kernel_rejects_an_expert_index_out_of_range():
    x, gate_up, down, index, weights = _problem(1)
    index[0, 1] = 6  # 6 experts: 0..5
    with pytest.raises(RuntimeError):
        native.routed_swiglu_op()(ms.Tensor(x), ms.Tensor(gate_up), ms.Tensor(down), ms.Tensor(index),
                                  ms.Tensor(weights)).asnumpy()


@pytest.mark.parametrize("tokens", [1, 2])
def test_compiled_decode_experts_equal_the_mindspore_route(tokens):
    """Inside `native_ops_in_graph` (generate()'s compiled steps) the kernel replaces the gather + batched matmuls:
    same output as the MindSpore route traced outside it (float32 summation order aside)."""
    x, gate_up, down, index, weights = _problem(tokens, seed=10 + tokens)
    args = [ms.Tensor(a) for a in (x, gate_up, down, index, weights)]
    ids = ms.Tensor(np.arange(gate_up.shape[0], dtype=np.int64))

    def fn(x, gate_up, down, index, weights):
        return F.routed_swiglu_experts(x, gate_up, down, index, weights, F.silu, ids)

    mindspore_route = ms.jit(fn)(*args).asnumpy()

    def fn_native(x, gate_up, down, index, weights):  # a new function: a new graph, traced inside the block
        return F.routed_swiglu_experts(x, gate_up, down, index, weights, F.silu, ids)

    with runtime.native_ops_in_graph():
        native_route = ms.jit(fn_native)(*args).asnumpy()
    np.testing.assert_allclose(native_route, mindspore_route, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(native_route, _reference(x, gate_up, down, index, weights), rtol=1e-5, atol=1e-5)


class _Marker(nn.Cell):
    """Stands in for the kernel: returns -7 everywhere, so the output shows which route ran."""

    def construct(self, x, gate_up, down, index, weights):
        return x * 0.0 - 7.0


@pytest.mark.parametrize("tokens,act,dtype,in_block,expected", [
    (1, "silu", ms.float32, True, True),
    (2, "silu", ms.float32, True, True),   # 2 tokens * top-2 < 6 experts: still the few-token case
    (3, "silu", ms.float32, True, False),  # 3 * 2 = 6 experts: the dense route (prefill)
    (1, "gelu", ms.float32, True, False),  # the kernel is SiLU's
    (1, "silu", ms.float16, True, False),  # float32 only
    (1, "silu", ms.float32, False, False),  # a user's own jit (may be differentiated): MindSpore's route
])
def test_kernel_is_dispatched_only_for_compiled_float32_silu_decode(monkeypatch, tokens, act, dtype, in_block,
                                                                    expected):
    monkeypatch.setattr(F, "_native_routed_swiglu", _Marker())
    x, gate_up, down, index, weights = _problem(tokens, hidden=8, inter=5)
    args = [ms.Tensor(x).astype(dtype), ms.Tensor(gate_up).astype(dtype), ms.Tensor(down).astype(dtype),
            ms.Tensor(index), ms.Tensor(weights)]
    act_fn, ids = F.get_activation(act), ms.Tensor(np.arange(6, dtype=np.int64))

    def fn(x, gate_up, down, index, weights):
        return F.routed_swiglu_experts(x, gate_up, down, index, weights, act_fn, ids)

    if in_block:
        with runtime.native_ops_in_graph():
            out = ms.jit(fn)(*args).asnumpy()
    else:
        out = ms.jit(fn)(*args).asnumpy()
    assert bool(np.all(out == -7.0)) is expected
    # PyNative (training, dynamic-cache decoding) never takes the kernel: it has no gradient
    assert not np.all(fn(*args).asnumpy() == -7.0)
