"""The elementwise and row kernels of the native library (AdamW, the GELUs, the norms and their gradients, the masked
softmax, SwapAxes12, SumOfSquares, the decode attention) split their work over the native threads (`native.set_threads`) on shapes of a
training step or an encoder forward: their outputs must equal the one-thread outputs bit for bit, including the
reductions over rows (the norms' weight gradients) and over elements (the sum of squares)."""

import ctypes
import ctypes.util
import platform
import threading

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindone.transformers.backend import native, runtime

pytestmark = pytest.mark.skipif(not runtime.is_cpu() or not native.available(),
                                reason="native kernels are CPU-only and need a compiler")


def _t(a):
    return Tensor(np.ascontiguousarray(a, dtype=np.float32))


def _with_threads(n, fn):
    previous = native.threads()
    native.set_threads(n)
    try:
        return fn()
    finally:
        native.set_threads(previous)


def _outputs(fn):
    out = fn()
    return [o.asnumpy().copy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def _assert_same_with_one_and_two_threads(fn, repeats=3):
    one = _with_threads(1, lambda: _outputs(fn))
    for _ in range(repeats):  # back-to-back jobs: a late worker must not touch the next one
        two = _with_threads(2, lambda: _outputs(fn))
        assert len(one) == len(two)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
    return one


rng = np.random.default_rng(7)
EPS = _t([1e-5])


def _grad(op, *inputs, dy, constants=()):
    """(d inputs) of sum(op(*inputs, *constants) * dy) through the kernel's own bprop."""
    return ms.grad(lambda *xs: (op(*xs, *constants) * dy).sum(), grad_position=tuple(range(len(inputs))))(*inputs)


@pytest.mark.parametrize("name", ["gelu_erf_op", "gelu_tanh_op", "quick_gelu_op"])
def test_activations_and_their_gradients(name):
    op = getattr(native, name)()
    x, dy = _t(rng.standard_normal((4, 128, 1536)) * 3), _t(rng.standard_normal((4, 128, 1536)))
    _assert_same_with_one_and_two_threads(lambda: (op(x), _grad(op, x, dy=dy)[0]))


def test_layer_norm_and_its_gradients():
    op = native.layer_norm_op()
    x, dy = _t(rng.standard_normal((8, 257, 384)) + 0.5), _t(rng.standard_normal((8, 257, 384)))
    w, b = _t(rng.standard_normal(384)), _t(rng.standard_normal(384))
    out = _assert_same_with_one_and_two_threads(
        lambda: (op(x, w, b, EPS),) + tuple(_grad(op, x, w, b, dy=dy, constants=(EPS,))))
    xd, dyd = x.asnumpy().astype(np.float64), dy.asnumpy().astype(np.float64)
    xhat = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out[2], (dyd * xhat).reshape(-1, 384).sum(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[3], dyd.reshape(-1, 384).sum(0), rtol=1e-5, atol=1e-4)


def test_rms_norm_training_gradients():
    op = native.rms_norm_training_op()
    x, dy = _t(rng.standard_normal((4, 128, 576))), _t(rng.standard_normal((4, 128, 576)))
    w = _t(rng.standard_normal(576))
    out = _assert_same_with_one_and_two_threads(
        lambda: (op(x, w, EPS),) + tuple(_grad(op, x, w, dy=dy, constants=(EPS,))))
    xd, dyd = x.asnumpy().astype(np.float64), dy.asnumpy().astype(np.float64)
    r = 1.0 / np.sqrt((xd * xd).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out[2], (dyd * xd * r).reshape(-1, 576).sum(0), rtol=1e-5, atol=1e-4)


def test_masked_softmax_and_its_gradient():
    op = native.masked_softmax_op()
    scores, dy = _t(rng.standard_normal((4, 9, 128, 128))), _t(rng.standard_normal((4, 9, 128, 128)))
    mask = _t(np.where(np.tril(np.ones((128, 128))) > 0, 0.0, -1e30)[None, None])
    scale = _t([0.125])
    _assert_same_with_one_and_two_threads(
        lambda: (op(scores, mask, scale), _grad(op, scores, dy=dy, constants=(mask, scale))[0]))


@pytest.mark.parametrize("slots, open_slots", [(1024, 700), (128, 128)])
def test_decode_attention(slots, open_slots):
    """A decode step's attention rows (batch, kv head, query row) split over the threads: GQA with 3 query rows per kv
    head, a static cache whose last slots are masked with finfo.min (not read) and a padded row."""
    op = native.decode_attention_op()
    q, k, v = (_t(rng.standard_normal(shape)) for shape in ((2, 3, 3, 64), (2, 3, slots, 64), (2, 3, slots, 64)))
    mask = np.zeros((2, 1, 1, slots), np.float32)
    mask[:, :, :, open_slots:] = np.finfo(np.float32).min
    mask[1, :, :, :5] = np.finfo(np.float32).min
    out, weights = _assert_same_with_one_and_two_threads(lambda: op(q, k, v, _t(mask), _t([0.125])))
    scores = np.einsum("bhrd,bhsd->bhrs", q.asnumpy().astype(np.float64), k.asnumpy()) * 0.125 + mask
    ref = np.exp(scores - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, np.einsum("bhrs,bhsd->bhrd", ref, v.asnumpy()), rtol=1e-4, atol=1e-5)


def test_swap_axes12():
    op = native.swap_axes12_op()
    x = rng.standard_normal((4, 128, 9, 64)).astype(np.float32)
    (out,) = _assert_same_with_one_and_two_threads(lambda: op(_t(x)))
    np.testing.assert_array_equal(out, x.swapaxes(1, 2))


@pytest.mark.parametrize("n", [1, 1000, 16384 * 40 + 5])
def test_sum_of_squares(n):
    op = native.sum_of_squares_op()
    x = rng.standard_normal(n).astype(np.float32)
    (out,) = _assert_same_with_one_and_two_threads(lambda: op(_t(x)))
    assert out.shape == (1,)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(out, (xd * xd).sum(), rtol=1e-7)  # in double, rounded once


def test_sum_of_squares_in_a_graph_and_its_gradient():
    from mindone.transformers.backend import functional as F

    def total(a, b):
        return F.sum_of_squares(a) + F.sum_of_squares(b)

    x, y = _t(rng.standard_normal((300, 576))), _t(rng.standard_normal(7))
    assert ms.jit(total)(x, y).asnumpy() == total(x, y).asnumpy()
    np.testing.assert_array_equal(ms.grad(F.sum_of_squares)(x).asnumpy(), 2 * x.asnumpy())


def test_adamw():
    from mindone.transformers.backend import functional as F

    n = 300_000 + 3
    start = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    start[2] = np.abs(start[2])
    grad = _t(rng.standard_normal(n))

    def step():
        p, m, v = (ms.Parameter(_t(a)) for a in start)
        for s in (1, 2):
            F.adamw_update_(p, m, v, grad, 1e-3, 0.9, 0.999, 1e-8, 0.01, s, grad_scale=0.5)
        return p, m, v

    _assert_same_with_one_and_two_threads(step)


def _run_gelu(x, threads):
    from mindone.transformers.backend.native_decode import _Call

    y = np.empty_like(x)
    _with_threads(threads, _Call("GeluErf", [x, y]).run)
    return y


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 floating-point mode (MXCSR)")
def test_workers_take_the_callers_denormal_mode():
    """Each thread has its own SSE mode (flush-to-zero, denormals-are-zero) and a new thread copies its creator's:
    workers started from a thread that flushes denormals must not flush them for a caller that does not, and the
    other way round. The kernel is called through ctypes on fresh Python threads, so that the calling thread is the
    one whose mode is set (MindSpore may launch its kernels on its own threads)."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))

    def set_flush(flush):
        # glibc's x86-64 fenv_t: 32 bytes, MXCSR last; FTZ is bit 15, DAZ bit 6
        env = (ctypes.c_uint32 * 8)()
        assert libm.fegetenv(env) == 0
        env[7] = env[7] | 0x8040 if flush else env[7] & ~0x8040
        assert libm.fesetenv(env) == 0

    # gelu(x) of x in [-14.5, -12.5] falls below float32's smallest normal (1.2e-38) for x < ~-13.1; denormal x too
    n = 1 << 20
    x = np.linspace(-14.5, -12.5, n, dtype=np.float32)
    x[::7] = np.float32(3e-39) * np.sign(np.arange(n)[::7] % 2 - 0.5).astype(np.float32)
    results = {}

    def on_fresh_thread(flush):
        set_flush(flush)
        tiny = np.array([1e-38], np.float32) * np.float32(0.5)  # numpy computes on this thread too
        assert (tiny[0] == 0) == flush
        results[flush] = _run_gelu(x, 1), [_run_gelu(x, 2) for _ in range(5)]

    # the first job at 2 threads may start the workers (copying the flushing thread's mode), the second reuses them
    for flush in (True, False):
        thread = threading.Thread(target=on_fresh_thread, args=(flush,))
        thread.start()
        thread.join()
        assert flush in results
    # the inputs do reach denormals: the two modes give different results at one thread
    assert np.count_nonzero(results[True][0] != results[False][0]) > 1000
    for flush, (one, twos) in results.items():
        for two in twos:
            np.testing.assert_array_equal(one, two, err_msg=f"flush-to-zero caller: {flush}")
