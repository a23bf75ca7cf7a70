"""M2M100 / NLLB parity with torch `transformers` on tiny random checkpoints (tests/parity.py).

Two variants: "base" (sqrt(d_model) embedding scale, ReLU, tied LM head) and "unscaled_untied" (no embedding scale,
GELU, separate LM head). Sources are padded on either side: M2M100's sinusoidal positions skip padding tokens, so
left and right padding give different positions to the same token. Translation forces the target language id as
the first generated token (`forced_bos_token_id`).
"""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import AutoModel, AutoModelForSeq2SeqLM, M2M100ForConditionalGeneration, M2M100Model
from mindone.transformers.cache_utils import DynamicCache, EncoderDecoderCache
from tests import parity
from tests.models import head_parity

SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB = 99
PAD, BOS, EOS = 1, 0, 2
LANG_FR, LANG_DE = 90, 91
BASE = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=40,
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS)
VARIANTS = {
    "base": dict(),
    "unscaled_untied": dict(scale_embedding=False, tie_word_embeddings=False, activation_function="gelu"),
}


def make_config(variant, **extra):
    return transformers.M2M100Config(**{**BASE, **VARIANTS[variant], **extra})


def batch(seed=0, batch_size=2, src_len=12, tgt_len=6, padding_side="right"):
    """Encoder ids (source language id first, EOS last, row 1 padded on `padding_side`), mask, labels (-100 tail)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, 89, (batch_size, src_len)).astype(np.int64)
    ids[:, 0] = LANG_DE
    ids[:, -1] = EOS
    mask = np.ones_like(ids)
    if padding_side == "left":
        mask[1, :3] = 0
        ids[1, :3] = PAD
    else:
        ids[1, -4] = EOS
        mask[1, -3:] = 0
        ids[1, -3:] = PAD
    labels = rng.randint(3, 89, (batch_size, tgt_len)).astype(np.int64)
    labels[:, 0] = LANG_FR
    labels[1, -2:] = -100
    return ids, mask, labels


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(variant, torch_cls=transformers.M2M100ForConditionalGeneration):
        key = (variant, torch_cls.__name__)
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(variant), seed=len(made))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(variant))))
        return made[key]

    return get


# compiled graphs cost seconds each: graph mode on one padding side by default, the other under `make test-slow`
@pytest.mark.parametrize("variant, mode, padding_side", [
    ("base", "pynative", "left"), ("base", "pynative", "right"), ("unscaled_untied", "pynative", "left"),
    ("base", "graph", "right"), pytest.param("base", "graph", "left", marks=pytest.mark.slow)])
def test_conditional_generation_matches_torch_fp32(checkpoints, variant, mode, padding_side):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(M2M100ForConditionalGeneration, path)
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
    torch_model, path = checkpoints("base", transformers.M2M100Model)
    ours = parity.load_ours(M2M100Model, path)
    ids, mask, labels = batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=np.where(labels == -100, PAD, labels))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(out, ref, ["last_hidden_state", "encoder_last_hidden_state"])
    parity.assert_close(errors, parity.FP32_BAR, f"M2M100Model/{mode}")


def test_weights_tied_as_configured_and_positions_not_saved(checkpoints, tmp_path):
    _, path = checkpoints("base")
    ours = parity.load_ours(M2M100ForConditionalGeneration, path)
    assert ours.lm_head.weight is ours.model.shared.weight
    assert ours.model.decoder.embed_tokens.weight is ours.model.shared.weight
    assert not any("embed_positions" in name for name in ours.parameters_dict())
    _, path = checkpoints("unscaled_untied")
    assert parity.load_ours(M2M100ForConditionalGeneration, path).lm_head.weight is not ours.model.shared.weight


def test_positions_grow_past_max_position_embeddings(checkpoints):
    """HF extends the sinusoidal table on the fly for longer inputs; so do we (PyNative)."""
    torch_model, path = checkpoints("base")
    ours = parity.load_ours(M2M100ForConditionalGeneration, path)
    rng = np.random.RandomState(2)
    ids = rng.randint(3, 89, (1, 50)).astype(np.int64)
    inputs = dict(input_ids=ids, decoder_input_ids=ids[:, :45])
    errors = parity.compare_outputs(parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs), ["logits"])
    parity.assert_close(errors, parity.FP32_BAR, "long input")


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints("base")
    torch_fp16 = transformers.M2M100ForConditionalGeneration.from_pretrained(
        path, dtype=torch.float16, attn_implementation="eager").eval()
    ours = parity.load_ours(M2M100ForConditionalGeneration, path, dtype="float16")
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
    head_parity.assert_gradients_match_torch(M2M100ForConditionalGeneration, torch_model, path,
                                             dict(input_ids=ids, attention_mask=mask, labels=labels), mode)


def test_cached_decoding_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints("base")
    ours = parity.load_ours(M2M100ForConditionalGeneration, path)
    ids, mask, labels = batch(seed=3)
    decoder_ids = np.where(labels == -100, PAD, labels)
    full = ours(ms.Tensor(ids), attention_mask=ms.Tensor(mask), decoder_input_ids=ms.Tensor(decoder_ids)).logits
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    first = ours(ms.Tensor(ids), attention_mask=ms.Tensor(mask), decoder_input_ids=ms.Tensor(decoder_ids[:, :3]),
                 past_key_values=cache, use_cache=True)
    steps = [first.logits.asnumpy()]
    for t in range(3, decoder_ids.shape[1]):
        step = ours(encoder_outputs=(first.encoder_last_hidden_state,), attention_mask=ms.Tensor(mask),
                    decoder_input_ids=ms.Tensor(decoder_ids[:, t:t + 1]), past_key_values=cache, use_cache=True)
        steps.append(step.logits.asnumpy())
    assert cache.get_seq_length() == decoder_ids.shape[1]
    # the padded tail of row 1 gets position padding_idx in both (incremental positions count real tokens only
    # within the step), so only real target positions are compared
    real = labels != -100
    assert parity.rel_error(np.concatenate(steps, 1), full, real) <= parity.FP32_BAR


# translation: beams, forced target language, forced EOS at max_length
BEAM_KWARGS = dict(num_beams=3, length_penalty=1.0, early_stopping=True, forced_bos_token_id=LANG_FR,
                   forced_eos_token_id=EOS, max_length=10)


GREEDY_KWARGS = dict(max_new_tokens=8, forced_bos_token_id=LANG_FR)


@pytest.fixture(scope="module")
def generation_models(tmp_path_factory):
    """variant -> (torch model, ours): one instance of ours per variant, so its compiled decode steps are reused;
    init_std=1.0 (with this seed) makes the tokens depend on the source (at HF's 0.02 every row decodes the same
    tokens)."""
    return head_parity.seq2seq_generation_models(
        tmp_path_factory, transformers.M2M100ForConditionalGeneration, M2M100ForConditionalGeneration,
        lambda variant: make_config(variant, init_std=1.0), seed=1)


@pytest.mark.parametrize("variant, kwargs, padding_side", [
    ("base", GREEDY_KWARGS, "left"), ("base", GREEDY_KWARGS, "right"), ("base", BEAM_KWARGS, "left"),
    ("unscaled_untied", BEAM_KWARGS, "right"),
    pytest.param("base", BEAM_KWARGS, "right", marks=pytest.mark.slow),
    pytest.param("unscaled_untied", GREEDY_KWARGS, "left", marks=pytest.mark.slow),
], ids=["base-greedy-left", "base-greedy-right", "base-beam-left", "untied-beam-right", "base-beam-right",
        "untied-greedy-left"])
def test_generate_token_ids_equal_torch_compiled_and_dynamic(generation_models, variant, kwargs, padding_side):
    torch_model, ours = generation_models(variant)
    ids, mask, _ = batch(seed=6, padding_side=padding_side)
    ref = head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, do_sample=False, **kwargs)
    assert (ref[:, 1] == LANG_FR).all()
    if "num_beams" not in kwargs:
        assert len({tuple(row) for row in ref}) == len(ref), "the tokens should depend on the source"


def test_saved_dir_loads_in_torch_with_same_logits(checkpoints, tmp_path):
    torch_model, path = checkpoints("unscaled_untied")
    ours = parity.load_ours(M2M100ForConditionalGeneration, path)
    ours.save_pretrained(tmp_path)
    back = transformers.M2M100ForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    assert parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits) == 0


@pytest.mark.parametrize("auto_cls, ours_cls", [(AutoModel, M2M100Model),
                                                (AutoModelForSeq2SeqLM, M2M100ForConditionalGeneration)])
def test_auto_classes_pick_m2m100(checkpoints, auto_cls, ours_cls):
    _, path = checkpoints("base")
    assert type(auto_cls.from_pretrained(path)) is ours_cls
