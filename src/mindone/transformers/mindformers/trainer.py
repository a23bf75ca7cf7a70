"""MindFormers' `Trainer(task=..., model=..., args=..., train_dataset=...)` on top of our HF-style `Trainer`.

The work is done by `mindone.transformers.Trainer` (its training loop, optimizer, checkpoints in HF format);
this class translates MindFormers' call shapes: a task name picks the model head, `TrainingArguments` (MindFormers')
become ours (`TrainingArguments.to_hf_args`), `set_parallel_config` / `set_recompute_config` are checked against
what the device runs and mapped (recompute = gradient checkpointing), and `predict` runs the task's pipeline with
MindFormers' output keys.
"""

import logging
import math
import os

import numpy as np

from ..backend import runtime
from ..trainer import data as data_utils
from ..trainer.trainer import Trainer as HFTrainer
from ..trainer.training_args import TrainingArguments as HFTrainingArguments
from . import context
from .training_args import TrainingArguments

logger = logging.getLogger(__name__)

# MindFormers task -> model task of our Auto classes
TASK_MODELS = {
    "text_generation": "causal-lm",
    "text_classification": "sequence-classification",
    "token_classification": "token-classification",
    "question_answering": "question-answering",
    "fill_mask": "masked-lm",
    "general": None,
}


class Trainer:
    """MindFormers' `Trainer`: `train()`, `finetune()`, `evaluate()`, `predict()`, `set_parallel_config()`,
    `set_recompute_config()`.

    Args:
        args: MindFormers `TrainingArguments` (this package's `mindformers.TrainingArguments`), or our HF-style
            `TrainingArguments` (used as is). Default: `TrainingArguments()`.
        task: "text_generation", "text_classification", "token_classification", "question_answering",
            "fill_mask" or "general" (a model instance is then required).
        model: a model of this package, or a checkpoint directory / hub id loaded with the task's head.
            MindFormers' model-zoo names ("llama2_7b") have no download here: pass a checkpoint directory.
        model_name: accepted for MindFormers compatibility (only logged).
        tokenizer: a `transformers` tokenizer; default: the one saved beside a `model` path.
        train_dataset, eval_dataset: a `mindspore.dataset` pipeline (unbatched rows), rows (list of dicts, HF
            `datasets.Dataset`) or a MindRecord file / directory of `.mindrecord` files. For text_generation, rows
            with `input_ids` only get `labels` = `input_ids` with padding positions set to -100 (MindFormers'
            causal-LM datasets carry input_ids only and mask the pad token in the loss).
        data_collator, compute_metrics, callbacks: as our `Trainer`'s (a function of `EvalPrediction`,
            `TrainerCallback`s); MindSpore `Metric` dicts and Model callbacks raise a `TypeError`.
        optimizers: a MindSpore optimizer over the model's trainable parameters (MindFormers passes one optimizer),
            or our `(optimizer, lr_scheduler)` pair.
    """

    def __init__(self, args=None, task="general", model=None, model_name=None, tokenizer=None, train_dataset=None,
                 eval_dataset=None, data_collator=None, optimizers=None, compute_metrics=None, callbacks=None,
                 **kwargs):
        unsupported = sorted(k for k, v in kwargs.items() if v not in (None, False, "", []))
        if unsupported:
            raise TypeError(f"Trainer arguments {unsupported} are not supported by this MindFormers-style adapter "
                            "(pet_method: use mindone.transformers.peft; image/audio processors: use pipeline())")
        if task not in TASK_MODELS:
            raise ValueError(f"task={task!r}: supported tasks are {sorted(TASK_MODELS)}")
        if isinstance(args, str):
            raise ValueError(f"args={args!r}: MindFormers YAML configs are not read here; pass TrainingArguments")
        if isinstance(compute_metrics, (dict, set)):
            raise TypeError("compute_metrics: MindSpore Metric objects are not run by this Trainer; pass a function "
                            "EvalPrediction -> dict of metrics (HF's compute_metrics)")
        self.callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else \
            ([callbacks] if callbacks is not None else [])
        from mindspore.train import Callback

        for callback in self.callbacks:
            cls = callback if isinstance(callback, type) else type(callback)
            if issubclass(cls, Callback):
                raise TypeError(f"callbacks: {cls.__name__} is a MindSpore Model callback; this Trainer "
                                "runs TrainerCallback subclasses (mindone.transformers.TrainerCallback)")
        self.task = task
        self.model_name = model_name
        self.args = args if args is not None else TrainingArguments()
        self.tokenizer = tokenizer
        self.model = self._build_model(model)
        if model_name is not None:
            logger.info("model_name=%r is informational here; the model is %s", model_name, type(self.model).__name__)
        self.train_dataset = self._dataset(train_dataset, "train")
        self.eval_dataset = self._dataset(eval_dataset, "eval")
        self.data_collator = data_collator
        self.optimizers = optimizers
        self.compute_metrics = compute_metrics
        self._recompute = None
        self._inner = None

    # ------------------------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------------------------

    def _build_model(self, model):
        if model is None:
            raise ValueError(f"Trainer(task={self.task!r}) needs model=: a checkpoint directory or a model instance "
                             "(MindFormers' model zoo is not downloadable here)")
        if not isinstance(model, (str, os.PathLike)):
            return model
        model_task = TASK_MODELS[self.task]
        if model_task is None:
            raise ValueError("task='general' needs a model instance; give a task (e.g. 'text_generation') to load "
                             f"{model!r}")
        from transformers import AutoConfig

        from ..models.auto.modeling_auto import model_class

        path = os.fspath(model)
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as e:
            raise ValueError(f"model={path!r} is not a checkpoint directory or reachable hub id (MindFormers model-zoo "
                             f"names are not downloadable here): {e}") from e
        loaded = model_class(config.model_type, model_task).from_pretrained(path, config=config)
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError, TypeError):
                logger.info("no tokenizer beside %s; predict() with text needs tokenizer=", path)
        return loaded

    def _dataset(self, dataset, split):
        if dataset is None and isinstance(self.args, TrainingArguments):
            dataset = getattr(self.args, f"{split}_dataset")
        if not isinstance(dataset, (str, os.PathLike)):
            return dataset
        columns = getattr(self.args, f"{split}_dataset_in_columns", None) or None
        return load_mindrecord(os.fspath(dataset), columns)

    # ------------------------------------------------------------------------------------------------------------
    # parallel and recompute configuration
    # ------------------------------------------------------------------------------------------------------------

    def set_parallel_config(self, data_parallel=1, model_parallel=1, context_parallel=1, expert_parallel=1,
                            pipeline_stage=1, micro_batch_interleave_num=1, micro_batch_num=1, use_seq_parallel=False,
                            optimizer_shard=False, gradient_aggregation_group=4, vocab_emb_dp=True):
        """MindFormers' parallel settings: only data parallelism runs here, with `data_parallel` equal to the
        number of msrun workers (1 without msrun). `micro_batch_num` only matters with pipeline stages (as in
        MindFormers); `gradient_aggregation_group` and `vocab_emb_dp` have no effect under data parallelism."""
        for name, value in (("model_parallel", model_parallel), ("context_parallel", context_parallel),
                            ("expert_parallel", expert_parallel), ("pipeline_stage", pipeline_stage),
                            ("micro_batch_interleave_num", micro_batch_interleave_num)):
            if value > 1:
                context.check_parallel_support(f"{name}={value}")
        if use_seq_parallel:
            context.check_parallel_support("use_seq_parallel=True")
        if optimizer_shard:
            context.check_parallel_support("optimizer_shard=True")
        world = _world_size()
        if data_parallel != world:
            raise ValueError(f"data_parallel={data_parallel}, but {world} process(es) run this training (data "
                             f"parallelism is one replica per msrun worker): set data_parallel={world}")
        self._inner = None

    def set_recompute_config(self, recompute=False, parallel_optimizer_comm_recompute=False, select_recompute=False,
                             mp_comm_recompute=True, recompute_slice_activation=False):
        """`recompute=True` recomputes each decoder layer in the backward pass (our gradient checkpointing, MindSpore
        `Cell.recompute`). `select_recompute` and `recompute_slice_activation` are not implemented; the
        communication recompute switches have nothing to act on under data parallelism."""
        if select_recompute:
            raise ValueError("select_recompute=True is not supported: only whole decoder layers are recomputed "
                             "(recompute=True)")
        if recompute_slice_activation:
            context.check_parallel_support("recompute_slice_activation=True")
        if recompute and not getattr(self.model, "supports_gradient_checkpointing", False):
            raise ValueError(f"recompute=True: {type(self.model).__name__} does not support gradient checkpointing")
        self._recompute = bool(recompute)
        self._inner = None

    # ------------------------------------------------------------------------------------------------------------
    # the HF-style trainer doing the work
    # ------------------------------------------------------------------------------------------------------------

    def hf_args(self) -> HFTrainingArguments:
        """Our `TrainingArguments` this trainer runs with."""
        if isinstance(self.args, HFTrainingArguments):
            if self._recompute is not None:
                self.args.gradient_checkpointing = self.args.activation_checkpointing = self._recompute
            return self.args
        if self.args.use_parallel and not context.launched_distributed():
            raise ValueError(context.NOT_LAUNCHED.format(flag="TrainingArguments(use_parallel=True)"))
        if self.args.data_parallel not in (None, _world_size()):
            raise ValueError(f"data_parallel={self.args.data_parallel}, but {_world_size()} process(es) run this "
                             "training")
        args = self.args.to_hf_args(recompute=self._recompute)
        if args.max_steps <= 0 and data_utils.is_mindspore_dataset(self.train_dataset):
            # our Trainer counts a mindspore.dataset pipeline's steps only through max_steps; MindFormers counts
            # epochs of it: the same number of optimizer steps
            args.max_steps = _steps_for_epochs(self.train_dataset.get_dataset_size(), args)
        return args

    def _trainer(self):
        if self._inner is None:
            collator = self.data_collator
            if collator is None:
                base = data_utils.default_collator(self.tokenizer)
                collator = _CausalLMLabels(base, getattr(getattr(self.model, "config", None), "pad_token_id", None)) \
                    if self.task == "text_generation" else base
            self._inner = HFTrainer(model=self.model, args=self.hf_args(), data_collator=collator,
                                    train_dataset=self.train_dataset, eval_dataset=self.eval_dataset,
                                    processing_class=self.tokenizer, compute_metrics=self.compute_metrics,
                                    callbacks=self.callbacks,
                                    optimizers=self.optimizers if isinstance(self.optimizers, tuple) else
                                    (self.optimizers, None))
        return self._inner

    @property
    def hf_trainer(self) -> HFTrainer:
        """The HF-style `Trainer` that runs (built on first use; its `state.log_history` holds the logs)."""
        return self._trainer()

    # ------------------------------------------------------------------------------------------------------------
    # MindFormers' entry points
    # ------------------------------------------------------------------------------------------------------------

    def train(self, train_checkpoint=False, resume_from_checkpoint=None, resume_training=None, ignore_data_skip=None,
              data_skip_steps=None, auto_trans_ckpt=None, src_strategy=None, transform_process_num=None,
              do_eval=False):
        """Trains; `resume_from_checkpoint` (or the older `train_checkpoint`) is a `checkpoint-N` directory or True
        for the newest in output_dir; `resume_training=True` resumes from the newest too. Returns our
        `TrainOutput`."""
        _no_checkpoint_transform(auto_trans_ckpt, src_strategy, transform_process_num)
        if data_skip_steps is not None:
            raise ValueError("data_skip_steps is not supported: resuming skips exactly the batches the checkpoint "
                             "has seen (or none with ignore_data_skip=True)")
        if train_checkpoint not in (False, None):
            resume_from_checkpoint = train_checkpoint
        if resume_from_checkpoint is None and (resume_training or getattr(self.args, "resume_training", False)):
            resume_from_checkpoint = True
        if resume_from_checkpoint is None:
            resume_from_checkpoint = getattr(self.args, "resume_from_checkpoint", None)
        trainer = self._trainer()
        if ignore_data_skip is not None:
            trainer.args.ignore_data_skip = ignore_data_skip
        if do_eval:
            if self.eval_dataset is None:
                raise ValueError("do_eval=True needs eval_dataset")
            if trainer.args.eval_strategy.value == "no":
                raise ValueError("do_eval=True: set evaluation_strategy ('steps' with eval_steps, or 'epoch') in "
                                 "TrainingArguments so evaluation has a schedule")
        return trainer.train(resume_from_checkpoint=resume_from_checkpoint)

    def finetune(self, finetune_checkpoint=False, resume_from_checkpoint=None, resume_training=None,
                 ignore_data_skip=None, data_skip_steps=None, auto_trans_ckpt=None, src_strategy=None,
                 transform_process_num=None, do_eval=False):
        """Fine-tunes: `finetune_checkpoint` (a checkpoint directory) gives the starting weights; otherwise as
        `train()`."""
        if finetune_checkpoint not in (False, None) and not (resume_training or resume_from_checkpoint):
            self._load_weights(finetune_checkpoint)
        elif finetune_checkpoint not in (False, None):
            resume_from_checkpoint = finetune_checkpoint
        return self.train(resume_from_checkpoint=resume_from_checkpoint, resume_training=resume_training,
                          ignore_data_skip=ignore_data_skip, data_skip_steps=data_skip_steps,
                          auto_trans_ckpt=auto_trans_ckpt, src_strategy=src_strategy,
                          transform_process_num=transform_process_num, do_eval=do_eval)

    def evaluate(self, eval_dataset=None, eval_checkpoint=False, auto_trans_ckpt=None, src_strategy=None,
                 transform_process_num=None, **kwargs):
        """Evaluates on `eval_dataset` (default: the trainer's); `eval_checkpoint` gives the weights. Returns the
        metrics dict ({"eval_loss": ..., ...})."""
        _no_checkpoint_transform(auto_trans_ckpt, src_strategy, transform_process_num)
        if eval_checkpoint not in (False, None):
            self._load_weights(eval_checkpoint)
        dataset = self._dataset(eval_dataset, "eval") if eval_dataset is not None else None
        return self._trainer().evaluate(eval_dataset=dataset, **kwargs)

    def predict(self, predict_checkpoint=None, auto_trans_ckpt=None, src_strategy=None, transform_process_num=None,
                input_data=None, batch_size=None, **kwargs):
        """Runs the task's pipeline on `input_data` (a string or a list of strings) with generation/pipeline
        arguments `kwargs` (e.g. max_length, do_sample, top_k); text_generation returns
        `[{"text_generation_text": [text]}, ...]` as MindFormers does."""
        from .pipeline import pipeline

        _no_checkpoint_transform(auto_trans_ckpt, src_strategy, transform_process_num)
        if predict_checkpoint not in (False, None):
            self._load_weights(predict_checkpoint)
        if input_data is None:
            raise ValueError("predict() needs input_data (a string or a list of strings)")
        if self.task == "general":
            raise ValueError("predict() needs a task (e.g. Trainer(task='text_generation', ...))")
        if self.tokenizer is None:
            raise ValueError("predict() needs a tokenizer: pass Trainer(tokenizer=...)")
        pipe = pipeline(self.task, model=self.model, tokenizer=self.tokenizer,
                        batch_size=batch_size if batch_size is not None else 1)
        return pipe(input_data, **kwargs)

    def _load_weights(self, checkpoint):
        if checkpoint is True:
            from ..trainer.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.hf_args().output_dir)
            if checkpoint is None:
                raise ValueError(f"no checkpoint-N directory in {self.hf_args().output_dir}")
        self._trainer()._load_model_from_checkpoint(os.fspath(checkpoint))


class _CausalLMLabels:
    """Collator wrapper for text_generation: labels = input_ids (padding -> -100) when the rows carry none."""

    def __init__(self, collator, pad_token_id):
        self.collator = collator
        self.pad_token_id = pad_token_id
        self.tokenizer = getattr(collator, "tokenizer", None)

    def __call__(self, rows):
        batch = self.collator(rows)
        if "labels" in batch or "input_ids" not in batch:
            return batch
        ids = np.asarray(batch["input_ids"])
        labels = ids.copy()
        if "attention_mask" in batch:
            labels[np.asarray(batch["attention_mask"]) == 0] = -100
        elif self.pad_token_id is not None:
            labels[ids == self.pad_token_id] = -100
        batch["labels"] = labels
        return batch


def load_mindrecord(path, columns=None):
    """A `mindspore.dataset.MindDataset` over a MindRecord file or the `.mindrecord` files of a directory."""
    import mindspore.dataset as msds

    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".mindrecord"))
        if not files:
            raise ValueError(f"dataset directory {path!r} holds no .mindrecord files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ValueError(f"dataset path {path!r} does not exist (expected a MindRecord file or a directory of "
                         ".mindrecord files)")
    return msds.MindDataset(files, columns_list=columns, shuffle=False)


def _steps_for_epochs(num_rows, args):
    global_batch = args.per_device_train_batch_size * args.world_size
    batches = num_rows // global_batch if args.dataloader_drop_last or args.world_size > 1 else \
        -(-num_rows // global_batch)
    updates = -(-batches // args.gradient_accumulation_steps)
    return max(1, math.ceil(args.num_train_epochs * updates))


def _no_checkpoint_transform(auto_trans_ckpt, src_strategy, transform_process_num):
    if auto_trans_ckpt or src_strategy or transform_process_num:
        raise ValueError("auto_trans_ckpt / src_strategy / transform_process_num re-shard checkpoints for model "
                         "parallelism; checkpoints here are whole HF safetensors files")


def _world_size() -> int:
    if not context.launched_distributed():
        return 1
    from mindspore.communication import GlobalComm, get_group_size, init

    runtime.configure()
    if not GlobalComm.INITED:
        init()
    return get_group_size()
