"""Qwen2-VL parity with torch `transformers` on a tiny random checkpoint (tests/parity.py): the vision transformer
(2-D rotary, per-frame attention, patch merging) on images of different sizes and on video frames, multimodal RoPE
(`get_rope_index`, `rope_deltas` continued through the compiled decode step), text-only, left padding, generate()."""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import AutoModel, AutoModelForImageTextToText, Qwen2VLForConditionalGeneration, Qwen2VLModel
from mindone.transformers.generation import utils as generation_utils
from tests import parity

VOCAB = 64
IMAGE, VIDEO, VISION_START, VISION_END = 60, 61, 62, 63
PAD = 0
MERGE, PATCH, TEMPORAL = 2, 2, 2
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH


def make_config(**text_overrides):
    vision = dict(depth=2, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=PATCH,
                  temporal_patch_size=TEMPORAL, spatial_merge_size=MERGE, in_channels=3)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, bos_token_id=1,
                eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "mrope_section": [2, 1, 1]})
    text.update(text_overrides)
    return transformers.Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE,
                                      video_token_id=VIDEO, vision_start_token_id=VISION_START,
                                      vision_end_token_id=VISION_END)


def batch(rows, seed=0, labels=True):
    """Left-padded ids/mask/mm_token_type_ids for rows given as lists of items: ("image", (t, h, w)),
    ("video", (t, h, w)) or ("text", n); with the processor's flattened patches and grids."""
    rng = np.random.RandomState(seed)
    seqs, types = [], []
    pixels = {"image": [], "video": []}
    grids = {"image": [], "video": []}
    for items in rows:
        ids, kinds = [1], [0]
        for kind, value in items:
            if kind == "text":
                ids += list(rng.randint(3, IMAGE - 1, value))
                kinds += [0] * value
                continue
            t, h, w = value
            n = t * h * w // MERGE ** 2
            ids += [VISION_START] + [IMAGE if kind == "image" else VIDEO] * n + [VISION_END]
            kinds += [0] + [1 if kind == "image" else 2] * n + [0]
            pixels[kind].append(rng.randn(t * h * w, PATCH_DIM).astype(np.float32))
            grids[kind].append(value)
        seqs.append(ids)
        types.append(kinds)
    length = max(len(s) for s in seqs)
    ids = np.full((len(seqs), length), PAD, np.int64)
    mask = np.zeros_like(ids)
    mm = np.zeros_like(ids)
    for i, (s, k) in enumerate(zip(seqs, types)):
        ids[i, length - len(s):] = s
        mask[i, length - len(s):] = 1
        mm[i, length - len(s):] = k
    inputs = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=mm)
    if pixels["image"]:
        inputs["pixel_values"] = np.concatenate(pixels["image"])
        inputs["image_grid_thw"] = np.array(grids["image"], np.int64)
    if pixels["video"]:
        inputs["pixel_values_videos"] = np.concatenate(pixels["video"])
        inputs["video_grid_thw"] = np.array(grids["video"], np.int64)
    if labels:
        inputs["labels"] = np.where((mask == 1) & (mm == 0), ids, -100)
    return inputs


ONE_IMAGE_EACH = [[("text", 3), ("image", (1, 4, 4)), ("text", 2)],
                  [("text", 5), ("image", (1, 4, 6)), ("text", 1)]]
TWO_IMAGES = [[("text", 2), ("image", (1, 4, 4)), ("text", 2), ("image", (1, 6, 4)), ("text", 3)],
              [("text", 4)]]
VIDEO_AND_IMAGE = [[("text", 2), ("video", (2, 4, 4)), ("text", 2)],
                   [("image", (1, 4, 4)), ("text", 3), ("video", (3, 4, 2)), ("text", 1)]]
TEXT_ONLY = [[("text", 7)], [("text", 4)]]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(torch_cls=transformers.Qwen2VLForConditionalGeneration):
        if torch_cls not in made:
            model = parity.torch_reference(torch_cls, make_config(), seed=len(made))
            made[torch_cls] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[torch_cls]

    return get


def _graph_inputs(ours, inputs):
    """Under jit the grids are static tuples and the M-RoPE positions come from get_rope_index (host side)."""
    inputs = dict(inputs)
    positions, _ = ours.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                            inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                                            inputs["attention_mask"])
    inputs["position_ids"] = positions.asnumpy()
    for key in ("image_grid_thw", "video_grid_thw"):
        if key in inputs:
            inputs[key] = tuple(tuple(int(v) for v in row) for row in inputs[key])
    inputs.pop("mm_token_type_ids")
    return inputs


# graph mode compiles per input layout (~25 s each under load): one layout by default, the rest in `make test-slow`
CASES = [(rows, "pynative") for rows in ("one_image_each", "two_images", "video_and_image", "text_only")] + \
    [("video_and_image", "graph")] + \
    [pytest.param(rows, "graph", marks=pytest.mark.slow) for rows in ("one_image_each", "two_images", "text_only")]


@pytest.mark.parametrize("rows, mode", CASES)
def test_logits_match_torch_fp32(checkpoints, rows, mode):
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    spec = {"one_image_each": ONE_IMAGE_EACH, "two_images": TWO_IMAGES, "video_and_image": VIDEO_AND_IMAGE,
            "text_only": TEXT_ONLY}[rows]
    inputs = batch(spec, seed=len(rows))
    ref = parity.run_torch(torch_model, inputs)
    out = parity.run_ours(ours, _graph_inputs(ours, inputs) if mode == "graph" else inputs, mode)
    keep = inputs["attention_mask"].astype(bool)
    errors = {"logits": parity.rel_error(out["logits"], ref.logits, rows=keep),
              "loss": parity.rel_error(out["loss"], ref.loss)}
    for kind in ("image", "video"):
        if getattr(ref, f"{kind}_outputs") is not None:
            errors[kind] = parity.rel_error(_cat(out[f"{kind}_outputs"]["pooler_output"]),
                                            torch.cat(list(getattr(ref, f"{kind}_outputs").pooler_output)))
    parity.assert_close(errors, parity.FP32_BAR, f"{rows}/{mode}")


def _cat(parts):
    return np.concatenate([parity.to_numpy(p) for p in parts])


@pytest.mark.parametrize("beams", [1, 2])
def test_generate_with_images_and_video_gives_torch_tokens(checkpoints, beams):
    """The vision features merged into the prompt's embeddings in PyNative, the language model prefilled from them
    (3-D M-RoPE positions) by the compiled embeddings step, then the compiled static-cache decode step, whose M-RoPE
    positions continue from rope_deltas."""
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=beams, pad_token_id=PAD, eos_token_id=None)
    inputs = batch(VIDEO_AND_IMAGE, seed=7, labels=False)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    np.testing.assert_array_equal(ours.generate(**parity.to_ms_inputs(inputs), **kwargs).asnumpy(), ref)
    assert generation_utils._COMPILED_PREFILL_STEPS.get(ours), "the prompt did not go through the compiled prefill"
    assert "visual" in generation_utils._COMPILED_PARTS.get(ours, {}), "the vision transformer ran in PyNative"


def test_compiled_vision_features_match_torch_and_reuse_the_graph_per_grid(checkpoints):
    """generate()'s prefill runs the vision transformer compiled, one graph per patch grid: its merged features
    equal torch's (fp32), and another image of a known grid reuses that grid's graph."""
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    for seed in (0, 1):  # same grids, other pixels: the second pass compiles nothing
        inputs = batch(TWO_IMAGES, seed=seed, labels=False)
        with torch.no_grad():
            ref = torch.cat(list(torch_model.get_image_features(torch.from_numpy(inputs["pixel_values"]),
                                                                torch.from_numpy(inputs["image_grid_thw"]))
                                 .pooler_output))
        out = ours._compiled_visual_features(ms.Tensor(inputs["pixel_values"]), inputs["image_grid_thw"])
        parity.assert_close({"features": parity.rel_error(out, ref)}, parity.FP32_BAR, f"seed {seed}")
    assert len(generation_utils._COMPILED_PARTS[ours]["visual"]._signatures) == 1


def test_decode_step_logits_follow_rope_deltas(checkpoints):
    """Tokens of a tiny random model rarely move with a position shift: the scores of every decode step must equal
    torch's (which uses text position + rope_delta on the three M-RoPE axes)."""
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD, eos_token_id=None, output_logits=True,
                  return_dict_in_generate=True)
    inputs = batch(VIDEO_AND_IMAGE, seed=9, labels=False)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs)
    out = ours.generate(**parity.to_ms_inputs(inputs), **kwargs)
    np.testing.assert_array_equal(out.sequences.asnumpy(), ref.sequences.numpy())
    errors = {f"step{i}": parity.rel_error(a, b) for i, (a, b) in enumerate(zip(out.logits, ref.logits))}
    assert len(errors) == 4
    parity.assert_close(errors, parity.FP32_BAR, "decode logits")


def test_generate_with_dynamic_cache_gives_torch_tokens(checkpoints):
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    inputs = batch(TWO_IMAGES, seed=8, labels=False)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    out = ours.generate(**parity.to_ms_inputs(inputs), **kwargs, cache_implementation="dynamic").asnumpy()
    np.testing.assert_array_equal(out, ref)


# the graph runs of fp16 and gradients compile large graphs: `make test-slow`
SLOW_GRAPH = ["pynative", pytest.param("graph", marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints()
    inputs = batch(VIDEO_AND_IMAGE, seed=5, labels=False)
    keep = inputs["attention_mask"].astype(bool)
    ref = parity.run_torch(torch_model, inputs).logits
    torch_half = transformers.Qwen2VLForConditionalGeneration.from_pretrained(
        path, dtype=torch.float16, attn_implementation="eager").eval()
    half = dict(inputs, pixel_values=inputs["pixel_values"].astype(np.float16),
                pixel_values_videos=inputs["pixel_values_videos"].astype(np.float16))
    torch_err = parity.rel_error(parity.run_torch(torch_half, half).logits, ref, rows=keep)
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path, dtype="float16")
    assert ours.dtype == ms.float16
    run = _graph_inputs(ours, inputs) if mode == "graph" else inputs
    err = parity.rel_error(parity.run_ours(ours, run, mode)["logits"], ref, rows=keep)
    assert err <= max(parity.FP16_BAR, 1.25 * torch_err), f"fp16/{mode}: ours {err:.3g} vs torch fp16 {torch_err:.3g}"


@pytest.mark.parametrize("mode", SLOW_GRAPH)
def test_parameter_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    inputs = batch(VIDEO_AND_IMAGE, seed=1)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, _graph_inputs(ours, inputs) if mode == "graph" else inputs, mode)
    assert any(k.startswith("model.visual.") for k in ref_grads)
    # (RoPE rotates the key bias by position, so unlike in an unrotated attention its gradient is not zero)
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")


def test_base_model_auto_classes_and_saved_layout_round_trip(checkpoints, tmp_path):
    """HF saves `visual.*` / `model.layers.*` (its legacy layout); we load it and write it back the same way."""
    torch_model, path = checkpoints()
    from safetensors.numpy import load_file

    assert any(k.startswith("visual.") for k in load_file(f"{path}/model.safetensors"))
    ours, info = Qwen2VLForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert isinstance(AutoModelForImageTextToText.from_pretrained(path), Qwen2VLForConditionalGeneration)
    ours.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert set(saved) == set(load_file(f"{path}/model.safetensors"))
    back = transformers.Qwen2VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    inputs = batch(ONE_IMAGE_EACH, seed=2, labels=False)
    assert parity.rel_error(parity.run_torch(back, inputs).logits, parity.run_torch(torch_model, inputs).logits) == 0.0

    base_torch = transformers.Qwen2VLModel(torch_model.config)
    base_torch.load_state_dict(torch_model.model.state_dict())
    base_dir = parity.save_torch(base_torch.eval(), str(tmp_path / "base"))
    ref = parity.run_torch(base_torch, inputs)
    for cls in (Qwen2VLModel, AutoModel):
        base, info = cls.from_pretrained(base_dir, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        out = parity.run_ours(base, inputs)
        assert type(base).__name__ == "Qwen2VLModel"
        assert parity.rel_error(out.last_hidden_state, ref.last_hidden_state,
                                rows=inputs["attention_mask"].astype(bool)) <= parity.FP32_BAR, cls


def test_inputs_embeds_find_the_placeholders_by_their_embedding(checkpoints):
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    inputs = batch(ONE_IMAGE_EACH, seed=4, labels=False)
    positions, _ = ours.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                            inputs["image_grid_thw"], None, inputs["attention_mask"])
    with torch.no_grad():
        embeds = torch_model.get_input_embeddings()(torch.from_numpy(inputs.pop("input_ids"))).numpy()
    inputs.update(inputs_embeds=embeds, position_ids=positions.asnumpy())
    inputs.pop("mm_token_type_ids")
    ref, out = parity.run_torch(torch_model, inputs), parity.run_ours(ours, inputs)
    assert parity.rel_error(out["logits"], ref.logits, rows=inputs["attention_mask"].astype(bool)) <= parity.FP32_BAR


def test_errors_name_the_mismatch(checkpoints):
    _, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    inputs = batch([[("text", 2), ("image", (1, 4, 4))]], labels=False)
    wrong = dict(inputs, pixel_values=np.concatenate([inputs["pixel_values"]] * 2),
                 image_grid_thw=np.array([[1, 4, 4], [1, 4, 4]]))
    with pytest.raises(ValueError, match="tokens: 4, features: 8"):
        parity.run_ours(ours, wrong)
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        parity.run_ours(ours, {k: v for k, v in inputs.items() if k != "mm_token_type_ids"})
    with pytest.raises(ValueError, match="image_grid_thw"):
        parity.run_ours(ours, {k: v for k, v in inputs.items() if k != "image_grid_thw"})
    graph = _graph_inputs(ours, inputs)
    graph.pop("position_ids")
    with pytest.raises(ValueError, match="get_rope_index"):
        parity.run_ours(ours, graph, "graph")


def test_random_init_from_config_has_a_live_patch_embedding():
    model = Qwen2VLForConditionalGeneration(make_config())
    weight = model.model.visual.patch_embed.proj.weight.asnumpy()
    assert weight.shape == (16, 3, TEMPORAL, PATCH, PATCH) and 0.01 < weight.std() < 0.03


def test_precomputed_encoder_outputs_replace_the_pixels(checkpoints):
    torch_model, path = checkpoints()
    ours = parity.load_ours(Qwen2VLForConditionalGeneration, path)
    inputs = batch(VIDEO_AND_IMAGE, seed=12, labels=False)
    ref = parity.run_ours(ours, inputs)["logits"]
    ms_inputs = parity.to_ms_inputs(inputs)
    encoded = {"image": ours.get_image_features(ms_inputs["pixel_values"], ms_inputs["image_grid_thw"]),
               "video": ours.get_video_features(ms_inputs["pixel_values_videos"], ms_inputs["video_grid_thw"])}
    assert [tuple(f.shape) for f in encoded["video"].pooler_output] == [(8, 32), (6, 32)]
    pixels = ("pixel_values", "pixel_values_videos")
    out = ours(**{k: v for k, v in ms_inputs.items() if k not in pixels}, mm_encoder_outputs=encoded)
    assert parity.rel_error(out["logits"], ref) == 0.0
    with pytest.raises(ValueError, match="mm_encoder_outputs"):
        ours(**ms_inputs, mm_encoder_outputs=encoded)
