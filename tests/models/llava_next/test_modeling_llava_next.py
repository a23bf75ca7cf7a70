"""LLaVA-NeXT parity with torch `transformers` on a tiny random checkpoint: any-resolution tiles, unpadding,
`image_newline`, two images of different shapes in a left-padded batch; generate()."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import AutoModelForImageTextToText, LlavaNextForConditionalGeneration, LlavaNextModel
from tests import parity

VOCAB, IMAGE_TOKEN, PAD = 48, 47, 0
TILE, PATCH = 8, 4
PINPOINTS = [[8, 16], [16, 8], [16, 16]]
# (height, width): a 1x2 grid without padding, and a 2x2 grid whose width is unpadded
IMAGE_SIZES = np.array([[10, 20], [20, 12]], np.int64)


def make_config():
    vision = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=TILE, patch_size=PATCH,
                                           projection_dim=8)
    text = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                    pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    return transformers.LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                                        image_grid_pinpoints=PINPOINTS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = make_config()
    config.vision_config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    model = parity.torch_reference(transformers.LlavaNextForConditionalGeneration, config)
    with torch.no_grad():  # HF initialises it randomly; make sure the loaded one is what is compared
        model.model.image_newline.add_(1.0)
    return model, parity.save_torch(model, str(tmp_path_factory.mktemp("llava_next")))


def batch(torch_model, seed=0, labels=True):
    """Two rows, one image each (the second left-padded), with as many `<image>` tokens as torch packs features."""
    rng = np.random.RandomState(seed)
    pixels = rng.randn(2, 5, 3, TILE, TILE).astype(np.float32)
    with torch.no_grad():
        packed = torch_model.model.get_image_features(torch.from_numpy(pixels), torch.from_numpy(IMAGE_SIZES))
    counts = [f.shape[0] for f in packed.pooler_output]
    rows = [[1] + list(rng.randint(3, IMAGE_TOKEN, 3 + 2 * i)) + [IMAGE_TOKEN] * n + list(rng.randint(3, 40, 2))
            for i, n in enumerate(counts)]
    length = max(len(r) for r in rows)
    ids = np.full((2, length), PAD, np.int64)
    mask = np.zeros((2, length), np.int64)
    for i, r in enumerate(rows):
        ids[i, length - len(r):], mask[i, length - len(r):] = r, 1
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=IMAGE_SIZES)
    if labels:
        inputs["labels"] = np.where((mask == 1) & (ids != IMAGE_TOKEN), ids, -100)
    return inputs


def test_anyres_images_left_padded_batch_matches_torch_fp32(checkpoint):
    torch_model, path = checkpoint
    ours = parity.load_ours(LlavaNextForConditionalGeneration, path)
    inputs = batch(torch_model)
    ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs)
    rows = inputs["attention_mask"].astype(bool)
    errors = parity.compare_outputs(out, ref, ["logits"], rows=rows)
    errors["loss"] = parity.rel_error(out["loss"], ref.loss)
    for i, (a, b) in enumerate(zip(out.image_hidden_states, ref.image_outputs.pooler_output)):
        errors[f"image_features_{i}"] = parity.rel_error(a, b)
    parity.assert_close(errors, parity.FP32_BAR)


@pytest.mark.parametrize("mode", parity.MODES)
def test_text_only_matches_torch(checkpoint, mode):
    torch_model, path = checkpoint
    ours = parity.load_ours(LlavaNextForConditionalGeneration, path)
    inputs = batch(torch_model)
    inputs = dict(input_ids=np.where(inputs["input_ids"] == IMAGE_TOKEN, 5, inputs["input_ids"]),
                  attention_mask=inputs["attention_mask"])
    ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs, mode)
    assert parity.rel_error(out["logits"], ref.logits, rows=inputs["attention_mask"].astype(bool)) <= parity.FP32_BAR


def test_parameter_gradients_match_torch(checkpoint):
    torch_model, path = checkpoint
    ours = parity.load_ours(LlavaNextForConditionalGeneration, path)
    inputs = batch(torch_model, seed=1)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs)
    assert "model.image_newline" in ref_grads
    key_biases = [k for k in ref_grads if k.endswith("k_proj.bias")]
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, "grads")


def test_base_model_auto_class_and_checkpoint_round_trip(checkpoint, tmp_path):
    torch_model, path = checkpoint
    inputs = batch(torch_model, seed=2, labels=False)
    rows = inputs["attention_mask"].astype(bool)
    base = parity.load_ours(LlavaNextModel, path)
    ref = parity.run_torch(torch_model.model, inputs)
    assert parity.rel_error(parity.run_ours(base, inputs).last_hidden_state, ref.last_hidden_state,
                            rows=rows) <= parity.FP32_BAR
    ours = AutoModelForImageTextToText.from_pretrained(path)
    assert isinstance(ours, LlavaNextForConditionalGeneration)
    ours.save_pretrained(tmp_path)
    back = transformers.LlavaNextForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert parity.rel_error(parity.run_torch(back.eval(), inputs).logits,
                            parity.run_torch(torch_model, inputs).logits) == 0.0


@pytest.mark.parametrize("beams", [1, pytest.param(2, marks=pytest.mark.slow)])  # beams: tests/models/llava
def test_generate_with_anyres_images_gives_torch_tokens(checkpoint, beams):
    torch_model, path = checkpoint
    ours = parity.load_ours(LlavaNextForConditionalGeneration, path)
    inputs = batch(torch_model, seed=7, labels=False)
    kwargs = dict(max_new_tokens=5, do_sample=False, num_beams=beams, pad_token_id=PAD, eos_token_id=None)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    np.testing.assert_array_equal(ours.generate(**parity.to_ms_inputs(inputs), **kwargs).asnumpy(), ref)
