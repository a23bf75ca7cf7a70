"""Real checkpoint: SmolLM2-135M-Instruct (the embedded GGUF) generates the same tokens as torch `transformers`."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.cli import default_model, load_tokenizer

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


@pytest.fixture(scope="module")
def smollm2():
    path, gguf = default_model()
    tokenizer = load_tokenizer(path, gguf)
    ours = LlamaForCausalLM.from_pretrained(path, gguf_file=gguf, dtype="float32")
    ref = transformers.LlamaForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=torch.float32).eval()
    return tokenizer, ours, ref


def encoded(tokenizer):
    batch = [np.array([tokenizer(p)["input_ids"]], np.int64) for p in PROMPTS]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    return batch + [np.array([list(chat)], np.int64)]


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_greedy_32_tokens_match_torch(smollm2, cache):
    tokenizer, ours, ref = smollm2
    for ids in encoded(tokenizer):
        want = ref.generate(torch.tensor(ids), max_new_tokens=32, do_sample=False).numpy()
        got = ours.generate(ids, max_new_tokens=32, do_sample=False, cache_implementation=cache).asnumpy()
        assert got.tolist() == want.tolist(), tokenizer.decode(got[0]) + "\n---\n" + tokenizer.decode(want[0])


def test_left_padded_batch_and_beam_search_match_torch(smollm2):
    tokenizer, ours, ref = smollm2
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    for kwargs in (dict(do_sample=False), dict(num_beams=3, do_sample=False)):
        want = ref.generate(torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]),
                            max_new_tokens=24, **kwargs).numpy()
        got = ours.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=24,
                            **kwargs).asnumpy()
        assert got.tolist() == want.tolist()
