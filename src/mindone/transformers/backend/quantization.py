"""Weight-only quantized linear layers: int8 / int4 weights packed in groups, float activations.

Formats (one row of W (out_features N, in_features K) is cut into groups of `group_size` G consecutive elements, G
a multiple of 32 dividing K; every group has a scale, and for int4 an offset "min", float32 or, as GGUF stores them,
float16):

    int8: weight_packed int8 (N, K),       W = weight_scale * q                 symmetric, q in [-127, 127]
    int4: weight_packed uint8 (N, K / 2),  W = weight_scale * q + weight_min     asymmetric, q in [0, 15]

The int4 nibbles are in GGUF's Q4 block order: per 32-element chunk of a row, byte j (0..15) holds element j in its
low nibble and element j + 16 in its high nibble. With G = 32 these are exactly llama.cpp's Q8_0 (int8), Q4_0 and
Q4_1 (int4: Q4_0's d * (q - 8) is scale d, min -8 d) blocks with their float16 scales, so a GGUF file's blocks are
used as stored (`keep_quantized=True`: 20 bytes per Q4_1 block of 32 streamed by a decode step, as llama.cpp); Q4_K's
32-element sub-blocks map the same way (float32 scales: its 6-bit sub-scales multiplied out).

`QuantizedLinear.construct` multiplies with the native kernels of `backend.native` (`quantized_linear_op`: the
packed weights are read directly, 4x / 8x less memory traffic than float32) for up to `DIRECT_ROWS` rows of x (the
decode step), and otherwise dequantises W (native kernel, else MindSpore ops) and uses MatMul. Those routes compute
x @ dequantize(W)^T in float32 and agree up to float32 summation order. By default the decode-step kernels first
round each row of x to int8 blocks of 32 and multiply integers (llama.cpp's method, `activation_quantization()`:
slightly different numbers, within 1% perplexity on SmolLM2); MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS=float keeps
the exact ones.
"""

import logging
import os

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from . import functional as F
from . import native, runtime

logger = logging.getLogger(__name__)

BITS = {"int8": 8, "int4": 4}
DEFAULT_GROUP_SIZE = 32
# rows of x up to which the kernels read the packed weights directly (each row re-decodes the weights); above,
# dequantising once and a MatMul are faster (prefill)
DIRECT_ROWS = 4
# quant_method written into config.json by save_pretrained (this library's format, not optimum-quanto's)
QUANT_METHOD = "mindone_weight_only"

_matmul_nt = ops.MatMul(transpose_b=True)
# the native primitives (None without native kernels), made once: jit graphs call them as constants
_DIRECT = {bits: native.quantized_linear_op(bits) for bits in (8, 4)}
_DEQUANTIZE = {bits: native.dequantize_op(bits) for bits in (8, 4)}
_DIRECT3 = {bits: native.quantized_linear3_op(bits) for bits in (8, 4)}
_SILU_GATE_UP = {bits: native.silu_gate_up_op(bits) for bits in (8, 4)}
# the same with x rounded to int8 blocks (llama.cpp's method; activation_quantization() == "q8")
_DIRECT_Q8 = {bits: native.quantized_linear_q8_op(bits) for bits in (8, 4)}
_DIRECT3_Q8 = {bits: native.quantized_linear3_q8_op(bits) for bits in (8, 4)}
_SILU_GATE_UP_Q8 = {bits: native.silu_gate_up_q8_op(bits) for bits in (8, 4)}
_MLP_RESIDUAL_Q8 = {bits: native.mlp_residual_q8_op(bits) for bits in (8, 4)}
# a Llama-style decoder layer's decode step in two calls (fused_decoder_layer_ok)
_ATTENTION_INPUT_Q8 = {bits: native.attention_input_q8_op(bits) for bits in (8, 4)}
_ATTENTION_OUTPUT_MLP_Q8 = {bits: native.attention_output_mlp_q8_op(bits) for bits in (8, 4)}
_ATTENTION_INPUT_CACHE_Q8 = {bits: native.attention_input_cache_q8_op(bits) for bits in (8, 4)}
ACTIVATIONS_ENV = "MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS"


def activation_quantization() -> str:
    """How the decode-step kernels (few rows of x, native kernels) treat the activations, from the environment
    variable MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS: "q8" (default) rounds each row of x to int8 in blocks of 32
    and multiplies integers (llama.cpp's method: faster, slightly different numbers), "float" keeps x float32 (the
    exact product x @ dequantize(W)^T). Read when a graph is traced (the compiled-graph cache keys on it); prefill
    (more rows) always multiplies float32 x by the dequantised weights."""
    value = os.environ.get(ACTIVATIONS_ENV, "q8").strip().lower()
    if value not in ("q8", "float"):
        raise ValueError(f"{ACTIVATIONS_ENV}={value!r}: expected 'q8' or 'float'")
    return value


def _kernel(bits, exact, q8):
    """The decode-step kernel of `bits` from the exact table or its int8-activation twin, per
    `activation_quantization()`."""
    return q8[bits] if activation_quantization() == "q8" else exact[bits]


# --- NumPy: packing, quantisation, dequantisation ---------------------------------------------------------------------


def pack_int4(values: np.ndarray) -> np.ndarray:
    """(N, K) integers in [0, 15] -> (N, K / 2) uint8 in GGUF's Q4 nibble order (K a multiple of 32)."""
    n, k = values.shape
    chunks = values.astype(np.uint8).reshape(n, k // 32, 2, 16)
    return (chunks[:, :, 0] | (chunks[:, :, 1] << 4)).reshape(n, k // 2)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """Inverse of `pack_int4`: (N, K / 2) uint8 -> (N, K) uint8 in [0, 15]."""
    n, half = packed.shape
    chunks = packed.reshape(n, half // 16, 1, 16)
    return np.concatenate([chunks & 15, chunks >> 4], axis=2).reshape(n, half * 2)


def quantize_numpy(weight: np.ndarray, bits: int, group_size: int) -> dict:
    """{"weight_packed", "weight_scale"[, "weight_min"]} of a float (N, K) weight, groups of `group_size` along K.

    int8: scale = max|w| / 127, q = round(w / scale) (Q8_0's rule); int4: min = group minimum,
    scale = (max - min) / 15, q = round((w - min) / scale) clipped to [0, 15] (Q4_1's rule). A group of zeros gets
    scale 0 (and q 0)."""
    n, k = weight.shape
    w = np.asarray(weight, dtype=np.float32).reshape(n, k // group_size, group_size)
    if bits == 8:
        scale = np.abs(w).max(axis=-1) / np.float32(127)
        inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
        q = np.clip(np.rint(w * inv[..., None]), -127, 127).astype(np.int8).reshape(n, k)
        return {"weight_packed": q, "weight_scale": scale.astype(np.float32)}
    low, high = w.min(axis=-1), w.max(axis=-1)
    scale = (high - low) / np.float32(15)
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    q = np.clip(np.rint((w - low[..., None]) * inv[..., None]), 0, 15).reshape(n, k)
    return {"weight_packed": pack_int4(q), "weight_scale": scale.astype(np.float32),
            "weight_min": low.astype(np.float32)}


def dequantize_numpy(bits: int, packed: np.ndarray, scale: np.ndarray, mins=None) -> np.ndarray:
    """The float32 (N, K) weight a packed one stands for, rounded as the kernels round (scale * q, then + min)."""
    q = packed.astype(np.float32) if bits == 8 else unpack_int4(packed).astype(np.float32)
    n, k = q.shape
    groups = scale.shape[1]
    w = q.reshape(n, groups, k // groups) * scale[..., None].astype(np.float32)
    if bits == 4:
        w = w + mins[..., None].astype(np.float32)
    return w.reshape(n, k)


# --- MindSpore: the op and the layer ----------------------------------------------------------------------------------


def _dequantize_ms(bits, packed, scale, mins):
    """dequantize_numpy with MindSpore ops (the route without native kernels)."""
    n, groups = scale.shape
    if bits == 8:
        q = packed.astype(ms.float32)
    else:
        b = packed.astype(ms.float32).reshape(n, -1, 16)
        high = ops.floor(b / 16.0)
        q = ops.concat((b - high * 16.0, high), -1)
    w = q.reshape(n, groups, -1) * scale.astype(ms.float32).reshape(n, groups, 1)
    if bits == 4:
        w = w + mins.astype(ms.float32).reshape(n, groups, 1)
    return w.reshape(n, -1)


def quantized_linear(x, packed, scale, mins, bias, bits):
    """y = x @ W^T + bias with W given packed (see the module docstring); float32 arithmetic, output in x's dtype."""
    shape = x.shape
    dtype = x.dtype
    x = x.reshape(-1, shape[-1])
    if dtype != ms.float32:
        x = x.astype(ms.float32)
    args = (packed, scale) if bits == 8 else (packed, scale, mins)
    native_ok = runtime.native_ops_allowed()  # in graphs only generate()'s compiled steps (runtime.native_ops_in_graph)
    direct = _kernel(bits, _DIRECT, _DIRECT_Q8) if native_ok else None
    if direct is not None and x.shape[0] <= DIRECT_ROWS:
        out = direct(x, *args)
    else:
        dequantize = _DEQUANTIZE[bits] if native_ok else None
        weight = dequantize(*args) if dequantize is not None else _dequantize_ms(bits, packed, scale, mins)
        out = _matmul_nt(x, weight)
    if bias is not None:
        out = out + bias.astype(ms.float32)
    if dtype != ms.float32:
        out = out.astype(dtype)
    return out.reshape(shape[:-1] + (packed.shape[0],))


class QuantizedLinear(nn.Cell):
    """A `layers.Linear` whose weight is stored packed (int8 or int4, see the module docstring); inference only.

    Parameters (checkpoint keys): `weight_packed`, `weight_scale`, `weight_min` (int4 only), `bias` (float, as the
    Linear's). Created empty (filled by `load_packed` or by from_pretrained's checkpoint loading)."""

    def __init__(self, in_features, out_features, bias=True, bits=4, group_size=DEFAULT_GROUP_SIZE,
                 bias_dtype=ms.float32):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"QuantizedLinear: bits must be 4 or 8, got {bits}")
        if group_size <= 0 or group_size % 32 or in_features % group_size:
            raise ValueError(f"QuantizedLinear: group_size {group_size} must be a positive multiple of 32 dividing "
                             f"in_features {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        groups = in_features // group_size
        packed_shape = (out_features, in_features if bits == 8 else in_features // 2)
        self.weight_packed = Parameter(Tensor(np.zeros(packed_shape, np.int8 if bits == 8 else np.uint8)),
                                       name="weight_packed", requires_grad=False)
        self.weight_scale = Parameter(Tensor(np.zeros((out_features, groups), np.float32)), name="weight_scale",
                                      requires_grad=False)
        self.weight_min = (Parameter(Tensor(np.zeros((out_features, groups), np.float32)), name="weight_min",
                                     requires_grad=False) if bits == 4 else None)
        self.bias = (Parameter(Tensor(np.zeros((out_features,), ms.dtype_to_nptype(bias_dtype))), name="bias",
                               requires_grad=False) if bias else None)

    def construct(self, x):
        return quantized_linear(x, self.weight_packed, self.weight_scale, self.weight_min, self.bias, self.bits)

    def load_packed(self, arrays: dict, bias=None):
        """Fills the parameters from {"weight_packed", "weight_scale"[, "weight_min"]} NumPy arrays."""
        for name in ("weight_packed", "weight_scale", "weight_min"):
            param = getattr(self, name)
            if param is None:
                continue
            value = np.ascontiguousarray(arrays[name])
            if value.shape != tuple(param.shape):
                raise ValueError(f"QuantizedLinear.{name}: got shape {value.shape}, expected {tuple(param.shape)}")
            self.set_packed(name, value)
        if bias is not None and self.bias is not None:
            self.bias.set_data(Tensor.from_numpy(np.ascontiguousarray(bias, ms.dtype_to_nptype(self.bias.dtype))))

    def set_packed(self, name: str, value: np.ndarray):
        """Sets one of the packed parameters from a NumPy array of its shape. Scales / mins keep the array's dtype,
        float16 (GGUF's own, or a saved model's: the kernels widen them as they read, fewer bytes per decode step) or
        float32 (set_data would cast them to the Parameter's dtype)."""
        param = getattr(self, name)
        if name != "weight_packed" and value.dtype in (np.float16, np.float32) and \
                value.dtype != ms.dtype_to_nptype(param.dtype):
            setattr(self, name, Parameter(Tensor.from_numpy(np.ascontiguousarray(value)), name=param.name,
                                          requires_grad=False))
        else:
            param.set_data(Tensor.from_numpy(np.ascontiguousarray(value, ms.dtype_to_nptype(param.dtype))))

    def dequantized_weight(self) -> np.ndarray:
        mins = self.weight_min.asnumpy() if self.weight_min is not None else None
        return dequantize_numpy(self.bits, self.weight_packed.asnumpy(), self.weight_scale.asnumpy(), mins)

    def extend_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weights=int{self.bits}, group_size={self.group_size}")


# --- fused products of a decode step --------------------------------------------------------------------------------
# A model whose projections are all QuantizedLinear (same bits and group size) is marked by
# `mark_fusable_projections` after quantization; its construct then calls these, which run one native kernel for
# the whole group when `quantized_linear` would read the packed weights directly (few rows, native kernels allowed),
# else the layers one by one. Same values as the separate layers (the same per-row kernels).


def _packed_args(cell):
    return (cell.weight_packed, cell.weight_scale) if cell.bits == 8 else (cell.weight_packed, cell.weight_scale,
                                                                           cell.weight_min)


def _direct_rows(x, bits, table):
    # the (constant) permission first, as quantized_linear: a dynamic row count would not decide while tracing
    if not (runtime.native_ops_allowed() and table[bits] is not None and x.dtype == ms.float32):
        return False
    rows = 1
    for size in x.shape[:-1]:
        rows *= size
    return rows <= DIRECT_ROWS


def fused_projections(x, first, second, third):
    """(first(x), second(x), third(x)) for three QuantizedLinear cells of the same bits and group size (attention's
    q / k / v projections; biases added after): one kernel call for a decode step's rows. float32 x."""
    if _direct_rows(x, first.bits, _DIRECT3):
        shape = x.shape
        outs = _kernel(first.bits, _DIRECT3, _DIRECT3_Q8)(x.reshape(-1, shape[-1]), *_packed_args(first), *_packed_args(second),
                                    *_packed_args(third))
        return tuple(_add_bias(out, cell.bias).reshape(shape[:-1] + (cell.out_features,))
                     for out, cell in zip(outs, (first, second, third)))
    return first(x), second(x), third(x)


def _add_bias(out, bias):
    return out if bias is None else out + bias.astype(ms.float32)


def fused_silu_gate_up(x, gate, up, act_fn):
    """act_fn(gate(x)) * up(x) for two QuantizedLinear cells of the same shape, bits and group size without bias,
    act_fn SiLU (a SwiGLU MLP): one kernel call for a decode step's rows. float32 x."""
    if _direct_rows(x, gate.bits, _SILU_GATE_UP):
        shape = x.shape
        out = _kernel(gate.bits, _SILU_GATE_UP, _SILU_GATE_UP_Q8)(x.reshape(-1, shape[-1]), *_packed_args(gate), *_packed_args(up))
        return out.reshape(shape[:-1] + (gate.out_features,))
    return act_fn(gate(x)) * up(x)


def fused_mlp_residual(x, mlp, residual):
    """residual + mlp(x) for a SwiGLU MLP cell whose gate / up / down projections are QuantizedLinear cells of one
    bits without bias (flag `fuse_quantized_mlp`): one kernel call (`native.mlp_residual_q8_op`) for a decode step's
    rows when the activations are quantized (activation_quantization() == "q8"), else the MLP then the add. float32
    x and residual."""
    gate = mlp.gate_proj
    if activation_quantization() == "q8" and _direct_rows(x, gate.bits, _MLP_RESIDUAL_Q8) \
            and residual.dtype == ms.float32:
        shape = x.shape
        out = _MLP_RESIDUAL_Q8[gate.bits](x.reshape(-1, shape[-1]), *_packed_args(gate), *_packed_args(mlp.up_proj),
                                          *_packed_args(mlp.down_proj), residual.reshape(-1, shape[-1]))
        return out.reshape(shape)
    return residual + mlp(x)


# --- a decoder layer's decode step in two kernel calls (flag `fuse_quantized_layer`) --------------------------------
# input RMSNorm + q / k / v + RoPE (one call, which also writes a static cache's keys / values; other caches update
# with MindSpore ops between the calls), then attention + o_proj + residual + post-attention RMSNorm + MLP + residual
# (one call): ~11 launches per layer -> 2 in a SmolLM2 decode step.


def fused_decoder_layer_ok(layer, hidden_states, position_embeddings, attention_mask, output_attentions=False):
    """Whether a decoder layer flagged `fuse_quantized_layer` runs `fused_attention_input` /
    `fused_attention_output_mlp` for this call: int8 activations (activation_quantization() == "q8"), native ops
    allowed (PyNative, or generate()'s compiled steps in a graph), not training, no attention weights requested,
    float32 hidden states and rotations, few rows (<= DIRECT_ROWS, a decode step), a 4-D additive mask the decode
    attention kernel takes, and the eager answer for fully masked rows. Decided while tracing (shapes and flags
    only)."""
    bits = layer.self_attn.q_proj.bits
    if not (layer.fuse_quantized_layer and not layer.training and not output_attentions
            and activation_quantization() == "q8" and runtime.native_ops_allowed()
            and _ATTENTION_INPUT_Q8[bits] is not None and _ATTENTION_OUTPUT_MLP_Q8[bits] is not None
            and F._FULLY_MASKED_ROWS == "eager" and attention_mask is not None):
        return False
    query_rotation, key_rotation = position_embeddings
    if not (hidden_states.dtype == ms.float32 and hidden_states.ndim == 3 and query_rotation.dtype == ms.float32
            and key_rotation.dtype == ms.float32 and query_rotation.ndim == 4
            and query_rotation.shape == key_rotation.shape):
        return False
    batch, seq_len = hidden_states.shape[0], hidden_states.shape[1]
    if batch * seq_len > DIRECT_ROWS or query_rotation.shape[0] not in (1, batch) \
            or query_rotation.shape[1] != seq_len or query_rotation.shape[-1] != layer.self_attn.head_dim:
        return False
    return F._decode_mask_ok(attention_mask, batch, layer.self_attn.num_heads, seq_len, attention_mask.shape[-1])


def fused_attention_input(layer, hidden_states, position_embeddings):
    """(query (B, H, S, D), key, value (B, Hk, S, D)) of `layer.input_layernorm(hidden_states)` through the attention's
    q / k / v projections and RoPE, in one native call (`native.attention_input_q8_op`); only where
    `fused_decoder_layer_ok` holds."""
    return _ATTENTION_INPUT_Q8[layer.self_attn.q_proj.bits](*_attention_input_args(layer, hidden_states,
                                                                                  position_embeddings))


def _attention_input_args(layer, hidden_states, position_embeddings):
    """The inputs both attention-input kernels start with: x, the input norm's weight and eps, the packed q / k / v
    weights and the two rotations."""
    attn, norm = layer.self_attn, layer.input_layernorm
    query_rotation, key_rotation = position_embeddings
    return (hidden_states, norm.weight, ms.Tensor([norm.variance_epsilon], ms.float32), *_packed_args(attn.q_proj),
            *_packed_args(attn.k_proj), *_packed_args(attn.v_proj), query_rotation, key_rotation)


def fused_cache_write_ok(layer, hidden_states, key_storage, value_storage, cache_position, attention_mask):
    """Whether `fused_attention_input_to_cache` can write this step's keys / values into a static cache's storage
    (float32 (B, Hk, T, D) Parameters of this batch and head geometry, int64 slots, one per position, a mask over
    the T slots)."""
    attn = layer.self_attn
    if _ATTENTION_INPUT_CACHE_Q8[attn.q_proj.bits] is None or cache_position is None:
        return False
    batch, seq_len = hidden_states.shape[0], hidden_states.shape[1]
    geometry = (batch, attn.num_key_value_heads, key_storage.shape[2], attn.head_dim)
    return (key_storage.dtype == ms.float32 and value_storage.dtype == ms.float32
            and key_storage.shape == geometry and value_storage.shape == geometry
            and cache_position.dtype == ms.int64 and cache_position.ndim == 1 and cache_position.shape[0] == seq_len
            and attention_mask.shape[-1] == key_storage.shape[2])


def fused_attention_input_to_cache(layer, hidden_states, position_embeddings, key_storage, value_storage,
                                   cache_position):
    """`fused_attention_input` that writes the keys / values into slots `cache_position` of a static cache's
    storage Parameters in place (`native.attention_input_cache_q8_op`: the cache's two ScatterNdUpdate kernels
    folded into the call) and returns the rotated queries (B, H, S, D); only where `fused_decoder_layer_ok` and
    `fused_cache_write_ok` hold."""
    return _ATTENTION_INPUT_CACHE_Q8[layer.self_attn.q_proj.bits](
        *_attention_input_args(layer, hidden_states, position_embeddings), key_storage, value_storage, cache_position)


def fused_attention_output_mlp(layer, query, key, value, attention_mask, residual):
    """The layer's output from the rotated queries and the cache's keys / values (after this step's write):
    residual + o_proj(attention) -> + mlp(post_attention_layernorm(.)), in one native call
    (`native.attention_output_mlp_q8_op`); only where `fused_decoder_layer_ok` holds."""
    attn, norm, mlp = layer.self_attn, layer.post_attention_layernorm, layer.mlp
    return _ATTENTION_OUTPUT_MLP_Q8[attn.o_proj.bits](
        query, key, value, F.cast(attention_mask, ms.float32), *_packed_args(attn.o_proj), residual, norm.weight,
        ms.Tensor([norm.variance_epsilon], ms.float32), *_packed_args(mlp.gate_proj), *_packed_args(mlp.up_proj),
        *_packed_args(mlp.down_proj))


def _same_packing(cells, bias_ok):
    return (all(isinstance(c, QuantizedLinear) and (bias_ok or c.bias is None) for c in cells)
            and len({(c.bits, c.group_size, c.in_features) for c in cells}) == 1)


def mark_fusable_projections(model):
    """Sets `fuse_quantized_qkv` on attention cells whose q_proj / k_proj / v_proj, and `fuse_quantized_gate_up` on
    SiLU MLP cells whose gate_proj / up_proj (without bias), are QuantizedLinear cells that `fused_projections` /
    `fused_silu_gate_up` can multiply in one call, and `fuse_quantized_mlp` on those MLPs whose down_proj is one too
    (same bits, no bias: `fused_mlp_residual`), and `fuse_quantized_layer` on decoder layers whose whole decode step
    `fused_attention_input` / `fused_attention_output_mlp` can run (`_fusable_layer`) (models that read these flags:
    llama). Returns the number of flags set."""
    marked = 0
    for _, cell in model.cells_and_names():
        projections = [getattr(cell, name, None) for name in ("q_proj", "k_proj", "v_proj")]
        if hasattr(type(cell), "fuse_quantized_qkv"):
            cell.fuse_quantized_qkv = _same_packing(projections, bias_ok=True)
            marked += cell.fuse_quantized_qkv
        gate, up = getattr(cell, "gate_proj", None), getattr(cell, "up_proj", None)
        if hasattr(type(cell), "fuse_quantized_gate_up"):
            cell.fuse_quantized_gate_up = (_same_packing([gate, up], bias_ok=False)
                                           and gate.out_features == up.out_features
                                           and getattr(cell, "hidden_act", None) in ("silu", "swish"))
            marked += cell.fuse_quantized_gate_up
        if hasattr(type(cell), "fuse_quantized_mlp"):
            down = getattr(cell, "down_proj", None)
            cell.fuse_quantized_mlp = bool(cell.fuse_quantized_gate_up and isinstance(down, QuantizedLinear)
                                           and down.bias is None and down.bits == gate.bits
                                           and down.in_features == gate.out_features)
            marked += cell.fuse_quantized_mlp
    # decoder layers last (their attention / MLP flags are set above: cells_and_names visits parents first)
    for _, cell in model.cells_and_names():
        if hasattr(type(cell), "fuse_quantized_layer"):
            cell.fuse_quantized_layer = _fusable_layer(cell)
            marked += cell.fuse_quantized_layer
    return marked


def _fusable_layer(layer):
    """Whether `fused_attention_input` / `fused_attention_output_mlp` can run this decoder layer: q / k / v / o and the
    MLP's projections QuantizedLinear of one bits without bias (q / k / v also of one group size), the MLP fusable
    (`fuse_quantized_mlp`), RMSNorm cells with a float weight and `variance_epsilon`, and the attention's heads
    matching its projections."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    norms = [getattr(layer, name, None) for name in ("input_layernorm", "post_attention_layernorm")]
    if attn is None or mlp is None or not getattr(attn, "fuse_quantized_qkv", False) \
            or not getattr(mlp, "fuse_quantized_mlp", False):
        return False
    projections = [getattr(attn, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    if not all(isinstance(p, QuantizedLinear) and p.bias is None for p in projections):
        return False
    q, k, v, o = projections
    head_dim = getattr(attn, "head_dim", None)
    if len({p.bits for p in projections} | {mlp.gate_proj.bits}) != 1 or not head_dim \
            or q.out_features != attn.num_heads * head_dim or k.out_features != attn.num_key_value_heads * head_dim \
            or v.out_features != k.out_features or o.in_features != q.out_features \
            or o.out_features != q.in_features or mlp.gate_proj.in_features != q.in_features:
        return False
    return all(getattr(n, "weight", None) is not None and n.weight.dtype == ms.float32
               and hasattr(n, "variance_epsilon") for n in norms)
