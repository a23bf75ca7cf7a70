"""CLIP family parity with torch `transformers` on tiny random checkpoints (tests/parity.py)."""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)
from mindone.transformers.backend import functional as F
from tests import parity

# graph-mode twins of the longer tests run under `make test-slow` (the PyNative ones stay in `make test`)
SLOW_GRAPH = ("pynative", pytest.param("graph", marks=pytest.mark.slow))

VOCAB = 99
BOS, EOS = 97, 98  # the real tokenizer's specials are the last ids of the vocabulary, as here
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=12, projection_dim=24, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16,
              patch_size=4, projection_dim=24)
# activation x pooling rule: new configs pool at the first eos_token_id; old ones (eos_token_id 2) at the argmax id
VARIANTS = {
    "quick_gelu_new_eos": dict(hidden_act="quick_gelu"),
    "gelu_old_eos": dict(hidden_act="gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1),
}


def text_config(variant):
    return transformers.CLIPTextConfig(**{**TEXT, **VARIANTS[variant]})


def vision_config(variant):
    return transformers.CLIPVisionConfig(**VISION, hidden_act=VARIANTS[variant]["hidden_act"])


def clip_config(variant):
    return transformers.CLIPConfig(text_config=text_config(variant).to_dict(),
                                   vision_config=vision_config(variant).to_dict(), projection_dim=24)


def text_batch(seed=0):
    """BOS, words, EOS, then padding with EOS (as the SD tokenizers pad): rows of different lengths."""
    rng = np.random.RandomState(seed)
    ids = np.full((3, 12), EOS, np.int64)
    lengths = [5, 12, 8]
    for row, n in enumerate(lengths):
        ids[row, 0] = BOS
        ids[row, 1:n - 1] = rng.randint(1, BOS - 1, n - 2)
    mask = (np.arange(12)[None] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


def pixels(seed=0, size=16):
    return np.random.RandomState(seed).randn(3, 3, size, size).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(variant, torch_cls):
        key = (variant, torch_cls.__name__)
        if key not in made:
            if torch_cls is transformers.CLIPModel:
                config = clip_config(variant)
            elif "Vision" in torch_cls.__name__:
                config = vision_config(variant)
            else:
                config = text_config(variant)
            model = parity.torch_reference(torch_cls, config, seed=len(made))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(variant))))
        return made[key]

    return get


def test_bicubic_interpolate_equals_torch():
    x = np.random.RandomState(0).randn(1, 5, 7, 7).astype(np.float32)
    for size in [(7, 7), (10, 10), (4, 9)]:
        for align_corners in (False, True):
            ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bicubic",
                                                  align_corners=align_corners)
            assert parity.rel_error(F.interpolate(ms.Tensor(x), size, "bicubic", align_corners), ref) <= 1e-5


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_clip_model_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant, transformers.CLIPModel)
    ours = parity.load_ours(CLIPModel, path)
    ids, mask = text_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(), return_loss=True,
                  output_hidden_states=True, output_attentions=True)
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, inputs, mode)
    errors = parity.compare_outputs(out, ref, ["logits_per_image", "logits_per_text", "loss", "text_embeds",
                                               "image_embeds"])
    for tower in ("text_model_output", "vision_model_output"):
        rows = mask.astype(bool) if tower == "text_model_output" else None
        tower_errors = parity.compare_outputs(out[tower], ref[tower], ["last_hidden_state", "hidden_states"],
                                              rows=rows)
        tower_errors.update(parity.compare_outputs(out[tower], ref[tower], ["pooler_output"]))
        errors.update({f"{tower}.{k}": v for k, v in tower_errors.items()})
        attention = max(parity.rel_error(a, b) for a, b in zip(out[tower]["attentions"], ref[tower].attentions))
        errors[f"{tower}.attentions"] = attention / 2  # probabilities: the metric doubles softmax noise
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")


@pytest.mark.parametrize(
    "ours_cls, torch_cls, fields",
    [
        (CLIPTextModel, transformers.CLIPTextModel, ["last_hidden_state", "pooler_output", "hidden_states"]),
        (CLIPTextModelWithProjection, transformers.CLIPTextModelWithProjection, ["text_embeds", "hidden_states"]),
        (CLIPVisionModel, transformers.CLIPVisionModel, ["last_hidden_state", "pooler_output", "hidden_states"]),
        (CLIPVisionModelWithProjection, transformers.CLIPVisionModelWithProjection,
         ["image_embeds", "last_hidden_state"]),
    ],
)
@pytest.mark.parametrize("mode", SLOW_GRAPH)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_towers_match_torch_fp32(checkpoints, ours_cls, torch_cls, fields, variant, mode):
    torch_model, path = checkpoints(variant, torch_cls)
    ours = parity.load_ours(ours_cls, path)
    ids, mask = text_batch(seed=1)
    text = "Text" in ours_cls.__name__
    inputs = dict(input_ids=ids, attention_mask=mask) if text else dict(pixel_values=pixels(seed=1))
    inputs["output_hidden_states"] = True
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = {}
    for name in fields:
        per_token = text and name in ("last_hidden_state", "hidden_states")
        errors.update(parity.compare_outputs(out, ref, [name], rows=mask.astype(bool) if per_token else None))
    parity.assert_close(errors, parity.FP32_BAR, f"{ours_cls.__name__}/{variant}/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints("quick_gelu_new_eos", transformers.CLIPModel)
    ours = parity.load_ours(CLIPModel, path, dtype="float16")
    assert ours.logit_scale.dtype == ms.float16
    ids, mask = text_batch(seed=2)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(seed=2))
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = parity.compare_outputs(out, ref, ["logits_per_image", "text_embeds", "image_embeds"])
    parity.assert_close(errors, parity.FP16_BAR, f"fp16/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
def test_contrastive_loss_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints("quick_gelu_new_eos", transformers.CLIPModel)
    ours = parity.load_ours(CLIPModel, path)
    ids, mask = text_batch(seed=3)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(seed=3), return_loss=True)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    # see test_logit_scale_loads_as_a_scalar: the loaded scalar is (1,), so is its gradient
    grads["logit_scale"] = grads["logit_scale"].reshape(())
    # a key bias shifts every score of a query equally, so softmax makes its true gradient zero: both sides hold noise
    key_biases = [k for k in ref_grads if k.endswith("k_proj.bias")]
    assert max(float(np.abs(parity.to_numpy(grads[k])).max()) for k in key_biases) < 1e-6
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    # embedding tables sum many small contributions per row (scatter-add in another order than torch): measured
    # 1.4e-4 .. 3.4e-4; every other gradient is within GRAD_BAR
    embeddings = {k: errors.pop(k) for k in list(errors) if "embedding.weight" in k}
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")
    parity.assert_close(embeddings, 5 * parity.GRAD_BAR, f"embedding grads/{mode}")


def test_logit_scale_loads_as_a_scalar(checkpoints):
    _, path = checkpoints("quick_gelu_new_eos", transformers.CLIPModel)
    assert parity.load_ours(CLIPModel, path).logit_scale.shape == ()


def test_text_and_image_features_are_projected_pooled_states(checkpoints):
    torch_model, path = checkpoints("quick_gelu_new_eos", transformers.CLIPModel)
    ours = parity.load_ours(CLIPModel, path)
    ids, mask = text_batch(seed=4)
    with torch.no_grad():
        ref_text = torch_model.get_text_features(input_ids=torch.from_numpy(ids),
                                                 attention_mask=torch.from_numpy(mask)).pooler_output
        ref_image = torch_model.get_image_features(pixel_values=torch.from_numpy(pixels(seed=4))).pooler_output
    text = ours.get_text_features(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask)).pooler_output
    image = ours.get_image_features(pixel_values=ms.Tensor(pixels(seed=4))).pooler_output
    assert parity.rel_error(text, ref_text) <= parity.FP32_BAR
    assert parity.rel_error(image, ref_image) <= parity.FP32_BAR


@pytest.mark.parametrize("mode", parity.MODES)
def test_interpolate_pos_encoding_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints("quick_gelu_new_eos", transformers.CLIPVisionModel)
    ours = parity.load_ours(CLIPVisionModel, path)
    inputs = dict(pixel_values=pixels(seed=5, size=24), interpolate_pos_encoding=True)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    parity.assert_close(parity.compare_outputs(out, ref, ["last_hidden_state", "pooler_output"]), parity.FP32_BAR)


def test_wrong_image_size_without_interpolation_raises(checkpoints):
    _, path = checkpoints("quick_gelu_new_eos", transformers.CLIPVisionModel)
    ours = parity.load_ours(CLIPVisionModel, path)
    with pytest.raises(ValueError, match="doesn't match model"):
        ours(pixel_values=ms.Tensor(pixels(size=24)))


def test_text_model_loads_full_clip_checkpoint_and_prefixed_keys(checkpoints):
    """A CLIPModel checkpoint ("text_model.*" keys, as openai/clip-vit-large-patch14 and SD text encoders carry)
    loads into CLIPTextModel; the result equals torch's text tower."""
    torch_model, path = checkpoints("gelu_old_eos", transformers.CLIPModel)
    ours = parity.load_ours(CLIPTextModel, path)
    ids, mask = text_batch(seed=6)
    with torch.no_grad():
        ref = torch_model.text_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    out = ours(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask))
    assert parity.rel_error(out.pooler_output, ref.pooler_output) <= parity.FP32_BAR


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints("quick_gelu_new_eos", transformers.CLIPModel)
    ours = parity.load_ours(CLIPModel, path)
    ids, mask = text_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(), return_loss=True, return_dict=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 7
    for a, b in zip(out[:5], ref[:5]):
        assert parity.rel_error(a, b) <= parity.FP32_BAR
    assert isinstance(out[5], tuple) and len(out[5]) == len(ref[5])
