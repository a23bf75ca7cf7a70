"""The native tanh-GELU and quick-GELU kernels behind `F.gelu_tanh` / `F.quick_gelu` (`native.gelu_tanh_op`,
`native.quick_gelu_op`): forward and gradient no farther from a float64 reference than torch's own, the same in
PyNative, inside `mindspore.jit` (also in a graph returning a dict, as models return ModelOutputs) and under
`mindspore.grad`."""

import math

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import Tensor

from mindone.transformers.backend import functional as F
from mindone.transformers.backend import native, runtime

pytestmark = pytest.mark.skipif(not runtime.is_cpu() or not native.available(),
                                reason="native kernels are CPU-only and need a compiler")


def _inputs():
    rng = np.random.default_rng(0)
    grid = np.linspace(-12.0, 12.0, 24001)
    near_zero = np.linspace(-1e-3, 1e-3, 2001)
    return np.concatenate([grid, near_zero, rng.standard_normal(8000) * 3]).astype(np.float32)


def _sigmoid(a):
    """1 / (1 + exp(-a)) in float64 without overflow."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0, e) / (1.0 + e)


def _tanh_gelu_reference(x):
    xd = x.astype(np.float64)
    c = math.sqrt(2.0 / math.pi)
    s = _sigmoid(2.0 * c * (xd + 0.044715 * xd ** 3))  # 0.5 (1 + tanh(u)) = sigmoid(2u)
    return xd * s, s + xd * s * (1.0 - s) * 2.0 * c * (1.0 + 3.0 * 0.044715 * xd ** 2)


def _quick_gelu_reference(x):
    xd = x.astype(np.float64)
    s = _sigmoid(1.702 * xd)
    return xd * s, s + xd * s * (1.0 - s) * 1.702


def _torch_tanh_gelu(t):
    return torch.nn.functional.gelu(t, approximate="tanh")


def _torch_quick_gelu(t):
    return t * torch.sigmoid(1.702 * t)  # HF's QuickGELUActivation


CASES = [("gelu_tanh", F.gelu_tanh, _tanh_gelu_reference, _torch_tanh_gelu),
         ("quick_gelu", F.quick_gelu, _quick_gelu_reference, _torch_quick_gelu)]


def test_functional_activations_use_the_native_kernels():
    assert F._native_gelu_tanh is not None and F._native_quick_gelu is not None


@pytest.mark.parametrize("name,ours_fn,reference,torch_fn", CASES, ids=[c[0] for c in CASES])
def test_forward_and_gradient_errors_are_within_torchs(name, ours_fn, reference, torch_fn):
    x = _inputs()
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    ref, dref = reference(x)
    dref = dy.astype(np.float64) * dref
    ours = ours_fn(Tensor(x)).asnumpy()
    ours_grad = ms.grad(lambda t: (ours_fn(t) * Tensor(dy)).sum())(Tensor(x)).asnumpy()
    xt = torch.from_numpy(x).requires_grad_()
    theirs = torch_fn(xt)
    theirs.backward(torch.from_numpy(dy))
    ours_err, torch_err = np.abs(ours - ref).max(), np.abs(theirs.detach().numpy() - ref).max()
    assert ours_err <= torch_err, (ours_err, torch_err)
    ours_gerr, torch_gerr = np.abs(ours_grad - dref).max(), np.abs(xt.grad.numpy() - dref).max()
    assert ours_gerr <= torch_gerr, (ours_gerr, torch_gerr)


def _graph_forward(fn):
    def forward(t):
        return {"hidden": fn(t)}

    return forward


@pytest.mark.parametrize("name,ours_fn,reference,torch_fn", CASES, ids=[c[0] for c in CASES])
def test_graph_returning_a_dict_equals_pynative_with_gradient(name, ours_fn, reference, torch_fn):
    x = np.random.default_rng(2).standard_normal((3, 17, 40)).astype(np.float32) * 4
    weight = Tensor(np.random.default_rng(3).standard_normal(x.shape).astype(np.float32))

    def loss(t):
        return (ours_fn(t) * weight).sum()

    eager_y, eager_g = ours_fn(Tensor(x)), ms.grad(loss)(Tensor(x))
    jit_y = ms.jit(_graph_forward(ours_fn))(Tensor(x))["hidden"]
    jit_g = ms.jit(ms.grad(loss))(Tensor(x))
    # equal up to denormal results (|y| < 1.2e-38: the graph executor's threads may flush them to zero)
    tiny = np.finfo(np.float32).tiny
    np.testing.assert_allclose(jit_y.asnumpy(), eager_y.asnumpy(), rtol=0, atol=tiny)
    np.testing.assert_allclose(jit_g.asnumpy(), eager_g.asnumpy(), rtol=0, atol=tiny)
    # a non-contiguous input (a transposed view) gives the transposed result
    np.testing.assert_array_equal(ours_fn(Tensor(x).swapaxes(1, 2)).asnumpy(), eager_y.asnumpy().swapaxes(1, 2))


def test_exporting_keeps_mindspores_kernels():
    x = Tensor(np.linspace(-4, 4, 64, dtype=np.float32))
    with runtime.exporting("MINDIR"):
        tanh_out, quick_out = F.gelu_tanh(x).asnumpy(), F.quick_gelu(x).asnumpy()
    np.testing.assert_allclose(tanh_out, _tanh_gelu_reference(x.asnumpy())[0], atol=2e-6)
    np.testing.assert_allclose(quick_out, _quick_gelu_reference(x.asnumpy())[0], atol=2e-6)


def test_layer_norm_and_its_gradients_are_within_torchs_error_from_float64():
    """`F.layer_norm` (native LayerNormRows): output and dx / dweight / dbias no farther from a float64 reference
    than torch's float32 layer_norm, and a graph returning a dict (with the gradient graph) equals PyNative."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 17, 40)) * 3 + 2).astype(np.float32)
    w, b = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    eps = 1e-6
    assert F._native_layer_norm is not None

    def torch_run(dtype):
        leaves = [torch.from_numpy(a).to(dtype).requires_grad_() for a in (x, w, b)]
        y = torch.nn.functional.layer_norm(leaves[0], (40,), leaves[1], leaves[2], eps)
        y.backward(torch.from_numpy(dy).to(dtype))
        return [y.detach().numpy()] + [t.grad.numpy() for t in leaves]

    ref, theirs = torch_run(torch.float64), torch_run(torch.float32)

    def loss(xt, wt, bt):
        return (F.layer_norm(xt, wt, bt, eps) * Tensor(dy)).sum()

    def forward(xt, wt, bt):
        return {"y": F.layer_norm(xt, wt, bt, eps)}

    args = (Tensor(x), Tensor(w), Tensor(b))
    ours = [F.layer_norm(*args, eps).asnumpy()] + [g.asnumpy() for g in ms.grad(loss, grad_position=(0, 1, 2))(*args)]
    for name, o, t, r in zip(("y", "dx", "dweight", "dbias"), ours, theirs, ref):
        assert np.abs(o - r).max() <= np.abs(t - r).max(), name
    graph = [ms.jit(forward)(*args)["y"]] + list(ms.jit(ms.grad(loss, grad_position=(0, 1, 2)))(*args))
    for o, g in zip(ours, graph):
        np.testing.assert_array_equal(g.asnumpy(), o)


def test_rms_norm_in_a_graph_returning_a_dict_and_its_gradient_match_pynative():
    """Compiled graphs run `F.rms_norm` as the native kernel (C++ shape inference: also in a graph returning a dict),
    with a gradient composed of MindSpore's kernels; PyNative keeps the composed forward. Both agree with torch's
    float64 values to float32 rounding."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 7, 48)).astype(np.float32) * 3
    w = rng.standard_normal(48).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    eps = 1e-6

    def loss(xt, wt):
        return (F.rms_norm(xt, wt, eps) * Tensor(dy)).sum()

    def forward(xt, wt):
        return {"y": F.rms_norm(xt, wt, eps)}

    args = (Tensor(x), Tensor(w))
    eager = [F.rms_norm(*args, eps)] + list(ms.grad(loss, grad_position=(0, 1))(*args))
    graph = [ms.jit(forward)(*args)["y"]] + list(ms.jit(ms.grad(loss, grad_position=(0, 1)))(*args))
    leaves = [torch.from_numpy(a).double().requires_grad_() for a in (x, w)]
    h = leaves[0]
    y = leaves[1] * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    y.backward(torch.from_numpy(dy).double())
    ref = [y.detach().numpy(), leaves[0].grad.numpy(), leaves[1].grad.numpy()]
    for e, g, r in zip(eager, graph, ref):
        scale = np.abs(r).mean()
        assert np.abs(g.asnumpy() - r).max() <= 2e-5 * scale
        assert np.abs(g.asnumpy() - e.asnumpy()).max() <= 2e-5 * scale
