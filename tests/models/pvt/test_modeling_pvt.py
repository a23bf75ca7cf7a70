"""PVT (v1) parity with torch `transformers` on tiny random checkpoints (tests/parity.py): per-stage patch
embeddings + position tables, spatial-reduction attention (keys/values from a strided conv of the token map), a class
token in the last stage; pixels from transformers' own `PvtImageProcessorPil`."""

import numpy as np
import pytest
import transformers
from PIL import Image

from mindone.transformers import (
    AutoModel,
    AutoModelForImageClassification,
    PvtForImageClassification,
    PvtModel,
    pipeline,
)
from tests import parity
from tests.models import head_parity, vision_parity
from tests.pipelines.test_pipelines import assert_same_result

SIZE = 32
LABELS = ["cat", "dog", "bird", "fish"]


def make_config(**overrides):
    base = dict(image_size=SIZE, num_encoder_blocks=3, depths=[1, 1, 2], sequence_reduction_ratios=[4, 2, 1],
                hidden_sizes=[8, 16, 24], patch_sizes=[4, 2, 2], strides=[4, 2, 2], num_attention_heads=[1, 2, 3],
                mlp_ratios=[2, 2, 2], num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                label2id={label: i for i, label in enumerate(LABELS)},
                # HF's 0.02 leaves the tiny model's attention almost uniform and its query gradients near noise
                initializer_range=0.2)
    return transformers.PvtConfig(**{**base, **overrides})


def processor():
    return transformers.PvtImageProcessorPil(size={"height": SIZE, "width": SIZE})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return head_parity.checkpoint_factory(tmp_path_factory, make_config)


def pixels(seed=0):
    return vision_parity.processed_pixels(processor(), seed=seed)


@pytest.mark.parametrize("mode", parity.MODES)
def test_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PvtModel)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True, output_attentions=True)
    out, _ = head_parity.assert_matches_torch(PvtModel, torch_model, path, inputs,
                                              ["last_hidden_state", "hidden_states", "attentions"], mode)
    # 4 layers' outputs + the final LayerNorm; stage-1 keys reduced 4x per side: 64 queries over 4 keys
    assert len(out["hidden_states"]) == 5 and out["last_hidden_state"].shape == (2, 5, 24)
    assert out["attentions"][0].shape == (2, 1, 64, 4)


@pytest.mark.parametrize("mode", parity.MODES)
def test_classifier_logits_loss_hidden_states_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PvtForImageClassification)
    inputs = dict(pixel_values=pixels(seed=1), labels=np.array([3, 1], np.int64), output_hidden_states=True)
    head_parity.assert_matches_torch(PvtForImageClassification, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states"], mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PvtForImageClassification)
    vision_parity.assert_fp16_close(PvtForImageClassification, torch_model, path, dict(pixel_values=pixels(seed=4)),
                                    "logits", mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PvtForImageClassification)
    inputs = dict(pixel_values=pixels(seed=2), labels=np.array([1, 2], np.int64))
    vision_parity.assert_gradients_match_torch(PvtForImageClassification, torch_model, path, inputs, mode,
                                               exact=True)


def test_auto_classes_and_image_classification_pipeline(checkpoints, tmp_path):
    torch_model, path = checkpoints(transformers.PvtForImageClassification)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is PvtForImageClassification
    assert type(AutoModel.from_pretrained(path)) is PvtModel
    processor().save_pretrained(path)
    rng = np.random.RandomState(5)
    images = [Image.fromarray(rng.randint(0, 256, (30 + 7 * i, 40, 3), dtype=np.uint8)) for i in range(2)]
    ours = pipeline("image-classification", model=path)
    ref = transformers.pipeline("image-classification", model=path, image_processor=processor())
    for kwargs in ({}, dict(top_k=2)):
        assert_same_result(ours(images, batch_size=2, **kwargs), ref(images, **kwargs))


def test_other_image_size_is_refused(checkpoints):
    _, path = checkpoints(transformers.PvtModel)
    model = parity.load_ours(PvtModel, path)
    with pytest.raises(ValueError, match="position table"):
        parity.run_ours(model, dict(pixel_values=np.zeros((1, 3, 48, 48), np.float32)))
