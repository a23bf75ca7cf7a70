"""generate()'s decode step of a quantized Llama-style model as a fixed list of native kernel calls (CPU).

Why: a compiled decode step of SmolLM2-135M with its GGUF blocks kept (`keep_quantized=True`) is 84 kernel launches,
62 of them our native kernels (two per decoder layer, the final norm and the output layer). On one core of the
development machine the kernels take ~25 ms per token and MindSpore's graph executor another ~11 ms around them
(argument conversion, the actor runtime, memory bookkeeping; it does not depend on the kernels). The same kernels
called one after another from here, on buffers allocated once, cost the kernel time and nothing else.

`wrap(model, cache, step)` returns the compiled step itself unless the whole decode step is native (every decoder
layer fused by `quantization.mark_fusable_projections`, int8 activations, a quantized output layer, native kernels
available): then a `NativeDecodeStep` that runs the one-token steps natively and hands every other call (prefill
chunks) to the compiled step. Both write the same StaticCache storage (MindSpore Parameters whose memory the kernels
are given), so prefill and decoding mix freely, and the step returns the numbers the compiled graph returns: the
same kernels, inputs built as the graph builds them (embedding row, RoPE matrices from the model's own cos / sin,
the additive mask). MINDONE_TRANSFORMERS_NATIVE_DECODE=0 keeps the compiled graph for every step.
"""

import ctypes
import logging
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor

from . import functional as F
from . import native, quantization, runtime

logger = logging.getLogger(__name__)

ENV = "MINDONE_TRANSFORMERS_NATIVE_DECODE"
# the AOT kernel signature: int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
# void *stream, void *extra)
_KERNEL_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)),
                                ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p, ctypes.c_void_p)


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _fusable_model(model):
    """Whether `model` is a Llama-style causal LM whose whole decode step the native kernels run (reasons why not
    logged at debug level)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    lm_head = getattr(model, "lm_head", None)
    reasons = []
    if not (native.available() and enabled() and runtime.is_cpu()):
        reasons.append("native kernels off")
    if inner is None or layers is None or not len(layers):
        reasons.append("no model.layers")
    elif not all(getattr(layer, "fuse_quantized_layer", False) for layer in layers):
        reasons.append("not every decoder layer is fused")
    if not isinstance(lm_head, quantization.QuantizedLinear) or lm_head.bias is not None:
        reasons.append("the output layer is not a QuantizedLinear without bias")
    if quantization.activation_quantization() != "q8" or F._FULLY_MASKED_ROWS != "eager":
        reasons.append("float activations or sdpa masking")
    if model.training:
        reasons.append("training")
    if not reasons:
        embed = getattr(inner, "embed_tokens", None)
        norm = getattr(inner, "norm", None)
        rotary = getattr(inner, "rotary_emb", None)
        if embed is None or getattr(embed, "weight", None) is None or embed.weight.dtype != ms.float32:
            reasons.append("no float32 embedding")
        if norm is None or getattr(norm, "weight", None) is None or norm.weight.dtype != ms.float32 \
                or not hasattr(norm, "variance_epsilon"):
            reasons.append("no RMSNorm")
        if rotary is None or getattr(rotary, "rope_type", None) == "dynamic" or not hasattr(inner, "query_scaling"):
            reasons.append("RoPE depends on the whole call (dynamic) or is missing")
        if getattr(model.config, "sliding_window", None) or getattr(model.config, "layer_types", None):
            reasons.append("sliding-window attention")
    if reasons:
        logger.debug("native decode step not used for %s: %s", type(model).__name__, "; ".join(reasons))
    return not reasons


def wrap(model, cache, step):
    """`step` (a compiled decode step over `cache`), or a NativeDecodeStep running its one-token calls natively."""
    if not _fusable_model(model):
        return step
    return NativeDecodeStep(model, cache, step)


class _Call:
    """One kernel call: its function and the argument arrays it is given, built once (pointers updated in place)."""

    def __init__(self, name, arrays):
        self.fn = _KERNEL_TYPE((name, native.library_handle()))
        self.name = name
        self.arrays = arrays  # the call holds raw pointers: the arrays it owns must live as long as it
        n = len(arrays)
        self.nparam = n
        self.params = (ctypes.c_void_p * n)()
        self.ndims = (ctypes.c_int * n)()
        self._shapes = [(ctypes.c_int64 * max(1, a.ndim))(*a.shape) for a in arrays]
        self.shapes = (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64))
                                                             for s in self._shapes])
        self.dtypes = (ctypes.c_char_p * n)(*[a.dtype.name.encode() for a in arrays])
        for i, a in enumerate(arrays):
            self.ndims[i] = a.ndim
            self.params[i] = a.ctypes.data

    def run(self):
        status = self.fn(self.nparam, self.params, self.ndims, self.shapes, self.dtypes, None, None)
        if status != 0:
            raise RuntimeError(f"native kernel {self.name} failed with status {status}")


def _view(param):
    """The Parameter's storage as a NumPy array sharing its memory (MindSpore's CPU tensors do)."""
    array = param.asnumpy()
    if array.ctypes.data != param.data_ptr():
        raise RuntimeError(f"{param.name}: MindSpore returned a copy, not a view of the storage")
    return array


class NativeDecodeStep:
    """Callable as the compiled decode step (`input_ids (B, S), attention_mask (B, T), position_ids (B, S),
    cache_position (S,) -> logits (B, 1, V)`); S == 1 runs the kernels directly, anything else the compiled step."""

    def __init__(self, model, cache, compiled_step):
        self.model = model
        self.cache = cache
        self.compiled_step = compiled_step
        self._plan = None
        self._pointers = None
        self._last_slot = None
        self._unavailable = None  # why the plan could not be built: every step then runs the compiled graph

    def __call__(self, input_ids, attention_mask, position_ids, cache_position, *extra):
        batch = input_ids.shape[0]
        if extra or input_ids.ndim != 2 or input_ids.shape[1] != 1 or batch > quantization.DIRECT_ROWS \
                or self.cache.key_cache is None or self._unavailable is not None:
            self._check_parameters()
            self._last_slot = None  # a prefill: the next step checks again
            return self.compiled_step(input_ids, attention_mask, position_ids, cache_position, *extra)
        slot = int(_numpy(cache_position).reshape(-1)[0])
        if self._plan is None or self._plan.batch != batch or self._last_slot is None or slot != self._last_slot + 1:
            self._check_parameters()
            if self._plan is None or self._plan.batch != batch:
                try:
                    self._plan = _Plan(self.model, self.cache, batch)
                except (RuntimeError, ValueError) as err:  # e.g. a Parameter whose memory NumPy cannot view
                    self._unavailable = str(err)
                    logger.warning("native decode step unavailable, decoding with the compiled graph: %s", err)
                    return self.compiled_step(input_ids, attention_mask, position_ids, cache_position)
        self._last_slot = slot
        return self._plan.run(input_ids, attention_mask, position_ids, slot)

    def _check_parameters(self):
        """Parameters replaced, or given new data (set_data, a reload), since the plan was built have moved: the plan's
        pointers and the compiled graph (which keeps reading the old data) are both rebuilt. Checked when a
        generate() call starts (its prefill, or the slots jumping), not per step: reading ~330 pointers takes ~0.5
        ms."""
        pointers = runtime.parameter_pointers(self._parameters())
        if self._pointers is not None and pointers != self._pointers:
            step = self.compiled_step
            self.compiled_step = type(step)(step.fn, step.model, step.cache)
            self._plan = None
        self._pointers = pointers

    def _parameters(self):
        # everything the plan and the compiled graph read
        return list(self.model.get_parameters()) + list(self.cache.key_cache) + list(self.cache.value_cache)


class _Plan:
    """The buffers and kernel calls of one decode step for `batch` rows."""

    def __init__(self, model, cache, batch):
        inner = model.model
        layers = list(inner.layers)
        attn = layers[0].self_attn
        hidden = inner.embed_tokens.weight.shape[1]
        heads, head_dim = attn.num_heads, attn.head_dim
        slots = cache.key_cache[0].shape[2]
        self.batch, self.slots, self.hidden = batch, slots, hidden
        self.embed = _view(inner.embed_tokens.weight)
        self.vocab = self.embed.shape[0]
        # RoPE: the model's own cos / sin for every slot position (the graph's kernels, computed once), the (D, D)
        # matrices per step from them as `F.rotary_matrix` builds them
        positions = Tensor(np.arange(max(slots, 1), dtype=np.int64)[None])
        probe = Tensor(np.zeros((1, 1, 1), np.float32))
        cos, sin = inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos.asnumpy()[0], sin.asnumpy()[0]
        rotary_dim = self.cos.shape[-1]
        rotated, perm, passed = F._rotation_bases(rotary_dim, head_dim, False, ms.float32)
        if passed is not None or rotary_dim != head_dim:
            raise ValueError("partial rotary embeddings are not supported by the native decode step")
        self.rotated, self.perm = rotated.asnumpy(), perm.asnumpy()
        self.query_scaling = np.float32(inner.query_scaling)

        f32 = np.float32
        self.hidden_states = [np.zeros((batch, 1, hidden), f32), np.zeros((batch, 1, hidden), f32)]
        self.query = np.zeros((batch, heads, 1, head_dim), f32)
        self.query_rotation = np.zeros((batch, 1, head_dim, head_dim), f32)
        self.key_rotation = np.zeros((batch, 1, head_dim, head_dim), f32)
        self.mask = np.zeros((batch, 1, 1, slots), f32)
        self.slot = np.zeros((1,), np.int64)
        self.normed = np.zeros((batch, 1, hidden), f32)
        self.logits = np.zeros((batch, model.lm_head.out_features), f32)  # the output's shape; each step gets its own

        self.calls = []
        for index, layer in enumerate(layers):
            attn, mlp = layer.self_attn, layer.mlp
            bits = attn.q_proj.bits
            x, out = self.hidden_states[index % 2], self.hidden_states[(index + 1) % 2]
            keys, values = _view(cache.key_cache[index]), _view(cache.value_cache[index])
            inputs = [x, _view(layer.input_layernorm.weight), self._eps(layer.input_layernorm)]
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                inputs += self._packed(proj)
            inputs += [self.query_rotation, self.key_rotation, keys, values, self.slot, self.query]
            self.calls.append(_Call(native.ATTENTION_INPUT_CACHE_Q8[bits], inputs))
            inputs = [self.query, keys, values, self.mask, *self._packed(attn.o_proj), x,
                      _view(layer.post_attention_layernorm.weight), self._eps(layer.post_attention_layernorm)]
            for proj in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                inputs += self._packed(proj)
            inputs.append(out)
            self.calls.append(_Call(native.ATTENTION_OUTPUT_MLP_Q8[bits], inputs))
        last = self.hidden_states[len(layers) % 2]
        self.calls.append(_Call(native.RMS_NORM, [last, _view(inner.norm.weight), self._eps(inner.norm), self.normed]))
        self.normed_rows = self.normed.reshape(batch, hidden)
        self.head_call = _Call(native.QLINEAR_Q8[model.lm_head.bits],
                               [self.normed_rows, *self._packed(model.lm_head), self.logits])

    @staticmethod
    def _eps(norm):
        return np.array([norm.variance_epsilon], np.float32)

    def _packed(self, cell):
        return [_view(p) for p in (cell.weight_packed, cell.weight_scale, cell.weight_min) if p is not None]

    def run(self, input_ids, attention_mask, position_ids, slot):
        ids = _numpy(input_ids).reshape(self.batch)
        if ids.min() < 0 or ids.max() >= self.vocab:
            bad = ids[(ids < 0) | (ids >= self.vocab)][0]
            raise IndexError(f"token id {int(bad)} is out of range for the embedding of {self.vocab} rows")
        if not 0 <= slot < self.slots:
            raise IndexError(f"cache position {slot} is outside the static cache's {self.slots} slots")
        positions = _numpy(position_ids).reshape(self.batch)
        if positions.min() < 0 or positions.max() >= self.cos.shape[0]:
            raise IndexError(f"position ids {positions.tolist()} are outside 0..{self.cos.shape[0] - 1}")
        # as LlamaModel builds them: the embedding rows, the rotation matrices, the additive causal / padding mask
        np.take(self.embed, ids, axis=0, out=self.hidden_states[0].reshape(self.batch, self.hidden))
        cos = self.cos[positions].reshape(self.batch, 1, 1, -1)
        sin = self.sin[positions].reshape(self.batch, 1, 1, -1)
        np.add(cos * self.rotated, sin * self.perm, out=self.key_rotation)
        np.multiply(self.key_rotation, self.query_scaling, out=self.query_rotation)
        padding = _numpy(attention_mask)[:, :self.slots] != 0
        if padding.shape[1] < self.slots:  # as `masking_utils._pad_to`: the slots past the mask count as ones
            padding = np.pad(padding, ((0, 0), (0, self.slots - padding.shape[1])), constant_values=True)
        allowed = (np.arange(self.slots) <= slot)[None, :] & padding
        self.mask[:, 0, 0, :] = np.where(allowed, np.float32(0), np.finfo(np.float32).min)
        self.slot[0] = slot
        for call in self.calls:
            call.run()
        logits = np.empty_like(self.logits)
        # a new array per step: callers keep earlier steps' logits
        self.head_call.params[self.head_call.nparam - 1] = logits.ctypes.data
        self.head_call.run()
        return Tensor.from_numpy(logits.reshape(self.batch, 1, -1))


def _numpy(value):
    return value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
