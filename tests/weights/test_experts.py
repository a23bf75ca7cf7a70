"""Per-expert checkpoint matrices <-> stacked expert parameters (weights/experts.py), on numpy only."""

import numpy as np
import pytest

from mindone.transformers.weights import CheckpointError, ExpertLayout, fuse_experts, split_experts

MIXTRAL = ExpertLayout(gate="w1", up="w3", down="w2", renames=[(".block_sparse_moe.", ".mlp.")])
E, I, H = 3, 4, 5


def per_expert_state(rng):
    state = {"model.layers.0.block_sparse_moe.gate.weight": rng.randn(E, H).astype(np.float32),
             "model.norm.weight": rng.randn(H).astype(np.float32)}
    for e in range(E):
        prefix = f"model.layers.0.block_sparse_moe.experts.{e}."
        state[prefix + "w1.weight"] = rng.randn(I, H).astype(np.float32)
        state[prefix + "w3.weight"] = rng.randn(I, H).astype(np.float32)
        state[prefix + "w2.weight"] = rng.randn(H, I).astype(np.float32)
    return state


def test_fuse_stacks_gate_then_up_per_expert_like_hf_and_split_restores_the_checkpoint():
    state = per_expert_state(np.random.RandomState(0))
    # experts interleaved with other keys and out of order, as sharded checkpoints may hold them
    items = sorted(state.items(), key=lambda kv: kv[0][::-1])
    fused = dict(fuse_experts(items, MIXTRAL, E))
    assert set(fused) == {"model.layers.0.mlp.gate.weight", "model.norm.weight",
                          "model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"}
    gate_up = fused["model.layers.0.mlp.experts.gate_up_proj"]
    assert gate_up.shape == (E, 2 * I, H)
    for e in range(E):
        np.testing.assert_array_equal(gate_up[e, :I], state[f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight"])
        np.testing.assert_array_equal(gate_up[e, I:], state[f"model.layers.0.block_sparse_moe.experts.{e}.w3.weight"])
        np.testing.assert_array_equal(fused["model.layers.0.mlp.experts.down_proj"][e],
                                      state[f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight"])
    back = split_experts(fused, MIXTRAL)
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value)


def test_stacked_keys_pass_through():
    stacked = {"model.layers.0.mlp.experts.gate_up_proj": np.zeros((E, 2 * I, H), np.float32)}
    assert list(dict(fuse_experts(stacked.items(), MIXTRAL, E))) == list(stacked)


@pytest.mark.parametrize("drop, match", [
    ("experts.2.w2.weight", r"model\.layers\.0\.mlp\.experts\.down_proj: checkpoint holds only 2"),
    ("experts.1.w3.weight", r"model\.layers\.0\.mlp\.experts\.gate_up_proj: checkpoint holds only 5"),
])
def test_missing_expert_matrix_is_a_clear_error(drop, match):
    state = {k: v for k, v in per_expert_state(np.random.RandomState(1)).items() if not k.endswith(drop)}
    with pytest.raises(CheckpointError, match=match):
        dict(fuse_experts(state.items(), MIXTRAL, E))


def test_expert_index_beyond_the_model_is_a_clear_error():
    state = per_expert_state(np.random.RandomState(2))
    with pytest.raises(CheckpointError, match=r"experts\.2\.w\d\.weight: expert index 2 out of range .*has 2 experts"):
        dict(fuse_experts(state.items(), MIXTRAL, 2))
