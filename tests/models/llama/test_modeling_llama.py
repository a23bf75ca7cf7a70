"""Llama family parity with torch `transformers` on tiny random checkpoints (tests/parity.py)."""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
)
from tests import parity

VOCAB = 99
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)

# each variant exercises a config feature of HF's Llama
VARIANTS = {
    "gqa_untied": {},
    "mha_tied": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "head_dim_and_biases": dict(head_dim=16, attention_bias=True, mlp_bias=True),
    "rope_linear": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    # max_position_embeddings below the input length, so the dynamic base really grows
    "rope_dynamic": dict(max_position_embeddings=6,
                         rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
    "rope_llama3": dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                         "rope_theta": 500000.0}),
    "rope_yarn": dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                       "rope_theta": 10000.0}),
}


def make_config(**overrides):
    return transformers.LlamaConfig(**{**BASE, **overrides})


def batch(seed=0, batch_size=2, seq_len=9, left_pad=3):
    """Token ids with the second row left-padded, its mask, and labels (-100 on padding)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (batch_size, seq_len)).astype(np.int64)
    mask = np.ones((batch_size, seq_len), np.int64)
    mask[1, :left_pad] = 0
    ids[1, :left_pad] = 0
    labels = np.where(mask == 1, ids, -100)
    return ids, mask, labels


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """variant name -> (torch model, saved dir); built once per module."""
    made = {}

    def get(name, torch_cls=transformers.LlamaForCausalLM, **extra):
        key = (name, torch_cls.__name__, tuple(sorted(extra.items())))
        if key not in made:
            config = make_config(**VARIANTS[name], **extra)
            model = parity.torch_reference(torch_cls, config, seed=len(made))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(name))))
        return made[key]

    return get


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causal_lm_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(LlamaForCausalLM, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                  output_attentions=True)
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, inputs, mode)
    rows = mask.astype(bool)
    errors = parity.compare_outputs(out, ref, ["logits", "hidden_states"], rows=rows)
    errors["attentions"] = max(parity.rel_error(a, b) for a, b in zip(out["attentions"], ref.attentions))
    errors["loss"] = parity.rel_error(out["loss"], ref.loss)
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints("gqa_untied")
    ours = parity.load_ours(LlamaForCausalLM, path, dtype="float16")
    assert ours.dtype == ms.float16
    ids, mask, _ = batch()
    inputs = dict(input_ids=ids, attention_mask=mask)
    errors = parity.compare_outputs(parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs),
                                    ["logits"], rows=mask.astype(bool))
    parity.assert_close(errors, parity.FP16_BAR, f"fp16/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("variant", ["gqa_untied", "mha_tied"])
def test_parameter_gradients_match_torch(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(LlamaForCausalLM, path)
    ids, mask, labels = batch(seed=1)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{variant}/{mode}")


@pytest.mark.parametrize("variant", ["gqa_untied", "mha_tied"])
def test_compiled_training_gradients_match_torch(checkpoints, variant):
    """In training mode under jit the loss runs as F.linear_cross_entropy (no logits kept for the backward)."""
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(LlamaForCausalLM, path)
    ours.set_train(True)
    ids, mask, labels = batch(seed=1)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, "graph")
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"training grads/{variant}")


def test_explicit_position_ids_and_inputs_embeds(checkpoints):
    torch_model, path = checkpoints("gqa_untied")
    ours = parity.load_ours(LlamaForCausalLM, path)
    ids, mask, _ = batch(seed=2)
    position_ids = np.tile(np.arange(5, 5 + ids.shape[1]), (2, 1)).astype(np.int64)
    inputs = dict(input_ids=ids, position_ids=position_ids)
    errors = parity.compare_outputs(parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs), ["logits"])
    embeds = torch_model.model.embed_tokens(torch.from_numpy(ids)).detach().numpy()
    inputs = dict(inputs_embeds=embeds, attention_mask=mask)
    errors.update({"embeds_" + k: v for k, v in parity.compare_outputs(
        parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs), ["logits"],
        rows=mask.astype(bool)).items()})
    parity.assert_close(errors, parity.FP32_BAR)


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints("gqa_untied")
    ours = parity.load_ours(LlamaForCausalLM, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, labels=labels, use_cache=False, output_hidden_states=True, return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 3  # loss, logits, hidden_states
    assert parity.rel_error(out[0], ref[0]) <= parity.FP32_BAR
    assert parity.rel_error(out[1], ref[1]) <= parity.FP32_BAR
    assert len(out[2]) == len(ref[2]) == BASE["num_hidden_layers"] + 1


def test_cache_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints("gqa_untied")
    ours = parity.load_ours(LlamaForCausalLM, path)
    ids, _, _ = batch(seed=3)
    full = ours(ms.Tensor(ids)).logits.asnumpy()
    first = ours(ms.Tensor(ids[:, :6]), use_cache=True)
    nxt = ours(ms.Tensor(ids[:, 6:]), past_key_values=first.past_key_values, use_cache=True)
    assert first.past_key_values.get_seq_length() == ids.shape[1]
    assert parity.rel_error(nxt.logits, full[:, 6:]) <= parity.FP32_BAR


@pytest.mark.parametrize(
    "ours_cls, torch_cls, fields",
    [
        (LlamaModel, transformers.LlamaModel, ["last_hidden_state"]),
        (LlamaForSequenceClassification, transformers.LlamaForSequenceClassification, ["logits", "loss"]),
        (LlamaForTokenClassification, transformers.LlamaForTokenClassification, ["logits", "loss"]),
        (LlamaForQuestionAnswering, transformers.LlamaForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
    ],
)
@pytest.mark.parametrize("mode", parity.MODES)
def test_task_heads_match_torch(checkpoints, ours_cls, torch_cls, fields, mode):
    torch_model, path = checkpoints("gqa_untied", torch_cls, num_labels=3)
    ours = parity.load_ours(ours_cls, path)
    ids, mask, labels = batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is LlamaForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is LlamaForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is LlamaForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    rows = mask.astype(bool) if ours_cls in (LlamaModel, LlamaForTokenClassification) else None
    parity.assert_close(parity.compare_outputs(out, ref, fields, rows=rows), parity.FP32_BAR, ours_cls.__name__)


def test_saved_dir_loads_in_torch_with_same_logits(checkpoints, tmp_path):
    torch_model, path = checkpoints("mha_tied")
    ours = parity.load_ours(LlamaForCausalLM, path)
    ours.save_pretrained(tmp_path)
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, _ = batch()
    inputs = dict(input_ids=ids, attention_mask=mask)
    err = parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits)
    assert err == 0.0
    assert parity.rel_error(parity.run_ours(ours, inputs).logits, parity.run_torch(back, inputs).logits,
                            rows=mask.astype(bool)) <= parity.FP32_BAR
