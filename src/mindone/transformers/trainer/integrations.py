"""`report_to="tensorboard"`: scalars of every log to TensorBoard through `tensorboardX` (torch-free).

Follows HF's TensorBoardCallback: the run directory is `$TENSORBOARD_LOGGING_DIR` or
`output_dir/runs/<Mon DD_HH-MM-SS>_<host>`, tags are rewritten as `train/loss`, `eval/loss`, `test/...`, and the
training arguments and model config are written as text at the start.
"""

import logging
import numbers
import os
import socket
from datetime import datetime

from .trainer_callback import TrainerCallback

logger = logging.getLogger(__name__)


def default_logdir() -> str:
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname())


def rewrite_logs(logs):
    out = {}
    for key, value in logs.items():
        for prefix in ("eval_", "test_"):
            if key.startswith(prefix):
                out[prefix[:-1] + "/" + key[len(prefix):]] = value
                break
        else:
            out["train/" + key] = value
    return out


class TensorBoardCallback(TrainerCallback):
    """Writes each numeric log value (loss, learning_rate, grad_norm, eval metrics) as a scalar at `global_step`."""

    def __init__(self, tb_writer=None, log_dir=None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise RuntimeError("report_to='tensorboard' needs the torch-free `tensorboardX` package: "
                               "pip install tensorboardX") from e
        self._SummaryWriter = SummaryWriter
        self.tb_writer = tb_writer
        self.logging_dir = log_dir or os.getenv("TENSORBOARD_LOGGING_DIR") or None
        if self.logging_dir is not None:
            self.logging_dir = os.path.expanduser(self.logging_dir)

    def _init_writer(self, args):
        if self.logging_dir is None:
            self.logging_dir = os.path.join(args.output_dir, default_logdir())
        self.tb_writer = self._SummaryWriter(log_dir=self.logging_dir)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_writer(args)
        self.tb_writer.add_text("args", args.to_json_string())
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_json_string"):
            self.tb_writer.add_text("model_config", config.to_json_string())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_writer(args)
        for key, value in rewrite_logs(logs or {}).items():
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, numbers.Real):  # numpy scalars (e.g. a float32 eval loss) too
                value = float(value)
            if isinstance(value, (int, float)):
                self.tb_writer.add_scalar(key, value, state.global_step)
            elif isinstance(value, str):
                self.tb_writer.add_text(key, value, state.global_step)
            else:
                logger.warning("Dropping the log value %r of type %s for %r: TensorBoard scalars must be numbers.",
                               value, type(value).__name__, key)
        self.tb_writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        # flushed, not closed: a writer reopened within the same second (evaluate() right after train()) gets the
        # same event-file name and its events were lost
        if self.tb_writer is not None:
            self.tb_writer.flush()

    def __del__(self):
        if getattr(self, "tb_writer", None) is not None:
            self.tb_writer.close()
