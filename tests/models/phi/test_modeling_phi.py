"""Phi (phi-1/1.5/2) family parity with torch `transformers` on tiny random checkpoints."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoModelForCausalLM,
    PhiForCausalLM,
    PhiForSequenceClassification,
    PhiForTokenClassification,
    PhiModel,
)
from tests import parity
from tests.models.head_parity import (
    assert_causal_lm_matches_torch,
    assert_gradients_match_torch,
    assert_greedy_tokens_match_torch,
    assert_matches_torch,
    checkpoint_factory,
    compiled_decode_steps,
    left_padded_batch,
)

VOCAB = 99
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, pad_token_id=0, bos_token_id=98, eos_token_id=98)
# each variant exercises a config feature of HF's Phi
VARIANTS = {
    # phi-2's layout: RoPE on half of each head, untied LM head with a bias
    "partial_half": {},
    # LayerNorm on every query/key head, grouped kv heads, RoPE on 3/4 of each head, tied embeddings, exact GELU
    "qk_layernorm_gqa": dict(qk_layernorm=True, num_key_value_heads=2, partial_rotary_factor=0.75,
                             tie_word_embeddings=True, hidden_act="gelu"),
}


def make_config(**overrides):
    return transformers.PhiConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("partial_half", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.PhiForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(PhiForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_fp16_close_to_torch_fp32(checkpoints):
    torch_model, path = checkpoints(transformers.PhiForCausalLM)
    assert_causal_lm_matches_torch(PhiForCausalLM, torch_model, path, VOCAB, "graph", dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PhiForCausalLM, **VARIANTS["qk_layernorm_gqa"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(PhiForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch_through_compiled_static_cache(checkpoints):
    torch_model, path = checkpoints(transformers.PhiForCausalLM)
    ours = assert_greedy_tokens_match_torch(AutoModelForCausalLM, torch_model, path, VOCAB)
    assert type(ours) is PhiForCausalLM
    assert compiled_decode_steps(ours), "generate() decoded eagerly instead of through the compiled static cache"


def test_beam_search_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.PhiForCausalLM, **VARIANTS["qk_layernorm_gqa"])
    assert_greedy_tokens_match_torch(PhiForCausalLM, torch_model, path, VOCAB, max_new_tokens=6,
                                     torch_kwargs=dict(num_beams=3), num_beams=3)


@pytest.mark.parametrize("ours_cls, fields", [
    (PhiModel, ["last_hidden_state"]),
    (PhiForSequenceClassification, ["logits", "loss"]),
    (PhiForTokenClassification, ["logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is PhiForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is PhiForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    # PyNative: the compiled forward of these layers is covered by the causal-LM tests above
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "pynative", rows=mask.astype(bool))
