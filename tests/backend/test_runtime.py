"""`runtime.configure` on CPU: synchronous dispatch, compiled graphs on the calling thread, and the opt-out."""

import os
import subprocess
import sys

import pytest

from mindone.transformers.backend import runtime

pytestmark = pytest.mark.skipif(not runtime.is_cpu(), reason="CPU defaults")

_PROBE = ("import os; from mindone.transformers.backend import runtime; runtime.configure(); "
          "print(os.environ.get('MS_DEV_HOST_BLOCKING_RUN'))")


def _run(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("MS_DEV_HOST_BLOCKING_RUN",
                                                             "MINDONE_TRANSFORMERS_ASYNC_DISPATCH")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_graphs_run_on_the_calling_thread_by_default():
    # without it the caller spins in MindSpore's AsyncRQueue::Wait while a worker thread runs the graph
    assert _run() == "1"


def test_user_setting_and_opt_out_are_kept():
    assert _run(MS_DEV_HOST_BLOCKING_RUN="0") == "0"
    assert _run(MINDONE_TRANSFORMERS_ASYNC_DISPATCH="1") == "None"
