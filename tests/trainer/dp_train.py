"""Data-parallel Trainer run for test_data_parallel.py: `msrun --worker_num=2 ... dp_train.py CKPT OUT_JSON`, or
without msrun as the single-process reference with the same global batch (`dp_train.py CKPT OUT_JSON --single`);
`--lora` trains a LoRA adapter (peft-style) instead of the whole model."""

import json
import sys

import numpy as np

from mindone.transformers import LlamaForCausalLM, Trainer, TrainingArguments


def rows(n=24, seq=12, vocab=99):
    rng = np.random.RandomState(0)
    out = []
    for _ in range(n):
        ids = rng.randint(1, vocab, seq).astype(np.int64)
        labels = ids.copy()
        labels[: rng.randint(0, 5)] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def main():
    checkpoint, out_json = sys.argv[1], sys.argv[2]
    single = "--single" in sys.argv
    args = TrainingArguments(output_dir=out_json + ".run", max_steps=8, per_device_train_batch_size=4 if single else 2,
                             learning_rate=5e-3, weight_decay=0.01, warmup_steps=2, logging_steps=1,
                             save_strategy="no", disable_tqdm=True, seed=5)
    model = LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
    if "--lora" in sys.argv:
        from mindone.transformers import set_seed
        from mindone.transformers.peft import LoraConfig, get_peft_model

        # each rank draws different LoRA A matrices (rank 0 the single run's): the Trainer must start every replica
        # from rank 0's parameters, as torch's DistributedDataParallel does
        set_seed(5 + args.process_index)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights="gaussian"))
    trainer = Trainer(model=model, args=args, train_dataset=rows())
    trainer.train()
    weights = float(sum(np.abs(v).sum() for v in trainer.model.state_dict().values()))
    result = {"world_size": args.world_size, "rank": args.process_index, "log_history": trainer.state.log_history,
              "weight_checksum": weights}
    with open(f"{out_json}.rank{args.process_index}", "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
