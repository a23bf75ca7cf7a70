"""Training-step benchmark: ours (`Trainer`'s compiled step) vs torch `transformers.Trainer`'s step.

One optimizer step = forward + backward of one batch, global-norm clipping, AdamW, LR schedule, on random token
ids (batch 4, seq 128, fp32). Models: a tiny Llama (hidden 256, 4 layers, random weights) and SmolLM2-135M (the
embedded GGUF, dequantised once to a safetensors dir). Each measurement runs in its own subprocess pinned with
`taskset` to as many cores as threads (MindSpore's matmul ignores its thread setting). Both sides drive their own
Trainer internals: ours `Trainer.training_step` + `_optimizer_step`, torch `Trainer.training_step` + clip + step.

    python benchmarks/bench_train.py [--models tiny smollm2] [--threads 1 2] [--steps 8]

Prints a markdown table of median ms per step (after 2 warm-up steps, which include our compile) and ours/torch,
then the same steps split into phases (median ms): forward+backward (`training_step`), clipping (ours: the global
norm, `TrainStep.prepare`; torch: `clip_grad_norm_`), optimizer (+ schedule, zero_grad), and each worker's peak RSS.
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

BATCH, SEQ, WARMUP = 4, 128, 2


def tiny_dir():
    target = os.path.join(tempfile.gettempdir(), "mindone-bench-train-tiny")
    if not os.path.exists(os.path.join(target, "config.json")):
        import torch
        import transformers

        config = transformers.LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=1024,
                                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                          max_position_embeddings=512, tie_word_embeddings=False)
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).save_pretrained(target)
    return target


def batches(vocab, steps):
    import numpy as np

    rng = np.random.RandomState(0)
    return [rng.randint(0, vocab, (BATCH, SEQ)).astype(np.int64) for _ in range(steps)]


def _timed(fn, phases, name):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        phases[name].append(time.perf_counter() - t)
        return out
    return wrapper


def worker(impl, model_dir, threads, steps):
    import resource

    result = {"impl": impl, "threads": threads}
    times = []
    phases = {"grad": [], "clip": [], "optimizer": []}
    if impl == "torch":
        import torch
        import transformers

        torch.set_num_threads(threads)
        model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager")
        # HF's default optimizer: "adamw_torch_fused" with torch >= 2.8 (torch's fused CPU AdamW kernel)
        args = transformers.TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none",
                                              max_steps=steps + WARMUP, learning_rate=1e-5, disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args)
        trainer.create_optimizer_and_scheduler(steps + WARMUP)
        trainer.current_gradient_accumulation_steps = 1
        model.train()
        for ids in batches(model.config.vocab_size, steps + WARMUP):
            x = torch.from_numpy(ids)
            t = time.perf_counter()
            trainer.training_step(model, {"input_ids": x, "labels": x})
            t1 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            t2 = time.perf_counter()
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            model.zero_grad()
            times.append(time.perf_counter() - t)
            phases["grad"].append(t1 - t)
            phases["clip"].append(t2 - t1)
            phases["optimizer"].append(times[-1] - (t2 - t))
    else:
        hide_torch()
        from mindone.transformers import LlamaForCausalLM, Trainer, TrainingArguments
        from mindone.transformers.backend import runtime

        runtime.set_threads(threads)
        model = LlamaForCausalLM.from_pretrained(model_dir, dtype="float32")
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=steps + WARMUP, learning_rate=1e-5,
                                 disable_tqdm=True, jit_mode=impl == "ours-jit")
        trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": [0]}])
        trainer._setup_training(steps + WARMUP)
        trainer.current_gradient_accumulation_steps = 1
        step = trainer._train_step
        step.prepare = _timed(step.prepare, phases, "clip")
        for ids in batches(model.config.vocab_size, steps + WARMUP):
            t = time.perf_counter()
            trainer.training_step(model, {"input_ids": ids, "labels": ids})
            phases["grad"].append(time.perf_counter() - t)
            trainer._optimizer_step()
            times.append(time.perf_counter() - t)
            phases["optimizer"].append(times[-1] - phases["grad"][-1] - phases["clip"][-1])
    result["first_s"] = times[0]
    result["step_ms"] = statistics.median(times[WARMUP:]) * 1e3
    result["phases_ms"] = {k: statistics.median(v[WARMUP:]) * 1e3 for k, v in phases.items()}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(result))


def run_one(impl, model, threads, steps):
    model_dir = tiny_dir() if model == "tiny" else smollm2_hf_dir()
    cores = ",".join(str(i) for i in range(threads))
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--worker", impl, "--model-dir", model_dir,
           "--threads", str(threads), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--impls", nargs="+", default=["torch", "ours-jit", "ours-pynative"])
    parser.add_argument("--worker")
    parser.add_argument("--model-dir")
    opts = parser.parse_args()
    if opts.worker:
        worker(opts.worker, opts.model_dir, opts.threads[0], opts.steps)
        return
    print(f"Training step, batch {BATCH}, seq {SEQ}, fp32, AdamW + clipping; median of {opts.steps} steps\n")
    print("| model | threads | torch ms | ours jit ms (first step s) | ours PyNative ms | jit / torch |")
    print("|---|---|---|---|---|---|")
    all_results = []
    for model in opts.models:
        for threads in opts.threads:
            res = {impl: run_one(impl, model, threads, opts.steps) for impl in opts.impls}
            all_results.append((model, threads, res))
            torch_ms = res.get("torch", {}).get("step_ms", float("nan"))
            jit = res.get("ours-jit", {})
            pyn = res.get("ours-pynative", {})
            print(f"| {model} | {threads} | {torch_ms:.0f} | {jit.get('step_ms', float('nan')):.0f} "
                  f"({jit.get('first_s', float('nan')):.1f}) | {pyn.get('step_ms', float('nan')):.0f} | "
                  f"{jit.get('step_ms', float('nan')) / torch_ms:.2f}x |", flush=True)
    print("\nPer phase, median ms (forward+backward / clipping / optimizer+schedule), peak RSS\n")
    print("| model | threads | impl | fwd+bwd | clip | optimizer | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for model, threads, res in all_results:
        for impl, r in res.items():
            p = r["phases_ms"]
            print(f"| {model} | {threads} | {impl} | {p['grad']:.0f} | {p['clip']:.0f} | {p['optimizer']:.0f} | "
                  f"{r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
