"""`Trainer`: HF's training loop, evaluation, prediction and checkpoints for MindSpore models.

The loop follows HF 5's `Trainer` step for step (so losses, grad norms, learning rates, log_history and checkpoints
line up with torch's): micro-batches are grouped per optimizer step, the loss is normalised by the number of label
tokens over the whole accumulated batch when the model accepts `num_items_in_batch` (else divided by the number of
micro-batches), gradients are clipped by global norm, the scheduler steps after the optimizer, and the learning rate
logged is the one the step used. The numerical work of a step is `train_step.TrainStep` (compiled with
`mindspore.jit`).

A checkpoint `output_dir/checkpoint-N/` holds the model as `save_pretrained` writes it (loadable by torch
`transformers`), `optimizer.safetensors`, `scheduler.json`, `scaler.json` (fp16), `rng_state.json` (per rank
`rng_state_R.json`), `trainer_state.json` (HF's format) and `training_args.json`. It is written to a temporary
directory and renamed, so a crash while saving leaves the previous checkpoints intact.
"""

import inspect
import json
import logging
import math
import os
import random
import shutil
import time

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor

from ..backend import runtime
from . import data as data_utils
from .optimization import (
    create_optimizer,
    LambdaLR,
    get_scheduler,
    load_optimizer_state,
    named_trainable_parameters,
    optimizer_state,
)
from . import zero
from .train_step import DynamicLossScaler, TrainStep
from .trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerControl,
    TrainerState,
)
from .trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    EvalPrediction,
    PredictionOutput,
    TrainOutput,
    get_last_checkpoint,
    set_seed,
    sorted_checkpoints,
    speed_metrics,
)
from .training_args import SaveStrategy, TrainingArguments

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"
OPTIMIZER_NAME = "optimizer.safetensors"
SCHEDULER_NAME = "scheduler.json"
SCALER_NAME = "scaler.json"


class Trainer:
    """Trains, evaluates and runs predictions on a `mindone.transformers` model, like HF's `Trainer`.

    Args:
        model: a `PreTrainedModel` (or any Cell whose forward returns a loss when given labels).
        args: `TrainingArguments` (default: `TrainingArguments("trainer_output")`).
        data_collator: turns a list of dataset rows into a batch dict of numpy arrays (HF collators with
            `return_tensors="np"`); default: `DataCollatorWithPadding` with a tokenizer, else `default_data_collator`.
        train_dataset, eval_dataset: HF `datasets.Dataset`, a list of dicts, an iterable of dicts or a
            `mindspore.dataset` pipeline. `eval_dataset` may be a dict of named datasets.
        processing_class: tokenizer/processor; saved with the model and used for padding.
        model_init: builds a fresh model for each `train()` (called after seeding).
        compute_loss_func: `f(outputs, labels, num_items_in_batch) -> loss` instead of the model's loss.
        compute_metrics: `f(EvalPrediction) -> dict` of metrics.
        callbacks: `TrainerCallback` instances or classes, added to the default ones.
        optimizers: `(optimizer, lr_scheduler)`: a MindSpore optimizer over the model's trainable parameters and a
            scheduler with `step()`/`get_last_lr()`; either may be None to use the defaults.
        preprocess_logits_for_metrics: `f(logits, labels) -> logits` applied per batch before gathering.
    """

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, model_init=None, compute_loss_func=None, compute_metrics=None,
                 callbacks=None, optimizers=(None, None), preprocess_logits_for_metrics=None):
        if args is None:
            args = TrainingArguments(output_dir="trainer_output")
        self.args = args
        runtime.configure()
        set_seed(args.seed)
        self.model_init = model_init
        if model is None:
            if model_init is None:
                raise ValueError("Trainer needs either a model or a model_init")
            model = self.call_model_init()
        self.model = model
        self.data_collator = data_collator if data_collator is not None else \
            data_utils.default_collator(processing_class)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.loss_scaler = None
        self._train_step = None
        self._master_params = None
        self._eval_fns = {}

        default_callbacks = [DefaultFlowCallback, PrinterCallback if args.disable_tqdm else ProgressCallback]
        if "tensorboard" in args.report_to:
            from .integrations import TensorBoardCallback

            default_callbacks.append(TensorBoardCallback)
        self.callback_handler = CallbackHandler(default_callbacks + list(callbacks or []), self.model,
                                                processing_class, self.optimizer, self.lr_scheduler)
        self.state = TrainerState(is_local_process_zero=self.is_local_process_zero(),
                                  is_world_process_zero=self.is_world_process_zero())
        self.control = TrainerControl()
        self._setup_model_facts()
        if args.max_steps > 0 and args.num_train_epochs > 0:
            logger.info("max_steps is given, it will override any value given in num_train_epochs")
        if train_dataset is not None and not data_utils.has_length(train_dataset) and args.max_steps <= 0:
            raise ValueError("The train_dataset does not implement __len__, max_steps has to be specified.")
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if getattr(self.model, "config", None) is not None:
            self.model.config.use_cache = self.args.use_cache

    def _setup_model_facts(self):
        model = _forward_model(self.model)
        forward = inspect.signature(model.construct).parameters
        if hasattr(model, "accepts_loss_kwargs"):
            self.model_accepts_loss_kwargs = bool(model.accepts_loss_kwargs)
        else:
            self.model_accepts_loss_kwargs = any(p.kind == p.VAR_KEYWORD for p in forward.values())
        if self.args.label_names is not None:
            self.label_names = list(self.args.label_names)
        elif "QuestionAnswering" in type(model).__name__:
            self.label_names = ["start_positions", "end_positions"]
        else:
            self.label_names = [n for n in forward if "label" in n]
        config = getattr(model, "config", None)
        self._loss_shifts_labels = "ForCausalLM" in type(model).__name__ and \
            not getattr(config, "is_encoder_decoder", False)
        self._bucket_lengths = None

    def _bucketed(self, inputs):
        """The batch padded up to its sequence-length bucket (`args.seq_len_buckets`, compiled steps only), so that
        batches of varying length reuse a few compiled graphs; see `data.pad_to_bucket`."""
        if not self.args.jit_mode or not self.args.seq_len_buckets:
            return inputs
        config = getattr(_forward_model(self.model), "config", None)
        if self._bucket_lengths is None:
            text_config = getattr(config, "text_config", None) if config is not None else None
            max_length = getattr(config, "max_position_embeddings", None) or \
                getattr(text_config, "max_position_embeddings", None)
            self._bucket_lengths = data_utils.bucket_lengths(self.args.seq_len_buckets,
                                                             max_length if isinstance(max_length, int) else None)
        return data_utils.pad_to_bucket(inputs, self._bucket_lengths, getattr(config, "pad_token_id", None),
                                        causal=self._loss_shifts_labels,
                                        encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)))

    def call_model_init(self):
        model = self.model_init()
        if model is None:
            raise RuntimeError("model_init should not return None.")
        return model

    # ------------------------------------------------------------------------------------------------------------
    # callbacks and process roles
    # ------------------------------------------------------------------------------------------------------------

    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    def is_local_process_zero(self) -> bool:
        return self.args.local_process_index == 0

    def is_world_process_zero(self) -> bool:
        return self.args.process_index == 0

    # ------------------------------------------------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------------------------------------------------

    def _prepared(self, dataset, description):
        if self.args.remove_unused_columns:
            columns = data_utils.signature_columns(_forward_model(self.model), self.label_names)
            dataset = data_utils.remove_unused_columns(dataset, columns, description)
        return dataset

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return data_utils.BatchLoader(
            self._prepared(self.train_dataset, "training"), self.args.train_batch_size, self.data_collator,
            shuffle=self.args.train_sampling_strategy == "random", seed=seed,
            drop_last=self.args.dataloader_drop_last, world_size=self.args.world_size, rank=self.args.process_index)

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        return data_utils.BatchLoader(self._prepared(dataset, "evaluation"), self.args.eval_batch_size,
                                      self.data_collator, drop_last=self.args.dataloader_drop_last)

    def get_test_dataloader(self, test_dataset):
        return data_utils.BatchLoader(self._prepared(test_dataset, "test"), self.args.eval_batch_size,
                                      self.data_collator, drop_last=self.args.dataloader_drop_last)

    # ------------------------------------------------------------------------------------------------------------
    # optimizer, scheduler, loss
    # ------------------------------------------------------------------------------------------------------------

    def create_optimizer(self):
        if self.optimizer is None and self.args.zero_stage:
            self.optimizer = zero.ShardedAdamW.from_model(self.args, self.model)
        if self.optimizer is None:
            self.optimizer = create_optimizer(self.args, self.model, params=self._master_params)
        return self.optimizer

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type, optimizer if optimizer is not None else self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, scheduler_specific_kwargs=self.args.lr_scheduler_kwargs)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps):
        self.create_optimizer()
        self.create_scheduler(num_training_steps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss (outputs["loss"]), or `compute_loss_func(outputs, labels, num_items_in_batch)`.

        Runs inside the compiled training step: overrides must be traceable by `mindspore.jit` (or set
        `jit_mode=False`).
        """
        # (dict merging is avoided on purpose: `{**a, k: v}` and `dict(a)` mis-compile under mindspore.jit)
        labels = None
        if self.compute_loss_func is not None and "labels" in inputs:
            labels = inputs["labels"]
            inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        else:
            outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        else:
            if isinstance(outputs, dict) and "loss" not in outputs:
                raise ValueError("The model did not return a loss from the inputs, only the following keys: "
                                 f"{','.join(outputs.keys())}. For reference, the inputs it received are "
                                 f"{','.join(inputs.keys())}.")
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        return (loss, outputs) if return_outputs else loss

    def _num_items_in_batch(self, batches):
        """Label tokens over all micro-batches of one optimizer step (and all ranks), HF's count."""
        if not batches or "labels" not in batches[0] or not (self.model_accepts_loss_kwargs or self.compute_loss_func):
            return None
        count = 0
        for batch in batches:
            labels = batch["shift_labels"] if "shift_labels" in batch else \
                batch["labels"][..., 1:] if self._loss_shifts_labels else batch["labels"]
            count += int((np.asarray(labels) != -100).sum())
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = int(_all_reduce_sum(np.array([count], np.float32))[0])
        return count

    # ------------------------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Runs training; `resume_from_checkpoint` is a checkpoint directory, or True for the last one in
        output_dir. Returns `TrainOutput(global_step, training_loss, metrics)`."""
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments: {sorted(kwargs)}")
        if trial is not None:
            raise ValueError("hyper-parameter search is not implemented")
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        args = self.args
        self.is_in_train = True
        if self.model_init is not None:
            set_seed(args.seed)
            self.model = self.call_model_init()
            self.callback_handler.model = self.model
            self.optimizer, self.lr_scheduler, self._train_step = None, None, None
            self._setup_model_facts()
        if args.activation_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.activation_checkpointing_kwargs)
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({args.output_dir})")
        if resume_from_checkpoint is not None:
            self._load_model_from_checkpoint(resume_from_checkpoint)
        try:
            return self._inner_training_loop(resume_from_checkpoint, ignore_keys_for_eval)
        finally:
            self._gather_zero_parameters()
            self._end_mixed_precision()
            self.is_in_train = False

    def _training_lengths(self, loader):
        args = self.args
        accum = args.gradient_accumulation_steps
        total_batch = args.train_batch_size * accum * args.world_size
        if data_utils.has_length(loader.dataset) and not data_utils.is_mindspore_dataset(loader.dataset):
            len_loader = len(loader)
            updates_per_epoch = max(len_loader // accum + int(len_loader % accum > 0), 1)
            if args.max_steps > 0:
                max_steps = args.max_steps
                num_epochs = max_steps // updates_per_epoch + int(max_steps % updates_per_epoch > 0)
                num_train_samples = max_steps * total_batch
            else:
                max_steps = math.ceil(args.num_train_epochs * updates_per_epoch)
                num_epochs = math.ceil(args.num_train_epochs)
                num_train_samples = loader.num_examples() * args.num_train_epochs
            steps_in_epoch = len_loader
            num_examples = loader.num_examples()
        elif args.max_steps > 0:
            max_steps = args.max_steps
            num_epochs = 2 ** 31
            updates_per_epoch = max_steps
            num_train_samples = num_examples = max_steps * total_batch
            steps_in_epoch = max_steps * accum
        else:
            raise ValueError(f"args.max_steps must be set to a positive value if the dataset has no length, was "
                             f"{args.max_steps}")
        return num_epochs, updates_per_epoch, num_examples, num_train_samples, total_batch, steps_in_epoch, max_steps

    def _inner_training_loop(self, resume_from_checkpoint, ignore_keys_for_eval):
        args = self.args
        loader = self.get_train_dataloader()
        (num_epochs, updates_per_epoch, num_examples, num_train_samples, total_batch, steps_in_epoch,
         max_steps) = self._training_lengths(loader)

        self.state = TrainerState(
            stateful_callbacks=[cb for cb in self.callback_handler.callbacks + [self.control] if hasattr(cb, "state")],
            train_batch_size=args.train_batch_size)
        self.state.compute_steps(args, max_steps)
        epochs_trained, steps_trained_in_epoch = 0, 0
        if resume_from_checkpoint is not None and os.path.isfile(
                os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME)):
            self.state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
            epochs_trained = self.state.global_step // updates_per_epoch
            if not args.ignore_data_skip:
                steps_trained_in_epoch = (self.state.global_step % updates_per_epoch) * args.gradient_accumulation_steps
        self.state.max_steps = max_steps
        self.state.num_train_epochs = num_epochs
        self.state.is_local_process_zero = self.is_local_process_zero()
        self.state.is_world_process_zero = self.is_world_process_zero()

        self._setup_training(max_steps)
        if resume_from_checkpoint is not None:
            self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self.callback_handler.train_dataloader = loader
        for name in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, name, getattr(self, name))

        logger.info("***** Running training *****")
        logger.info("  Num examples = %s", f"{num_examples:,}")
        logger.info("  Num Epochs = %s", f"{num_epochs:,}")
        logger.info("  Instantaneous batch size per device = %s", f"{args.per_device_train_batch_size:,}")
        logger.info("  Total train batch size (w. parallel, distributed & accumulation) = %s", f"{total_batch:,}")
        logger.info("  Gradient Accumulation steps = %s", args.gradient_accumulation_steps)
        logger.info("  Total optimization steps = %s", f"{max_steps:,}")
        logger.info("  Number of trainable parameters = %s",
                    f"{sum(int(np.prod(p.shape)) for _, p in named_trainable_parameters(self.model)):,}")

        start_time = time.time()
        self._initial_global_step = self.state.global_step
        self._tr_loss = 0.0
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if args.eval_on_start:
            self._evaluate(ignore_keys_for_eval)

        # resuming from the final checkpoint trains nothing more
        last_epoch = num_epochs if self.state.global_step < max_steps else epochs_trained
        for epoch in range(epochs_trained, last_epoch):
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            skip = steps_trained_in_epoch if epoch == epochs_trained else 0
            if epoch == epochs_trained and resume_from_checkpoint is not None:
                self._load_rng_state(resume_from_checkpoint)
            self._run_epoch(loader, epoch, steps_in_epoch, updates_per_epoch, skip, ignore_keys_for_eval)
            if self.control.should_training_stop:
                break
        return self._finalize_training(num_train_samples, start_time)

    def _setup_training(self, max_steps):
        args = self.args
        self.model.set_train(True)
        if args.world_size > 1 and self._train_step is None:
            _broadcast_parameters_from_rank0(self.model, args.process_index)
        if args.fp16:
            self._begin_mixed_precision()
        self.create_optimizer()
        self.create_scheduler(max_steps)
        if self._train_step is None and args.zero_stage:
            self._train_step = zero.ZeroTrainStep(self._step_loss, self._optimizer_model_params(), self.optimizer,
                                                  args.max_grad_norm, args.zero_stage, world_size=args.world_size,
                                                  use_jit=args.jit_mode, model=self.model)
        if self._train_step is None:
            params = self._optimizer_model_params()
            self._train_step = TrainStep(self._step_loss, params, self.optimizer, args.max_grad_norm,
                                         master_params=None if self._master_params is None else
                                         list(self.optimizer.parameters), world_size=args.world_size,
                                         use_jit=args.jit_mode)
        self.loss_scaler = DynamicLossScaler() if args.fp16 else None

    def _optimizer_model_params(self):
        """The model's parameters in the optimizer's order (for fp16, the float16 model twin of each master)."""
        if self._master_params is None:
            return list(self.optimizer.parameters)
        twin = {id(m): p for (_, p), m in zip(named_trainable_parameters(self.model), self._master_params)}
        return [twin[id(m)] for m in self.optimizer.parameters]

    def _gather_zero_parameters(self):
        """ZeRO stage 3 (jit_mode=False) releases the model's parameters between steps; gather them (a collective:
        every rank calls this at the same points) before anything reads the model outside the training step."""
        if isinstance(self._train_step, zero.ZeroTrainStep):
            self._train_step.gather_parameters()

    def _begin_mixed_precision(self):
        if self._master_params is not None:
            return
        named = named_trainable_parameters(self.model)
        self._master_params = [Parameter(Tensor(p.asnumpy().astype(np.float32)), name=f"master.{n}")
                               for n, p in named]
        for _, p in named:
            p.set_dtype(ms.float16)

    def _end_mixed_precision(self):
        """Back to a float32 model holding the master weights (as HF's fp16 model is float32 after training)."""
        if self._master_params is None:
            return
        for (_, p), master in zip(named_trainable_parameters(self.model), self._master_params):
            p.set_dtype(ms.float32)
            p.set_data(Tensor(master.asnumpy()))
        self._master_params = None
        self._train_step = None
        self.optimizer = None
        self.lr_scheduler = None

    def _step_loss(self, inputs, num_items_in_batch):
        return self.compute_loss(self.model, inputs, num_items_in_batch=num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None, first=True):
        """Forward and backward of one micro-batch (gradients go to the step's buffers); returns the loss as
        float, normalised for gradient accumulation like HF's."""
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            factor = 1.0
            if self.args.average_tokens_across_devices:
                factor = float(self.args.world_size)
        else:
            num_items_in_batch = None if self.compute_loss_func is None else num_items_in_batch
            factor = 1.0 / self.current_gradient_accumulation_steps
        scale = self.loss_scaler.scale if self.loss_scaler is not None else 1.0
        inputs = self._bucketed(inputs)
        tensors = {k: Tensor(v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
        loss = self._train_step.grad_step(tensors, factor, scale, num_items_in_batch, first=first)
        return float(loss.asnumpy())

    def _run_epoch(self, loader, epoch, steps_in_epoch, updates_per_epoch, skip, ignore_keys_for_eval):
        args = self.args
        accum = args.gradient_accumulation_steps
        loader.set_epoch(epoch)
        iterator = iter(loader)
        step = -1
        for _ in range(skip):
            next(iterator, None)
            step += 1
        grad_norm, learning_rate = None, None
        remainder = steps_in_epoch % accum or accum
        for update_step in range(skip // accum, updates_per_epoch):
            num_batches = accum if update_step != updates_per_epoch - 1 else remainder
            batches = []
            for _ in range(num_batches):
                batch = next(iterator, None)
                if batch is None:
                    break
                batches.append(batch)
            if not batches:
                break
            num_items = self._num_items_in_batch(batches)
            self.current_gradient_accumulation_steps = len(batches)
            for i, inputs in enumerate(batches):
                step += 1
                if step % accum == 0:
                    self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
                loss = self.training_step(self.model, inputs, num_items, first=i == 0)
                if args.logging_nan_inf_filter and not math.isfinite(loss):
                    self._tr_loss += self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
                else:
                    self._tr_loss += loss
                if i == len(batches) - 1:
                    grad_norm, learning_rate = self._optimizer_step()
                    self.state.global_step += 1
                    self.state.epoch = epoch + (step + 1) / steps_in_epoch
                    self.control = self.callback_handler.on_step_end(args, self.state, self.control)
                    self._maybe_log_save_evaluate(grad_norm, learning_rate, ignore_keys_for_eval)
                else:
                    self.control = self.callback_handler.on_substep_end(args, self.state, self.control)
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break
        if step < 0:
            logger.warning("There seems not to be a single sample in your epoch_iterator, stopping training at step "
                           "%d!", self.state.global_step)
            self.control.should_training_stop = True
        self.control = self.callback_handler.on_epoch_end(args, self.state, self.control)
        self._maybe_log_save_evaluate(grad_norm, learning_rate, ignore_keys_for_eval)

    def _optimizer_step(self):
        """Clip, step the optimizer (unless fp16 overflowed) and the scheduler; returns (grad_norm, lr used)."""
        args = self.args
        scale = self.loss_scaler.scale if self.loss_scaler is not None else 1.0
        grad_norm = self._train_step.prepare(scale)
        self.control = self.callback_handler.on_pre_optimizer_step(args, self.state, self.control)
        skipped = False
        if self.loss_scaler is not None:
            finite = math.isfinite(grad_norm)
            self.loss_scaler.update(finite)
            skipped = not finite
            if skipped:
                logger.info("fp16: gradient overflow, skipping this step; loss scale lowered to %g",
                            self.loss_scaler.scale)
        if not skipped:
            self._train_step.update()
        self.control = self.callback_handler.on_optimizer_step(args, self.state, self.control)
        learning_rate = self.lr_scheduler.get_last_lr()[0]
        if not skipped:
            self.lr_scheduler.step()
        return grad_norm, learning_rate

    def _maybe_log_save_evaluate(self, grad_norm, learning_rate, ignore_keys_for_eval):
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            tr_loss = self._tr_loss
            if self.args.world_size > 1:
                tr_loss = float(_all_reduce_sum(np.array([tr_loss], np.float32))[0]) / self.args.world_size
            logs = {"loss": tr_loss / (self.state.global_step - self._globalstep_last_logged)}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm
            logs["learning_rate"] = learning_rate if learning_rate is not None else \
                self.lr_scheduler.get_last_lr()[0]
            self._total_loss_scalar += tr_loss
            self._tr_loss = 0.0
            self._globalstep_last_logged = self.state.global_step
            self.log(logs)
        if self.control.should_evaluate:
            metrics = self._evaluate(ignore_keys_for_eval)
            is_new_best = self._determine_best_metric(metrics)
            if self.args.save_strategy == SaveStrategy.BEST:
                self.control.should_save = is_new_best
        if self.control.should_save:
            self._save_checkpoint()
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def _finalize_training(self, num_train_samples, start_time):
        if self.args.world_size > 1:
            self._tr_loss = float(_all_reduce_sum(np.array([self._tr_loss], np.float32))[0]) / self.args.world_size
        self._total_loss_scalar += self._tr_loss
        steps_trained = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(steps_trained, 0.001)
        metrics = speed_metrics("train", start_time,
                                num_samples=num_train_samples * steps_trained / max(self.state.max_steps, 1),
                                num_steps=steps_trained)
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self.log(metrics)
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            self._load_best_model()
        if self.args.should_save and self.state.best_model_checkpoint is not None and self.args.save_total_limit == 1:
            for checkpoint in sorted_checkpoints(self.args.output_dir, self.state.best_model_checkpoint):
                if os.path.abspath(checkpoint) != os.path.abspath(self.state.best_model_checkpoint):
                    shutil.rmtree(checkpoint, ignore_errors=True)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def log(self, logs, start_time=None):
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        output = {**logs, "step": self.state.global_step}
        self.state.log_history.append(output)
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    # ------------------------------------------------------------------------------------------------------------
    # evaluation and prediction
    # ------------------------------------------------------------------------------------------------------------

    def _evaluate(self, ignore_keys):
        metrics = self.evaluate(ignore_keys=ignore_keys)
        if isinstance(self.eval_dataset, dict):
            merged = {}
            for value in metrics.values():
                merged.update(value)
            metrics = merged
        return metrics

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Loss and `compute_metrics` on the eval set; returns {"eval_loss": ..., "eval_runtime": ..., ...}.
        With a dict of eval datasets, evaluates each under the prefix `eval_<name>`."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            return {name: self.evaluate(ds, ignore_keys, f"{metric_key_prefix}_{name}")
                    for name, ds in dataset.items()}
        output = self._timed_loop(self.get_eval_dataloader(dataset), "Evaluation", ignore_keys, metric_key_prefix)
        self.log(output["metrics"])
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output["metrics"])
        return output["metrics"]

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        """Predictions (numpy), label_ids and metrics on `test_dataset`, as `PredictionOutput`."""
        output = self._timed_loop(self.get_test_dataloader(test_dataset), "Prediction", ignore_keys,
                                  metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output["metrics"])
        return PredictionOutput(predictions=output["predictions"], label_ids=output["label_ids"],
                                metrics=output["metrics"])

    def _timed_loop(self, loader, description, ignore_keys, metric_key_prefix):
        start_time = time.time()
        output = self.evaluation_loop(loader, description, ignore_keys=ignore_keys,
                                      metric_key_prefix=metric_key_prefix)
        num_samples = output["num_samples"]
        output["metrics"].update(speed_metrics(metric_key_prefix, start_time, num_samples=num_samples,
                                               num_steps=math.ceil(num_samples / self.args.eval_batch_size)))
        return output

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        args = self.args
        prediction_loss_only = prediction_loss_only if prediction_loss_only is not None else \
            args.prediction_loss_only
        self._gather_zero_parameters()
        was_training = self.model.training
        self.model.set_train(False)
        self.callback_handler.eval_dataloader = dataloader
        logger.info("***** Running %s *****", description)
        losses, preds, labels, inputs_seen = [], None, None, None
        num_samples = 0
        for inputs in dataloader:
            loss, logits, batch_labels = self.prediction_step(self.model, inputs, prediction_loss_only, ignore_keys)
            batch_size = _batch_size(inputs)
            num_samples += batch_size
            if loss is not None:
                losses.append(np.repeat(np.asarray(loss, np.float64).reshape(1), batch_size))
            if logits is not None:
                if self.preprocess_logits_for_metrics is not None:
                    logits = _to_numpy(self.preprocess_logits_for_metrics(
                        _to_tensor(logits), _to_tensor(batch_labels)))
                preds = logits if preds is None else _nested_concat(preds, logits)
            if batch_labels is not None:
                labels = batch_labels if labels is None else _nested_concat(labels, batch_labels)
            if "inputs" in args.include_for_metrics:
                batch_inputs = inputs[self.model.main_input_name] if hasattr(self.model, "main_input_name") else None
                if batch_inputs is not None:
                    inputs_seen = batch_inputs if inputs_seen is None else _nested_concat(inputs_seen, batch_inputs)
            self.control = self.callback_handler.on_prediction_step(args, self.state, self.control)
        self.model.set_train(was_training)

        all_losses = np.concatenate(losses) if losses else None
        metrics = {}
        if self.compute_metrics is not None and preds is not None and labels is not None:
            extra = {}
            if "inputs" in args.include_for_metrics:
                extra["inputs"] = inputs_seen
            if "loss" in args.include_for_metrics:
                extra["losses"] = all_losses
            metrics = dict(self.compute_metrics(EvalPrediction(predictions=preds, label_ids=labels, **extra)))
        metrics = {k: _to_python(v) for k, v in metrics.items()}
        if all_losses is not None:
            metrics[f"{metric_key_prefix}_loss"] = float(all_losses.mean())
        for key in list(metrics):
            if not key.startswith(f"{metric_key_prefix}_"):
                metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        return {"predictions": preds, "label_ids": labels, "metrics": metrics, "num_samples": num_samples}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """(loss, logits, labels) for one batch as numpy (None where not available), HF's rules."""
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        if ignore_keys is None:
            ignore_keys = list(getattr(getattr(model, "config", None), "keys_to_ignore_at_inference", None) or [])
        ignore_keys = list(ignore_keys) + ["past_key_values"]
        labels = None
        if has_labels:
            labels = tuple(inputs[name] for name in self.label_names)
            labels = labels[0] if len(labels) == 1 else labels
        tensors = {k: Tensor(v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
        loss, outputs = self._eval_forward(has_labels, tensors)
        if prediction_loss_only:
            return loss, None, None
        if isinstance(outputs, dict):
            logits = tuple(v for k, v in outputs.items() if k not in ignore_keys + ["loss"] and v is not None)
        else:
            logits = tuple(outputs[1:] if has_labels else outputs)
        logits = tuple(_to_numpy(x) for x in logits if not isinstance(x, (tuple, list)) or x)
        if len(logits) == 1:
            logits = logits[0]
        return loss, (logits if len(logits) else None), labels

    def _eval_forward(self, has_labels, tensors):
        def forward_with_loss(**kw):
            return self.compute_loss(self.model, kw, return_outputs=True)

        def forward(**kw):
            return None, self.model(**kw)

        fn = forward_with_loss if has_labels else forward
        if self.args.jit_mode and has_labels not in self._eval_fns.get("failed", set()):
            key = ("jit", has_labels)
            if key not in self._eval_fns:
                self._eval_fns[key] = ms.jit(fn)
            try:
                loss, outputs = self._eval_fns[key](**tensors)
                return (None if loss is None else float(loss.asnumpy())), outputs
            except (RuntimeError, TypeError, ValueError) as e:
                logger.warning("Evaluation forward does not compile with mindspore.jit, using PyNative: %s",
                               str(e).strip().splitlines()[0][:300])
                self._eval_fns.setdefault("failed", set()).add(has_labels)
        loss, outputs = fn(**tensors)
        return (None if loss is None else float(loss.asnumpy())), outputs

    def _determine_best_metric(self, metrics):
        if self.args.metric_for_best_model is None:
            return False
        name = self.args.metric_for_best_model
        if not name.startswith("eval_"):
            name = f"eval_{name}"
        if name not in metrics:
            raise KeyError(f"The metric_for_best_model {name!r} is not in the evaluation metrics "
                           f"{sorted(metrics)}; check compute_metrics or metric_for_best_model.")
        value = metrics[name]
        better = np.greater if self.args.greater_is_better else np.less
        if self.state.best_metric is None:
            self.state.best_metric = float("-inf") if self.args.greater_is_better else float("inf")
        if better(value, self.state.best_metric):
            self.state.best_metric = value
            self.state.best_global_step = self.state.global_step
            return True
        return False

    # ------------------------------------------------------------------------------------------------------------
    # saving and checkpoints
    # ------------------------------------------------------------------------------------------------------------

    def _model_state_dict(self):
        """{HF key: float32 array}; with fp16 training, the float32 master weights."""
        state = self.model.state_dict()
        if self._master_params is not None:
            names = {n: m for (n, _), m in zip(named_trainable_parameters(self.model), self._master_params)}
            state = {k: names[k].asnumpy() if k in names else v for k, v in state.items()}
        return state

    def save_model(self, output_dir=None, _internal_call=False):
        """Writes the model (HF format, loadable by torch `transformers`), the processing class (as HF: else the
        data collator's tokenizer, if it has one) and the training arguments to `output_dir` (default
        args.output_dir)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, state_dict=self._model_state_dict())
        processor = self.processing_class
        if processor is None and getattr(self.data_collator, "tokenizer", None) is not None:
            logger.info("saving the data collator's tokenizer, as there is no processing_class")
            processor = self.data_collator.tokenizer
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(output_dir)
        with open(os.path.join(output_dir, TRAINING_ARGS_NAME), "w", encoding="utf-8") as f:
            f.write(self.args.to_json_string())

    def _save_checkpoint(self):
        args = self.args
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final_dir = os.path.join(args.output_dir, name)
        self._gather_zero_parameters()
        if args.should_save:
            tmp_dir = os.path.join(args.output_dir, f".tmp-{name}")
            shutil.rmtree(tmp_dir, ignore_errors=True)
            os.makedirs(tmp_dir)
            self.save_model(tmp_dir, _internal_call=True)
            if not args.save_only_model:
                self._save_optimizer_and_scheduler(tmp_dir)
        if args.world_size > 1:
            _barrier()
        if not args.save_only_model:
            tmp_dir = os.path.join(args.output_dir, f".tmp-{name}")
            self._save_rng_state(tmp_dir if os.path.isdir(tmp_dir) else final_dir)
            if args.zero_stage:
                self._save_zero_shard(tmp_dir if os.path.isdir(tmp_dir) else final_dir)
        if args.world_size > 1:
            _barrier()

        if args.metric_for_best_model is not None and self.state.best_global_step == self.state.global_step:
            self.state.best_model_checkpoint = final_dir
        if args.should_save:
            for cb in [c for c in self.callback_handler.callbacks + [self.control] if hasattr(c, "state")]:
                self.state.stateful_callbacks[type(cb).__name__] = cb.state()
            self.state.save_to_json(os.path.join(tmp_dir, TRAINER_STATE_NAME))
            if os.path.isdir(final_dir):
                old = os.path.join(args.output_dir, f".old-{name}")
                os.replace(final_dir, old)
                os.replace(tmp_dir, final_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp_dir, final_dir)
            self._rotate_checkpoints()
        if args.world_size > 1:
            _barrier()

    def _save_zero_shard(self, output_dir):
        """This rank's ZeRO shard; rank 0's also holds the untrained (frozen) parameters, for merging."""
        frozen = {}
        if self.args.process_index == 0:
            trainable = {n for n, _ in named_trainable_parameters(self.model)}
            frozen = {k: v for k, v in self.model.state_dict().items() if k not in trainable}
        zero.save_shard(self.optimizer, output_dir, frozen)

    def _save_optimizer_and_scheduler(self, output_dir):
        from safetensors.numpy import save_file

        if self.args.zero_stage:
            with open(os.path.join(output_dir, SCHEDULER_NAME), "w", encoding="utf-8") as f:
                json.dump(self.lr_scheduler.state_dict(), f)
            return
        save_file(optimizer_state(self.optimizer), os.path.join(output_dir, OPTIMIZER_NAME), metadata={"format": "ms"})
        with open(os.path.join(output_dir, SCHEDULER_NAME), "w", encoding="utf-8") as f:
            json.dump(self.lr_scheduler.state_dict(), f)
        if self.loss_scaler is not None:
            with open(os.path.join(output_dir, SCALER_NAME), "w", encoding="utf-8") as f:
                json.dump(self.loss_scaler.state_dict(), f)

    def _save_rng_state(self, output_dir):
        state = {
            "python": _jsonable(random.getstate()),
            "numpy": _jsonable(np.random.get_state()),
            "mindspore": ms.get_rng_state().asnumpy().tolist(),
        }
        name = "rng_state.json" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}.json"
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            json.dump(state, f)

    def _load_rng_state(self, checkpoint):
        name = "rng_state.json" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}.json"
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            logger.info("Didn't find an RNG file in %s; if you are resuming a training that wasn't launched in a "
                        "distributed fashion, reproducibility is not guaranteed.", checkpoint)
            return
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        random.setstate(_python_rng_state(state["python"]))
        numpy_state = state["numpy"]
        np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], np.uint32), *numpy_state[2:]))
        ms.set_rng_state(Tensor(np.asarray(state["mindspore"], np.uint8)))

    def _load_model_from_checkpoint(self, checkpoint):
        from .. import weights

        if not os.path.isdir(checkpoint):
            raise ValueError(f"Can't find a valid checkpoint at {checkpoint}")
        if _is_adapter_checkpoint(self.model, checkpoint):
            self.model._load_adapter_checkpoint(checkpoint)
            return
        files, fmt = weights.resolve_checkpoint_files(checkpoint)
        self.model._load_checkpoint(files, fmt)

    def _load_optimizer_and_scheduler(self, checkpoint):
        from safetensors.numpy import load_file

        path = os.path.join(checkpoint, OPTIMIZER_NAME)
        if self.args.zero_stage:
            zero.load_shard(self.optimizer, checkpoint)
        elif os.path.isfile(path):
            load_optimizer_state(self.optimizer, load_file(path))
        elif self.state.global_step > 0:
            torch_state = [n for n in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt")
                           if os.path.isfile(os.path.join(checkpoint, n))]
            logger.warning(
                "%s has no %s%s: the optimizer starts fresh (zero moments, step 0) from the checkpoint's weights; "
                "the learning-rate schedule continues at step %d.", checkpoint, OPTIMIZER_NAME,
                f" (torch's {', '.join(torch_state)} cannot be read without torch)" if torch_state else "",
                self.state.global_step)
        path = os.path.join(checkpoint, SCHEDULER_NAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.lr_scheduler.load_state_dict(json.load(f))
        elif isinstance(self.lr_scheduler, LambdaLR):
            # HF steps the schedule once per optimizer step, so a checkpoint at global_step N is at schedule step N
            self.lr_scheduler.load_state_dict({"base_lrs": self.lr_scheduler.base_lrs,
                                               "last_epoch": self.state.global_step})
        path = os.path.join(checkpoint, SCALER_NAME)
        if os.path.isfile(path) and self.loss_scaler is not None:
            with open(path, encoding="utf-8") as f:
                self.loss_scaler.load_state_dict(json.load(f))

    def _load_best_model(self):
        logger.info("Loading best model from %s (score: %s).", self.state.best_model_checkpoint,
                    self.state.best_metric)
        self._end_mixed_precision()
        self._load_model_from_checkpoint(self.state.best_model_checkpoint)

    def _rotate_checkpoints(self):
        limit = self.args.save_total_limit
        if limit is None or limit <= 0:
            return
        checkpoints = sorted_checkpoints(self.args.output_dir, self.state.best_model_checkpoint)
        if self.state.best_model_checkpoint is not None and limit == 1 and \
                os.path.abspath(checkpoints[-1]) != os.path.abspath(self.state.best_model_checkpoint):
            limit = 2
        for checkpoint in checkpoints[: max(0, len(checkpoints) - limit)]:
            logger.info("Deleting older checkpoint [%s] due to args.save_total_limit", checkpoint)
            shutil.rmtree(checkpoint, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------


def _forward_model(model):
    """The model whose forward signature the Trainer reads: a PeftModel's wrapped model (as HF's Trainer does)."""
    get_base_model = getattr(type(model), "get_base_model", None)
    return get_base_model(model) if get_base_model is not None else model


def _is_adapter_checkpoint(model, checkpoint) -> bool:
    """An adapter-only checkpoint (what saving a model with LoRA adapters writes) for a model that has adapters."""
    return os.path.isfile(os.path.join(checkpoint, "adapter_config.json")) and \
        bool(getattr(_forward_model(model), "_hf_peft_config_loaded", False))


def _all_reduce_sum(array):
    from mindspore import ops

    return ops.AllReduce()(Tensor(array)).asnumpy()


def _broadcast_parameters_from_rank0(model, rank):
    """Every rank starts from rank 0's parameters, as torch's DistributedDataParallel does when it wraps a model:
    anything initialised randomly after loading (a new head, LoRA's A matrices, ...) would otherwise differ per rank
    and the replicas would never agree. A sum all-reduce with zeros on the other ranks (AllReduce runs on every
    backend, CPU included) gives rank 0's values exactly."""
    from mindspore import ops

    allreduce = ops.AllReduce()
    for param in model.get_parameters():
        if param.dtype not in (ms.float16, ms.float32, ms.float64, ms.bfloat16):
            continue  # counters (e.g. BatchNorm's num_batches_tracked)
        if hasattr(param, "_zero_source") and param.shape == (0,):
            continue  # `zero.load_sharded`: every rank reads its slices from the same checkpoint
        value = param if rank == 0 else ops.zeros_like(param)
        param.set_data(allreduce(value))


def _barrier():
    """Waits for every rank: a one-element AllReduce read back on the host (MindSpore's Barrier primitive has no
    CPU kernel: "Unsupported op [Barrier] on CPU")."""
    _all_reduce_sum(np.zeros(1, np.float32))


def _batch_size(inputs):
    for value in inputs.values():
        if isinstance(value, np.ndarray) and value.ndim > 0:
            return int(value.shape[0])
    return 1


def _to_numpy(x):
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return type(x)(_to_numpy(v) for v in x)
    if isinstance(x, (Tensor, Parameter)):
        return x.astype(ms.float32).asnumpy() if x.dtype in (ms.float16, ms.bfloat16) else x.asnumpy()
    return np.asarray(x)


def _to_tensor(x):
    if x is None or isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(_to_tensor(v) for v in x)
    return Tensor(x)


def _to_python(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _nested_concat(a, b, padding_index=-100):
    """Concatenates along the batch axis, padding the second axis to the longer one (HF pads with -100)."""
    if isinstance(a, (tuple, list)):
        return type(a)(_nested_concat(x, y, padding_index) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 2 or a.shape[1] == b.shape[1]:
        return np.concatenate([a, b], axis=0)
    width = max(a.shape[1], b.shape[1])
    out = np.full((a.shape[0] + b.shape[0], width) + a.shape[2:], padding_index, dtype=a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    out[a.shape[0]:, : b.shape[1]] = b
    return out


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_jsonable(x) for x in obj]
    return obj


def _python_rng_state(obj):
    return tuple(tuple(x) if isinstance(x, list) else x for x in obj)
