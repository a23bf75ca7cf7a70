"""CPM-Ant parity with torch `transformers` on tiny random checkpoints (tests/parity.py): left-padded batches (pad id
0, the padding CPM-Ant derives from the ids), the prompt prefix and segment position bias (relative distances past
the exact buckets), gradients, and greedy generation with the cache fed the whole sequence."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import AutoModel, AutoModelForCausalLM, CpmAntForCausalLM, CpmAntModel
from tests import parity
from tests.models.head_parity import (
    assert_gradients_match_torch,
    assert_matches_torch,
    checkpoint_factory,
    left_padded_batch,
)

VOCAB = 99
# init_std 0.1: the default 1.0 gives every weight unit variance, so scores are in the hundreds and the softmax
# saturates (fp32 rounding then dominates the comparison). 8 position buckets (4 per direction, exact below 2): a 12-token sequence + 3 prompts reaches the log buckets
BASE = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, dim_head=8, dim_ff=37, num_hidden_layers=2,
            position_bias_num_buckets=8, position_bias_max_distance=16, prompt_types=4, prompt_length=3,
            segment_types=4, dropout_p=0.0, init_std=0.1)


def make_config(**overrides):
    return transformers.CpmAntConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


def batch(seed=0, seq_len=12):
    ids, mask, labels = left_padded_batch(VOCAB, seed=seed, seq_len=seq_len, left_pad=4)
    return ids, mask.astype(bool), labels


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_matches_torch_left_padded(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CpmAntForCausalLM)
    ids, real, labels = batch()
    inputs = dict(input_ids=ids, labels=labels, use_cache=False, output_hidden_states=True, output_attentions=True)
    assert_matches_torch(CpmAntForCausalLM, torch_model, path, inputs,
                         ["logits", "loss", "hidden_states", "attentions"], mode, rows=real)


def test_base_model_matches_torch(checkpoints):
    torch_model, path = checkpoints(transformers.CpmAntModel)
    ids, real, _ = batch(seed=1)
    assert_matches_torch(CpmAntModel, torch_model, path, dict(input_ids=ids, use_cache=False),
                         ["last_hidden_state"], rows=real)


def test_fp16_close_to_torch_fp32(checkpoints):
    """fp16 vs torch fp32 within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints(transformers.CpmAntForCausalLM)
    ids, real, _ = batch(seed=2)
    inputs = dict(input_ids=ids, use_cache=False)
    ref = parity.run_torch(torch_model, inputs).logits
    torch_fp16 = parity.run_torch(transformers.CpmAntForCausalLM.from_pretrained(path, dtype=torch.float16).eval(),
                                  inputs).logits
    ours = parity.run_ours(parity.load_ours(CpmAntForCausalLM, path, dtype="float16"), inputs).logits
    error, torch_error = parity.rel_error(ours, ref, real), parity.rel_error(torch_fp16, ref, real)
    assert error <= max(parity.FP16_BAR, 1.25 * torch_error), (error, torch_error)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_gradients_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.CpmAntForCausalLM)
    ids, _, labels = batch(seed=3)
    assert_gradients_match_torch(CpmAntForCausalLM, torch_model, path,
                                 dict(input_ids=ids, labels=labels, use_cache=False), mode)


@pytest.mark.parametrize("rows", [1, 2])
def test_greedy_generation_matches_torch(checkpoints, rows):
    torch_model, path = checkpoints(transformers.CpmAntForCausalLM)
    ours = parity.load_ours(CpmAntForCausalLM, path)
    ids = batch(seed=5, seq_len=7)[0][:rows]
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor(ids), do_sample=False, max_new_tokens=8, pad_token_id=0).numpy()
    out = parity.to_numpy(ours.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=0))
    assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"


def test_cached_step_matches_torch(checkpoints):
    """A step on a cache: CPM-Ant attends bidirectionally over the whole sequence, so a cached step is not the full
    forward's last row; it is compared with torch's own cached step."""
    import mindspore as ms

    torch_model, path = checkpoints(transformers.CpmAntForCausalLM)
    ours = parity.load_ours(CpmAntForCausalLM, path)
    ids = batch(seed=6)[0]
    first = ours(input_ids=ms.Tensor(ids[:, :-1]), use_cache=True)
    step = ours(input_ids=ms.Tensor(ids), past_key_values=first.past_key_values, use_cache=True)
    with torch.no_grad():
        ref_first = torch_model(input_ids=torch.tensor(ids[:, :-1]), use_cache=True)
        ref = torch_model(input_ids=torch.tensor(ids), cache=ref_first.cache, use_cache=True)
    assert step.logits.shape == ref.logits.shape == (2, 1, VOCAB)
    parity.assert_close({"logits": parity.rel_error(step.logits, ref.logits)}, parity.FP32_BAR, "cached step")


def test_auto_classes_pick_cpmant(checkpoints):
    _, path = checkpoints(transformers.CpmAntForCausalLM)
    assert type(AutoModelForCausalLM.from_pretrained(path)) is CpmAntForCausalLM
    assert type(AutoModel.from_pretrained(path)) is CpmAntModel
