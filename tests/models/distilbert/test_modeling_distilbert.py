"""DistilBERT parity with torch `transformers` on tiny random checkpoints (every head, both modes)."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    DistilBertForMaskedLM,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
)
from tests import parity
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch, checkpoint_factory

VOCAB = 99
BASE = dict(vocab_size=VOCAB, dim=32, hidden_dim=37, n_layers=2, n_heads=4, max_position_embeddings=64,
            num_labels=3, pad_token_id=0)


def make_config(**overrides):
    return transformers.DistilBertConfig(**{**BASE, **overrides})


def batch(seed=0, batch_size=2, seq_len=9, pad=3):
    """Right-padded second row and the padding mask (DistilBERT has no segment ids)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (batch_size, seq_len)).astype(np.int64)
    mask = np.ones((batch_size, seq_len), np.int64)
    mask[1, seq_len - pad:] = 0
    ids[1, seq_len - pad:] = 0
    return dict(input_ids=ids, attention_mask=mask)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


HEADS = [
    (DistilBertModel, ["last_hidden_state", "hidden_states", "attentions"], {}),
    (DistilBertForMaskedLM, ["logits", "loss"], {"labels": "tokens"}),
    (DistilBertForSequenceClassification, ["logits", "loss"], {"labels": np.array([0, 2], np.int64)}),
    (DistilBertForTokenClassification, ["logits", "loss"], {"labels": "token_classes"}),
    (DistilBertForQuestionAnswering, ["start_logits", "end_logits", "loss"],
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


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("ours_cls, fields, extra", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_heads_match_torch_fp32(checkpoints, ours_cls, fields, extra, mode):
    overrides = {"num_labels": 2} if ours_cls is DistilBertForQuestionAnswering else {}
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), **overrides)
    inputs = dict(_inputs_for(extra), output_hidden_states=True, output_attentions=True)
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_multiple_choice_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DistilBertForMultipleChoice)
    a, b = batch(seed=5), batch(seed=6)
    inputs = {k: np.stack([a[k], b[k]]) for k in a}  # (B=2, choices=2, S)
    inputs["labels"] = np.array([1, 0], np.int64)
    assert_matches_torch(DistilBertForMultipleChoice, torch_model, path, inputs, ["logits", "loss"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_sinusoidal_positions_and_inputs_embeds_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DistilBertModel, sinusoidal_pos_embds=True)
    embeds = np.random.RandomState(3).randn(2, 7, BASE["dim"]).astype(np.float32)
    assert_matches_torch(DistilBertModel, torch_model, path, {"inputs_embeds": embeds}, ["last_hidden_state"], mode)


def test_sinusoidal_table_is_built_when_the_checkpoint_lacks_it():
    config = make_config(sinusoidal_pos_embds=True)
    torch_table = transformers.DistilBertModel(config).embeddings.position_embeddings.weight.detach().numpy()
    ours = DistilBertModel(config)
    assert np.abs(ours.embeddings.position_embeddings.weight.asnumpy() - torch_table).max() <= 1e-7


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DistilBertForMaskedLM)
    assert_matches_torch(DistilBertForMaskedLM, torch_model, path, batch(seed=7), ["logits"], mode, dtype="float16")


@pytest.mark.parametrize("mode", parity.MODES)
def test_masked_lm_gradients_match_torch_with_tied_projector(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DistilBertForMaskedLM)
    assert_gradients_match_torch(DistilBertForMaskedLM, torch_model, path, _inputs_for({"labels": "tokens"}, seed=8),
                                 mode)


def test_tied_projector_shares_the_word_embedding(checkpoints):
    _, path = checkpoints(transformers.DistilBertForMaskedLM)
    ours = parity.load_ours(DistilBertForMaskedLM, path)
    assert ours.vocab_projector.weight is ours.distilbert.embeddings.word_embeddings.weight


def test_checkpoint_keys_are_hf_names(checkpoints):
    torch_model, path = checkpoints(transformers.DistilBertForSequenceClassification)
    ours = parity.load_ours(DistilBertForSequenceClassification, path)
    assert set(ours.named_parameters_dict()) == set(torch_model.state_dict())


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints(transformers.DistilBertForSequenceClassification)
    ours = parity.load_ours(DistilBertForSequenceClassification, path)
    inputs = dict(batch(seed=11), labels=np.array([1, 2], np.int64), return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 2
    assert parity.rel_error(out[1], ref[1]) <= parity.FP32_BAR


def test_auto_classes_pick_distilbert(checkpoints):
    from mindone.transformers import AutoModel, AutoModelForQuestionAnswering

    _, path = checkpoints(transformers.DistilBertForQuestionAnswering, num_labels=2)
    assert type(AutoModelForQuestionAnswering.from_pretrained(path)) is DistilBertForQuestionAnswering
    assert type(AutoModel.from_pretrained(path)) is DistilBertModel
