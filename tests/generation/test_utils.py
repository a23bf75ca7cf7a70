"""generate() against torch `transformers` on tiny random Llamas: same token ids, same scores, HF's errors."""

import threading

import numpy as np
import pytest
import torch
import transformers.generation.logits_process as hf_processors

import mindspore as ms
from mindone.transformers.generation import (
    LogitsProcessor,
    StoppingCriteria,
    SuppressTokensLogitsProcessor,
    TextIteratorStreamer,
)
from mindone.transformers.generation.utils import static_cache_length
from tests import parity
from tests.generation.helpers import EOS, PAD, VOCAB, left_padded_batch, tiny_llama_pair

PYNATIVE_CACHES = {
    "dynamic": dict(cache_implementation="dynamic"),
    "no_cache": dict(use_cache=False),
    "static_pynative": dict(cache_implementation="static", disable_compile=True),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    made = {}

    def get(seed):
        if seed not in made:
            made[seed] = tiny_llama_pair(tmp_path_factory.mktemp(f"llama{seed}"), seed=seed)
        return made[seed]

    return get


def torch_generate(model, ids, mask=None, **kwargs):
    with torch.no_grad():
        out = model.generate(torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask),
                             **kwargs)
    return out


def ids_of(out):
    return out.asnumpy() if isinstance(out, ms.Tensor) else out.numpy()


def assert_same_tokens(ours, ref):
    ours, ref = ids_of(ours), ids_of(ref)
    assert ours.shape == ref.shape, f"shape {ours.shape} != torch {ref.shape}\nours:\n{ours}\ntorch:\n{ref}"
    assert np.array_equal(ours, ref), f"ours:\n{ours}\ntorch:\n{ref}"


@pytest.mark.parametrize("cache", list(PYNATIVE_CACHES))
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_generate_matches_torch_left_padded_batch(models, seed, cache):
    torch_model, ours = models(seed)
    ids, mask = left_padded_batch(seed)
    ref = torch_generate(torch_model, ids, mask, max_new_tokens=10, do_sample=False)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, **PYNATIVE_CACHES[cache])
    assert_same_tokens(out, ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_generate_compiled_static_cache_matches_torch(models, seed):
    torch_model, ours = models(seed)
    ids, mask = left_padded_batch(seed)
    ref = torch_generate(torch_model, ids, mask, max_new_tokens=12, do_sample=False)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, cache_implementation="static")
    assert_same_tokens(out, ref)
    # a second call with another prompt length reuses the compiled step (same batch, same cache bucket)
    ref = torch_generate(torch_model, ids[:, 2:], mask[:, 2:], max_new_tokens=12, do_sample=False)
    out = ours.generate(ids[:, 2:], attention_mask=mask[:, 2:], max_new_tokens=12, do_sample=False)
    assert_same_tokens(out, ref)


def test_every_row_padded_and_a_fully_padded_row(models):
    torch_model, ours = models(0)
    ids, mask = left_padded_batch(3, batch_size=3, pads=(2, 4, 8))  # no full-length row, the last row is all padding
    ref = torch_generate(torch_model, ids, mask, max_new_tokens=8, do_sample=False)
    for cache in ("dynamic", "static"):
        out = ours.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, cache_implementation=cache)
        assert_same_tokens(out, ref)


BEAM_CASES = {
    "default": dict(num_beams=3),
    "return_2_length_penalty": dict(num_beams=4, num_return_sequences=2, length_penalty=0.5),
    "early_stopping_true": dict(num_beams=3, early_stopping=True, length_penalty=2.0),
    "early_stopping_never": dict(num_beams=2, early_stopping="never", length_penalty=1.5),
}


@pytest.mark.parametrize("case", list(BEAM_CASES))
def test_beam_search_matches_torch_with_scores(models, case):
    torch_model, ours = models(1)
    ids, mask = left_padded_batch(4, batch_size=2, pads=(0, 2))
    kwargs = dict(max_new_tokens=9, do_sample=False, return_dict_in_generate=True, output_scores=True,
                  eos_token_id=[EOS, 17], **BEAM_CASES[case])
    ref = torch_generate(torch_model, ids, mask, **kwargs)
    out = ours.generate(ids, attention_mask=mask, cache_implementation="dynamic", **kwargs)
    assert_same_tokens(out.sequences, ref.sequences)
    assert parity.rel_error(out.sequences_scores, ref.sequences_scores) <= 1e-5
    assert np.array_equal(out.beam_indices.asnumpy(), ref.beam_indices.numpy())
    assert len(out.scores) == len(ref.scores)
    assert max(parity.rel_error(a, b) for a, b in zip(out.scores, ref.scores)) <= 1e-5


def test_beam_search_compiled_static_cache_matches_torch(models):
    torch_model, ours = models(0)
    ids, mask = left_padded_batch(5, batch_size=2, pads=(1, 3))
    ref = torch_generate(torch_model, ids, mask, max_new_tokens=8, num_beams=3, do_sample=False)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=3, do_sample=False,
                        cache_implementation="static")
    assert_same_tokens(out, ref)


def test_eos_stops_rows_and_pads_finished_ones(models):
    torch_model, ours = models(0)
    ids, mask = left_padded_batch(6)
    free = torch_generate(torch_model, ids, mask, max_new_tokens=10, do_sample=False).numpy()
    eos = int(free[0, ids.shape[1] + 2])  # row 0 emits this at its third step
    kwargs = dict(max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    ref = torch_generate(torch_model, ids, mask, **kwargs)
    out = ours.generate(ids, attention_mask=mask, cache_implementation="dynamic", **kwargs)
    assert_same_tokens(out, ref)
    assert (ids_of(out)[0, ids.shape[1] + 3:] == PAD).all()


def test_return_dict_scores_and_logits_match_torch(models):
    torch_model, ours = models(1)
    ids, mask = left_padded_batch(7, batch_size=2, pads=(0, 3))
    kwargs = dict(max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, repetition_penalty=1.3, no_repeat_ngram_size=2)
    ref = torch_generate(torch_model, ids, mask, **kwargs)
    out = ours.generate(ids, attention_mask=mask, cache_implementation="dynamic", **kwargs)
    assert_same_tokens(out.sequences, ref.sequences)
    for ours_steps, ref_steps in ((out.scores, ref.scores), (out.logits, ref.logits)):
        assert len(ours_steps) == len(ref_steps) == 5
        for a, b in zip(ours_steps, ref_steps):
            a, b = a.asnumpy(), b.numpy()
            assert np.array_equal(np.isinf(a), np.isinf(b))
            finite = np.isfinite(b)
            assert np.abs(a[finite] - b[finite]).max() / np.abs(b[finite]).mean() <= 1e-5


def test_processors_and_min_new_tokens_in_generate_match_torch(models):
    torch_model, ours = models(0)
    ids, mask = left_padded_batch(8)
    kwargs = dict(max_new_tokens=8, do_sample=False, min_new_tokens=6, bad_words_ids=[[5], [7, 9]],
                  suppress_tokens=[11, 12], sequence_bias={(13,): 3.0}, eos_token_id=EOS)
    ref = torch_generate(torch_model, ids, mask, **kwargs)
    out = ours.generate(ids, attention_mask=mask, cache_implementation="dynamic", **kwargs)
    assert_same_tokens(out, ref)


def test_prompt_lookup_decoding_equals_greedy(models):
    torch_model, ours = models(1)
    ids = np.tile(np.array([[5, 9, 14, 30, 7]], np.int64), (1, 3))
    ref = torch_generate(torch_model, ids, max_new_tokens=12, do_sample=False)
    out = ours.generate(ids, max_new_tokens=12, do_sample=False, prompt_lookup_num_tokens=4)
    assert_same_tokens(out, ref)


def test_user_processor_and_stopping_criterion_are_applied(models):
    _, ours = models(0)
    ids, mask = left_padded_batch(9, batch_size=2, pads=(0, 1))

    class OnlyToken42(LogitsProcessor):
        def __call__(self, input_ids, scores):
            keep = np.full(scores.shape, -np.inf, np.float32)
            keep[:, 42] = 0
            return scores + ms.Tensor(keep)

    class StopAfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return ms.Tensor(np.full((input_ids.shape[0],), input_ids.shape[1] >= ids.shape[1] + 3))

    out = ids_of(ours.generate(ids, attention_mask=mask, max_new_tokens=10, logits_processor=[OnlyToken42()],
                               stopping_criteria=[StopAfterThree()], cache_implementation="dynamic"))
    assert out.shape == (2, ids.shape[1] + 3)
    assert (out[:, ids.shape[1]:] == 42).all()


def test_sampling_is_reproducible_with_a_seed(models):
    _, ours = models(0)
    ids, mask = left_padded_batch(10)
    runs = []
    for _ in range(2):
        ms.set_seed(1234)
        runs.append(ids_of(ours.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=20,
                                         top_p=0.9, temperature=0.8, cache_implementation="dynamic")))
    assert np.array_equal(runs[0], runs[1])
    ms.set_seed(99)
    other = ids_of(ours.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=20,
                                 top_p=0.9, temperature=0.8, cache_implementation="dynamic"))
    assert not np.array_equal(runs[0], other)


def test_sampling_follows_the_processed_distribution(models):
    """Chi-square test: first sampled token over 4000 identical prompts vs torch's top-k/top-p/temperature
    distribution on torch's logits."""
    torch_model, ours = models(1)
    n = 4000
    prompt = np.array([[3, 50, 61, 7, 99]], np.int64)
    with torch.no_grad():
        logits = torch_model(torch.tensor(prompt)).logits[:, -1, :].float()
    for proc in (hf_processors.TemperatureLogitsWarper(1.5), hf_processors.TopKLogitsWarper(12),
                 hf_processors.TopPLogitsWarper(0.85)):
        logits = proc(torch.tensor(prompt), logits)
    expected = torch.softmax(logits, -1).numpy()[0].astype(np.float64)
    ms.set_seed(7)
    out = ids_of(ours.generate(np.repeat(prompt, n, 0), max_new_tokens=1, do_sample=True, temperature=1.5, top_k=12,
                               top_p=0.85, cache_implementation="dynamic"))[:, -1]
    counts = np.bincount(out, minlength=VOCAB).astype(np.float64)
    support = expected > 0
    assert counts[~support].sum() == 0, "sampled a token the processors removed"
    chi2 = (((counts[support] - n * expected[support]) ** 2) / (n * expected[support])).sum()
    dof = int(support.sum()) - 1
    # 99.9% quantile of chi-square is below dof + 3.3 * sqrt(2 dof) + 10 for these small dof
    assert chi2 < dof + 3.3 * np.sqrt(2 * dof) + 10, f"chi2 {chi2:.1f} with {dof} degrees of freedom"


def test_beam_sampling_returns_valid_sequences(models):
    _, ours = models(0)
    ids, mask = left_padded_batch(11, batch_size=2, pads=(0, 2))
    ms.set_seed(3)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, num_beams=3,
                        num_return_sequences=2, return_dict_in_generate=True, output_scores=True,
                        cache_implementation="dynamic")
    seqs = ids_of(out.sequences)
    assert seqs.shape[0] == 4 and np.array_equal(seqs[:, :ids.shape[1]], np.repeat(ids, 2, 0))
    assert out.sequences_scores.shape == (4,)


def test_streamer_receives_prompt_then_every_token(models):
    _, ours = models(0)
    ids = np.array([[5, 6, 7, 8]], np.int64)

    class Collect:
        def __init__(self):
            self.values = []
            self.ended = False

        def put(self, value):
            self.values.append(np.asarray(value).reshape(-1).tolist())

        def end(self):
            self.ended = True

    collect = Collect()
    out = ids_of(ours.generate(ids, max_new_tokens=5, streamer=collect, cache_implementation="dynamic"))
    assert collect.values[0] == [5, 6, 7, 8] and collect.ended
    assert sum(collect.values[1:], []) == out[0, 4:].tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_return_sequences=3), "num_return_sequences"),
    (dict(num_beams=2, num_return_sequences=3), r"has to be smaller or equal to `num_beams`"),
    (dict(max_new_tokens=0), "`max_new_tokens` must be greater than 0"),
    (dict(foo=1), r"model_kwargs` are not used by the model: \['foo'\]"),
    (dict(do_sample=True, temperature=0.0), "strictly positive float"),
    (dict(num_beams=2, streamer=object()), "cannot be used with beam search"),
    (dict(stop_strings="x"), "could not locate a tokenizer"),
    (dict(max_length=3), "Input length of input_ids is 4"),
    (dict(cache_implementation="offloaded"), "cache_implementation='offloaded' is not supported"),
])
def test_bad_generate_arguments_raise_like_hf(models, kwargs, message):
    _, ours = models(0)
    with pytest.raises(ValueError, match=message):
        ours.generate(np.array([[5, 6, 7, 8]], np.int64), **kwargs)


def test_empty_input_is_an_error_and_none_starts_from_bos(models):
    torch_model, ours = models(0)
    with pytest.raises(ValueError, match="input_ids` is empty"):
        ours.generate(np.zeros((1, 0), np.int64), max_new_tokens=2)
    ref = torch_model.generate(None, max_new_tokens=3, do_sample=False)
    assert_same_tokens(ours.generate(None, max_new_tokens=3, cache_implementation="dynamic"), ref)


def test_text_iterator_streamer_in_a_thread(models):
    from tests.generation.helpers import tiny_tokenizer

    _, ours = models(1)
    tokenizer = tiny_tokenizer()
    ids = np.array([tokenizer("The capital of France is")["input_ids"]], np.int64)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("out", ours.generate(
        ids, max_new_tokens=10, streamer=streamer, cache_implementation="dynamic")))
    thread.start()
    text = "".join(streamer)
    thread.join()
    generated = ids_of(result["out"])[0, ids.shape[1]:]
    assert text == tokenizer.decode(generated)


def test_static_cache_length_buckets():
    assert [static_cache_length(n) for n in (1, 64, 65, 160, 1000)] == [64, 64, 128, 256, 1024]


def test_user_logits_processor_matches_torch(models):
    torch_model, ours = models(0)
    ids = np.array([[5, 6, 7]], np.int64)
    kwargs = dict(max_new_tokens=4, do_sample=False, min_new_tokens=1, eos_token_id=EOS)
    ref = torch_model.generate(torch.tensor(ids), logits_processor=[hf_processors.SuppressTokensLogitsProcessor(
        [int(t) for t in torch_generate(torch_model, ids, max_new_tokens=4, do_sample=False)[0, 3:]])], **kwargs)
    suppressed = [int(t) for t in ids_of(ours.generate(ids, max_new_tokens=4, cache_implementation="dynamic"))[0, 3:]]
    out = ours.generate(ids, logits_processor=[SuppressTokensLogitsProcessor(suppressed)],
                        cache_implementation="dynamic", **kwargs)
    assert_same_tokens(out, ref)
    assert not set(ids_of(out)[0, 3:].tolist()) & set(suppressed)


def test_compiled_steps_read_weights_given_new_data(tmp_path, caplog):
    """A weight given new data (`Parameter.set_data`: new memory) between generate() calls: the compiled steps,
    which kept reading the old memory, are rebuilt, so the next call's tokens are the new weights' (as PyNative's)."""
    _, model = tiny_llama_pair(tmp_path, seed=3, num_hidden_layers=1)  # one layer: the test compiles twice
    ids, mask = left_padded_batch(3)
    kwargs = dict(attention_mask=mask, max_new_tokens=10, do_sample=False)
    before = ids_of(model.generate(ids, cache_implementation="static", **kwargs))
    for weight in (model.lm_head.weight, model.model.embed_tokens.weight):
        values = weight.asnumpy()
        weight.set_data(ms.Tensor(np.random.RandomState(0).permutation(values.reshape(-1)).reshape(values.shape)))
    with caplog.at_level("INFO", logger="mindone.transformers.generation.utils"):
        ours = model.generate(ids, cache_implementation="static", **kwargs)
    assert "2 Parameters have new data" in caplog.text
    assert_same_tokens(ours, model.generate(ids, cache_implementation="static", disable_compile=True, **kwargs))
    assert not np.array_equal(ids_of(ours), before)  # the new weights do change the answer
