"""ConvNeXt (v1) parity with torch `transformers` on tiny random checkpoints (tests/parity.py); pixels come from
transformers' own image processor."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoBackbone,
    AutoModel,
    AutoModelForImageClassification,
    ConvNextBackbone,
    ConvNextForImageClassification,
    ConvNextModel,
)
from tests import parity
from tests.models import head_parity, vision_parity


def make_config(**overrides):
    base = dict(hidden_sizes=[8, 16, 24], depths=[1, 2, 1], num_stages=3, image_size=32, patch_size=4, num_labels=5,
                out_features=["stem", "stage1", "stage3"])
    return transformers.ConvNextConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def randomised(torch_cls, **overrides):
        model, path = get(torch_cls, **overrides)
        # layer scale starts at 1e-6 in HF, which would hide every block: randomise it and save again
        if not getattr(model, "_layer_scale_randomised", False):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith("layer_scale_parameter"):
                        p.copy_(torch.rand(p.shape) + 0.5)
            model._layer_scale_randomised = True
            parity.save_torch(model, path)
        return model, path

    return randomised


def pixels(seed=0):
    return vision_parity.processed_pixels(vision_parity.convnext_processor(), seed=seed)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ConvNextModel)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True)
    head_parity.assert_matches_torch(ConvNextModel, torch_model, path, inputs,
                                     ["last_hidden_state", "pooler_output", "hidden_states"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_classifier_logits_loss_hidden_states_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ConvNextForImageClassification)
    inputs = dict(pixel_values=pixels(seed=1), labels=np.array([4, 1], np.int64), output_hidden_states=True)
    head_parity.assert_matches_torch(ConvNextForImageClassification, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states"], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_fp16_close_to_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ConvNextForImageClassification)
    vision_parity.assert_fp16_close(ConvNextForImageClassification, torch_model, path,
                                    dict(pixel_values=pixels(seed=4)), "logits", mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_backbone_feature_maps_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ConvNextBackbone)
    inputs = dict(pixel_values=pixels(seed=2), output_hidden_states=True)
    out, ref = head_parity.assert_matches_torch(ConvNextBackbone, torch_model, path, inputs,
                                                ["feature_maps", "hidden_states"], mode)
    assert len(out["feature_maps"]) == 3
    # without output_hidden_states the backbone returns its feature maps only, as HF's does
    plain = parity.run_ours(parity.load_ours(ConvNextBackbone, path), dict(pixel_values=pixels(seed=2)))
    assert plain.get("hidden_states") is None and len(plain["feature_maps"]) == 3


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.ConvNextForImageClassification)
    inputs = dict(pixel_values=pixels(seed=3), labels=np.array([0, 3], np.int64))
    head_parity.assert_gradients_match_torch(ConvNextForImageClassification, torch_model, path, inputs, mode)


def test_auto_classes_resolve_convnext(checkpoints):
    _, path = checkpoints(transformers.ConvNextForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is ConvNextForImageClassification
    assert type(AutoModel.from_pretrained(path)) is ConvNextModel
    _, path = checkpoints(transformers.ConvNextBackbone)
    backbone = AutoBackbone.from_pretrained(path)
    assert type(backbone) is ConvNextBackbone and backbone.channels == [8, 8, 24]
