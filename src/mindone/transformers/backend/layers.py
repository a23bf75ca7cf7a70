"""Cells with torch's parameter names (`weight`, `bias`), so HF checkpoint keys map 1:1 onto our parameters.

MindSpore's own `nn.Embedding` names its table `embedding_table` and `nn.LayerNorm` uses `gamma`/`beta`; the
`mint.nn` versions use torch names but have no CPU kernels. These Cells use torch names and `functional` kernels.

Parameters are created in the dtype given by `default_dtype()` (see `dtype_scope`), so `from_pretrained` builds a
model directly in its target dtype. Under `mindspore.nn.utils.no_init_parameters()` no memory is allocated until
weights are loaded (a model's `post_init` still initialises every parameter, except inside from_pretrained's
loading scope).
"""

import contextlib
import math

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeUniform, Normal, One, Uniform, Zero, initializer

from . import functional as F

_DEFAULT_DTYPE = [ms.float32]


def default_dtype():
    return _DEFAULT_DTYPE[-1]


@contextlib.contextmanager
def dtype_scope(dtype):
    """Parameters created inside are of `dtype` (like torch.set_default_dtype, but scoped)."""
    _DEFAULT_DTYPE.append(dtype)
    try:
        yield
    finally:
        _DEFAULT_DTYPE.pop()


_EMPTY = [False]


@contextlib.contextmanager
def empty_parameters():
    """Parameters created inside hold no data: an empty (0,) tensor of their dtype, with their shape kept as
    `_full_shape` (ZeRO stage 3 builds a model this way and fills each rank's slices from the checkpoint)."""
    _EMPTY.append(True)
    try:
        yield
    finally:
        _EMPTY.pop()


def new_parameter(shape, init="zeros", dtype=None, name=None, requires_grad=True):
    """A Parameter of `shape` in `dtype` (default: the scope's dtype), initialised by `init` (name or Initializer)."""
    dtype = dtype if dtype is not None else default_dtype()
    if _EMPTY[-1]:
        param = Parameter(ops.zeros((0,), dtype), name=name, requires_grad=requires_grad)
        param._full_shape = tuple(int(d) for d in shape)
        return param
    return Parameter(initializer(init, tuple(shape), dtype), name=name, requires_grad=requires_grad)


class Linear(nn.Cell):
    # True when the forward is exactly F.linear(x, self.weight, self.bias) (what a fused consumer such as
    # loss_utils.causal_lm_head_loss may assume); every subclass (LoRA, ...) gets False unless it sets it itself
    is_plain_linear = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "is_plain_linear" not in cls.__dict__:
            cls.is_plain_linear = False

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # torch's default: kaiming-uniform weight, uniform(+-1/sqrt(in)) bias; models re-initialise in _init_weights
        self.weight = new_parameter((out_features, in_features), HeUniform(math.sqrt(5)), dtype)
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.bias = new_parameter((out_features,), Uniform(bound), dtype) if bias else None

    def construct(self, x):
        return F.linear(x, self.weight, self.bias)

    def extend_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _NormalWithZeroRow(Normal):
    """torch's Embedding init: N(0, 1) with the padding row zeroed (runs lazily, like any Initializer)."""

    def __init__(self, row):
        super().__init__(1.0)
        self.row = row

    def _initialize(self, arr):
        super()._initialize(arr)
        arr[self.row] = 0


class Embedding(nn.Cell):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        init = Normal(1.0) if padding_idx is None else _NormalWithZeroRow(padding_idx)
        self.weight = new_parameter((num_embeddings, embedding_dim), init, dtype)

    def construct(self, input_ids):
        return F.embedding(input_ids, self.weight, self.padding_idx)

    def extend_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}"


class LayerNorm(nn.Cell):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = new_parameter(self.normalized_shape, One(), dtype) if elementwise_affine else None
        self.bias = new_parameter(self.normalized_shape, Zero(), dtype) if elementwise_affine and bias else None

    def construct(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extend_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(nn.Cell):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def construct(self, x):
        return F.dropout(x, self.p, self.training)


class Conv1d(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 dtype=None):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * kernel_size
        self.weight = new_parameter((out_channels, in_channels // groups, kernel_size), HeUniform(math.sqrt(5)), dtype)
        self.bias = new_parameter((out_channels,), Uniform(1.0 / math.sqrt(fan_in)), dtype) if bias else None

    def construct(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 dtype=None):
        super().__init__()
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * ks[0] * ks[1]
        self.weight = new_parameter((out_channels, in_channels // groups) + ks, HeUniform(math.sqrt(5)), dtype)
        self.bias = new_parameter((out_channels,), Uniform(1.0 / math.sqrt(fan_in)), dtype) if bias else None

    def construct(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(nn.Cell):
    """torch's ConvTranspose2d (weight (C_in, C_out, kh, kw)); `functional.conv_transpose2d` runs stride == kernel
    without padding only."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, dtype=None):
        super().__init__()
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.padding = stride, padding
        # torch computes the fan-in of a transposed conv's weight from its dim 1 (out_channels)
        fan_in = out_channels * ks[0] * ks[1]
        self.weight = new_parameter((in_channels, out_channels) + ks, HeUniform(math.sqrt(5)), dtype)
        self.bias = new_parameter((out_channels,), Uniform(1.0 / math.sqrt(fan_in)), dtype) if bias else None

    def construct(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding)


class BatchNorm2d(nn.Cell):
    """torch's BatchNorm2d with its checkpoint keys (weight, bias, running_mean, running_var, num_batches_tracked).

    Evaluation normalises with the running statistics; training with the batch's, and updates the running ones
    (momentum average, unbiased variance) in place, as torch does.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = new_parameter((num_features,), One(), dtype) if affine else None
        self.bias = new_parameter((num_features,), Zero(), dtype) if affine else None
        self.running_mean = new_parameter((num_features,), Zero(), dtype, requires_grad=False)
        self.running_var = new_parameter((num_features,), One(), dtype, requires_grad=False)
        self.num_batches_tracked = new_parameter((), Zero(), ms.int64, requires_grad=False)

    def construct(self, x):
        out, mean, var = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                                      self.momentum, self.eps)
        if self.training:
            m = self.momentum
            ops.assign(self.running_mean, (1 - m) * self.running_mean + m * ops.stop_gradient(mean))
            ops.assign(self.running_var, (1 - m) * self.running_var + m * ops.stop_gradient(var))
            ops.assign_add(self.num_batches_tracked, ops.ones((), ms.int64))
        return out

    def extend_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
class GroupNorm(nn.Cell):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=None):
        super().__init__()
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = new_parameter((num_channels,), One(), dtype) if affine else None
        self.bias = new_parameter((num_channels,), Zero(), dtype) if affine else None

    def construct(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extend_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class _WeightNormParametrization(nn.Cell):
    """Holds torch's parametrization parameters: `original0` (g, the magnitude) and `original1` (v, the direction)."""

    def __init__(self, g_shape, v_shape, dtype=None):
        super().__init__()
        self.original0 = new_parameter(g_shape, One(), dtype)
        self.original1 = new_parameter(v_shape, HeUniform(math.sqrt(5)), dtype)


class _Parametrizations(nn.Cell):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight


class WeightNormConv1d(nn.Cell):
    """Conv1d under `torch.nn.utils.parametrizations.weight_norm(conv, name="weight", dim=dim)`: its parameters are
    `bias`, `parametrizations.weight.original0` (g) and `parametrizations.weight.original1` (v), as torch saves them
    (old `weight_g` / `weight_v` checkpoint names are renamed on load by `weights.renames`)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 dim=0, dtype=None):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups, self.dim = stride, padding, dilation, groups, dim
        v_shape = (out_channels, in_channels // groups, kernel_size)
        g_shape = tuple(n if axis == dim % 3 else 1 for axis, n in enumerate(v_shape))
        self.parametrizations = _Parametrizations(_WeightNormParametrization(g_shape, v_shape, dtype))
        fan_in = in_channels // groups * kernel_size
        self.bias = new_parameter((out_channels,), Uniform(1.0 / math.sqrt(fan_in)), dtype) if bias else None

    @property
    def weight(self):
        p = self.parametrizations.weight
        return F.weight_norm(p.original0, p.original1, self.dim)

    def construct(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
