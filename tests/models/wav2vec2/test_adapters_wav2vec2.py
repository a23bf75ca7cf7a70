"""Wav2Vec2 adapters against torch `transformers` on tiny checkpoints: the conv adapter after the encoder
(`config.add_adapter`, with and without the down-projection) under the CTC head and its loss, and the MMS attention
adapters (`config.adapter_attn_dim`) with per-language weights loaded by `load_adapter` / `target_lang`."""

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from mindone.transformers import Wav2Vec2ForCTC, Wav2Vec2Model
from tests import parity
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch, checkpoint_factory
from tests.models.wav2vec2.test_modeling_wav2vec2 import TINY, VARIANTS, audio_batch, labels_for

STABLE = VARIANTS["layer_stable"]
CONV_ADAPTER = dict(add_adapter=True, output_hidden_size=24, num_adapter_layers=2, adapter_stride=2,
                    adapter_kernel_size=3)


def make_config(**overrides):
    return transformers.Wav2Vec2Config(**{**TINY, **STABLE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


@pytest.mark.parametrize("mode", parity.MODES)
@pytest.mark.parametrize("projection", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["projected", "same_width"])
def test_conv_adapter_ctc_matches_torch(checkpoints, projection, mode):
    overrides = dict(CONV_ADAPTER, output_hidden_size=24 if projection else TINY["hidden_size"])
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, **overrides)
    inputs = dict(audio_batch("layer_stable"), **labels_for(Wav2Vec2ForCTC), output_hidden_states=True)
    out, _ = assert_matches_torch(Wav2Vec2ForCTC, torch_model, path, inputs, ["logits", "loss", "hidden_states"],
                                  mode)
    assert out["logits"].shape == (2, 10, TINY["vocab_size"])  # 39 frames -> 20 -> 10 through the adapter


def test_conv_adapter_base_model_and_gradients_match_torch(checkpoints):
    torch_model, path = checkpoints(transformers.Wav2Vec2Model, **CONV_ADAPTER)
    assert_matches_torch(Wav2Vec2Model, torch_model, path, audio_batch("layer_stable", seed=2),
                         ["last_hidden_state", "extract_features"])
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, **CONV_ADAPTER)
    inputs = dict(audio_batch("layer_stable", seed=3), **labels_for(Wav2Vec2ForCTC))
    assert_gradients_match_torch(Wav2Vec2ForCTC, torch_model, path, inputs)


@pytest.fixture(scope="module")
def mms_dir(checkpoints):
    """An MMS-style checkpoint (attention adapters) with two language files beside it: "fra" with the base
    vocabulary and "deu" with a larger one (the lm_head is resized)."""
    torch_model, path = checkpoints(transformers.Wav2Vec2ForCTC, adapter_attn_dim=8)
    rng = np.random.RandomState(0)
    for lang, vocab in (("fra", TINY["vocab_size"]), ("deu", TINY["vocab_size"] + 5)):
        state = {}
        for name, p in torch_model._get_adapters().items():
            shape = (vocab,) + tuple(p.shape[1:]) if name.startswith("lm_head.") else tuple(p.shape)
            state[name] = (rng.randn(*shape) * 0.3).astype(np.float32)
        safetensors.numpy.save_file(state, f"{path}/adapter.{lang}.safetensors", metadata={"format": "pt"})
    return path


def _torch_with_adapter(path, lang):
    return transformers.Wav2Vec2ForCTC.from_pretrained(path, target_lang=lang, attn_implementation="eager").eval()


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_attention_adapters_match_torch(checkpoints, mms_dir, mode):
    torch_model, _ = checkpoints(transformers.Wav2Vec2ForCTC, adapter_attn_dim=8)
    inputs = dict(audio_batch("layer_stable", seed=4), **labels_for(Wav2Vec2ForCTC), output_hidden_states=True)
    assert_matches_torch(Wav2Vec2ForCTC, torch_model, mms_dir, inputs, ["logits", "loss", "hidden_states"], mode)


@pytest.mark.parametrize("lang", ["fra", "deu"])
def test_target_lang_and_load_adapter_match_torch(mms_dir, lang):
    inputs = audio_batch("layer_stable", seed=5)
    ref = parity.run_torch(_torch_with_adapter(mms_dir, lang), inputs)
    ours = Wav2Vec2ForCTC.from_pretrained(mms_dir, target_lang=lang)
    assert ours.target_lang == lang and ours.config.vocab_size == ref.logits.shape[-1]
    parity.assert_close({"logits": parity.rel_error(parity.run_ours(ours, inputs).logits, ref.logits)},
                        parity.FP32_BAR, lang)
    # switching language on a loaded model: load_adapter replaces the adapters and the lm_head
    other = "deu" if lang == "fra" else "fra"
    ours.load_adapter(other)
    ref = parity.run_torch(_torch_with_adapter(mms_dir, other), inputs)
    parity.assert_close({"logits": parity.rel_error(parity.run_ours(ours, inputs).logits, ref.logits)},
                        parity.FP32_BAR, f"{lang}->{other}")


def test_load_adapter_errors_name_the_problem(checkpoints, mms_dir):
    ours = Wav2Vec2ForCTC.from_pretrained(mms_dir)
    with pytest.raises(OSError, match="adapter.xyz.safetensors"):
        ours.load_adapter("xyz")
    _, plain = checkpoints(transformers.Wav2Vec2ForCTC)
    with pytest.raises(ValueError, match="adapter_attn_dim"):
        Wav2Vec2ForCTC.from_pretrained(plain).load_adapter("fra")
