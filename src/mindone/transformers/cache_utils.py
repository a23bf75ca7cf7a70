"""Key/value caches with HF's interface: `update(key_states, value_states, layer_idx, cache_kwargs) -> (keys, values)`.

Models call `update` and never look inside; generation decides which cache to use.

- `DynamicCache` grows by concatenation: any length, PyNative only (shapes change every step).
- `StaticCache` preallocates (B, H_kv, max_cache_len, D) Parameters per layer and writes new keys/values in place at
  `cache_position`. Shapes never change, so one compiled decode graph serves every step; attention covers all
  `max_cache_len` slots and the causal mask hides the slots not written yet.
- `EncoderDecoderCache` pairs a self-attention cache with a cross-attention cache (T5, Whisper, BART...).
- `EncoderDecoderStaticCache` is its fixed-shape form for compiled decoding: a `StaticCache` for the decoder's
  self-attention and one holding the encoder's projected keys/values (written once, at the prefill).
"""

import functools
import itertools

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .backend import functional as F
from .backend import runtime

_cache_ids = itertools.count()


class Cache:
    """Base class: per-layer key/value storage of shape (B, H_kv, S, D)."""

    is_compileable = False

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        raise NotImplementedError

    def get_seq_length(self, layer_idx=0) -> int:
        raise NotImplementedError

    def get_max_cache_shape(self):
        """Number of key slots of a fixed-size cache (the attention mask's key length), None when it grows."""
        return None

    def get_mask_sizes(self, cache_position, layer_idx=0):
        """(kv_length, kv_offset) of the mask for queries at `cache_position` (a length-S sequence)."""
        max_shape = self.get_max_cache_shape()
        if max_shape is not None:
            return max_shape, 0
        return self.get_seq_length(layer_idx) + cache_position.shape[0], 0


class DynamicCache(Cache):
    """Grows by concatenation along the sequence axis (PyNative decoding)."""

    def __init__(self, config=None):
        self.key_cache = []
        self.value_cache = []

    def __len__(self):
        return len(self.key_cache)

    def __getitem__(self, layer_idx):
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def __iter__(self):
        return iter(zip(self.key_cache, self.value_cache))

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        if layer_idx == len(self.key_cache):
            self.key_cache.append(key_states)
            self.value_cache.append(value_states)
        else:
            self.key_cache[layer_idx] = F.cat([self.key_cache[layer_idx], key_states], -2)
            self.value_cache[layer_idx] = F.cat([self.value_cache[layer_idx], value_states], -2)
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def get_seq_length(self, layer_idx=0) -> int:
        if layer_idx >= len(self.key_cache):
            return 0
        return self.key_cache[layer_idx].shape[-2]

    def reorder_cache(self, beam_idx):
        """Reorders the batch axis (beam search)."""
        self.batch_select_indices(beam_idx)

    def crop(self, max_length):
        """Keeps the first `max_length` positions (a negative value drops that many from the end)."""
        if max_length < 0:
            max_length = self.get_seq_length() + max_length
        for i in range(len(self.key_cache)):
            self.key_cache[i] = self.key_cache[i][:, :, :max_length]
            self.value_cache[i] = self.value_cache[i][:, :, :max_length]

    def batch_repeat_interleave(self, repeats):
        """Repeats every batch row `repeats` times in place (expanding a prompt cache to beams)."""
        index = Tensor(np.repeat(np.arange(self.key_cache[0].shape[0] if self.key_cache else 0), repeats))
        self.batch_select_indices(index)

    def batch_select_indices(self, indices):
        for i in range(len(self.key_cache)):
            self.key_cache[i] = F.index_select(self.key_cache[i], 0, indices)
            self.value_cache[i] = F.index_select(self.value_cache[i], 0, indices)

    def reset(self):
        self.key_cache = []
        self.value_cache = []

    def to_legacy_cache(self):
        """((k, v) per layer), HF's old tuple format."""
        return tuple(zip(self.key_cache, self.value_cache))

    @classmethod
    def from_legacy_cache(cls, past_key_values=None):
        cache = cls()
        for layer_idx, (k, v) in enumerate(past_key_values or ()):
            cache.update(k, v, layer_idx)
        return cache


def _cache_geometry(config):
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    return text_config.num_hidden_layers, kv_heads, head_dim


class StaticCache(Cache, nn.Cell):
    """Preallocated cache for compiled decoding: `max_cache_len` key slots per layer, written in place.

    Args:
        config: the model config (layers, key/value heads and head size are read from it).
        max_cache_len: number of key slots (prompt + generated tokens must fit).
        max_batch_size: batch size; if None, the storage is allocated at the first `update` (in PyNative).
        dtype: storage dtype (default: the dtype of the first keys written, or float32).

    The cache position of every row is the same (left padding occupies slots and is masked). `get_seq_length()` is
    tracked on the host by whoever drives decoding (`generate` sets `seen_tokens`), because reading it from the
    storage would need a device sync.
    """

    is_compileable = True

    def __init__(self, config, max_cache_len, max_batch_size=None, dtype=None, **kwargs):
        nn.Cell.__init__(self)
        self.num_layers, self.num_kv_heads, self.head_dim = _cache_geometry(config)
        self.max_cache_len = int(max_cache_len)
        self.max_batch_size = max_batch_size
        self.dtype = dtype
        self.seen_tokens = 0
        self._uid = next(_cache_ids)
        self.key_cache = None
        self.value_cache = None
        self._reorder = None  # the compiled batch reorder of this storage (beam search)
        if max_batch_size is not None:
            self._allocate(max_batch_size, dtype or ms.float32)

    def _allocate(self, batch_size, dtype):
        shape = (batch_size, self.num_kv_heads, self.max_cache_len, self.head_dim)

        def storage(kind, i):
            return Parameter(ops.zeros(shape, dtype),
                             name=f"static_cache_{self._uid}.{kind}.{i}", requires_grad=False)

        self.key_cache = ms.ParameterTuple([storage("key", i) for i in range(self.num_layers)])
        self.value_cache = ms.ParameterTuple([storage("value", i) for i in range(self.num_layers)])
        self.max_batch_size = batch_size
        self.dtype = dtype
        self._reorder = None

    def __len__(self):
        return self.num_layers

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        if self.key_cache is None:
            self._allocate(key_states.shape[0], self.dtype or key_states.dtype)
        cache_position = cache_kwargs.get("cache_position") if cache_kwargs else None
        if cache_position is None:
            raise ValueError("StaticCache.update needs cache_kwargs['cache_position'] (the slots to write)")
        keys = _write_slots(self.key_cache[layer_idx], cache_position, key_states)
        values = _write_slots(self.value_cache[layer_idx], cache_position, value_states)
        return keys, values

    def get_seq_length(self, layer_idx=0) -> int:
        return self.seen_tokens

    def get_max_cache_shape(self):
        return self.max_cache_len

    def reorder_cache(self, beam_idx):
        """Reorders the batch axis in place (beam search): one compiled graph, reused at every step."""
        if self._reorder is None:
            storage = tuple(itertools.chain(self.key_cache, self.value_cache))

            def reorder(beam_idx):
                for param in storage:
                    ops.assign(param, F.index_select(param, 0, beam_idx))
                return beam_idx

            self._reorder = ms.jit(reorder)
        self._reorder(beam_idx)

    def reset(self):
        """Zeroes the storage (stale slots are masked anyway; this keeps a reused cache free of old values)."""
        self.seen_tokens = 0
        if self.key_cache is not None:
            for param in itertools.chain(self.key_cache, self.value_cache):
                ops.assign(param, ops.zeros(param.shape, param.dtype))


def _write_slots(storage, cache_position, states):
    """storage[:, :, cache_position] = states, in place (storage (B, H, T, D) Parameter, states (B, H, S, D)).

    `scatter_nd_update` on a Parameter updates it in place both in PyNative and inside a compiled graph, where the
    returned value orders the write before the attention that reads it.
    """
    b, h, s, _ = states.shape
    positions = cache_position.astype(ms.int32).reshape(1, 1, s, 1)
    if runtime.in_graph():
        batch_idx = F.arange(b, dtype=ms.int32).reshape(b, 1, 1, 1)
        head_idx = F.arange(h, dtype=ms.int32).reshape(1, h, 1, 1)
        rows = F.cat([ops.broadcast_to(batch_idx, (b, h, s, 1)), ops.broadcast_to(head_idx, (b, h, s, 1))], -1)
    else:
        # PyNative (a prefill writing every layer): the (batch, head) part of the index is made once per shape,
        # which saves ~10 dispatched ops per write
        rows = _slot_rows(b, h, s)
    index = F.cat([rows, ops.broadcast_to(positions, (b, h, s, 1))], -1)
    if states.dtype != storage.dtype:
        states = states.astype(storage.dtype)
    return ops.scatter_nd_update(storage, index, states)


@functools.lru_cache(maxsize=64)
def _slot_rows(b, h, s):
    """(b, h, s, 2) int32 tensor of every slot's (batch, head) index."""
    rows = np.stack(np.meshgrid(np.arange(b), np.arange(h), np.arange(s), indexing="ij")[:2], -1)
    return Tensor(rows.astype(np.int32))


class EncoderDecoderCache(Cache):
    """A decoder self-attention cache plus a cross-attention cache over the encoder output.

    The cross-attention keys/values are computed once, at the first decoding step; `is_updated[layer_idx]` records
    that (models may also test `cross_attention_cache.get_seq_length(layer_idx) > 0`).
    """

    def __init__(self, self_attention_cache=None, cross_attention_cache=None):
        self.self_attention_cache = self_attention_cache if self_attention_cache is not None else DynamicCache()
        self.cross_attention_cache = cross_attention_cache if cross_attention_cache is not None else DynamicCache()
        self.is_updated = {i: self.cross_attention_cache.get_seq_length(i) > 0
                           for i in range(len(self.cross_attention_cache))}

    def __len__(self):
        return len(self.self_attention_cache)

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        return self.self_attention_cache.update(key_states, value_states, layer_idx, cache_kwargs)

    def get_seq_length(self, layer_idx=0) -> int:
        return self.self_attention_cache.get_seq_length(layer_idx)

    def get_max_cache_shape(self):
        return self.self_attention_cache.get_max_cache_shape()

    def reorder_cache(self, beam_idx):
        self.self_attention_cache.reorder_cache(beam_idx)
        self.cross_attention_cache.reorder_cache(beam_idx)

    def batch_repeat_interleave(self, repeats):
        self.self_attention_cache.batch_repeat_interleave(repeats)
        self.cross_attention_cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices):
        self.self_attention_cache.batch_select_indices(indices)
        self.cross_attention_cache.batch_select_indices(indices)

    def crop(self, max_length):
        self.self_attention_cache.crop(max_length)

    def reset(self):
        self.self_attention_cache.reset()
        self.cross_attention_cache.reset()
        self.is_updated = {}

    def to_legacy_cache(self):
        """((self k, self v, cross k, cross v) per layer)."""
        cross = self.cross_attention_cache.to_legacy_cache()
        return tuple(s + (cross[i] if i < len(cross) else ()) for i, s in
                     enumerate(self.self_attention_cache.to_legacy_cache()))

    @classmethod
    def from_legacy_cache(cls, past_key_values=None):
        cache = cls()
        for layer_idx, entry in enumerate(past_key_values or ()):
            cache.self_attention_cache.update(entry[0], entry[1], layer_idx)
            if len(entry) > 2:
                cache.cross_attention_cache.update(entry[2], entry[3], layer_idx)
                cache.is_updated[layer_idx] = True
        return cache


class EncoderDecoderStaticCache(EncoderDecoderCache, nn.Cell):
    """Fixed-shape encoder-decoder cache for compiled decoding (Whisper's compiled greedy / beam steps).

    Args:
        config: the model config; the decoder's layers / heads / width are read from `decoder_layers`,
            `decoder_attention_heads`, `d_model` when present (Whisper, BART), else as for `StaticCache`.
        max_cache_len: decoder self-attention slots (prompt + generated tokens must fit).
        encoder_length: number of encoder positions (cross-attention keys), e.g. 1500 for Whisper.
        max_batch_size: rows (batch x beams).
        dtype: storage dtype.

    The cross-attention keys/values are projected from the encoder output by the (PyNative) prefill step, which
    sets `is_updated[layer]`; every compiled decode step then reads them from the storage. `reset()` forgets them,
    so the next prefill projects the new encoder output into the same storage (the compiled step is reused).
    """

    is_compileable = True

    def __init__(self, config, max_cache_len, encoder_length, max_batch_size, dtype=None):
        nn.Cell.__init__(self)
        layers, heads, head_dim = _decoder_geometry(config)
        dtype = dtype or ms.float32

        def static(length):
            cache = StaticCache(config, max_cache_len=length)
            cache.num_layers, cache.num_kv_heads, cache.head_dim = layers, heads, head_dim
            cache._allocate(max_batch_size, dtype)
            return cache

        self.self_attention_cache = static(max_cache_len)
        self.cross_attention_cache = static(encoder_length)
        self.is_updated = {}

    def reorder_cache(self, beam_idx):
        """Reorders the self-attention rows (beam search). The cross-attention rows stay: beams only move within
        their own batch item, whose rows all hold the same encoder output."""
        self.self_attention_cache.reorder_cache(beam_idx)

    def reset(self):
        self.self_attention_cache.reset()
        self.cross_attention_cache.seen_tokens = 0  # overwritten in full by the next prefill: no need to zero it
        self.is_updated = {}


def _decoder_geometry(config):
    """(layers, heads, head_dim) of an encoder-decoder model's decoder: BART / Whisper name them `decoder_layers`,
    `decoder_attention_heads` (head size d_model / heads); T5 `num_decoder_layers`, `num_heads`, `d_kv`."""
    if getattr(config, "decoder_layers", None) and getattr(config, "decoder_attention_heads", None):
        heads = config.decoder_attention_heads
        return config.decoder_layers, heads, config.d_model // heads
    layers, heads, head_dim = _cache_geometry(config)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text_config, "num_decoder_layers", None) or layers
    head_dim = getattr(text_config, "d_kv", None) or head_dim
    return layers, heads, head_dim


__all__ = ["Cache", "DynamicCache", "StaticCache", "EncoderDecoderCache", "EncoderDecoderStaticCache"]
