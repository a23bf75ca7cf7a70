"""Mistral family parity with torch `transformers` on tiny random checkpoints."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    MistralForCausalLM,
    MistralForQuestionAnswering,
    MistralForSequenceClassification,
    MistralForTokenClassification,
    MistralModel,
)
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
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)
# each variant exercises a config feature of HF's Mistral
VARIANTS = {
    "gqa_untied": {},
    "sliding_window": dict(sliding_window=4),
    "mha_tied_head_dim": dict(num_key_value_heads=4, tie_word_embeddings=True, head_dim=16),
}


def make_config(**overrides):
    return transformers.MistralConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


# every variant compiled (graph), the base one also in PyNative: the suite shares 2 cores
@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("gqa_untied", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.MistralForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(MistralForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_fp16_close_to_torch_fp32(checkpoints):
    torch_model, path = checkpoints(transformers.MistralForCausalLM)
    assert_causal_lm_matches_torch(MistralForCausalLM, torch_model, path, VOCAB, "graph", dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.MistralForCausalLM, **VARIANTS["sliding_window"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(MistralForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.MistralForCausalLM, **VARIANTS["sliding_window"])
    assert_greedy_tokens_match_torch(MistralForCausalLM, torch_model, path, VOCAB)


@pytest.mark.parametrize("ours_cls, fields", [
    (MistralModel, ["last_hidden_state"]),
    (MistralForSequenceClassification, ["logits", "loss"]),
    (MistralForTokenClassification, ["logits", "loss"]),
    (MistralForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is MistralForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is MistralForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is MistralForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "graph", rows=mask.astype(bool))
