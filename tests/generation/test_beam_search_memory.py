"""Beam search runs in memory that does not grow with the number of steps (beyond a growing cache itself) and
compiles nothing per step; its tokens equal torch's.

Memory is observed from inside generate(): a pass-through logits processor counts the live MindSpore tensors (and
their bytes) at an early and at the last step. Issue 18: re-indexing the cache every step with `x[beam_idx]` kept
every earlier version alive (MindSpore's indexing result references its input), so an encoder-decoder model's
cross-attention cache gained one full copy per step (Whisper tiny.en, 5 beams: > 24 GB at 120 tokens).
"""

import gc

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import BartForConditionalGeneration
from mindone.transformers.generation import LogitsProcessor
from tests import parity
from tests.generation.helpers import left_padded_batch, tiny_llama_pair

NEW_TOKENS = 24
EARLY_STEP = 4


def _live_tensors():
    gc.collect()
    return [o for o in gc.get_objects() if issubclass(type(o), ms.Tensor)]


def _bytes(tensor):
    # from metadata only: reading `nbytes` of every tensor a long test session left alive once hung in CI
    return int(np.prod(tensor.shape, dtype=np.int64)) * ms.dtype_to_nptype(tensor.dtype)().itemsize


class LiveTensorProbe(LogitsProcessor):
    """Records (number, bytes) of the MindSpore tensors created since the probe was made and still alive at the
    given steps; leaves the scores unchanged. Tensors alive before (other tests' leftovers, the weights) are held
    in `before`, so their ids are not reused and they are never touched."""

    def __init__(self, steps):
        self.steps = set(steps)
        self.step = 0
        self.seen = {}
        self.before = {id(t): t for t in _live_tensors()}

    def __call__(self, input_ids, scores):
        self.step += 1
        if self.step in self.steps:
            live = [t for t in _live_tensors() if id(t) not in self.before]
            self.seen[self.step] = (len(live), sum(_bytes(t) for t in live))
        return scores


def assert_flat(probe, rows, cache_bytes_per_step=0):
    """Same number of live tensors; bytes grown by at most the cache's growth plus the running ids (int64) the
    processors see."""
    (early_count, early_bytes), (late_count, late_bytes) = probe.seen[EARLY_STEP], probe.seen[NEW_TOKENS]
    steps = NEW_TOKENS - EARLY_STEP
    assert late_count <= early_count, f"live tensors grew from {early_count} to {late_count} in {steps} steps"
    allowed = early_bytes + (cache_bytes_per_step + rows * 8) * steps
    assert late_bytes <= allowed, f"live tensor bytes grew from {early_bytes} to {late_bytes} in {steps} steps"


def torch_ids(model, ids, mask, **kwargs):
    with torch.no_grad():
        return model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs).numpy()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_llama_pair(tmp_path_factory.mktemp("llama"), seed=2, max_position_embeddings=256)


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    config = transformers.BartConfig(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                                     decoder_ffn_dim=37, max_position_embeddings=160, pad_token_id=1, bos_token_id=0,
                                     eos_token_id=2, decoder_start_token_id=2)
    torch_model = parity.torch_reference(transformers.BartForConditionalGeneration, config, seed=3)
    directory = parity.save_torch(torch_model, str(tmp_path_factory.mktemp("bart")))
    return torch_model, BartForConditionalGeneration.from_pretrained(directory, dtype="float32")


BEAMS = dict(num_beams=4, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_decoder_only_beam_search_memory_flat_and_tokens_equal_torch(llama, cache):
    torch_model, ours = llama
    ids, mask = left_padded_batch(7, batch_size=2, pads=(0, 3))
    probe = LiveTensorProbe([EARLY_STEP, NEW_TOKENS])
    out = ours.generate(ids, attention_mask=mask, cache_implementation=cache, logits_processor=[probe], **BEAMS)
    np.testing.assert_array_equal(out.asnumpy(), torch_ids(torch_model, ids, mask, **BEAMS))
    # a dynamic cache grows by one key and one value row per layer, beam and step
    config = ours.config
    head_dim = config.hidden_size // config.num_attention_heads
    growth = 0 if cache == "static" else \
        2 * config.num_hidden_layers * ids.shape[0] * 4 * config.num_key_value_heads * head_dim * 4
    assert_flat(probe, ids.shape[0] * 4, growth)


def test_encoder_decoder_beam_search_memory_flat_and_tokens_equal_torch(bart):
    torch_model, ours = bart
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 99, (2, 120)).astype(np.int64)
    ids[:, -1] = 2
    mask = np.ones_like(ids)
    mask[1, :20] = 0
    probe = LiveTensorProbe([EARLY_STEP, NEW_TOKENS])
    out = ours.generate(ids, attention_mask=mask, logits_processor=[probe], **BEAMS)
    np.testing.assert_array_equal(out.asnumpy(), torch_ids(torch_model, ids, mask, **BEAMS))
    config = ours.config
    # the decoder's self-attention cache grows by one key and one value row per layer, beam and step
    growth = 2 * config.decoder_layers * ids.shape[0] * 4 * config.d_model * 4
    assert_flat(probe, ids.shape[0] * 4, growth)


def test_compiled_beam_search_compiles_no_graph_per_step(llama):
    from mindspore.graph.api import ms_compile_cache  # MindSpore's set of compiled graph phases

    torch_model, ours = llama
    ids, mask = left_padded_batch(8, batch_size=2, pads=(0, 2))
    short = dict(BEAMS, max_new_tokens=6, min_new_tokens=6)
    ours.generate(ids, attention_mask=mask, cache_implementation="static", **short)  # compiles (same cache bucket)
    compiled = set(ms_compile_cache)
    out = ours.generate(ids, attention_mask=mask, cache_implementation="static", **BEAMS)
    assert set(ms_compile_cache) == compiled, f"graphs compiled while decoding: {set(ms_compile_cache) - compiled}"
    np.testing.assert_array_equal(out.asnumpy(), torch_ids(torch_model, ids, mask, **BEAMS))
