"""The native CPU kernels (`backend.native`): built on this machine, numerically equal to float64 references,
used by `F.linear` for one float32 row, and replaced by MindSpore's kernels when disabled."""

import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import torch

from mindone.transformers.backend import functional as F
from mindone.transformers.backend import native, runtime

pytestmark = pytest.mark.skipif(not runtime.is_cpu(), reason="native kernels are CPU-only")


def test_library_builds_where_a_compiler_exists():
    # this machine (and CI) has a C++ compiler: a failed build must fail here, not silently fall back
    assert native._compiler() is not None
    assert native.available(), "native kernels did not build (see the warning logged by backend.native)"
    assert os.path.dirname(native.library_path()) == native.cache_dir()


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 300, 70), (1, 7, 50), (1, 9, 60), (1, 1000, 576), (3, 257, 129),
                                   (2, 64, 64)])
@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_linear_nt_matches_float64(m, n, k, mode):
    rng = np.random.default_rng(m * 1000 + n + k)
    x, w = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
    op = native.linear_nt_op()

    def run(a, b):
        return op(a, b)

    fn = ms.jit(run) if mode == "jit" else run
    out = fn(ms.Tensor(x), ms.Tensor(w)).asnumpy()
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    assert out.shape == (m, n) and out.dtype == np.float32
    # float32 accumulation of k products: |error| <= ~k * eps * sum|x*w|
    bound = 4 * k * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(w).T) + 1e-30
    assert np.all(np.abs(out - ref) <= bound), np.abs(out - ref).max()


def test_linear_nt_gradient_matches_matmul():
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((1, 70)).astype(np.float32))
    w = ms.Tensor(rng.standard_normal((30, 70)).astype(np.float32))
    cot = ms.Tensor(rng.standard_normal((1, 30)).astype(np.float32))
    op = native.linear_nt_op()

    def native_loss(a, b):
        return (op(a, b) * cot).sum()

    def matmul_loss(a, b):
        return (ms.ops.matmul(a, b.T) * cot).sum()

    got = ms.grad(native_loss, grad_position=(0, 1))(x, w)
    want = ms.grad(matmul_loss, grad_position=(0, 1))(x, w)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g.asnumpy(), r.asnumpy(), rtol=1e-6, atol=1e-6)


def test_f_linear_uses_the_native_kernel_for_one_float32_row(monkeypatch):
    calls = []
    real = F._native_linear_nt

    def spy(x, w):
        calls.append(x.shape)
        return real(x, w)

    monkeypatch.setattr(F, "_native_linear_nt", spy)
    w = ms.Tensor(np.ones((5, 8), np.float32))
    F.linear(ms.Tensor(np.ones((1, 1, 8), np.float32)), w)
    F.linear(ms.Tensor(np.ones((2, 8), np.float32)), w)  # two rows: MatMul
    F.linear(ms.Tensor(np.ones((1, 8), np.float16)), w.astype(ms.float16))  # float16: MatMul
    assert calls == [(1, 8)]


@pytest.mark.parametrize("shape", [(1,), (37,), (300, 33)])
@pytest.mark.parametrize("betas,grad_scale", [((0.9, 0.999), 1.0), ((0.3, 0.95), 0.37)])
def test_adamw_matches_torch_fused_adamw(shape, betas, grad_scale):
    """The kernel through F.adamw_update_ against torch.optim.AdamW(fused=True) over 5 steps: the same float32
    rounding (measured: identical weights and exp_avg; exp_avg_sq 1 ulp apart on 0-3 elements per case, e.g. the
    single element of shape (1,), max 9.2e-8 of the largest entry). Sizes below and past a vector width exercise
    the scalar tail."""
    assert F._native_adamw is not None
    rng = np.random.default_rng(sum(shape))
    start = rng.standard_normal(shape).astype(np.float32)
    ref = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = torch.optim.AdamW([ref], lr=3e-3, betas=betas, eps=1e-7, weight_decay=0.1, fused=True)
    ours = [ms.Parameter(ms.Tensor(x), name=f"fused_{i}") for i, x in
            enumerate((start.copy(), np.zeros_like(start), np.zeros_like(start)))]
    for step in range(1, 6):
        grad = (rng.standard_normal(shape) * rng.choice([1e-6, 1e-3, 1.0], shape)).astype(np.float32)
        ref.grad = torch.from_numpy(grad * np.float32(grad_scale))
        opt.step()
        F.adamw_update_(*ours, ms.Tensor(grad), 3e-3, *betas, 1e-7, 0.1, step, grad_scale=grad_scale)
    state = opt.state[ref]
    for got, want in zip(ours, (ref.detach(), state["exp_avg"], state["exp_avg_sq"])):
        want = want.numpy()
        assert np.abs(got.asnumpy() - want).max() <= 1.2e-7 * np.abs(want).max()  # 1 ulp of the largest entry


def test_disabled_by_environment_variable():
    code = ("from mindone.transformers.backend import native, functional as F; "
            "assert not native.available() and F._native_linear_nt is None and F._native_adamw is None; print('ok')")
    env = dict(os.environ, MINDONE_TRANSFORMERS_NATIVE_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_build_failure_names_the_source_and_leaves_no_partial_file(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", str(broken))
    monkeypatch.setenv("MINDONE_TRANSFORMERS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="broken.cc"):
        native._build(native._compiler())
    assert not any(p.suffix == ".so" for p in (tmp_path / "cache" / "kernels").iterdir())  # temp files removed


def test_native_ops_enter_graphs_only_inside_native_ops_in_graph():
    """A jit function returning a dict fails on a native custom op ("The prim is not a PrimitivePy"): outside
    `runtime.native_ops_in_graph` F.attention must trace MindSpore's matmuls there (and match PyNative's native
    result); inside, the native loops are traced (generate()'s compiled decode steps return a tensor)."""
    if not native.available():
        pytest.skip("native kernels unavailable")
    rng = np.random.RandomState(0)
    q, k, v = (ms.Tensor(rng.randn(1, 2, 1, 8).astype(np.float32)) for _ in range(3))

    def as_dict(q, k, v):
        return {"out": F.attention(q, k, v)[0]}

    eager = F.attention(q, k, v)[0].asnumpy()
    np.testing.assert_allclose(ms.jit(as_dict)(q, k, v)["out"].asnumpy(), eager, rtol=1e-6, atol=1e-7)
    def as_dict_again(q, k, v):  # a new function: a new graph, traced inside the block
        return {"out": F.attention(q, k, v)[0]}

    with runtime.native_ops_in_graph():
        with pytest.raises(RuntimeError, match="PrimitivePy"):
            ms.jit(as_dict_again)(q, k, v)
