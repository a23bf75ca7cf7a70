"""object-detection pipeline on a tiny YOLOS checkpoint against torch `transformers`' pipeline on the same
checkpoint and image processor (the PIL one when torchvision is not installed)."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from mindone.transformers import pipeline
from tests.pipelines.test_pipelines import assert_same_result

LABELS = ["cat", "dog", "remote"]


def _processor(**kwargs):
    try:
        import torchvision  # noqa: F401
        return transformers.YolosImageProcessor(**kwargs)
    except ImportError:
        return transformers.YolosImageProcessorPil(**kwargs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.YolosConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                      image_size=[16, 24], patch_size=4, num_detection_tokens=8,
                                      id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    model = transformers.YolosForObjectDetection(config).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if name.endswith(("cls_token", "detection_tokens", "position_embeddings")):
                p.copy_(torch.randn(p.shape, generator=g))
        # large random heads, so that detections have distinct confident labels and spread-out boxes
        for name, p in model.named_parameters():
            if name.startswith(("class_labels_classifier", "bbox_predictor")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    path = str(tmp_path_factory.mktemp("yolos"))
    model.save_pretrained(path)
    _processor(size={"shortest_edge": 16, "longest_edge": 24}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.RandomState(0)
    pil = [Image.fromarray(rng.randint(0, 256, (10, 12, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
           for h, w in ((40, 60), (37, 30))]
    path = tmp_path_factory.mktemp("images") / "image.png"
    pil[1].save(path)
    return pil, str(path)


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_object_detection_pipeline_matches_torch(model_dir, images, threshold):
    pil, path = images
    kwargs = {} if threshold is None else {"threshold": threshold}
    ours = pipeline("object-detection", model=model_dir)
    ref = transformers.pipeline("object-detection", model=model_dir)
    got, want = ours(pil + [path], **kwargs), ref(pil + [path], **kwargs)
    assert sum(len(r) for r in want) >= 3, f"too few detections to compare: {want}"
    assert_same_result(got, want)
    assert_same_result(ours(pil[0], **kwargs), ref(pil[0], **kwargs))
