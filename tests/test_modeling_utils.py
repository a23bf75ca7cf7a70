"""PreTrainedModel: loading reports, dtypes, prefixes, tying, bad input, helpers — against torch `transformers`."""

import json
import logging
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from mindone.transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel
from mindone.transformers.weights import CheckpointError
from tests import parity
from tests.no_torch import BLOCK_TORCH

CFG = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
           num_key_value_heads=1, max_position_embeddings=32, pad_token_id=0)


def llama_dir(tmp_path, name="ckpt", torch_cls=transformers.LlamaForCausalLM, dtype=None, **overrides):
    config = transformers.LlamaConfig(**{**CFG, **overrides})
    model = parity.torch_reference(torch_cls, config)
    if dtype is not None:
        model = model.to(dtype)
    return model, parity.save_torch(model, str(tmp_path / name))


IDS = np.array([[3, 5, 7, 9, 11]], np.int64)


def test_loading_info_is_empty_for_a_matching_checkpoint(tmp_path):
    _, path = llama_dir(tmp_path, tie_word_embeddings=False)
    _, info = LlamaForCausalLM.from_pretrained(path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}


def test_base_model_from_head_checkpoint_and_reverse_without_spurious_reports(tmp_path, caplog):
    ref, path = llama_dir(tmp_path, tie_word_embeddings=True)
    with caplog.at_level(logging.WARNING):
        base, info = LlamaModel.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with torch.no_grad():
        want = ref.model(torch.from_numpy(IDS)).last_hidden_state
    assert parity.rel_error(base(ms.Tensor(IDS)).last_hidden_state, want) <= parity.FP32_BAR

    base_dir = str(tmp_path / "base")
    base.save_pretrained(base_dir)
    assert not any(k.startswith("model.") for k in load_file(os.path.join(base_dir, "model.safetensors")))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        head, info = LlamaForCausalLM.from_pretrained(base_dir, output_loading_info=True)
    # tied lm_head comes from the embedding: nothing is newly initialised
    assert info["missing_keys"] == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert parity.rel_error(head(ms.Tensor(IDS)).logits, ref(torch.from_numpy(IDS)).logits) <= parity.FP32_BAR


def test_new_head_is_reported_missing_and_initialised(tmp_path, caplog):
    _, path = llama_dir(tmp_path)
    with caplog.at_level(logging.WARNING):
        model, info = LlamaForSequenceClassification.from_pretrained(path, num_labels=3, output_loading_info=True)
    assert info["missing_keys"] == ["score.weight"]
    assert info["unexpected_keys"] == ["lm_head.weight"]
    assert "newly initialized" in caplog.text and "score.weight" in caplog.text
    weight = model.score.weight.asnumpy()
    assert weight.shape == (3, 16) and 0 < weight.std() < 0.1  # normal(0, initializer_range)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    _, path = llama_dir(tmp_path)
    config = transformers.LlamaConfig(**{**CFG, "intermediate_size": 20})
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight: checkpoint shape "
                                          r"\((24, 16|16, 24)\) != model shape \((20, 16|16, 20)\)"):
        LlamaForCausalLM.from_pretrained(path, config=config)
    model, info = LlamaForCausalLM.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                   output_loading_info=True)
    assert {k for k, _, _ in info["mismatched_keys"]} == {
        "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight"}
    assert model.model.layers[0].mlp.up_proj.weight.shape == (20, 16)


def test_dtype_float16_and_auto(tmp_path):
    _, path = llama_dir(tmp_path, dtype=torch.float16)
    assert LlamaForCausalLM.from_pretrained(path).dtype == ms.float16  # "auto" default, as HF 5
    assert LlamaForCausalLM.from_pretrained(path, dtype="float32").dtype == ms.float32
    assert LlamaForCausalLM.from_pretrained(path, dtype=ms.float16).dtype == ms.float16


def test_bfloat16_on_cpu_loads_float32_with_a_warning(tmp_path, caplog):
    ref, path = llama_dir(tmp_path, dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING):
        model = LlamaForCausalLM.from_pretrained(path)
    assert model.dtype == ms.float32
    assert "bfloat16" in caplog.text and "CPU" in caplog.text
    # bf16 -> fp32 is exact: the weights equal torch's bf16 weights
    want = ref.model.embed_tokens.weight.float().detach().numpy()
    assert np.array_equal(model.model.embed_tokens.weight.asnumpy(), want)
    with caplog.at_level(logging.WARNING):
        assert LlamaForCausalLM.from_pretrained(path, dtype="bfloat16").dtype == ms.float32


def test_unknown_dtype_and_unknown_kwarg_are_refused(tmp_path):
    _, path = llama_dir(tmp_path)
    with pytest.raises(ValueError, match="dtype 'int3'"):
        LlamaForCausalLM.from_pretrained(path, dtype="int3")
    with pytest.raises(TypeError, match="not_a_config_attribute"):
        LlamaForCausalLM.from_pretrained(path, not_a_config_attribute=1)


def test_missing_directory_and_missing_weights_name_what_was_looked_for(tmp_path):
    with pytest.raises((OSError, CheckpointError), match="does-not-exist"):
        LlamaForCausalLM.from_pretrained(str(tmp_path / "does-not-exist"))
    _, path = llama_dir(tmp_path)
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LlamaForCausalLM.from_pretrained(path)


def test_truncated_checkpoint_raises_instead_of_half_loading(tmp_path):
    _, path = llama_dir(tmp_path)
    weights_file = os.path.join(path, "model.safetensors")
    data = open(weights_file, "rb").read()
    open(weights_file, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LlamaForCausalLM.from_pretrained(path)


def test_legacy_gamma_beta_keys_are_renamed(tmp_path):
    _, path = llama_dir(tmp_path)
    weights_file = os.path.join(path, "model.safetensors")
    state = load_file(weights_file)
    state["model.norm.gamma"] = state.pop("model.norm.weight")
    save_file(state, weights_file, metadata={"format": "pt"})
    model, info = LlamaForCausalLM.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert np.array_equal(model.model.norm.weight.asnumpy(), state["model.norm.gamma"])


def test_sharded_save_loads_in_torch_and_ours(tmp_path):
    ref, path = llama_dir(tmp_path, tie_word_embeddings=False)
    ours = LlamaForCausalLM.from_pretrained(path)
    out_dir = str(tmp_path / "sharded")
    ours.save_pretrained(out_dir, max_shard_size="4KB")
    index = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 1
    back = transformers.LlamaForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        assert parity.rel_error(back(torch.from_numpy(IDS)).logits, ref(torch.from_numpy(IDS)).logits) == 0.0
    again = LlamaForCausalLM.from_pretrained(out_dir)
    assert parity.rel_error(again(ms.Tensor(IDS)).logits, ours(ms.Tensor(IDS)).logits) == 0.0
    assert json.load(open(os.path.join(out_dir, "config.json")))["architectures"] == ["LlamaForCausalLM"]
    assert os.path.exists(os.path.join(out_dir, "generation_config.json"))


def test_hub_repo_id_resolves_from_the_offline_cache(tmp_path, monkeypatch):
    _, path = llama_dir(tmp_path)
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny-llama" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in os.listdir(path):
        os.symlink(os.path.join(path, name), snapshot / name)
    (cache / "models--org--tiny-llama" / "refs").mkdir()
    (cache / "models--org--tiny-llama" / "refs" / "main").write_text("abc123")
    code = ("import numpy as np; from mindone.transformers import LlamaForCausalLM; "
            "m = LlamaForCausalLM.from_pretrained('org/tiny-llama'); "
            "print(m(np.array([[1, 2, 3]])).logits.shape)")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(1, 3, 64)" in out.stdout


def test_num_parameters_embeddings_and_resize(tmp_path):
    ref, path = llama_dir(tmp_path, tie_word_embeddings=True)
    model = LlamaForCausalLM.from_pretrained(path)
    assert model.num_parameters() == ref.num_parameters()
    assert model.num_parameters(exclude_embeddings=True) == ref.num_parameters(exclude_embeddings=True)
    assert model.get_input_embeddings() is model.model.embed_tokens
    old = model.get_input_embeddings().weight.asnumpy().copy()
    emb = model.resize_token_embeddings(70, pad_to_multiple_of=8)
    assert emb.weight.shape == (72, 16) and model.config.vocab_size == 72
    assert np.array_equal(emb.weight.asnumpy()[:64], old)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert model(ms.Tensor(IDS)).logits.shape == (1, 5, 72)


def test_library_imports_and_runs_without_torch(tmp_path):
    _, path = llama_dir(tmp_path)
    code = BLOCK_TORCH + f"""
import numpy as np
from mindone.transformers import LlamaForCausalLM
m = LlamaForCausalLM.from_pretrained({path!r})
m.save_pretrained({str(tmp_path / "resaved")!r})
print(m(np.array([[1, 2, 3]])).logits.shape, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(1, 3, 64) False" in out.stdout


def test_cache_argument_and_output_field_use_transformers_5_names(tmp_path):
    """transformers >= 5.23 spells the cache `cache` (input and output field); `past_key_values` still works."""
    import transformers as hf

    from mindone.transformers import DynamicCache, LlamaForCausalLM

    config = hf.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    ids = np.array([[3, 7, 9]], np.int64)
    cache = DynamicCache()
    out = model(ids, cache=cache, use_cache=True)
    assert out.cache is cache and out["cache"] is cache and out.past_key_values is cache
    assert cache.get_seq_length() == 3
    out = model(np.array([[4]], np.int64), cache=cache, use_cache=True)
    assert cache.get_seq_length() == 4
    with pytest.raises(ValueError, match="both `cache` and `past_key_values`"):
        model(ids, cache=DynamicCache(), past_key_values=DynamicCache())


def test_from_pretrained_passes_model_init_kwargs(tmp_path):
    """Keyword arguments that are not config attributes go to the model's __init__ (HF), unknown ones are an error."""
    import transformers as hf

    from mindone.transformers import ViTModel

    config = hf.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                          image_size=8, patch_size=4)
    hf.ViTModel(config).save_pretrained(tmp_path)
    assert ViTModel.from_pretrained(tmp_path).pooler is not None
    assert ViTModel.from_pretrained(tmp_path, add_pooling_layer=False).pooler is None
    with pytest.raises(TypeError, match="unexpected keyword arguments: \\['not_an_option'\\]"):
        ViTModel.from_pretrained(tmp_path, not_an_option=1)
