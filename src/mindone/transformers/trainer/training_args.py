"""`TrainingArguments`: HF's field names and defaults for everything that applies to MindSpore.

Options that cannot apply here raise a `ValueError` naming the option and what to use instead (e.g. bf16 on CPU).
A few fields are ours: `jit_mode` (compile the training step with `mindspore.jit`), `seq_len_buckets` (sequence
lengths batches are padded up to, so compiled graphs are reused), `zero_stage` (ZeRO sharding of data parallelism,
also set by a DeepSpeed-style `deepspeed` config) and the parallel settings `parallel_mode`, `pipeline_stages`,
`optimizer_shard`; on CPU only data parallelism (with or without ZeRO) exists.
"""

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional, Union

from ..backend import runtime

logger = logging.getLogger(__name__)


class ExplicitEnum(str, Enum):
    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"{value!r} is not a valid {cls.__name__}, choose one of {[m.value for m in cls]}")


class IntervalStrategy(ExplicitEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SaveStrategy(ExplicitEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"
    BEST = "best"


class SchedulerType(ExplicitEnum):
    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    INVERSE_SQRT = "inverse_sqrt"


class OptimizerNames(ExplicitEnum):
    ADAMW_TORCH = "adamw_torch"
    ADAMW_TORCH_FUSED = "adamw_torch_fused"
    ADAMW = "adamw"
    SGD = "sgd"
    ADAFACTOR = "adafactor"


# HF options that need torch, CUDA or a library we do not run on; each maps to the reason shown to the user
_UNSUPPORTED = {
    "torch_compile": "torch.compile does not exist on MindSpore; the training step is compiled with mindspore.jit "
                     "(`jit_mode=True`, the default)",
    "fsdp": "FSDP is a torch feature; use data parallelism with msrun and zero_stage=1, 2 or 3 (ZeRO sharding)",
    "use_liger_kernel": "Liger kernels are Triton kernels for torch",
    "tf32": "TF32 is an NVIDIA Ampere matmul mode",
    "neftune_noise_alpha": "NEFTune is not implemented",
    "auto_find_batch_size": "automatic batch size search relies on CUDA out-of-memory errors",
    "batch_eval_metrics": "batched metric computation is not implemented; compute_metrics gets the whole set",
    "push_to_hub": "the Hugging Face hub is not reachable from this Trainer; save_model() and upload yourself",
}


@dataclass
class TrainingArguments:
    """Arguments of `Trainer`; the names, meanings and defaults of HF `transformers.TrainingArguments`.

    Args (the ones people set most; see HF's documentation for the full meaning of each):
        output_dir: where checkpoints (`checkpoint-N/`) and the final model are written (default "trainer_output").
        num_train_epochs / max_steps: training length; `max_steps > 0` wins.
        per_device_train_batch_size / per_device_eval_batch_size: batch size per process.
        gradient_accumulation_steps: micro-batches per optimizer step.
        learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon: optimizer hyper-parameters.
        max_grad_norm: global-norm gradient clipping (0 disables it; the pre-clip norm is logged as grad_norm).
        optim: "adamw_torch" (= torch AdamW; also "adamw_torch_fused", "adamw"), "sgd" or "adafactor".
        lr_scheduler_type: linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup,
            inverse_sqrt; `lr_scheduler_kwargs` are passed to the schedule.
        warmup_steps: an int number of steps, or a float in [0, 1) meaning a ratio of the total steps (HF 5).
        warmup_ratio: older HF name for a warmup ratio; used when `warmup_steps` is 0.
        logging_strategy / logging_steps / logging_first_step: when loss, learning_rate, grad_norm are logged.
        eval_strategy / eval_steps / eval_delay: when `evaluate()` runs during training.
        save_strategy / save_steps / save_total_limit: checkpointing; "best" saves on a new best metric.
        load_best_model_at_end, metric_for_best_model, greater_is_better: best-model tracking.
        seed, data_seed: seeds for initialisation and for the data order.
        fp16: mixed precision (float16 compute, float32 master weights, dynamic loss scaling).
        bf16: not available on CPU (MindSpore has no bfloat16 compute kernels there).
        gradient_checkpointing (alias of activation_checkpointing): recompute decoder layers in the backward.
        label_names, remove_unused_columns, dataloader_drop_last, train_sampling_strategy: data handling.
        report_to: "none" or "tensorboard" (needs the torch-free `tensorboardX` package).
        jit_mode: compile the training and evaluation steps with `mindspore.jit` (falls back to PyNative with a
            warning if the model does not compile).
        seq_len_buckets: with `jit_mode`, each batch's token dimension is padded up to the next of these lengths
            (labels with -100, attention_mask with 0, ids with the pad token), so batches of varying length reuse a
            few compiled graphs instead of compiling one per new length. "auto" (default): 16, 32, 48, 64, 96, 128,
            192, 256, ... (each power of two and 1.5x it, capped at the model's max_position_embeddings); a list of
            ints: those lengths; None or []: no padding (one graph per distinct length). See `data.pad_to_bucket`
            for when a batch is left as it is.
        zero_stage: ZeRO sharding of data parallelism (msrun): 0 (off, default), 1 (AdamW state sharded), 2 (+
            gradients), 3 (+ parameters between steps); see `zero.py` and docs/training.md. `deepspeed` (a dict or a
            JSON file, DeepSpeed's format) sets it from `zero_optimization.stage`; its other keys are checked or
            ignored with a warning.
        parallel_mode: "data_parallel" (the only mode on CPU), "semi_auto_parallel" or "auto_parallel" (Ascend/GPU,
            not implemented by this Trainer); pipeline_stages > 1 and optimizer_shard likewise.
    """

    output_dir: Optional[str] = None
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    eval_strategy: Union[IntervalStrategy, str] = "no"
    prediction_loss_only: bool = False
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    eval_accumulation_steps: Optional[int] = None
    eval_delay: float = 0
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1
    lr_scheduler_type: Union[SchedulerType, str] = "linear"
    lr_scheduler_kwargs: Optional[dict] = None
    warmup_steps: float = 0
    warmup_ratio: Optional[float] = None
    logging_strategy: Union[IntervalStrategy, str] = "steps"
    logging_first_step: bool = False
    logging_steps: float = 500
    logging_nan_inf_filter: bool = True
    save_strategy: Union[SaveStrategy, str] = "steps"
    save_steps: float = 500
    save_total_limit: Optional[int] = None
    save_only_model: bool = False
    seed: int = 42
    data_seed: Optional[int] = None
    fp16: bool = False
    bf16: bool = False
    fp16_full_eval: bool = False
    bf16_full_eval: bool = False
    tf32: Optional[bool] = None
    eval_steps: Optional[float] = None
    eval_on_start: bool = False
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    run_name: Optional[str] = None
    disable_tqdm: Optional[bool] = None
    remove_unused_columns: bool = True
    label_names: Optional[list] = None
    load_best_model_at_end: bool = False
    metric_for_best_model: Optional[str] = None
    greater_is_better: Optional[bool] = None
    ignore_data_skip: bool = False
    optim: Union[OptimizerNames, str] = "adamw_torch"
    optim_args: Optional[str] = None
    label_smoothing_factor: float = 0.0
    report_to: Union[None, str, list] = "none"
    resume_from_checkpoint: Optional[str] = None
    activation_checkpointing: Optional[bool] = None
    activation_checkpointing_kwargs: Optional[dict] = None
    gradient_checkpointing: Optional[bool] = None
    gradient_checkpointing_kwargs: Optional[dict] = None
    average_tokens_across_devices: bool = True
    use_cache: bool = False
    train_sampling_strategy: str = "random"
    include_for_metrics: list = field(default_factory=list)
    batch_eval_metrics: bool = False
    use_cpu: bool = False
    torch_compile: bool = False
    deepspeed: Optional[Union[dict, str]] = None
    fsdp: Optional[Union[list, str]] = None
    use_liger_kernel: bool = False
    neftune_noise_alpha: Optional[float] = None
    auto_find_batch_size: bool = False
    push_to_hub: bool = False
    # ours
    jit_mode: bool = True
    seq_len_buckets: Union[str, list, None] = "auto"
    parallel_mode: str = "data_parallel"
    pipeline_stages: int = 1
    optimizer_shard: bool = False
    zero_stage: Optional[int] = None

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.path.expanduser(self.output_dir)
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
            setattr(self, old, getattr(self, new))
        if self.activation_checkpointing is None:
            self.activation_checkpointing = self.gradient_checkpointing = False
        if self.disable_tqdm is None:
            self.disable_tqdm = logging.getLogger("mindone.transformers").getEffectiveLevel() > logging.WARN

        self.eval_strategy = IntervalStrategy(self.eval_strategy)
        self.logging_strategy = IntervalStrategy(self.logging_strategy)
        self.save_strategy = SaveStrategy(self.save_strategy)
        self.lr_scheduler_type = SchedulerType(self.lr_scheduler_type)
        self.optim = OptimizerNames(self.optim)
        if self.train_sampling_strategy not in ("random", "sequential"):
            raise ValueError(f"train_sampling_strategy={self.train_sampling_strategy!r}: only 'random' and "
                             "'sequential' are implemented")

        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps == 0:
                self.warmup_steps = self.warmup_ratio
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 (an int, or a float < 1 for a ratio), got {self.warmup_steps}")

        if self.do_eval is False and self.eval_strategy != IntervalStrategy.NO:
            self.do_eval = True
        if self.eval_strategy == IntervalStrategy.STEPS and not self.eval_steps:
            if self.logging_steps > 0:
                self.eval_steps = self.logging_steps
            else:
                raise ValueError(f"eval_strategy {self.eval_strategy.value!r} requires a non-zero eval_steps or "
                                 "logging_steps")
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

        if self.report_to in (None, "none", ["none"]):
            self.report_to = []
        elif self.report_to in ("all", ["all"]):
            self.report_to = ["tensorboard"] if _tensorboard_available() else []
        elif isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        for name in self.report_to:
            if name != "tensorboard":
                raise ValueError(f"report_to={name!r} is not supported; use 'none' or 'tensorboard'")
            if not _tensorboard_available():
                raise ValueError("report_to='tensorboard' needs the `tensorboardX` package (torch's SummaryWriter "
                                 "would import torch): pip install tensorboardX")

        if self.seq_len_buckets in ("none", "None"):
            self.seq_len_buckets = None
        if isinstance(self.seq_len_buckets, tuple):
            self.seq_len_buckets = list(self.seq_len_buckets)
        if not (self.seq_len_buckets is None or self.seq_len_buckets == "auto" or (
                isinstance(self.seq_len_buckets, list) and
                all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.seq_len_buckets))):
            raise ValueError(f"seq_len_buckets must be 'auto', None or a list of positive ints, got "
                             f"{self.seq_len_buckets!r}")

        self._validate()
        self._setup_distributed()
        if self.zero_stage or self.deepspeed:
            from .zero import resolve_zero_stage

            self.zero_stage = resolve_zero_stage(self)
        else:
            self.zero_stage = 0

    def _validate(self):
        for name, reason in _UNSUPPORTED.items():
            if getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported by the MindSpore Trainer: {reason}.")
        if self.label_smoothing_factor != 0:
            raise ValueError("label_smoothing_factor != 0 is not implemented; compute a smoothed loss with "
                             "compute_loss_func")
        if self.dataloader_num_workers:
            raise ValueError("dataloader_num_workers > 0 is not supported: batches are collated in the training "
                             "process (use a mindspore.dataset pipeline for parallel preprocessing)")
        if self.logging_strategy == IntervalStrategy.STEPS and self.logging_steps == 0:
            raise ValueError("logging_strategy 'steps' requires a non-zero logging_steps")
        for kind in ("logging", "eval", "save"):
            value = getattr(self, f"{kind}_steps")
            if value is not None and value > 1:
                if value != int(value):
                    raise ValueError(f"{kind}_steps must be an integer if bigger than 1: {value}")
                setattr(self, f"{kind}_steps", int(value))
        if self.load_best_model_at_end and self.save_strategy != SaveStrategy.BEST:
            if self.eval_strategy.value != self.save_strategy.value:
                raise ValueError("load_best_model_at_end requires the save and eval strategy to match, except when "
                                 f"save_strategy='best', but found eval_strategy={self.eval_strategy.value!r} and "
                                 f"save_strategy={self.save_strategy.value!r}")
            if self.eval_strategy == IntervalStrategy.STEPS and self.save_steps % self.eval_steps != 0:
                raise ValueError("load_best_model_at_end requires save_steps to be a round multiple of eval_steps, "
                                 f"but found save_steps={self.save_steps}, eval_steps={self.eval_steps}")
        if self.fp16 and self.bf16:
            raise ValueError("At most one of fp16 and bf16 can be True")
        if (self.bf16 or self.bf16_full_eval) and runtime.is_cpu():
            raise ValueError("bf16=True is not possible on MindSpore's CPU backend: it has no bfloat16 compute kernels "
                             "(matmul, softmax and norms fail in bfloat16). Use fp16=True (float16 compute with "
                             "float32 master weights and loss scaling) or the default float32.")
        if self.bf16:
            raise ValueError("bf16=True is not implemented by this Trainer yet; use fp16=True or float32")
        if self.fp16_full_eval:
            raise ValueError("fp16_full_eval is not implemented; evaluation runs in the model's dtype")
        if self.parallel_mode not in ("data_parallel", "semi_auto_parallel", "auto_parallel"):
            raise ValueError(f"parallel_mode={self.parallel_mode!r}: choose 'data_parallel', 'semi_auto_parallel' or "
                             "'auto_parallel'")
        wants_model_parallel = (self.parallel_mode != "data_parallel" or self.pipeline_stages > 1
                                or self.optimizer_shard)
        if wants_model_parallel:
            where = ("MindSpore's CPU backend only runs data parallelism (collectives through its gloo backend); "
                     "model/pipeline parallelism and optimizer sharding need Ascend (or GPU) devices"
                     if runtime.is_cpu() else
                     "this Trainer implements data parallelism only; use MindSpore's parallel API directly")
            raise ValueError(f"parallel_mode={self.parallel_mode!r}, pipeline_stages={self.pipeline_stages}, "
                             f"optimizer_shard={self.optimizer_shard}: {where}. (ZeRO sharding of data parallelism "
                             "works everywhere: zero_stage=1, 2 or 3.)")

    def _setup_distributed(self):
        """Joins MindSpore's collective group when launched by msrun (one process per rank)."""
        self._world_size, self._rank = 1, 0
        if os.environ.get("MS_ROLE") != "MS_WORKER" and "RANK_SIZE" not in os.environ:
            return
        from mindspore.communication import GlobalComm, get_group_size, get_rank, init

        if not GlobalComm.INITED:
            init()
        self._world_size, self._rank = get_group_size(), get_rank()

    # ------------------------------------------------------------------------------------------------------------

    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def process_index(self) -> int:
        return self._rank

    @property
    def local_process_index(self) -> int:
        return int(os.environ.get("LOCAL_RANK", self._rank))

    @property
    def should_save(self) -> bool:
        return self._rank == 0

    @property
    def should_log(self) -> bool:
        return self._rank == 0

    @property
    def mixed_precision(self) -> str:
        return "fp16" if self.fp16 else "no"

    def get_warmup_steps(self, num_training_steps: int) -> int:
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Enum) else value
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """Values tensorboard's hparams accept (bool, int, float, str)."""
        return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in self.to_dict().items()}


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboardX") is not None
