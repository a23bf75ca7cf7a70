"""Pix2Struct parity with torch `transformers` on a tiny random checkpoint (tests/parity.py): the vision encoder on
flattened patches with padding rows, the T5-style decoder with its relative position bias and cross-attention,
loss, fp16, gradients, generate() (greedy and beam), the standalone vision / text models, Auto class, save / reload."""

import copy

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModelForImageTextToText,
    Pix2StructForConditionalGeneration,
    Pix2StructTextModel,
    Pix2StructVisionModel,
)
from tests import parity
from tests.models.head_parity import compiled_decode_steps

PATCH = 4
VOCAB = 99
VISION = dict(hidden_size=32, patch_embed_hidden_size=3 * PATCH * PATCH, d_ff=37, d_kv=8, num_attention_heads=4,
              num_hidden_layers=2, seq_len=16, dense_act_fn="gelu_new")
TEXT = dict(vocab_size=VOCAB, hidden_size=32, d_kv=8, num_heads=4, num_layers=2, d_ff=37,
            relative_attention_num_buckets=8, relative_attention_max_distance=20, dense_act_fn="gelu_new",
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, use_cache=True)
FIELDS = ["logits", "loss", "encoder_last_hidden_state"]


def make_config(**overrides):
    return transformers.Pix2StructConfig(text_config=TEXT, vision_config=VISION, decoder_start_token_id=0,
                                         pad_token_id=0, eos_token_id=1, **overrides)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = parity.torch_reference(transformers.Pix2StructForConditionalGeneration, make_config(), seed=0)
    return model, parity.save_torch(model, str(tmp_path_factory.mktemp("pix2struct")))


def patches(seed=0, batch=2, rows=3, cols=4, padding=(0, 5)):
    """Flattened patches as Pix2StructImageProcessor lays them out: (row, column) 1-based, then pixels; the last
    `padding[i]` rows of image i are all zeros (padding)."""
    rng = np.random.RandomState(seed)
    n = rows * cols
    out = np.zeros((batch, n, 2 + VISION["patch_embed_hidden_size"]), np.float32)
    grid = np.stack(np.meshgrid(np.arange(1, rows + 1), np.arange(1, cols + 1), indexing="ij"), -1).reshape(n, 2)
    for i in range(batch):
        real = n - padding[i]
        out[i, :real, :2] = grid[:real]
        out[i, :real, 2:] = rng.randn(real, VISION["patch_embed_hidden_size"]) + rng.randn()
    mask = (out.sum(-1) != 0).astype(np.int64)
    return out, mask


def labels(seed=0):
    out = np.random.RandomState(seed).randint(2, VOCAB, (2, 6)).astype(np.int64)
    out[1, 4:] = -100
    return out


@pytest.mark.parametrize("mode", parity.MODES)
def test_logits_and_loss_match_torch_fp32(checkpoint, mode):
    torch_model, path = checkpoint
    flat, mask = patches()
    inputs = dict(flattened_patches=flat, attention_mask=mask, labels=labels())
    ours = parity.load_ours(Pix2StructForConditionalGeneration, path)
    errors = parity.compare_outputs(parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs),
                                    FIELDS)
    parity.assert_close(errors, parity.FP32_BAR, mode)


def test_all_outputs_match_torch_with_decoder_mask(checkpoint):
    """Decoder ids with padding, hidden states and self-/cross-attentions of both halves."""
    torch_model, path = checkpoint
    flat, mask = patches(seed=1)
    ids = np.random.RandomState(1).randint(2, VOCAB, (2, 5)).astype(np.int64)
    ids[:, 0] = 0
    decoder_mask = np.ones_like(ids)
    decoder_mask[1, 3:] = 0
    inputs = dict(flattened_patches=flat, attention_mask=mask, decoder_input_ids=ids,
                  decoder_attention_mask=decoder_mask, output_attentions=True, output_hidden_states=True)
    out = parity.run_ours(parity.load_ours(Pix2StructForConditionalGeneration, path), inputs)
    ref = parity.run_torch(torch_model, inputs)
    rows = decoder_mask.astype(bool)
    errors = parity.compare_outputs(out, ref, ["logits", "decoder_hidden_states"], rows=rows)
    errors.update(parity.compare_outputs(out, ref, ["decoder_attentions", "cross_attentions",
                                                    "encoder_hidden_states", "encoder_attentions"]))
    parity.assert_close(errors, parity.FP32_BAR)


def test_without_attention_mask_as_torch(checkpoint):
    """No mask: the encoder infers one from all-zero rows, the decoder's cross-attention sees every patch (HF)."""
    torch_model, path = checkpoint
    flat, _ = patches(seed=2)
    inputs = dict(flattened_patches=flat, decoder_input_ids=np.array([[0, 5, 7], [0, 9, 3]], np.int64))
    errors = parity.compare_outputs(parity.run_ours(parity.load_ours(Pix2StructForConditionalGeneration, path),
                                                    inputs), parity.run_torch(torch_model, inputs), ["logits"])
    parity.assert_close(errors, parity.FP32_BAR)


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_within_torch_fp16_error(checkpoint, mode):
    torch_model, path = checkpoint
    flat, mask = patches(seed=3)
    inputs = dict(flattened_patches=flat, attention_mask=mask, labels=labels(3))
    ref = parity.run_torch(torch_model, inputs)
    half = dict(inputs, flattened_patches=flat.astype(np.float16))
    torch_errors = parity.compare_outputs(parity.run_torch(copy.deepcopy(torch_model).half(), half), ref, FIELDS)
    ours = parity.load_ours(Pix2StructForConditionalGeneration, path, dtype="float16")
    errors = parity.compare_outputs(parity.run_ours(ours, half, mode), ref, FIELDS)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if v > max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", parity.MODES)
def test_gradients_match_torch(checkpoint, mode):
    """Gradients of the loss vs torch in float64 (rows of the embedding tables no input reads stay zero)."""
    torch_model, path = checkpoint
    flat, mask = patches(seed=4)
    inputs = dict(flattened_patches=flat, attention_mask=mask, labels=labels(4))
    ref_loss, ref_grads = parity.torch_gradients(copy.deepcopy(torch_model).double(),
                                                 dict(inputs, flattened_patches=flat.astype(np.float64)))
    loss, grads = parity.our_gradients(parity.load_ours(Pix2StructForConditionalGeneration, path), inputs, mode)
    tables = [k for k in ref_grads if k.endswith(("row_embedder.weight", "column_embedder.weight",
                                                  "embed_tokens.weight", "relative_attention_bias.weight"))]
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in tables})
    for name in tables:
        used = ref_grads[name].abs().sum(-1).numpy() > 0
        assert not np.abs(parity.to_numpy(grads[name])[~used]).any(), f"{name}: gradient on unused rows"
        errors[name] = parity.rel_error(grads[name], ref_grads[name], rows=used)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")


@pytest.fixture(scope="module")
def generation_model(checkpoint):
    """One instance of ours for the generation tests, so its compiled decode steps are reused."""
    return parity.load_ours(Pix2StructForConditionalGeneration, checkpoint[1])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_matches_torch_on_the_compiled_path(checkpoint, generation_model, num_beams):
    """The patches are encoded once; after the PyNative first step the one-token steps run compiled with the patch
    mask as an input; PyNative decoding with a growing cache gives the same tokens."""
    torch_model, _ = checkpoint
    ours = generation_model
    # 3 images greedy or 1 image with 3 beams: one compiled step (3 rows) serves both
    flat, mask = patches(seed=5, batch=3 // num_beams, padding=(0, 5, 2)[:3 // num_beams])
    with torch.no_grad():
        ref = torch_model.generate(flattened_patches=torch.from_numpy(flat), attention_mask=torch.from_numpy(mask),
                                   max_new_tokens=8, num_beams=num_beams, do_sample=False).numpy()
    if num_beams == 1:
        assert len({tuple(r) for r in ref}) == 3, "the tokens should depend on the image"
    out = parity.to_numpy(ours.generate(flattened_patches=flat, attention_mask=mask, max_new_tokens=8,
                                        num_beams=num_beams, do_sample=False))
    np.testing.assert_array_equal(out, ref)
    assert compiled_decode_steps(ours)
    eager = ours.generate(flattened_patches=flat, attention_mask=mask, max_new_tokens=8, num_beams=num_beams,
                          do_sample=False, cache_implementation="dynamic")
    np.testing.assert_array_equal(parity.to_numpy(eager), ref)
    if num_beams == 1:
        # HF's Pix2Struct configs default to use_cache=False: then every step reruns the whole decoder input
        uncached = ours.generate(flattened_patches=flat, attention_mask=mask, max_new_tokens=8, use_cache=False)
        np.testing.assert_array_equal(parity.to_numpy(uncached), ref)


def test_generate_with_a_decoder_prompt_matches_torch(checkpoint):
    torch_model, path = checkpoint
    flat, mask = patches(seed=6)
    prompt = np.array([[0, 11, 12], [0, 13, 14]], np.int64)
    with torch.no_grad():
        ref = torch_model.generate(flattened_patches=torch.from_numpy(flat), attention_mask=torch.from_numpy(mask),
                                   decoder_input_ids=torch.from_numpy(prompt), max_new_tokens=5).numpy()
    out = parity.load_ours(Pix2StructForConditionalGeneration, path).generate(
        flattened_patches=flat, attention_mask=mask, decoder_input_ids=prompt, max_new_tokens=5)
    np.testing.assert_array_equal(parity.to_numpy(out), ref)


def test_vision_and_text_models_alone_match_torch(tmp_path):
    config = make_config()
    vision = parity.torch_reference(transformers.Pix2StructVisionModel, config.vision_config, seed=1)
    flat, mask = patches(seed=7)
    inputs = dict(flattened_patches=flat, attention_mask=mask, output_hidden_states=True)
    out = parity.run_ours(parity.load_ours(Pix2StructVisionModel, parity.save_torch(vision, str(tmp_path / "v"))),
                          inputs)
    parity.assert_close(parity.compare_outputs(out, parity.run_torch(vision, inputs),
                                               ["last_hidden_state", "hidden_states"]), parity.FP32_BAR, "vision")

    text = parity.torch_reference(transformers.Pix2StructTextModel, config.text_config, seed=2)
    ids = np.random.RandomState(8).randint(2, VOCAB, (2, 7)).astype(np.int64)
    inputs = dict(input_ids=ids, labels=ids)
    ours = parity.load_ours(Pix2StructTextModel, parity.save_torch(text, str(tmp_path / "t")))
    parity.assert_close(parity.compare_outputs(parity.run_ours(ours, inputs), parity.run_torch(text, inputs),
                                               ["logits", "loss"]), parity.FP32_BAR, "text")


def test_auto_class_and_save_round_trip_through_torch(checkpoint, tmp_path):
    torch_model, path = checkpoint
    ours = AutoModelForImageTextToText.from_pretrained(path)
    assert type(ours) is Pix2StructForConditionalGeneration
    ours.save_pretrained(str(tmp_path))
    reloaded = transformers.Pix2StructForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    ref_state = torch_model.state_dict()
    for key, value in reloaded.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ref_state[key].numpy(), err_msg=key)


def test_image_to_text_pipeline_matches_torch(tmp_path):
    """HF 4.x's image-to-text pipeline on Pix2Struct: the image processor's flattened patches and mask, torch's
    generate, decoded with skip_special_tokens=True (transformers 5 has no image-to-text pipeline to compare with)."""
    from PIL import Image

    from mindone.transformers import pipeline
    from tests.generation.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    image_processor = transformers.Pix2StructImageProcessorPil(patch_size={"height": PATCH, "width": PATCH},
                                                               max_patches=12)
    text = dict(TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    config = transformers.Pix2StructConfig(text_config=text, vision_config=VISION,
                                           decoder_start_token_id=tokenizer.pad_token_id,
                                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch_model = parity.torch_reference(transformers.Pix2StructForConditionalGeneration, config, seed=3)
    directory = str(tmp_path)
    torch_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)

    rng = np.random.RandomState(0)
    colours = [(230, 40, 40), (30, 200, 60), (40, 60, 220)]
    images = [Image.fromarray(np.clip(np.array(c) + rng.randint(-60, 60, (10 + 4 * i, 14, 3)), 0, 255)
                              .astype(np.uint8)) for i, c in enumerate(colours)]
    inputs = image_processor(images=images, return_tensors="np")
    with torch.no_grad():
        ref_ids = torch_model.generate(flattened_patches=torch.from_numpy(np.asarray(inputs["flattened_patches"])),
                                       attention_mask=torch.from_numpy(np.asarray(inputs["attention_mask"])),
                                       max_new_tokens=6)
    expected = [[{"generated_text": t}] for t in tokenizer.batch_decode(ref_ids, skip_special_tokens=True)]
    assert len({e[0]["generated_text"] for e in expected}) > 1

    captioner = pipeline("image-to-text", model=directory)
    assert type(captioner.model) is Pix2StructForConditionalGeneration
    assert captioner(images, max_new_tokens=6, batch_size=2) == expected
    assert captioner(images[2], generate_kwargs={"max_new_tokens": 6}) == expected[2]
