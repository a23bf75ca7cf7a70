"""image-segmentation (semantic: UperNet, Data2Vec-Vision) and image-classification (Swin) pipelines against torch `transformers`'
pipelines on the same tiny checkpoints and image processors (the PIL ones: torchvision is not installed here)."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from mindone.transformers import UperNetForSemanticSegmentation, pipeline
from tests.pipelines.test_pipelines import assert_same_result

LABELS = ["sky", "road", "tree", "car"]
SIZE = 32


def _processor(cls_name, **kwargs):
    try:
        import torchvision  # noqa: F401
        return getattr(transformers, cls_name)(**kwargs)
    except ImportError:
        return getattr(transformers, cls_name + "Pil")(**kwargs)


def _labels():
    return dict(id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    made = {}
    torch.manual_seed(0)
    backbone = transformers.ConvNextConfig(hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1], num_stages=4,
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    segmenter = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=16, auxiliary_channels=8, **_labels())).eval()
    with torch.no_grad():  # sharpened so that no pixel's arg-max is a near-tie
        segmenter.decode_head.classifier.weight.mul_(30.0)
        segmenter.decode_head.classifier.bias.zero_()
    made["upernet"] = str(tmp_path_factory.mktemp("upernet"))
    segmenter.save_pretrained(made["upernet"])
    _processor("SegformerImageProcessor", size={"height": SIZE, "width": SIZE}).save_pretrained(made["upernet"])
    classifier = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=SIZE, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=4,
        **_labels())).eval()
    with torch.no_grad():
        classifier.classifier.weight.mul_(20.0)
    made["swin"] = str(tmp_path_factory.mktemp("swin"))
    classifier.save_pretrained(made["swin"])
    _processor("ViTImageProcessor", size={"height": SIZE, "width": SIZE}).save_pretrained(made["swin"])
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


def test_semantic_segmentation_matches_torch(dirs, images):
    pil, path = images
    ours = pipeline("image-segmentation", model=dirs["upernet"])
    ref = transformers.pipeline("image-segmentation", model=dirs["upernet"])
    out, expected = ours(pil + [path], batch_size=2), ref(pil + [path])
    assert_same_result(out, expected)
    # the masks are the original images' size and the classes found cover every pixel once
    assert [m["mask"].size for m in out[0]] == [pil[0].size] * len(out[0]) and len(out[0]) >= 2
    assert sum(np.asarray(m["mask"]) // 255 for m in out[0]).max() == 1
    assert_same_result(ours(path, subtask="semantic"), ref(path, subtask="semantic"))


@pytest.fixture(scope="module")
def data2vec_dir(tmp_path_factory):
    """A tiny Data2VecVisionForSemanticSegmentation (BEiT head) with HF's BEiT image processor."""
    torch.manual_seed(1)
    config = transformers.Data2VecVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4, image_size=16, patch_size=4,
        use_relative_position_bias=True, out_indices=[2, 3, 4, 5], pool_scales=[1, 2, 3, 6], auxiliary_channels=8,
        **_labels())
    model = transformers.Data2VecVisionForSemanticSegmentation(config).eval()
    with torch.no_grad():  # sharpened so that no pixel's arg-max is a near-tie
        model.decode_head.classifier.weight.mul_(30.0)
        model.decode_head.classifier.bias.zero_()
    path = str(tmp_path_factory.mktemp("data2vec_vision"))
    model.save_pretrained(path)
    _processor("BeitImageProcessor", size={"height": 16, "width": 16}, do_center_crop=False).save_pretrained(path)
    return path


def test_data2vec_vision_semantic_segmentation_matches_torch(data2vec_dir, images):
    pil, path = images
    ours = pipeline("image-segmentation", model=data2vec_dir)
    ref = transformers.pipeline("image-segmentation", model=data2vec_dir)
    out = ours(pil + [path], batch_size=2)
    assert_same_result(out, ref(pil + [path]))
    assert [m["mask"].size for m in out[0]] == [pil[0].size] * len(out[0]) and len(out[0]) >= 2


def test_segmentation_with_model_instance_and_unsupported_subtask(dirs, images):
    pil, _ = images
    model = UperNetForSemanticSegmentation.from_pretrained(dirs["upernet"])
    ours = pipeline("image-segmentation", model=model,
                    image_processor=_processor("SegformerImageProcessor", size={"height": SIZE, "width": SIZE}))
    ref = transformers.pipeline("image-segmentation", model=dirs["upernet"])
    assert_same_result(ours(pil[1]), ref(pil[1]))
    with pytest.raises(ValueError, match="Subtask panoptic is not supported"):
        ours(pil[1], subtask="panoptic")


@pytest.mark.parametrize("kwargs", [{}, dict(top_k=2), dict(function_to_apply="sigmoid")])
def test_swin_image_classification_matches_torch(dirs, images, kwargs):
    pil, path = images
    ours = pipeline("image-classification", model=dirs["swin"])
    ref = transformers.pipeline("image-classification", model=dirs["swin"])
    assert_same_result(ours(pil + [path], batch_size=2, **kwargs), ref(pil + [path], **kwargs))
