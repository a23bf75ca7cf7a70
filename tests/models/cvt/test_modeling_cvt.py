"""CvT parity with torch `transformers` on tiny random checkpoints (tests/parity.py): convolutional token
embeddings, depthwise-conv + BatchNorm q/k/v projections (strided keys/values), a class token in the last stage or
none."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import AutoModel, AutoModelForImageClassification, CvtForImageClassification, CvtModel
from tests import parity
from tests.models import head_parity, vision_parity


def make_config(cls_token_last=True, **overrides):
    two = lambda a, b: [a, b]  # noqa: E731  (one value per stage)
    base = dict(patch_sizes=two(7, 3), patch_stride=two(4, 2), patch_padding=two(2, 1), embed_dim=two(8, 16),
                num_heads=two(1, 2), depth=two(1, 2), mlp_ratio=two(4.0, 4.0), attention_drop_rate=two(0.0, 0.0),
                drop_rate=two(0.0, 0.0), drop_path_rate=two(0.0, 0.0), qkv_bias=two(True, True),
                cls_token=two(False, cls_token_last), qkv_projection_method=two("dw_bn", "dw_bn"),
                kernel_qkv=two(3, 3), padding_kv=two(1, 1), stride_kv=two(2, 2), padding_q=two(1, 1),
                stride_q=two(1, 1), num_labels=3,
                # HF's 0.02 leaves the tiny model's attention uniform and its query gradients ~1e-13 (noise)
                initializer_range=0.3)
    return transformers.CvtConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def randomised(torch_cls, **overrides):
        model, path = get(torch_cls, **overrides)
        if not getattr(model, "_randomised", False):  # BatchNorm running statistics: randomised and saved again
            g = torch.Generator().manual_seed(3)
            with torch.no_grad():
                for name, buf in model.named_buffers():
                    if name.endswith("running_mean"):
                        buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
                    elif name.endswith("running_var"):
                        buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
            model._randomised = True
            parity.save_torch(model, path)
        return model, path

    return randomised


def pixels(seed=0):
    return vision_parity.processed_pixels(vision_parity.convnext_processor(32), seed=seed)


@pytest.mark.parametrize("cls_token_last,mode", [(True, "pynative"), (False, "pynative"), (True, "graph"),
                                                 pytest.param(False, "graph", marks=pytest.mark.slow)])
def test_model_matches_torch_fp32(checkpoints, cls_token_last, mode):
    torch_model, path = checkpoints(transformers.CvtModel, cls_token_last=cls_token_last)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True)
    fields = ["last_hidden_state", "hidden_states"] + (["cls_token_value"] if cls_token_last else [])
    head_parity.assert_matches_torch(CvtModel, torch_model, path, inputs, fields, mode)


# the classifier needs a class token in the last stage: without one, HF's forward fails (outputs[1] of a
# ModelOutput whose cls_token_value is None), so there is no torch reference to compare with
def test_classifier_loss_and_fp16(checkpoints):
    torch_model, path = checkpoints(transformers.CvtForImageClassification)
    inputs = dict(pixel_values=pixels(seed=1), labels=np.array([2, 0], np.int64))
    head_parity.assert_matches_torch(CvtForImageClassification, torch_model, path, inputs, ["logits", "loss"])
    vision_parity.assert_fp16_close(CvtForImageClassification, torch_model, path,
                                    dict(pixel_values=inputs["pixel_values"]), "logits", "pynative")


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CvtForImageClassification)
    inputs = dict(pixel_values=pixels(seed=2), labels=np.array([1, 2], np.int64))
    # against torch in float64, where the structurally zero key-bias gradients are exactly ~0 (1e-17)
    vision_parity.assert_gradients_match_torch(CvtForImageClassification, torch_model, path, inputs, mode,
                                               exact=True)


def test_auto_classes_resolve_cvt(checkpoints):
    _, path = checkpoints(transformers.CvtForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is CvtForImageClassification
    assert type(AutoModel.from_pretrained(path)) is CvtModel
