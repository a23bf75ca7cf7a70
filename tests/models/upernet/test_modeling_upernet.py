"""UperNet parity with torch `transformers` on tiny random checkpoints with ConvNeXt and Swin backbones
(tests/parity.py): logits, the decode + auxiliary loss, gradients, fp16."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import AutoModelForSemanticSegmentation, UperNetForSemanticSegmentation
from tests import parity
from tests.models import vision_parity
from tests.models.swin.test_modeling_swin import TORCH_TO_CHECKPOINT as SWIN_RENAMES

STAGES = ["stage1", "stage2", "stage3", "stage4"]
BACKBONES = {
    # 32x32 pixels: maps of 8, 4, 2 and 1 pixels a side
    "convnext": lambda: transformers.ConvNextConfig(hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1], num_stages=4,
                                                    out_features=STAGES),
    # window 4, always partitioned in a backbone: stage 1 has shifted windows, stages 3-4 are padded to a window
    "swin": lambda: transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[2, 1, 1, 1],
                                            num_heads=[1, 2, 2, 2], window_size=4, out_features=STAGES),
}


def make_config(backbone):
    return transformers.UperNetConfig(backbone_config=BACKBONES[backbone](), hidden_size=16, auxiliary_channels=8,
                                      pool_scales=[1, 2, 3, 6], num_labels=4)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(backbone):
        if backbone not in made:
            model = parity.torch_reference(transformers.UperNetForSemanticSegmentation, make_config(backbone),
                                           seed=len(made))
            # running statistics, layer scales, Swin's zero-initialised bias tables: randomised so they are tested
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for name, buf in model.named_buffers():
                    if name.endswith("running_mean"):
                        buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
                    elif name.endswith("running_var"):
                        buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
                for name, p in model.named_parameters():
                    if name.endswith(("layer_scale_parameter", "relative_position_bias_table")):
                        p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            made[backbone] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(f"upernet_{backbone}"))))
        return made[backbone]

    return get


def inputs(seed=0, labels=False):
    pixel_values = np.random.RandomState(seed).randn(2, 3, 32, 32).astype(np.float32)
    if not labels:
        return dict(pixel_values=pixel_values)
    target = np.random.RandomState(seed + 1).randint(0, 4, (2, 32, 32)).astype(np.int64)
    target[:, :4] = 255  # config.loss_ignore_index
    return dict(pixel_values=pixel_values, labels=target)


@pytest.mark.parametrize("backbone,mode", [("convnext", "pynative"), ("swin", "pynative"), ("convnext", "graph"),
                                           pytest.param("swin", "graph", marks=pytest.mark.slow)])
def test_logits_and_loss_match_torch(checkpoints, backbone, mode):
    torch_model, path = checkpoints(backbone)
    data = dict(inputs(labels=True), output_hidden_states=True)
    out = parity.run_ours(parity.load_ours(UperNetForSemanticSegmentation, path), data, mode)
    errors = parity.compare_outputs(out, parity.run_torch(torch_model, data), ["logits", "loss", "hidden_states"])
    parity.assert_close(errors, parity.FP32_BAR, f"{backbone}/{mode}")


@pytest.mark.parametrize("backbone", ["convnext", pytest.param("swin", marks=pytest.mark.slow)])
def test_fp16_close_to_torch(checkpoints, backbone):
    torch_model, path = checkpoints(backbone)
    vision_parity.assert_fp16_close(UperNetForSemanticSegmentation, torch_model, path, inputs(seed=1), "logits",
                                    "pynative")


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, backbone, mode):
    torch_model, path = checkpoints(backbone)
    renames = SWIN_RENAMES + [(r"^backbone\.swin\.", "backbone.")] if backbone == "swin" else ()
    vision_parity.assert_gradients_match_torch(UperNetForSemanticSegmentation, torch_model, path,
                                               inputs(seed=2, labels=True), mode, renames, f"{backbone}/{mode}")


def test_auto_class_and_tuple_output(checkpoints):
    torch_model, path = checkpoints("convnext")
    model = AutoModelForSemanticSegmentation.from_pretrained(path)
    assert type(model) is UperNetForSemanticSegmentation
    out = model(**parity.to_ms_inputs(inputs(seed=3)), return_dict=False)
    assert len(out) == 1 and parity.rel_error(out[0], parity.run_torch(torch_model, inputs(seed=3)).logits) <= 1e-5
