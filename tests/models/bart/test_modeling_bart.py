"""BART parity with torch `transformers` on tiny random checkpoints (tests/parity.py).

Two variants: "base" (tied LM head and embeddings, no embedding scale) and "scaled_untied" (sqrt(d_model) embedding
scale, separate LM head and encoder/decoder embeddings). `final_logits_bias` is randomised so it is really tested.
"""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BartForConditionalGeneration,
    BartForQuestionAnswering,
    BartForSequenceClassification,
    BartModel,
)
from mindone.transformers.cache_utils import DynamicCache, EncoderDecoderCache
from mindone.transformers.models.bart.modeling_bart import shift_tokens_right
from tests import parity
from tests.models import head_parity

SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB = 99
PAD, BOS, EOS = 1, 0, 2
BASE = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=40,
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS)
VARIANTS = {
    "base": dict(),
    "scaled_untied": dict(scale_embedding=True, tie_word_embeddings=False, activation_function="relu"),
}


def make_config(variant, **extra):
    return transformers.BartConfig(**{**BASE, **VARIANTS[variant], **extra})


def batch(seed=0, batch_size=2, src_len=12, tgt_len=6, padding_side="left"):
    """Encoder ids (row 1 padded on `padding_side`; every row holds exactly one EOS), mask, labels (-100 tail)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (batch_size, src_len)).astype(np.int64)
    mask = np.ones_like(ids)
    if padding_side == "left":
        ids[:, -1] = EOS
        mask[1, :3] = 0
        ids[1, :3] = PAD
    else:
        ids[0, -1] = EOS
        ids[1, -4] = EOS
        mask[1, -3:] = 0
        ids[1, -3:] = PAD
    labels = rng.randint(3, VOCAB, (batch_size, tgt_len)).astype(np.int64)
    labels[1, -2:] = -100
    return ids, mask, labels


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(variant, torch_cls=transformers.BartForConditionalGeneration, **extra):
        key = (variant, torch_cls.__name__, tuple(sorted(extra.items())))
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(variant, **extra), seed=len(made))
            if hasattr(model, "final_logits_bias"):
                g = torch.Generator().manual_seed(7)
                model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(variant))))
        return made[key]

    return get


# graph mode on the base variant only (compile time); the other variant differs in PyNative-visible config only
@pytest.mark.parametrize("variant, mode", [("base", "pynative"), ("base", "graph")]
                         + [(v, "pynative") for v in VARIANTS if v != "base"])
def test_conditional_generation_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant, decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                  output_attentions=True)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(out, ref, ["logits", "loss", "decoder_hidden_states",
                                               "encoder_last_hidden_state", "encoder_hidden_states"])
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")
    # attention probabilities: mean |p| is 1/keys, so the relative metric doubles the float noise of the softmax
    errors = parity.compare_outputs(out, ref, ["decoder_attentions", "cross_attentions", "encoder_attentions"])
    parity.assert_close(errors, 2 * parity.FP32_BAR, f"{variant}/{mode}")


def test_weights_tied_as_configured(checkpoints):
    _, path = checkpoints("base", decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    assert ours.lm_head.weight is ours.model.shared.weight
    assert ours.model.encoder.embed_tokens.weight is ours.model.shared.weight
    assert not ours.final_logits_bias.requires_grad
    torch_model, path = checkpoints("scaled_untied", decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    assert ours.lm_head.weight is not ours.model.shared.weight
    np.testing.assert_array_equal(ours.final_logits_bias.asnumpy(), torch_model.final_logits_bias.numpy())


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger: measured,
    ours (= torch fp16) logits 2.2e-3, encoder_last_hidden_state 5.5e-3 (the post-norm LayerNorm outputs of these
    tiny random weights round to fp16 exactly as torch's do)."""
    torch_model, path = checkpoints("base", decoder_layers=3)
    torch_fp16 = transformers.BartForConditionalGeneration.from_pretrained(
        path, dtype=torch.float16, attn_implementation="eager").eval()
    ours = parity.load_ours(BartForConditionalGeneration, path, dtype="float16")
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
    torch_model, path = checkpoints(variant, decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    ids, mask, labels = batch(seed=1)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    # softmax is shift-invariant per query, so k_proj.bias has a true gradient of 0: both sides hold rounding noise
    key_biases = [n for n in ref_grads if n.endswith("k_proj.bias")]
    for name in key_biases:
        assert float(np.abs(parity.to_numpy(grads[name])).max()) < 1e-6, f"{name}: gradient should be ~0"
    errors = parity.compare_gradients(grads, {n: g for n, g in ref_grads.items() if n not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{variant}/{mode}")


def test_shift_tokens_right_and_decoder_ids_from_labels():
    labels = ms.Tensor(np.array([[5, 6, 7], [8, -100, -100]], np.int64))
    np.testing.assert_array_equal(shift_tokens_right(labels, PAD, EOS).asnumpy(), [[2, 5, 6], [2, 8, 1]])


@pytest.mark.parametrize(
    "ours_cls, torch_cls, fields",
    [
        (BartModel, transformers.BartModel, ["last_hidden_state", "encoder_last_hidden_state"]),
        (BartForSequenceClassification, transformers.BartForSequenceClassification, ["logits", "loss"]),
        (BartForQuestionAnswering, transformers.BartForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
    ],
)
@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_task_heads_match_torch(checkpoints, ours_cls, torch_cls, fields, mode):
    torch_model, path = checkpoints("base", torch_cls, num_labels=3)
    ours = parity.load_ours(ours_cls, path)
    ids, mask, _ = batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is BartForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is BartForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    parity.assert_close(parity.compare_outputs(out, ref, fields), parity.FP32_BAR, f"{ours_cls.__name__}/{mode}")


def test_sequence_classification_rejects_rows_with_different_eos_counts(checkpoints):
    _, path = checkpoints("base", transformers.BartForSequenceClassification, num_labels=3)
    ours = parity.load_ours(BartForSequenceClassification, path)
    ids, mask, _ = batch(seed=4)
    ids[0, 5] = EOS
    with pytest.raises(ValueError, match="same number of <eos> tokens"):
        ours(ms.Tensor(ids), attention_mask=ms.Tensor(mask))


def test_cached_decoding_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints("scaled_untied", decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    ids, mask, labels = batch(seed=3)
    decoder_ids = np.where(labels == -100, PAD, labels)
    full = ours(ms.Tensor(ids), attention_mask=ms.Tensor(mask), decoder_input_ids=ms.Tensor(decoder_ids)).logits
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    first = ours(ms.Tensor(ids), attention_mask=ms.Tensor(mask), decoder_input_ids=ms.Tensor(decoder_ids[:, :4]),
                 past_key_values=cache, use_cache=True)
    steps = [first.logits.asnumpy()]
    for t in range(4, decoder_ids.shape[1]):
        step = ours(encoder_outputs=(first.encoder_last_hidden_state,), attention_mask=ms.Tensor(mask),
                    decoder_input_ids=ms.Tensor(decoder_ids[:, t:t + 1]), past_key_values=cache, use_cache=True)
        steps.append(step.logits.asnumpy())
    assert cache.get_seq_length() == decoder_ids.shape[1]
    assert parity.rel_error(np.concatenate(steps, 1), full) <= parity.FP32_BAR


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints("base", decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 3  # loss, logits, encoder_last_hidden_state
    assert parity.rel_error(out[0], ref[0]) <= parity.FP32_BAR
    assert parity.rel_error(out[1], ref[1]) <= parity.FP32_BAR


# BART summarisation configs (bart-large-cnn): beams, length_penalty, no_repeat_ngram_size, forced BOS/EOS, min_length
BEAM_KWARGS = dict(num_beams=3, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True,
                   forced_bos_token_id=BOS, forced_eos_token_id=EOS, min_length=4, max_length=12)


@pytest.fixture(scope="module")
def generation_models(tmp_path_factory):
    """variant -> (torch model, ours): one instance of ours per variant, so its compiled decode steps are reused;
    init_std=0.5 (with this seed) makes the tokens depend on the source (at HF's 0.02 every row decodes the same
    tokens)."""
    def random_final_logits_bias(torch_model):
        g = torch.Generator().manual_seed(7)
        torch_model.final_logits_bias.copy_(0.1 * torch.randn(torch_model.final_logits_bias.shape, generator=g))

    return head_parity.seq2seq_generation_models(
        tmp_path_factory, transformers.BartForConditionalGeneration, BartForConditionalGeneration,
        lambda variant: make_config(variant, init_std=0.5), seed=2, adjust=random_final_logits_bias)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=8), BEAM_KWARGS], ids=["greedy", "beam"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generate_token_ids_equal_torch_compiled_and_dynamic(generation_models, variant, kwargs, padding_side):
    torch_model, ours = generation_models(variant)
    ids, mask, _ = batch(seed=6, padding_side=padding_side)
    ref = head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, do_sample=False, **kwargs)
    if "num_beams" not in kwargs:
        assert len({tuple(row) for row in ref}) == len(ref), "the tokens should depend on the source"


def test_saved_dir_loads_in_torch_with_same_logits(checkpoints, tmp_path):
    torch_model, path = checkpoints("scaled_untied", decoder_layers=3)
    ours = parity.load_ours(BartForConditionalGeneration, path)
    ours.save_pretrained(tmp_path)
    back = transformers.BartForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    assert parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits) == 0


@pytest.mark.parametrize("auto_cls, ours_cls", [
    (AutoModel, BartModel),
    (AutoModelForSeq2SeqLM, BartForConditionalGeneration),
    (AutoModelForSequenceClassification, BartForSequenceClassification),
    (AutoModelForQuestionAnswering, BartForQuestionAnswering),
])
def test_auto_classes_pick_bart(checkpoints, auto_cls, ours_cls):
    _, path = checkpoints("base", decoder_layers=3)
    assert type(auto_cls.from_pretrained(path)) is ours_cls
