"""Device, execution mode and dispatch settings: the one place that knows which backend we run on.

On CPU, MindSpore's default asynchronous PyNative dispatch costs 0.6-1.9 ms per host sync on a 2-core machine
(measured 20-60x slower than synchronous dispatch for small ops), so we switch to synchronous dispatch
(`mindspore.runtime.launch_blocking()`, and `MS_DEV_HOST_BLOCKING_RUN=1` so compiled graphs run on the calling
thread, see `configure`) when the package is imported. Set `MINDONE_TRANSFORMERS_ASYNC_DISPATCH=1`
before importing to keep MindSpore's default.
"""

import contextlib
import functools
import logging
import os
import threading

import mindspore as ms
from mindspore.ops.primitive import constexpr

logger = logging.getLogger(__name__)

_configured = False

# MindSpore's graph compiler and PyNative executor keep per-process state that two threads running a model at once
# corrupt (`mindspore.jit` compiling the same decode step from two threads fails with "Illegal AnfNode" / "Fail to get
# eval result" errors), and a compiled decode step owns one StaticCache that two calls would write together. One
# process-wide re-entrant lock serialises model execution: `generate()` holds it for a whole call.
_EXECUTION_LOCK = threading.RLock()


def device_target() -> str:
    """"CPU", "GPU" or "Ascend": the device MindSpore runs kernels on."""
    return ms.get_context("device_target")


def is_cpu() -> bool:
    return device_target() == "CPU"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def configure() -> None:
    """Apply the package defaults once per process (called on first use of the backend)."""
    global _configured
    if _configured:
        return
    _configured = True
    if is_cpu() and not _env_flag("MINDONE_TRANSFORMERS_ASYNC_DISPATCH"):
        ms.runtime.launch_blocking()
        # Compiled graphs too: by default MindSpore runs them on its "frontend_queue" thread while the calling thread
        # busy-waits (AsyncRQueue::Wait, a spin loop without pause or yield) in `asnumpy()`. On CPU that spinning
        # thread takes a core from the kernels: on one core a training step's matmuls ran at about half speed
        # (SmolLM2-135M forward+backward 9.3 s, 5.6 s with this), and with two cores one core only spun. MindSpore
        # reads the variable when it first runs a graph.
        os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")
        logger.debug("CPU backend: synchronous dispatch enabled (launch_blocking, MS_DEV_HOST_BLOCKING_RUN)")


def execution_lock():
    """The process-wide re-entrant lock held while a model executes (`generate()` takes it for a whole call).

    Code that calls a model's forward from several threads at once holds it too: `with runtime.execution_lock(): ...`.
    """
    return _EXECUTION_LOCK


def serialized(fn):
    """Decorator: `fn` runs holding `execution_lock()` (so calls from several threads run one after another)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _EXECUTION_LOCK:
            return fn(*args, **kwargs)

    return wrapper


def set_threads(num_threads: int) -> None:
    """Number of threads MindSpore's CPU kernels and the native kernels (`native.set_threads`) use.

    MindSpore's bundled oneDNN matmul ignores this setting; only CPU affinity (e.g. `taskset`) limits it.
    """
    from . import native  # native imports this module

    native.set_threads(int(num_threads))
    ms.device_context.cpu.op_tuning.threads_num(int(num_threads))  # MindSpore allows this once per process


def set_graph_mode(enabled: bool) -> None:
    """Run whole Cells as compiled graphs (`GRAPH_MODE`) or op by op (`PYNATIVE_MODE`)."""
    ms.set_context(mode=ms.GRAPH_MODE if enabled else ms.PYNATIVE_MODE)


def parameter_pointers(parameters) -> tuple:
    """(id, data address) of each Parameter. A compiled graph (or a native plan) keeps reading the memory its
    Parameters had when it was built; one replaced, or given new data (`set_data`, a reload), shows another pair
    here. Costs ~1.5 us per Parameter: meant for the start of a generate() call, not for every step."""
    return tuple((id(p), p.data_ptr()) for p in parameters)


def in_graph() -> bool:
    """True while code is being traced into a graph (inside `mindspore.jit` or GRAPH_MODE), False in PyNative.

    Models use it to skip what only exists on the host, e.g. a growing `DynamicCache`.
    """
    return _probe_is_none(_probe)


def _probe():
    return 0


@constexpr(check=False)
def _probe_is_none(fn):
    # while a graph is traced, a Python function handed to a constexpr arrives as None (MindSpore's own trick)
    return fn is None


# the file format (`"MINDIR"` / `"ONNX"`) of the `mindspore.export` running now, None otherwise; read by
# `backend.functional` while the graph is traced (a constant of the graph)
_EXPORT = {"format": None}


@contextlib.contextmanager
def exporting(file_format: str):
    """Marks the graphs traced inside the block as exported to `file_format` ("MINDIR" or "ONNX").

    While it is set, `backend.functional` uses MindSpore's own operators only (never the native AOT kernels of
    `native.py`, which an exported file could not carry), and for ONNX only operators MindSpore's ONNX exporter can
    convert (e.g. `1 / sqrt` for Rsqrt, a rational approximation of erf for Erf; see docs/export.md).
    """
    file_format = file_format.upper()
    if file_format not in ("MINDIR", "ONNX"):
        raise ValueError(f"file_format must be 'MINDIR' or 'ONNX', got {file_format!r}")
    previous = _EXPORT["format"]
    _EXPORT["format"] = file_format
    try:
        yield
    finally:
        _EXPORT["format"] = previous


def export_format():
    """The file format of the export in progress (`exporting`), or None."""
    return _EXPORT["format"]


# True while a graph that may hold native custom ops is traced (`native_ops_in_graph`): the compiled decode steps
_NATIVE_GRAPH = {"on": False, "training": False}


@contextlib.contextmanager
def native_ops_in_graph():
    """Marks the graphs traced inside the block as ones that may call the native kernels of `native.py` whose output
    shapes are inferred in Python. Such a custom op fails in a graph whose outputs fall back to dynamic types (a jit
    function returning a dict / ModelOutput: "The prim is not a PrimitivePy"), so `backend.functional` uses them in
    graphs only inside this block: generate()'s compiled decode steps, which return a logits tensor."""
    previous = _NATIVE_GRAPH["on"]
    _NATIVE_GRAPH["on"] = True
    try:
        yield
    finally:
        _NATIVE_GRAPH["on"] = previous


@contextlib.contextmanager
def training_graph():
    """Marks the graphs traced inside the block as compiled training steps (they return a tensor, see
    `native_ops_in_graph`): `functional.swap_axes` and `functional.rms_norm` use their native kernels (with
    gradients) there. Entered by `trainer.train_step.TrainStep` around its gradient step."""
    previous = _NATIVE_GRAPH["training"]
    _NATIVE_GRAPH["training"] = True
    try:
        yield
    finally:
        _NATIVE_GRAPH["training"] = previous


def in_training_graph() -> bool:
    """Inside a graph traced in a `training_graph` block (and not exporting)."""
    return _NATIVE_GRAPH["training"] and _EXPORT["format"] is None and in_graph()


def native_ops_allowed() -> bool:
    """Whether `backend.functional` may call its native kernels here: always in PyNative, in a traced graph only
    inside `native_ops_in_graph`, never while exporting (an exported file could not carry them)."""
    if _EXPORT["format"] is not None:
        return False
    return _NATIVE_GRAPH["on"] or not in_graph()
