"""Peer suite: the cases of HF's own generation tests (tests/generation/test_logits_process.py,
test_stopping_criteria.py, test_streamers.py in huggingface/transformers), restated against a backend shim so every
case runs twice: on our classes and on torch `transformers` 5.25. The torch run checks that the case states 5.25's
behaviour (cases of newer HF versions are left out, see README.md here); the ours run checks that we have it.

A test receives `B`, the shim: `B.<ClassName>` is the class under test, `B.tensor` / `B.ids_tensor` / `B.uniform`
build inputs in the backend's tensor type, `B.np` reads any result back as numpy.
"""

import numpy as np
import pytest
import torch
import transformers.generation as hf_generation
import transformers.generation.logits_process as hf_logits_process
import transformers.generation.stopping_criteria as hf_stopping_criteria

import mindspore as ms
from mindone.transformers import generation as ours_generation
from mindone.transformers.generation import logits_process as ours_logits_process
from mindone.transformers.generation import stopping_criteria as ours_stopping_criteria


class Backend:
    def __init__(self, name, modules, tensor_type):
        self.name = name
        self._modules = modules
        self._tensor_type = tensor_type
        self._rng = np.random.RandomState(0)

    def __getattr__(self, name):
        for module in self._modules:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"{self.name} has no {name}")

    @property
    def is_torch(self):
        return self.name == "torch"

    def tensor(self, values, dtype=None):
        array = np.asarray(values, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        if self.is_torch:
            return torch.tensor(array)
        return ms.Tensor(array)

    def ids_tensor(self, shape, vocab_size):
        """Random ids like HF's `ids_tensor`."""
        return self.tensor(self._rng.randint(0, vocab_size, shape).astype(np.int64))

    def uniform(self, batch_size, length):
        """HF's `_get_uniform_logits`: every score 1 / length."""
        return self.tensor(np.full((batch_size, length), 1.0 / length, np.float32))

    @staticmethod
    def np(value):
        if isinstance(value, torch.Tensor):
            return value.detach().numpy()
        if isinstance(value, (ms.Tensor, ms.Parameter)):
            return value.asnumpy()
        return np.asarray(value)

    def exp(self, value):
        return np.exp(self.np(value).astype(np.float64))


BACKENDS = {
    "ours": lambda: Backend("ours", (ours_generation, ours_logits_process, ours_stopping_criteria), ms.Tensor),
    "torch": lambda: Backend("torch", (hf_generation, hf_logits_process, hf_stopping_criteria), torch.Tensor),
}


@pytest.fixture(params=list(BACKENDS))
def B(request):  # noqa: N802 - short on purpose: read as "the backend"
    return BACKENDS[request.param]()


def log_probs(probs):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, np.float32))
