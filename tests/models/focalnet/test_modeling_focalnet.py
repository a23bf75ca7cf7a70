"""FocalNet parity with torch `transformers` on tiny random checkpoints (tests/parity.py): focal modulation with its
variants (overlapping conv embeddings, layer scale, post-layernorm, normalised modulator), padding of sizes that
are not multiples of the patch size, masked image modeling, the backbone, fp16, gradients."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoBackbone,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    FocalNetBackbone,
    FocalNetForImageClassification,
    FocalNetForMaskedImageModeling,
    FocalNetModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

SIZE = 32


def make_config(**overrides):
    # 32 / 4 = 8x8 patches, then 4x4 and 2x2 maps; focal levels of 3x3 and 5x5 depthwise kernels
    base = dict(image_size=SIZE, patch_size=4, embed_dim=8, depths=[1, 2, 1], hidden_sizes=[16, 32, 32],
                focal_levels=[2, 2, 2], focal_windows=[3, 3, 3], num_labels=3, encoder_stride=16,
                out_features=["stem", "stage1", "stage3"])
    return transformers.FocalNetConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def randomised(torch_cls, **overrides):
        model, path = get(torch_cls, **overrides)
        # HF starts the mask token at zero and the layer scales at 1e-4: randomise and re-save
        if not getattr(model, "_randomised", False):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith("mask_token"):
                        p.copy_(torch.randn(p.shape))
                    elif name.endswith(("gamma_1", "gamma_2")):
                        p.copy_(torch.rand(p.shape) + 0.5)
            model._randomised = True
            parity.save_torch(model, path)
        return model, path

    return randomised


def processor(size=SIZE):
    try:
        import torchvision  # noqa: F401
        return transformers.ViTImageProcessor(size={"height": size, "width": size})
    except ImportError:
        return transformers.ViTImageProcessorPil(size={"height": size, "width": size})


def pixels(seed=0, size=SIZE):
    return vision_parity.processed_pixels(processor(size), seed=seed)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.FocalNetModel)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True)
    head_parity.assert_matches_torch(FocalNetModel, torch_model, path, inputs,
                                     ["last_hidden_state", "pooler_output", "hidden_states", "reshaped_hidden_states"],
                                     mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_classifier_logits_loss_hidden_states_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.FocalNetForImageClassification)
    inputs = dict(pixel_values=pixels(seed=1), labels=np.array([2, 0], np.int64), output_hidden_states=True)
    head_parity.assert_matches_torch(FocalNetForImageClassification, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states", "reshaped_hidden_states"], mode)


@pytest.mark.parametrize("overrides", [
    dict(use_conv_embed=True),
    dict(use_layerscale=True, use_post_layernorm=True),
    dict(normalize_modulator=True, use_post_layernorm_in_modulation=True, focal_levels=[3, 1, 2])])
def test_variants_match_torch(checkpoints, overrides):
    torch_model, path = checkpoints(transformers.FocalNetForImageClassification, **overrides)
    inputs = dict(pixel_values=pixels(seed=2), output_hidden_states=True)
    head_parity.assert_matches_torch(FocalNetForImageClassification, torch_model, path, inputs,
                                     ["logits", "hidden_states"], context=f"focalnet/{overrides}")


def test_size_not_multiple_of_patch_matches_torch(checkpoints):
    """35x43 pixels: padded to 36x44 -> 9x11 patches, odd maps padded before every downsampling."""
    torch_model, path = checkpoints(transformers.FocalNetForImageClassification)
    inputs = dict(pixel_values=np.random.RandomState(3).randn(2, 3, 35, 43).astype(np.float32),
                  output_hidden_states=True)
    head_parity.assert_matches_torch(FocalNetForImageClassification, torch_model, path, inputs,
                                     ["logits", "reshaped_hidden_states"])


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_masked_image_modeling_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.FocalNetForMaskedImageModeling)
    mask = np.random.RandomState(4).rand(2, 64) < 0.5
    inputs = dict(pixel_values=pixels(seed=4), bool_masked_pos=mask, output_hidden_states=True)
    head_parity.assert_matches_torch(FocalNetForMaskedImageModeling, torch_model, path, inputs,
                                     ["loss", "reconstruction", "hidden_states"], mode)


def test_backbone_feature_maps_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.FocalNetBackbone)
    inputs = dict(pixel_values=pixels(seed=5), output_hidden_states=True)
    out, _ = head_parity.assert_matches_torch(FocalNetBackbone, torch_model, path, inputs,
                                              ["feature_maps", "hidden_states"])
    assert len(out["feature_maps"]) == 3
    plain = parity.run_ours(parity.load_ours(FocalNetBackbone, path), dict(pixel_values=pixels(seed=5)))
    assert plain.get("hidden_states") is None and len(plain["feature_maps"]) == 3


def test_fp16_close_to_torch(checkpoints):
    torch_model, path = checkpoints(transformers.FocalNetForImageClassification)
    vision_parity.assert_fp16_close(FocalNetForImageClassification, torch_model, path,
                                    dict(pixel_values=pixels(seed=6)), "logits", "pynative")


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.FocalNetForImageClassification)
    inputs = dict(pixel_values=pixels(seed=7), labels=np.array([1, 2], np.int64))
    vision_parity.assert_gradients_match_torch(FocalNetForImageClassification, torch_model, path, inputs, mode)


def test_auto_classes_resolve_focalnet(checkpoints):
    _, path = checkpoints(transformers.FocalNetForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is FocalNetForImageClassification
    assert type(AutoModel.from_pretrained(path)) is FocalNetModel
    _, path = checkpoints(transformers.FocalNetForMaskedImageModeling)
    assert type(AutoModelForMaskedImageModeling.from_pretrained(path)) is FocalNetForMaskedImageModeling
    _, path = checkpoints(transformers.FocalNetBackbone)
    backbone = AutoBackbone.from_pretrained(path)
    assert type(backbone) is FocalNetBackbone and backbone.channels == [8, 16, 32]
