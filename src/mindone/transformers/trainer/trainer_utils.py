"""Small result types and helpers with HF's names (`transformers.trainer_utils` imports torch)."""

import os
import random
import re
import time
from typing import NamedTuple, Optional, Union

import mindspore as ms
import numpy as np

PREFIX_CHECKPOINT_DIR = "checkpoint"
_re_checkpoint = re.compile(r"^" + PREFIX_CHECKPOINT_DIR + r"\-(\d+)$")


class EvalPrediction:
    """What `compute_metrics` receives: numpy predictions and label_ids (unpacks as `preds, labels = p`)."""

    def __init__(self, predictions, label_ids, inputs=None, losses=None):
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs
        self.losses = losses
        self.elements = (predictions, label_ids) + tuple(x for x in (inputs, losses) if x is not None)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, idx):
        return self.elements[idx]


class PredictionOutput(NamedTuple):
    predictions: Union[np.ndarray, tuple]
    label_ids: Optional[Union[np.ndarray, tuple]]
    metrics: Optional[dict]


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict


def set_seed(seed: int):
    """Seeds Python's `random`, numpy and MindSpore."""
    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)


def speed_metrics(split, start_time, num_samples=None, num_steps=None, num_tokens=None):
    runtime = time.time() - start_time
    result = {f"{split}_runtime": round(runtime, 4)}
    if runtime == 0:
        return result
    if num_samples is not None:
        result[f"{split}_samples_per_second"] = round(num_samples / runtime, 3)
    if num_steps is not None:
        result[f"{split}_steps_per_second"] = round(num_steps / runtime, 3)
    if num_tokens is not None:
        result[f"{split}_tokens_per_second"] = round(num_tokens / runtime, 3)
    return result


def get_last_checkpoint(folder):
    """The `checkpoint-N` sub-directory of `folder` with the largest N, or None."""
    if not os.path.isdir(folder):
        return None
    found = [d for d in os.listdir(folder)
             if _re_checkpoint.search(d) is not None and os.path.isdir(os.path.join(folder, d))]
    if not found:
        return None
    return os.path.join(folder, max(found, key=lambda d: int(_re_checkpoint.search(d).groups()[0])))


def sorted_checkpoints(output_dir, best_model_checkpoint=None):
    """checkpoint-N paths by N, the best one moved just before the newest so rotation keeps both (HF's rule)."""
    paths = [os.path.join(output_dir, d) for d in os.listdir(output_dir)
             if _re_checkpoint.search(d) and os.path.isdir(os.path.join(output_dir, d))] \
        if os.path.isdir(output_dir) else []
    paths.sort(key=lambda p: int(_re_checkpoint.search(os.path.basename(p)).groups()[0]))
    if best_model_checkpoint is not None:
        best = os.path.abspath(best_model_checkpoint)
        for i, p in enumerate(paths):
            if os.path.abspath(p) == best and i < len(paths) - 1:
                best_path = paths.pop(i)
                paths.insert(len(paths) - 1, best_path)
                break
    return paths
