"""Image pipelines (image-classification, image-feature-extraction) on tiny ViT / DINOv2 checkpoints, against torch
`transformers`' pipelines on the same files and the same image processor (the PIL/NumPy one: torchvision, the
default processors' backend, is not installed here; both sides use the processor saved with the checkpoint)."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from mindone.transformers import ViTForImageClassification, pipeline
from tests import parity
from tests.pipelines.test_pipelines import assert_same_result

SIZE = 16
LABELS = ["cat", "dog", "bird", "fish", "car"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=SIZE, patch_size=4)


def _processor():
    try:
        import torchvision  # noqa: F401
        return transformers.ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    except ImportError:
        return transformers.ViTImageProcessorPil(size={"height": SIZE, "width": SIZE})


def _save(model, directory):
    model.save_pretrained(str(directory))
    _processor().save_pretrained(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    labels = dict(id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    made = {}
    torch.manual_seed(0)
    classifier = transformers.ViTForImageClassification(transformers.ViTConfig(**TINY, intermediate_size=37,
                                                                               **labels)).eval()
    with torch.no_grad():  # sharpened so the random scores are not near-ties (rankings must be stable)
        classifier.classifier.weight.mul_(20.0)
    made["vit-classifier"] = _save(classifier, tmp_path_factory.mktemp("vit_cls"))
    made["vit"] = _save(transformers.ViTModel(transformers.ViTConfig(**TINY, intermediate_size=37)).eval(),
                        tmp_path_factory.mktemp("vit"))
    made["dinov2"] = _save(transformers.Dinov2Model(transformers.Dinov2Config(**TINY, mlp_ratio=2)).eval(),
                           tmp_path_factory.mktemp("dinov2"))
    return made


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two PIL images of different sizes, one saved as a file."""
    rng = np.random.RandomState(0)
    pil = [Image.fromarray(rng.randint(0, 256, (30 + 7 * i, 40, 3), dtype=np.uint8)) for i in range(3)]
    path = tmp_path_factory.mktemp("images") / "image.png"
    pil[2].save(path)
    return pil[:2], str(path)


def _torch_pipeline(task, directory):
    return transformers.pipeline(task, model=directory, image_processor=_processor())


@pytest.mark.parametrize("kwargs", [{}, dict(top_k=2), dict(top_k=10, function_to_apply="sigmoid"),
                                    dict(function_to_apply="none")])
def test_image_classification_matches_torch(dirs, images, kwargs):
    pil, path = images
    ours = pipeline("image-classification", model=dirs["vit-classifier"])
    ref = _torch_pipeline("image-classification", dirs["vit-classifier"])
    inputs = pil + [path]
    assert_same_result(ours(inputs, batch_size=2, **kwargs), ref(inputs, **kwargs))
    assert_same_result(ours(path, **kwargs), ref(path, **kwargs))


def test_image_classification_numpy_input_and_model_instance(dirs, images):
    pil, _ = images
    ours = pipeline("image-classification", model=ViTForImageClassification.from_pretrained(dirs["vit-classifier"]),
                    image_processor=_processor())
    ref = _torch_pipeline("image-classification", dirs["vit-classifier"])
    assert_same_result(ours(np.asarray(pil[0])), ref(pil[0]))


@pytest.mark.parametrize("family", ["vit", "dinov2"])
@pytest.mark.parametrize("pool", [False, True])
def test_image_feature_extraction_matches_torch(dirs, images, family, pool):
    pil, path = images
    ours = pipeline("image-feature-extraction", model=dirs[family])
    ref = _torch_pipeline("image-feature-extraction", dirs[family])
    inputs = pil + [path]
    out, expected = ours(inputs, pool=pool, batch_size=3), ref(inputs, pool=pool)
    assert len(out) == len(expected) == 3
    for a, b in zip(out, expected):
        assert np.shape(a) == np.shape(b)
        assert parity.rel_error(np.asarray(a), np.asarray(b)) <= parity.FP32_BAR
    single = ours(pil[0], pool=pool, return_tensors=True)
    assert isinstance(single, np.ndarray) and single.shape == np.shape(expected[0])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tests.docs.test_t5_clip_snippets import save_clip_tokenizer

    directory = str(tmp_path_factory.mktemp("clip"))
    tokenizer = save_clip_tokenizer(directory)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=40, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(TINY, intermediate_size=37)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    parity.torch_reference(transformers.CLIPModel, config, seed=7).save_pretrained(directory)
    try:
        import torchvision  # noqa: F401
        processor_cls = transformers.CLIPImageProcessor
    except ImportError:
        processor_cls = transformers.CLIPImageProcessorPil
    processor_cls(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("template", [None, "a picture of a {}"])
def test_zero_shot_image_classification_matches_torch(clip_dir, images, template):
    pil, path = images
    labels = ["cat", "dog", "park walks"]
    kwargs = dict(candidate_labels=labels) if template is None else dict(candidate_labels=labels,
                                                                         hypothesis_template=template)
    ours = pipeline("zero-shot-image-classification", model=clip_dir)
    ref = transformers.pipeline("zero-shot-image-classification", model=clip_dir)
    inputs = pil + [path]
    assert_same_result(ours(inputs, batch_size=2, **kwargs), ref(inputs, **kwargs))
    assert_same_result(ours(pil[0], **kwargs), ref(pil[0], **kwargs))
