"""generate() features added for HF 5 completeness, against torch `transformers` on tiny random Llamas: prompt lookup
and assistant-model decoding (same tokens as greedy, fewer target forwards), classifier-free guidance, top-h,
encoder n-gram bans and watermarking configs."""

import functools

import numpy as np
import pytest
import torch
import transformers
import transformers.generation.logits_process as hf_processors

from tests.generation.helpers import tiny_llama_pair
from tests.generation.test_logits_process import assert_scores_equal
from tests.generation.test_utils import assert_same_tokens, ids_of, torch_generate


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    made = {}

    def get(seed, **overrides):
        key = (seed, tuple(sorted(overrides.items())))
        if key not in made:
            made[key] = tiny_llama_pair(tmp_path_factory.mktemp(f"llama{seed}"), seed=seed, **overrides)
        return made[key]

    return get


class CountForwards:
    """Counts the forward calls of one of our models while in the `with` block."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        original = self.model.construct

        @functools.wraps(original)
        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        self.model.construct = counted
        return self

    def __exit__(self, *exc):
        del self.model.construct


REPETITIVE = np.tile(np.array([[5, 9, 14, 30, 7, 41]], np.int64), (1, 4))


def greedy_calls(ours, ids, **kwargs):
    with CountForwards(ours) as count:
        out = ours.generate(ids, do_sample=False, cache_implementation="dynamic", **kwargs)
    return out, count.calls


def test_prompt_lookup_matches_greedy_with_fewer_forwards(models):
    torch_model, ours = models(1)
    ref = torch_generate(torch_model, REPETITIVE, max_new_tokens=16, do_sample=False)
    plain, plain_calls = greedy_calls(ours, REPETITIVE, max_new_tokens=16)
    with CountForwards(ours) as count:
        out = ours.generate(REPETITIVE, max_new_tokens=16, do_sample=False, prompt_lookup_num_tokens=5)
    assert_same_tokens(plain, ref)
    assert_same_tokens(out, ref)
    assert plain_calls == ids_of(plain).shape[1] - REPETITIVE.shape[1]  # one forward per new token
    assert count.calls < plain_calls, f"prompt lookup used {count.calls} forwards, greedy {plain_calls}"


@pytest.mark.parametrize("assistant_seed, schedule", [(1, "constant"), (2, "heuristic")])
def test_assistant_model_matches_greedy_with_fewer_forwards(models, assistant_seed, schedule):
    torch_model, ours = models(1)
    # seed 1 again: a second copy of the target, so every draft is accepted (and its forwards are not counted)
    _, assistant = models(assistant_seed, num_hidden_layers=1) if assistant_seed != 1 else \
        models(1, use_cache=True)
    ids = REPETITIVE[:, :9]
    ref = torch_generate(torch_model, ids, max_new_tokens=14, do_sample=False)
    with CountForwards(ours) as count:
        out = ours.generate(ids, max_new_tokens=14, do_sample=False, assistant_model=assistant,
                            num_assistant_tokens=4, num_assistant_tokens_schedule=schedule,
                            assistant_confidence_threshold=0.0 if assistant_seed == 1 else 0.4)
    assert_same_tokens(out, ref)
    if assistant_seed == 1:  # the model as its own assistant: every draft is accepted
        assert count.calls <= 14 // 5 + 1, count.calls
    else:
        assert count.calls <= 14


def test_assistant_model_matches_torch_assisted_generation(models):
    torch_model, ours = models(1)
    torch_assistant, assistant = models(2, num_hidden_layers=1)
    ids = REPETITIVE[:, :7]
    ref = torch_generate(torch_model, ids, max_new_tokens=10, do_sample=False, assistant_model=torch_assistant)
    out = ours.generate(ids, max_new_tokens=10, do_sample=False, assistant_model=assistant)
    assert_same_tokens(out, ref)


def test_guidance_scale_with_negative_prompt_matches_torch(models):
    torch_model, ours = models(0)
    ids = REPETITIVE[:, :8]
    negative = np.array([[3, 17, 22]], np.int64)
    # torch 5.25's unconditional branch only runs correctly without a cache; the tokens do not depend on caching
    ref = torch_generate(torch_model, ids, max_new_tokens=8, do_sample=False, guidance_scale=1.8,
                         negative_prompt_ids=torch.tensor(negative), use_cache=False)
    out = ours.generate(ids, max_new_tokens=8, do_sample=False, guidance_scale=1.8, negative_prompt_ids=negative,
                        cache_implementation="dynamic")
    assert_same_tokens(out, ref)
    plain = ours.generate(ids, max_new_tokens=8, do_sample=False, cache_implementation="dynamic")
    assert not np.array_equal(ids_of(out), ids_of(plain)), "guidance changed nothing: the test cannot fail"


def test_guidance_scale_without_negative_prompt_matches_torch(models):
    torch_model, ours = models(1)
    ids = REPETITIVE[:, :6]
    ref = torch_generate(torch_model, ids, max_new_tokens=6, do_sample=False, guidance_scale=2.5, use_cache=False)
    out = ours.generate(ids, max_new_tokens=6, do_sample=False, guidance_scale=2.5, use_cache=False)
    assert_same_tokens(out, ref)


def test_encoder_no_repeat_ngram_size_matches_torch(models):
    torch_model, ours = models(1)
    ref = torch_generate(torch_model, REPETITIVE[:, :12], max_new_tokens=10, do_sample=False,
                         encoder_no_repeat_ngram_size=2)
    out = ours.generate(REPETITIVE[:, :12], max_new_tokens=10, do_sample=False, encoder_no_repeat_ngram_size=2,
                        cache_implementation="dynamic")
    assert_same_tokens(out, ref)


@pytest.mark.parametrize("config", [
    transformers.WatermarkingConfig(bias=6.0),
    transformers.WatermarkingConfig(bias=6.0, seeding_scheme="selfhash", context_width=2),
    {"ngram_len": 3, "keys": [11, 22, 33], "context_history_size": 8},
])
def test_watermarking_config_matches_torch(models, config):
    torch_model, ours = models(0)
    ids = REPETITIVE[:, :6]
    kwargs = dict(max_new_tokens=8, do_sample=False, watermarking_config=config)
    ref = torch_generate(torch_model, ids, **kwargs)
    out = ours.generate(ids, cache_implementation="dynamic", **kwargs)
    assert_same_tokens(out, ref)


def test_top_h_in_generate_filters_each_step_like_torch(models):
    _, ours = models(0)
    out = ours.generate(REPETITIVE[:, :6], max_new_tokens=5, do_sample=True, top_h=0.3, top_k=0,
                        return_dict_in_generate=True, output_scores=True, output_logits=True,
                        cache_implementation="dynamic")
    reference = hf_processors.TopHLogitsWarper(0.3)
    for scores, logits in zip(out.scores, out.logits):
        assert_scores_equal(scores, reference(None, torch.tensor(logits.asnumpy())))
    assert any(np.isfinite(s.asnumpy()).sum() > 1 for s in out.scores), "top-h kept one token: the test is weak"


def test_assistant_with_another_tokenizer_is_refused(models):
    _, ours = models(1)
    with pytest.raises(ValueError, match="assistant_tokenizer"):
        ours.generate(REPETITIVE[:, :5], max_new_tokens=3, assistant_model=ours, assistant_tokenizer=object(),
                      tokenizer=object())
