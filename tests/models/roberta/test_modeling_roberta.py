"""RoBERTa parity with torch `transformers` on tiny random checkpoints (every head, both modes, greedy decoding)."""

import numpy as np
import pytest
import transformers

import mindspore as ms
from mindone.transformers import (
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)
from mindone.transformers.models.roberta.modeling_roberta import create_position_ids_from_input_ids
from tests import parity
from tests.models.head_parity import (
    assert_gradients_match_torch,
    assert_greedy_tokens_match_torch,
    assert_matches_torch,
    checkpoint_factory,
)

VOCAB = 99
PAD = 1  # RoBERTa's <pad>: positions start at PAD + 1
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, type_vocab_size=1, num_labels=3, pad_token_id=PAD, bos_token_id=0,
            eos_token_id=2)


def make_config(**overrides):
    return transformers.RobertaConfig(**{**BASE, **overrides})


def batch(seed=0, batch_size=2, seq_len=9, pad=3):
    """Right-padded second row (RoBERTa tokenizers pad on the right with <pad> = 1) and its mask."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (batch_size, seq_len)).astype(np.int64)
    mask = np.ones((batch_size, seq_len), np.int64)
    mask[1, seq_len - pad:] = 0
    ids[1, seq_len - pad:] = PAD
    return dict(input_ids=ids, attention_mask=mask)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


HEADS = [
    (RobertaModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], {}),
    (RobertaForMaskedLM, ["logits", "loss"], {"labels": "tokens"}),
    (RobertaForSequenceClassification, ["logits", "loss"], {"labels": np.array([0, 2], np.int64)}),
    (RobertaForTokenClassification, ["logits", "loss"], {"labels": "token_classes"}),
    (RobertaForQuestionAnswering, ["start_logits", "end_logits", "loss"],
     {"start_positions": np.array([1, 4], np.int64), "end_positions": np.array([3, 20], np.int64)}),
]


def _inputs_for(extra, seed=4):
    inputs = batch(seed)
    mask = inputs["attention_mask"]
    for key, value in extra.items():
        if isinstance(value, str):
            value = np.where(mask == 1, inputs["input_ids"] % (3 if value == "token_classes" else VOCAB), -100)
        inputs[key] = value
    return inputs


def test_position_ids_count_real_tokens_from_padding_idx():
    ids = ms.Tensor(np.array([[5, 6, 7, PAD, PAD], [PAD, 8, PAD, 9, 4]], np.int64))
    expected = np.array([[2, 3, 4, 1, 1], [1, 2, 1, 3, 4]])
    assert np.array_equal(create_position_ids_from_input_ids(ids, PAD).asnumpy(), expected)
    assert np.array_equal(create_position_ids_from_input_ids(ids, PAD, 3).asnumpy(),
                          np.where(expected == 1, 1, expected + 3))


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("ours_cls, fields, extra", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_heads_match_torch_fp32(checkpoints, ours_cls, fields, extra, mode):
    # HF's QA head splits its logits in two: it needs num_labels == 2
    overrides = {"num_labels": 2} if ours_cls is RobertaForQuestionAnswering else {}
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), **overrides)
    inputs = dict(_inputs_for(extra), output_hidden_states=True, output_attentions=True)
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_inputs_embeds_positions_match_torch(checkpoints, mode):
    """From embeddings no padding is visible: positions run padding_idx + 1 .. + S for every row."""
    torch_model, path = checkpoints(transformers.RobertaModel)
    embeds = np.random.RandomState(3).randn(2, 7, BASE["hidden_size"]).astype(np.float32)
    assert_matches_torch(RobertaModel, torch_model, path, {"inputs_embeds": embeds}, ["last_hidden_state"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_multiple_choice_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.RobertaForMultipleChoice)
    a, b = batch(seed=5), batch(seed=6)
    inputs = {k: np.stack([a[k], b[k]]) for k in a}  # (B=2, choices=2, S)
    inputs["labels"] = np.array([1, 0], np.int64)
    assert_matches_torch(RobertaForMultipleChoice, torch_model, path, inputs, ["logits", "loss"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.RobertaForCausalLM, is_decoder=True)
    inputs = dict(batch(seed=9), output_hidden_states=True, output_attentions=True, use_cache=False)
    inputs["labels"] = np.where(inputs["attention_mask"] == 1, inputs["input_ids"], -100)
    rows = inputs["attention_mask"].astype(bool)
    assert_matches_torch(RobertaForCausalLM, torch_model, path, inputs, ["logits", "loss", "hidden_states"], mode,
                         rows=rows)


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.RobertaForMaskedLM)
    assert_matches_torch(RobertaForMaskedLM, torch_model, path, batch(seed=7), ["logits"], mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_masked_lm_gradients_match_torch_with_tied_decoder(checkpoints, mode):
    torch_model, path = checkpoints(transformers.RobertaForMaskedLM)
    assert_gradients_match_torch(RobertaForMaskedLM, torch_model, path, _inputs_for({"labels": "tokens"}, seed=8),
                                 mode)


def test_tied_decoder_shares_the_word_embedding(checkpoints):
    _, path = checkpoints(transformers.RobertaForMaskedLM)
    ours = parity.load_ours(RobertaForMaskedLM, path)
    assert ours.lm_head.decoder.weight is ours.roberta.embeddings.word_embeddings.weight
    assert ours.lm_head.decoder.bias is ours.lm_head.bias


def test_decoder_cache_gives_same_logits_as_full_forward(checkpoints):
    _, path = checkpoints(transformers.RobertaForCausalLM, is_decoder=True)
    ours = parity.load_ours(RobertaForCausalLM, path)
    ids = batch(seed=10)["input_ids"][:1]
    full = ours(ms.Tensor(ids), use_cache=False).logits.asnumpy()
    first = ours(ms.Tensor(ids[:, :5]), use_cache=True)
    nxt = ours(ms.Tensor(ids[:, 5:]), past_key_values=first.past_key_values, use_cache=True)
    assert parity.rel_error(nxt.logits, full[:, 5:]) <= parity.FP32_BAR


def test_causal_lm_greedy_tokens_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.RobertaForCausalLM, is_decoder=True)
    assert_greedy_tokens_match_torch(RobertaForCausalLM, torch_model, path, VOCAB)


def test_base_checkpoint_loads_into_head_model(checkpoints):
    """A RobertaModel checkpoint (no `roberta.` prefix) loads into a head model; only the head is new."""
    _, path = checkpoints(transformers.RobertaModel)
    _, info = RobertaForTokenClassification.from_pretrained(path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert info["unexpected_keys"] == [] or all(k.startswith("pooler.") for k in info["unexpected_keys"])


@pytest.mark.parametrize("mode", parity.MODES)
def test_decoder_with_cross_attention_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.RobertaForCausalLM, is_decoder=True, add_cross_attention=True)
    inputs = batch(seed=12)
    inputs["attention_mask"] = np.ones_like(inputs["attention_mask"])
    rng = np.random.RandomState(12)
    inputs.update(encoder_hidden_states=rng.randn(2, 5, BASE["hidden_size"]).astype(np.float32),
                  encoder_attention_mask=np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64),
                  labels=inputs["input_ids"], output_attentions=True, use_cache=False)
    assert_matches_torch(RobertaForCausalLM, torch_model, path, inputs, ["logits", "loss", "attentions",
                                                                         "cross_attentions"], mode)


def test_auto_classes_pick_roberta(checkpoints):
    from mindone.transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    _, path = checkpoints(transformers.RobertaForCausalLM, is_decoder=True)
    assert type(AutoModelForCausalLM.from_pretrained(path)) is RobertaForCausalLM
    _, path = checkpoints(transformers.RobertaForMaskedLM)
    assert type(AutoModelForMaskedLM.from_pretrained(path)) is RobertaForMaskedLM
