"""`backend.layers` against torch.nn: parameter names and shapes, forward with copied weights (PyNative and jit,
fp32 and fp16), creation dtype (`dtype_scope`) and lazy creation under `no_init_parameters`."""

import math

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore.nn.utils import no_init_parameters

from mindone.transformers.backend import layers as L

# name -> (our layer, the torch module, input builder); same constructor arguments on both sides
LAYERS = {
    "linear": (lambda: L.Linear(8, 5), lambda: torch.nn.Linear(8, 5), lambda r: r.standard_normal((2, 3, 8))),
    "linear_no_bias": (lambda: L.Linear(8, 5, bias=False), lambda: torch.nn.Linear(8, 5, bias=False),
                       lambda r: r.standard_normal((4, 8))),
    "embedding": (lambda: L.Embedding(11, 6, padding_idx=0), lambda: torch.nn.Embedding(11, 6, padding_idx=0),
                  lambda r: r.integers(0, 11, (2, 7))),
    "layer_norm": (lambda: L.LayerNorm(16, eps=1e-12), lambda: torch.nn.LayerNorm(16, eps=1e-12),
                   lambda r: r.standard_normal((2, 3, 16)) * 2 + 1),
    "layer_norm_no_bias": (lambda: L.LayerNorm(16, bias=False), lambda: torch.nn.LayerNorm(16, bias=False),
                           lambda r: r.standard_normal((3, 16))),
    "layer_norm_no_affine": (lambda: L.LayerNorm(16, elementwise_affine=False),
                             lambda: torch.nn.LayerNorm(16, elementwise_affine=False),
                             lambda r: r.standard_normal((3, 16))),
    "conv1d": (lambda: L.Conv1d(4, 6, 3, stride=2, padding=1), lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1),
               lambda r: r.standard_normal((2, 4, 11))),
    "conv1d_groups": (lambda: L.Conv1d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False),
                      lambda: torch.nn.Conv1d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False),
                      lambda r: r.standard_normal((2, 4, 9))),
    "group_norm": (lambda: L.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6),
                   lambda r: r.standard_normal((2, 6, 7)) * 2 + 1),
    "group_norm_per_channel": (lambda: L.GroupNorm(6, 6), lambda: torch.nn.GroupNorm(6, 6),
                               lambda r: r.standard_normal((2, 6, 9))),
    # Wav2Vec2's positional convolution: grouped, padded, under weight norm over the kernel axis
    "weight_norm_conv1d": (lambda: L.WeightNormConv1d(4, 6, 5, padding=2, groups=2, dim=2),
                           lambda: torch.nn.utils.parametrizations.weight_norm(
                               torch.nn.Conv1d(4, 6, 5, padding=2, groups=2), name="weight", dim=2),
                           lambda r: r.standard_normal((2, 4, 9))),
    "conv2d": (lambda: L.Conv2d(3, 5, 3, padding=1), lambda: torch.nn.Conv2d(3, 5, 3, padding=1),
               lambda r: r.standard_normal((2, 3, 6, 6))),
    "conv2d_patches": (lambda: L.Conv2d(3, 8, (4, 2), stride=(4, 2)),
                       lambda: torch.nn.Conv2d(3, 8, (4, 2), stride=(4, 2)), lambda r: r.standard_normal((1, 3, 8, 6))),
}

DTYPES = {"fp32": (ms.float32, torch.float32, 1e-5), "fp16": (ms.float16, torch.float16, 5e-3)}


def _named_shapes(cell):
    return {name: tuple(p.shape) for name, p in cell.parameters_and_names()}


def _copy_from_torch(ours, theirs, dtype):
    """Loads the torch module's state_dict into our layer by name (the names are the contract)."""
    state = theirs.state_dict()
    for name, p in ours.parameters_and_names():
        p.set_data(ms.Tensor(state[name].to(DTYPES[dtype][1]).float().numpy()).astype(DTYPES[dtype][0]))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_parameter_names_and_shapes_match_torch(name):
    ours, theirs, _ = LAYERS[name]
    torch_shapes = {k: tuple(v.shape) for k, v in theirs().state_dict().items()}
    assert _named_shapes(ours()) == torch_shapes


def test_nested_parameter_names_are_hf_checkpoint_keys():
    class Attention(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.q_proj = L.Linear(4, 4, bias=False)
            self.norm = L.LayerNorm(4)

    class Model(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.embed_tokens = L.Embedding(10, 4)
            self.self_attn = Attention()

    names = sorted(Model().parameters_dict())
    assert names == ["embed_tokens.weight", "self_attn.norm.bias", "self_attn.norm.weight", "self_attn.q_proj.weight"]


@pytest.mark.parametrize("mode", ["pynative", "jit"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_forward_matches_torch_with_copied_weights(name, dtype, mode):
    make_ours, make_theirs, make_input = LAYERS[name]
    ms_dtype, torch_dtype, tol = DTYPES[dtype]
    torch.manual_seed(0)
    theirs = make_theirs()
    with L.dtype_scope(ms_dtype):
        ours = make_ours()
    _copy_from_torch(ours, theirs, dtype)
    x = np.asarray(make_input(np.random.default_rng(0)))
    if np.issubdtype(x.dtype, np.floating):
        x_t = torch.from_numpy(x.astype(np.float32)).to(torch_dtype).float()
        x_ms = ms.Tensor(x_t.numpy()).astype(ms_dtype)
    else:
        x_t, x_ms = torch.from_numpy(x), ms.Tensor(x)
    with torch.no_grad():
        theirs.load_state_dict({k: v.to(torch_dtype).float() for k, v in theirs.state_dict().items()})
        ref = theirs(x_t).numpy()
    out = (ms.jit(ours) if mode == "jit" else ours)(x_ms)
    assert out.dtype == ms_dtype
    got = out.astype(ms.float32).asnumpy()
    assert got.shape == ref.shape
    err = np.abs(got - ref).max() / np.abs(ref).mean()
    assert err <= tol, f"{name} {dtype} {mode}: max|diff|/mean|ref| = {err:.3g}"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_dtype_scope_creates_parameters_in_that_dtype(name):
    with L.dtype_scope(ms.float16):
        inner = LAYERS[name][0]()
        with L.dtype_scope(ms.float32):
            nested = LAYERS[name][0]()
    after = LAYERS[name][0]()
    params = [p for _, p in inner.parameters_and_names()]
    assert all(p.dtype == ms.float16 for p in params)
    assert all(p.dtype == ms.float32 for _, p in nested.parameters_and_names())
    assert all(p.dtype == ms.float32 for _, p in after.parameters_and_names())
    assert L.default_dtype() == ms.float32


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_no_init_parameters_allocates_nothing_until_set_data():
    rows, dim = 16384, 2048  # 128 MiB of float32
    before = _rss_mib()
    with no_init_parameters():
        emb = L.Embedding(rows, dim)
        lin = L.Linear(dim, 1024)
    assert _rss_mib() - before < 32, "parameters were materialised under no_init_parameters"
    assert emb.weight.has_init and lin.weight.has_init and lin.bias.has_init
    assert tuple(emb.weight.shape) == (rows, dim) and emb.weight.dtype == ms.float32

    table = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) / (rows * dim)
    emb.weight.set_data(ms.Tensor(table))
    assert not emb.weight.has_init
    ids = np.array([[0, 5, rows - 1]])
    np.testing.assert_array_equal(emb(ms.Tensor(ids)).asnumpy(), table[ids])


def test_init_follows_torch_defaults():
    torch.manual_seed(0)
    lin, emb, ln = L.Linear(256, 300), L.Embedding(500, 64, padding_idx=-498), L.LayerNorm(32)
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=sqrt(5)) and the bias both give U(-1/sqrt(in), 1/sqrt(in))
    w, b = lin.weight.asnumpy(), lin.bias.asnumpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    table = emb.weight.asnumpy()
    assert abs(table.std() - 1.0) < 0.05 and abs(table.mean()) < 0.05
    assert emb.padding_idx == 2  # negative indices count from the end, as torch
    np.testing.assert_array_equal(table[2], 0.0)  # torch zeroes the padding row
    with no_init_parameters():
        lazy = L.Embedding(500, 64, padding_idx=2)
    lazy.weight.init_data()
    np.testing.assert_array_equal(lazy.weight.asnumpy()[2], 0.0)
    np.testing.assert_array_equal(ln.weight.asnumpy(), 1.0)
    np.testing.assert_array_equal(ln.bias.asnumpy(), 0.0)


def test_dropout_only_in_training():
    drop = L.Dropout(0.5)
    x = ms.Tensor(np.ones((64, 64), np.float32))
    np.testing.assert_array_equal(drop(x).asnumpy(), 1.0)
    drop.set_train(True)
    y = drop(x).asnumpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6


def test_batch_norm2d_matches_torch_in_training_and_eval():
    """torch's keys; a training step normalises with the batch statistics and updates the running ones (momentum,
    unbiased variance, num_batches_tracked); eval then uses them."""
    ours, ref = L.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    assert sorted(n for n, _ in ours.parameters_and_names()) == sorted(ref.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 6)).astype(np.float32) * 2 + 1
    ours.set_train(True)
    ref.train()
    for _ in range(2):
        out = ours(ms.Tensor(x)).asnumpy()
        expected = ref(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(out, expected, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(ours, name).asnumpy(), getattr(ref, name).numpy(), atol=1e-6,
                                   err_msg=name)
    ours.set_train(False)
    ref.eval()
    np.testing.assert_allclose(ours(ms.Tensor(x)).asnumpy(), ref(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
