"""Wav2Vec2 parity with torch `transformers` on seeded tiny checkpoints.

Two architectures are covered: wav2vec2-base's (`feat_extract_norm="group"`, post-norm layers, fed no attention mask)
and the "large-lv60" one (`feat_extract_norm="layer"`, `do_stable_layer_norm=True`, fed a padded batch with its
attention mask). Every head runs in PyNative; graph mode runs the CTC head by default and every head under `-m slow`.
"""

import os

import mindspore as ms
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from mindone.transformers import (
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForAudioFrameClassification,
    AutoModelForAudioXVector,
    AutoModelForCTC,
    Wav2Vec2ForAudioFrameClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2ForXVector,
    Wav2Vec2Model,
)
from tests import parity
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch, checkpoint_factory

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16, 16),
            conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, vocab_size=12, pad_token_id=0, num_labels=3, classifier_proj_size=8,
            tdnn_dim=(8, 8), tdnn_kernel=(3, 1), tdnn_dilation=(1, 2), xvector_output_dim=8)
VARIANTS = {"group_postnorm": {}, "layer_stable": dict(feat_extract_norm="layer", do_stable_layer_norm=True)}
SAMPLES, PAD = 800, 200
FRAMES = 39  # (800 - 10) // 5 + 1 = 159 -> 79 -> 39

HEADS = {
    Wav2Vec2Model: ["last_hidden_state", "extract_features", "hidden_states", "attentions"],
    Wav2Vec2ForCTC: ["logits", "loss", "hidden_states", "attentions"],
    Wav2Vec2ForSequenceClassification: ["logits", "loss", "hidden_states"],
    Wav2Vec2ForAudioFrameClassification: ["logits", "loss"],
    Wav2Vec2ForXVector: ["logits", "embeddings", "loss"],
}


def make_config(variant="layer_stable", **overrides):
    return transformers.Wav2Vec2Config(**{**TINY, **VARIANTS[variant], **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


def audio_batch(variant, seed=0):
    """Two waveforms, the second zero-padded by PAD samples; the mask is given only to the "layer" variant (HF's
    rule: group-norm checkpoints are run on zero-padded batches without one)."""
    rng = np.random.RandomState(seed)
    values = rng.randn(2, SAMPLES).astype(np.float32)
    values[1, SAMPLES - PAD:] = 0
    inputs = {"input_values": values}
    if VARIANTS[variant].get("feat_extract_norm") == "layer":
        mask = np.ones((2, SAMPLES), np.int64)
        mask[1, SAMPLES - PAD:] = 0
        inputs["attention_mask"] = mask
    return inputs


def labels_for(head, seed=1):
    rng = np.random.RandomState(seed)
    if head is Wav2Vec2ForCTC:
        # -100 and the blank (pad_token_id 0) are both padding, also in the middle of a row
        return {"labels": np.array([[1, 2, 3, 4, 5, 6], [3, 0, 4, 5, -100, -100]], np.int64)}
    if head in (Wav2Vec2ForSequenceClassification, Wav2Vec2ForXVector):
        return {"labels": np.array([1, 2], np.int64)}
    if head is Wav2Vec2ForAudioFrameClassification:
        return {"labels": np.eye(3, dtype=np.int64)[rng.randint(0, 3, (2, FRAMES))]}
    return {}


def check_head(checkpoints, head, variant, mode, **overrides):
    torch_model, path = checkpoints(getattr(transformers, head.__name__), **VARIANTS[variant], **overrides)
    inputs = dict(audio_batch(variant), **labels_for(head), output_hidden_states=True, output_attentions=True)
    assert_matches_torch(head, torch_model, path, inputs, HEADS[head], mode, context=f"{head.__name__}/{variant}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_heads_match_torch_fp32(checkpoints, head, variant):
    check_head(checkpoints, head, variant, "pynative")


def test_ctc_head_matches_torch_in_graph_mode(checkpoints):
    check_head(checkpoints, Wav2Vec2ForCTC, "layer_stable", "graph")


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_heads_match_torch_fp32_graph(checkpoints, head, variant):
    check_head(checkpoints, head, variant, "graph")


@pytest.mark.parametrize("head", [Wav2Vec2ForSequenceClassification, Wav2Vec2ForXVector],
                         ids=lambda h: h.__name__)
def test_weighted_layer_sum_matches_torch(checkpoints, head):
    check_head(checkpoints, head, "layer_stable", "pynative", use_weighted_layer_sum=True)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_fp16_within_torch_fp16_error(checkpoints, variant, mode):
    """fp16 CTC logits vs torch fp32: within FP16_BAR or 1.25x torch's own fp16 error, whichever is larger."""
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, **VARIANTS[variant])
    ours = parity.load_ours(Wav2Vec2ForCTC, path, dtype="float16")
    assert ours.lm_head.weight.dtype == ms.float16
    inputs = audio_batch(variant, seed=3)
    ref = parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(parity.run_ours(ours, inputs, mode), ref, ["logits"])
    torch_fp16 = transformers.Wav2Vec2ForCTC.from_pretrained(path, dtype=torch.float16,
                                                              attn_implementation="eager").eval()
    half = dict(inputs, input_values=inputs["input_values"].astype(np.float16))
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, half), ref, ["logits"])
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{variant}/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
@pytest.mark.parametrize("head,variant", [(Wav2Vec2ForCTC, "layer_stable"),
                                          (Wav2Vec2ForSequenceClassification, "group_postnorm")],
                         ids=["ctc-layer_stable", "seqcls-group_postnorm"])
def test_gradients_match_torch(checkpoints, head, variant, mode):
    torch_model, path = checkpoints(getattr(transformers, head.__name__), **VARIANTS[variant])
    inputs = dict(audio_batch(variant, seed=5), **labels_for(head))
    assert_gradients_match_torch(head, torch_model, path, inputs, mode)


@pytest.mark.parametrize("reduction,zero_infinity", [("sum", False), ("mean", True), ("sum", True)])
def test_ctc_loss_options_match_torch(checkpoints, reduction, zero_infinity):
    """ctc_loss_reduction / ctc_zero_infinity; the second row's target (45 labels) cannot fit in its 30 frames, so
    its loss is infinite (or zero with zero_infinity)."""
    overrides = dict(ctc_loss_reduction=reduction, ctc_zero_infinity=zero_infinity)
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, **overrides)
    labels = np.full((2, 45), -100, np.int64)
    labels[0, :4] = [1, 2, 3, 4]
    labels[1] = np.arange(45) % 11 + 1
    inputs = dict(audio_batch("layer_stable", seed=6), labels=labels)
    out = parity.run_ours(parity.load_ours(Wav2Vec2ForCTC, path, **overrides), inputs)
    ref = parity.run_torch(torch_model, inputs)
    ours_loss, torch_loss = float(parity.to_numpy(out.loss)), float(ref.loss)
    if not np.isfinite(torch_loss):
        assert ours_loss == torch_loss, (ours_loss, torch_loss)
    else:
        assert abs(ours_loss - torch_loss) <= parity.FP32_BAR * abs(torch_loss), (ours_loss, torch_loss)


def test_torch_saves_weight_norm_as_parametrizations_and_old_names_load_too(checkpoints, tmp_path):
    """transformers 5 saves the positional conv's weight norm as `parametrizations.weight.original0/1`; checkpoints
    from older versions name them `weight_g` / `weight_v`. Both load to the same model."""
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC)
    state = safetensors.numpy.load_file(os.path.join(path, "model.safetensors"))
    prefix = "wav2vec2.encoder.pos_conv_embed.conv."
    assert {prefix + "parametrizations.weight.original0", prefix + "parametrizations.weight.original1"} <= set(state)
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                             "weight_v"): v for k, v in state.items()}
    assert prefix + "weight_g" in old
    for name in os.listdir(path):
        if name != "model.safetensors":
            (tmp_path / name).write_bytes(open(os.path.join(path, name), "rb").read())
    safetensors.numpy.save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours, info = Wav2Vec2ForCTC.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = audio_batch("layer_stable")
    errors = parity.compare_outputs(parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs), ["logits"])
    parity.assert_close(errors, parity.FP32_BAR, "weight_g/weight_v checkpoint")


def test_save_pretrained_loads_in_torch(checkpoints, tmp_path):
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, **VARIANTS["group_postnorm"])
    ours, info = Wav2Vec2ForCTC.from_pretrained(path, output_loading_info=True)
    assert not any(info.values()), info
    ours.save_pretrained(str(tmp_path))
    reloaded = transformers.Wav2Vec2ForCTC.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    inputs = audio_batch("group_postnorm")
    errors = parity.compare_outputs(parity.run_torch(reloaded, inputs), parity.run_torch(torch_model, inputs),
                                    ["logits"])
    assert errors["logits"] == 0.0, errors


def test_mask_time_indices_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.Wav2Vec2Model)
    mask = np.zeros((2, FRAMES), bool)
    mask[0, 3:9] = mask[1, 20:25] = True
    inputs = dict(audio_batch("layer_stable", seed=7), mask_time_indices=mask)
    assert_matches_torch(Wav2Vec2Model, torch_model, path, inputs, ["last_hidden_state"], "pynative")


def test_feat_extract_output_lengths_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.Wav2Vec2Model)
    ours = parity.load_ours(Wav2Vec2Model, path)
    lengths = np.array([400, 401, 799, 800, 16000], np.int64)
    ref = torch_model._get_feat_extract_output_lengths(torch.tensor(lengths)).numpy()
    assert np.array_equal(parity.to_numpy(ours._get_feat_extract_output_lengths(ms.Tensor(lengths))), ref)
    assert [ours._get_feat_extract_output_lengths(int(n)) for n in lengths] == ref.tolist()


def test_auto_classes_pick_wav2vec2(checkpoints):
    for auto, head in [(AutoModel, Wav2Vec2Model), (AutoModelForCTC, Wav2Vec2ForCTC),
                       (AutoModelForAudioClassification, Wav2Vec2ForSequenceClassification),
                       (AutoModelForAudioFrameClassification, Wav2Vec2ForAudioFrameClassification),
                       (AutoModelForAudioXVector, Wav2Vec2ForXVector)]:
        _, path = checkpoints(getattr(transformers, head.__name__))
        assert type(auto.from_pretrained(path)) is head, auto.__name__


PRETRAINING = dict(num_codevector_groups=2, num_codevectors_per_group=5, codevector_dim=8, proj_codevector_dim=8,
                   num_negatives=4)
PRETRAINING_FIELDS = ["loss", "contrastive_loss", "diversity_loss", "codevector_perplexity", "projected_states",
                      "projected_quantized_states", "hidden_states"]


def pretraining_inputs(variant, seed=9):
    """HF's own samplers make the masked frames and the distractor indices (numpy, seeded)."""
    np.random.seed(seed)
    mask = _compute_mask_indices((2, FRAMES), mask_prob=0.3, mask_length=2, min_masks=2)
    negatives = _sample_negative_indices((2, FRAMES), PRETRAINING["num_negatives"], mask).astype(np.int64)
    return dict(audio_batch(variant, seed), mask_time_indices=mask, sampled_negative_indices=negatives)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_pretraining_losses_match_torch(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.Wav2Vec2ForPreTraining, **VARIANTS[variant], **PRETRAINING)
    inputs = dict(pretraining_inputs(variant), output_hidden_states=True)
    assert_matches_torch(Wav2Vec2ForPreTraining, torch_model, path, inputs, PRETRAINING_FIELDS, mode,
                         context=f"pretraining/{variant}/{mode}")


def test_pretraining_gradients_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.Wav2Vec2ForPreTraining, **PRETRAINING)
    assert_gradients_match_torch(Wav2Vec2ForPreTraining, torch_model, path, pretraining_inputs("layer_stable", 11))


def test_pretraining_in_training_mode_samples_codevectors_and_trains_them(checkpoints):
    """Training mode draws hard Gumbel-softmax samples (random, so not compared with torch): the loss is finite and
    the codebook and its projection receive gradients."""
    _, path = checkpoints(transformers.Wav2Vec2ForPreTraining, **PRETRAINING)
    ours = parity.load_ours(Wav2Vec2ForPreTraining, path)
    ours.set_train(True)
    ours.set_gumbel_temperature(1.5)
    loss, grads = parity.our_gradients(ours, pretraining_inputs("layer_stable", 12))
    assert np.isfinite(float(loss.asnumpy()))
    for name in ("quantizer.codevectors", "quantizer.weight_proj.weight", "project_q.weight"):
        assert np.abs(grads[name].asnumpy()).max() > 0, name


NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  final_dropout=0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_spec_augment_matches_torch_with_the_same_numpy_seed(checkpoints, variant):
    """In training, SpecAugment's time and feature spans come from numpy's global RNG in HF's order: reseeding numpy
    before each forward gives torch's masks and so torch's logits and loss (dropouts off, no LayerDrop)."""
    overrides = dict(**VARIANTS[variant], **NO_DROPOUT, layerdrop=0.0, mask_time_prob=0.4, mask_time_length=3,
                     mask_feature_prob=0.3, mask_feature_length=2)
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, **overrides)
    ours = parity.load_ours(Wav2Vec2ForCTC, path)
    ours.set_train(True)
    torch_model.train()
    try:
        inputs = dict(audio_batch(variant, seed=13), **labels_for(Wav2Vec2ForCTC))
        np.random.seed(5)
        out = parity.run_ours(ours, inputs)
        np.random.seed(5)
        ref = parity.run_torch(torch_model, inputs)
        np.random.seed(5)
        unmasked_ref = parity.run_torch(torch_model.eval(), inputs)
    finally:
        torch_model.eval()
    errors = parity.compare_outputs(out, ref, ["logits", "loss"])
    parity.assert_close(errors, parity.FP32_BAR, f"spec-augment/{variant}")
    assert parity.rel_error(ref.logits, unmasked_ref.logits) > 1e-2  # the masks changed the output


def test_training_layerdrop_one_skips_every_layer_as_torch(checkpoints):
    torch_model, path = checkpoints(transformers.Wav2Vec2Model, **NO_DROPOUT, layerdrop=1.0, mask_time_prob=0.0)
    ours = parity.load_ours(Wav2Vec2Model, path)
    ours.set_train(True)
    torch_model.train()
    try:
        inputs = dict(audio_batch("layer_stable", seed=14), output_hidden_states=True)
        out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    finally:
        torch_model.eval()
    assert len(out.hidden_states) == len(ref.hidden_states) == 0  # HF records nothing when no layer runs
    parity.assert_close(parity.compare_outputs(out, ref, ["last_hidden_state"]), parity.FP32_BAR, "layerdrop=1")
