"""Data2Vec-Audio parity with torch `transformers` on seeded tiny checkpoints: every head in PyNative on a padded batch
with its attention mask (graph mode: the CTC head by default, every head under `-m slow`), fp16 within torch's own
fp16 error, gradients, Auto classes."""

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForAudioFrameClassification,
    AutoModelForAudioXVector,
    AutoModelForCTC,
    Data2VecAudioForAudioFrameClassification,
    Data2VecAudioForCTC,
    Data2VecAudioForSequenceClassification,
    Data2VecAudioForXVector,
    Data2VecAudioModel,
)
from tests import parity
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch, checkpoint_factory

# an even positional kernel (4): each positional conv drops its last frame, as HF's pad layer does
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16, 16),
            conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=2, conv_pos_kernel_size=4,
            num_conv_pos_embedding_groups=2, vocab_size=12, pad_token_id=0, num_labels=3, classifier_proj_size=8,
            tdnn_dim=(8, 8), tdnn_kernel=(3, 1), tdnn_dilation=(1, 2), xvector_output_dim=8)
SAMPLES, PAD, FRAMES = 800, 200, 39

HEADS = {
    Data2VecAudioModel: ["last_hidden_state", "extract_features", "hidden_states", "attentions"],
    Data2VecAudioForCTC: ["logits", "loss", "hidden_states", "attentions"],
    Data2VecAudioForSequenceClassification: ["logits", "loss", "hidden_states"],
    Data2VecAudioForAudioFrameClassification: ["logits", "loss"],
    Data2VecAudioForXVector: ["logits", "embeddings", "loss"],
}


def make_config(**overrides):
    return transformers.Data2VecAudioConfig(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


def audio_batch(seed=0):
    rng = np.random.RandomState(seed)
    values = rng.randn(2, SAMPLES).astype(np.float32)
    values[1, SAMPLES - PAD:] = 0
    mask = np.ones((2, SAMPLES), np.int64)
    mask[1, SAMPLES - PAD:] = 0
    return {"input_values": values, "attention_mask": mask}


def labels_for(head, seed=1):
    if head is Data2VecAudioForCTC:
        return {"labels": np.array([[1, 2, 3, 4, 5, 6], [3, 0, 4, 5, -100, -100]], np.int64)}
    if head in (Data2VecAudioForSequenceClassification, Data2VecAudioForXVector):
        return {"labels": np.array([1, 2], np.int64)}
    if head is Data2VecAudioForAudioFrameClassification:
        return {"labels": np.eye(3, dtype=np.int64)[np.random.RandomState(seed).randint(0, 3, (2, FRAMES))]}
    return {}


def check_head(checkpoints, head, mode, **overrides):
    torch_model, path = checkpoints(getattr(transformers, head.__name__), **overrides)
    inputs = dict(audio_batch(), **labels_for(head), output_hidden_states=True, output_attentions=True)
    assert_matches_torch(head, torch_model, path, inputs, HEADS[head], mode)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_heads_match_torch_fp32(checkpoints, head):
    check_head(checkpoints, head, "pynative")


def test_ctc_head_matches_torch_in_graph_mode(checkpoints):
    check_head(checkpoints, Data2VecAudioForCTC, "graph")


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_heads_match_torch_fp32_graph(checkpoints, head):
    check_head(checkpoints, head, "graph")


def test_weighted_layer_sum_matches_torch(checkpoints):
    check_head(checkpoints, Data2VecAudioForSequenceClassification, "pynative", use_weighted_layer_sum=True)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    """fp16 CTC logits vs torch fp32: within FP16_BAR or 1.25x torch's own fp16 error, whichever is larger."""
    torch_model, path = checkpoints(transformers.Data2VecAudioForCTC)
    ours = parity.load_ours(Data2VecAudioForCTC, path, dtype="float16")
    assert ours.lm_head.weight.dtype == ms.float16
    inputs = audio_batch(seed=3)
    ref = parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(parity.run_ours(ours, inputs, mode), ref, ["logits"])
    torch_fp16 = transformers.Data2VecAudioForCTC.from_pretrained(path, dtype=torch.float16,
                                                                   attn_implementation="eager").eval()
    half = dict(inputs, input_values=inputs["input_values"].astype(np.float16))
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, half), ref, ["logits"])
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_ctc_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Data2VecAudioForCTC)
    inputs = dict(audio_batch(seed=5), **labels_for(Data2VecAudioForCTC))
    assert_gradients_match_torch(Data2VecAudioForCTC, torch_model, path, inputs, mode)


def test_auto_classes_pick_data2vec_audio(checkpoints):
    for auto, head in [(AutoModel, Data2VecAudioModel), (AutoModelForCTC, Data2VecAudioForCTC),
                       (AutoModelForAudioClassification, Data2VecAudioForSequenceClassification),
                       (AutoModelForAudioFrameClassification, Data2VecAudioForAudioFrameClassification),
                       (AutoModelForAudioXVector, Data2VecAudioForXVector)]:
        _, path = checkpoints(getattr(transformers, head.__name__))
        model, info = auto.from_pretrained(path, output_loading_info=True)
        assert type(model) is head, auto.__name__
        assert not info["missing_keys"] and not info["unexpected_keys"], (head.__name__, info)


def test_training_spec_augment_matches_torch_with_the_same_numpy_seed(checkpoints):
    """SpecAugment's spans come from numpy's global RNG in HF's order (dropouts off, no LayerDrop)."""
    overrides = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                     final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.4, mask_time_length=3, mask_feature_prob=0.3,
                     mask_feature_length=2)
    torch_model, path = checkpoints(transformers.Data2VecAudioForCTC, **overrides)
    ours = parity.load_ours(Data2VecAudioForCTC, path)
    ours.set_train(True)
    torch_model.train()
    try:
        inputs = dict(audio_batch(seed=13), **labels_for(Data2VecAudioForCTC))
        np.random.seed(5)
        out = parity.run_ours(ours, inputs)
        np.random.seed(5)
        ref = parity.run_torch(torch_model, inputs)
    finally:
        torch_model.eval()
    parity.assert_close(parity.compare_outputs(out, ref, ["logits", "loss"]), parity.FP32_BAR, "spec-augment")
