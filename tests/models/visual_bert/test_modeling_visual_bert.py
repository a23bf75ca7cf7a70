"""VisualBERT parity with torch `transformers` on tiny random checkpoints (tests/parity.py): the base model on padded
text + padded regions (with and without image-text alignment), every head with its loss, fp16 and gradients."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoModel,
    VisualBertForMultipleChoice,
    VisualBertForPreTraining,
    VisualBertForQuestionAnswering,
    VisualBertForRegionToPhraseAlignment,
    VisualBertForVisualReasoning,
    VisualBertModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

VOCAB, SEQ, REGIONS, VISUAL_DIM = 99, 8, 4, 20
CONFIG = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              visual_embedding_dim=VISUAL_DIM, max_position_embeddings=64, type_vocab_size=2, num_labels=3,
              pad_token_id=0)


def make_config(**overrides):
    return transformers.VisualBertConfig(**{**CONFIG, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return head_parity.checkpoint_factory(tmp_path_factory, make_config)


def batch(seed=0, lead=(2,)):
    """Text (the second row right-padded) and regions (the first row's last region padded)."""
    rng = np.random.RandomState(seed)
    n = int(np.prod(lead))
    ids = rng.randint(1, VOCAB, (n, SEQ))
    mask = np.ones((n, SEQ), np.int64)
    mask[1::2, 5:] = 0
    ids[mask == 0] = 0
    token_type = np.zeros((n, SEQ), np.int64)
    token_type[:, 3:] = 1
    visual_mask = np.ones((n, REGIONS), np.int64)
    visual_mask[0::2, -1] = 0
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=token_type,
                  visual_embeds=rng.randn(n, REGIONS, VISUAL_DIM).astype(np.float32),
                  visual_attention_mask=visual_mask, visual_token_type_ids=np.ones((n, REGIONS), np.int64))
    return {k: v.reshape(lead + v.shape[1:]) for k, v in inputs.items()}


def alignment():
    """(2, regions, 2) word positions per region; -1 = none (region 3 of row 1 is aligned to no word)."""
    return np.array([[[1, 2], [3, -1], [0, 4], [5, 6]], [[2, -1], [1, 1], [4, 3], [-1, -1]]], np.int64)


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("aligned", [False, True], ids=["plain", "image_text_alignment"])
def test_model_matches_torch_fp32(checkpoints, aligned, mode):
    torch_model, path = checkpoints(transformers.VisualBertModel)
    inputs = dict(batch(), output_hidden_states=True, output_attentions=True)
    if aligned:
        inputs["image_text_alignment"] = alignment()
    out, _ = head_parity.assert_matches_torch(
        VisualBertModel, torch_model, path, inputs,
        ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], mode)
    assert out["last_hidden_state"].shape == (2, SEQ + REGIONS, 32)


def test_text_only_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.VisualBertModel)
    inputs = {k: v for k, v in batch(seed=1).items() if not k.startswith("visual")}
    head_parity.assert_matches_torch(VisualBertModel, torch_model, path, inputs, ["last_hidden_state",
                                                                               "pooler_output"])


def _head_inputs(head, seed):
    rng = np.random.RandomState(seed + 10)
    if head is VisualBertForMultipleChoice:
        return dict(batch(seed, lead=(2, 3)), labels=np.array([2, 0], np.int64))
    inputs = batch(seed)
    if head is VisualBertForPreTraining:
        labels = rng.randint(0, VOCAB, (2, SEQ + REGIONS))
        labels[:, ::3] = -100
        inputs.update(labels=labels, sentence_image_labels=np.array([1, 0], np.int64))
    elif head is VisualBertForQuestionAnswering:
        scores = rng.rand(2, 3).astype(np.float32)
        scores[0, 1] = 0.0  # a zero target contributes nothing to the KL loss
        inputs["labels"] = scores
    elif head is VisualBertForVisualReasoning:
        inputs["labels"] = np.array([2, 1], np.int64)
    return inputs


HEADS = {
    VisualBertForPreTraining: ["prediction_logits", "seq_relationship_logits", "loss", "hidden_states"],
    VisualBertForQuestionAnswering: ["logits", "loss"],
    VisualBertForVisualReasoning: ["logits", "loss", "attentions"],
    VisualBertForMultipleChoice: ["logits", "loss", "hidden_states"],
}


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
@pytest.mark.parametrize("head", list(HEADS), ids=lambda h: h.__name__)
def test_heads_match_torch_fp32(checkpoints, head, mode):
    torch_model, path = checkpoints(getattr(transformers, head.__name__))
    inputs = dict(_head_inputs(head, seed=2), output_hidden_states=True, output_attentions=True)
    head_parity.assert_matches_torch(head, torch_model, path, inputs, HEADS[head], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_region_to_phrase_alignment_matches_torch(checkpoints, mode):
    """Scores are compared on the real regions (padded ones hold the dtype's minimum on both sides)."""
    torch_model, path = checkpoints(transformers.VisualBertForRegionToPhraseAlignment)
    inputs = batch(seed=3)
    rng = np.random.RandomState(3)
    inputs["region_to_phrase_position"] = np.array([[1, 4, -1], [2, 3, 0]], np.int64)
    target = rng.rand(2, 3, REGIONS).astype(np.float32) * inputs["visual_attention_mask"][:, None, :]
    inputs["labels"] = target / target.sum(-1, keepdims=True)
    ours = parity.load_ours(VisualBertForRegionToPhraseAlignment, path)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    real = np.broadcast_to(inputs["visual_attention_mask"][:, None, :].astype(bool), (2, 3, REGIONS))
    logits, ref_logits = parity.to_numpy(out["logits"]), parity.to_numpy(ref["logits"])
    assert np.all(logits[~real] < -1e37) and np.all(ref_logits[~real] < -1e37)
    errors = {"logits": parity.rel_error(logits[real], ref_logits[real]),
              "loss": parity.rel_error(out["loss"], ref["loss"])}
    parity.assert_close(errors, parity.FP32_BAR, mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    torch_model, path = checkpoints(transformers.VisualBertModel)
    vision_parity.assert_fp16_close(VisualBertModel, torch_model, path, batch(seed=4), "last_hidden_state", mode)


@pytest.mark.parametrize("head", [VisualBertForPreTraining, VisualBertForQuestionAnswering],
                         ids=lambda h: h.__name__)
def test_gradients_match_torch(checkpoints, head):
    torch_model, path = checkpoints(getattr(transformers, head.__name__))
    # embedding rows no token uses have exactly zero gradients (ours must too) and are left out of the metric's mean
    vision_parity.assert_gradients_match_torch(head, torch_model, path, _head_inputs(head, seed=5), "pynative")


def test_auto_model_and_tied_decoder(checkpoints):
    _, path = checkpoints(transformers.VisualBertModel)
    assert type(AutoModel.from_pretrained(path)) is VisualBertModel
    _, path = checkpoints(transformers.VisualBertForPreTraining)
    ours = VisualBertForPreTraining.from_pretrained(path)
    assert ours.cls.predictions.decoder.weight is ours.visual_bert.embeddings.word_embeddings.weight
