"""SigLIP 2 parity with torch `transformers` on tiny random checkpoints: NaFlex inputs (padded patch sequences of
images with different patch grids, smaller and larger than the position table's)."""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForZeroShotImageClassification,
    Siglip2ForImageClassification,
    Siglip2Model,
    Siglip2TextModel,
    Siglip2VisionModel,
)
from tests import parity

SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB, SEQ = 99, 10
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=SEQ, pad_token_id=1, bos_token_id=None, eos_token_id=2)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_patches=16,
              patch_size=2)
LABELS = dict(id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
MAX_PATCHES = 20
# a full 4x4 grid (the table's own), a wide 2x9 (upsampled columns) and a 3x3 (downsampled), padded to 20
GRIDS = [(4, 4), (2, 9), (3, 3)]


def make_config(kind):
    if kind == "text":
        return transformers.Siglip2TextConfig(**TEXT)
    if kind == "vision":
        return transformers.Siglip2VisionConfig(**VISION)
    return transformers.Siglip2Config(text_config=TEXT, vision_config=VISION, **(LABELS if kind == "cls" else {}))


def naflex(seed=0):
    rng = np.random.RandomState(seed)
    pixel_values = rng.randn(len(GRIDS), MAX_PATCHES, 3 * 2 * 2).astype(np.float32)
    mask = np.zeros((len(GRIDS), MAX_PATCHES), np.int32)
    for row, (h, w) in enumerate(GRIDS):
        mask[row, :h * w] = 1
    pixel_values[mask == 0] = 0.0
    return dict(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=np.array(GRIDS, np.int64))


def text_batch(seed=0):
    rng = np.random.RandomState(seed)
    ids = np.full((3, SEQ), TEXT["pad_token_id"], np.int64)
    lengths = [4, SEQ, 7]
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.randint(3, VOCAB, n)
    return ids, (np.arange(SEQ)[None] < np.array(lengths)[:, None]).astype(np.int64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(torch_cls, kind):
        key = (torch_cls.__name__, kind)
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(kind), seed=len(made))
            if kind == "full":
                with torch.no_grad():
                    model.logit_scale.fill_(1.3)
                    model.logit_bias.fill_(-2.0)
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[key]

    return get


def _real_patches():
    return naflex()["pixel_attention_mask"].astype(bool)


@pytest.mark.parametrize("mode", parity.MODES)
def test_siglip2_model_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Siglip2Model, "full")
    ours = parity.load_ours(Siglip2Model, path)
    ids, mask = text_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, **naflex(), return_loss=True, output_hidden_states=True)
    ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs, mode)
    errors = parity.compare_outputs(out, ref, ["logits_per_image", "logits_per_text", "loss", "text_embeds",
                                               "image_embeds"])
    for tower, rows in (("text_model_output", mask.astype(bool)), ("vision_model_output", _real_patches())):
        tower_errors = parity.compare_outputs(out[tower], ref[tower], ["last_hidden_state", "hidden_states"],
                                              rows=rows)
        tower_errors.update(parity.compare_outputs(out[tower], ref[tower], ["pooler_output"]))
        errors.update({f"{tower}.{k}": v for k, v in tower_errors.items()})
    parity.assert_close(errors, parity.FP32_BAR, mode)


def test_resized_position_embeddings_match_torch(checkpoints):
    """Every position, padding included (HF fills padding with the first resized entry)."""
    from mindone.transformers.models.siglip2.modeling_siglip2 import resize_positional_embeddings

    torch_model, _ = checkpoints(transformers.Siglip2VisionModel, "vision")
    table = torch_model.embeddings.position_embedding.weight.detach().reshape(4, 4, -1)
    shapes = np.array(GRIDS + [(1, 20), (5, 4)], np.int64)
    ref = torch_model.embeddings.resize_positional_embeddings(table, torch.from_numpy(shapes), MAX_PATCHES)
    ours = resize_positional_embeddings(ms.Tensor(table.numpy()), ms.Tensor(shapes), MAX_PATCHES)
    assert parity.rel_error(ours, ref) <= parity.FP32_BAR


@pytest.mark.parametrize(
    "ours_cls, torch_cls, kind, fields",
    [
        (Siglip2TextModel, transformers.Siglip2TextModel, "text", ["last_hidden_state", "pooler_output"]),
        (Siglip2VisionModel, transformers.Siglip2VisionModel, "vision",
         ["last_hidden_state", "pooler_output", "hidden_states", "attentions"]),
        (Siglip2ForImageClassification, transformers.Siglip2ForImageClassification, "cls", ["logits", "loss"]),
    ],
    ids=["text", "vision", "image_classification"],
)
@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_towers_and_classifier_match_torch_fp32(checkpoints, ours_cls, torch_cls, kind, fields, mode):
    torch_model, path = checkpoints(torch_cls, kind)
    ours = parity.load_ours(ours_cls, path)
    ids, mask = text_batch(seed=1)
    inputs = dict(input_ids=ids, attention_mask=mask) if kind == "text" else naflex(seed=1)
    rows = mask.astype(bool) if kind == "text" else _real_patches()
    if kind == "cls":
        inputs["labels"] = np.array([0, 2, 1], np.int64)
    if kind == "vision":
        inputs.update(output_hidden_states=True, output_attentions=True)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = {}
    for name in fields:
        errors.update(parity.compare_outputs(out, ref, [name], rows=rows if name in (
            "last_hidden_state", "hidden_states") else None))
    if "attentions" in errors:
        errors["attentions"] /= 2  # probabilities: the metric doubles softmax noise
    parity.assert_close(errors, parity.FP32_BAR, f"{ours_cls.__name__}/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints(transformers.Siglip2Model, "full")
    torch_fp16 = transformers.Siglip2Model.from_pretrained(path, dtype=torch.float16,
                                                           attn_implementation="eager").eval()
    ours = parity.load_ours(Siglip2Model, path, dtype="float16")
    ids, mask = text_batch(seed=2)
    inputs = dict(input_ids=ids, attention_mask=mask, **naflex(seed=2))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    fields = ["logits_per_image", "text_embeds", "image_embeds"]
    errors = parity.compare_outputs(out, ref, fields)
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, inputs), ref, fields)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", parity.MODES)
def test_sigmoid_loss_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Siglip2Model, "full")
    ours = parity.load_ours(Siglip2Model, path)
    ids, mask = text_batch(seed=3)
    inputs = dict(input_ids=ids, attention_mask=mask, **naflex(seed=3), return_loss=True)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    # a key bias (k_proj, the middle third of in_proj_bias) has a true gradient of 0: checked absolutely
    key_biases = [k for k in ref_grads if k.endswith("k_proj.bias")]
    assert max(float(np.abs(parity.to_numpy(grads[k])).max()) for k in key_biases) < 1e-6
    in_bias, d = "vision_model.head.attention.in_proj_bias", VISION["hidden_size"]
    assert float(np.abs(parity.to_numpy(grads[in_bias])[d:2 * d]).max()) < 1e-6
    ref_grads[in_bias] = torch.cat([ref_grads[in_bias][:d], ref_grads[in_bias][2 * d:]])
    grads[in_bias] = ms.Tensor(np.concatenate([grads[in_bias].asnumpy()[:d], grads[in_bias].asnumpy()[2 * d:]]))
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")


def test_spatial_shapes_larger_than_the_sequence_raise(checkpoints):
    _, path = checkpoints(transformers.Siglip2VisionModel, "vision")
    inputs = naflex()
    inputs["spatial_shapes"] = np.array([(4, 4), (5, 5), (3, 3)], np.int64)
    with pytest.raises(ValueError, match="spatial_shapes"):
        parity.run_ours(parity.load_ours(Siglip2VisionModel, path), inputs)


def test_auto_classes_pick_siglip2(checkpoints):
    _, full = checkpoints(transformers.Siglip2Model, "full")
    _, cls = checkpoints(transformers.Siglip2ForImageClassification, "cls")
    _, vision = checkpoints(transformers.Siglip2VisionModel, "vision")
    assert type(AutoModel.from_pretrained(full)) is Siglip2Model
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(full)) is Siglip2Model
    assert type(AutoModelForImageClassification.from_pretrained(cls)) is Siglip2ForImageClassification
    assert type(AutoModel.from_pretrained(vision)) is Siglip2VisionModel
