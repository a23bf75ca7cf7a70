"""GPT-2 family parity with torch `transformers` on tiny random checkpoints (tests/parity.py)."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
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
BASE = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0, bos_token_id=98,
            eos_token_id=98)
# each variant exercises a config feature of HF's GPT-2
VARIANTS = {
    "tied": {},
    # untied head, explicit MLP width, exact GELU, per-layer 1/(layer_idx + 1) score scaling, upcast attention
    "untied_options": dict(tie_word_embeddings=False, n_inner=37, activation_function="gelu",
                           scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True),
}


def make_config(**overrides):
    return transformers.GPT2Config(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("tied", "pynative")])
def test_lm_head_model_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel, **VARIANTS[variant])
    assert_causal_lm_matches_torch(GPT2LMHeadModel, torch_model, path, VOCAB, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_lm_head_model_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel)
    assert_causal_lm_matches_torch(GPT2LMHeadModel, torch_model, path, VOCAB, mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_match_torch_with_tied_head(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel)
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    assert_gradients_match_torch(GPT2LMHeadModel, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


@pytest.mark.parametrize("cache_implementation", ["static", "dynamic"])
def test_greedy_generation_matches_torch_left_padded_batch(checkpoints, cache_implementation):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel)
    assert_greedy_tokens_match_torch(GPT2LMHeadModel, torch_model, path, VOCAB,
                                     cache_implementation=cache_implementation)


def test_greedy_generation_with_token_type_ids_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel)
    ours = parity.load_ours(GPT2LMHeadModel, path)
    ids, mask, _ = left_padded_batch(VOCAB, seed=6)
    types = (np.arange(ids.shape[1])[None, :] >= 5).astype(np.int64).repeat(2, 0) + 3
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                   token_type_ids=torch.tensor(types), do_sample=False, max_new_tokens=6,
                                   pad_token_id=0).numpy()
    out = parity.to_numpy(ours.generate(ids, attention_mask=mask, token_type_ids=types, do_sample=False,
                                        max_new_tokens=6, pad_token_id=0))
    assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"


def test_token_types_positions_and_inputs_embeds_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel)
    ids, mask, _ = left_padded_batch(VOCAB, seed=2)
    position_ids = np.tile(np.arange(5, 5 + ids.shape[1]), (2, 1)).astype(np.int64)
    token_type_ids = (ids % 4).astype(np.int64)
    assert_matches_torch(GPT2LMHeadModel, torch_model, path,
                         dict(input_ids=ids, position_ids=position_ids, token_type_ids=token_type_ids), ["logits"])
    embeds = torch_model.transformer.wte(torch.from_numpy(ids)).detach().numpy()
    assert_matches_torch(GPT2LMHeadModel, torch_model, path, dict(inputs_embeds=embeds, attention_mask=mask),
                         ["logits"], rows=mask.astype(bool))


def test_cache_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints(transformers.GPT2LMHeadModel)
    ours = parity.load_ours(GPT2LMHeadModel, path)
    ids, _, _ = left_padded_batch(VOCAB, seed=3)
    full = ours(ids).logits
    first = ours(ids[:, :6], use_cache=True)
    nxt = ours(ids[:, 6:], cache=first.cache, use_cache=True)
    assert first.past_key_values.get_seq_length() == ids.shape[1]
    assert parity.rel_error(nxt.logits, parity.to_numpy(full)[:, 6:]) <= parity.FP32_BAR


def test_old_checkpoint_mask_buffers_are_ignored(checkpoints, tmp_path):
    torch_model, _ = checkpoints(transformers.GPT2LMHeadModel)
    state = {k: v.clone() for k, v in torch_model.state_dict().items() if k != "lm_head.weight"}
    for i in range(BASE["n_layer"]):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
    torch_model.config.save_pretrained(tmp_path)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    model, info = ours if isinstance(ours, tuple) else (ours, None)
    if info is not None:
        assert not info["missing_keys"], info
    ids, _, _ = left_padded_batch(VOCAB, seed=7)
    ref = parity.run_torch(torch_model, dict(input_ids=ids)).logits
    assert parity.rel_error(model(ids).logits, ref) <= parity.FP32_BAR


@pytest.mark.parametrize("ours_cls, fields", [
    (GPT2Model, ["last_hidden_state", "hidden_states", "attentions"]),
    (GPT2ForSequenceClassification, ["logits", "loss"]),
    (GPT2ForTokenClassification, ["logits", "loss"]),
    (GPT2ForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is GPT2Model:
        inputs.update(output_hidden_states=True, output_attentions=True)
    elif ours_cls is GPT2ForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is GPT2ForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is GPT2ForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "graph", rows=mask.astype(bool))


def _encoder_inputs(seed=8, batch_size=2, enc_len=5):
    rng = np.random.RandomState(seed)
    states = rng.randn(batch_size, enc_len, BASE["n_embd"]).astype(np.float32)
    mask = np.ones((batch_size, enc_len), np.int64)
    mask[0, -2:] = 0
    return states, mask


@pytest.mark.parametrize("mode", parity.MODES)
def test_cross_attention_decoder_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel, add_cross_attention=True,
                                    **VARIANTS["untied_options"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=9)
    states, enc_mask = _encoder_inputs()
    inputs = dict(input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
                  encoder_attention_mask=enc_mask, labels=labels, output_attentions=True, output_hidden_states=True)
    assert_matches_torch(GPT2LMHeadModel, torch_model, path, inputs,
                         ["logits", "loss", "hidden_states", "attentions", "cross_attentions"], mode,
                         rows=mask.astype(bool))


def test_cross_attention_greedy_generation_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.GPT2LMHeadModel, add_cross_attention=True)
    ours = parity.load_ours(GPT2LMHeadModel, path)
    states, enc_mask = _encoder_inputs(seed=10)
    ids, mask, _ = left_padded_batch(VOCAB, seed=11)
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                   encoder_hidden_states=torch.tensor(states),
                                   encoder_attention_mask=torch.tensor(enc_mask), do_sample=False, max_new_tokens=6,
                                   pad_token_id=0).numpy()
    out = parity.to_numpy(ours.generate(ids, attention_mask=mask, encoder_hidden_states=states,
                                        encoder_attention_mask=enc_mask, do_sample=False, max_new_tokens=6,
                                        pad_token_id=0))
    assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"


def test_text_generation_pipeline_matches_torch(tmp_path):
    from mindone.transformers import pipeline
    from tests.generation.helpers import VOCAB as TOKENIZER_VOCAB
    from tests.generation.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = make_config(vocab_size=TOKENIZER_VOCAB, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    parity.save_torch(parity.torch_reference(transformers.GPT2LMHeadModel, config), str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    prompts = ["The capital of France", "Once upon a time there"]
    ours = pipeline("text-generation", model=str(tmp_path))(prompts, max_new_tokens=8, do_sample=False)
    ref = transformers.pipeline("text-generation", model=str(tmp_path), device="cpu")(prompts, max_new_tokens=8,
                                                                                      do_sample=False)
    assert ours == ref
    assert all(len(r[0]["generated_text"]) > len(p) for r, p in zip(ours, prompts))  # tokens were generated
