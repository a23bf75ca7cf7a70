"""zero-shot-image-classification with SigLIP / SigLIP 2 (sigmoid scores, text padded to max_length=64) and
image-classification with their classifiers, against torch `transformers`' pipelines on the same tiny checkpoints
and processors (the PIL image processors: torchvision is not installed here)."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from mindone.transformers import pipeline
from tests import parity
from tests.pipelines.test_pipelines import assert_same_result

WORDS = ["this", "is", "a", "photo", "of", "picture", "cat", "dog", "park", "walks", "."]
LABELS = ["cat", "dog", "park walks"]
CLASSES = dict(id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})


def save_tokenizer(directory):
    """A word-level tokenizer that, like SigLIP's, returns no attention mask (the model sees the padding)."""
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>", model_input_names=["input_ids"])
    fast.save_pretrained(directory)
    return len(vocab)


def _text(vocab_size):
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=None)


def _sharpen(model):
    """logit scale and bias that spread the sigmoid scores (HF initialises both to 0: all scores near 0.5)."""
    with torch.no_grad():
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(2.5)
            model.logit_bias.fill_(-1.0)
        else:
            model.classifier.weight.mul_(20.0)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    made = {}
    vision1 = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                   patch_size=4)
    vision2 = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_patches=16,
                   patch_size=4)
    processor1 = transformers.SiglipImageProcessorPil(size={"height": 16, "width": 16})
    processor2 = transformers.Siglip2ImageProcessorPil(patch_size=4, max_num_patches=20)
    for name, torch_cls, config, processor in [
        ("siglip", transformers.SiglipModel, lambda v: transformers.SiglipConfig(text_config=_text(v),
                                                                                 vision_config=vision1), processor1),
        ("siglip2", transformers.Siglip2Model, lambda v: transformers.Siglip2Config(text_config=_text(v),
                                                                                    vision_config=vision2),
         processor2),
        ("siglip-cls", transformers.SiglipForImageClassification,
         lambda v: transformers.SiglipConfig(text_config=_text(v), vision_config=vision1, **CLASSES), processor1),
        ("siglip2-cls", transformers.Siglip2ForImageClassification,
         lambda v: transformers.Siglip2Config(text_config=_text(v), vision_config=vision2, **CLASSES), processor2),
    ]:
        directory = str(tmp_path_factory.mktemp(name))
        vocab_size = save_tokenizer(directory)
        model = parity.torch_reference(torch_cls, config(vocab_size), seed=len(made))
        _sharpen(model)
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        made[name] = directory
    return made


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three PIL images of different sizes (different NaFlex grids), one saved as a file."""
    rng = np.random.RandomState(0)
    pil = [Image.fromarray(rng.randint(0, 256, (30 + 9 * i, 40, 3), dtype=np.uint8)) for i in range(3)]
    path = tmp_path_factory.mktemp("images") / "image.png"
    pil[2].save(path)
    return pil[:2], str(path)


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
@pytest.mark.parametrize("template", [None, "a picture of a {}"])
def test_zero_shot_image_classification_matches_torch(dirs, images, family, template):
    pil, path = images
    kwargs = dict(candidate_labels=LABELS)
    if template is not None:
        kwargs["hypothesis_template"] = template
    ours = pipeline("zero-shot-image-classification", model=dirs[family])
    ref = transformers.pipeline("zero-shot-image-classification", model=dirs[family])
    inputs = pil + [path]
    result, expected = ours(inputs, batch_size=2, **kwargs), ref(inputs, **kwargs)
    assert_same_result(result, expected)
    assert [list(d) for d in result[0]] == [list(d) for d in expected[0]]  # key order too
    assert_same_result(ours(pil[0], **kwargs), ref(pil[0], **kwargs))
    # sigmoid scores: independent per label, not a distribution
    assert any(abs(sum(r["score"] for r in item) - 1.0) > 1e-3 for item in result)


@pytest.mark.parametrize("family", ["siglip-cls", "siglip2-cls"])
@pytest.mark.parametrize("kwargs", [{}, dict(top_k=2, function_to_apply="sigmoid")])
def test_image_classification_matches_torch(dirs, images, family, kwargs):
    pil, path = images
    ours = pipeline("image-classification", model=dirs[family])
    ref = transformers.pipeline("image-classification", model=dirs[family])
    inputs = pil + [path]
    assert_same_result(ours(inputs, batch_size=2, **kwargs), ref(inputs, **kwargs))
