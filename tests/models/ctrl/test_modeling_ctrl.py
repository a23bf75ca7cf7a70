"""CTRL family parity with torch `transformers` on tiny random checkpoints (tests/parity.py)."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import CTRLForSequenceClassification, CTRLLMHeadModel, CTRLModel
from mindone.transformers.models.ctrl.modeling_ctrl import positional_encoding
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
BASE = dict(vocab_size=VOCAB, n_embd=32, dff=37, n_layer=2, n_head=4, n_positions=64, pad_token_id=0)
# each variant exercises a config feature of HF's CTRL
VARIANTS = {
    "tied": {},
    "untied": dict(tie_word_embeddings=False),
}


def make_config(**overrides):
    return transformers.CTRLConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


def test_positional_encoding_equals_torch():
    from transformers.models.ctrl.modeling_ctrl import positional_encoding as torch_positional_encoding

    ref = torch_positional_encoding(64, 32, torch.float).numpy()
    assert np.abs(positional_encoding(64, 32) - ref).max() <= 1e-6


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("tied", "pynative")])
def test_lm_head_model_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.CTRLLMHeadModel, **VARIANTS[variant])
    assert_causal_lm_matches_torch(CTRLLMHeadModel, torch_model, path, VOCAB, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_lm_head_model_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CTRLLMHeadModel)
    assert_causal_lm_matches_torch(CTRLLMHeadModel, torch_model, path, VOCAB, mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch_with_tied_head(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CTRLLMHeadModel)
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(CTRLLMHeadModel, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


@pytest.mark.parametrize("cache_implementation", ["static", "dynamic"])
def test_greedy_generation_matches_torch_left_padded_batch(checkpoints, cache_implementation):
    torch_model, path = checkpoints(transformers.CTRLLMHeadModel)
    assert_greedy_tokens_match_torch(CTRLLMHeadModel, torch_model, path, VOCAB,
                                     cache_implementation=cache_implementation)


def test_token_types_positions_and_inputs_embeds_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.CTRLLMHeadModel)
    ids, mask, _ = left_padded_batch(VOCAB, seed=2)
    position_ids = np.tile(np.arange(5, 5 + ids.shape[1]), (2, 1)).astype(np.int64)
    token_type_ids = (ids % 4).astype(np.int64)
    assert_matches_torch(CTRLLMHeadModel, torch_model, path,
                         dict(input_ids=ids, position_ids=position_ids, token_type_ids=token_type_ids), ["logits"])
    embeds = torch_model.transformer.w(torch.from_numpy(ids)).detach().numpy()
    assert_matches_torch(CTRLLMHeadModel, torch_model, path, dict(inputs_embeds=embeds, attention_mask=mask),
                         ["logits"], rows=mask.astype(bool))


@pytest.mark.parametrize("ours_cls, fields", [
    (CTRLModel, ["last_hidden_state", "hidden_states", "attentions"]),
    (CTRLForSequenceClassification, ["logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is CTRLModel:
        inputs.update(output_hidden_states=True, output_attentions=True)
    else:
        inputs["labels"] = np.array([0, 2], np.int64)
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "graph", rows=mask.astype(bool))
