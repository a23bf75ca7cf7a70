"""Weight-only quantization (backend/quantization.py, quantizers.py): the packed matmul kernels against a NumPy
reference of the same packed weights, quantized models against our model with the dequantized weights, GGUF blocks
kept as stored, save/reload, and the error messages.

Bars: the kernels compute x @ dequantize(W)^T in float32, so against a float64 product of the same dequantized
weights the error is float32 summation error, |err| <= 1e-6 * K * sum_k |x_k w_k| per output (measured ~1e-7
relative); `dequantize` (native kernel and MindSpore-ops route) equals the NumPy dequantisation bit for bit.
"""

import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import transformers
from transformers import QuantoConfig

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.backend import native, quantization as Q
from mindone.transformers.weights.gguf_io import GGUFFile
from tests.weights.test_gguf_io import write_tiny_gguf


def random_packed(rng, bits, n, k, group_size):
    groups = k // group_size
    scale = (rng.random((n, groups), dtype=np.float32) + 0.1) / 16
    if bits == 8:
        return {"weight_packed": rng.integers(-127, 128, (n, k), dtype=np.int8), "weight_scale": scale}
    return {"weight_packed": rng.integers(0, 256, (n, k // 2), dtype=np.uint8), "weight_scale": scale,
            "weight_min": -rng.random((n, groups), dtype=np.float32)}


def reference_dequantize(bits, arrays):
    """Independent of the code under test: element k of a row, nibble order per 32-element chunk as GGUF's Q4."""
    q = arrays["weight_packed"]
    n = q.shape[0]
    if bits == 8:
        values = q.astype(np.float32)
    else:
        k = q.shape[1] * 2
        values = np.empty((n, k), np.float32)
        for c in range(0, k, 32):
            chunk = q[:, c // 2 : c // 2 + 16]
            values[:, c : c + 16] = chunk & 15
            values[:, c + 16 : c + 32] = chunk >> 4
    group = values.shape[1] // arrays["weight_scale"].shape[1]
    scale = np.repeat(arrays["weight_scale"], group, axis=1)
    out = values * scale
    if bits == 4:
        out = out + np.repeat(arrays["weight_min"], group, axis=1)
    return out


def _args(bits, arrays):
    names = ["weight_packed", "weight_scale"] + (["weight_min"] if bits == 4 else [])
    return [ms.Tensor(arrays[name]) for name in names]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows, n, k, group_size", [(1, 96, 64, 32), (1, 257, 576, 64), (3, 40, 128, 128),
                                                    (1, 1, 32, 32)])
@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_packed_kernel_matches_numpy_reference(bits, rows, n, k, group_size, mode):
    assert native.available()
    rng = np.random.default_rng(rows * 7 + n + k + bits)
    arrays = random_packed(rng, bits, n, k, group_size)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    op = native.quantized_linear_op(bits)

    def run(*a):
        return op(*a)

    fn = ms.jit(run) if mode == "jit" else run
    out = fn(ms.Tensor(x), *_args(bits, arrays)).asnumpy()
    w = reference_dequantize(bits, arrays).astype(np.float64)
    ref = x.astype(np.float64) @ w.T
    assert out.shape == (rows, n) and out.dtype == np.float32
    bound = 1e-6 * k * (np.abs(x.astype(np.float64)) @ np.abs(w).T) + 1e-30
    assert (np.abs(out - ref) <= bound).all(), np.abs(out - ref).max()


@pytest.mark.parametrize("bits", [8, 4])
def test_dequantize_routes_equal_the_reference_bit_for_bit(bits):
    rng = np.random.default_rng(bits)
    arrays = random_packed(rng, bits, 48, 128, 64)
    expected = reference_dequantize(bits, arrays)
    np.testing.assert_array_equal(native.dequantize_op(bits)(*_args(bits, arrays)).asnumpy(), expected)
    np.testing.assert_array_equal(Q._dequantize_ms(bits, *_args(bits, arrays), *([None] if bits == 8 else [])),
                                  expected)
    np.testing.assert_array_equal(Q.dequantize_numpy(bits, *[a.asnumpy() for a in _args(bits, arrays)]), expected)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_numpy_packs_within_half_a_step(bits):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 96)).astype(np.float32)
    w[3, :32] = 0.0  # an all-zero group
    arrays = Q.quantize_numpy(w, bits, 32)
    np.testing.assert_array_equal(Q.unpack_int4(Q.pack_int4(np.arange(64).reshape(1, 64) % 16)),
                                  np.arange(64).reshape(1, 64) % 16)
    back = reference_dequantize(bits, arrays)
    step = np.repeat(arrays["weight_scale"], 32, axis=1)
    assert (np.abs(back - w) <= 0.5 * step * (1 + 1e-5) + 1e-7).all()
    assert (back[3, :32] == 0).all()


def test_fallback_route_without_native_kernels_gives_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(3)
    arrays = random_packed(rng, 4, 24, 64, 32)
    x = ms.Tensor(rng.standard_normal((1, 2, 64)).astype(np.float32))
    fast = Q.quantized_linear(x, *_args(4, arrays), None, 4).asnumpy()
    monkeypatch.setitem(Q._DIRECT, 4, None)
    monkeypatch.setitem(Q._DEQUANTIZE, 4, None)
    slow = Q.quantized_linear(x, *_args(4, arrays), None, 4).asnumpy()
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)


# --- models ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True, attention_bias=True)
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def dequantized_twin(path, quantized, **kwargs):
    """Our float model with every quantized layer's weight replaced by its dequantization (untied output layer)."""
    dense = LlamaForCausalLM.from_pretrained(path, **kwargs)
    dense.config.tie_word_embeddings = False
    for name, cell in quantized.cells_and_names():
        if isinstance(cell, Q.QuantizedLinear):
            target = dense.get_submodule(name)
            target.weight = ms.Parameter(ms.Tensor(cell.dequantized_weight()), name=f"{name}.weight")
    return dense


IDS = np.array([[5, 17, 42, 8, 77, 3, 61]], np.int64)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantized_model_matches_the_dequantized_model_and_reloads(tiny_llama, tmp_path, weights, monkeypatch):
    monkeypatch.setenv(Q.ACTIVATIONS_ENV, "float")  # the exact decode kernels (q8: test_q8_activations_in_a_model)
    config = QuantoConfig(weights=weights, modules_to_not_convert=[])
    model = LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=config)
    # the output layer: int8 under int4 weights unless output_layer_weights says otherwise
    assert isinstance(model.lm_head, Q.QuantizedLinear) and model.lm_head.bits == 8
    assert isinstance(model.model.layers[1].self_attn.q_proj, Q.QuantizedLinear)
    dense = dequantized_twin(tiny_llama, model)
    # counted as HF counts a quantized model: the weights' logical elements, not packed bytes or scales
    assert model.num_parameters() == dense.num_parameters()
    ids = ms.Tensor(IDS)
    # one token (the direct packed kernel) and a prefill (dequantize + MatMul)
    for sl in (slice(0, 1), slice(0, 7)):
        ours, ref = model(ids[:, sl]).logits.asnumpy(), dense(ids[:, sl]).logits.asnumpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # greedy decoding through the compiled step gives the dequantized model's tokens
    tokens = model.generate(ids, max_new_tokens=6, do_sample=False).asnumpy()
    np.testing.assert_array_equal(tokens, dense.generate(ids, max_new_tokens=6, do_sample=False).asnumpy())

    model.save_pretrained(tmp_path)
    saved = json.load(open(os.path.join(tmp_path, "config.json")))["quantization_config"]
    assert saved["quant_method"] == Q.QUANT_METHOD and saved["group_size"] == 32
    assert saved["weights"] == ("int8" if weights == "int8" else "mixed")
    assert saved["modules"]["lm_head"] == "int8" and saved["modules"]["model.layers.1.mlp.up_proj"] == weights
    assert len(saved["modules"]) == 2 * 7 + 1
    again = LlamaForCausalLM.from_pretrained(tmp_path)
    assert isinstance(again.lm_head, Q.QuantizedLinear)
    np.testing.assert_array_equal(again(ids).logits.asnumpy(), model(ids).logits.asnumpy())
    np.testing.assert_array_equal(again.generate(ids, max_new_tokens=6, do_sample=False).asnumpy(), tokens)


def test_output_layer_weights_int4(tiny_llama):
    config = QuantoConfig(weights="int4", modules_to_not_convert=[])
    config.output_layer_weights = "int4"
    model = LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=config)
    assert model.lm_head.bits == 4 and model.config.quantization_config["weights"] == "int4"


def test_default_keeps_lm_head_float_and_group_size_is_configurable(tiny_llama):
    config = QuantoConfig(weights="int4")
    config.group_size = 64
    model = LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=config)
    assert not isinstance(model.lm_head, Q.QuantizedLinear)
    # tied output layer still shares the embedding
    assert model.lm_head.weight is model.model.embed_tokens.weight
    q = model.model.layers[0].mlp.down_proj  # in_features 96: not a multiple of 64, stays float
    assert not isinstance(q, Q.QuantizedLinear)
    assert model.model.layers[0].mlp.up_proj.group_size == 64
    assert model.config.quantization_config["modules_to_not_convert"] == ["lm_head"]


@pytest.mark.parametrize("bad, message", [
    ({"weights": "int3"}, "weights='int3'"),
    ({"weights": "float8"}, "weights='float8'"),
    ({"weights": "int8", "activations": "int8"}, "activations='int8'"),
    ({"weights": "int4", "group_size": 48}, "group_size=48"),
    ({"quant_method": "gptq", "bits": 4}, "quant_method='gptq'"),
    ({"weights": "int4", "output_layer_weights": "fp8"}, "output_layer_weights='fp8'"),
])
def test_bad_quantization_configs_are_refused_naming_the_field(tiny_llama, bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=bad)


def test_quanto_config_itself_refuses_int3_and_keep_quantized_needs_gguf(tiny_llama):
    with pytest.raises(ValueError, match="int3"):
        QuantoConfig(weights="int3")
    with pytest.raises(ValueError, match="keep_quantized=True needs gguf_file"):
        LlamaForCausalLM.from_pretrained(tiny_llama, keep_quantized=True)


@pytest.mark.parametrize("tied", [False, True])
def test_gguf_blocks_kept_as_stored_equal_the_dense_gguf_load(tmp_path, tied, monkeypatch):
    monkeypatch.setenv(Q.ACTIVATIONS_ENV, "float")  # the exact decode kernels
    write_tiny_gguf(tmp_path / "tiny.gguf", tied=tied)
    kept = LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", keep_quantized=True)
    dense = LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    modules = kept.config.quantization_config["modules"]
    # the tiny file: q Q8_0, k Q4_1, gate Q4_0, down Q8_0; v F16, o F32, up BF16 stay float; output Q4_0 or the
    # tied Q8_0 embedding
    assert modules["model.layers.0.self_attn.q_proj"] == "int8" and modules["model.layers.1.mlp.gate_proj"] == "int4"
    assert modules["model.layers.0.self_attn.k_proj"] == "int4" and modules["model.layers.0.mlp.down_proj"] == "int8"
    assert "model.layers.0.self_attn.v_proj" not in modules and "model.layers.0.mlp.up_proj" not in modules
    assert modules["lm_head"] == ("int8" if tied else "int4")
    for name, cell in kept.cells_and_names():
        if isinstance(cell, Q.QuantizedLinear):  # same weights as the dense load, bit for bit
            np.testing.assert_array_equal(cell.dequantized_weight(), dense.get_submodule(name).weight.asnumpy(), name)
            # Q8_0 / Q4_0 / Q4_1 keep the file's float16 scales (fewer bytes per decode step)
            assert cell.weight_scale.dtype == ms.float16, name
            assert cell.weight_min is None or cell.weight_min.dtype == ms.float16, name
    ids = ms.Tensor(IDS % 128)
    np.testing.assert_array_equal(kept(ids).logits.asnumpy(), dense(ids).logits.asnumpy())  # prefill: same MatMul
    one, ref = kept(ids[:, :1]).logits.asnumpy(), dense(ids[:, :1]).logits.asnumpy()
    np.testing.assert_allclose(one, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # saved and reloaded: the float16 scales stay float16, the same logits
    kept.save_pretrained(tmp_path / "saved")
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    assert again.get_submodule("model.layers.0.self_attn.k_proj").weight_min.dtype == ms.float16
    np.testing.assert_array_equal(again(ids[:, :1]).logits.asnumpy(), one)


def test_q4_k_blocks_unpack_to_the_gguf_packages_dequantization(tmp_path):
    import gguf
    from gguf.quants import dequantize

    rng = np.random.default_rng(0)
    rows, cols = 8, 512
    blocks = rng.integers(0, 256, (rows * cols // 256, 144), dtype=np.uint8)
    blocks[:, :4] = np.frombuffer(np.abs(rng.standard_normal((rows * cols // 256, 2))).astype(np.float16) / 50,
                                  np.uint8).reshape(-1, 4)
    writer = gguf.GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    writer.add_block_count(1)
    data = blocks.reshape(rows, cols // 256 * 144)
    writer.add_tensor("blk.0.ffn_up.weight", data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    bits, arrays = GGUFFile(str(tmp_path / "k.gguf")).packed("model.layers.0.mlp.up_proj.weight")
    assert bits == 4 and arrays["weight_scale"].shape == (rows, cols // 32)
    expected = dequantize(data, gguf.GGMLQuantizationType.Q4_K)
    np.testing.assert_array_equal(reference_dequantize(4, arrays), expected)


# --- decode-step attention products (native.batch_matmul_*_op, used by F.attention for few query rows) -----------


@pytest.mark.parametrize("shape_a, shape_b, nt", [((1, 3, 3, 64), (1, 3, 128, 64), True),
                                                  ((2, 2, 1, 8), (2, 2, 5, 8), True),
                                                  ((1, 3, 3, 128), (1, 3, 128, 64), False),
                                                  ((2, 4, 1, 5), (2, 4, 5, 8), False)])
def test_native_attention_products_match_float64_and_have_gradients(shape_a, shape_b, nt):
    rng = np.random.default_rng(len(shape_a) + shape_b[-2])
    a, b = rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_b).astype(np.float32)
    op = native.batch_matmul_nt_op() if nt else native.batch_matmul_op()
    bt = np.swapaxes(b, -1, -2) if nt else b
    ref = a.astype(np.float64) @ bt.astype(np.float64)
    out = op(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    bound = 1e-6 * a.shape[-1] * (np.abs(a.astype(np.float64)) @ np.abs(bt.astype(np.float64))) + 1e-30
    assert out.shape == ref.shape and (np.abs(out - ref) <= bound).all()
    da, db = ms.grad(lambda x, y: op(x, y).sum(), grad_position=(0, 1))(ms.Tensor(a), ms.Tensor(b))
    ones = np.ones(ref.shape)
    np.testing.assert_allclose(da.asnumpy(), ones @ np.swapaxes(bt, -1, -2), rtol=1e-5, atol=1e-4)
    expected_db = np.swapaxes(a, -1, -2) @ ones
    np.testing.assert_allclose(db.asnumpy(), np.swapaxes(expected_db, -1, -2) if nt else expected_db,
                               rtol=1e-5, atol=1e-4)


def test_cli_quantize_option():
    from mindone.transformers.cli import UsageError, build_parser, quantize_kwargs

    parser = build_parser()
    args = parser.parse_args(["generate", "--quantize", "int4", "--prompt", "x"])
    config = quantize_kwargs(args, None)["quantization_config"]
    assert config.weights == "int4" and config.modules_to_not_convert == []
    assert quantize_kwargs(parser.parse_args(["chat", "--quantize", "gguf"]), "m.gguf") == {"keep_quantized": True}
    with pytest.raises(UsageError, match="--quantize gguf"):
        quantize_kwargs(parser.parse_args(["serve", "--quantize", "gguf"]), None)
    assert quantize_kwargs(parser.parse_args(["generate", "--prompt", "x"]), None) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--quantize", "int3"])


# --- fused products of a decode step (native.quantized_linear3_op / silu_gate_up_op / rms_norm_op) -------------------


def _float64_product(bits, x, arrays):
    w = reference_dequantize(bits, arrays).astype(np.float64)
    ref = x.astype(np.float64) @ w.T
    return ref, 1e-6 * x.shape[-1] * (np.abs(x.astype(np.float64)) @ np.abs(w).T) + 1e-30


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows, k, group_size, sizes", [(1, 576, 32, (96, 33, 32)), (3, 128, 64, (40, 8, 8))])
@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_fused_qkv_kernel_matches_three_float64_products(bits, rows, k, group_size, sizes, mode):
    rng = np.random.default_rng(bits + rows + k)
    weights = [random_packed(rng, bits, n, k, group_size) for n in sizes]
    x = rng.standard_normal((rows, k)).astype(np.float32)
    op = native.quantized_linear3_op(bits)

    def run(*a):
        return op(*a)

    fn = ms.jit(run) if mode == "jit" else run
    outs = fn(ms.Tensor(x), *[t for arrays in weights for t in _args(bits, arrays)])
    assert len(outs) == 3
    for out, arrays, n in zip(outs, weights, sizes):
        ref, bound = _float64_product(bits, x, arrays)
        out = out.asnumpy()
        assert out.shape == (rows, n) and out.dtype == np.float32
        assert (np.abs(out - ref) <= bound).all(), np.abs(out - ref).max()
        # the same per-row kernel as the single product: equal bit for bit
        single = native.quantized_linear_op(bits)(ms.Tensor(x), *_args(bits, arrays))
        np.testing.assert_array_equal(out, single.asnumpy())


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows, n, k, group_size", [(1, 96, 64, 32), (2, 33, 128, 128)])
def test_fused_silu_gate_up_kernel_matches_float64(bits, rows, n, k, group_size):
    rng = np.random.default_rng(bits * 3 + n)
    gate, up = random_packed(rng, bits, n, k, group_size), random_packed(rng, bits, n, k, group_size)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    out = native.silu_gate_up_op(bits)(ms.Tensor(x), *_args(bits, gate), *_args(bits, up)).asnumpy()
    g, g_bound = _float64_product(bits, x, gate)
    u, u_bound = _float64_product(bits, x, up)
    ref = g / (1 + np.exp(-g)) * u
    # silu'(g) <= 1.1: the products' bounds carried through, plus a few float32 roundings of the result
    bound = 1.1 * g_bound * np.abs(u) + np.abs(g) * u_bound + 4e-7 * np.abs(ref) + 1e-30
    assert out.shape == (rows, n) and (np.abs(out - ref) <= bound).all(), np.abs(out - ref).max()


@pytest.mark.parametrize("shape", [(1, 1, 576), (2, 3, 40)])
def test_native_rms_norm_matches_float64(shape):
    rng = np.random.default_rng(shape[-1])
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    out = native.rms_norm_op()(ms.Tensor(x), ms.Tensor(w), ms.Tensor([1e-5], ms.float32)).asnumpy()
    x64 = x.astype(np.float64)
    ref = w * x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + 1e-5)
    assert out.shape == shape
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-7 * np.abs(ref).max())


def test_fusable_projections_are_marked_only_when_packed_alike(tiny_llama):
    fused = LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=QuantoConfig(weights="int4"))
    layer = fused.model.layers[0]
    assert layer.self_attn.fuse_quantized_qkv and layer.mlp.fuse_quantized_gate_up
    config = QuantoConfig(weights="int8", modules_to_not_convert=["lm_head", "k_proj"])
    partial = LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=config)
    layer = partial.model.layers[0]
    assert not layer.self_attn.fuse_quantized_qkv and layer.mlp.fuse_quantized_gate_up
    assert not LlamaForCausalLM.from_pretrained(tiny_llama).model.layers[0].mlp.fuse_quantized_gate_up
    # the fused route (decode step's rows) and the layer-by-layer route give the same numbers
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 1, fused.config.hidden_size)).astype(np.float32))
    mlp, attn = fused.model.layers[1].mlp, fused.model.layers[1].self_attn
    separate = (mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)).asnumpy()
    np.testing.assert_allclose(Q.fused_silu_gate_up(x, mlp.gate_proj, mlp.up_proj, mlp.act_fn).asnumpy(), separate,
                               rtol=1e-5, atol=1e-6 * np.abs(separate).max())
    for got, proj in zip(Q.fused_projections(x, attn.q_proj, attn.k_proj, attn.v_proj),
                         (attn.q_proj, attn.k_proj, attn.v_proj)):
        np.testing.assert_array_equal(got.asnumpy(), proj(x).asnumpy())
    # the whole MLP and the residual add in one call (int8 activations): equal to the q8 kernels one by one
    assert mlp.fuse_quantized_mlp
    residual = ms.Tensor(np.random.default_rng(1).standard_normal(x.shape).astype(np.float32))
    assert Q.activation_quantization() == "q8"
    step_by_step = (residual + mlp.down_proj(Q.fused_silu_gate_up(x, mlp.gate_proj, mlp.up_proj, mlp.act_fn)))
    np.testing.assert_array_equal(Q.fused_mlp_residual(x, mlp, residual).asnumpy(), step_by_step.asnumpy())


@pytest.mark.parametrize("b, h, h_kv, sq, sk, mask_shape, scale", [
    (1, 9, 3, 1, 128, (1, 1, 1, 128), 1.0),   # SmolLM2's decode step
    (2, 4, 2, 2, 16, (2, 1, 2, 16), 0.3),
    (1, 4, 4, 3, 16, (1, 4, 3, 16), 0.5),
    (2, 6, 2, 1, 7, (1, 6, 1, 7), 1.0),
])
def test_native_decode_attention_matches_float64(b, h, h_kv, sq, sk, mask_shape, scale):
    from mindone.transformers.backend import functional as F, runtime

    rng = np.random.default_rng(h * sk + sq)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((b, h, sq, 8), (b, h_kv, sk, 8),
                                                                            (b, h_kv, sk, 8)))
    mask = np.where(rng.random(mask_shape) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32)
    mask[..., 0] = 0  # every row keeps a key

    def run(*a):
        return F.attention(*a, scale=scale)

    with runtime.native_ops_in_graph():
        out, weights = ms.jit(run)(*(ms.Tensor(a) for a in (q, k, v, mask)))
    rep = h // h_kv
    k64, v64 = np.repeat(k, rep, axis=1).astype(np.float64), np.repeat(v, rep, axis=1).astype(np.float64)
    scores = q.astype(np.float64) @ np.swapaxes(k64, -1, -2) * scale + mask
    ref_w = np.exp(scores - scores.max(-1, keepdims=True))
    ref_w /= ref_w.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.asnumpy(), ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.asnumpy(), ref_w @ v64, rtol=1e-5, atol=1e-5)


def test_decode_attention_does_not_read_slots_masked_with_finfo_min():
    """A static cache's unused slots (HF's finfo.min in the mask) are skipped: the same numbers, bit for bit, as the
    slots computed (a mask of -1e29 there, which the kernel computes: weight exactly 0), and their keys and values
    are never read (NaN there changes nothing). A row with every slot closed still computes them all (as HF)."""
    from mindone.transformers.backend import functional as F, runtime

    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 6, 1, 16)).astype(np.float32)
    k, v = (rng.standard_normal((1, 2, 40, 16)).astype(np.float32) for _ in range(2))
    closed = np.zeros((1, 1, 1, 40), bool)
    closed[..., 23:] = True  # positions 0..22 filled
    mask_min = np.where(closed, np.finfo(np.float32).min, 0).astype(np.float32)
    mask_big = np.where(closed, -1e29, 0).astype(np.float32)

    def run(*a):
        return F.attention(*a, scale=0.25)

    with runtime.native_ops_in_graph():
        fn = ms.jit(run)
        out_big, w_big = (t.asnumpy() for t in fn(*(ms.Tensor(a) for a in (q, k, v, mask_big))))
        k_nan, v_nan = k.copy(), v.copy()
        k_nan[:, :, 23:], v_nan[:, :, 23:] = np.nan, np.nan
        out_min, w_min = (t.asnumpy() for t in fn(*(ms.Tensor(a) for a in (q, k_nan, v_nan, mask_min))))
        all_closed = np.full((1, 1, 1, 40), np.finfo(np.float32).min, np.float32)
        out_closed, _ = fn(*(ms.Tensor(a) for a in (q, k, v, all_closed)))
    np.testing.assert_array_equal(out_min, out_big)
    np.testing.assert_array_equal(w_min, w_big)
    assert (w_min[..., 23:] == 0).all()
    # every slot closed: HF's softmax over equal scores, a mean of the values
    np.testing.assert_allclose(out_closed.asnumpy(), np.repeat(v, 3, axis=1).mean(2, keepdims=True), rtol=1e-4,
                               atol=1e-5)


# --- int8 activations (llama.cpp's method: native.quantized_linear_q8_op & co, quantization.activation_quantization) --


def q8_blocks(x):
    """x (M, K) float32 rounded to int8 blocks of 32 as the kernels' rule: d = max|x| / 127, q = rint(x * (1 / d))
    (float32 arithmetic), s = d * sum(q). Returns q (M, K / 32, 32) int64, d and s (M, K / 32) float64."""
    blocks = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    d = np.abs(blocks).max(-1) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = np.rint(blocks * inv[..., None]).astype(np.int64)
    return q, d.astype(np.float64), d.astype(np.float64) * q.sum(-1)


def q8_reference(bits, x, arrays):
    """float64 value of the kernels' formula: sum_b scale_b d_b sum_j q_w q_x (+ min_b s_b), and a bound of the
    float32 summation error: 1e-6 per term times the sum of |terms|, the integer sums taken as sum_j |q_w q_x| (the
    kernels convert partial integer sums to float32 before adding them up)."""
    q, d, s = q8_blocks(x)
    w = reference_dequantize(bits, {**arrays, "weight_min": np.zeros_like(arrays["weight_scale"])}
                             if bits == 4 else arrays)
    group = x.shape[1] // arrays["weight_scale"].shape[1]
    scale = np.repeat(arrays["weight_scale"], group // 32, axis=1).astype(np.float64)  # per block of 32
    qw = np.rint(w.astype(np.float64) / np.repeat(scale, 32, axis=1)).reshape(w.shape[0], -1, 32) if bits == 4 else \
        arrays["weight_packed"].astype(np.int64).reshape(w.shape[0], -1, 32)
    qw = np.nan_to_num(qw).astype(np.int64)
    isum = np.einsum("mbj,nbj->mnb", q, qw)  # exact integers
    terms = isum * (scale[None] * d[:, None])
    magnitude = np.einsum("mbj,nbj->mnb", np.abs(q), np.abs(qw)) * (scale[None] * d[:, None])
    if bits == 4:
        mins = np.repeat(arrays["weight_min"], group // 32, axis=1).astype(np.float64)
        terms = np.concatenate([terms, mins[None] * s[:, None]], axis=-1)
        magnitude = np.concatenate([magnitude, np.abs(mins[None] * s[:, None])], axis=-1)
    return terms.sum(-1), 1e-6 * terms.shape[-1] * magnitude.sum(-1) + 1e-30


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows, n, k, group_size", [(1, 96, 64, 32), (1, 257, 576, 32), (3, 41, 224, 32),
                                                    (2, 40, 384, 128), (1, 1, 32, 32)])
def test_q8_activation_kernel_matches_numpy_reference_of_the_same_math(bits, rows, n, k, group_size):
    rng = np.random.default_rng(rows * 5 + n + k + bits)
    arrays = random_packed(rng, bits, n, k, group_size)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    if k > 32:
        x[0, :32] = 0.0  # an all-zero block (d = 0)
    out = native.quantized_linear_q8_op(bits)(ms.Tensor(x), *_args(bits, arrays)).asnumpy()
    ref, bound = q8_reference(bits, x, arrays)
    assert out.shape == (rows, n) and out.dtype == np.float32
    assert (np.abs(out - ref) <= bound).all(), np.abs(out - ref).max()
    # and close to the exact product: the rounding of x (|dx| <= d / 2 per element) bounds the difference
    exact = x.astype(np.float64) @ reference_dequantize(bits, arrays).astype(np.float64).T
    _, d, _ = q8_blocks(x)
    w = np.abs(reference_dequantize(bits, arrays).astype(np.float64)).reshape(n, -1, 32).sum(-1)
    assert (np.abs(out - exact) <= 0.5 * (d @ w.T) * (1 + 1e-5) + bound).all()
    assert np.abs(out - exact).max() > 0  # the activations are rounded: not the exact kernel


@pytest.mark.parametrize("bits", [8, 4])
def test_q8_activation_kernel_at_the_extremes_of_both_integer_ranges(bits):
    """Weights at -128 / 127 (int8) or 0 / 15 (int4) against activations rounded to +-127 with matching or opposite
    signs: the largest integer products, where a 16-bit pair sum (the AVX2 route's vpmaddubsw) could saturate."""
    rng = np.random.default_rng(7)
    n, k = 8, 256
    arrays = random_packed(rng, bits, n, k, 32)
    if bits == 8:
        arrays["weight_packed"] = np.where(rng.random((n, k)) < 0.5, -128, 127).astype(np.int8)
        arrays["weight_packed"][0] = -128
    else:
        arrays["weight_packed"] = np.where(rng.random((n, k // 2)) < 0.5, 0x00, 0xFF).astype(np.uint8)
        arrays["weight_packed"][0] = 0xFF
    x = np.where(rng.random((2, k)) < 0.5, -1.0, 1.0).astype(np.float32)  # every element rounds to +-127
    x[1] = -1.0
    out = native.quantized_linear_q8_op(bits)(ms.Tensor(x), *_args(bits, arrays)).asnumpy()
    ref, bound = q8_reference(bits, x, arrays)
    assert (np.abs(out - ref) <= bound).all(), np.abs(out - ref).max()


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("threads", [1, 2])
def test_float16_scales_give_the_numbers_of_the_same_scales_in_float32(bits, threads):
    """GGUF's float16 scales are read as stored and widened in the kernels, a few rows at a time: every route gives
    bit for bit what it gives for the same values as float32 (rows past one widened part, odd row counts)."""
    rng = np.random.default_rng(21 + bits)
    n, k = 101, 192
    half = random_packed(rng, bits, n, k, 32)
    for name in ("weight_scale", "weight_min"):
        if name in half:
            half[name] = half[name].astype(np.float16)
    single = {name: (v.astype(np.float32) if v.dtype == np.float16 else v) for name, v in half.items()}
    x = ms.Tensor(rng.standard_normal((2, k)).astype(np.float32))
    previous = native.threads()
    native.set_threads(threads)
    try:
        for op in (native.quantized_linear_q8_op(bits), native.quantized_linear_op(bits)):
            np.testing.assert_array_equal(op(x, *_args(bits, half)).asnumpy(), op(x, *_args(bits, single)).asnumpy())
        three = native.quantized_linear3_q8_op(bits)
        for a, b in zip(three(x, *_args(bits, half) * 3), three(x, *_args(bits, single) * 3)):
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
        dequant = native.dequantize_op(bits)
        expected = reference_dequantize(bits, single)
        np.testing.assert_array_equal(dequant(*_args(bits, half)[:3]).asnumpy(), expected)
        mins = ms.Tensor(half["weight_min"]) if bits == 4 else None
        np.testing.assert_array_equal(  # the route without native kernels
            Q._dequantize_ms(bits, ms.Tensor(half["weight_packed"]), ms.Tensor(half["weight_scale"]), mins).asnumpy(),
            expected)
    finally:
        native.set_threads(previous)


@pytest.mark.parametrize("bits", [8, 4])
def test_q8_fused_kernels_equal_the_single_q8_product(bits):
    rng = np.random.default_rng(11 + bits)
    k = 192
    weights = [random_packed(rng, bits, n, k, 32) for n in (64, 32, 32)]
    x = rng.standard_normal((2, k)).astype(np.float32)
    singles = [native.quantized_linear_q8_op(bits)(ms.Tensor(x), *_args(bits, a)).asnumpy() for a in weights]
    outs = native.quantized_linear3_q8_op(bits)(ms.Tensor(x), *[t for a in weights for t in _args(bits, a)])
    for out, single in zip(outs, singles):
        np.testing.assert_array_equal(out.asnumpy(), single)
    gate, up = random_packed(rng, bits, 48, k, 32), random_packed(rng, bits, 48, k, 32)
    g = native.quantized_linear_q8_op(bits)(ms.Tensor(x), *_args(bits, gate)).asnumpy()
    u = native.quantized_linear_q8_op(bits)(ms.Tensor(x), *_args(bits, up)).asnumpy()
    out = native.silu_gate_up_q8_op(bits)(ms.Tensor(x), *_args(bits, gate), *_args(bits, up)).asnumpy()
    g = g.astype(np.float64)
    np.testing.assert_allclose(out, g / (1 + np.exp(-g)) * u, rtol=2e-6, atol=1e-7)


def test_activation_quantization_option_selects_the_kernel(monkeypatch):
    rng = np.random.default_rng(5)
    arrays = random_packed(rng, 4, 24, 64, 32)
    x = ms.Tensor(rng.standard_normal((1, 64)).astype(np.float32))
    args = _args(4, arrays)
    monkeypatch.setenv(Q.ACTIVATIONS_ENV, "float")
    exact = Q.quantized_linear(x, *args, None, 4).asnumpy()
    np.testing.assert_array_equal(exact, native.quantized_linear_op(4)(x, *args).asnumpy())
    monkeypatch.delenv(Q.ACTIVATIONS_ENV)
    assert Q.activation_quantization() == "q8"
    np.testing.assert_array_equal(Q.quantized_linear(x, *args, None, 4).asnumpy(),
                                  native.quantized_linear_q8_op(4)(x, *args).asnumpy())
    monkeypatch.setenv(Q.ACTIVATIONS_ENV, "int4")
    with pytest.raises(ValueError, match="MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS"):
        Q.activation_quantization()


@pytest.mark.parametrize("bits", [8, 4])
def test_native_threads_split_rows_without_changing_the_numbers(bits):
    """native.set_threads(2): the q8 products and LinearNT split their output rows over a worker thread (parts
    claimed as they go); each row is computed by the same code, so the outputs equal the one-thread outputs bit for
    bit, over many back-to-back jobs of different sizes (a late worker must not touch the next job)."""
    rng = np.random.default_rng(21 + bits)
    cases = []
    for n in (300, 40, 1536):
        arrays = random_packed(rng, bits, n, 576, 32)
        w = ms.Tensor(rng.standard_normal((n, 576)).astype(np.float32))
        cases.append((_args(bits, arrays), w))
    x = ms.Tensor(rng.standard_normal((2, 576)).astype(np.float32))
    q8, nt = native.quantized_linear_q8_op(bits), native.linear_nt_op()
    previous = native.threads()
    try:
        native.set_threads(1)
        one = [(q8(x, *args).asnumpy(), nt(x, w).asnumpy()) for args, w in cases]
        native.set_threads(2)
        for _ in range(30):
            for (args, w), (want_q8, want_nt) in zip(cases, one):
                np.testing.assert_array_equal(q8(x, *args).asnumpy(), want_q8)
                np.testing.assert_array_equal(nt(x, w).asnumpy(), want_nt)
    finally:
        native.set_threads(previous)


def test_native_threads_default_to_the_affinity_mask_and_follow_runtime_set_threads(monkeypatch):
    """Default: the CPUs this process may run on, at most 4; runtime.set_threads(n) (the CLI's --threads) sets the
    native kernels' threads too."""
    import os

    from mindone.transformers.backend import runtime

    assert native._default_threads() == max(1, min(len(os.sched_getaffinity(0)), 4))
    monkeypatch.setattr(native, "_DEFAULT_MAX_THREADS", 1)
    assert native._default_threads() == 1
    # MindSpore takes its own thread count once per process: leave it to the process
    monkeypatch.setattr(runtime.ms.device_context.cpu.op_tuning, "threads_num", lambda n: None)
    previous = native.threads()
    try:
        runtime.set_threads(3)
        assert native.threads() == 3
    finally:
        runtime.set_threads(previous if previous > 0 else len(os.sched_getaffinity(0)))


def test_q8_portable_fallback_matches_the_reference(tmp_path):
    """The int8-activation kernels built without -march=native (no VNNI / AVX-512: the plain loops) against the
    same NumPy reference, in a process whose kernel library is built with the portable flags only."""
    code = (
        "import numpy as np, mindspore as ms\n"
        "from mindone.transformers.backend import native\n"
        "native._FLAG_SETS = (native._FLAG_SETS[-1],)\n"
        "assert '-march=native' not in native._FLAG_SETS[0]\n"
        "from tests.backend.test_quantization import random_packed, q8_reference, _args\n"
        "rng = np.random.default_rng(0)\n"
        "for bits in (8, 4):\n"
        "    for n, k, g in ((33, 224, 32), (17, 256, 128)):\n"
        "        arrays = random_packed(rng, bits, n, k, g)\n"
        "        x = rng.standard_normal((2, k)).astype(np.float32)\n"
        "        out = native.quantized_linear_q8_op(bits)(ms.Tensor(x), *_args(bits, arrays)).asnumpy()\n"
        "        ref, bound = q8_reference(bits, x, arrays)\n"
        "        assert (np.abs(out - ref) <= bound).all(), (bits, np.abs(out - ref).max())\n"
        "print('ok')\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, MINDONE_TRANSFORMERS_CACHE=str(tmp_path),
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                         cwd=root)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_q8_activations_in_a_model_stay_close_to_the_dequantized_model(tiny_llama, weights, monkeypatch):
    """The default decode kernels (int8 activations) in a quantized tiny Llama: one-token logits within the
    activations' rounding of the dequantized model's, and greedy generate() (compiled steps, fused q/k/v and
    gate/up) gives the dequantized model's tokens here; MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS=float gives the
    exact kernels' logits."""
    model = LlamaForCausalLM.from_pretrained(tiny_llama, quantization_config=QuantoConfig(
        weights=weights, modules_to_not_convert=[]))
    dense = dequantized_twin(tiny_llama, model)
    ids = ms.Tensor(IDS)
    assert Q.activation_quantization() == "q8"
    ours, ref = model(ids[:, :1]).logits.asnumpy(), dense(ids[:, :1]).logits.asnumpy()
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert 0 < err < 0.02, err
    tokens = model.generate(ids, max_new_tokens=8, do_sample=False).asnumpy()
    np.testing.assert_array_equal(tokens, dense.generate(ids, max_new_tokens=8, do_sample=False).asnumpy())
    monkeypatch.setenv(Q.ACTIVATIONS_ENV, "float")
    exact = model(ids[:, :1]).logits.asnumpy()
    np.testing.assert_allclose(exact, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
