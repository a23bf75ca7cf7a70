"""Encoder-decoder generation speed: ours compiled (static cache), ours dynamic (PyNative, growing cache), torch.

T5-small-sized (6 + 6 layers, d_model 512, 8 heads, d_ff 2048, vocab 32128) and BART-base-sized (6 + 6 layers,
d_model 768, 12 heads, ffn 3072, vocab 50265) models with seeded random weights written once by torch (cached under
~/.cache/mindone-transformers/fixtures), greedy decoding of --new-tokens tokens (EOS suppressed with min_new_tokens)
from a --source-len-token encoder input, batch 1, float32. Each (model, implementation, cores) runs in its own
process and rounds are interleaved, so machine noise hits every side alike. Prints a markdown table (no assertions).

    python benchmarks/bench_seq2seq.py                           # both models, 1 and 2 cores, 3 rounds
    python benchmarks/bench_seq2seq.py --models t5 --threads-list 2 --rounds 1
    python benchmarks/bench_seq2seq.py --impls torch ours --baseline-src /path/to/other/checkout/src  # + ours@base

--baseline-src adds, for every ours* implementation, an "<impl>@base" row run with another checkout's library (e.g.
main before a change) in the same interleaved rounds, so before/after speeds are compared under the same load.

Columns: TTFT (encoder + first decoder step), decode tok/s after the first token, decode CPU ms/token (the process's
CPU time, all threads, per token after the first: waiting for a core on a busy machine does not inflate it), compile =
extra time of the first (warm-up) call of the compiled path, the per-round ratios to torch's (median) of decode speed
and of CPU time per token (torch's / ours: > 1 is ours faster), and whether the tokens equal torch's.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_generate import TokenTimer  # noqa: E402
from common import run_worker_process  # noqa: E402

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mindone-transformers", "fixtures")
MODELS = ("t5", "bart")
IMPLS = ("torch", "ours", "ours-dynamic")


def make_config(name):
    import transformers

    if name == "t5":
        return transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                                     num_decoder_layers=6, num_heads=8, feed_forward_proj="relu",
                                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return transformers.BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                                   encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                                   decoder_ffn_dim=3072, max_position_embeddings=1024, pad_token_id=1,
                                   bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                                   forced_bos_token_id=None, forced_eos_token_id=None)


def checkpoint(name):
    """The seeded random checkpoint, written by torch once (cached) in a child process: the workers inherit the
    parent's peak RSS, which must not include torch."""
    target = os.path.join(CACHE, f"bench-seq2seq-{name}")
    if not os.path.exists(os.path.join(target, "config.json")):
        subprocess.run([sys.executable, __file__, "--write-checkpoint", name, "--path", target], check=True)
    return target


def write_checkpoint(name, target):
    import torch
    import transformers

    cls = {"t5": transformers.T5ForConditionalGeneration, "bart": transformers.BartForConditionalGeneration}[name]
    torch.manual_seed(0)
    cls(make_config(name)).eval().save_pretrained(target)


def source_ids(length):
    import numpy as np

    rng = np.random.RandomState(0)
    return rng.randint(300, 30000, (1, length)).astype(np.int64)


def run_worker(args):
    if args.threads == 1:
        os.sched_setaffinity(0, {0})
    ids = source_ids(args.source_len)
    mask = ids * 0 + 1
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, num_beams=1)
    if args.worker == "torch":
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(args.path).eval()
        tensors = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

        def generate(timer):
            with torch.no_grad():
                return model.generate(**tensors, streamer=timer, **kwargs).numpy()
    else:
        sys.path.insert(0, ROOT)
        from benchmarks.common import hide_torch

        hide_torch()
        from mindone.transformers import AutoModelForSeq2SeqLM
        from mindone.transformers.backend import runtime

        runtime.configure()
        runtime.set_threads(args.threads)
        model = AutoModelForSeq2SeqLM.from_pretrained(args.path, dtype="float32")
        extra = {"cache_implementation": "dynamic"} if args.worker == "ours-dynamic" else {}

        def generate(timer):
            return model.generate(input_ids=ids, attention_mask=mask, streamer=timer, **kwargs, **extra).asnumpy()

    warm = TokenTimer()
    t0 = time.perf_counter()
    generate(warm)
    warm_s = time.perf_counter() - t0
    timer = TokenTimer()
    t0 = time.perf_counter()
    out = generate(timer)
    total_s = time.perf_counter() - t0
    steps = timer.times[1:]  # the first put is the decoder start token
    decode_s = steps[-1] - steps[0]
    print("RESULT " + json.dumps({
        "ttft_s": steps[0] - t0, "decode_tok_s": (args.new_tokens - 1) / decode_s,
        "decode_cpu_ms": (timer.cpu[-1] - timer.cpu[1]) / (args.new_tokens - 1) * 1e3,
        "compile_s": max(warm_s - total_s, 0.0) if args.worker == "ours" else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens": out.tolist()}), flush=True)


def run_parent(args):
    paths = {name: checkpoint(name) for name in args.models}
    impls = list(args.impls)
    if args.baseline_src:
        impls += [f"{impl}@base" for impl in args.impls if impl.startswith("ours")]
    configs = [(m, impl, t) for m in args.models for t in args.threads_list for impl in impls]
    results = {c: [] for c in configs}
    for round_idx in range(args.rounds):
        for model, impl, threads in configs:
            env = None
            if impl.endswith("@base"):
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    [os.path.abspath(args.baseline_src)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
            cmd = [sys.executable, __file__, "--worker", impl.split("@")[0], "--path", paths[model], "--threads",
                   str(threads), "--source-len", str(args.source_len), "--new-tokens", str(args.new_tokens)]
            res = run_worker_process(cmd, f"{impl} {model} threads {threads}", env=env)
            results[(model, impl, threads)].append(res)
            print(f"round {round_idx} {model} {impl} t{threads}: TTFT {res['ttft_s']:.2f} s, "
                  f"{res['decode_tok_s']:.1f} tok/s, {res['decode_cpu_ms']:.1f} CPU ms/token", file=sys.stderr,
                  flush=True)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    lines = ["| model | cores | impl | TTFT s | decode tok/s | decode CPU ms/token | compile s | peak RSS MB | "
             "tokens = torch | decode vs torch | CPU time vs torch |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, impl, threads in configs:
        rows = results[(model, impl, threads)]
        ref = results.get((model, "torch", threads))
        same = ratio = cpu_ratio = "-"
        if ref and impl != "torch":
            same = "yes" if rows[0]["tokens"] == ref[0]["tokens"] else "NO"
            ratio = f"{statistics.median(r['decode_tok_s'] / t['decode_tok_s'] for r, t in zip(rows, ref)):.2f}x"
            # torch's CPU ms over ours: > 1 means ours needs less CPU time per token (same sense as the speed ratio)
            cpu_ratio = f"{statistics.median(t['decode_cpu_ms'] / r['decode_cpu_ms'] for r, t in zip(rows, ref)):.2f}x"
        lines.append(f"| {model} | {threads} | {impl} | {med(rows, 'ttft_s'):.2f} | {med(rows, 'decode_tok_s'):.1f} | "
                     f"{med(rows, 'decode_cpu_ms'):.1f} | {med(rows, 'compile_s'):.1f} | "
                     f"{med(rows, 'peak_rss_mb'):.0f} | {same} | {ratio} | {cpu_ratio} |")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--write-checkpoint", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--threads-list", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--source-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", help="another checkout's src directory: adds <impl>@base rows run with it")
    args = parser.parse_args()
    if args.write_checkpoint:
        write_checkpoint(args.write_checkpoint, args.path)
    elif args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
