"""Swin parity with torch `transformers` on tiny random checkpoints (tests/parity.py): shifted windows, padding of
sizes that are not multiples of the patch / window / 2, patch merging, masked image modeling, the backbone."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoBackbone,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    SwinBackbone,
    SwinForImageClassification,
    SwinForMaskedImageModeling,
    SwinModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

SIZE = 32


def make_config(**overrides):
    # 32 / 4 = 8x8 patches, window 4: stage 1 has 4 windows and a shifted block, stage 2 (4x4) is one window
    base = dict(image_size=SIZE, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 4], window_size=4,
                num_labels=3, encoder_stride=8, use_absolute_embeddings=True, out_features=["stem", "stage1", "stage2"])
    return transformers.SwinConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def randomised(torch_cls, **overrides):
        model, path = get(torch_cls, **overrides)
        # HF starts the relative position bias, position embeddings and mask token at zero: randomise and re-save
        if not getattr(model, "_zeros_randomised", False):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(("relative_position_bias_table", "position_embeddings", "mask_token")):
                        p.copy_(torch.randn(p.shape))
            model._zeros_randomised = True
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


@pytest.mark.parametrize("mode", parity.MODES)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SwinModel)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True, output_attentions=True)
    head_parity.assert_matches_torch(SwinModel, torch_model, path, inputs,
                                     ["last_hidden_state", "pooler_output", "hidden_states", "attentions",
                                      "reshaped_hidden_states"], mode)


def test_sizes_not_multiple_of_patch_or_window_match_torch(checkpoints):
    """36x44 pixels: padded to 36x44 -> 9x11 patches (window-padded to 12x12, odd sizes merged with padding)."""
    torch_model, path = checkpoints(transformers.SwinForImageClassification, use_absolute_embeddings=False)
    inputs = dict(pixel_values=np.random.RandomState(1).randn(2, 3, 35, 43).astype(np.float32),
                  output_hidden_states=True)
    head_parity.assert_matches_torch(SwinForImageClassification, torch_model, path, inputs,
                                     ["logits", "reshaped_hidden_states"], "pynative")


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_classifier_fp32_loss_and_fp16(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SwinForImageClassification)
    inputs = dict(pixel_values=pixels(seed=2), labels=np.array([2, 0], np.int64))
    head_parity.assert_matches_torch(SwinForImageClassification, torch_model, path, inputs, ["logits", "loss"],
                                     mode)
    vision_parity.assert_fp16_close(SwinForImageClassification, torch_model, path,
                                    dict(pixel_values=inputs["pixel_values"]), "logits", mode)


def test_interpolate_pos_encoding_matches_torch(checkpoints):
    """A fresh torch model: HF's SwinLayer permanently drops a block's shift once it has seen a map no larger than a
    window (set_shift_and_window_size mutates the module), so a model that ran 32x32 images would then treat the
    larger 12x10 grid differently from a fresh one; ours decides per call, like a fresh HF model."""
    torch_model, path = checkpoints(transformers.SwinForImageClassification, num_labels=4)
    inputs = dict(pixel_values=np.random.RandomState(3).randn(2, 3, 48, 40).astype(np.float32),
                  interpolate_pos_encoding=True)
    head_parity.assert_matches_torch(SwinForImageClassification, torch_model, path, inputs, ["logits"])


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_masked_image_modeling_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SwinForMaskedImageModeling)
    mask = np.random.RandomState(4).rand(2, (SIZE // 4) ** 2) < 0.5
    inputs = dict(pixel_values=pixels(seed=4), bool_masked_pos=mask)
    head_parity.assert_matches_torch(SwinForMaskedImageModeling, torch_model, path, inputs,
                                     ["reconstruction", "loss"], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_backbone_feature_maps_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SwinBackbone)
    inputs = dict(pixel_values=pixels(seed=5), output_hidden_states=True)
    out, _ = head_parity.assert_matches_torch(SwinBackbone, torch_model, path, inputs,
                                              ["feature_maps", "hidden_states"], mode)
    assert [tuple(f.shape) for f in out["feature_maps"]] == [(2, 8, 8, 8), (2, 8, 8, 8), (2, 16, 4, 4)]


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SwinForImageClassification)
    inputs = dict(pixel_values=pixels(seed=6), labels=np.array([1, 2], np.int64))
    vision_parity.assert_gradients_match_torch(SwinForImageClassification, torch_model, path, inputs, mode,
                                               TORCH_TO_CHECKPOINT)


# transformers 5 renamed Swin's torch modules but still reads and writes the original checkpoint keys (ours)
TORCH_TO_CHECKPOINT = [(r"attention\.([qkv])_proj", lambda m: "attention.self." + {"q": "query", "k": "key",
                                                                                    "v": "value"}[m.group(1)]),
                       (r"attention\.o_proj", "attention.output.dense"),
                       (r"attention\.relative_position_bias\.", "attention.self."),
                       (r"mlp\.fc1", "intermediate.dense"), (r"mlp\.fc2", "output.dense")]


def test_auto_classes_resolve_swin(checkpoints):
    _, path = checkpoints(transformers.SwinForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is SwinForImageClassification
    _, path = checkpoints(transformers.SwinForMaskedImageModeling)
    assert type(AutoModelForMaskedImageModeling.from_pretrained(path)) is SwinForMaskedImageModeling
    _, path = checkpoints(transformers.SwinBackbone)
    assert type(AutoBackbone.from_pretrained(path)) is SwinBackbone
