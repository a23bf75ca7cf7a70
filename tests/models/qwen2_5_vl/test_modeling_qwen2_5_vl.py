"""Qwen2.5-VL parity with torch `transformers` on a tiny random checkpoint: window attention in the vision
transformer (windows cut at frame edges, padded partial windows, full-attention blocks), RMSNorm/SwiGLU blocks, video
temporal M-RoPE scaled by `second_per_grid_ts`; the rest is Qwen2-VL's (tests/models/qwen2_vl)."""

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import AutoModel, AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration, \
    Qwen2_5_VLModel
from mindone.transformers.generation import utils as generation_utils
from tests import parity
from tests.models.qwen2_vl.test_modeling_qwen2_vl import IMAGE, MERGE, PAD, PATCH, TEMPORAL, VIDEO, VISION_END, \
    VISION_START, VOCAB, _cat, _graph_inputs, batch

# window side: 8 px // merge 2 // patch 2 = 2 merged tokens; grids below give full, partial and padded windows
ROWS = [[("text", 2), ("image", (1, 6, 10)), ("text", 2), ("video", (2, 4, 6)), ("text", 1)],
        [("image", (1, 8, 4)), ("text", 3)]]


def make_config():
    vision = dict(depth=3, hidden_size=16, out_hidden_size=32, intermediate_size=24, num_heads=2,
                  patch_size=PATCH, temporal_patch_size=TEMPORAL, spatial_merge_size=MERGE, in_channels=3,
                  window_size=8, fullatt_block_indexes=[1], tokens_per_second=2)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, bos_token_id=1,
                eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "mrope_section": [2, 1, 1]})
    return transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE,
                                         video_token_id=VIDEO, vision_start_token_id=VISION_START,
                                         vision_end_token_id=VISION_END)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = parity.torch_reference(transformers.Qwen2_5_VLForConditionalGeneration, make_config(), seed=3)
    return model, parity.save_torch(model, str(tmp_path_factory.mktemp("qwen2_5_vl")))


def _inputs(seed, labels=True):
    inputs = batch(ROWS, seed=seed, labels=labels)
    inputs["second_per_grid_ts"] = np.array([1.5], np.float32)  # 2 tokens/s * 1.5 s: temporal step 3
    return inputs


# the graph run compiles the window-attention tower and the LM (~30 s under load): `make test-slow`
@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_window_attention_logits_match_torch_fp32(checkpoint, mode):
    torch_model, path = checkpoint
    ours = parity.load_ours(Qwen2_5_VLForConditionalGeneration, path)
    inputs = _inputs(seed=1)
    ref = parity.run_torch(torch_model, inputs)
    if mode == "graph":
        run = _graph_inputs(ours, inputs)
        positions, _ = ours.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                inputs["image_grid_thw"], inputs["video_grid_thw"],
                                                inputs["attention_mask"],
                                                second_per_grid_ts=inputs["second_per_grid_ts"])
        run["position_ids"] = positions.asnumpy()
        run.pop("second_per_grid_ts")
    else:
        run = inputs
    out = parity.run_ours(ours, run, mode)
    keep = inputs["attention_mask"].astype(bool)
    errors = {"logits": parity.rel_error(out["logits"], ref.logits, rows=keep),
              "loss": parity.rel_error(out["loss"], ref.loss),
              "image": parity.rel_error(_cat(out["image_outputs"]["pooler_output"]),
                                        torch.cat(list(ref.image_outputs.pooler_output))),
              "video": parity.rel_error(_cat(out["video_outputs"]["pooler_output"]),
                                        torch.cat(list(ref.video_outputs.pooler_output)))}
    parity.assert_close(errors, parity.FP32_BAR, mode)


def test_rope_index_scales_video_time_by_second_per_grid_ts(checkpoint):
    torch_model, path = checkpoint
    ours = parity.load_ours(Qwen2_5_VLForConditionalGeneration, path)
    inputs = _inputs(seed=2, labels=False)
    t = parity.to_torch_inputs(inputs)
    ref_pos, ref_delta = torch_model.model.get_rope_index(
        t["input_ids"], t["mm_token_type_ids"], t["image_grid_thw"], t["video_grid_thw"],
        second_per_grid_ts=t["second_per_grid_ts"], attention_mask=t["attention_mask"])
    pos, delta = ours.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
                                           inputs["video_grid_thw"], inputs["attention_mask"],
                                           second_per_grid_ts=inputs["second_per_grid_ts"])
    np.testing.assert_array_equal(pos.asnumpy(), ref_pos.numpy())
    np.testing.assert_array_equal(delta.asnumpy(), ref_delta.numpy())
    assert 3 in np.diff(np.unique(pos.asnumpy()[0, 0]))  # the video's temporal step


@pytest.mark.parametrize("beams", [1, 2])
def test_generate_gives_torch_tokens(checkpoint, beams):
    torch_model, path = checkpoint
    ours = parity.load_ours(Qwen2_5_VLForConditionalGeneration, path)
    kwargs = dict(max_new_tokens=5, do_sample=False, num_beams=beams, pad_token_id=PAD, eos_token_id=None)
    inputs = _inputs(seed=4, labels=False)
    with torch.no_grad():
        ref = torch_model.generate(**parity.to_torch_inputs(inputs), **kwargs).numpy()
    np.testing.assert_array_equal(ours.generate(**parity.to_ms_inputs(inputs), **kwargs).asnumpy(), ref)
    if beams == 1:
        # the prefill ran the window-attention tower compiled (per grid): its features equal torch's
        assert "visual" in generation_utils._COMPILED_PARTS.get(ours, {}), "the vision transformer ran in PyNative"
        for key, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if key in inputs:
                with torch.no_grad():
                    want = torch_model.model.visual(torch.from_numpy(inputs[key]),
                                                    grid_thw=torch.from_numpy(inputs[grid])).pooler_output
                got = ours._compiled_visual_features(ms.Tensor(inputs[key]), inputs[grid])
                parity.assert_close({key: parity.rel_error(got, want)}, parity.FP32_BAR, key)


def test_base_model_and_auto_classes(checkpoint, tmp_path):
    torch_model, path = checkpoint
    assert isinstance(AutoModelForImageTextToText.from_pretrained(path), Qwen2_5_VLForConditionalGeneration)
    base = transformers.Qwen2_5_VLModel(torch_model.config)
    base.load_state_dict(torch_model.model.state_dict())
    base.eval().save_pretrained(tmp_path)
    inputs = _inputs(seed=5, labels=False)
    ref = parity.run_torch(base, inputs)
    for cls in (Qwen2_5_VLModel, AutoModel):
        ours, info = cls.from_pretrained(str(tmp_path), output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        out = parity.run_ours(ours, inputs)
        assert parity.rel_error(out.last_hidden_state, ref.last_hidden_state,
                                rows=inputs["attention_mask"].astype(bool)) <= parity.FP32_BAR, cls


def test_fp16_within_torch_fp16_error(checkpoint):
    torch_model, path = checkpoint
    inputs = _inputs(seed=6, labels=False)
    keep = inputs["attention_mask"].astype(bool)
    ref = parity.run_torch(torch_model, inputs).logits
    torch_half = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=torch.float16, attn_implementation="eager").eval()
    half = dict(inputs, pixel_values=inputs["pixel_values"].astype(np.float16),
                pixel_values_videos=inputs["pixel_values_videos"].astype(np.float16))
    torch_err = parity.rel_error(parity.run_torch(torch_half, half).logits, ref, rows=keep)
    ours = parity.load_ours(Qwen2_5_VLForConditionalGeneration, path, dtype="float16")
    err = parity.rel_error(parity.run_ours(ours, inputs)["logits"], ref, rows=keep)
    assert err <= max(parity.FP16_BAR, 1.25 * torch_err), f"fp16: ours {err:.3g} vs torch fp16 {torch_err:.3g}"


def test_parameter_gradients_match_torch(checkpoint):
    """Through the windowed regrouping and its reversal, the full-attention block and the RMSNorm merger."""
    torch_model, path = checkpoint
    ours = parity.load_ours(Qwen2_5_VLForConditionalGeneration, path)
    inputs = _inputs(seed=7)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs)
    assert any(k.startswith("model.visual.blocks.1.") for k in ref_grads)
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, "grads")
