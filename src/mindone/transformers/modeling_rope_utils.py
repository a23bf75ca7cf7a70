"""Rotary position embedding (RoPE) frequency tables for every `rope_parameters["rope_type"]` we support.

Computed once on the host with numpy, in float32 like HF (so the tables agree bit-for-bit or to 1 ulp), from the
`transformers` config. Each function returns `(inv_freq (dim/2,) float32, attention_scaling)`, where
`attention_scaling` multiplies cos and sin.
"""

import math

import numpy as np


def _rope_dims(config):
    params = config.rope_parameters
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0) or 1.0))
    return params, float(params["rope_theta"]), dim


def float32_power(base, exponents):
    """float32 `base ** exponents` as torch computes it, the power rounded once to float32.

    numpy's float32 power is 1 ulp off torch's in ~16% of the entries of a frequency table (14 of 64 for base 1e6,
    dim 128); at position p the angle p * inv_freq then differs by p ulps, ~1e-4 rad at p = 1300, which HF's float64
    reference shares with torch float32 (both take the angles in float32). The power taken in float64 and rounded
    once agrees with torch in all but ~1% of entries (SLEEF's powf is within 1 ulp, not correctly rounded).
    """
    exponents = np.asarray(exponents, np.float32).astype(np.float64)
    return (np.float64(np.float32(base)) ** exponents).astype(np.float32)


def _base_inv_freq(base, dim):
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / float32_power(base, exponents)).astype(np.float32)


def default_rope(config, seq_len=None):
    _, base, dim = _rope_dims(config)
    return _base_inv_freq(base, dim), 1.0


def linear_rope(config, seq_len=None):
    """Position interpolation: every frequency divided by `factor`."""
    params, base, dim = _rope_dims(config)
    return (_base_inv_freq(base, dim) / np.float32(params["factor"])).astype(np.float32), 1.0


def dynamic_rope(config, seq_len=None):
    """Dynamic NTK: the base grows with the current sequence length once it exceeds max_position_embeddings."""
    params, base, dim = _rope_dims(config)
    max_pos = config.max_position_embeddings
    seq_len = max_pos if seq_len is None else max(int(seq_len), max_pos)
    factor = params["factor"]
    base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def yarn_rope(config, seq_len=None):
    """YaRN: interpolate low frequencies, keep high ones, blend linearly between; scale attention by mscale."""
    params, base, dim = _rope_dims(config)
    factor = params.get("factor")
    original_max = params.get("original_max_position_embeddings") or config.max_position_embeddings
    if factor is None:
        factor = config.max_position_embeddings / original_max

    def mscale_of(scale, mscale=1.0):
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(mscale_of(factor, mscale) / mscale_of(factor, mscale_all_dim))
        else:
            attention_factor = mscale_of(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(num_rotations):
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp

    pos_freqs = float32_power(base, np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
    extrapolation = np.float32(1.0) / pos_freqs
    interpolation = np.float32(1.0) / (np.float32(factor) * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extrapolation_weight = np.float32(1.0) - ramp.astype(np.float32)
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq.astype(np.float32), float(attention_factor)


def llama3_rope(config, seq_len=None):
    """Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth blend in between."""
    params, base, dim = _rope_dims(config)
    inv_freq = _base_inv_freq(base, dim)
    factor = params["factor"]
    low_freq_factor = params["low_freq_factor"]
    high_freq_factor = params["high_freq_factor"]
    old_context_len = params["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor

    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(factor), inv_freq)
    smooth = (np.float32(old_context_len) / wavelen - np.float32(low_freq_factor)) / np.float32(
        high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32), 1.0


def longrope_rope(config, seq_len=None):
    """LongRoPE (Phi-3): per-frequency `short_factor`s up to original_max_position_embeddings positions,
    `long_factor`s beyond; cos/sin scaled by sqrt(1 + ln(factor) / ln(original_max)) unless `attention_factor` is set."""
    params, base, dim = _rope_dims(config)
    original_max = params.get("original_max_position_embeddings") or config.original_max_position_embeddings
    factor = params.get("factor")
    if factor is None:
        factor = config.max_position_embeddings / original_max
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_max))
    ext = params["long_factor"] if seq_len and seq_len > original_max else params["short_factor"]
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = np.float32(1.0) / (np.asarray(ext, np.float32) * float32_power(base, exponents))
    return inv_freq.astype(np.float32), attention_factor


ROPE_INIT_FUNCTIONS = {
    "default": default_rope,
    "linear": linear_rope,
    "dynamic": dynamic_rope,
    "yarn": yarn_rope,
    "llama3": llama3_rope,
    "longrope": longrope_rope,
}


def compute_rope_parameters(config, seq_len=None):
    """(inv_freq, attention_scaling) for `config.rope_parameters["rope_type"]`."""
    rope_type = (config.rope_parameters or {}).get("rope_type", "default")
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {sorted(ROPE_INIT_FUNCTIONS)}")
    return ROPE_INIT_FUNCTIONS[rope_type](config, seq_len)
