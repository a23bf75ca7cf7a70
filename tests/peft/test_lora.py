"""LoRA adapters against torch `peft` on a tiny Llama: files move both ways, logits and merged weights agree.

Adapters are made with `init_lora_weights=False` (A and B random) so the LoRA branch really contributes.
"""

import json
import os
import tempfile

import numpy as np
import peft
import pytest
import torch
import transformers

from mindone.transformers import LlamaForCausalLM
from mindone.transformers import peft as ms_peft
from tests import parity

VOCAB = 64
IDS = np.random.RandomState(0).randint(0, VOCAB, (2, 7)).astype(np.int64)


def tiny_config():
    return transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def base_dir():
    return parity.save_torch(parity.torch_reference(transformers.LlamaForCausalLM, tiny_config()))


def torch_base(base_dir):
    return transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32,
                                                         attn_implementation="eager").eval()


def ours(base_dir):
    return LlamaForCausalLM.from_pretrained(base_dir, dtype="float32")


def torch_logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)).logits.numpy()


def torch_adapter(base_dir, seed=0, **config):
    """(torch PeftModel, directory of its saved adapter)."""
    torch.manual_seed(seed)
    config = dict(dict(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM"), **config)
    model = peft.get_peft_model(torch_base(base_dir), peft.LoraConfig(**config)).eval()
    directory = tempfile.mkdtemp(prefix="torch-adapter-")
    model.save_pretrained(directory)
    return model, directory


CONFIGS = {
    "names": dict(target_modules=["q_proj", "v_proj"]),
    "regex_rslora_dropout": dict(target_modules=r".*\.mlp\.(up|down)_proj", use_rslora=True, lora_dropout=0.1),
    "all_linear_patterns": dict(target_modules="all-linear", rank_pattern={"o_proj": 2},
                                alpha_pattern={r"layers\.1\.self_attn\.k_proj": 3}),
    "layers_to_transform_modules_to_save": dict(target_modules=["q_proj", "gate_proj"], layers_to_transform=[0, 2],
                                                modules_to_save=["lm_head"]),
    "bias_all_lora_bias": dict(target_modules=["o_proj"], bias="all", lora_bias=True),
    "dora": dict(target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True, modules_to_save=["lm_head"]),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_peft_adapter_gives_torch_logits(base_dir, name):
    reference, directory = torch_adapter(base_dir, **CONFIGS[name])
    model = ms_peft.PeftModel.from_pretrained(ours(base_dir), directory)
    assert type(model).__name__ == "PeftModelForCausalLM"
    expected = torch_logits(reference)
    # graph mode (compiling costs ~10 s) on the config that has both LoRA layers and a modules_to_save wrapper
    for mode in ("pynative", "graph") if name in ("layers_to_transform_modules_to_save", "dora") else ("pynative",):
        out = parity.run_ours(model, {"input_ids": IDS}, mode)
        assert parity.rel_error(out["logits"], expected) <= parity.FP32_BAR, mode
    # the same modules are adapted, with the same ranks
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items() if "lora_" in k}
    mine = {k: tuple(v.shape) for k, v in model.named_parameters_dict().items() if "lora_" in k}
    assert {k.replace(".base_layer", "") for k in theirs} == set(mine)
    assert all(theirs[k] == mine[k] for k in theirs)


@pytest.mark.parametrize("use_dora", [False, True])
def test_merge_and_unload_gives_torch_merged_weights(base_dir, use_dora):
    reference, directory = torch_adapter(base_dir, target_modules=["q_proj", "v_proj", "down_proj"],
                                         modules_to_save=["lm_head"], use_dora=use_dora)
    model = ms_peft.PeftModel.from_pretrained(ours(base_dir), directory)
    merged = model.merge_and_unload()
    assert type(merged) is LlamaForCausalLM and not merged._hf_peft_config_loaded
    assert not any("lora_" in k or "original_module" in k for k in merged.named_parameters_dict())
    torch_merged = reference.merge_and_unload().state_dict()
    state = merged.state_dict()
    assert set(state) == set(torch_merged)
    for key, value in torch_merged.items():
        np.testing.assert_allclose(state[key], value.numpy(), rtol=0, atol=1e-6, err_msg=key)
    assert parity.rel_error(merged(input_ids=IDS).logits, torch_logits(reference)) <= parity.FP32_BAR


@pytest.mark.parametrize("use_dora", [False, True])
def test_our_adapter_loads_in_torch_peft(base_dir, use_dora):
    model = ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["k_proj", "up_proj"], modules_to_save=["lm_head"],
        init_lora_weights=False, task_type="CAUSAL_LM", use_dora=use_dora))
    directory = tempfile.mkdtemp(prefix="ms-adapter-")
    model.save_pretrained(directory)
    assert sorted(os.listdir(directory)) == ["adapter_config.json", "adapter_model.safetensors"]
    from safetensors import safe_open

    with safe_open(os.path.join(directory, "adapter_model.safetensors"), "np") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight" in keys
    assert "base_model.model.lm_head.weight" in keys and not any("default" in k for k in keys)
    reference = peft.PeftModel.from_pretrained(torch_base(base_dir), directory).eval()
    assert parity.rel_error(model(input_ids=IDS).logits, torch_logits(reference)) <= parity.FP32_BAR


def test_default_init_starts_as_the_base_model(base_dir):
    base_logits = ours(base_dir)(input_ids=IDS).logits.asnumpy()
    for init in (True, "gaussian"):
        model = ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(r=8, target_modules=["q_proj"],
                                                                          init_lora_weights=init))
        assert np.array_equal(model(input_ids=IDS).logits.asnumpy(), base_logits)
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        a = layer.lora_A.default.weight.asnumpy()
        assert not np.any(layer.lora_B.default.weight.asnumpy()) and np.any(a)
        if init == "gaussian":
            assert abs(a.std() - 1 / 8) < 0.03
        else:  # kaiming-uniform(a=sqrt(5)) on fan_in 32: U(-1/sqrt(32), 1/sqrt(32))
            assert np.abs(a).max() <= 1 / np.sqrt(32) + 1e-6


def test_trainable_parameters_are_the_adapter_and_modules_to_save(base_dir, capsys):
    model = ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(r=4, target_modules=["q_proj"],
                                                                      modules_to_save=["lm_head"]))
    trainable = [k for k, p in model.named_parameters_dict().items() if p.requires_grad]
    assert trainable and all(".lora_" in k or ".modules_to_save.default." in k for k in trainable)
    assert "base_model.model.lm_head.modules_to_save.default.weight" in trainable
    torch.manual_seed(0)
    reference = peft.get_peft_model(torch_base(base_dir), peft.LoraConfig(r=4, target_modules=["q_proj"],
                                                                          modules_to_save=["lm_head"]))
    assert model.get_nb_trainable_parameters() == reference.get_nb_trainable_parameters()
    model.print_trainable_parameters()
    reference.print_trainable_parameters()
    ours_line, torch_line = capsys.readouterr().out.strip().splitlines()
    assert ours_line == torch_line


def test_several_adapters_switch_disable_and_delete(base_dir):
    ref_a, dir_a = torch_adapter(base_dir, seed=1, target_modules=["q_proj", "v_proj"])
    ref_b, dir_b = torch_adapter(base_dir, seed=2, target_modules=["v_proj", "o_proj"], modules_to_save=["lm_head"])
    model = ms_peft.PeftModel.from_pretrained(ours(base_dir), dir_a)
    model.load_adapter(dir_b, adapter_name="other")
    assert model.active_adapter == "default"
    logits = lambda: model(input_ids=IDS).logits  # noqa: E731
    assert parity.rel_error(logits(), torch_logits(ref_a)) <= parity.FP32_BAR
    model.set_adapter("other")
    assert model.active_adapter == "other"
    assert parity.rel_error(logits(), torch_logits(ref_b)) <= parity.FP32_BAR
    with model.disable_adapter():
        assert parity.rel_error(logits(), torch_logits(torch_base(base_dir))) <= parity.FP32_BAR
    assert parity.rel_error(logits(), torch_logits(ref_b)) <= parity.FP32_BAR
    model.set_adapter("default")
    model.delete_adapter("other")
    assert list(model.peft_config) == ["default"]
    assert not any(".other." in k for k in model.named_parameters_dict())
    assert parity.rel_error(logits(), torch_logits(ref_a)) <= parity.FP32_BAR
    unloaded = model.unload()
    assert parity.rel_error(unloaded(input_ids=IDS).logits, torch_logits(torch_base(base_dir))) <= parity.FP32_BAR


def test_target_modules_that_match_nothing_raise(base_dir):
    with pytest.raises(ValueError, match=r"Target modules \{'qkv'\} not found in the base model"):
        ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(target_modules=["qkv"]))
    with pytest.raises(ValueError, match="layers_to_transform"):
        ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(target_modules=["q_proj"], layers_to_transform=[7]))
    with pytest.raises(NotImplementedError, match="model.embed_tokens.*Embedding"):
        ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(target_modules=["embed_tokens"]))
    with pytest.raises(ValueError, match="modules_to_save entry 'score'"):
        ms_peft.get_peft_model(ours(base_dir), ms_peft.LoraConfig(target_modules=["q_proj"], modules_to_save=["score"]))


def test_adapter_for_another_base_model_names_the_key(base_dir):
    other = tiny_config()
    other.hidden_size, other.head_dim = 48, 12
    other_dir = parity.save_torch(parity.torch_reference(transformers.LlamaForCausalLM, other))
    torch.manual_seed(0)
    reference = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(other_dir),
                                    peft.LoraConfig(r=4, target_modules=["q_proj"]))
    directory = tempfile.mkdtemp()
    reference.save_pretrained(directory)
    with pytest.raises(ValueError, match=r"base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight|"
                                         r"model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight: adapter shape "
                                         r"\(4, 48\) != model shape \(4, 32\)"):
        ms_peft.PeftModel.from_pretrained(ours(base_dir), directory)


@pytest.mark.parametrize("option", [
    {"trainable_token_indices": [1, 2]},
    {"init_lora_weights": "pissa"},
    {"layer_replication": [[0, 1]]},
    {"use_qalora": True},
])
def test_unsupported_options_are_named(base_dir, option):
    _, directory = torch_adapter(base_dir, target_modules=["q_proj"])
    path = os.path.join(directory, "adapter_config.json")
    with open(path) as f:
        values = json.load(f)
    values.update(option)
    with open(path, "w") as f:
        json.dump(values, f)
    name = next(iter(option))
    with pytest.raises(NotImplementedError, match=name):
        ms_peft.PeftModel.from_pretrained(ours(base_dir), directory)


def test_hf_adapter_api_matches_torch_peft(base_dir):
    """transformers' own adapter API needs peft >= 0.22 (not on the index here): torch `peft`'s PeftModel, which
    that API drives, is the reference."""
    ref_a, directory = torch_adapter(base_dir, seed=3, target_modules=["q_proj", "up_proj"])
    ref_b, directory_b = torch_adapter(base_dir, seed=4, target_modules=["v_proj"])
    model = ours(base_dir)
    model.load_adapter(directory)
    model.load_adapter(directory_b, adapter_name="b")
    assert model.active_adapters() == ["default"]
    assert all(not p.requires_grad for p in model.named_parameters_dict().values())
    assert parity.rel_error(model(input_ids=IDS).logits, torch_logits(ref_a)) <= parity.FP32_BAR
    for name, reference in (("default", ref_a), ("b", ref_b)):
        theirs = {k: v.numpy() for k, v in peft.get_peft_model_state_dict(reference.base_model.model).items()}
        mine = model.get_adapter_state_dict(name)
        assert set(mine) == set(theirs)
        assert all(np.array_equal(mine[k], theirs[k]) for k in theirs)
    model.set_adapter("b")
    assert parity.rel_error(model(input_ids=IDS).logits, torch_logits(ref_b)) <= parity.FP32_BAR
    model.disable_adapters()
    assert parity.rel_error(model(input_ids=IDS).logits, torch_logits(torch_base(base_dir))) <= parity.FP32_BAR
    model.enable_adapters()
    model.delete_adapter("default")
    assert list(model.peft_config) == ["b"]
    # save_pretrained of an adapter-enabled model writes the active adapter only, in peft's format
    saved = tempfile.mkdtemp()
    model.save_pretrained(saved)
    assert sorted(os.listdir(saved)) == ["adapter_config.json", "adapter_model.safetensors"]
    with open(os.path.join(saved, "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == base_dir
    expected = torch_logits(ref_b)
    torch_again = peft.PeftModel.from_pretrained(torch_base(base_dir), saved).eval()
    assert parity.rel_error(torch_logits(torch_again), expected) <= parity.FP32_BAR
    # from_pretrained of a directory holding only an adapter loads its base model, then the adapter (as HF does)
    again = LlamaForCausalLM.from_pretrained(saved)
    assert again.active_adapters() == ["default"]
    assert parity.rel_error(again(input_ids=IDS).logits, expected) <= parity.FP32_BAR
    model.delete_adapter("b")
    assert not model._hf_peft_config_loaded
    with pytest.raises(ValueError, match="No adapter loaded"):
        model.active_adapters()


def test_add_adapter_trains_only_the_adapter(base_dir):
    model = ours(base_dir)
    model.add_adapter(ms_peft.LoraConfig(r=2, target_modules=["q_proj"]), adapter_name="mine")
    assert model.active_adapters() == ["mine"]
    trainable = sorted(k for k, p in model.named_parameters_dict().items() if p.requires_grad)
    assert trainable == sorted(f"model.layers.{i}.self_attn.q_proj.lora_{ab}.mine.weight"
                               for i in range(3) for ab in "AB")
    with pytest.raises(ValueError, match="already exists"):
        model.add_adapter(ms_peft.LoraConfig(r=2, target_modules=["q_proj"]), adapter_name="mine")


def test_compiled_greedy_generation_follows_the_active_adapter(base_dir):
    """The compiled decode step is rebuilt when adapters change (it bakes the active set in); parameter names stay
    unique, as graph compilation requires."""
    ref_a, dir_a = torch_adapter(base_dir, seed=5, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    ref_b, dir_b = torch_adapter(base_dir, seed=6, target_modules=["o_proj"])
    model = ours(base_dir)
    model.load_adapter(dir_a)
    model.load_adapter(dir_b, adapter_name="b")
    names = [p.name for p in model.get_parameters()]
    assert len(names) == len(set(names))
    prompt = IDS[:1]
    for name, reference in (("default", ref_a), ("b", ref_b)):
        model.set_adapter(name)
        with torch.no_grad():
            expected = reference.generate(input_ids=torch.from_numpy(prompt), max_new_tokens=6, do_sample=False,
                                          pad_token_id=0).numpy()
        out = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0).asnumpy()
        assert np.array_equal(out, expected), name


def test_gpt2_conv1d_layers_take_lora_like_peft(tmp_path):
    """GPT-2's Conv1D stores weights (in, out): peft switches fan_in_fan_out on; logits and merged weights agree."""
    from mindone.transformers import GPT2LMHeadModel

    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    base = parity.save_torch(parity.torch_reference(transformers.GPT2LMHeadModel, config), str(tmp_path / "base"))
    torch.manual_seed(0)
    reference = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(base, attn_implementation="eager"),
                                    peft.LoraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                                                    init_lora_weights=False)).eval()
    reference.save_pretrained(str(tmp_path / "adapter"))
    model = ms_peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base, dtype="float32"),
                                              str(tmp_path / "adapter"))
    expected = torch_logits(reference)
    assert parity.rel_error(model(input_ids=IDS).logits, expected) <= parity.FP32_BAR
    merged = model.merge_and_unload().state_dict()
    assert "transformer.h.0.attn.c_attn.weight" in merged
    for key, value in reference.merge_and_unload().state_dict().items():
        if key in merged:
            np.testing.assert_allclose(merged[key], value.numpy(), rtol=0, atol=1e-6, err_msg=key)
