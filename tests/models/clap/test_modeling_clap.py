"""CLAP parity with torch `transformers` on tiny random checkpoints (tests/parity.py): the contrastive model and its
loss, both towers with and without projection, feature fusion of long clips, resized (short) spectrograms,
get_text_features / get_audio_features, fp16 and gradients."""

import copy

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms

from mindone.transformers import (
    AutoModel,
    ClapAudioModel,
    ClapAudioModelWithProjection,
    ClapModel,
    ClapTextModel,
    ClapTextModelWithProjection,
)
from tests import parity
from tests.models import head_parity, vision_parity

VOCAB, SEQ, MELS, FRAMES = 99, 10, 16, 64
TEXT = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=SEQ + 4, pad_token_id=1, projection_dim=8)
# spec 32 with 16 mel bins: time folded in 2 (64 frames max); patches 2x2 -> a 16x16 grid, window 4 with shifted
# blocks, merged to 8x8; hidden_size is the last stage's width (the projection's input)
AUDIO = dict(spec_size=32, num_mel_bins=MELS, patch_size=2, patch_stride=2, window_size=4, depths=[2, 2],
             num_attention_heads=[2, 4], patch_embeds_hidden_size=8, hidden_size=16, projection_dim=8,
             aff_block_r=4)


def make_config(kind="full", **audio_overrides):
    audio = {**AUDIO, **audio_overrides}
    if kind == "text":
        return transformers.ClapTextConfig(**TEXT)
    if kind == "audio":
        return transformers.ClapAudioConfig(**audio)
    return transformers.ClapConfig(text_config=TEXT, audio_config=audio, projection_dim=8)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def randomised(torch_cls, kind="full", **overrides):
        model, path = get(torch_cls, kind=kind, **overrides)
        if not getattr(model, "_randomised", False):
            # HF starts these at zero / one / a shared constant: make them matter
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith("relative_position_bias_table"):
                        p.copy_(torch.randn(p.shape, generator=g))
                    elif name.endswith("logit_scale_a"):
                        p.fill_(1.7)
                    elif name.endswith("logit_scale_t"):
                        p.fill_(2.3)
                for name, b in model.named_buffers():
                    if name.endswith("running_mean"):
                        b.copy_(torch.randn(b.shape, generator=g) * 0.5)
                    elif name.endswith("running_var"):
                        b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            model._randomised = True
            parity.save_torch(model, path)
        return model, path

    return randomised


def text_batch(seed=0, batch=3):
    rng = np.random.RandomState(seed)
    ids = np.full((batch, SEQ), TEXT["pad_token_id"], np.int64)
    lengths = [6, SEQ, 8][:batch]
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.randint(3, VOCAB, n)
    mask = (np.arange(SEQ)[None] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


def features(seed=0, batch=3, channels=1, frames=FRAMES):
    return np.random.RandomState(seed).randn(batch, channels, frames, MELS).astype(np.float32)


def _tower_errors(out, ref, rows=None):
    errors = {}
    for name in ("last_hidden_state", "pooler_output", "hidden_states"):
        errors.update(parity.compare_outputs(out, ref, [name], rows=rows if name != "pooler_output" else None))
    # probabilities: the metric doubles softmax noise
    errors["attentions"] = max(parity.rel_error(a, b) for a, b in zip(out["attentions"], ref["attentions"])) / 2
    return errors


@pytest.mark.parametrize("mode", parity.MODES)
def test_clap_model_and_loss_match_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ClapModel)
    ids, mask = text_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, input_features=features(), return_loss=True,
                  output_hidden_states=True, output_attentions=True)
    ours = parity.load_ours(ClapModel, path)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(out, ref, ["logits_per_audio", "logits_per_text", "loss", "text_embeds",
                                               "audio_embeds"])
    errors.update({f"text.{k}": v for k, v in _tower_errors(out["text_model_output"], ref.text_model_output,
                                                           mask.astype(bool)).items()})
    errors.update({f"audio.{k}": v for k, v in _tower_errors(out["audio_model_output"],
                                                            ref.audio_model_output).items()})
    parity.assert_close(errors, parity.FP32_BAR, mode)
    assert out["audio_model_output"]["last_hidden_state"].shape == (3, 16, 4, 16)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_fused_audio_model_matches_torch(checkpoints, mode):
    """Feature fusion: rows 0 and 2 are 'longer' (global map fused with the 3 local crops), row 1 is not."""
    torch_model, path = checkpoints(transformers.ClapAudioModel, kind="audio", enable_fusion=True)
    inputs = dict(input_features=features(seed=1, channels=4), is_longer=np.array([[True], [False], [True]]),
                  output_hidden_states=True, output_attentions=True)
    head_parity.assert_matches_torch(ClapAudioModel, torch_model, path, inputs,
                                     ["last_hidden_state", "pooler_output", "hidden_states"], mode)


@pytest.mark.parametrize(
    "ours_cls, torch_cls, kind, fields",
    [
        (ClapTextModel, transformers.ClapTextModel, "text", ["last_hidden_state", "pooler_output",
                                                             "hidden_states"]),
        (ClapTextModelWithProjection, transformers.ClapTextModelWithProjection, "text",
         ["text_embeds", "last_hidden_state", "hidden_states"]),
        (ClapAudioModelWithProjection, transformers.ClapAudioModelWithProjection, "audio",
         ["audio_embeds", "last_hidden_state", "hidden_states"]),
    ],
    ids=["text", "text_projection", "audio_projection"],
)
@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_towers_match_torch_fp32(checkpoints, ours_cls, torch_cls, kind, fields, mode):
    torch_model, path = checkpoints(torch_cls, kind=kind)
    if kind == "text":
        ids, mask = text_batch(seed=2)
        inputs = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        head_parity.assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode, rows=mask.astype(bool))
        return
    # 50 frames < 64: the spectrogram is first resized (bicubic, corners aligned) to the model's size. torch's fp32
    # bicubic kernel is itself 1.2e-5 (max abs) from the exact resize, more than the bar; ours builds its taps in
    # float64 (2.9e-7): the reference is torch in float64
    feats = features(seed=2, frames=50)
    ref = parity.run_torch(copy.deepcopy(torch_model).double(),
                           dict(input_features=feats.astype(np.float64), output_hidden_states=True))
    out = parity.run_ours(parity.load_ours(ours_cls, path), dict(input_features=feats, output_hidden_states=True),
                          mode)
    parity.assert_close(parity.compare_outputs(out, ref, fields), parity.FP32_BAR, f"resized/{mode}")


def test_get_text_and_audio_features_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.ClapModel)
    ours = parity.load_ours(ClapModel, path)
    ids, mask = text_batch(seed=3)
    feats = features(seed=3, batch=2)
    ms_in = parity.to_ms_inputs(dict(input_ids=ids, attention_mask=mask, input_features=feats))
    with torch.no_grad():
        ref_text = torch_model.get_text_features(input_ids=torch.from_numpy(ids),
                                                 attention_mask=torch.from_numpy(mask))
        ref_audio = torch_model.get_audio_features(input_features=torch.from_numpy(feats))
    text = ours.get_text_features(input_ids=ms_in["input_ids"], attention_mask=ms_in["attention_mask"])
    audio = ours.get_audio_features(input_features=ms_in["input_features"])
    errors = {"text": parity.rel_error(text.pooler_output, ref_text.pooler_output),
              "audio": parity.rel_error(audio.pooler_output, ref_audio.pooler_output),
              "audio.last": parity.rel_error(audio.last_hidden_state, ref_audio.last_hidden_state)}
    parity.assert_close(errors, parity.FP32_BAR)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ClapModel)
    ids, mask = text_batch(seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask, input_features=features(seed=4))
    ref = parity.run_torch(torch_model, inputs)
    half = dict(inputs, input_features=inputs["input_features"].astype(np.float16))
    torch_half = parity.run_torch(copy.deepcopy(torch_model).half(), half)
    out = parity.run_ours(parity.load_ours(ClapModel, path, dtype="float16"), inputs, mode)
    assert out["logits_per_audio"].dtype == ms.float16
    for field in ("logits_per_audio", "audio_embeds", "text_embeds"):
        error, torch_error = parity.rel_error(out[field], ref[field]), parity.rel_error(torch_half[field], ref[field])
        assert error <= max(parity.FP16_BAR, 1.25 * torch_error), (f"fp16/{mode} {field}", error, torch_error)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ClapModel)
    ids, mask = text_batch(seed=5)
    inputs = dict(input_ids=ids, attention_mask=mask, input_features=features(seed=5), return_loss=True)
    # against torch in float64: ours and torch fp32 differ by 1.35e-4 on text_projection.linear2.bias (the gradient
    # through the L2 normalisation is a small difference of large terms)
    vision_parity.assert_gradients_match_torch(ClapModel, torch_model, path, inputs, mode, exact=True)


def test_auto_model_resolves_clap_and_roundtrips(checkpoints):
    torch_model, path = checkpoints(transformers.ClapModel)
    ours = AutoModel.from_pretrained(path)
    assert type(ours) is ClapModel
    again = transformers.ClapModel.from_pretrained(parity.roundtrip_dir(ours)).eval()
    ids, mask = text_batch(seed=6)
    inputs = dict(input_ids=ids, attention_mask=mask, input_features=features(seed=6))
    errors = parity.compare_outputs(parity.run_torch(again, inputs), parity.run_torch(torch_model, inputs),
                                    ["logits_per_audio"])
    parity.assert_close(errors, 0.0)
