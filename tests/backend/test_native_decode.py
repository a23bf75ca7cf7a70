"""generate()'s one-token steps of a quantized Llama as native kernel calls (backend/native_decode.py): the same
logits, bit for bit, as the compiled MindSpore graph they replace (the same kernels on the same inputs), through
prefill and decoding, left padding, beam search and weights changed between calls; which models get it."""

import mindspore as ms
import numpy as np
import pytest
from transformers import QuantoConfig

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.backend import native, native_decode
from mindone.transformers.generation import utils as generation_utils
from tests.backend.test_quantization_fused_layer import quantized, tiny_llama_no_bias  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")




def greedy_steps(step, ids, mask, positions, slots, steps):
    """Prefill `ids` (B, C) through `step` at `slots`, then `steps` greedy one-token steps; the logits of each."""
    batch = ids.shape[0]
    out = [step(ms.Tensor(ids), mask, ms.Tensor(positions), ms.Tensor(slots)).asnumpy()]
    token = out[-1][:, -1].argmax(-1)[:, None].astype(np.int64)
    position, slot = positions[:, -1:] + 1, int(slots[-1]) + 1
    for _ in range(steps):
        out.append(step(ms.Tensor(token), mask, ms.Tensor(position), ms.Tensor(np.array([slot], np.int64)))
                   .asnumpy())
        token = out[-1][:, -1].argmax(-1)[:, None].astype(np.int64)
        position, slot = position + 1, slot + 1
    return out


@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_native_steps_equal_the_compiled_graph_bit_for_bit(tiny_llama_no_bias, weights):
    model = quantized(tiny_llama_no_bias, weights)
    cache_len = 32
    _, step = generation_utils.compiled_decode_step(model, 2, cache_len, ms.float32)
    assert isinstance(step, native_decode.NativeDecodeStep)
    # left padding: row 0's first two slots masked, its positions start at 0 in slot 2
    ids = np.array([[0, 0, 5, 17, 42, 8], [3, 9, 11, 60, 2, 7]], np.int64)
    mask = np.ones((2, cache_len), np.int64)
    mask[0, :2] = 0
    positions = np.array([[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]], np.int64)
    slots = np.arange(6, dtype=np.int64)
    native_logits = greedy_steps(step, ids, ms.Tensor(mask), positions, slots, 12)
    compiled_logits = greedy_steps(step.compiled_step, ids, ms.Tensor(mask), positions, slots, 12)
    assert len({int(l[0, -1].argmax()) for l in native_logits}) > 2  # not a degenerate repetition
    for ours, graph in zip(native_logits, compiled_logits):
        np.testing.assert_array_equal(ours, graph)


def test_generate_equals_the_compiled_graph(tiny_llama_no_bias, monkeypatch):
    """Greedy, left-padded batch and beam search (the cache reordered in place between steps): the tokens and the
    logits of generate() with the native steps and with MINDONE_TRANSFORMERS_NATIVE_DECODE=0."""
    model = quantized(tiny_llama_no_bias, "int4")
    ids = ms.Tensor(np.array([[0, 0, 5, 17, 42, 8], [3, 9, 11, 60, 2, 7]], np.int64))
    mask = ms.Tensor(np.array([[0, 0, 1, 1, 1, 1], [1] * 6], np.int64))
    runs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(native_decode.ENV, flag)
        generation_utils.forget_compiled_steps(model)
        runs[flag] = [model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                                     return_dict_in_generate=True, output_logits=True, **kwargs)
                      for kwargs in ({}, {"num_beams": 2})]
        steps = generation_utils._COMPILED_STEPS[model]
        assert all(isinstance(step, native_decode.NativeDecodeStep) == (flag == "1") for _, step in steps.values())
    for ours, graph in zip(runs["1"], runs["0"]):
        np.testing.assert_array_equal(ours.sequences.asnumpy(), graph.sequences.asnumpy())
        for a, b in zip(ours.logits, graph.logits):
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_weights_set_between_calls_are_read(tiny_llama_no_bias, monkeypatch):
    """A Parameter given new data after a generate() call (its memory moved) is what the next call's steps read."""
    model = quantized(tiny_llama_no_bias, "int8")
    ids = ms.Tensor(np.array([[5, 17, 42, 8]], np.int64))
    before = model.generate(ids, max_new_tokens=8, do_sample=False).asnumpy()
    scale = model.lm_head.weight_scale
    rng = np.random.default_rng(0)
    scale.set_data(ms.Tensor((scale.asnumpy() * rng.uniform(0.2, 3.0, scale.shape)).astype(scale.asnumpy().dtype)))
    ours = model.generate(ids, max_new_tokens=8, do_sample=False, return_dict_in_generate=True, output_logits=True)
    monkeypatch.setenv(native_decode.ENV, "0")
    generation_utils.forget_compiled_steps(model)
    graph = model.generate(ids, max_new_tokens=8, do_sample=False, return_dict_in_generate=True, output_logits=True)
    np.testing.assert_array_equal(ours.sequences.asnumpy(), graph.sequences.asnumpy())
    for a, b in zip(ours.logits, graph.logits):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert not np.array_equal(before, ours.sequences.asnumpy())  # the new scales changed the answer


def test_which_models_get_native_steps(tiny_llama_no_bias, monkeypatch):
    def step_type(model):
        generation_utils.forget_compiled_steps(model)
        return type(generation_utils.compiled_decode_step(model, 1, 16, ms.float32)[1])

    assert step_type(quantized(tiny_llama_no_bias, "int4")) is native_decode.NativeDecodeStep
    assert step_type(LlamaForCausalLM.from_pretrained(tiny_llama_no_bias)) is generation_utils._CompiledStep  # float32
    # the output layer kept in float: MindSpore's graph runs its product
    partial = LlamaForCausalLM.from_pretrained(tiny_llama_no_bias, quantization_config=QuantoConfig(weights="int8"))
    assert step_type(partial) is generation_utils._CompiledStep
    model = quantized(tiny_llama_no_bias, "int8")
    monkeypatch.setenv(native_decode.ENV, "0")
    assert step_type(model) is generation_utils._CompiledStep
    monkeypatch.setenv(native_decode.ENV, "1")
    monkeypatch.setenv("MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS", "float")  # the float-activation kernels are not fused
    assert step_type(model) is generation_utils._CompiledStep


def test_bad_token_id_and_position_name_the_problem(tiny_llama_no_bias):
    model = quantized(tiny_llama_no_bias, "int4")
    _, step = generation_utils.compiled_decode_step(model, 1, 16, ms.float32)
    mask = ms.Tensor(np.ones((1, 16), np.int64))
    slot = ms.Tensor(np.array([3], np.int64))
    with pytest.raises(IndexError, match="token id 99 is out of range for the embedding of 99 rows"):
        step(ms.Tensor(np.array([[99]], np.int64)), mask, ms.Tensor(np.array([[3]], np.int64)), slot)
    with pytest.raises(IndexError, match="cache position 16 is outside the static cache's 16 slots"):
        step(ms.Tensor(np.array([[5]], np.int64)), mask, ms.Tensor(np.array([[3]], np.int64)),
             ms.Tensor(np.array([16], np.int64)))


def test_a_plan_that_cannot_be_built_falls_back_to_the_compiled_graph(tiny_llama_no_bias, monkeypatch, caplog):
    model = quantized(tiny_llama_no_bias, "int4")

    def refuse(*args):
        raise RuntimeError("no view of the storage")

    monkeypatch.setattr(native_decode, "_Plan", refuse)
    ids = ms.Tensor(np.array([[5, 17, 42, 8]], np.int64))
    with caplog.at_level("WARNING", logger=native_decode.__name__):
        out = model.generate(ids, max_new_tokens=6, do_sample=False).asnumpy()
    assert "native decode step unavailable, decoding with the compiled graph: no view of the storage" in caplog.text
    monkeypatch.undo()
    generation_utils.forget_compiled_steps(model)
    np.testing.assert_array_equal(out, model.generate(ids, max_new_tokens=6, do_sample=False).asnumpy())


def test_a_mask_shorter_than_the_cache_counts_its_missing_slots_as_ones(tiny_llama_no_bias):
    """As `create_causal_mask` pads the 2-D mask: the compiled graph and the native steps agree when the mask covers
    fewer slots than the cache (the causal rule hides the slots past the position)."""
    model = quantized(tiny_llama_no_bias, "int8")
    _, step = generation_utils.compiled_decode_step(model, 1, 16, ms.float32)
    ids, positions, slots = np.array([[5, 17, 42, 8]], np.int64), np.arange(4)[None], np.arange(4)
    mask = ms.Tensor(np.array([[0, 1, 1, 1, 1, 1, 1, 1, 1, 1]], np.int64))  # 10 of 16 slots, the first masked
    ours = greedy_steps(step, ids, mask, positions, slots, 8)
    graph = greedy_steps(step.compiled_step, ids, mask, positions, slots, 8)
    for a, b in zip(ours, graph):
        np.testing.assert_array_equal(a, b)
