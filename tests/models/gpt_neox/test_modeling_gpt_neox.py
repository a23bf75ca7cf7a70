"""GPT-NeoX family parity with torch `transformers` on tiny random checkpoints."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoModelForCausalLM,
    GPTNeoXForCausalLM,
    GPTNeoXForQuestionAnswering,
    GPTNeoXForSequenceClassification,
    GPTNeoXForTokenClassification,
    GPTNeoXModel,
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
# each variant exercises a config feature of HF's GPT-NeoX
VARIANTS = {
    # Pythia's layout: parallel residual, RoPE on a quarter of each head, biased projections, untied head
    "parallel_quarter_rotary": {},
    # sequential residual, RoPE on whole heads, no attention biases, tied embeddings
    "sequential_full_rotary": dict(use_parallel_residual=False, partial_rotary_factor=1.0, attention_bias=False,
                                   tie_word_embeddings=True),
}


def make_config(**overrides):
    return transformers.GPTNeoXConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("parallel_quarter_rotary", "pynative")])
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.GPTNeoXForCausalLM, **VARIANTS[variant])
    assert_causal_lm_matches_torch(GPTNeoXForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_fp16_close_to_torch_fp32(checkpoints):
    torch_model, path = checkpoints(transformers.GPTNeoXForCausalLM)
    assert_causal_lm_matches_torch(GPTNeoXForCausalLM, torch_model, path, VOCAB, "graph", dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GPTNeoXForCausalLM)
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(GPTNeoXForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_greedy_generation_matches_torch_through_compiled_static_cache(checkpoints):
    torch_model, path = checkpoints(transformers.GPTNeoXForCausalLM)
    ours = assert_greedy_tokens_match_torch(AutoModelForCausalLM, torch_model, path, VOCAB)
    assert type(ours) is GPTNeoXForCausalLM
    assert compiled_decode_steps(ours), "generate() decoded eagerly instead of through the compiled static cache"


def test_pre_v5_embed_out_checkpoint_loads(checkpoints, tmp_path):
    torch_model, _ = checkpoints(transformers.GPTNeoXForCausalLM)
    from safetensors.torch import save_file

    state = {("embed_out." + k[len("lm_head."):] if k.startswith("lm_head.") else k): v.clone()
             for k, v in torch_model.state_dict().items()}
    torch_model.config.save_pretrained(tmp_path)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ids, _, _ = left_padded_batch(VOCAB, seed=7)
    ours = GPTNeoXForCausalLM.from_pretrained(tmp_path)
    assert parity.rel_error(ours(ids).logits, parity.run_torch(torch_model, dict(input_ids=ids)).logits) \
        <= parity.FP32_BAR


@pytest.mark.parametrize("ours_cls, fields", [
    (GPTNeoXModel, ["last_hidden_state", "hidden_states", "attentions"]),
    (GPTNeoXForSequenceClassification, ["logits", "loss"]),
    (GPTNeoXForTokenClassification, ["logits", "loss"]),
    (GPTNeoXForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is GPTNeoXModel:
        inputs.update(output_hidden_states=True, output_attentions=True)
    elif ours_cls is GPTNeoXForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is GPTNeoXForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is GPTNeoXForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    # PyNative: the compiled forward of these layers is covered by the causal-LM tests above
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "pynative", rows=mask.astype(bool))
