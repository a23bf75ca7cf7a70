"""MobileViTV2 parity with torch `transformers` on tiny random checkpoints (tests/parity.py): inverted residuals,
separable linear self-attention over unfolded patches, the DeepLabV3 segmentation head with dilated layers, fp16,
gradients; pixels come from transformers' MobileViT image processor."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    MobileViTV2ForImageClassification,
    MobileViTV2ForSemanticSegmentation,
    MobileViTV2Model,
)
from tests import parity
from tests.models import vision_parity

SIZE = 64


def make_config(**overrides):
    # width 0.25: stem 16, layers 16, 32, 64, 96, 128 channels; attention units 32, 48, 64 on 8x8, 4x4, 2x2 maps
    base = dict(image_size=SIZE, patch_size=2, width_multiplier=0.25, n_attn_blocks=[1, 2, 1], num_labels=3,
                aspp_out_channels=16, atrous_rates=[1, 2, 3])
    return transformers.MobileViTV2Config(**{**base, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(torch_cls, **overrides):
        key = (torch_cls.__name__, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in made:
            # one seed for every checkpoint: its weights do not depend on which tests ran before
            model = parity.torch_reference(torch_cls, make_config(**overrides), seed=0)
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():  # BatchNorm statistics start at 0 / 1: randomised so they are tested
                for name, buf in model.named_buffers():
                    if name.endswith("running_mean"):
                        buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
                    elif name.endswith("running_var"):
                        buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
                for name, p in model.named_parameters():
                    if name.endswith("normalization.weight"):  # HF initialises them at N(0, 0.02)
                        p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[key]

    return get


# the gradient checks use initializer_range 0.05: at HF's 0.02 the loss gradient shrinks ~1e5x per block (the stem's
# is ~1e-23) and the early gradients are mostly rounding residue; the reference is torch float64, the bar
# max(1e-4, 3x torch fp32's own error): the first blocks' weight gradients measured up to 3x
GRADIENT_INIT = dict(initializer_range=0.05)


def processor(size=SIZE):
    try:
        import torchvision  # noqa: F401
        cls = transformers.MobileViTImageProcessor
    except ImportError:
        cls = getattr(transformers, "MobileViTImageProcessorPil", transformers.MobileViTImageProcessor)
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def pixels(seed=0, size=SIZE):
    return vision_parity.processed_pixels(processor(size), seed=seed, shape=(size + 8, size + 4))


def assert_matches(ours_cls, torch_model, path, inputs, fields, mode="pynative", context=""):
    out = parity.run_ours(parity.load_ours(ours_cls, path), inputs, mode)
    errors = parity.compare_outputs(out, parity.run_torch(torch_model, inputs), fields)
    parity.assert_close(errors, parity.FP32_BAR, context or f"{ours_cls.__name__}/{mode}")
    return out


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.MobileViTV2Model)
    assert_matches(MobileViTV2Model, torch_model, path, dict(pixel_values=pixels(), output_hidden_states=True),
                   ["last_hidden_state", "pooler_output", "hidden_states"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_classifier_logits_loss_hidden_states_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.MobileViTV2ForImageClassification)
    inputs = dict(pixel_values=pixels(seed=1), labels=np.array([2, 0], np.int64), output_hidden_states=True)
    assert_matches(MobileViTV2ForImageClassification, torch_model, path, inputs, ["logits", "loss", "hidden_states"],
                   mode)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_semantic_segmentation_matches_torch(checkpoints, output_stride):
    torch_model, path = checkpoints(transformers.MobileViTV2ForSemanticSegmentation, output_stride=output_stride)
    labels = np.random.RandomState(2).randint(0, 3, (2, SIZE, SIZE)).astype(np.int64)
    labels[:, :5] = 255  # config.semantic_loss_ignore_index
    inputs = dict(pixel_values=pixels(seed=2), labels=labels, output_hidden_states=True)
    out = assert_matches(MobileViTV2ForSemanticSegmentation, torch_model, path, inputs,
                         ["logits", "loss", "hidden_states"], context=f"segmentation/stride {output_stride}")
    assert out["logits"].shape == (2, 3, SIZE // output_stride, SIZE // output_stride)


def test_size_not_multiple_of_patches_matches_torch(checkpoints):
    """72x40 pixels: odd maps (9x5 at layer 3) whose last row / column no patch covers (torch's fold leaves 0)."""
    torch_model, path = checkpoints(transformers.MobileViTV2ForImageClassification)
    inputs = dict(pixel_values=np.random.RandomState(3).randn(2, 3, 72, 40).astype(np.float32),
                  output_hidden_states=True)
    assert_matches(MobileViTV2ForImageClassification, torch_model, path, inputs, ["logits", "hidden_states"])


@pytest.mark.parametrize("torch_cls,ours_cls,field", [
    (transformers.MobileViTV2ForImageClassification, MobileViTV2ForImageClassification, "logits"),
    (transformers.MobileViTV2ForSemanticSegmentation, MobileViTV2ForSemanticSegmentation, "logits")])
def test_fp16_close_to_torch(checkpoints, torch_cls, ours_cls, field):
    torch_model, path = checkpoints(torch_cls)
    vision_parity.assert_fp16_close(ours_cls, torch_model, path, dict(pixel_values=pixels(seed=4)), field,
                                    "pynative")


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.MobileViTV2ForImageClassification, **GRADIENT_INIT)
    inputs = dict(pixel_values=pixels(seed=5), labels=np.array([1, 2], np.int64))
    vision_parity.assert_gradients_match_torch(MobileViTV2ForImageClassification, torch_model, path, inputs, mode,
                                               exact=True, torch_error_factor=3.0)


def test_segmentation_gradients_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.MobileViTV2ForSemanticSegmentation, output_stride=16,
                                   **GRADIENT_INIT)
    labels = np.random.RandomState(6).randint(0, 3, (2, SIZE, SIZE)).astype(np.int64)
    vision_parity.assert_gradients_match_torch(MobileViTV2ForSemanticSegmentation, torch_model, path,
                                               dict(pixel_values=pixels(seed=6), labels=labels), "pynative",
                                               exact=True, torch_error_factor=3.0)


def test_auto_classes_resolve_mobilevitv2(checkpoints):
    _, path = checkpoints(transformers.MobileViTV2ForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is MobileViTV2ForImageClassification
    assert type(AutoModel.from_pretrained(path)) is MobileViTV2Model
    _, path = checkpoints(transformers.MobileViTV2ForSemanticSegmentation, output_stride=32)
    assert type(AutoModelForSemanticSegmentation.from_pretrained(path)) is MobileViTV2ForSemanticSegmentation
