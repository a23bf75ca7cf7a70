"""MindFormers' `TrainingArguments` (field names and defaults), turned into our HF-style `TrainingArguments`.

`to_hf_args()` is the whole mapping; fields are grouped below as MindFormers groups them. A MindFormers field that
names the same thing in HF keeps its name (output_dir, seed, num_train_epochs, learning_rate, warmup_steps, ...).
Renamed: batch_size -> per_device_train_batch_size (when set), evaluation_strategy -> eval_strategy,
eval_epochs=1 -> eval_strategy="epoch", shuffle=False -> train_sampling_strategy="sequential",
optim "adamw"/"fp32_adamw"/"fused_adamw"/"AdamWeightDecay" -> "adamw_torch" (decoupled weight decay with bias
correction), lr_end -> the cosine schedule's floor (`min_lr_rate = lr_end / learning_rate`, MindFormers'
CosineWithWarmUpLR) or the polynomial schedule's `lr_end`, use_clip_grad=False -> max_grad_norm=0,
recompute -> gradient_checkpointing, mode (0 graph / 1 PyNative; default: init_context's mode, else 0) -> jit_mode.
Accepted without effect (documented in docs/mindformers.md): sink_mode, sink_size, dataloader_num_workers
(batches are collated in the training process), python_multiprocessing, numa_enable, prefetch_size,
overwrite_output_dir, save_prefix, save_directory, save_on_each_node, integrated_save, save_network_params,
save_trainable_params, async_save, keep_checkpoint_per_n_minutes, loss scaling fields, device_id,
gradient_aggregation_group, vocab_emb_dp, mp_comm_recompute, parallel_optimizer_comm_recompute, max_call_depth,
max_device_memory, save_graphs, save_graphs_path, enable_graph_kernel, graph_kernel_flags.
Everything else that is not at its default raises a `ValueError` naming the field.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional, Union

from ..backend import runtime
from ..trainer.training_args import TrainingArguments as HFTrainingArguments
from . import context

_OPTIMIZERS = {"adamw": "adamw_torch", "fp32_adamw": "adamw_torch", "fused_adamw": "adamw_torch",
               "adamweightdecay": "adamw_torch", "sgd": "sgd", "adafactor": "adafactor"}
_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
               "inverse_sqrt")
# fields that need a feature this package does not have, at their "off" value
_UNSUPPORTED_OFF = {
    "only_save_strategy": False, "auto_trans_ckpt": False, "src_strategy": None, "remote_save_url": None,
    "layer_scale": False, "lr_scale": False, "warmup_lr_init": 0.0, "warmup_epochs": None, "dataset_task": None,
    "dataset_type": None, "train_dataset_out_columns": None, "eval_dataset_out_columns": None, "repeat": 1,
    "metric_type": None, "save_seconds": None, "profile": False, "auto_tune": False, "push_to_hub": False,
    "enable_alltoall": False, "use_seq_parallel": False, "select_recompute": False,
    "recompute_slice_activation": False, "micro_batch_interleave_num": 1, "expert_num": 1,
    "gradient_accumulation_shard": False,
}
_WHY = {
    "only_save_strategy": "parallel strategy files belong to semi-auto/auto parallelism",
    "auto_trans_ckpt": "checkpoints are whole HF safetensors files; there is nothing to re-shard",
    "src_strategy": "checkpoints are whole HF safetensors files; there is nothing to re-shard",
    "remote_save_url": "ModelArts/OBS upload is not implemented",
    "layer_scale": "layer-wise learning-rate decay is not implemented",
    "lr_scale": "learning-rate scaling by batch size is not implemented; scale learning_rate yourself",
    "warmup_lr_init": "warmup starts at 0 (HF's schedules)",
    "warmup_epochs": "give warmup_steps or warmup_ratio",
    "dataset_task": "pass train_dataset= to Trainer (a mindspore.dataset pipeline, rows or a MindRecord path)",
    "dataset_type": "pass train_dataset= to Trainer (a mindspore.dataset pipeline, rows or a MindRecord path)",
    "train_dataset_out_columns": "columns are passed to the model by name",
    "eval_dataset_out_columns": "columns are passed to the model by name",
    "repeat": "use num_train_epochs",
    "metric_type": "pass compute_metrics= to Trainer",
    "save_seconds": "use save_steps",
    "profile": "the MindSpore profiler is not wired into this Trainer",
    "auto_tune": "dataset auto-tuning is not wired into this Trainer",
    "push_to_hub": "the hub is not reachable from this Trainer",
    "select_recompute": "only whole decoder layers are recomputed (recompute=True)",
    "recompute_slice_activation": "activation slicing belongs to model parallelism",
    "micro_batch_interleave_num": "micro-batch interleaving belongs to model parallelism",
    "expert_num": "MoE settings live in the model config",
}
_MODEL_PARALLEL = ("model_parallel", "context_parallel", "expert_parallel", "pipeline_stage")


@dataclass
class TrainingArguments:
    """MindFormers' `TrainingArguments`: its field names and defaults (see the module docstring for how each maps
    onto our `Trainer`). MindFormers' defaults differ from HF's: lr_scheduler_type="cosine" down to lr_end=1e-6,
    logging_steps=1, save_total_limit=5, dataloader_drop_last=True. `mode=None` (default) takes init_context's mode,
    else MindFormers' 0 (graph). Four defaults differ from MindFormers' because
    they name what runs here: device_target=None (the current device, not "Ascend"), parallel_mode=0 (data
    parallel, not 1 semi-auto), full_batch=False and dataset_strategy="data_parallel" (each rank reads its shard);
    data_parallel=None means all msrun workers."""

    # common
    output_dir: str = "./output"
    overwrite_output_dir: bool = False
    seed: int = 42
    data_seed: Optional[int] = None
    only_save_strategy: bool = False
    auto_trans_ckpt: bool = False
    src_strategy: Optional[str] = None
    resume_from_checkpoint: Optional[str] = None
    resume_training: bool = False
    ignore_data_skip: bool = False
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    remote_save_url: Optional[str] = None
    # runner
    batch_size: Optional[int] = None
    num_train_epochs: float = 3.0
    sink_mode: bool = True
    sink_size: int = 2
    gradient_accumulation_steps: int = 1
    # context
    mode: Optional[Union[int, str]] = None
    use_cpu: bool = False
    device_id: int = 0
    device_target: Optional[str] = None
    enable_graph_kernel: bool = False
    graph_kernel_flags: str = "--opt_level=0"
    max_call_depth: int = 10000
    max_device_memory: str = "1024GB"
    save_graphs: bool = False
    save_graphs_path: str = "./graph"
    # parallel
    use_parallel: bool = False
    parallel_mode: Union[int, str] = 0
    gradients_mean: bool = False
    loss_repeated_mean: bool = False
    enable_alltoall: bool = False
    full_batch: bool = False
    dataset_strategy: Union[str, tuple] = "data_parallel"
    search_mode: str = "sharding_propagation"
    enable_parallel_optimizer: bool = False
    gradient_accumulation_shard: bool = False
    parallel_optimizer_threshold: int = 64
    optimizer_weight_shard_size: int = -1
    strategy_ckpt_save_file: str = "./ckpt_strategy.ckpt"
    data_parallel: Optional[int] = None
    model_parallel: int = 1
    context_parallel: int = 1
    expert_parallel: int = 1
    pipeline_stage: int = 1
    micro_batch_num: int = 1
    gradient_aggregation_group: int = 4
    micro_batch_interleave_num: int = 1
    use_seq_parallel: bool = False
    vocab_emb_dp: bool = True
    # moe
    expert_num: int = 1
    capacity_factor: float = 1.05
    aux_loss_factor: float = 0.05
    num_experts_chosen: int = 1
    # recompute
    recompute: bool = False
    select_recompute: bool = False
    parallel_optimizer_comm_recompute: bool = False
    mp_comm_recompute: bool = True
    recompute_slice_activation: bool = False
    # optimizer
    optim: str = "fp32_adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    layer_scale: bool = False
    layer_decay: float = 0.65
    # scheduler
    lr_scheduler_type: str = "cosine"
    learning_rate: float = 5e-5
    lr_end: float = 1e-6
    warmup_lr_init: float = 0.0
    warmup_epochs: Optional[int] = None
    warmup_ratio: Optional[float] = None
    warmup_steps: int = 0
    lr_scale: bool = False
    lr_scale_factor: int = 256
    # dataset
    dataset_task: Optional[str] = None
    dataset_type: Optional[str] = None
    train_dataset: Optional[str] = None
    train_dataset_in_columns: Optional[list] = None
    train_dataset_out_columns: Optional[list] = None
    eval_dataset: Optional[str] = None
    eval_dataset_in_columns: Optional[list] = None
    eval_dataset_out_columns: Optional[list] = None
    shuffle: bool = True
    dataloader_drop_last: bool = True
    repeat: int = 1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    dataloader_num_workers: int = 8
    python_multiprocessing: bool = False
    numa_enable: bool = False
    prefetch_size: int = 1
    # wrapper
    wrapper_type: str = "MFTrainOneStepCell"
    scale_sense: Union[str, float] = "DynamicLossScaleUpdateCell"
    loss_scale_value: int = 65536
    loss_scale_factor: int = 2
    loss_scale_window: int = 1000
    use_clip_grad: bool = True
    max_grad_norm: float = 1.0
    # metric
    metric_type: Optional[Union[list, str]] = None
    # callbacks
    logging_strategy: str = "steps"
    logging_steps: float = 1
    save_prefix: str = "CKP"
    save_directory: Optional[str] = None
    save_strategy: str = "steps"
    save_steps: float = 500
    save_seconds: Optional[int] = None
    save_total_limit: Optional[int] = 5
    keep_checkpoint_per_n_minutes: int = 0
    save_on_each_node: bool = True
    integrated_save: Optional[bool] = None
    save_network_params: bool = True
    save_trainable_params: bool = False
    async_save: bool = False
    evaluation_strategy: str = "no"
    eval_steps: Optional[float] = None
    eval_epochs: Optional[int] = None
    # profile / auto tune / hub
    profile: bool = False
    auto_tune: bool = False
    push_to_hub: bool = False
    # ours: HF TrainingArguments fields MindFormers has no name for (e.g. {"max_steps": 10, "fp16": True})
    hf_overrides: Optional[dict] = None

    def __post_init__(self):
        if self.mode is not None:
            context.execution_mode(self.mode)
        context.parallel_mode_name(self.parallel_mode)
        if self.optim.lower() not in _OPTIMIZERS:
            raise ValueError(f"optim={self.optim!r}: supported are {sorted(_OPTIMIZERS)}")
        if self.lr_scheduler_type not in _SCHEDULERS:
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r}: supported are {list(_SCHEDULERS)}")
        self.check_supported()

    def check_supported(self):
        """Raises a `ValueError` for a field set to something this package cannot do (naming field and reason)."""
        for name, off in _UNSUPPORTED_OFF.items():
            value = getattr(self, name)
            if value != off:
                if name in ("enable_alltoall", "use_seq_parallel", "gradient_accumulation_shard"):
                    context.check_parallel_support(f"{name}={value!r}")
                raise ValueError(f"{name}={value!r} is not supported: {_WHY[name]}.")
        for name in _MODEL_PARALLEL:
            if getattr(self, name) > 1:
                context.check_parallel_support(f"{name}={getattr(self, name)}")
        if self.enable_parallel_optimizer:
            context.check_parallel_support("enable_parallel_optimizer=True (optimizer sharding)")
        if self.use_parallel:
            mode = context.parallel_mode_name(self.parallel_mode)
            if mode != "data_parallel":
                context.check_parallel_support(f"parallel_mode={mode.upper()!r}")
        if self.device_target is not None and self.device_target.upper() != runtime.device_target().upper():
            raise ValueError(f"device_target={self.device_target!r}: this process runs MindSpore on "
                             f"{runtime.device_target()!r}")
        if self.eval_epochs not in (None, 1):
            raise ValueError(f"eval_epochs={self.eval_epochs}: only 1 (evaluate after every epoch, "
                             "eval_strategy='epoch') or eval_steps are supported")

    def to_hf_args(self, recompute=None, jit_mode=None) -> HFTrainingArguments:
        """Our `TrainingArguments` for this configuration (`recompute` / `jit_mode` override the fields, as
        `Trainer.set_recompute_config` and `init_context` set them)."""
        self.check_supported()
        kwargs = dict(
            output_dir=self.output_dir, seed=self.seed, data_seed=self.data_seed,
            ignore_data_skip=self.ignore_data_skip,
            do_train=self.do_train, do_eval=self.do_eval, do_predict=self.do_predict,
            resume_from_checkpoint=self.resume_from_checkpoint,
            per_device_train_batch_size=self.batch_size if self.batch_size is not None else
            self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_eval_batch_size,
            num_train_epochs=self.num_train_epochs, gradient_accumulation_steps=self.gradient_accumulation_steps,
            use_cpu=self.use_cpu, optim=_OPTIMIZERS[self.optim.lower()], adam_beta1=self.adam_beta1,
            adam_beta2=self.adam_beta2, adam_epsilon=self.adam_epsilon, weight_decay=self.weight_decay,
            lr_scheduler_type=self.lr_scheduler_type, learning_rate=self.learning_rate,
            warmup_steps=self.warmup_steps, warmup_ratio=self.warmup_ratio,
            train_sampling_strategy="random" if self.shuffle else "sequential",
            dataloader_drop_last=self.dataloader_drop_last,
            max_grad_norm=self.max_grad_norm if self.use_clip_grad else 0.0,
            logging_strategy=self.logging_strategy, logging_steps=self.logging_steps,
            save_strategy=self.save_strategy, save_steps=self.save_steps, save_total_limit=self.save_total_limit,
            eval_strategy="epoch" if self.eval_epochs == 1 else self.evaluation_strategy, eval_steps=self.eval_steps,
            gradient_checkpointing=self.recompute if recompute is None else recompute,
            jit_mode=self._jit_mode() if jit_mode is None else jit_mode,
        )
        if self.lr_scheduler_type == "cosine" and self.lr_end:
            kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": self.lr_end / self.learning_rate}
        elif self.lr_scheduler_type == "polynomial":
            kwargs["lr_scheduler_kwargs"] = {"lr_end": self.lr_end}
        if self.warmup_steps and self.warmup_ratio:
            kwargs["warmup_ratio"] = None  # MindFormers: warmup_steps overrides warmup_ratio
        kwargs.update(self.hf_overrides or {})
        return HFTrainingArguments(**kwargs)

    def _jit_mode(self) -> bool:
        # mode: this field, else what init_context set, else MindFormers' default 0 (graph)
        mode = self.mode if self.mode is not None else context.context_mode()
        return mode is None or context.execution_mode(mode) == 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
