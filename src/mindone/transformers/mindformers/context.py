"""MindFormers' `init_context(use_parallel, context_config, parallel_config)` on our runtime.

What maps: `mode` (0 / "GRAPH_MODE": training and evaluation steps compiled with `mindspore.jit`, our Trainer's
`jit_mode=True`; 1 / "PYNATIVE_MODE": op by op), `device_target` (must be the device this process runs on),
`device_id`, and `parallel_mode="DATA_PARALLEL"` with `use_parallel=True` under msrun: the collective group is
joined and our Trainer all-reduces gradients itself (mean over ranks, as `gradients_mean=True`).
Semi-auto / auto / hybrid parallelism and the parallel optimizer raise a `ValueError` naming the mode and device.
MindSpore's global execution mode is left in PyNative: generation and host-side data handling run there.
"""

import logging
import os

from ..backend import runtime

logger = logging.getLogger(__name__)

_MODES = {0: 0, 1: 1, "GRAPH_MODE": 0, "PYNATIVE_MODE": 1, "graph_mode": 0, "pynative_mode": 1}
# MindFormers' TrainingArguments number the parallel modes; ParallelContextConfig names them
_PARALLEL_MODES = {0: "data_parallel", 1: "semi_auto_parallel", 2: "auto_parallel", 3: "hybrid_parallel"}
_PARALLEL_NAMES = ("stand_alone", "data_parallel", "semi_auto_parallel", "auto_parallel", "hybrid_parallel")

# what init_context set; Trainer reads it for defaults (jit_mode)
_state = {"mode": None, "use_parallel": False}


class _ArgsConfig:
    """A MindFormers config object: keyword arguments from a fixed list, readable as attributes and as a dict."""

    _support_kwargs = ()

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self._support_kwargs))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown arguments {unknown}; it accepts "
                            f"{sorted(self._support_kwargs)}")
        for key, value in kwargs.items():
            if value is not None:
                setattr(self, key, value)

    def to_dict(self) -> dict:
        return dict(vars(self))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ContextConfig(_ArgsConfig):
    """MindFormers' `ContextConfig`: mode (0 graph / 1 PyNative), device_target, device_id and MindSpore context
    options. Options with no meaning for this package (save_graphs, max_device_memory, ...) are accepted and
    ignored."""

    _support_kwargs = (
        "mode", "precompile_only", "device_target", "device_id", "save_graphs", "save_graphs_path", "enable_dump",
        "auto_tune_mode", "save_dump_path", "enable_reduce_precision", "variable_memory_max_size", "enable_profiling",
        "profiling_options", "enable_auto_mixed_precision", "enable_graph_kernel", "reserve_class_name_in_scope",
        "check_bprop", "max_device_memory", "print_file_path", "enable_sparse", "max_call_depth", "env_config_path",
        "graph_kernel_flags", "save_compile_cache", "runtime_num_threads", "load_compile_cache", "grad_for_scalar",
        "pynative_synchronize", "mempool_block_size", "jit_config")

    def __init__(self, mode=0, device_target="Ascend", device_id=None, save_graphs=False, save_graphs_path=".",
                 **kwargs):
        if device_id is None:
            device_id = int(os.getenv("DEVICE_ID", "0"))
        super().__init__(mode=mode, device_target=device_target, device_id=device_id, save_graphs=save_graphs,
                         save_graphs_path=save_graphs_path, **kwargs)


class ParallelContextConfig(_ArgsConfig):
    """MindFormers' `ParallelContextConfig`: parallel_mode ("STAND_ALONE", "DATA_PARALLEL", "SEMI_AUTO_PARALLEL",
    "AUTO_PARALLEL", "HYBRID_PARALLEL" or 0-3), gradients_mean, enable_parallel_optimizer, full_batch, ..."""

    _support_kwargs = (
        "device_num", "global_rank", "gradients_mean", "gradient_fp32_sync", "parallel_mode",
        "auto_parallel_search_mode", "search_mode", "parameter_broadcast", "strategy_ckpt_load_file",
        "strategy_ckpt_save_file", "full_batch", "dataset_strategy", "enable_parallel_optimizer", "enable_alltoall",
        "all_reduce_fusion_config", "pipeline_stages", "grad_accumulation_step", "parallel_optimizer_config",
        "comm_fusion", "loss_repeated_mean", "strategy_ckpt_config")

    def __init__(self, parallel_mode="STAND_ALONE", device_num=None, gradients_mean=False, **kwargs):
        if device_num is None:
            device_num = int(os.getenv("RANK_SIZE", "1"))
        super().__init__(parallel_mode=parallel_mode, device_num=device_num, gradients_mean=gradients_mean, **kwargs)


def _as_dict(config, cls):
    if config is None:
        return {}
    if isinstance(config, _ArgsConfig):
        return config.to_dict()
    if isinstance(config, dict):
        return cls(**config).to_dict()
    raise TypeError(f"expected a dict or {cls.__name__}, got {type(config).__name__}")


def execution_mode(mode) -> int:
    """0 (graph) or 1 (PyNative) from MindFormers' spellings of the mode."""
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}: use 0 / 'GRAPH_MODE' or 1 / 'PYNATIVE_MODE'")
    return _MODES[mode]


def parallel_mode_name(mode) -> str:
    """'data_parallel', 'semi_auto_parallel', ... from a MindFormers parallel mode (name in any case, or 0-3)."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        if mode not in _PARALLEL_MODES:
            raise ValueError(f"parallel_mode={mode}: use 0 (data), 1 (semi-auto), 2 (auto) or 3 (hybrid parallel)")
        return _PARALLEL_MODES[mode]
    name = str(mode).lower()
    if name not in _PARALLEL_NAMES:
        raise ValueError(f"parallel_mode={mode!r}: use one of {[n.upper() for n in _PARALLEL_NAMES]}")
    return name


def check_parallel_support(what: str) -> None:
    """Raises for a model-parallel feature `what`, naming the device."""
    device = runtime.device_target()
    if runtime.is_cpu():
        reason = ("MindSpore's CPU backend runs data parallelism only (gradients all-reduced through gloo); "
                  "semi-auto/auto/hybrid parallelism, pipeline stages, model/sequence/expert parallelism and the "
                  "parallel optimizer need Ascend (or GPU) devices")
    else:
        reason = ("this package's Trainer implements data parallelism only; use MindFormers or MindSpore's "
                  "parallel API directly for it")
    raise ValueError(f"{what} is not supported on device_target={device!r}: {reason}.")


NOT_LAUNCHED = ("{flag} needs one process per rank started by msrun, e.g. `msrun --worker_num=2 "
                "--local_worker_num=2 train.py` (no MS_ROLE / RANK_SIZE in the environment)")


def launched_distributed() -> bool:
    """True in a process msrun started (one per rank)."""
    return os.environ.get("MS_ROLE") == "MS_WORKER" or "RANK_SIZE" in os.environ


def init_context(use_parallel=False, context_config=None, parallel_config=None):
    """Initialises the run as MindFormers' `init_context` does and returns `(rank_id, device_num)`.

    Args:
        use_parallel: join the collective group of an msrun launch (data parallelism). Default False.
        context_config: `ContextConfig` or dict: `mode` (0 graph = compiled training steps, 1 PyNative),
            `device_target` (must be the device this process runs on, e.g. "CPU"), `device_id`.
        parallel_config: `ParallelContextConfig` or dict; with `use_parallel`, `parallel_mode` must be
            "DATA_PARALLEL" (or 0); `enable_parallel_optimizer` and `full_batch` must be off.
    """
    runtime.configure()
    context = _as_dict(context_config, ContextConfig)
    parallel = _as_dict(parallel_config, ParallelContextConfig)

    target = context.get("device_target")
    if target is not None and str(target).upper() != runtime.device_target().upper():
        raise ValueError(f"device_target={target!r}: this process runs MindSpore on {runtime.device_target()!r} "
                         f"(the device cannot be changed here); use ContextConfig(device_target="
                         f"{runtime.device_target()!r})")
    if "mode" in context:
        _state["mode"] = execution_mode(context["mode"])
    if "device_id" in context and not runtime.is_cpu():
        import mindspore as ms

        ms.set_context(device_id=int(context["device_id"]))

    if not use_parallel:
        _state["use_parallel"] = False
        return 0, 1

    mode = parallel_mode_name(parallel.get("parallel_mode", "data_parallel"))
    if mode == "stand_alone":
        raise ValueError("use_parallel=True with parallel_mode='STAND_ALONE': set parallel_mode='DATA_PARALLEL' "
                         "(or use_parallel=False)")
    if mode != "data_parallel":
        check_parallel_support(f"parallel_mode={mode.upper()!r}")
    if parallel.get("enable_parallel_optimizer"):
        check_parallel_support("enable_parallel_optimizer=True (optimizer sharding)")
    if parallel.get("pipeline_stages", 1) > 1:
        check_parallel_support(f"pipeline_stages={parallel['pipeline_stages']}")
    if parallel.get("full_batch"):
        raise ValueError("full_batch=True is for semi-auto/auto parallelism (every rank reads the whole batch); in "
                         "DATA_PARALLEL each rank reads its own shard: set full_batch=False")
    if not parallel.get("gradients_mean", False):
        logger.warning("gradients_mean=False: gradients are averaged over ranks anyway (as with gradients_mean=True), "
                       "so the loss and the learning rate mean the same as in a single-process run")
    if not launched_distributed():
        raise ValueError(NOT_LAUNCHED.format(flag="use_parallel=True"))
    from mindspore.communication import GlobalComm, get_group_size, get_rank, init

    if not GlobalComm.INITED:
        init()
    _state["use_parallel"] = True
    return get_rank(), get_group_size()


def context_mode():
    """The mode init_context set (0 graph, 1 PyNative), or None."""
    return _state["mode"]
