"""Resident memory of SmolLM2-135M training steps, phase by phase (Trainer internals as bench_train.py).

    python benchmarks/probe_train_memory.py [--pynative] [--seq 128] [--memory-optimize-level O1] [--jit-level O1]
        [--gradient-checkpointing]

Prints VmRSS / VmHWM after import, load, Trainer setup, and each step's forward+backward and optimizer phases.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import hide_torch, rss, smollm2_hf_dir  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pynative", action="store_true")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--memory-optimize-level")
    parser.add_argument("--jit-level")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each decoder layer in the backward (TrainingArguments.gradient_checkpointing)")
    args = parser.parse_args()
    path = smollm2_hf_dir()
    hide_torch()
    import mindspore as ms
    import numpy as np

    if args.memory_optimize_level:
        ms.set_context(memory_optimize_level=args.memory_optimize_level)
    if args.jit_level:
        jit = ms.jit
        ms.jit = lambda fn=None, **kw: jit(fn, jit_level=args.jit_level, **kw)
    from mindone.transformers import LlamaForCausalLM, Trainer, TrainingArguments

    print("import:", rss(), flush=True)
    model = LlamaForCausalLM.from_pretrained(path, dtype="float32")
    print("load:", rss(), flush=True)
    training_args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=args.steps, learning_rate=1e-5,
                                      disable_tqdm=True, jit_mode=not args.pynative,
                                      gradient_checkpointing=args.gradient_checkpointing)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()  # what Trainer.train() does first
    trainer = Trainer(model=model, args=training_args, train_dataset=[{"input_ids": [0]}])
    trainer._setup_training(args.steps)
    trainer.current_gradient_accumulation_steps = 1
    print("setup:", rss(), flush=True)
    rng = np.random.RandomState(0)
    for i in range(args.steps):
        ids = rng.randint(0, model.config.vocab_size, (4, args.seq)).astype(np.int64)
        start = time.time()
        trainer.training_step(model, {"input_ids": ids, "labels": ids})
        print(f"step {i} forward+backward ({time.time() - start:.1f} s):", rss(), flush=True)
        trainer._optimizer_step()
        print(f"step {i} optimizer:", rss(), flush=True)


if __name__ == "__main__":
    main()
