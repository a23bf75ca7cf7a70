"""GPT-J family parity with torch `transformers` on tiny random checkpoints."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoModelForCausalLM,
    GPTJForCausalLM,
    GPTJForQuestionAnswering,
    GPTJForSequenceClassification,
    GPTJModel,
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
BASE = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4, pad_token_id=0,
            bos_token_id=98, eos_token_id=98)
# each variant exercises a config feature of HF's GPT-J
VARIANTS = {
    # GPT-J-6B's layout: interleaved RoPE on part of each head (4 of 8 features), untied head with a bias
    "partial_rotary": {},
    # RoPE on whole heads, explicit MLP width, exact GELU, tied embeddings
    "full_rotary_tied": dict(rotary_dim=8, n_inner=37, activation_function="gelu", tie_word_embeddings=True),
}


def make_config(**overrides):
    return transformers.GPTJConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("partial_rotary", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.GPTJForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(GPTJForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_fp16_close_to_torch_fp32(checkpoints):
    torch_model, path = checkpoints(transformers.GPTJForCausalLM)
    assert_causal_lm_matches_torch(GPTJForCausalLM, torch_model, path, VOCAB, "graph", dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GPTJForCausalLM)
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(GPTJForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch_through_compiled_static_cache(checkpoints):
    torch_model, path = checkpoints(transformers.GPTJForCausalLM)
    ours = assert_greedy_tokens_match_torch(AutoModelForCausalLM, torch_model, path, VOCAB)
    assert type(ours) is GPTJForCausalLM
    assert compiled_decode_steps(ours), "generate() decoded eagerly instead of through the compiled static cache"


@pytest.mark.parametrize("ours_cls, fields", [
    (GPTJModel, ["last_hidden_state", "hidden_states", "attentions"]),
    (GPTJForSequenceClassification, ["logits", "loss"]),
    (GPTJForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is GPTJModel:
        inputs.update(output_hidden_states=True, output_attentions=True)
    elif ours_cls is GPTJForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is GPTJForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    # PyNative: the compiled forward of these layers is covered by the causal-LM tests above
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "pynative", rows=mask.astype(bool))
