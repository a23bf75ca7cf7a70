"""MindFormers-style data-parallel run for test_mindformers_msrun.py: `msrun --worker_num=2 ... mf_dp_train.py CKPT
OUT_JSON`, or without msrun as the single-process reference with the same global batch (`... --single`)."""

import json
import sys

import numpy as np

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.mindformers import (
    ContextConfig,
    ParallelContextConfig,
    Trainer,
    TrainingArguments,
    init_context,
)


def rows(n=16, seq=12, vocab=99, pad=0):
    rng = np.random.RandomState(0)
    out = []
    for _ in range(n):
        ids = rng.randint(1, vocab, seq).astype(np.int32)
        ids[seq - rng.randint(0, 4):] = pad
        out.append({"input_ids": ids})
    return out


def main():
    checkpoint, out_json = sys.argv[1], sys.argv[2]
    single = "--single" in sys.argv
    rank, size = init_context(use_parallel=not single, context_config=ContextConfig(mode=1, device_target="CPU"),
                              parallel_config=ParallelContextConfig(parallel_mode="DATA_PARALLEL",
                                                                    gradients_mean=True, full_batch=False))
    args = TrainingArguments(output_dir=out_json + ".run", num_train_epochs=2, batch_size=4 if single else 2,
                             learning_rate=5e-3, weight_decay=0.01, warmup_steps=2, lr_end=1e-4, save_strategy="no",
                             seed=5, use_parallel=not single, mode=1)
    trainer = Trainer(task="text_generation", model=LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32"),
                      args=args, train_dataset=rows())
    trainer.set_parallel_config(data_parallel=size)
    trainer.train()
    state = trainer.hf_trainer.model.state_dict()
    result = {"rank": rank, "device_num": size, "log_history": trainer.hf_trainer.state.log_history,
              "weight_checksum": float(sum(np.abs(v).sum() for v in state.values()))}
    with open(f"{out_json}.rank{rank}", "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
