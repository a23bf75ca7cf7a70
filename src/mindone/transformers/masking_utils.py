"""Additive attention masks (0 where attention is allowed, the dtype's most negative value where it is not).

Shared by every model family. Shapes only depend on static sizes, and positions come in as tensors
(`cache_position`), so the masks build inside `mindspore.jit` graphs and work with static caches.
"""

import mindspore as ms
from mindspore import ops

from .backend import functional as F


def _pad_to(attention_mask, length):
    """A 2D padding mask shorter than the key length is extended with ones (static caches cover future slots,
    which the causal rule masks anyway)."""
    missing = length - attention_mask.shape[-1]
    if missing > 0:
        attention_mask = F.cat([attention_mask, ops.ones((attention_mask.shape[0], missing), attention_mask.dtype)], -1)
    elif missing < 0:
        attention_mask = attention_mask[:, :length]
    return attention_mask


def create_causal_mask(attention_mask, batch_size, cache_position, kv_length, dtype, sliding_window=None):
    """(B or 1, 1, Sq, Sk) additive mask: query at absolute position p sees keys 0..p that are not padding.

    Args:
        attention_mask: (B, Sk') 1/0 padding mask over all keys seen so far (past + current), or None.
        batch_size: B.
        cache_position: (Sq,) int tensor, absolute positions of the queries.
        kv_length: number of key slots Sk (past + current, or the static cache size).
        dtype: dtype of the attention scores.
        sliding_window: if set, a query also ignores keys more than `sliding_window - 1` positions back.
    """
    # reshape rather than None-indexing: inside a compiled graph `x[None]` runs a StridedSlice kernel
    key_positions = F.arange(kv_length, dtype=ms.int64).reshape(1, kv_length)
    query_positions = cache_position.astype(ms.int64).reshape(-1, 1)
    allowed = key_positions <= query_positions
    if sliding_window is not None:
        allowed = ops.logical_and(allowed, key_positions > query_positions - sliding_window)
    allowed = allowed.reshape(1, 1, -1, kv_length)
    if attention_mask is not None:
        padding = _pad_to(attention_mask, kv_length).astype(ms.bool_)
        allowed = ops.logical_and(allowed, padding.reshape(padding.shape[0], 1, 1, kv_length))
    return ops.where(allowed, ops.zeros((), dtype), F.full((), F.finfo_min(dtype), dtype))


def create_bidirectional_mask(attention_mask, query_length, dtype):
    """(B, 1, Sq, Sk) additive mask from a 2D padding mask (encoders and cross-attention), or None."""
    if attention_mask is None:
        return None
    padding = attention_mask.astype(ms.bool_)[:, None, None, :]
    zeros = ops.zeros((), dtype)
    mask = ops.where(padding, zeros, F.full((), F.finfo_min(dtype), dtype))
    return ops.broadcast_to(mask, (attention_mask.shape[0], 1, query_length, attention_mask.shape[-1]))
