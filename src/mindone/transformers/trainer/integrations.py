"""`report_to="tensorboard"`: scalars of every log to TensorBoard through `tensorboardX` (torch-free)."""

import os

from .trainer_callback import TrainerCallback


class TensorBoardCallback(TrainerCallback):
    """Writes each numeric log value (loss, learning_rate, grad_norm, eval metrics) to `output_dir/runs`."""

    def __init__(self, log_dir=None):
        self.log_dir = log_dir
        self.writer = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.writer is None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(self.log_dir or os.path.join(args.output_dir, "runs"))
            self.writer.add_text("args", args.to_json_string())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.writer is None:
            self.on_train_begin(args, state, control)
        if self.writer is None:
            return
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name = key if key.startswith(("eval_", "test_")) else f"train/{key}"
                self.writer.add_scalar(name, value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
