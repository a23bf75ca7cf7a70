"""Peak memory (and step time) of LoRA training vs full fine-tuning on SmolLM2-135M: ours and torch (`peft`).

Each run is its own subprocess (peak RSS is per process): load the model in float32, optionally add a LoRA adapter
(r=8, alpha=16, q_proj/v_proj, as `mindone-transformers lora` by default), then a few Trainer steps (AdamW, batch 4,
seq 128, random ids). Ours drives `Trainer.training_step` + `_optimizer_step` (the compiled step), torch
`Trainer.training_step` + `optimizer.step()`.

    python benchmarks/bench_lora_memory.py [--steps 3] [--threads 2]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import hide_torch, smollm2_hf_dir  # noqa: E402

BATCH, SEQ, WARMUP = 4, 128, 1
TARGETS = ["q_proj", "v_proj"]


def batches(vocab, steps):
    import numpy as np

    rng = np.random.RandomState(0)
    return [rng.randint(0, vocab, (BATCH, SEQ)).astype(np.int64) for _ in range(steps)]


def worker(impl, model_dir, steps):
    lora = impl.endswith("lora")
    times = []
    if impl.startswith("torch"):
        import peft
        import torch
        import transformers

        model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager")
        if lora:
            model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
        args = transformers.TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none",
                                              max_steps=steps + WARMUP, learning_rate=1e-4, disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args)
        trainer.create_optimizer_and_scheduler(steps + WARMUP)
        trainer.current_gradient_accumulation_steps = 1
        model.train()
        for ids in batches(model.config.vocab_size, steps + WARMUP):
            x = torch.from_numpy(ids)
            t = time.perf_counter()
            trainer.training_step(model, {"input_ids": x, "labels": x})
            trainer.optimizer.step()
            model.zero_grad()
            times.append(time.perf_counter() - t)
    else:
        hide_torch()
        from mindone.transformers import LlamaForCausalLM, Trainer, TrainingArguments
        from mindone.transformers.peft import LoraConfig, get_peft_model

        model = LlamaForCausalLM.from_pretrained(model_dir, dtype="float32")
        if lora:
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=steps + WARMUP, learning_rate=1e-4,
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": [0]}])
        trainer._setup_training(steps + WARMUP)
        trainer.current_gradient_accumulation_steps = 1
        for ids in batches(model.config.vocab_size, steps + WARMUP):
            t = time.perf_counter()
            trainer.training_step(model, {"input_ids": ids, "labels": ids})
            trainer._optimizer_step()
            times.append(time.perf_counter() - t)
    print(json.dumps({"impl": impl, "step_ms": statistics.median(times[WARMUP:]) * 1e3,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker")
    parser.add_argument("--model-dir")
    opts = parser.parse_args()
    if opts.worker:
        worker(opts.worker, opts.model_dir, opts.steps)
        return
    model_dir = smollm2_hf_dir()
    cores = ",".join(str(i) for i in range(opts.threads))
    print(f"SmolLM2-135M training, batch {BATCH}, seq {SEQ}, fp32, AdamW; {opts.threads} cores; "
          f"median of {opts.steps} steps after {WARMUP} warm-up\n")
    print("| run | peak RSS GB | ms / step |")
    print("|---|---|---|")
    for impl in ("torch-full", "torch-lora", "ours-full", "ours-lora"):
        cmd = ["taskset", "-c", cores, sys.executable, __file__, "--worker", impl, "--model-dir", model_dir,
               "--steps", str(opts.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {impl} | {r['peak_rss_gb']:.2f} | {r['step_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
