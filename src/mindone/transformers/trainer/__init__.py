"""HF's `Trainer` / `TrainingArguments` on MindSpore: see trainer.py for the loop and train_step.py for the step."""

from .optimization import Adafactor, LambdaLR, get_scheduler
from .trainer import Trainer
from .trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from .trainer_utils import EvalPrediction, PredictionOutput, TrainOutput, get_last_checkpoint, set_seed
from .training_args import TrainingArguments
from .zero import load_sharded, merge_zero_checkpoint, shard_for_inference, ShardedInference

__all__ = [
    "Adafactor",
    "CallbackHandler",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EvalPrediction",
    "LambdaLR",
    "PredictionOutput",
    "PrinterCallback",
    "ProgressCallback",
    "TrainOutput",
    "Trainer",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
    "TrainingArguments",
    "get_last_checkpoint",
    "get_scheduler",
    "merge_zero_checkpoint",
    "shard_for_inference",
    "load_sharded",
    "ShardedInference",
    "set_seed",
]
