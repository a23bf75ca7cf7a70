"""generate() called from several threads at once: each call gets the tokens a sequential call gets.

Before `generate` held `backend.runtime.execution_lock()`, two threads compiling and running the shared decode step
failed inside MindSpore's graph compiler ("Illegal AnfNode for evaluating") or mixed their static caches.
"""

import threading

import numpy as np
import pytest

from mindone.transformers.backend import runtime
from mindone.transformers.generation.utils import forget_compiled_steps
from tests.generation.helpers import PAD, VOCAB, tiny_llama_pair


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_llama_pair(tmp_path_factory.mktemp("tiny-llama"), seed=2)[1]


def run_in_threads(fn, count):
    results, errors = [None] * count, []

    def work(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(e)[:2000])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return results


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-static-cache", "pynative"])
def test_concurrent_greedy_generate_equals_sequential_calls(model, compiled):
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, VOCAB, (1, n)).astype(np.int64) for n in (5, 9, 13)]
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=PAD, disable_compile=not compiled)
    sequential = [model.generate(p, **kwargs).asnumpy() for p in prompts]
    forget_compiled_steps(model)  # the threads must also compile concurrently
    concurrent = run_in_threads(lambda i: model.generate(prompts[i], **kwargs).asnumpy(), len(prompts))
    for i, (seq, con) in enumerate(zip(sequential, concurrent)):
        np.testing.assert_array_equal(con, seq, err_msg=f"prompt {i}")


def test_the_execution_lock_is_reentrant_and_held_during_generate(model):
    seen = []

    class Probe:
        def put(self, value):
            # another thread cannot take the lock while generate runs
            taken = []
            t = threading.Thread(target=lambda: taken.append(runtime.execution_lock().acquire(timeout=0.05)))
            t.start()
            t.join()
            if taken[0]:
                runtime.execution_lock().release()
            seen.append(taken[0])

        def end(self):
            pass

    with runtime.execution_lock():
        model.generate(np.array([[5, 6, 7]]), max_new_tokens=2, do_sample=False, pad_token_id=PAD, streamer=Probe())
    assert seen and not any(seen)
