"""End-to-end `Trainer.train()` benchmark on text of varying length: ours vs torch `transformers.Trainer`.

What a user runs: a list of token rows of random length (8..`--max-len`), a collator that pads each batch to its
longest row (labels -100 on padding), batch 4, AdamW + linear schedule + clipping, `--steps` optimizer steps, fp32.
Unlike `bench_train.py` (one fixed-shape step, after warm-up), the time includes everything `train()` does: our
graph compiles (one per sequence-length bucket; `--no-buckets` gives the old one-per-batch-length behaviour), data
collation, logging. Models: "small", a random Llama of 3.2M parameters (hidden 128, 8 layers, vocab 4000), "tiny"
(hidden 256, 4 layers, vocab 32000, 20M) and "smollm2" (SmolLM2-135M). Each run is its own process pinned with
`taskset` to as many cores as threads; torch and ours alternate, `--rounds` times, and the table gives the median.

    python benchmarks/bench_trainer.py [--models small tiny] [--threads 2] [--steps 14] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import hide_torch, smollm2_hf_dir  # noqa: E402

BATCH = 4
SIZES = {"small": dict(vocab_size=4000, hidden_size=128, intermediate_size=512, num_hidden_layers=8,
                       num_attention_heads=4, num_key_value_heads=4),
         "tiny": dict(vocab_size=32000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4)}


def model_dir(name):
    if name == "smollm2":
        return smollm2_hf_dir()
    target = os.path.join(tempfile.gettempdir(), f"mindone-bench-trainer-{name}")
    if not os.path.exists(os.path.join(target, "config.json")):
        import torch
        import transformers

        config = transformers.LlamaConfig(max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=0,
                                          **SIZES[name])
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).save_pretrained(target)
    return target


def rows(vocab, count, max_len):
    import numpy as np

    rng = np.random.RandomState(0)
    return [{"input_ids": rng.randint(1, vocab, rng.randint(8, max_len + 1)).tolist()} for _ in range(count)]


def collate(features):
    import numpy as np

    length = max(len(f["input_ids"]) for f in features)
    ids = np.zeros((len(features), length), np.int64)
    mask = np.zeros_like(ids)
    for i, f in enumerate(features):
        ids[i, :len(f["input_ids"])] = f["input_ids"]
        mask[i, :len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, -100)}


def worker(impl, directory, threads, steps, max_len):
    result = {"impl": impl, "threads": threads}
    common = dict(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=BATCH,
                  learning_rate=1e-4, logging_steps=5, save_strategy="no", disable_tqdm=True, seed=0)
    if impl == "torch":
        import torch
        import transformers

        torch.set_num_threads(threads)
        model = transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32)
        data = rows(model.config.vocab_size, steps * BATCH, max_len)
        args = transformers.TrainingArguments(use_cpu=True, report_to="none", **common)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                       data_collator=lambda f: {k: torch.from_numpy(v) for k, v in collate(f).items()})
    else:
        hide_torch()
        from mindspore.graph.api import ms_compile_cache
        from mindone.transformers import LlamaForCausalLM, Trainer, TrainingArguments
        from mindone.transformers.backend import runtime

        runtime.set_threads(threads)
        model = LlamaForCausalLM.from_pretrained(directory, dtype="float32")
        data = rows(model.config.vocab_size, steps * BATCH, max_len)
        args = TrainingArguments(seq_len_buckets="auto" if impl == "ours" else None, **common)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
    result["lengths"] = len({len(collate(data[i:i + BATCH])["input_ids"][0]) for i in range(0, len(data), BATCH)})
    start = time.perf_counter()
    trainer.train()
    result["train_s"] = time.perf_counter() - start
    if impl != "torch":
        result["graphs"] = sum("grad_step" in p for p in ms_compile_cache)
    print(json.dumps(result))


def run_one(impl, model, threads, steps, max_len):
    cores = ",".join(str(i) for i in range(threads))
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--worker", impl, "--model-dir", model_dir(model),
           "--threads", str(threads), "--steps", str(steps), "--max-len", str(max_len)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["small", "tiny"])
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--max-len", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--impls", nargs="+", default=["torch", "ours", "ours-no-buckets"])
    parser.add_argument("--worker")
    parser.add_argument("--model-dir")
    opts = parser.parse_args()
    if opts.worker:
        worker(opts.worker, opts.model_dir, opts.threads[0], opts.steps, opts.max_len)
        return
    print(f"Trainer.train(): {opts.steps} steps, batch {BATCH}, rows of 8..{opts.max_len} tokens padded per batch, "
          f"fp32; median of {opts.rounds} runs (s), ours' training graphs in ()\n")
    print("| model | threads | torch s | ours s (graphs) | ours without buckets s (graphs) | ours / torch |")
    print("|---|---|---|---|---|---|")
    for model in opts.models:
        for threads in opts.threads:
            runs = {impl: [] for impl in opts.impls}
            for _ in range(opts.rounds):
                for impl in opts.impls:
                    runs[impl].append(run_one(impl, model, threads, opts.steps, opts.max_len))
            med = {impl: statistics.median(r["train_s"] for r in rs) for impl, rs in runs.items()}
            graphs = {impl: rs[0].get("graphs", "-") for impl, rs in runs.items()}
            nan = float("nan")
            print(f"| {model} | {threads} | {med.get('torch', nan):.1f} | {med.get('ours', nan):.1f} "
                  f"({graphs.get('ours', '-')}) | {med.get('ours-no-buckets', nan):.1f} "
                  f"({graphs.get('ours-no-buckets', '-')}) | {med.get('ours', nan) / med.get('torch', nan):.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
