"""DPT (ViT backbone) and DPT-Hybrid (BiT backbone) parity with torch `transformers` on tiny random checkpoints
(tests/parity.py): encoder outputs, predicted depth, segmentation logits and loss, the readout variants, position
tables resized to another image size, fp16, gradients, Auto classes; pixels come from transformers' DPT image
processor."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForSemanticSegmentation,
    DPTForDepthEstimation,
    DPTForSemanticSegmentation,
    DPTModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

# 32x32 images of 8x8 patches: a 4x4 token grid reassembled at 16, 8, 4 and 2 pixels a side
CONFIG = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=32,
              patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 24, 32],
              reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16, num_labels=3, hidden_act="gelu")


def make_config(**overrides):
    return transformers.DPTConfig(**{**CONFIG, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(torch_cls, **overrides):
        key = (torch_cls.__name__, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(**overrides), seed=len(made))
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                # HF starts the class token and position table at zero, BatchNorm statistics at 0 / 1: randomised
                for name, p in model.named_parameters():
                    if name.endswith(("cls_token", "position_embeddings")):
                        p.copy_(torch.randn(p.shape, generator=g) * 0.5)
                for name, buf in model.named_buffers():
                    if name.endswith("running_mean"):
                        buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
                    elif name.endswith("running_var"):
                        buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
                if isinstance(model, transformers.DPTForDepthEstimation):
                    # the head ends in a ReLU: a positive last bias keeps the random depth map from being all zero
                    model.head.head[4].bias.fill_(0.5)
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[key]

    return get


def processor(size=32):
    try:
        import torchvision  # noqa: F401  (the default processor's backend)
        cls = transformers.DPTImageProcessor
    except ImportError:
        cls = getattr(transformers, "DPTImageProcessorPil", transformers.DPTImageProcessor)
    return cls(size={"height": size, "width": size}, keep_aspect_ratio=False)


def pixels(seed=0, size=32):
    return vision_parity.processed_pixels(processor(size), seed=seed)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DPTModel)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True, output_attentions=True)
    head_parity.assert_matches_torch(DPTModel, torch_model, path, inputs,
                                     ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_depth_estimation_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DPTForDepthEstimation)
    inputs = dict(pixel_values=pixels(seed=1), output_hidden_states=True)
    out, ref = head_parity.assert_matches_torch(DPTForDepthEstimation, torch_model, path, inputs,
                                                ["predicted_depth", "hidden_states"], mode)
    assert out["predicted_depth"].shape == (2, 64, 64) and float(np.abs(ref.predicted_depth.numpy()).min()) > 0
    # the backbone's hidden states are returned only when asked, as HF's
    plain = parity.run_ours(parity.load_ours(DPTForDepthEstimation, path), dict(pixel_values=pixels(seed=1)))
    assert list(plain.keys()) == ["predicted_depth"]


@pytest.mark.parametrize("overrides", [dict(readout_type="add"), dict(readout_type="ignore"),
                                       dict(use_batch_norm_in_fusion_residual=True, head_in_index=-2),
                                       # the projection is 256 -> 256 channels, as in HF
                                       pytest.param(dict(fusion_hidden_size=256, add_projection=True,
                                                         num_hidden_layers=2, backbone_out_indices=[0, 1],
                                                         neck_hidden_sizes=[8, 16], reassemble_factors=[2, 1]),
                                                    marks=pytest.mark.slow)])
def test_depth_variants_match_torch(checkpoints, overrides):
    torch_model, path = checkpoints(transformers.DPTForDepthEstimation, **overrides)
    head_parity.assert_matches_torch(DPTForDepthEstimation, torch_model, path, dict(pixel_values=pixels(seed=2)),
                                     ["predicted_depth"], context=f"depth/{overrides}")


def test_other_image_size_resizes_positions_like_torch(checkpoints):
    torch_model, path = checkpoints(transformers.DPTForDepthEstimation)
    head_parity.assert_matches_torch(DPTForDepthEstimation, torch_model, path, dict(pixel_values=pixels(3, 40)),
                                     ["predicted_depth"])


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_semantic_segmentation_logits_and_loss_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DPTForSemanticSegmentation)
    labels = np.random.RandomState(4).randint(0, 3, (2, 32, 32)).astype(np.int64)
    labels[:, :3] = 255  # config.semantic_loss_ignore_index
    inputs = dict(pixel_values=pixels(seed=4), labels=labels, output_hidden_states=True)
    head_parity.assert_matches_torch(DPTForSemanticSegmentation, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states"], mode)


@pytest.mark.parametrize("torch_cls,ours_cls,field", [
    (transformers.DPTForDepthEstimation, DPTForDepthEstimation, "predicted_depth"),
    (transformers.DPTForSemanticSegmentation, DPTForSemanticSegmentation, "logits")])
def test_fp16_close_to_torch(checkpoints, torch_cls, ours_cls, field):
    torch_model, path = checkpoints(torch_cls)
    vision_parity.assert_fp16_close(ours_cls, torch_model, path, dict(pixel_values=pixels(seed=5)), field,
                                    "pynative")


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_segmentation_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DPTForSemanticSegmentation)
    labels = np.random.RandomState(6).randint(0, 3, (2, 32, 32)).astype(np.int64)
    vision_parity.assert_gradients_match_torch(DPTForSemanticSegmentation, torch_model, path,
                                               dict(pixel_values=pixels(seed=6), labels=labels), mode)


def test_auto_classes_and_unsupported_configs(checkpoints):
    _, path = checkpoints(transformers.DPTForDepthEstimation)
    assert type(AutoModelForDepthEstimation.from_pretrained(path)) is DPTForDepthEstimation
    _, path = checkpoints(transformers.DPTForSemanticSegmentation)
    assert type(AutoModelForSemanticSegmentation.from_pretrained(path)) is DPTForSemanticSegmentation
    _, path = checkpoints(transformers.DPTModel)
    assert type(AutoModel.from_pretrained(path)) is DPTModel
    dinov2 = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                                       out_indices=[1, 2])
    with pytest.raises(NotImplementedError, match="'dinov2'"):
        DPTForDepthEstimation(make_config(backbone_config=dinov2))
    with pytest.raises(NotImplementedError, match="Training is not implemented"):
        parity.run_ours(parity.load_ours(DPTForDepthEstimation, checkpoints(transformers.DPTForDepthEstimation)[1]),
                        dict(pixel_values=pixels(), labels=np.zeros((2, 64, 64), np.float32)))


# DPT-Hybrid: 64x64 images; a bottleneck BiT ("SAME" padding) gives 8, 16 and 32 channels at strides 4, 8 and 16;
# its last map (4x4) is the token grid of 16-pixel patches, its first two go to the neck as the first two maps
HYBRID = dict(is_hybrid=True, image_size=64, patch_size=16, backbone_featmap_shape=[1, 32, 4, 4],
              backbone_config=dict(embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1], num_groups=2,
                                   layer_type="bottleneck", global_padding="same", embedding_dynamic_padding=True,
                                   out_features=["stage1", "stage2", "stage3"]))


def hybrid_pixels(seed=0):
    return vision_parity.processed_pixels(processor(64), seed=seed)


def assert_hybrid_matches_torch(ours_cls, torch_model, path, inputs, fields, mode):
    """fp32 parity as BiT's (tests/models/bit): against torch in float64 within max(1e-5, 1.5x torch fp32's own
    error), since the BiT backbone's stacked weight-standardised convs leave torch fp32 itself ~1e-5 off float64."""
    from tests.models.bit.test_modeling_bit import assert_matches_torch

    return assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode,
                                context=f"dpt-hybrid/{ours_cls.__name__}/{mode}")


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_hybrid_model_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DPTModel, **HYBRID)
    inputs = dict(pixel_values=hybrid_pixels(), output_hidden_states=True, output_attentions=True)
    out = assert_hybrid_matches_torch(DPTModel, torch_model, path, inputs,
                                      ["last_hidden_state", "pooler_output", "hidden_states", "attentions",
                                       "intermediate_activations"], mode)
    assert [tuple(m.shape) for m in out["intermediate_activations"]] == [(2, 8, 16, 16), (2, 16, 8, 8)]


@pytest.mark.parametrize("mode", parity.MODES)
def test_hybrid_depth_estimation_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.DPTForDepthEstimation, **HYBRID)
    inputs = dict(pixel_values=hybrid_pixels(seed=1), output_hidden_states=True)
    out = assert_hybrid_matches_torch(DPTForDepthEstimation, torch_model, path, inputs,
                                      ["predicted_depth", "hidden_states"], mode)
    assert out["predicted_depth"].shape == (2, 64, 64)


def test_hybrid_semantic_segmentation_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.DPTForSemanticSegmentation, **HYBRID)
    labels = np.random.RandomState(2).randint(0, 3, (2, 64, 64)).astype(np.int64)
    assert_hybrid_matches_torch(DPTForSemanticSegmentation, torch_model, path,
                                dict(pixel_values=hybrid_pixels(seed=2), labels=labels), ["logits", "loss"],
                                "pynative")


def test_hybrid_fp16_close_to_torch(checkpoints):
    torch_model, path = checkpoints(transformers.DPTForDepthEstimation, **HYBRID)
    vision_parity.assert_fp16_close(DPTForDepthEstimation, torch_model, path, dict(pixel_values=hybrid_pixels(3)),
                                    "predicted_depth", "pynative")


def test_hybrid_gradients_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.DPTForSemanticSegmentation, **HYBRID)
    labels = np.random.RandomState(4).randint(0, 3, (2, 64, 64)).astype(np.int64)
    vision_parity.assert_gradients_match_torch(DPTForSemanticSegmentation, torch_model, path,
                                               dict(pixel_values=hybrid_pixels(seed=4), labels=labels), "pynative")


def test_hybrid_checkpoint_keys_and_auto_class(checkpoints):
    torch_model, path = checkpoints(transformers.DPTForDepthEstimation, **HYBRID)
    ours = AutoModelForDepthEstimation.from_pretrained(path)
    assert type(ours) is DPTForDepthEstimation
    assert set(ours.parameters_dict()) == set(torch_model.state_dict())
    with pytest.raises(ValueError, match="doesn't match model"):
        ours(pixel_values=hybrid_pixels()[:, :, :48, :48])
