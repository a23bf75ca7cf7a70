"""CodeGen family parity with torch `transformers` on tiny random checkpoints."""

import pytest
import transformers

from mindone.transformers import AutoModelForCausalLM, CodeGenForCausalLM, CodeGenModel
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
# 8 heads of 4 features: each of the 4 shards of the fused qkv projection holds 2 heads
BASE = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=8, n_positions=64, n_ctx=64, rotary_dim=2, n_inner=37,
            pad_token_id=0, bos_token_id=98, eos_token_id=98)


def make_config(**overrides):
    return transformers.CodeGenConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CodeGenForCausalLM)
    assert_causal_lm_matches_torch(CodeGenForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_fp16_close_to_torch_fp32(checkpoints):
    torch_model, path = checkpoints(transformers.CodeGenForCausalLM)
    assert_causal_lm_matches_torch(CodeGenForCausalLM, torch_model, path, VOCAB, "graph", dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CodeGenForCausalLM)
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(CodeGenForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch_through_compiled_static_cache(checkpoints):
    torch_model, path = checkpoints(transformers.CodeGenForCausalLM)
    ours = assert_greedy_tokens_match_torch(AutoModelForCausalLM, torch_model, path, VOCAB)
    assert type(ours) is CodeGenForCausalLM
    assert compiled_decode_steps(ours), "generate() decoded eagerly instead of through the compiled static cache"


def test_base_model_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.CodeGenModel, rotary_dim=4, tie_word_embeddings=True)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert_matches_torch(CodeGenModel, torch_model, path, inputs, ["last_hidden_state", "hidden_states", "attentions"],
                         "pynative", rows=mask.astype(bool))
