"""SigLIP parity with torch `transformers` on tiny random checkpoints (tests/parity.py)."""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForZeroShotImageClassification,
    SiglipForImageClassification,
    SiglipModel,
    SiglipTextModel,
    SiglipVisionModel,
)
from tests import parity

# graph-mode twins of the tower tests run under `make test-slow` (the PyNative ones stay in `make test`)
SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB, SEQ = 99, 12
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=SEQ, pad_token_id=1, bos_token_id=None, eos_token_id=2)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16,
              patch_size=4)
LABELS = dict(id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})


def make_config(kind, **vision_overrides):
    vision = {**VISION, **vision_overrides}
    if kind == "text":
        return transformers.SiglipTextConfig(**TEXT)
    if kind == "vision":
        return transformers.SiglipVisionConfig(**vision)
    return transformers.SiglipConfig(text_config=TEXT, vision_config=vision, **(LABELS if kind == "cls" else {}))


def text_batch(seed=0):
    """Three rows of different lengths, right-padded with the pad id, and their padding mask."""
    rng = np.random.RandomState(seed)
    ids = np.full((3, SEQ), TEXT["pad_token_id"], np.int64)
    lengths = [5, SEQ, 8]
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.randint(3, VOCAB, n)
    mask = (np.arange(SEQ)[None] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


def pixels(seed=0, size=16):
    return np.random.RandomState(seed).randn(3, 3, size, size).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(torch_cls, kind, **vision_overrides):
        key = (torch_cls.__name__, kind, tuple(sorted(vision_overrides.items())))
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(kind, **vision_overrides), seed=len(made))
            if kind == "full":
                with torch.no_grad():  # HF initialises both to zero: make them matter
                    model.logit_scale.fill_(1.3)
                    model.logit_bias.fill_(-2.0)
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[key]

    return get


def _tower_errors(out, ref, rows=None):
    errors = parity.compare_outputs(out, ref, ["last_hidden_state", "hidden_states"], rows=rows)
    errors.update(parity.compare_outputs(out, ref, ["pooler_output"]))
    # probabilities: the metric doubles softmax noise
    errors["attentions"] = max(parity.rel_error(a, b) for a, b in zip(out["attentions"], ref["attentions"])) / 2
    return errors


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("masked", [True, False], ids=["padding_mask", "no_mask"])
def test_siglip_model_matches_torch_fp32(checkpoints, mode, masked):
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    ours = parity.load_ours(SiglipModel, path)
    ids, mask = text_batch()
    inputs = dict(input_ids=ids, pixel_values=pixels(), return_loss=True, output_hidden_states=True,
                  output_attentions=True)
    if masked:
        inputs["attention_mask"] = mask
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, inputs, mode)
    errors = parity.compare_outputs(out, ref, ["logits_per_image", "logits_per_text", "loss", "text_embeds",
                                               "image_embeds"])
    rows = mask.astype(bool) if masked else None
    errors.update({f"text.{k}": v for k, v in _tower_errors(out["text_model_output"], ref.text_model_output,
                                                           rows).items()})
    errors.update({f"vision.{k}": v for k, v in _tower_errors(out["vision_model_output"],
                                                             ref.vision_model_output).items()})
    parity.assert_close(errors, parity.FP32_BAR, f"masked={masked}/{mode}")


@pytest.mark.parametrize(
    "ours_cls, torch_cls, kind, overrides, fields",
    [
        (SiglipTextModel, transformers.SiglipTextModel, "text", {}, ["last_hidden_state", "pooler_output",
                                                                     "hidden_states"]),
        (SiglipVisionModel, transformers.SiglipVisionModel, "vision", {}, ["last_hidden_state", "pooler_output",
                                                                           "hidden_states"]),
        (SiglipVisionModel, transformers.SiglipVisionModel, "vision", {"vision_use_head": False},
         ["last_hidden_state", "hidden_states"]),
        (SiglipForImageClassification, transformers.SiglipForImageClassification, "cls", {},
         ["logits", "loss", "hidden_states", "attentions"]),
    ],
    ids=["text", "vision", "vision_no_head", "image_classification"],
)
@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_towers_and_classifier_match_torch_fp32(checkpoints, ours_cls, torch_cls, kind, overrides, fields, mode):
    torch_model, path = checkpoints(torch_cls, kind, **overrides)
    ours = parity.load_ours(ours_cls, path)
    ids, mask = text_batch(seed=1)
    text = kind == "text"
    inputs = dict(input_ids=ids, attention_mask=mask) if text else dict(pixel_values=pixels(seed=1))
    if kind == "cls":
        inputs["labels"] = np.array([0, 2, 1], np.int64)
        inputs["output_attentions"] = True
    inputs["output_hidden_states"] = True
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    if "pooler_output" not in fields and kind == "vision":
        assert out.get("pooler_output") is None and ref.pooler_output is None
    errors = {}
    for name in fields:
        per_token = text and name in ("last_hidden_state", "hidden_states")
        errors.update(parity.compare_outputs(out, ref, [name], rows=mask.astype(bool) if per_token else None))
    if "attentions" in errors:
        errors["attentions"] /= 2  # probabilities: the metric doubles softmax noise
    parity.assert_close(errors, parity.FP32_BAR, f"{ours_cls.__name__}/{kind}/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    torch_fp16 = transformers.SiglipModel.from_pretrained(path, dtype=torch.float16,
                                                          attn_implementation="eager").eval()
    ours = parity.load_ours(SiglipModel, path, dtype="float16")
    assert ours.logit_bias.dtype == ms.float16
    ids, mask = text_batch(seed=2)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(seed=2))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    fields = ["logits_per_image", "text_embeds", "image_embeds"]
    errors = parity.compare_outputs(out, ref, fields)
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, inputs), ref, fields)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if not v <= max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", parity.MODES)
def test_sigmoid_loss_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    ours = parity.load_ours(SiglipModel, path)
    ids, mask = text_batch(seed=3)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(seed=3), return_loss=True)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    # softmax is shift-invariant per query, so a key bias has a true gradient of 0: both sides hold rounding noise
    key_biases = [k for k in ref_grads if k.endswith("k_proj.bias")]
    assert max(float(np.abs(parity.to_numpy(grads[k])).max()) for k in key_biases) < 1e-6
    # the pooling head's key bias sits inside in_proj_bias: same argument for its middle third
    in_bias = "vision_model.head.attention.in_proj_bias"
    d = VISION["hidden_size"]
    assert float(np.abs(parity.to_numpy(grads[in_bias])[d:2 * d]).max()) < 1e-6
    ref_grads[in_bias] = torch.cat([ref_grads[in_bias][:d], ref_grads[in_bias][2 * d:]])
    grads[in_bias] = ms.Tensor(np.concatenate([grads[in_bias].asnumpy()[:d], grads[in_bias].asnumpy()[2 * d:]]))
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")


def test_text_and_image_features_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    ours = parity.load_ours(SiglipModel, path)
    ids, _ = text_batch(seed=4)
    with torch.no_grad():
        ref_text = torch_model.get_text_features(input_ids=torch.from_numpy(ids)).pooler_output
        ref_image = torch_model.get_image_features(pixel_values=torch.from_numpy(pixels(seed=4))).pooler_output
    text = ours.get_text_features(input_ids=ids).pooler_output
    image = ours.get_image_features(pixel_values=ms.Tensor(pixels(seed=4))).pooler_output
    assert parity.rel_error(text, ref_text) <= parity.FP32_BAR
    assert parity.rel_error(image, ref_image) <= parity.FP32_BAR


@pytest.mark.parametrize("mode", parity.MODES)
def test_interpolate_pos_encoding_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.SiglipVisionModel, "vision")
    ours = parity.load_ours(SiglipVisionModel, path)
    inputs = dict(pixel_values=pixels(seed=5, size=24), interpolate_pos_encoding=True)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    parity.assert_close(parity.compare_outputs(out, ref, ["last_hidden_state", "pooler_output"]), parity.FP32_BAR)


def test_wrong_image_size_without_interpolation_raises(checkpoints):
    _, path = checkpoints(transformers.SiglipVisionModel, "vision")
    with pytest.raises(ValueError, match="doesn't match model"):
        parity.load_ours(SiglipVisionModel, path)(pixel_values=ms.Tensor(pixels(size=24)))


def test_towers_load_from_the_full_checkpoint(checkpoints):
    """A SiglipModel checkpoint ("text_model.*" / "vision_model.*" keys) loads into each tower."""
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    ids, mask = text_batch(seed=6)
    with torch.no_grad():
        ref_text = torch_model.text_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        ref_image = torch_model.vision_model(pixel_values=torch.from_numpy(pixels(seed=6)))
    text = parity.load_ours(SiglipTextModel, path)(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask))
    image = parity.load_ours(SiglipVisionModel, path)(pixel_values=ms.Tensor(pixels(seed=6)))
    assert parity.rel_error(text.pooler_output, ref_text.pooler_output) <= parity.FP32_BAR
    assert parity.rel_error(image.pooler_output, ref_image.pooler_output) <= parity.FP32_BAR


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    ours = parity.load_ours(SiglipModel, path)
    ids, mask = text_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(), return_loss=True, return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 7
    for a, b in zip(out[:5], ref[:5]):
        assert parity.rel_error(a, b) <= parity.FP32_BAR
    assert isinstance(out[5], tuple) and len(out[5]) == len(ref[5])


def test_auto_classes_pick_siglip(checkpoints):
    _, full = checkpoints(transformers.SiglipModel, "full")
    _, cls = checkpoints(transformers.SiglipForImageClassification, "cls")
    _, vision = checkpoints(transformers.SiglipVisionModel, "vision")
    assert type(AutoModel.from_pretrained(full)) is SiglipModel
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(full)) is SiglipModel
    assert type(AutoModelForImageClassification.from_pretrained(cls)) is SiglipForImageClassification
    assert type(AutoModel.from_pretrained(vision)) is SiglipVisionModel


def test_saved_checkpoint_has_hf_keys_and_loads_in_torch(checkpoints, tmp_path):
    torch_model, path = checkpoints(transformers.SiglipModel, "full")
    parity.load_ours(SiglipModel, path).save_pretrained(str(tmp_path))
    reloaded = transformers.SiglipModel.from_pretrained(str(tmp_path)).eval()
    for name, value in torch_model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
