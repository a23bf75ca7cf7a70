"""BERT family parity with torch `transformers` on tiny random checkpoints (every head, both modes)."""

import numpy as np
import pytest
import transformers

import mindspore as ms
from mindone.transformers import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLMHeadModel,
    BertModel,
)
from tests import parity
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch, checkpoint_factory

VOCAB = 99
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3, pad_token_id=0)


def make_config(**overrides):
    return transformers.BertConfig(**{**BASE, **overrides})


def batch(seed=0, batch_size=2, seq_len=9, pad=3):
    """Right-padded second row (BERT tokenizers pad on the right), segment ids and the padding mask."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (batch_size, seq_len)).astype(np.int64)
    mask = np.ones((batch_size, seq_len), np.int64)
    mask[1, seq_len - pad:] = 0
    ids[1, seq_len - pad:] = 0
    token_type_ids = (np.arange(seq_len)[None, :] >= seq_len // 2).astype(np.int64).repeat(batch_size, 0)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=token_type_ids)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


HEADS = [
    (BertModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], {}),
    (BertForMaskedLM, ["logits", "loss"], {"labels": "tokens"}),
    (BertForSequenceClassification, ["logits", "loss"], {"labels": np.array([0, 2], np.int64)}),
    (BertForTokenClassification, ["logits", "loss"], {"labels": "token_classes"}),
    (BertForQuestionAnswering, ["start_logits", "end_logits", "loss"],
     {"start_positions": np.array([1, 4], np.int64), "end_positions": np.array([3, 20], np.int64)}),
    (BertForPreTraining, ["prediction_logits", "seq_relationship_logits", "loss"],
     {"labels": "tokens", "next_sentence_label": np.array([1, 0], np.int64)}),
    (BertForNextSentencePrediction, ["logits", "loss"], {"labels": np.array([1, 0], np.int64)}),
]


def _inputs_for(extra, seed=4):
    inputs = batch(seed)
    mask = inputs["attention_mask"]
    for key, value in extra.items():
        if isinstance(value, str):
            value = np.where(mask == 1, inputs["input_ids"] % (3 if value == "token_classes" else VOCAB), -100)
        inputs[key] = value
    return inputs


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("ours_cls, fields, extra", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_heads_match_torch_fp32(checkpoints, ours_cls, fields, extra, mode):
    # HF's QA head splits its logits in two: it needs num_labels == 2
    overrides = {"num_labels": 2} if ours_cls is BertForQuestionAnswering else {}
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), **overrides)
    inputs = dict(_inputs_for(extra), output_hidden_states=True, output_attentions=True)
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_multiple_choice_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BertForMultipleChoice)
    a, b = batch(seed=5), batch(seed=6)
    inputs = {k: np.stack([a[k], b[k]]) for k in a}  # (B=2, choices=2, S)
    inputs["labels"] = np.array([1, 0], np.int64)
    assert_matches_torch(BertForMultipleChoice, torch_model, path, inputs, ["logits", "loss"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BertForMaskedLM)
    assert_matches_torch(BertForMaskedLM, torch_model, path, batch(seed=7), ["logits"], mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_masked_lm_gradients_match_torch_with_tied_decoder(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BertForMaskedLM)
    assert_gradients_match_torch(BertForMaskedLM, torch_model, path, _inputs_for({"labels": "tokens"}, seed=8),
                                 mode)


def test_tied_decoder_shares_the_word_embedding(checkpoints):
    _, path = checkpoints(transformers.BertForMaskedLM)
    ours = parity.load_ours(BertForMaskedLM, path)
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias


@pytest.mark.parametrize("mode", parity.MODES)
def test_decoder_with_cross_attention_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BertLMHeadModel, is_decoder=True, add_cross_attention=True)
    inputs = batch(seed=9)
    inputs["attention_mask"] = np.ones_like(inputs["attention_mask"])
    rng = np.random.RandomState(9)
    inputs.update(encoder_hidden_states=rng.randn(2, 5, BASE["hidden_size"]).astype(np.float32),
                  encoder_attention_mask=np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64),
                  labels=inputs["input_ids"], output_attentions=True, use_cache=False)
    assert_matches_torch(BertLMHeadModel, torch_model, path, inputs, ["logits", "loss", "attentions",
                                                                      "cross_attentions"], mode)


def test_decoder_cache_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints(transformers.BertLMHeadModel, is_decoder=True)
    ours = parity.load_ours(BertLMHeadModel, path)
    ids = batch(seed=10)["input_ids"][:1]
    full = ours(ms.Tensor(ids), use_cache=False).logits.asnumpy()
    first = ours(ms.Tensor(ids[:, :5]), use_cache=True)
    nxt = ours(ms.Tensor(ids[:, 5:]), past_key_values=first.past_key_values, use_cache=True)
    assert parity.rel_error(nxt.logits, full[:, 5:]) <= parity.FP32_BAR


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints(transformers.BertForSequenceClassification)
    ours = parity.load_ours(BertForSequenceClassification, path)
    inputs = dict(batch(seed=11), labels=np.array([1, 2], np.int64), return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 2
    assert parity.rel_error(out[1], ref[1]) <= parity.FP32_BAR


def test_base_checkpoint_loads_into_head_model(checkpoints):
    """A BertModel checkpoint (no `bert.` prefix) loads into a head model; only the head is new."""
    _, path = checkpoints(transformers.BertModel)
    ours, info = BertForSequenceClassification.from_pretrained(path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert info["unexpected_keys"] == []
