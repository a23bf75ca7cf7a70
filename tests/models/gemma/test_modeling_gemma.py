"""Gemma family parity with torch `transformers` on tiny random checkpoints."""

import mindspore as ms
import numpy as np
import pytest
import transformers

from mindone.transformers import (
    GemmaForCausalLM,
    GemmaForSequenceClassification,
    GemmaForTokenClassification,
    GemmaModel,
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
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)
# each variant exercises a config feature of HF's Gemma
VARIANTS = {
    "gqa_untied": {},
    # Gemma's own default: tied head; head_dim independent of hidden_size / heads, attention biases
    "tied_head_dim_biases": dict(tie_word_embeddings=True, head_dim=16, attention_bias=True),
}


def make_config(**overrides):
    return transformers.GemmaConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


# every variant compiled (graph), the base one also in PyNative: the suite shares 2 cores
@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("gqa_untied", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.GemmaForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(GemmaForCausalLM, torch_model, path, VOCAB, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GemmaForCausalLM)
    assert_causal_lm_matches_torch(GemmaForCausalLM, torch_model, path, VOCAB, mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GemmaForCausalLM, **VARIANTS["tied_head_dim_biases"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(GemmaForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.GemmaForCausalLM)
    assert_greedy_tokens_match_torch(GemmaForCausalLM, torch_model, path, VOCAB)


def test_embedding_scale_is_rounded_to_the_model_dtype(checkpoints):
    # HF multiplies by sqrt(hidden_size) cast to the weight dtype: in fp16 sqrt(32) = 5.656854... becomes 5.65625
    _, path = checkpoints(transformers.GemmaForCausalLM)
    ours = parity.load_ours(GemmaForCausalLM, path, dtype="float16")
    ids = np.array([[3, 7]], np.int64)
    out = parity.to_numpy(ours.model.embed_tokens(ms.Tensor(ids)))
    table = parity.to_numpy(ours.model.embed_tokens.weight)[ids[0]]
    expected = (table.astype(np.float16) * np.float16(BASE["hidden_size"] ** 0.5)).astype(np.float32)
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("ours_cls, fields", [
    (GemmaModel, ["last_hidden_state"]),
    (GemmaForSequenceClassification, ["logits", "loss"]),
    (GemmaForTokenClassification, ["logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is GemmaForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is GemmaForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "graph", rows=mask.astype(bool))
