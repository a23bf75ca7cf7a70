"""HF's streamer test cases (tests/generation/test_streamers.py), on ours and on torch 5.25. The hub checkpoints
(tiny-random-gpt2, distilgpt2) are replaced by a tiny random Llama and the in-memory byte-level BPE tokenizer of
tests/generation/helpers.py (same vocabulary size)."""

import asyncio
from queue import Empty
from threading import Thread

import numpy as np
import pytest
import torch

from tests.generation.helpers import BOS, VOCAB, tiny_llama_pair, tiny_tokenizer


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_llama_pair(tmp_path_factory.mktemp("streamer_llama"), seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def model_of(B, pair):
    return pair[0] if B.is_torch else pair[1]


def generate(B, model, input_ids, **kwargs):
    kwargs.setdefault("eos_token_id", -1)  # HF's tests set config.eos_token_id = -1: never stop early
    if B.is_torch:
        with torch.no_grad():
            return model.generate(input_ids, **kwargs)
    # a growing cache: the compiled static-cache step (12 s to compile here) is covered by tests/generation/test_utils
    return model.generate(input_ids, cache_implementation="dynamic", **kwargs)


def prompt(B):
    return B.tensor(np.random.RandomState(0).randint(3, VOCAB, (1, 5)).astype(np.int64))


def test_text_streamer_matches_non_streaming(B, pair, tokenizer, capsys):
    model, input_ids = model_of(B, pair), prompt(B)
    greedy_text = tokenizer.decode(B.np(generate(B, model, input_ids, max_new_tokens=10, do_sample=False))[0])
    capsys.readouterr()
    generate(B, model, input_ids, max_new_tokens=10, do_sample=False, streamer=B.TextStreamer(tokenizer))
    assert capsys.readouterr().out[:-1] == greedy_text


def test_iterator_streamer_matches_non_streaming(B, pair, tokenizer):
    model, input_ids = model_of(B, pair), prompt(B)
    greedy_text = tokenizer.decode(B.np(generate(B, model, input_ids, max_new_tokens=10, do_sample=False))[0])
    streamer = B.TextIteratorStreamer(tokenizer)
    thread = Thread(target=generate, args=(B, model, input_ids),
                    kwargs={"max_new_tokens": 10, "do_sample": False, "streamer": streamer})
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text == greedy_text


def test_text_streamer_skip_prompt(B, pair, tokenizer, capsys):
    model, input_ids = model_of(B, pair), prompt(B)
    greedy = B.np(generate(B, model, input_ids, max_new_tokens=10, do_sample=False))
    new_text = tokenizer.decode(greedy[0, input_ids.shape[1]:])
    capsys.readouterr()
    generate(B, model, input_ids, max_new_tokens=10, do_sample=False,
             streamer=B.TextStreamer(tokenizer, skip_prompt=True))
    assert capsys.readouterr().out[:-1] == new_text


def test_text_streamer_decode_kwargs(B, pair, tokenizer, capsys):
    model = model_of(B, pair)
    input_ids = B.tensor(np.full((1, 5), BOS, np.int64))
    capsys.readouterr()
    out = B.np(generate(B, model, input_ids, max_new_tokens=1, do_sample=False,
                        streamer=B.TextStreamer(tokenizer, skip_special_tokens=True)))
    text = capsys.readouterr().out[:-1]
    # the prompt is all special tokens, so only the new token is printed (HF re-tokenizes the text and counts one
    # token, which a real checkpoint's tokenizer guarantees; a tiny random model's token need not re-tokenize alone)
    assert tokenizer.bos_token not in text
    assert text == tokenizer.decode(out[0, 5:], skip_special_tokens=True) != ""


def test_iterator_streamer_timeout(B, pair, tokenizer):
    model, input_ids = model_of(B, pair), prompt(B)
    streamer = B.TextIteratorStreamer(tokenizer, timeout=0.001)
    thread = Thread(target=generate, args=(B, model, input_ids),
                    kwargs={"max_new_tokens": 10, "do_sample": False, "streamer": streamer})
    thread.start()
    with pytest.raises(Empty):
        for _ in streamer:
            pass
    thread.join()


def test_async_iterator_streamer_matches_non_streaming(B, pair, tokenizer):
    model, input_ids = model_of(B, pair), prompt(B)
    greedy_text = tokenizer.decode(B.np(generate(B, model, input_ids, max_new_tokens=10, do_sample=False))[0])

    async def stream():
        streamer = B.AsyncTextIteratorStreamer(tokenizer)
        thread = Thread(target=generate, args=(B, model, input_ids),
                        kwargs={"max_new_tokens": 10, "do_sample": False, "streamer": streamer})
        thread.start()
        text = "".join([piece async for piece in streamer])
        thread.join()
        return text

    assert asyncio.run(stream()) == greedy_text


def test_async_iterator_streamer_timeout(B, pair, tokenizer):
    model, input_ids = model_of(B, pair), prompt(B)

    async def stream():
        streamer = B.AsyncTextIteratorStreamer(tokenizer, timeout=0.001)
        thread = Thread(target=generate, args=(B, model, input_ids),
                        kwargs={"max_new_tokens": 10, "do_sample": False, "streamer": streamer})
        thread.start()
        try:
            async for _ in streamer:
                pass
        finally:  # keep the loop open until generate() has put its last piece
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    with pytest.raises(TimeoutError):
        asyncio.run(stream())
