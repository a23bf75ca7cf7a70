"""UMT5 parity with torch `transformers` on tiny random checkpoints (tests/parity.py).

UMT5 is T5 v1.1 with a relative position bias in every block: the checkpoints here have `relative_attention_bias`
weights in all blocks, and a wrong sharing rule changes every output. Both the v1.1 layout (separate LM head, no
rescale) and the tied layout (LM head = embeddings, decoder output scaled by d_model**-0.5) are covered.
"""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModelForSeq2SeqLM,
    UMT5EncoderModel,
    UMT5ForConditionalGeneration,
    UMT5ForQuestionAnswering,
    UMT5ForSequenceClassification,
    UMT5ForTokenClassification,
    UMT5Model,
)
from tests import parity
from tests.models import head_parity

VOCAB = 99
EOS = 1
BASE = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=3, num_decoder_layers=3, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=12, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=EOS, feed_forward_proj="gated-gelu")
VARIANTS = {"untied": dict(tie_word_embeddings=False), "tied": dict(tie_word_embeddings=True)}


def batch(seed=0, batch_size=2, src_len=14, tgt_len=6):
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
    made = {}

    def get(variant="untied", torch_cls=transformers.UMT5ForConditionalGeneration, **extra):
        key = (variant, torch_cls.__name__, tuple(sorted(extra.items())))
        if key not in made:
            config = transformers.UMT5Config(**{**BASE, **VARIANTS[variant], **extra})
            model = parity.torch_reference(torch_cls, config, seed=len(made))
            if variant == "untied" and hasattr(model, "lm_head"):
                g = torch.Generator().manual_seed(123)
                model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(variant))))
        return made[key]

    return get


def test_every_block_loads_its_own_position_bias(checkpoints):
    torch_model, path = checkpoints()
    ours = parity.load_ours(UMT5ForConditionalGeneration, path)
    for stack in ("encoder", "decoder"):
        for i in range(BASE["num_layers"]):
            key = f"{stack}.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
            ref = torch_model.state_dict()[key].numpy()
            got = getattr(ours, stack).block[i].layer[0].SelfAttention.relative_attention_bias.weight.asnumpy()
            np.testing.assert_array_equal(got, ref)
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(path), UMT5ForConditionalGeneration)


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conditional_generation_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(UMT5ForConditionalGeneration, path)
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                  output_attentions=True)
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, inputs, mode)
    errors = parity.compare_outputs(out, ref, ["logits", "loss", "decoder_hidden_states",
                                               "encoder_last_hidden_state", "encoder_hidden_states"])
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")
    # attention probabilities: mean |p| is 1/keys, so the relative metric doubles the float noise of the softmax
    errors = parity.compare_outputs(out, ref, ["decoder_attentions", "cross_attentions", "encoder_attentions"])
    parity.assert_close(errors, 2 * parity.FP32_BAR, f"{variant}/{mode}")


def test_fp16_close_to_torch_fp32(checkpoints):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.75x of torch's own fp16 error. Measured on 4 tiny checkpoints
    (tied/untied x 2 seeds): logits ours 6.5e-3 .. 7.7e-3, torch fp16 4.6e-3 .. 9.0e-3, neither side systematically
    larger (rounding order differs), so the factor covers one side being luckier than the other on a given seed."""
    torch_model, path = checkpoints()
    torch_fp16 = transformers.UMT5ForConditionalGeneration.from_pretrained(path, dtype=torch.float16,
                                                                            attn_implementation="eager").eval()
    ours = parity.load_ours(UMT5ForConditionalGeneration, path, dtype="float16")
    ids, mask, labels = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    fields = ["logits", "encoder_last_hidden_state"]
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(out, ref, fields)
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, inputs), ref, fields)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.75 * torch_errors[k])}
    assert not bad, f"fp16 errors (ours, torch fp16): {bad}"


def test_parameter_gradients_match_torch(checkpoints):
    torch_model, path = checkpoints()
    ours = parity.load_ours(UMT5ForConditionalGeneration, path)
    ids, mask, labels = batch(seed=2)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs)
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, "grads")


@pytest.mark.parametrize(
    "ours_cls, torch_cls, fields",
    [
        (UMT5Model, transformers.UMT5Model, ["last_hidden_state", "encoder_last_hidden_state"]),
        (UMT5EncoderModel, transformers.UMT5EncoderModel, ["last_hidden_state"]),
        (UMT5ForSequenceClassification, transformers.UMT5ForSequenceClassification, ["logits", "loss"]),
        (UMT5ForTokenClassification, transformers.UMT5ForTokenClassification, ["logits", "loss"]),
        (UMT5ForQuestionAnswering, transformers.UMT5ForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
    ],
)
def test_task_heads_match_torch(checkpoints, ours_cls, torch_cls, fields):
    num_labels = 2 if ours_cls is UMT5ForQuestionAnswering else 3
    torch_model, path = checkpoints("untied", torch_cls, num_labels=num_labels)
    ours = parity.load_ours(ours_cls, path)
    ids, mask, labels = batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is UMT5Model:
        inputs["decoder_input_ids"] = np.where(labels == -100, 0, labels)
    elif ours_cls is UMT5ForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is UMT5ForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is UMT5ForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    rows = mask.astype(bool) if ours_cls in (UMT5EncoderModel, UMT5ForTokenClassification) else None
    errors = {}
    for name in fields:
        sel = mask.astype(bool) if name == "encoder_last_hidden_state" else rows
        errors.update(parity.compare_outputs(out, ref, [name], rows=sel))
    parity.assert_close(errors, parity.FP32_BAR, ours_cls.__name__)


@pytest.fixture(scope="module")
def generation_models(checkpoints):
    """variant -> (torch model, ours): one instance of ours per variant, so its compiled decode steps are reused."""
    made = {}

    def get(variant):
        if variant not in made:
            torch_model, path = checkpoints(variant)
            made[variant] = (torch_model, parity.load_ours(UMT5ForConditionalGeneration, path))
        return made[variant]

    return get


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("beams", [1, 3])
def test_generate_token_ids_equal_torch_compiled_and_dynamic(generation_models, variant, beams):
    """Compiled decoding reads every decoder block's own relative position bias at the step's position."""
    torch_model, ours = generation_models(variant)
    ids, mask, _ = batch(seed=6)
    head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, max_new_tokens=8,
                                                      num_beams=beams, do_sample=False)
