"""ZeRO Trainer runs for test_zero_msrun.py: `msrun --worker_num=2 ... zero_train.py CKPT OUT_DIR` trains the tiny
Llama with zero_stage 1, 2, 3 (stage 3 in PyNative, where it releases parameters) and writes per rank and stage
the log history, final weights (checksum, and `weights.{rank}.npz` in the run's directory) and the bytes this rank
holds after an optimizer step (stage 3: also the most parameter bytes it materialised at once); stage 2 also saves a
checkpoint at step 4 and resumes from it in a second Trainer; stage 3 saves one at step 8 (parameters released), and
runs again on a model from `load_sharded` (each rank reads only its slices). `--single` runs the single-process reference (plain
Trainer, the same global batch)."""

import json
import os
import sys

import numpy as np

from mindone.transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments
from mindone.transformers.trainer import load_sharded
from tests.trainer.dp_train import rows


class MemoryProbe(TrainerCallback):
    """Bytes held by this rank right after the first optimizer step (stage 3 has released its parameters)."""

    def __init__(self, trainer):
        self.trainer, self.bytes = trainer, None

    def on_step_end(self, args, state, control, **kwargs):
        if self.bytes is None and hasattr(self.trainer._train_step, "memory_bytes"):
            self.bytes = self.trainer._train_step.memory_bytes()


def train(checkpoint, out_dir, stage, per_device, resume=None, max_steps=8, save_steps=None, sharded_load=False):
    args = TrainingArguments(output_dir=out_dir, max_steps=max_steps, per_device_train_batch_size=per_device,
                             learning_rate=5e-3, weight_decay=0.01, warmup_steps=2, logging_steps=1,
                             save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
                             disable_tqdm=True, seed=5, zero_stage=stage, jit_mode=stage != 3)
    model = (load_sharded(LlamaForCausalLM, checkpoint) if sharded_load
             else LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32"))
    trainer = Trainer(model=model, args=args, train_dataset=rows())
    probe = MemoryProbe(trainer)
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=resume)
    weights = {k: np.asarray(v) for k, v in trainer.model.state_dict().items()}
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, f"weights.{args.process_index}.npz"), **weights)
    return {"world_size": args.world_size, "rank": args.process_index,
            "log_history": [h for h in trainer.state.log_history if "grad_norm" in h],
            "weight_checksum": float(sum(np.abs(v).sum() for v in weights.values())), "memory": probe.bytes}


def main():
    checkpoint, out = sys.argv[1], sys.argv[2]
    if "--single" in sys.argv:
        result = {"plain": train(checkpoint, os.path.join(out, "single"), 0, 4)}
        for stage in (1, 2, 3):  # ZeRO on one process: the memory baseline
            result[f"stage{stage}"] = train(checkpoint, os.path.join(out, f"single{stage}"), stage, 4)
    else:
        result = {}
        for stage in (1, 2, 3):
            result[f"stage{stage}"] = train(checkpoint, os.path.join(out, f"zero{stage}"), stage, 2,
                                            save_steps={2: 4, 3: 8}.get(stage))
        result["stage3_sharded_load"] = train(checkpoint, os.path.join(out, "zero3_loaded"), 3, 2,
                                              sharded_load=True)
        resume_dir = os.path.join(out, "zero2")
        result["stage2_resumed"] = train(checkpoint, resume_dir, 2, 2,
                                         resume=os.path.join(resume_dir, "checkpoint-4"))
        result["rank"] = result["stage1"]["rank"]
    with open(os.path.join(out, f"result.{'single' if '--single' in sys.argv else result['rank']}.json"), "w",
              encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
