"""A quantized Llama decoder layer's decode step in two native calls (quantization.fused_attention_input /
fused_attention_output_mlp, kernels QAttentionInput*Q8 / QAttentionOutputMlp*Q8): the kernels against the separate
q8-route kernels they replace (equal bit for bit: the same loops in the same order) and against float64 references,
the dispatch rules, and greedy generate() of a small quantized Llama with and without the fused route.
"""

import mindspore as ms
import numpy as np
import pytest
import transformers
from transformers import QuantoConfig

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.backend import functional as F
from mindone.transformers.backend import native, quantization as Q
from tests.backend.test_quantization import _args, q8_reference, random_packed

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")


def rotations(rng, batch, seq, d, scale=0.125):
    """Per-position RoPE matrices as the model builds them (F.rotary_matrix), query ones scaled."""
    pos = rng.integers(0, 50, (batch, seq)).astype(np.float32)
    inv = 1.0 / (10000.0 ** (np.arange(0, d, 2, dtype=np.float32) / d))
    freqs = pos[..., None] * inv
    emb = np.concatenate([freqs, freqs], -1)
    key = F.rotary_matrix(ms.Tensor(np.cos(emb)), ms.Tensor(np.sin(emb))).asnumpy()
    return (key * np.float32(scale)).astype(np.float32), key


def separate_attention_input(bits, x, norm_w, eps, wq, wk, wv, qrot, krot, d):
    """The q8 route's kernels one by one (RMSNorm, QLinear3*Q8, BatchMatMulNN RoPE, head swaps)."""
    b, s, k = x.shape
    h = native.rms_norm_op()(ms.Tensor(x), ms.Tensor(norm_w), ms.Tensor([eps], ms.float32))
    outs = native.quantized_linear3_q8_op(bits)(h.reshape(b * s, k), *_args(bits, wq), *_args(bits, wk),
                                                  *_args(bits, wv))
    yq, yk, yv = (o.asnumpy().reshape(b, s, -1, d) for o in outs)
    bmm = native.batch_matmul_op()

    def rope(y, rot):
        rot = np.broadcast_to(rot, (b,) + rot.shape[1:]).copy()
        return bmm(ms.Tensor(y), ms.Tensor(rot)).asnumpy().swapaxes(1, 2)

    return rope(yq, qrot), rope(yk, krot), yv.swapaxes(1, 2), h.asnumpy().reshape(b * s, k)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("batch, seq, heads, kv_heads, d, k, shared_rotation", [
    (1, 1, 9, 3, 64, 576, False),   # SmolLM2's decode step
    (2, 2, 4, 2, 32, 128, True),    # rotations shared by the batch (B = 1), two positions
    (1, 3, 2, 2, 64, 192, False),
])
def test_attention_input_kernel_equals_the_separate_kernels_and_float64(bits, batch, seq, heads, kv_heads, d, k,
                                                                       shared_rotation):
    rng = np.random.default_rng(bits + 7 * heads + seq)
    x = (rng.standard_normal((batch, seq, k)) * 3).astype(np.float32)
    norm_w = (rng.random(k) + 0.5).astype(np.float32)
    wq, wk, wv = (random_packed(rng, bits, n * d, k, 32) for n in (heads, kv_heads, kv_heads))
    qrot, krot = rotations(rng, 1 if shared_rotation else batch, seq, d)
    op = native.attention_input_q8_op(bits)
    q, kk, v = (o.asnumpy() for o in op(ms.Tensor(x), ms.Tensor(norm_w), ms.Tensor([1e-5], ms.float32),
                                        *_args(bits, wq), *_args(bits, wk), *_args(bits, wv), ms.Tensor(qrot),
                                        ms.Tensor(krot)))
    assert q.shape == (batch, heads, seq, d) and kk.shape == v.shape == (batch, kv_heads, seq, d)
    want_q, want_k, want_v, h = separate_attention_input(bits, x, norm_w, 1e-5, wq, wk, wv, qrot, krot, d)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(kk, want_k)
    np.testing.assert_array_equal(v, want_v)
    # float64: the q8 products of the (float32) normed rows, rotated in float64
    for got, arrays, rot, n in ((q, wq, qrot, heads), (kk, wk, krot, kv_heads)):
        y, bound = q8_reference(bits, h, arrays)
        y, bound = y.reshape(batch, seq, n, d), bound.reshape(batch, seq, n, d)
        r = np.broadcast_to(rot, (batch,) + rot.shape[1:]).astype(np.float64)
        ref = np.einsum("bshn,bsnd->bhsd", y, r)
        tol = np.einsum("bshn,bsnd->bhsd", bound + 1e-6 * np.abs(y), np.abs(r)) + 1e-6 * np.abs(ref)
        assert (np.abs(got - ref) <= tol).all(), np.abs(got - ref).max()
    y, bound = q8_reference(bits, h, wv)
    ref = y.reshape(batch, seq, kv_heads, d).swapaxes(1, 2)
    assert (np.abs(v - ref) <= bound.reshape(batch, seq, kv_heads, d).swapaxes(1, 2)).all()


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("batch, seq, slots", [(1, 1, [5]), (2, 2, [0, 7])])
def test_attention_input_writing_the_cache_in_place(bits, batch, seq, slots):
    """QAttentionInputCache*Q8: the same q, and the keys / values of QAttentionInput*Q8 written into the given slots
    of the storage Parameters (the other slots untouched), in PyNative and in a graph, where reads of the storage
    before the call see the old values and reads after it the new ones (the in-place write is declared)."""
    heads, kv_heads, d, k, t = 4, 2, 32, 128, 8
    rng = np.random.default_rng(bits + seq)
    x = rng.standard_normal((batch, seq, k)).astype(np.float32)
    norm_w = (rng.random(k) + 0.5).astype(np.float32)
    weights = [t_ for arrays in (random_packed(rng, bits, n * d, k, 32) for n in (heads, kv_heads, kv_heads))
               for t_ in _args(bits, arrays)]
    qrot, krot = rotations(rng, batch, seq, d)
    common = [ms.Tensor(x), ms.Tensor(norm_w), ms.Tensor([1e-5], ms.float32), *weights, ms.Tensor(qrot),
              ms.Tensor(krot)]
    want_q, want_k, want_v = (o.asnumpy() for o in native.attention_input_q8_op(bits)(*common))
    old_k = rng.standard_normal((batch, kv_heads, t, d)).astype(np.float32)
    old_v = rng.standard_normal((batch, kv_heads, t, d)).astype(np.float32)
    new_k, new_v = old_k.copy(), old_v.copy()
    new_k[:, :, slots], new_v[:, :, slots] = want_k, want_v
    op = native.attention_input_cache_q8_op(bits)
    position = ms.Tensor(np.array(slots, np.int64))

    def storage():
        return (ms.Parameter(ms.Tensor(old_k.copy()), name="key", requires_grad=False),
                ms.Parameter(ms.Tensor(old_v.copy()), name="value", requires_grad=False))

    key, value = storage()
    q = op(*common, key, value, position).asnumpy()
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(key.asnumpy(), new_k)
    np.testing.assert_array_equal(value.asnumpy(), new_v)

    key, value = storage()

    class Step(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.key, self.value = key, value

        def construct(self, *inputs):
            before = self.key * 1.0
            q = op(*inputs, self.key, self.value, position)
            return before, q, self.key * 1.0, self.value * 1.0

    before, q, after_k, after_v = ms.jit(Step().construct)(*common)
    np.testing.assert_array_equal(before.asnumpy(), old_k)
    np.testing.assert_array_equal(q.asnumpy(), want_q)
    np.testing.assert_array_equal(after_k.asnumpy(), new_k)
    np.testing.assert_array_equal(after_v.asnumpy(), new_v)
    np.testing.assert_array_equal(key.asnumpy(), new_k)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("batch, seq, heads, kv_heads, d, k, n, cache, mask_shape", [
    (1, 1, 9, 3, 64, 576, 1536, 128, (1, 1, 1, 128)),   # SmolLM2's decode step
    (2, 2, 4, 2, 32, 128, 96, 16, (2, 1, 2, 16)),
    (1, 1, 2, 2, 64, 128, 64, 9, (1, 2, 1, 9)),
])
def test_attention_output_mlp_kernel_equals_the_separate_kernels(bits, batch, seq, heads, kv_heads, d, k, n, cache,
                                                                 mask_shape):
    rng = np.random.default_rng(bits + 3 * heads + cache)
    q = rng.standard_normal((batch, heads, seq, d)).astype(np.float32) * 0.3
    keys = rng.standard_normal((batch, kv_heads, cache, d)).astype(np.float32)
    values = rng.standard_normal((batch, kv_heads, cache, d)).astype(np.float32)
    mask = np.where(rng.random(mask_shape) < 0.3, -1e9, 0.0).astype(np.float32)
    mask[..., 0] = 0.0
    residual = rng.standard_normal((batch, seq, k)).astype(np.float32)
    norm_w = (rng.random(k) + 0.5).astype(np.float32)
    wo = random_packed(rng, bits, k, heads * d, 32)
    gate, up, down = (random_packed(rng, bits, n, k, 32), random_packed(rng, bits, n, k, 32),
                      random_packed(rng, bits, k, n, 32))
    eps = ms.Tensor([1e-5], ms.float32)
    out = native.attention_output_mlp_q8_op(bits)(
        ms.Tensor(q), ms.Tensor(keys), ms.Tensor(values), ms.Tensor(mask), *_args(bits, wo), ms.Tensor(residual),
        ms.Tensor(norm_w), eps, *_args(bits, gate), *_args(bits, up), *_args(bits, down)).asnumpy()
    assert out.shape == (batch, seq, k) and np.isfinite(out).all()
    # the separate route: DecodeAttention (scale 1), head merge, q8 o product, add, RMSNorm, q8 MLP + residual
    att, _ = native.decode_attention_op()(ms.Tensor(q.reshape(batch, kv_heads, -1, d)), ms.Tensor(keys),
                                          ms.Tensor(values), ms.Tensor(mask), ms.Tensor([1.0], ms.float32))
    merged = att.asnumpy().reshape(batch, heads, seq, d).swapaxes(1, 2).reshape(batch * seq, heads * d)
    o = native.quantized_linear_q8_op(bits)(ms.Tensor(np.ascontiguousarray(merged)), *_args(bits, wo)).asnumpy()
    r = residual.reshape(batch * seq, k) + o
    normed = native.rms_norm_op()(ms.Tensor(r), ms.Tensor(norm_w), eps)
    want = native.mlp_residual_q8_op(bits)(normed, *_args(bits, gate), *_args(bits, up), *_args(bits, down),
                                           ms.Tensor(r)).asnumpy()
    np.testing.assert_array_equal(out, want.reshape(batch, seq, k))
    # the attention part against float64 (the rest is covered by the separate kernels' own float64 tests)
    q64 = q.astype(np.float64).reshape(batch, kv_heads, heads // kv_heads, seq, d)
    scores = np.einsum("bgrsd,bgtd->bgrst", q64, keys.astype(np.float64))
    scores = scores + np.broadcast_to(mask, (batch, heads, seq, cache)).reshape(scores.shape)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    ref = np.einsum("bgrst,bgtd->bgrsd", weights, values.astype(np.float64)).reshape(batch, heads, seq, d)
    np.testing.assert_allclose(merged, ref.swapaxes(1, 2).reshape(batch * seq, -1), rtol=1e-5, atol=1e-5)


# --- dispatch and models ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama_no_bias(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True, initializer_range=0.3)
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama_no_bias")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


IDS = np.array([[5, 17, 42, 8, 77, 3, 61]], np.int64)


def quantized(path, weights):
    return LlamaForCausalLM.from_pretrained(path, quantization_config=QuantoConfig(weights=weights,
                                                                                   modules_to_not_convert=[]))


def test_layers_are_flagged_only_when_the_whole_layer_is_packed_alike(tiny_llama_no_bias, tmp_path):
    model = quantized(tiny_llama_no_bias, "int4")
    assert all(layer.fuse_quantized_layer for layer in model.model.layers)
    config = QuantoConfig(weights="int8", modules_to_not_convert=["lm_head", "o_proj"])
    partial = LlamaForCausalLM.from_pretrained(tiny_llama_no_bias, quantization_config=config)
    assert not any(layer.fuse_quantized_layer for layer in partial.model.layers)
    assert partial.model.layers[0].mlp.fuse_quantized_mlp and partial.model.layers[0].self_attn.fuse_quantized_qkv
    assert not any(layer.fuse_quantized_layer for layer in LlamaForCausalLM.from_pretrained(tiny_llama_no_bias)
                   .model.layers)
    # attention biases: the kernels take none
    config = transformers.LlamaConfig.from_pretrained(tiny_llama_no_bias)
    config.attention_bias = True
    import torch

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    biased = quantized(str(tmp_path), "int4")
    assert biased.model.layers[0].self_attn.fuse_quantized_qkv
    assert not any(layer.fuse_quantized_layer for layer in biased.model.layers)


def test_dispatch_rules(tiny_llama_no_bias, monkeypatch):
    model = quantized(tiny_llama_no_bias, "int4")
    layer = model.model.layers[0]
    cfg = model.config
    d = cfg.hidden_size // cfg.num_attention_heads
    rng = np.random.default_rng(0)

    def args(batch=1, seq=1, dtype=np.float32, mask_shape=None, rot_batch=1):
        x = ms.Tensor(rng.standard_normal((batch, seq, cfg.hidden_size)).astype(dtype))
        rot = ms.Tensor(np.broadcast_to(np.eye(d, dtype=np.float32), (rot_batch, seq, d, d)).copy())
        mask = ms.Tensor(np.zeros(mask_shape or (batch, 1, seq, 16), np.float32))
        return x, (rot, rot), mask

    assert Q.fused_decoder_layer_ok(layer, *args())
    assert Q.fused_decoder_layer_ok(layer, *args(batch=2, seq=2, rot_batch=2))
    assert not Q.fused_decoder_layer_ok(layer, *args(seq=Q.DIRECT_ROWS + 1))  # prefill
    assert not Q.fused_decoder_layer_ok(layer, *args(dtype=np.float16))
    assert not Q.fused_decoder_layer_ok(layer, *args(mask_shape=(1, 3, 1, 16)))  # a mask the kernel does not take
    x, rot, _ = args()
    assert not Q.fused_decoder_layer_ok(layer, x, rot, None)
    assert not Q.fused_decoder_layer_ok(layer, *args(), output_attentions=True)
    layer.set_train(True)
    assert not Q.fused_decoder_layer_ok(layer, *args())
    layer.set_train(False)
    monkeypatch.setenv(Q.ACTIVATIONS_ENV, "float")
    assert not Q.fused_decoder_layer_ok(layer, *args())
    monkeypatch.delenv(Q.ACTIVATIONS_ENV)
    monkeypatch.setattr(F, "_FULLY_MASKED_ROWS", "sdpa")
    assert not Q.fused_decoder_layer_ok(layer, *args())
    monkeypatch.undo()
    layer.fuse_quantized_layer = False
    assert not Q.fused_decoder_layer_ok(layer, *args())
    # the cache written inside the call: float32 storage of the layer's geometry, int64 slots, one per position
    x = args(batch=2, seq=2)[0]
    store = ms.Tensor(np.zeros((2, cfg.num_key_value_heads, 16, d), np.float32))
    slots = ms.Tensor(np.array([3, 4], np.int64))
    mask = ms.Tensor(np.zeros((2, 1, 2, 16), np.float32))
    assert Q.fused_cache_write_ok(layer, x, store, store, slots, mask)
    assert not Q.fused_cache_write_ok(layer, x, store, store, None, mask)
    assert not Q.fused_cache_write_ok(layer, x, store, store, slots.astype(ms.int32), mask)
    assert not Q.fused_cache_write_ok(layer, x, store, store, slots[:1], mask)
    assert not Q.fused_cache_write_ok(layer, x, store.astype(ms.float16), store.astype(ms.float16), slots, mask)
    assert not Q.fused_cache_write_ok(layer, x, store[:1], store[:1], slots, mask)
    assert not Q.fused_cache_write_ok(layer, x, store, store, slots, mask[..., :8])


@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_decode_step_fused_equals_the_unfused_q8_route(tiny_llama_no_bias, weights, monkeypatch):
    """One cached decode step in PyNative (the fused route runs wherever native ops are allowed; a DynamicCache:
    the cache written by MindSpore's ops between the two calls), and greedy generate() (compiled steps, a
    StaticCache: written inside the first call) of a model with and without the flag: the same tokens and the same
    logits up to float32 rounding."""
    calls = []
    fused_input = Q.fused_attention_input
    monkeypatch.setattr(Q, "fused_attention_input", lambda *a: calls.append(1) or fused_input(*a))
    fused, plain = quantized(tiny_llama_no_bias, weights), quantized(tiny_llama_no_bias, weights)
    for layer in plain.model.layers:
        layer.fuse_quantized_layer = False
    ids, nxt = ms.Tensor(IDS), ms.Tensor(np.array([[11]], np.int64))
    steps = []
    for model in (fused, plain):
        past = model(ids, use_cache=True).past_key_values
        steps.append(model(nxt, past_key_values=past, use_cache=True).logits.asnumpy())
    assert len(calls) == fused.config.num_hidden_layers  # the decode step only (not the 7-token prefill)
    # in PyNative the separate route's norms and attention are MindSpore's kernels (native ones in graphs only)
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-5, atol=1e-5 * np.abs(steps[1]).max())
    monkeypatch.undo()
    outs = [model.generate(ids, max_new_tokens=12, do_sample=False, return_dict_in_generate=True,
                           output_logits=True) for model in (fused, plain)]
    np.testing.assert_array_equal(outs[0].sequences.asnumpy(), outs[1].sequences.asnumpy())
    assert len(set(outs[0].sequences.asnumpy()[0, IDS.shape[1]:].tolist())) > 2  # not a degenerate repetition
    for a, b in zip(outs[0].logits, outs[1].logits):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-6, atol=1e-6 * np.abs(b.asnumpy()).max())


def test_left_padded_batch_and_beam_search_fused_equal_unfused(tiny_llama_no_bias):
    """Batch 2 with left padding (per-row positions: rotations (B, 1, D, D), a (B, 1, 1, T) mask) and beam search
    over 2 x 2 rows (the cache reordered between steps): the fused layers give the unfused route's tokens."""
    fused, plain = quantized(tiny_llama_no_bias, "int4"), quantized(tiny_llama_no_bias, "int4")
    for layer in plain.model.layers:
        layer.fuse_quantized_layer = False
    ids = ms.Tensor(np.array([[0, 0, 5, 17, 42, 8], [3, 9, 11, 60, 2, 7]], np.int64))
    mask = ms.Tensor(np.array([[0, 0, 1, 1, 1, 1], [1] * 6], np.int64))
    for kwargs in ({}, {"num_beams": 2}):
        outs = [model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                               **kwargs).asnumpy() for model in (fused, plain)]
        np.testing.assert_array_equal(outs[0], outs[1])
