"""Blenderbot Small parity with torch `transformers` on tiny random checkpoints (tests/parity.py).

Two variants: "base" (encoder embedding scale, tied LM head) and "unscaled_untied" (no scale, GELU, separate LM
head). `final_logits_bias` is randomised so it is really tested. `BlenderbotSmallForCausalLM` is the decoder alone.
"""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BlenderbotSmallForCausalLM,
    BlenderbotSmallForConditionalGeneration,
    BlenderbotSmallModel,
)
from tests import parity
from tests.models import head_parity

SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB = 99
PAD, BOS, EOS = 0, 1, 2
BASE = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=40,
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS, scale_embedding=True)
VARIANTS = {
    "base": dict(),
    "unscaled_untied": dict(scale_embedding=False, tie_word_embeddings=False, activation_function="relu"),
}


def make_config(variant, **extra):
    return transformers.BlenderbotSmallConfig(**{**BASE, **VARIANTS[variant], **extra})


def batch(seed=0, batch_size=2, src_len=12, tgt_len=6, padding_side="right"):
    """Encoder ids (EOS last, row 1 padded on `padding_side`), mask, labels (-100 tail)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (batch_size, src_len)).astype(np.int64)
    ids[:, -1] = EOS
    mask = np.ones_like(ids)
    if padding_side == "left":
        mask[1, :3] = 0
        ids[1, :3] = PAD
    else:
        ids[1, -4] = EOS
        mask[1, -3:] = 0
        ids[1, -3:] = PAD
    labels = rng.randint(3, VOCAB, (batch_size, tgt_len)).astype(np.int64)
    labels[1, -2:] = -100
    return ids, mask, labels


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(variant, torch_cls=transformers.BlenderbotSmallForConditionalGeneration):
        key = (variant, torch_cls.__name__)
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(variant), seed=len(made))
            if hasattr(model, "final_logits_bias"):
                g = torch.Generator().manual_seed(7)
                model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(variant))))
        return made[key]

    return get


@pytest.mark.parametrize("variant, mode, padding_side", [
    ("base", "pynative", "left"), ("base", "pynative", "right"), ("unscaled_untied", "pynative", "left"),
    ("base", "graph", "right"), pytest.param("base", "graph", "left", marks=pytest.mark.slow)])
def test_conditional_generation_matches_torch_fp32(checkpoints, variant, mode, padding_side):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(BlenderbotSmallForConditionalGeneration, path)
    ids, mask, labels = batch(padding_side=padding_side)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                  output_attentions=True)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(out, ref, ["logits", "loss", "decoder_hidden_states",
                                               "encoder_last_hidden_state", "encoder_hidden_states"])
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")
    # attention probabilities: mean |p| is 1/keys, so the relative metric doubles the float noise of the softmax
    errors = parity.compare_outputs(out, ref, ["decoder_attentions", "cross_attentions", "encoder_attentions"])
    parity.assert_close(errors, 2 * parity.FP32_BAR, f"{variant}/{mode}")


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_base_model_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints("base", transformers.BlenderbotSmallModel)
    ids, mask, labels = batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=np.where(labels == -100, PAD, labels))
    head_parity.assert_matches_torch(BlenderbotSmallModel, torch_model, path, inputs,
                                     ["last_hidden_state", "encoder_last_hidden_state"], mode)


def test_weights_tied_as_configured(checkpoints):
    _, path = checkpoints("base")
    ours = parity.load_ours(BlenderbotSmallForConditionalGeneration, path)
    assert ours.lm_head.weight is ours.model.shared.weight
    assert ours.model.encoder.embed_tokens.weight is ours.model.shared.weight
    assert not ours.final_logits_bias.requires_grad
    torch_model, path = checkpoints("unscaled_untied")
    ours = parity.load_ours(BlenderbotSmallForConditionalGeneration, path)
    assert ours.lm_head.weight is not ours.model.shared.weight
    np.testing.assert_array_equal(ours.final_logits_bias.asnumpy(), torch_model.final_logits_bias.numpy())


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints("base")
    torch_fp16 = transformers.BlenderbotSmallForConditionalGeneration.from_pretrained(
        path, dtype=torch.float16, attn_implementation="eager").eval()
    ours = parity.load_ours(BlenderbotSmallForConditionalGeneration, path, dtype="float16")
    assert ours.model.shared.weight.dtype == ms.float16
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    fields = ["logits", "loss", "encoder_last_hidden_state"]
    errors = parity.compare_outputs(out, ref, fields)
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, inputs), ref, fields)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", SLOW_GRAPH)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_gradients_match_torch(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ids, mask, labels = batch(seed=1)
    head_parity.assert_gradients_match_torch(BlenderbotSmallForConditionalGeneration, torch_model, path,
                                             dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_causal_lm_matches_torch(checkpoints, mode):
    """The decoder alone: logits, loss (labels not shifted), hidden states, attentions on a left-padded batch."""
    torch_model, path = checkpoints("unscaled_untied", transformers.BlenderbotSmallForCausalLM)
    head_parity.assert_causal_lm_matches_torch(BlenderbotSmallForCausalLM, torch_model, path, VOCAB, mode)


def test_causal_lm_gradients_and_greedy_tokens_match_torch(checkpoints):
    torch_model, path = checkpoints("unscaled_untied", transformers.BlenderbotSmallForCausalLM)
    ids, mask, labels = head_parity.left_padded_batch(VOCAB)
    head_parity.assert_gradients_match_torch(BlenderbotSmallForCausalLM, torch_model, path,
                                             dict(input_ids=ids, attention_mask=mask, labels=labels))
    head_parity.assert_greedy_tokens_match_torch(BlenderbotSmallForCausalLM, torch_model, path, VOCAB)


BEAM_KWARGS = dict(num_beams=3, length_penalty=1.0, no_repeat_ngram_size=3, early_stopping=True, min_length=4,
                   max_length=12)


@pytest.fixture(scope="module")
def generation_models(tmp_path_factory):
    """variant -> (torch model, ours): one instance of ours per variant, so its compiled decode steps are reused;
    init_std=0.5 (with this seed) makes the tokens depend on the source (at HF's 0.02 every row decodes the same
    tokens)."""
    return head_parity.seq2seq_generation_models(
        tmp_path_factory, transformers.BlenderbotSmallForConditionalGeneration, BlenderbotSmallForConditionalGeneration,
        lambda variant: make_config(variant, init_std=0.5), seed=1)


@pytest.mark.parametrize("variant, kwargs, padding_side", [
    ("base", dict(max_new_tokens=8), "left"), ("base", BEAM_KWARGS, "right"),
    ("unscaled_untied", dict(max_new_tokens=8), "right"),
    pytest.param("unscaled_untied", BEAM_KWARGS, "left", marks=pytest.mark.slow),
], ids=["base-greedy-left", "base-beam-right", "untied-greedy-right", "untied-beam-left"])
def test_generate_token_ids_equal_torch_compiled_and_dynamic(generation_models, variant, kwargs, padding_side):
    torch_model, ours = generation_models(variant)
    ids, mask, _ = batch(seed=6, padding_side=padding_side)
    ref = head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, do_sample=False, **kwargs)
    if "num_beams" not in kwargs:
        assert len({tuple(row) for row in ref}) == len(ref), "the tokens should depend on the source"


def test_saved_dir_loads_in_torch_with_same_logits(checkpoints, tmp_path):
    torch_model, path = checkpoints("unscaled_untied")
    ours = parity.load_ours(BlenderbotSmallForConditionalGeneration, path)
    ours.save_pretrained(tmp_path)
    back = transformers.BlenderbotSmallForConditionalGeneration.from_pretrained(
        tmp_path, attn_implementation="eager").eval()
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    assert parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits) == 0


@pytest.mark.parametrize("auto_cls, ours_cls", [(AutoModel, BlenderbotSmallModel),
                                                (AutoModelForSeq2SeqLM, BlenderbotSmallForConditionalGeneration),
                                                (AutoModelForCausalLM, BlenderbotSmallForCausalLM)])
def test_auto_classes_pick_blenderbot_small(checkpoints, auto_cls, ours_cls):
    _, path = checkpoints("base")
    assert type(auto_cls.from_pretrained(path)) is ours_cls
