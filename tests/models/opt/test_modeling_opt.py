"""OPT family parity with torch `transformers` on tiny random checkpoints."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoModelForCausalLM,
    OPTForCausalLM,
    OPTForQuestionAnswering,
    OPTForSequenceClassification,
    OPTModel,
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
BASE = dict(vocab_size=VOCAB, hidden_size=32, ffn_dim=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=0, bos_token_id=98, eos_token_id=98)
# each variant exercises a config feature of HF's OPT
VARIANTS = {
    # opt-125m's layout: pre-norm, biases, tied head
    "pre_norm": {},
    # opt-350m's layout: post-norm, 16-wide word embeddings projected in and out; no biases, plain LayerNorms
    "post_norm_projected": dict(do_layer_norm_before=False, word_embed_proj_dim=16, enable_bias=False,
                                layer_norm_elementwise_affine=False, activation_function="gelu"),
}


def make_config(**overrides):
    return transformers.OPTConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("pre_norm", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.OPTForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(OPTForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_fp16_close_to_torch_fp32(checkpoints):
    torch_model, path = checkpoints(transformers.OPTForCausalLM)
    assert_causal_lm_matches_torch(OPTForCausalLM, torch_model, path, VOCAB, "graph", dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.OPTForCausalLM, **VARIANTS["post_norm_projected"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(OPTForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch_through_compiled_static_cache(checkpoints):
    torch_model, path = checkpoints(transformers.OPTForCausalLM)
    ours = assert_greedy_tokens_match_torch(AutoModelForCausalLM, torch_model, path, VOCAB)
    assert type(ours) is OPTForCausalLM
    assert compiled_decode_steps(ours), "generate() decoded eagerly instead of through the compiled static cache"


def test_explicit_position_ids_and_inputs_embeds_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.OPTForCausalLM)
    ids, mask, _ = left_padded_batch(VOCAB, seed=2)
    position_ids = np.tile(np.arange(5, 5 + ids.shape[1]), (2, 1)).astype(np.int64)
    assert_matches_torch(OPTForCausalLM, torch_model, path, dict(input_ids=ids, position_ids=position_ids),
                         ["logits"])
    embeds = torch_model.model.decoder.embed_tokens(parity.to_torch_inputs(dict(i=ids))["i"]).detach().numpy()
    assert_matches_torch(OPTForCausalLM, torch_model, path, dict(inputs_embeds=embeds, attention_mask=mask),
                         ["logits"], rows=mask.astype(bool))


@pytest.mark.parametrize("ours_cls, fields", [
    (OPTModel, ["last_hidden_state", "hidden_states", "attentions"]),
    (OPTForSequenceClassification, ["logits", "loss"]),
    (OPTForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is OPTModel:
        inputs.update(output_hidden_states=True, output_attentions=True)
    elif ours_cls is OPTForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is OPTForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    # PyNative: the compiled forward of these layers is covered by the causal-LM tests above
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "pynative", rows=mask.astype(bool))
