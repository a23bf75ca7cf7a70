"""Comparison helper for the weights tests."""

import numpy as np


def assert_same_tensors(ours: dict, reference: dict) -> None:
    """ours: key -> numpy; reference: key -> torch tensor (bf16 compared after widening to fp32, exactly)."""
    import torch

    assert sorted(ours) == sorted(reference)
    for key, tensor in reference.items():
        tensor = tensor.detach()
        expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert ours[key].dtype == expected.dtype, key
        assert ours[key].shape == expected.shape, key
        np.testing.assert_array_equal(ours[key], expected, err_msg=key)
