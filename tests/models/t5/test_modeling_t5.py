"""T5 family parity with torch `transformers` on tiny random checkpoints (tests/parity.py).

Two architectures: v1.0 (ReLU, LM head tied to the embeddings, decoder output scaled by d_model**-0.5) and v1.1 / Flan
(gated-GELU, a separate LM head stored in the checkpoint, no scaling).
"""

import numpy as np
import pytest
import torch
import transformers
from transformers.models.t5.modeling_t5 import T5Attention as TorchT5Attention

import mindspore as ms
from mindone.transformers import (
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5ForQuestionAnswering,
    T5ForSequenceClassification,
    T5ForTokenClassification,
    T5Model,
)
from mindone.transformers.cache_utils import DynamicCache, EncoderDecoderCache
from mindone.transformers.models.t5.modeling_t5 import relative_position_bucket_table
from tests import parity
from tests.models import head_parity

# graph-mode twins of the longer tests run under `make test-slow` (the PyNative ones stay in `make test`)
SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB = 99
EOS = 1
BASE = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=12, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=EOS)
VARIANTS = {
    "v1_0": dict(feed_forward_proj="relu"),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def make_config(variant, **extra):
    return transformers.T5Config(**{**BASE, **VARIANTS[variant], **extra})


def batch(seed=0, batch_size=2, src_len=14, tgt_len=6):
    """Encoder ids (row 1 left-padded; both rows end with one EOS), their mask, and labels (-100 at the end of
    row 1). The source is longer than relative_attention_max_distance, so the far buckets are used."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(2, VOCAB, (batch_size, src_len)).astype(np.int64)
    ids[:, -1] = EOS
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = 0
    labels = rng.randint(2, VOCAB, (batch_size, tgt_len)).astype(np.int64)
    labels[1, -2:] = -100
    return ids, mask, labels


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(variant, torch class, extra config) -> (torch model, saved dir); v1.1 gets its own random LM head, as the
    real Flan checkpoints store one (transformers 5 would otherwise tie it)."""
    made = {}

    def get(variant, torch_cls=transformers.T5ForConditionalGeneration, **extra):
        key = (variant, torch_cls.__name__, tuple(sorted(extra.items())))
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(variant, **extra), seed=len(made))
            if variant == "v1_1" and hasattr(model, "lm_head"):
                g = torch.Generator().manual_seed(123)
                model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(variant))))
        return made[key]

    return get


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 12), (16, 20)])
def test_relative_position_buckets_equal_torch(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-3 * max_distance, 3 * max_distance)
    ref = TorchT5Attention._relative_position_bucket(relative, bidirectional=bidirectional, num_buckets=num_buckets,
                                                     max_distance=max_distance).numpy()
    table = relative_position_bucket_table(bidirectional, num_buckets, max_distance)
    r = relative.numpy()
    if bidirectional:
        ours = (r > 0) * (num_buckets // 2) + table[np.minimum(np.abs(r), max_distance)]
    else:
        ours = table[np.minimum(np.maximum(-r, 0), max_distance)]
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conditional_generation_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                  output_attentions=True)
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, inputs, mode)
    # the encoder mask hides padded keys only, so padded positions have well-defined outputs too
    errors = parity.compare_outputs(out, ref, ["logits", "loss", "decoder_hidden_states",
                                               "encoder_last_hidden_state", "encoder_hidden_states"])
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")
    # attention probabilities: mean |p| is 1/keys, so the relative metric doubles the float noise of the softmax
    errors = parity.compare_outputs(out, ref, ["decoder_attentions", "cross_attentions", "encoder_attentions"])
    parity.assert_close(errors, 2 * parity.FP32_BAR, f"{variant}/{mode}")


def test_v1_1_head_is_loaded_untied_and_v1_0_head_tied(checkpoints):
    torch_model, path = checkpoints("v1_1")
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    assert ours.lm_head.weight is not ours.shared.weight
    np.testing.assert_array_equal(ours.lm_head.weight.asnumpy(), torch_model.lm_head.weight.detach().numpy())
    assert not ours.scale_decoder_outputs
    _, path = checkpoints("v1_0")
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    assert ours.lm_head.weight is ours.shared.weight
    assert ours.encoder.embed_tokens.weight is ours.shared.weight
    assert ours.scale_decoder_outputs


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fp16_close_to_torch_fp32(checkpoints, variant, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error where HF's fp16 math cannot
    reach the bar (the unit-variance LM head of these tiny checkpoints: torch fp16 itself is 7e-3 .. 9e-3 off)."""
    torch_model, path = checkpoints(variant)
    torch_fp16 = transformers.T5ForConditionalGeneration.from_pretrained(path, dtype=torch.float16,
                                                                          attn_implementation="eager").eval()
    ours = parity.load_ours(T5ForConditionalGeneration, path, dtype="float16")
    assert ours.shared.weight.dtype == ms.float16
    # HF keeps `wo` in float32 for float16 loads
    assert ours.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == ms.float32
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    fields = ["logits", "loss", "encoder_last_hidden_state"]
    errors = parity.compare_outputs(out, ref, fields)
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, inputs), ref, fields)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{variant}/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", SLOW_GRAPH)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_gradients_match_torch(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    ids, mask, labels = batch(seed=1)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{variant}/{mode}")


def test_shift_right_and_decoder_ids_from_labels(checkpoints):
    _, path = checkpoints("v1_0")
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    labels = np.array([[5, 6, 7], [8, -100, -100]], np.int64)
    shifted = ours.prepare_decoder_input_ids_from_labels(ms.Tensor(labels)).asnumpy()
    np.testing.assert_array_equal(shifted, [[0, 5, 6], [0, 8, 0]])


@pytest.mark.parametrize(
    "ours_cls, torch_cls, fields",
    [
        (T5Model, transformers.T5Model, ["last_hidden_state", "encoder_last_hidden_state"]),
        (T5EncoderModel, transformers.T5EncoderModel, ["last_hidden_state"]),
        (T5ForSequenceClassification, transformers.T5ForSequenceClassification, ["logits", "loss"]),
        (T5ForTokenClassification, transformers.T5ForTokenClassification, ["logits", "loss"]),
        (T5ForQuestionAnswering, transformers.T5ForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
    ],
)
@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_task_heads_match_torch(checkpoints, ours_cls, torch_cls, fields, mode):
    num_labels = 2 if ours_cls is T5ForQuestionAnswering else 3
    torch_model, path = checkpoints("v1_1", torch_cls, num_labels=num_labels)
    ours = parity.load_ours(ours_cls, path)
    ids, mask, labels = batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is T5Model:
        inputs["decoder_input_ids"] = np.where(labels == -100, 0, labels)
    elif ours_cls is T5ForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is T5ForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is T5ForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    rows = mask.astype(bool) if ours_cls in (T5EncoderModel, T5ForTokenClassification) else None
    errors = {}
    for name in fields:
        sel = mask.astype(bool) if name == "encoder_last_hidden_state" else rows
        errors.update(parity.compare_outputs(out, ref, [name], rows=sel))
    parity.assert_close(errors, parity.FP32_BAR, f"{ours_cls.__name__}/{mode}")


def test_encoder_model_loads_the_encoder_of_a_full_checkpoint(checkpoints):
    torch_model, path = checkpoints("v1_1")
    ours = parity.load_ours(T5EncoderModel, path)
    ids, mask, _ = batch(seed=5)
    ref = torch_model.encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    out = parity.run_ours(ours, dict(input_ids=ids, attention_mask=mask))
    assert parity.rel_error(out["last_hidden_state"], ref.last_hidden_state, mask.astype(bool)) <= parity.FP32_BAR


def test_cached_decoding_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints("v1_1")
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    ids, mask, labels = batch(seed=3)
    decoder_ids = np.where(labels == -100, 0, labels)
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
    torch_model, path = checkpoints("v1_0")
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False, return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 3  # loss, logits, encoder_last_hidden_state
    assert parity.rel_error(out[0], ref[0]) <= parity.FP32_BAR
    assert parity.rel_error(out[1], ref[1]) <= parity.FP32_BAR


@pytest.fixture(scope="module")
def generation_models(tmp_path_factory):
    """variant -> (torch model, ours): one instance of ours per variant, so its compiled decode steps are reused.
    transformers 5.23's cache sizes itself by num_layers, so its generate needs a symmetric model; a larger
    initializer_factor makes the tokens depend on the source (at 1.0 every row decodes the same token)."""
    return head_parity.seq2seq_generation_models(
        tmp_path_factory, transformers.T5ForConditionalGeneration, T5ForConditionalGeneration,
        lambda variant: make_config(variant, num_decoder_layers=BASE["num_layers"], initializer_factor=5.0), seed=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("beams", [1, 3])
def test_generate_token_ids_equal_torch_compiled_and_dynamic(generation_models, variant, beams):
    """Compiled decoding: static self-attention cache, cross-attention keys/values projected once, the relative
    position bias of the step's position, the encoder padding mask as an input."""
    torch_model, ours = generation_models(variant)
    ids, mask, _ = batch(seed=6)
    ref = head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, max_new_tokens=8,
                                                            num_beams=beams, do_sample=False)
    if beams == 1:
        assert len({tuple(row) for row in ref}) == 2, "the tokens should depend on the source"


def test_sources_of_different_lengths_share_one_compiled_step(generation_models):
    """The encoder output is padded to a length bucket whose extra positions the encoder mask hides (a mask of ones
    is made when none is given): a 9- and a 20-token source decode with the same compiled step, torch's tokens."""
    torch_model, ours = generation_models("v1_1")
    ids, mask, _ = batch(seed=7, src_len=9)
    head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, max_new_tokens=8, do_sample=False)
    unpadded = np.random.RandomState(8).randint(2, VOCAB, (2, 20)).astype(np.int64)
    with torch.no_grad():
        ref = torch_model.generate(torch.from_numpy(unpadded), max_new_tokens=8, do_sample=False).numpy()
    np.testing.assert_array_equal(parity.to_numpy(ours.generate(unpadded, max_new_tokens=8, do_sample=False)), ref)
    steps = [key for key in head_parity.compiled_decode_steps(ours) if key[0] == 2]
    assert len(steps) == 1 and steps[0][3] == 64, steps


def test_generate_without_a_mask_does_not_infer_one_from_pad_tokens_as_torch(generation_models):
    """No attention_mask for an encoder-decoder source: transformers 5 reads no padding from pad tokens (it infers a
    mask for decoder-only models only), so a padded row decodes as if its pads were text; ours the same."""
    torch_model, ours = generation_models("v1_0")
    ids, mask, _ = batch(seed=6)
    with torch.no_grad():
        ref = torch_model.generate(torch.from_numpy(ids), max_new_tokens=8, do_sample=False).numpy()
        masked = torch_model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=8,
                                      do_sample=False).numpy()
    assert not np.array_equal(ref, masked), "the padded row should decode differently without its mask"
    for kwargs in ({}, {"cache_implementation": "dynamic"}):
        out = parity.to_numpy(ours.generate(ids, max_new_tokens=8, do_sample=False, **kwargs))
        np.testing.assert_array_equal(out, ref)


def test_saved_dir_loads_in_torch_with_same_logits(checkpoints, tmp_path):
    torch_model, path = checkpoints("v1_1")
    ours = parity.load_ours(T5ForConditionalGeneration, path)
    ours.save_pretrained(tmp_path)
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    assert parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits) == 0
