"""Stopping criteria and streamers against torch `transformers` on the same token ids and tokenizer."""

import io
import time
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
import transformers.generation.stopping_criteria as hf_stopping
import transformers.generation.streamers as hf_streamers

import mindspore as ms
from mindone.transformers.generation import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    TextIteratorStreamer,
    TextStreamer,
)
from tests.generation.helpers import CORPUS, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def stop_string_cases(tokenizer, count=300, seed=0):
    """Token sequences cut from the corpus at random points, with stop strings taken from around the cut."""
    rng = np.random.RandomState(seed)
    text = " ".join(CORPUS[:4])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cases = []
    for _ in range(count):
        end = rng.randint(3, len(ids))
        window = ids[max(0, end - 8):end]
        decoded = tokenizer.decode(window)
        a = rng.randint(0, max(1, len(decoded) - 2))
        stop = decoded[a:a + rng.randint(1, 7)] or decoded[-1:]
        other = rng.choice(["Paris", ".", "\n", " stop", "xyz", "10, "])
        cases.append((window, [stop, other]))
    return cases


def test_stop_string_criteria_match_torch_on_random_cuts(tokenizer):
    hits = 0
    for ids, stops in stop_string_cases(tokenizer):
        ours = StopStringCriteria(tokenizer, stops)(ms.Tensor(np.array([ids])), None).asnumpy()
        ref = hf_stopping.StopStringCriteria(tokenizer, stops)(torch.tensor([ids]), None).numpy()
        assert ours.tolist() == ref.tolist(), f"ids {ids} ({tokenizer.decode(ids)!r}) stops {stops}"
        hits += int(ref[0])
    assert 30 < hits < 270, "the cases must contain both matches and non-matches"


def test_stop_strings_stop_generation_where_torch_stops(tokenizer, tmp_path):
    from tests.generation.helpers import tiny_llama_pair

    torch_model, ours = tiny_llama_pair(tmp_path, seed=3)
    ids = np.array([tokenizer("The capital of")["input_ids"]], np.int64)
    free = torch_model.generate(torch.tensor(ids), max_new_tokens=15, do_sample=False)[0, ids.shape[1]:]
    # a stop string made of two generated tokens from the middle of the free-running output
    pieces = [tokenizer.decode(free[i:i + 2]) for i in range(4, 12)]
    stop = next(p for p in pieces if p.isascii() and p.strip())
    kwargs = dict(max_new_tokens=15, do_sample=False, stop_strings=stop, tokenizer=tokenizer)
    ref = torch_model.generate(torch.tensor(ids), **kwargs).numpy()
    out = ours.generate(ids, cache_implementation="dynamic", **kwargs).asnumpy()
    assert out.tolist() == ref.tolist()
    assert out.shape[1] < ids.shape[1] + 15


def test_length_time_and_eos_criteria():
    ids = ms.Tensor(np.array([[1, 2, 3], [4, 5, 2]], np.int64))
    assert MaxLengthCriteria(3)(ids, None).asnumpy().tolist() == [True, True]
    assert MaxLengthCriteria(4)(ids, None).asnumpy().tolist() == [False, False]
    assert EosTokenCriteria([2, 9])(ids, None).asnumpy().tolist() == [False, True]
    assert MaxTimeCriteria(0.05, initial_timestamp=time.time() - 1)(ids, None).asnumpy().tolist() == [True, True]
    both = StoppingCriteriaList([MaxLengthCriteria(10), EosTokenCriteria(3)])
    assert both(ids, None).asnumpy().tolist() == [True, False] and both.max_length == 10


def feed(streamer, prompt, tokens):
    streamer.put(np.array([prompt]))
    for t in tokens:
        streamer.put(np.array([t]))
    streamer.end()


@pytest.mark.parametrize("skip_prompt", [False, True])
def test_text_streamer_prints_what_torch_prints(tokenizer, skip_prompt):
    prompt = tokenizer("Once upon a time")["input_ids"]
    tokens = tokenizer(" there was a small model\nthat liked 1 2 3 4 5, stop here. END")["input_ids"]
    ours, ref = io.StringIO(), io.StringIO()
    with redirect_stdout(ours):
        feed(TextStreamer(tokenizer, skip_prompt=skip_prompt), prompt, tokens)
    with redirect_stdout(ref):
        feed(hf_streamers.TextStreamer(tokenizer, skip_prompt=skip_prompt), [torch.tensor(prompt)][0].numpy(),
             tokens)
    assert ours.getvalue() == ref.getvalue()


def test_text_iterator_streamer_yields_torchs_chunks(tokenizer):
    prompt = tokenizer("The capital")["input_ids"]
    tokens = tokenizer(" of France is Paris. The capital of Germany is Berlin.")["input_ids"]
    ours = TextIteratorStreamer(tokenizer, skip_prompt=True)
    ref = hf_streamers.TextIteratorStreamer(tokenizer, skip_prompt=True)
    feed(ours, prompt, tokens)
    feed(ref, prompt, tokens)
    assert list(ours) == list(ref)


def test_text_streamer_rejects_batches(tokenizer):
    with pytest.raises(ValueError, match="batch size 1"):
        TextStreamer(tokenizer).put(np.array([[1, 2], [3, 4]]))
