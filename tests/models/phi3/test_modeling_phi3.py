"""Phi-3 family parity with torch `transformers` on tiny random checkpoints (tests/parity.py)."""

import numpy as np
import pytest
import transformers

from mindone.transformers import Phi3ForCausalLM, Phi3ForSequenceClassification, Phi3ForTokenClassification, Phi3Model
from tests import parity
from tests.models.head_parity import (
    assert_causal_lm_matches_torch,
    assert_gradients_match_torch,
    assert_greedy_tokens_match_torch,
    assert_matches_torch,
    checkpoint_factory,
    left_padded_batch,
)

VOCAB = 99
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=64, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def _longrope(original_max):
    # head_dim 8 -> 4 rotary frequency pairs, each with its own factor
    return dict(original_max_position_embeddings=original_max, max_position_embeddings=4 * original_max,
                rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                 "short_factor": [1.0, 1.3, 1.7, 2.1], "long_factor": [1.5, 2.5, 4.0, 6.0]})


# each variant exercises a config feature of HF's Phi-3
VARIANTS = {
    "gqa_untied": {},
    "partial_rotary": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.5}),
    "sliding_tied_mha": dict(sliding_window=4, tie_word_embeddings=True, num_key_value_heads=4),
    # the 9-token inputs pass original_max_position_embeddings=6: long factors
    "longrope_long": _longrope(6),
    # ... and stay below 16: short factors
    "longrope_short": _longrope(16),
}


def make_config(**overrides):
    return transformers.Phi3Config(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("partial_rotary", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.Phi3ForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(Phi3ForCausalLM, torch_model, path, VOCAB, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Phi3ForCausalLM, **VARIANTS["partial_rotary"])
    assert_causal_lm_matches_torch(Phi3ForCausalLM, torch_model, path, VOCAB, mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Phi3ForCausalLM, **VARIANTS["sliding_tied_mha"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(Phi3ForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


@pytest.mark.parametrize("variant, cache_implementation", [("partial_rotary", "static"),
                                                           ("sliding_tied_mha", "dynamic")])
def test_greedy_generation_matches_torch_left_padded_batch(checkpoints, variant, cache_implementation):
    torch_model, path = checkpoints(transformers.Phi3ForCausalLM, **VARIANTS[variant])
    assert_greedy_tokens_match_torch(Phi3ForCausalLM, torch_model, path, VOCAB,
                                     cache_implementation=cache_implementation)


@pytest.mark.parametrize("ours_cls, fields", [
    (Phi3Model, ["last_hidden_state"]),
    (Phi3ForSequenceClassification, ["logits", "loss"]),
    (Phi3ForTokenClassification, ["logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is Phi3ForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is Phi3ForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "graph", rows=mask.astype(bool))
