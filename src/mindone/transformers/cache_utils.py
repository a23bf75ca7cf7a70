"""Key/value caches with HF's interface: `update(key_states, value_states, layer_idx) -> (keys, values)`.

Models call `update` and never look inside; generation decides which cache to use.
"""

from .backend import functional as F


class Cache:
    """Base class: per-layer key/value storage of shape (B, H_kv, S, D)."""

    is_compileable = False

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        raise NotImplementedError

    def get_seq_length(self, layer_idx=0) -> int:
        raise NotImplementedError

    def get_max_cache_shape(self):
        return None


class DynamicCache(Cache):
    """Grows by concatenation along the sequence axis (PyNative decoding)."""

    def __init__(self, config=None):
        self.key_cache = []
        self.value_cache = []

    def __len__(self):
        return len(self.key_cache)

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
        for i in range(len(self.key_cache)):
            self.key_cache[i] = self.key_cache[i][beam_idx]
            self.value_cache[i] = self.value_cache[i][beam_idx]

    def crop(self, max_length):
        for i in range(len(self.key_cache)):
            self.key_cache[i] = self.key_cache[i][:, :, :max_length]
            self.value_cache[i] = self.value_cache[i][:, :, :max_length]
