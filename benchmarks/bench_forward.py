"""Forward-pass benchmark: SmolLM2-135M (fp32, batch 1), ours (PyNative, graph) vs torch `transformers` eager.

Every measurement runs in its own subprocess (so peak RSS is per implementation), pinned with `taskset` to as many
cores as threads (MindSpore's matmul ignores its thread setting; only CPU affinity limits it). The checkpoint is the
embedded GGUF converted once to a safetensors dir, so both libraries load the same files. Our workers run with torch
hidden (the library does not need it; `transformers` would otherwise import it and add ~350 MB to our RSS).

    python benchmarks/bench_forward.py [--seq 128 512] [--threads 1 2] [--runs 7] [--clock wall|cpu]
                                       [--impls torch ours-pynative ours-graph]

Prints a markdown table: median ms, ratio ours/torch, peak RSS, and from_pretrained load time.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import hide_torch, smollm2_hf_dir  # noqa: E402


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(impl, seq, threads, runs, model_dir):
    import numpy as np

    ids = np.random.RandomState(0).randint(0, 49152, (1, seq)).astype(np.int64)
    result = {"impl": impl, "seq": seq, "threads": threads}
    if impl == "torch":
        import torch
        import transformers

        torch.set_num_threads(threads)
        t = time.perf_counter()
        model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        result["load_s"] = time.perf_counter() - t
        x = torch.from_numpy(ids)

        def step():
            with torch.no_grad():
                model(x, use_cache=False).logits.numpy()
    else:
        hide_torch()
        import mindspore as ms

        from mindone.transformers import LlamaForCausalLM
        from mindone.transformers.backend import runtime

        runtime.set_threads(threads)
        t = time.perf_counter()
        model = LlamaForCausalLM.from_pretrained(model_dir, dtype="float32")
        result["load_s"] = time.perf_counter() - t
        x = ms.Tensor(ids)
        if impl == "ours-graph":
            @ms.jit
            def forward(input_ids):
                return model(input_ids, use_cache=False)["logits"]

            t = time.perf_counter()
            forward(x).asnumpy()
            result["compile_s"] = time.perf_counter() - t

            def step():
                forward(x).asnumpy()
        else:
            def step():
                model(x, use_cache=False).logits.asnumpy()

    step()  # warm-up
    times, cpu_times = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - t) * 1000)
        cpu_times.append((time.process_time() - c) * 1000)
    result["median_ms"] = statistics.median(times)
    result["cpu_ms"] = statistics.median(cpu_times)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def run_one(impl, seq, threads, runs, model_dir):
    cores = ",".join(str(i) for i in range(threads))
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--worker", impl, "--seq", str(seq), "--threads",
           str(threads), "--runs", str(runs), "--model-dir", model_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} seq={seq} threads={threads} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: each process's CPU time (with --threads 1, the work done, whatever else runs)")
    parser.add_argument("--impls", nargs="+", default=["torch", "ours-pynative", "ours-graph"])
    parser.add_argument("--worker")
    parser.add_argument("--model-dir")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seq[0], args.threads[0], args.runs, args.model_dir)
        return

    model_dir = smollm2_hf_dir()
    rows = []
    for threads in args.threads:
        for seq in args.seq:
            res = {impl: run_one(impl, seq, threads, args.runs, model_dir) for impl in args.impls}
            if args.clock == "cpu":
                for r in res.values():
                    r["median_ms"] = r["cpu_ms"]
            rows.append((threads, seq, res))

    print(f"SmolLM2-135M fp32, batch 1, median {args.clock} time of {args.runs} runs (ms); ratio = ours / torch "
          "(lower is better)\n")
    if "ours-pynative" not in args.impls:  # graph only
        print("| threads | seq | torch eager | ours graph | graph / torch | graph compile (s) |")
        print("|---|---|---|---|---|---|")
        for threads, seq, r in rows:
            t, g = r["torch"], r["ours-graph"]
            print(f"| {threads} | {seq} | {t['median_ms']:.1f} | {g['median_ms']:.1f} | "
                  f"{g['median_ms'] / t['median_ms']:.2f} | {g['compile_s']:.1f} |")
        return
    print("| threads | seq | torch eager | ours PyNative | ours graph | graph / torch | PyNative / torch "
          "| graph compile (s) | peak RSS MB torch / ours graph |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads, seq, r in rows:
        t, p, g = r["torch"], r["ours-pynative"], r["ours-graph"]
        print(f"| {threads} | {seq} | {t['median_ms']:.1f} | {p['median_ms']:.1f} | {g['median_ms']:.1f} | "
              f"{g['median_ms'] / t['median_ms']:.2f} | {p['median_ms'] / t['median_ms']:.2f} | "
              f"{g['compile_s']:.1f} | {t['peak_rss_mb']:.0f} / {g['peak_rss_mb']:.0f} |")
    print("\n| from_pretrained (safetensors fp32) | torch | ours | ours / torch |")
    print("|---|---|---|---|")
    for threads, seq, r in rows:
        t, p = r["torch"], r["ours-pynative"]
        print(f"| threads {threads}, run for seq {seq} | {t['load_s']:.2f} s | {p['load_s']:.2f} s | "
              f"{p['load_s'] / t['load_s']:.2f} |")


if __name__ == "__main__":
    main()
