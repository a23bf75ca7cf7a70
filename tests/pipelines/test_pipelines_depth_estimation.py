"""depth-estimation (DPT) and image-segmentation (DPT) pipelines against torch `transformers`' pipelines on the same
tiny checkpoints and DPT image processor (the PIL one when torchvision is not installed)."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from mindone.transformers import DPTForDepthEstimation, pipeline
from tests import parity
from tests.pipelines.test_pipelines import assert_same_result

SIZE = 32
LABELS = ["sky", "road", "tree"]
CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=SIZE,
              patch_size=8, backbone_out_indices=[0, 1], neck_hidden_sizes=[16, 32], reassemble_factors=[2, 1],
              fusion_hidden_size=16, id2label=dict(enumerate(LABELS)),
              label2id={label: i for i, label in enumerate(LABELS)})


def _processor():
    try:
        import torchvision  # noqa: F401
        cls = transformers.DPTImageProcessor
    except ImportError:
        cls = transformers.DPTImageProcessorPil
    return cls(size={"height": SIZE, "width": SIZE}, keep_aspect_ratio=False)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    made = {}
    depth = parity.torch_reference(transformers.DPTForDepthEstimation, transformers.DPTConfig(**CONFIG))
    segmenter = parity.torch_reference(transformers.DPTForSemanticSegmentation, transformers.DPTConfig(**CONFIG))
    with torch.no_grad():
        for model in (depth, segmenter):
            for name, p in model.named_parameters():
                if name.endswith(("cls_token", "position_embeddings")):
                    p.normal_(0.0, 0.5)
        # the small initialisation leaves the heads' outputs nearly flat (depth std ~1e-3, logits ~1e-2): their last
        # convs are scaled up so that the depth map varies and no pixel's arg-max is a near-tie; the depth head's
        # convs feed ReLUs, whose biases keep the map positive
        depth.head.head[2].bias.fill_(0.2)
        depth.head.head[4].bias.fill_(0.5)
        depth.head.head[4].weight.mul_(300.0)
        segmenter.head.head[4].weight.mul_(3000.0)
        # ... and its classes centred (on a sample image), so that more than one class wins somewhere
        sample = _processor()(Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)), return_tensors="pt")
        segmenter.head.head[4].bias.sub_(segmenter(**sample).logits.mean((0, 2, 3)))
    for name, model in (("depth", depth), ("segmentation", segmenter)):
        made[name] = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(made[name])
        _processor().save_pretrained(made[name])
    return made


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two smooth random RGB images of different sizes (one saved as a file)."""
    rng = np.random.RandomState(0)
    pil = []
    for h, w in ((40, 52), (37, 30)):
        small = rng.randint(0, 256, (12, 14, 3), dtype=np.uint8)
        pil.append(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    path = tmp_path_factory.mktemp("images") / "image.png"
    pil[1].save(path)
    return pil, str(path)


def assert_same_depth(ours, ref):
    """HF's keys in HF's order; the depth map (torch tensor there, NumPy here) within 1e-5 of torch's relative to
    its mean magnitude, the normalised depth image equal up to one grey level where a value sits on a rounding edge."""
    assert list(ours) == list(ref) == ["predicted_depth", "depth"]
    expected = ref["predicted_depth"].numpy()
    assert isinstance(ours["predicted_depth"], np.ndarray) and ours["predicted_depth"].dtype == np.float32
    assert ours["predicted_depth"].shape == expected.shape
    error = np.abs(ours["predicted_depth"] - expected).max() / np.abs(expected).mean()
    assert error <= 1e-5, error
    assert isinstance(ours["depth"], Image.Image) and ours["depth"].mode == ref["depth"].mode
    assert ours["depth"].size == ref["depth"].size
    levels = np.abs(np.asarray(ours["depth"], np.int16) - np.asarray(ref["depth"], np.int16))
    assert levels.max() <= 1 and (levels > 0).mean() < 0.01


def test_depth_estimation_matches_torch(dirs, images):
    pil, path = images
    ours = pipeline("depth-estimation", model=dirs["depth"])
    ref = transformers.pipeline("depth-estimation", model=dirs["depth"])
    out, expected = ours(pil + [path], batch_size=2), ref(pil + [path])
    assert isinstance(out, list) and len(out) == len(expected) == 3
    for a, b in zip(out, expected):
        assert_same_depth(a, b)
    # the depth map has the original image's (height, width)
    assert out[0]["predicted_depth"].shape == (pil[0].height, pil[0].width) and out[0]["depth"].size == pil[0].size
    single = ours(path)
    assert isinstance(single, dict)
    assert_same_depth(single, ref(path))


def test_depth_estimation_with_model_instance(dirs, images):
    pil, _ = images
    model = DPTForDepthEstimation.from_pretrained(dirs["depth"])
    ours = pipeline("depth-estimation", model=model, image_processor=_processor())
    assert_same_depth(ours(pil[0]), transformers.pipeline("depth-estimation", model=dirs["depth"])(pil[0]))


def test_dpt_semantic_segmentation_matches_torch(dirs, images):
    pil, path = images
    ours = pipeline("image-segmentation", model=dirs["segmentation"])
    ref = transformers.pipeline("image-segmentation", model=dirs["segmentation"])
    out = ours(pil + [path], batch_size=2)
    assert_same_result(out, ref(pil + [path]))
    assert len(out[0]) >= 2



