"""Helpers shared by the convolutional / windowed vision parity tests (ConvNeXt, Swin, UperNet)."""

import copy

import numpy as np
import pytest
import transformers
from PIL import Image

from tests import parity


def processed_pixels(processor, seed=0, batch=2, shape=(40, 36)):
    """Random RGB images of `shape` through `processor(..., return_tensors="np")`."""
    rng = np.random.RandomState(seed)
    images = [Image.fromarray(rng.randint(0, 256, shape + (3,), dtype=np.uint8)) for _ in range(batch)]
    return processor(images, return_tensors="np")["pixel_values"].astype(np.float32)


def convnext_processor(size=32):
    try:
        import torchvision  # noqa: F401  (the default processor's backend)
        cls = transformers.ConvNextImageProcessor
    except ImportError:
        cls = getattr(transformers, "ConvNextImageProcessorPil", transformers.ConvNextImageProcessor)
    return cls(size={"shortest_edge": size}, crop_pct=1.0)


def assert_fp16_close(ours_cls, torch_model, path, inputs, field, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x torch's own fp16 error if that is larger."""
    ref = parity.run_torch(torch_model, inputs)[field]
    half_inputs = {k: v.astype(np.float16) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
                   for k, v in inputs.items()}
    torch_error = parity.rel_error(parity.run_torch(copy.deepcopy(torch_model).half(), half_inputs)[field], ref)
    out = parity.run_ours(parity.load_ours(ours_cls, path, dtype="float16"), inputs, mode)
    error = parity.rel_error(out[field], ref)
    assert error <= max(parity.FP16_BAR, 1.25 * torch_error), (f"fp16/{mode} {field}", error, torch_error)
    return error, torch_error


def assert_gradients_match_torch(ours_cls, torch_model, path, inputs, mode, renames=(), context="", exact=False,
                                 torch_error_factor=None):
    """Parameter gradients of the model's loss vs torch's, torch's parameter names mapped to checkpoint keys by the
    (regex, replacement) `renames` (transformers 5 renamed some modules but still writes the original keys).

    `exact`: the reference is torch in float64 (for gradients whose torch fp32 value is itself noisy); with
    `torch_error_factor`, a gradient also passes within that factor of torch fp32's own error against float64."""
    import re

    bars = {}
    if exact:
        inputs64 = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
                    for k, v in inputs.items()}
        ref_loss, ref_grads = parity.torch_gradients(copy.deepcopy(torch_model).double(), inputs64)
        if torch_error_factor:
            _, fp32_grads = parity.torch_gradients(torch_model, inputs)
            bars = {n: max(parity.GRAD_BAR, torch_error_factor * parity.rel_error(fp32_grads[n], g))
                    for n, g in ref_grads.items()}
    else:
        ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    for pattern, replacement in renames:
        ref_grads = {re.sub(pattern, replacement, n): g for n, g in ref_grads.items()}
    loss, grads = parity.our_gradients(parity.load_ours(ours_cls, path), inputs, mode)
    # softmax is shift-invariant per query, so a bias added to every key (a key projection's bias, CvT's key
    # BatchNorm bias) has a true gradient of 0: both sides hold rounding noise, which the relative metric cannot
    # judge; it is checked absolutely
    key_biases = [n for n in ref_grads if (n.endswith("key.bias") and float(ref_grads[n].abs().max()) < 1e-6)
                  or float(ref_grads[n].abs().max()) < 1e-15]
    for name in key_biases:
        assert float(np.abs(parity.to_numpy(grads[name])).max()) < 1e-6, f"{name}: gradient should be ~0"
    errors = {}
    for name, ref in ref_grads.items():
        if name in key_biases:
            continue
        assert name in grads, f"no gradient for {name}"
        ref, ours = parity.to_numpy(ref), parity.to_numpy(grads[name])
        # a convolution tap that only ever meets zero padding (a 3x3 or 7x7 kernel on a 1x1 map) has a gradient of
        # exactly 0: it must be exactly 0 here too, and is left out of the mean that scales the relative error
        exact_zero = ref == 0
        if exact_zero.any() and not exact_zero.all():
            assert np.all(ours[exact_zero] == 0), f"{name}: gradient should be 0 where torch's is exactly 0"
            errors[name] = parity.rel_error(ours, ref, ~exact_zero)
        else:
            errors[name] = parity.rel_error(ours, ref)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    for pattern, replacement in renames:
        bars = {re.sub(pattern, replacement, n): b for n, b in bars.items()}
    bad = {n: (e, bars.get(n, parity.GRAD_BAR)) for n, e in errors.items() if not e <= bars.get(n, parity.GRAD_BAR)}
    assert not bad, f"{context or f'grads/{ours_cls.__name__}/{mode}'}: (error, bar) above the bar: {bad}"


# graph compilation of these models takes 5-40 s each on the 2-core CI box: one test per family runs in both modes
# by default, the others run compiled only in `make test-slow`
PYNATIVE_AND_SLOW_GRAPH = ["pynative", pytest.param("graph", marks=pytest.mark.slow)]
