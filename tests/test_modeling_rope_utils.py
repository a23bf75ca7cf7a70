"""RoPE frequency tables against transformers' (torch) ones: the angles position * inv_freq must agree.

HF takes the angles in float32 even in a float64 model, so the float64 reference of the parity tables shares torch's
float32 inv_freq; an inv_freq 1 ulp off torch's turns into p ulps of angle at position p (~1e-4 rad at p = 1300),
which was most of LLaVA-NeXT's float32 error (docs/parity.md)."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers.modeling_rope_utils import compute_rope_parameters, float32_power

CONFIGS = {
    "llama_1e4_d64": dict(hidden_size=512, num_attention_heads=8, rope_parameters={"rope_type": "default",
                                                                                  "rope_theta": 10000.0}),
    "mistral_1e6_d128": dict(hidden_size=4096, num_attention_heads=32, rope_parameters={"rope_type": "default",
                                                                                       "rope_theta": 1000000.0}),
    "linear": dict(hidden_size=1024, num_attention_heads=8, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                            "rope_theta": 500000.0}),
    "llama3": dict(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072, rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_theta": 500000.0}),
    "yarn": dict(hidden_size=2048, num_attention_heads=16, max_position_embeddings=32768, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 1000000.0}),
}
POSITIONS = 8192


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rope_angles_match_torch(name):
    config = transformers.LlamaConfig(**CONFIGS[name])
    ours, ours_scaling = compute_rope_parameters(config)
    reference = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(config)
    theirs = reference.inv_freq.float().numpy()
    positions = np.arange(POSITIONS, dtype=np.float32)[:, None]
    # the rotary embeddings' float32 product (torch: a float32 matmul of one term, i.e. the rounded product)
    angle_gap = np.abs(positions * ours - positions * theirs).max()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert angle_gap <= 1e-6, f"{name}: angles {angle_gap:.2e} rad off torch's over {POSITIONS} positions"
    assert ours_scaling == pytest.approx(reference.attention_scaling)


def test_float32_power_is_the_rounded_power():
    exponents = np.arange(0, 128, 2, dtype=np.float32) / np.float32(128)
    out = float32_power(1e6, exponents)
    exact = np.float64(np.float32(1e6)) ** exponents.astype(np.float64)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, exact.astype(np.float32))
    # numpy's own float32 power is not always the rounded power (the reason for the helper): it was not on the
    # AVX-512 VM for this table; on the AVX2 one it is, so that is not asserted here
