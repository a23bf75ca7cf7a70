"""Perceiver IO parity with torch `transformers` on tiny random checkpoints (tests/parity.py): the bare model on
padded feature inputs, the masked-LM and sequence-classification heads (text preprocessor, trainable-position
decoders) with losses, fp16 and gradients."""

import copy

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForSequenceClassification,
    PerceiverModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

VOCAB, MAX_POSITIONS = 30, 12
# two blocks over two weight-shared self-attention layers; d_model divisible by the MLM decoder's 8 heads
CONFIG = dict(num_latents=6, d_latents=16, d_model=16, num_blocks=2, num_self_attends_per_block=2,
              num_self_attention_heads=2, num_cross_attention_heads=1, vocab_size=VOCAB,
              max_position_embeddings=MAX_POSITIONS, num_labels=3, attention_probs_dropout_prob=0.0, image_size=4)


def make_config(**overrides):
    return transformers.PerceiverConfig(**{**CONFIG, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def sharpened(torch_cls, **overrides):
        model, path = get(torch_cls, **overrides)
        if not getattr(model, "_sharpened", False):
            # initializer_range 0.02 leaves every attention near-uniform, and the query/key gradients then are tiny
            # sums of cancelling terms that neither fp32 side computes to 1e-4 (torch fp32 is up to 1e-3 off float64
            # there): scaled query/key weights give the attention real structure
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(("query.weight", "key.weight")):
                        p.mul_(8.0)
            model._sharpened = True
            parity.save_torch(model, path)
        return model, path

    return sharpened


def text(seed=0, length=MAX_POSITIONS):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (2, length))
    mask = np.ones((2, length), np.int64)
    mask[1, length - 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


FIELDS = ["last_hidden_state", "hidden_states", "attentions", "cross_attentions"]


@pytest.mark.parametrize("mode", parity.MODES)
def test_model_on_features_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PerceiverModel)
    _, mask = text(seed=1, length=9)
    inputs = dict(inputs=np.random.RandomState(1).randn(2, 9, 16).astype(np.float32), attention_mask=mask,
                  output_hidden_states=True, output_attentions=True)
    out, _ = head_parity.assert_matches_torch(PerceiverModel, torch_model, path, inputs, FIELDS, mode)
    assert len(out["hidden_states"]) == 2 * (2 + 1) and out.get("logits") is None


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_masked_lm_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PerceiverForMaskedLM)
    ids, mask = text(seed=2)
    labels = np.where(np.random.RandomState(2).rand(2, MAX_POSITIONS) < 0.5, ids, -100)
    inputs = dict(inputs=ids, attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    head_parity.assert_matches_torch(PerceiverForMaskedLM, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states", "attentions", "cross_attentions"], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_sequence_classification_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PerceiverForSequenceClassification)
    ids, mask = text(seed=3, length=9)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=np.array([2, 0], np.int64), output_attentions=True)
    head_parity.assert_matches_torch(PerceiverForSequenceClassification, torch_model, path, inputs,
                                     ["logits", "loss", "cross_attentions"], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
@pytest.mark.parametrize("head", [PerceiverForImageClassificationLearned, PerceiverForImageClassificationFourier],
                         ids=["learned", "fourier"])
def test_image_classification_matches_torch(checkpoints, head, mode):
    """4x4 images: a 1x1 conv + 16 learned positions, or the pixels + Fourier features of a [-1, 1] grid (built in
    float32 as torch builds them)."""
    torch_model, path = checkpoints(getattr(transformers, head.__name__))
    inputs = dict(pixel_values=np.random.RandomState(6).randn(2, 3, 4, 4).astype(np.float32),
                  labels=np.array([0, 2], np.int64), output_hidden_states=True, output_attentions=True)
    out, ref = head_parity.assert_matches_torch(head, torch_model, path, inputs, ["logits", "loss", "hidden_states"],
                                                mode)
    # probabilities (16 inputs, mean 1/16): the metric doubles softmax noise, as for the other attention maps
    error = parity.compare_outputs(out, ref, ["cross_attentions"])["cross_attentions"] / 2
    parity.assert_close({"cross_attentions": error}, parity.FP32_BAR, mode)


def test_fp16_within_torch_fp16_error(checkpoints):
    torch_model, path = checkpoints(transformers.PerceiverForMaskedLM)
    ids, mask = text(seed=4)
    vision_parity.assert_fp16_close(PerceiverForMaskedLM, torch_model, path, dict(inputs=ids, attention_mask=mask),
                                    "logits", "pynative")


@pytest.mark.parametrize("head", [PerceiverForMaskedLM, PerceiverForSequenceClassification,
                                  PerceiverForImageClassificationLearned], ids=lambda h: h.__name__)
def test_gradients_match_torch(checkpoints, head):
    """Against torch in float64: <= 1e-4 relative. Gradients whose float64 value is below 1e-6 everywhere (the
    decoder's query/key path: the latents it attends to are nearly alike, so its attention barely moves the loss;
    key biases: softmax is shift-invariant) are rounding noise on both sides (torch fp32 is up to 1e-3 off float64
    there, relatively) and are checked absolutely (< 1e-6). Embedding rows no token uses must have exactly zero
    gradients and are left out of the relative metric."""
    torch_model, path = checkpoints(getattr(transformers, head.__name__))
    ids, mask = text(seed=5)
    labels = ids.copy() if head is PerceiverForMaskedLM else np.array([1, 2], np.int64)
    inputs = dict(inputs=ids, attention_mask=mask, labels=labels)
    if head is PerceiverForImageClassificationLearned:
        inputs = dict(inputs=np.random.RandomState(5).randn(2, 3, 4, 4).astype(np.float32), labels=labels)
    inputs64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in inputs.items()}
    ref_loss, ref = parity.torch_gradients(copy.deepcopy(torch_model).double(), inputs64)
    loss, ours = parity.our_gradients(parity.load_ours(head, path), inputs)
    errors = {"loss": parity.rel_error(loss, ref_loss)}
    for name, grad in ref.items():
        grad, mine = grad.numpy(), parity.to_numpy(ours[name])
        if np.abs(grad).max() < 1e-6:
            assert np.abs(mine).max() < 1e-6, f"{name}: gradient should be ~0, got {np.abs(mine).max():.2e}"
            continue
        used = grad != 0
        assert np.all(mine[~used] == 0), f"{name}: gradient should be 0 where torch's is exactly 0"
        errors[name] = parity.rel_error(mine, grad, used if not used.all() else None)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{head.__name__}")


def test_auto_classes_resolve_perceiver(checkpoints):
    _, path = checkpoints(transformers.PerceiverForMaskedLM)
    assert type(AutoModelForMaskedLM.from_pretrained(path)) is PerceiverForMaskedLM
    _, path = checkpoints(transformers.PerceiverForSequenceClassification)
    assert type(AutoModelForSequenceClassification.from_pretrained(path)) is PerceiverForSequenceClassification
