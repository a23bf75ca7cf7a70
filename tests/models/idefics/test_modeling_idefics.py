"""IDEFICS (v1) parity with torch `transformers` on tiny random checkpoints (tests/parity.py): vision tower, Perceiver
resampler, gated cross-attention, decoupled embedding / LM head; text-only, one and two images per sample, left
padding; image_encoder_embeddings / perceiver_embeddings inputs; freezing; generate() (greedy and beam, compiled and
PyNative decoding)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import AutoModel, AutoModelForImageTextToText, IdeficsForVisionText2Text, IdeficsModel
from mindone.transformers.generation import utils as generation_utils
from tests import parity
from tests.no_torch import BLOCK_TORCH

VOCAB = 40
IMAGE_TOKEN = 39  # stands for "<image>": the processor's mask starts a new image column at each one
PAD = 0
IMAGE_SIZE, PATCH = 12, 4

VISION = dict(embed_dim=16, image_size=IMAGE_SIZE, patch_size=PATCH, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24)
# each variant exercises config features of HF's Idefics
VARIANTS = {
    # resampler (with its qk layer norms), two extra vocabulary rows, float gates, a cross block before every layer,
    # HF's default freezing (text layers and vision tower frozen)
    "resampler": dict(use_resampler=True, additional_vocab_size=2, alpha_type="float", alpha_initializer="ones",
                      perceiver_config=dict(use_resampler=True, resampler_n_latents=3, resampler_depth=2,
                                            resampler_n_heads=2, resampler_head_dim=8,
                                            qk_layer_norms_perceiver=True)),
    # no resampler, vector gates, one cross block every second layer, qk layer norms in the cross-attention,
    # nothing frozen (gradients reach the vision tower and the text layers)
    "plain": dict(use_resampler=False, alpha_type="vector", alpha_initializer="normal", alphas_initializer_range=0.5,
                  cross_layer_interval=2, num_hidden_layers=4, qk_layer_norms=True, freeze_text_layers=False,
                  freeze_vision_layers=False),
}


def make_config(**overrides):
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=128, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                  vision_config=dict(VISION))
    kwargs.update(overrides)
    return transformers.IdeficsConfig(**kwargs)


def batch(images_per_row, seed=0, labels=True, text_len=4):
    """Left-padded ids / mask for rows holding `images_per_row[i]` images (as IdeficsProcessor lays them out: each
    token sees the last image before it), pixels (zeros in unused image slots) and labels (-100 on pads)."""
    rng = np.random.RandomState(seed)
    rows = []
    for i, n in enumerate(images_per_row):
        ids = [1] + list(rng.randint(3, IMAGE_TOKEN, text_len + 2 * i))
        for _ in range(n):
            ids += [IMAGE_TOKEN] + list(rng.randint(3, IMAGE_TOKEN, 3))
        rows.append(ids)
    length = max(len(r) for r in rows)
    num_images = max(1, max(images_per_row))
    ids = np.full((len(rows), length), PAD, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    image_mask = np.zeros((len(rows), length, num_images), np.int64)
    pixels = np.zeros((len(rows), num_images, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i, r in enumerate(rows):
        start = length - len(r)
        ids[i, start:] = r
        mask[i, start:] = 1
        seen = -1
        for t, token in enumerate(r):
            seen += token == IMAGE_TOKEN
            if seen >= 0:
                image_mask[i, start + t, seen] = 1
        pixels[i, :images_per_row[i]] = rng.randn(images_per_row[i], 3, IMAGE_SIZE, IMAGE_SIZE)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    if labels:
        inputs["labels"] = np.where((mask == 1) & (ids != IMAGE_TOKEN), ids, -100)
    return inputs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """variant name -> (torch model, saved dir); built once per module."""
    made = {}

    def get(name, torch_cls=transformers.IdeficsForVisionText2Text):
        key = (name, torch_cls.__name__)
        if key not in made:
            config = make_config(**VARIANTS[name])
            config.vision_config._attn_implementation = "eager"
            model = parity.torch_reference(torch_cls, config, seed=len(made))
            with torch.no_grad():  # the gates start at constants: make them differ per layer and from 1
                g = torch.Generator().manual_seed(7)
                for n, p in model.named_parameters():
                    if ".alpha_" in n:
                        p.add_(torch.randn(p.shape, generator=g) * 0.5)
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(name))))
        return made[key]

    return get


def rows_of(inputs):
    return inputs["attention_mask"].astype(bool)


# graph mode compiles per variant (~15 s each): the resampler variant's graph runs by default, the other's is slow
CASES = [("resampler", "pynative"), ("resampler", "graph"), ("plain", "pynative"),
         pytest.param("plain", "graph", marks=pytest.mark.slow)]


@pytest.mark.parametrize("variant, mode", CASES)
def test_one_image_per_row_left_padded_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([1, 1], labels=variant == "plain")  # HF's loss does not take the extra vocabulary rows
    inputs["output_hidden_states"] = True
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, inputs, mode)
    errors = parity.compare_outputs(out, ref, ["logits", "hidden_states"], rows=rows_of(inputs))
    if "labels" in inputs:
        errors["loss"] = parity.rel_error(out["loss"], ref.loss)
    errors["image_last_hidden_state"] = parity.rel_error(out["image_outputs"]["last_hidden_state"],
                                                         ref.image_outputs.last_hidden_state)
    errors["image_pooler_output"] = parity.rel_error(out["image_outputs"]["pooler_output"],
                                                     ref.image_outputs.pooler_output)
    parity.assert_close(errors, parity.FP32_BAR, f"{variant}/{mode}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_only_one_and_two_images_per_sample_match_torch(checkpoints, variant):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    errors = {}
    for name, images in (("text_only", [0, 0]), ("one_each", [1, 1]), ("two_and_one", [2, 1]),
                         ("two_and_none", [2, 0])):
        inputs = batch(images, seed=3, labels=False)
        ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs)
        errors[name] = parity.rel_error(out["logits"], ref.logits, rows=rows_of(inputs))
    parity.assert_close(errors, parity.FP32_BAR, variant)


def test_text_only_rows_ignore_the_images(checkpoints):
    """A row whose image mask is all zeros gets no cross-attention output, so its logits do not depend on the
    pixels (the gate is checked, not only the equality with torch)."""
    _, path = checkpoints("plain")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([0, 1], seed=5, labels=False)
    first = parity.to_numpy(parity.run_ours(ours, inputs)["logits"])
    inputs["pixel_values"] = inputs["pixel_values"] + 1.0
    second = parity.to_numpy(parity.run_ours(ours, inputs)["logits"])
    np.testing.assert_array_equal(first[0], second[0])
    assert np.abs(first[1] - second[1]).max() > 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_image_encoder_embeddings_input_matches_torch(checkpoints, variant):
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([2, 1], seed=4, labels=False)
    pixels = torch.from_numpy(inputs.pop("pixel_values"))
    with torch.no_grad():
        states = torch_model.model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state
    for layout in (states.reshape(2, 2, *states.shape[1:]), states):  # (B, N, P, D) and (B * N, P, D)
        inputs["image_encoder_embeddings"] = layout.numpy()
        ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs)
        assert parity.rel_error(out["logits"], ref.logits, rows=rows_of(inputs)) <= parity.FP32_BAR


def test_perceiver_embeddings_input_matches_torch_and_needs_the_resampler(checkpoints):
    torch_model, path = checkpoints("resampler")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([1, 2], seed=6, labels=False)
    pixels = torch.from_numpy(inputs.pop("pixel_values"))
    with torch.no_grad():
        states = torch_model.model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state
        latents = torch_model.model.perceiver_resampler(states)
    inputs["perceiver_embeddings"] = latents.numpy()
    ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs)
    assert parity.rel_error(out["logits"], ref.logits, rows=rows_of(inputs)) <= parity.FP32_BAR
    assert parity.rel_error(out["image_outputs"]["last_hidden_state"], latents) == 0.0

    _, plain_path = checkpoints("plain")
    plain = parity.load_ours(IdeficsForVisionText2Text, plain_path)
    with pytest.raises(ValueError, match="use_resampler should be True"):
        parity.run_ours(plain, inputs)
    inputs["pixel_values"] = pixels.numpy()
    with pytest.raises(ValueError, match="Exactly 1 of pixel_values"):
        parity.run_ours(ours, inputs)


def test_interpolate_pos_encoding_for_larger_images_matches_torch(checkpoints):
    """HF resizes the position table by a scale factor ((patches + 0.1) / side), not to a size: the bicubic taps
    fall elsewhere than with size=."""
    torch_model, path = checkpoints("plain")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([1, 1], seed=9, labels=False)
    rng = np.random.RandomState(9)
    inputs["pixel_values"] = rng.randn(2, 1, 3, 20, 16).astype(np.float32)
    inputs["interpolate_pos_encoding"] = True
    ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs)
    assert parity.rel_error(out["image_outputs"]["last_hidden_state"],
                            ref.image_outputs.last_hidden_state) <= parity.FP32_BAR
    assert parity.rel_error(out["logits"], ref.logits, rows=rows_of(inputs)) <= parity.FP32_BAR


# the graph runs of fp16 and gradients compile large graphs: `make test-slow`
SLOW_GRAPH = ["pynative", pytest.param("graph", marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    """fp16 vs torch fp32 over several inputs: on average within 1.25x of torch's own fp16 error, each within
    FP16_BAR or 1.5x torch's."""
    torch_model, path = checkpoints("resampler")
    torch_half = transformers.IdeficsForVisionText2Text.from_pretrained(
        path, dtype=torch.float16, attn_implementation="eager").eval()
    ours = parity.load_ours(IdeficsForVisionText2Text, path, dtype="float16")
    assert ours.dtype == ms.float16
    ours_errors, torch_errors = [], []
    for seed in range(6):
        inputs = batch([2, 1], seed=seed, labels=False)
        rows = rows_of(inputs)
        ref = parity.run_torch(torch_model, inputs).logits
        half_inputs = dict(inputs, pixel_values=inputs["pixel_values"].astype(np.float16))
        torch_errors.append(parity.rel_error(parity.run_torch(torch_half, half_inputs).logits, ref, rows=rows))
        ours_errors.append(parity.rel_error(parity.run_ours(ours, inputs, mode)["logits"], ref, rows=rows))
    pairs = [f"{o:.3g}/{t:.3g}" for o, t in zip(ours_errors, torch_errors)]
    assert np.mean(ours_errors) <= 1.25 * np.mean(torch_errors), f"fp16/{mode} (ours/torch fp16): {pairs}"
    assert all(o <= max(parity.FP16_BAR, 1.5 * t) for o, t in zip(ours_errors, torch_errors)), pairs


GRAD_CASES = [("plain", "pynative"), ("resampler", "pynative"),
              pytest.param("plain", "graph", marks=pytest.mark.slow)]


def _logit_loss_gradients(torch_model, ours, inputs, mode):
    """Gradients of sum(logits * fixed weights): HF's own loss cannot read logits wider than `vocab_size` (the
    extra vocabulary rows), so the resampler variant is differentiated through this loss instead."""
    weights = np.random.RandomState(11).randn(*inputs["input_ids"].shape, VOCAB + 2).astype(np.float32)
    weights *= rows_of(inputs)[..., None]
    torch_model.zero_grad()
    ref_loss = (torch_model(**parity.to_torch_inputs(inputs)).logits * torch.from_numpy(weights)).sum()
    ref_loss.backward()
    ref_grads = {n: p.grad for n, p in torch_model.named_parameters() if p.grad is not None}
    torch_model.zero_grad()
    ms_weights = ms.Tensor(weights)
    kwargs = parity.to_ms_inputs(inputs)
    params = ours.trainable_params()

    def loss_fn(**kw):
        return (ours(**kw)["logits"] * ms_weights).sum()

    grad_fn = ms.value_and_grad(loss_fn, None, params)
    if mode == "graph":
        grad_fn = ms.jit(grad_fn)
    loss, grads = grad_fn(**kwargs)
    return ref_loss.detach(), ref_grads, loss, {p.name: g for p, g in zip(params, grads)}


@pytest.mark.parametrize("variant, mode", GRAD_CASES)
def test_parameter_gradients_match_torch(checkpoints, variant, mode):
    """Only the parameters torch trains get gradients (HF's freeze_* options), and they equal torch's."""
    torch_model, path = checkpoints(variant)
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    assert sorted(p.name for p in ours.trainable_params()) == \
        sorted(n for n, p in torch_model.named_parameters() if p.requires_grad)
    inputs = batch([2, 1], seed=1, labels=variant == "plain")
    if variant == "plain":
        try:
            ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
        finally:
            torch_model.zero_grad()
        loss, grads = parity.our_gradients(ours, inputs, mode)
        assert any(k.startswith("model.vision_model.") for k in ref_grads)
        assert any(k.startswith("model.layers.") for k in ref_grads)
    else:
        inputs["input_ids"][:, -2] = VOCAB + 1  # an extra-vocabulary token: additional_embedding gets a gradient
        ref_loss, ref_grads, loss, grads = _logit_loss_gradients(torch_model, ours, inputs, mode)
        assert {"model.embed_tokens.additional_embedding.weight", "lm_head.additional_fc.weight",
                "model.perceiver_resampler.latents"} <= set(ref_grads)
    # a key bias (also the perceiver's key-norm bias) shifts every score of a query equally, so softmax makes its
    # true gradient zero: both sides hold noise
    key_biases = [k for k in ref_grads if k.endswith(("k_proj.bias", "k_layer_norm.bias"))]
    if key_biases:
        assert max(float(np.abs(parity.to_numpy(grads[k])).max()) for k in key_biases) < 1e-6
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{variant}/{mode}")


def test_freeze_module_exceptions_follow_hf():
    """HF freezes by module kind: the exceptions ("LayerNorm", "Linear", "Embedding") stay trainable."""
    config = make_config(**VARIANTS["resampler"], freeze_text_module_exceptions=["Linear"],
                         freeze_vision_module_exceptions=["LayerNorm", "Embedding"], freeze_lm_head=True)
    torch.manual_seed(0)
    ref = transformers.IdeficsForVisionText2Text(config)
    ours = IdeficsForVisionText2Text(config)
    expected = sorted(n for n, p in ref.named_parameters() if p.requires_grad)
    assert sorted(p.name for p in ours.trainable_params()) == expected
    assert "lm_head.weight" not in expected and "lm_head.additional_fc.weight" in expected
    ours.model.freeze_vision_layers()
    assert not any(p.name.startswith("model.vision_model.") for p in ours.trainable_params())


def test_base_model_and_auto_classes_match_torch(checkpoints):
    torch_model, path = checkpoints("resampler", transformers.IdeficsModel)
    inputs = batch([1, 2], seed=2, labels=False)
    ref = parity.run_torch(torch_model, inputs)
    for cls in (IdeficsModel, AutoModel):
        out = parity.run_ours(parity.load_ours(cls, path), inputs)
        assert type(out).__name__ == "IdeficsBaseModelOutputWithPast"
        err = parity.rel_error(out.last_hidden_state, ref.last_hidden_state, rows=rows_of(inputs))
        assert err <= parity.FP32_BAR, cls
    _, lm_path = checkpoints("resampler")
    assert isinstance(AutoModelForImageTextToText.from_pretrained(lm_path), IdeficsForVisionText2Text)


def test_save_pretrained_reloads_in_torch_and_a_missing_image_mask_is_named(checkpoints, tmp_path):
    torch_model, path = checkpoints("resampler")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    ours.save_pretrained(tmp_path)
    back = transformers.IdeficsForVisionText2Text.from_pretrained(tmp_path, attn_implementation="eager").eval()
    inputs = batch([1, 2], seed=12, labels=False)
    assert parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits) == 0.0
    del inputs["image_attention_mask"]
    with pytest.raises(ValueError, match="image_attention_mask"):
        parity.run_ours(ours, inputs)


def test_image_hidden_states_alias_and_tuple_output(checkpoints):
    torch_model, path = checkpoints("plain")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([1, 1], labels=False)
    out = parity.run_ours(ours, inputs)
    ref = parity.run_torch(torch_model, inputs)
    assert parity.rel_error(out.image_hidden_states, ref.image_hidden_states) <= parity.FP32_BAR
    assert out.cache is out.past_key_values
    tup = parity.run_ours(ours, dict(inputs, use_cache=False, return_dict=False))
    assert parity.rel_error(tup[0], out.logits) == 0.0


def _compiled_steps_used(model):
    steps = generation_utils._COMPILED_STEPS.get(model, {})
    return [key for key, (_, step) in steps.items() if step._signatures]


def test_generate_compiled_decoding_greedy_and_beam_give_torch_tokens(checkpoints):
    """Prefill with the images in PyNative, then the compiled static-cache step, which takes the images' states and
    the last image-mask row as graph inputs (HF passes image_hidden_states / the mask row through the steps). Greedy
    on two rows, 2-beam search on one row and greedy from `image_encoder_embeddings` run the same (batch 2)
    compiled step."""
    torch_model, path = checkpoints("resampler")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    for beams, rows, embeddings in ((1, [2, 1], False), (2, [2], False), (1, [1, 2], True)):
        kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=beams, pad_token_id=PAD, eos_token_id=None)
        inputs = batch(rows, seed=7, labels=False)
        if embeddings:
            pixels = torch.from_numpy(inputs.pop("pixel_values"))
            with torch.no_grad():
                inputs["image_encoder_embeddings"] = torch_model.model.vision_model(
                    pixel_values=pixels.flatten(0, 1)).last_hidden_state.numpy()
        with torch.no_grad():
            ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
        out = ours.generate(**parity.to_ms_inputs(inputs), **kwargs).asnumpy()
        np.testing.assert_array_equal(out, ref, err_msg=f"num_beams={beams}, image_encoder_embeddings={embeddings}")
    used = _compiled_steps_used(ours)
    assert used and all(key[-1] == ("image_encoder_embeddings", "image_attention_mask") for key in used), used


@pytest.mark.parametrize("beams", [1, 2])
def test_generate_with_dynamic_cache_gives_torch_tokens(checkpoints, beams):
    torch_model, path = checkpoints("plain")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    kwargs = dict(max_new_tokens=5, do_sample=False, num_beams=beams, pad_token_id=PAD, eos_token_id=None)
    inputs = batch([1, 2], seed=8, labels=False)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    out = ours.generate(**parity.to_ms_inputs(inputs), **kwargs, cache_implementation="dynamic").asnumpy()
    np.testing.assert_array_equal(out, ref)
    assert not _compiled_steps_used(ours)


def test_generate_without_cache_gives_torch_tokens(checkpoints):
    """Without a cache every step feeds the whole sequence: the image mask grows by the last row each step. The
    inputs go in as numpy arrays (as `return_tensors="np"` gives them)."""
    torch_model, path = checkpoints("resampler")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD, eos_token_id=None, use_cache=False)
    inputs = batch([0, 1], seed=10, labels=False)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    np.testing.assert_array_equal(ours.generate(**inputs, **kwargs).asnumpy(), ref)


def test_generate_from_image_encoder_embeddings_with_dynamic_cache_gives_torch_tokens(checkpoints):
    torch_model, path = checkpoints("resampler")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([2, 1], seed=13, labels=False)
    pixels = torch.from_numpy(inputs.pop("pixel_values"))
    with torch.no_grad():
        inputs["image_encoder_embeddings"] = torch_model.model.vision_model(
            pixel_values=pixels.flatten(0, 1)).last_hidden_state.numpy()
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    out = ours.generate(**parity.to_ms_inputs(inputs), **kwargs, cache_implementation="dynamic").asnumpy()
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_generate_from_perceiver_embeddings_fails_after_the_prompt_as_in_torch(checkpoints, cache):
    """HF keeps `perceiver_embeddings` in the kwargs and adds the image states for the next step, whose forward then
    refuses two image inputs: one new token works, a second raises the same error."""
    torch_model, path = checkpoints("resampler")
    ours = parity.load_ours(IdeficsForVisionText2Text, path)
    inputs = batch([1, 1], seed=14, labels=False)
    pixels = torch.from_numpy(inputs.pop("pixel_values"))
    with torch.no_grad():
        inputs["perceiver_embeddings"] = torch_model.model.perceiver_resampler(
            torch_model.model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state).numpy()
    kwargs = dict(do_sample=False, pad_token_id=PAD, eos_token_id=None, cache_implementation=cache)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), max_new_tokens=1, **kwargs).numpy()
    out = ours.generate(**parity.to_ms_inputs(inputs), max_new_tokens=1, **kwargs).asnumpy()
    np.testing.assert_array_equal(out, ref)
    for generate in (lambda: torch_model.generate(**parity.to_torch_inputs(inputs), max_new_tokens=2, **kwargs),
                     lambda: ours.generate(**parity.to_ms_inputs(inputs), max_new_tokens=2, **kwargs)):
        with pytest.raises(ValueError, match="Exactly 1 of pixel_values"):
            generate()


@pytest.mark.slow  # a fresh interpreter imports MindSpore (~15 s under load)
def test_loads_runs_and_generates_without_torch(checkpoints):
    """Only HF's IdeficsProcessor needs torch (it builds its tensors with torch only); the model does not."""
    torch_model, path = checkpoints("resampler")
    inputs = batch([2, 1], seed=15, labels=False)
    kwargs = dict(max_new_tokens=3, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    code = BLOCK_TORCH + f"""
import numpy as np
from mindone.transformers import AutoModelForImageTextToText
m = AutoModelForImageTextToText.from_pretrained({path!r})
inputs = {{k: np.array(v) for k, v in {({k: v.tolist() for k, v in inputs.items()})!r}.items()}}
inputs["pixel_values"] = inputs["pixel_values"].astype(np.float32)
out = m.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id={PAD}, eos_token_id=None,
                 cache_implementation="dynamic")
print(out.asnumpy().tolist(), "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{ref.tolist()} False" in out.stdout, (out.stdout[-2000:], ref.tolist())
