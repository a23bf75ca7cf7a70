"""Encoder forward benchmark: DINOv2-S/14 image features, BERT-base and the Whisper-base encoder (random weights,
fp32), ours (PyNative and a compiled graph) vs torch `transformers` eager on the same weights.

Each implementation runs in its own subprocess pinned with `taskset` to as many cores as threads (MindSpore's matmul
ignores its thread setting; only CPU affinity limits it). The weights are written once by torch (random init with
the model's own initialiser) into a temporary directory that both libraries load.

    python benchmarks/bench_encoders.py [--models dinov2 bert whisper] [--threads 2] [--runs 3] [--clock wall|cpu]

Prints a markdown table of median ms per forward and the ratios ours / torch (lower is better), plus the largest
output difference relative to torch's mean |output| (the parity metric).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# model name -> (transformers class, config kwargs, input builder, description)
MODELS = {
    "dinov2": ("Dinov2Model", "Dinov2Config",
               dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                    image_size=518, layerscale_value=1.0),
               "DINOv2-S/14, 8 images 224x224"),
    "bert": ("BertModel", "BertConfig", dict(), "BERT-base, batch 4 x 128 tokens"),
    "whisper": ("WhisperModel", "WhisperConfig",
                dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                     decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_mel_bins=80),
                "Whisper-base encoder, 1 x 30 s of 80 mel bins"),
}


def _inputs(name):
    rng = np.random.RandomState(0)
    if name == "dinov2":
        return {"pixel_values": rng.standard_normal((8, 3, 224, 224)).astype(np.float32)}
    if name == "bert":
        return {"input_ids": rng.randint(0, 30522, (4, 128)).astype(np.int64)}
    return {"input_features": rng.standard_normal((1, 80, 3000)).astype(np.float32)}


def _output_of(name, outputs):
    return outputs["last_hidden_state"]


def prepare(name, directory):
    import torch
    import transformers

    cls_name, config_name, kwargs, _ = MODELS[name]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**kwargs)
    model = getattr(transformers, cls_name)(config)
    if name == "whisper":
        model = model.get_encoder()
        model.config.architectures = ["WhisperEncoder"]
    model.save_pretrained(directory)


def worker(impl, name, threads, runs, directory):
    inputs = _inputs(name)
    result = {"impl": impl}
    if impl == "torch":
        import torch
        import transformers

        torch.set_num_threads(threads)
        if name == "whisper":
            from transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
        else:
            cls = getattr(transformers, MODELS[name][0])
        model = cls.from_pretrained(directory, attn_implementation="eager").eval()
        args = {k: torch.from_numpy(v) for k, v in inputs.items()}

        def step():
            with torch.no_grad():
                return _output_of(name, model(**args)).numpy()
    else:
        import mindspore as ms

        import mindone.transformers as mt
        from mindone.transformers.backend import runtime

        runtime.set_threads(threads)
        if name == "whisper":
            from mindone.transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
        else:
            cls = getattr(mt, MODELS[name][0])
        model = cls.from_pretrained(directory)
        args = {k: ms.Tensor(v) for k, v in inputs.items()}
        if impl == "ours-graph":
            @ms.jit
            def forward(**kw):
                return _output_of(name, model(**kw))

            t = time.perf_counter()
            forward(**args).asnumpy()
            result["compile_s"] = time.perf_counter() - t

            def step():
                return forward(**args).asnumpy()
        else:
            def step():
                return _output_of(name, model(**args)).asnumpy()

    out = step()  # warm-up
    times, cpu_times = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        out = step()
        times.append((time.perf_counter() - t) * 1000)
        cpu_times.append((time.process_time() - c) * 1000)
    result["median_ms"] = statistics.median(times)
    result["cpu_ms"] = statistics.median(cpu_times)
    np.save(os.path.join(directory, f"out-{impl}.npy"), out)
    print(json.dumps(result))


def run_one(impl, name, threads, runs, directory):
    cores = ",".join(str(i) for i in range(threads))
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--worker", impl, "--models", name, "--threads",
           str(threads), "--runs", str(runs), "--dir", directory]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--impls", nargs="+", default=["torch", "ours-pynative", "ours-graph"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (with --threads 1, the work done, whatever else runs)")
    parser.add_argument("--worker")
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.models[0], args.threads, args.runs, args.dir)
        return

    print(f"fp32, random weights, {args.threads} threads, median {args.clock} time of {args.runs} runs (ms); "
          "ratio = ours / torch\n")
    print("| model | torch eager | " + " | ".join(i for i in args.impls if i != "torch")
          + " | " + " | ".join(f"{i} / torch" for i in args.impls if i != "torch") + " | max err (parity metric) |")
    print("|---|---|" + "---|" * (2 * (len(args.impls) - 1)) + "---|")
    for name in args.models:
        with tempfile.TemporaryDirectory() as directory:
            prepare(name, directory)
            res = {impl: run_one(impl, name, args.threads, args.runs, directory) for impl in args.impls}
            ref = np.load(os.path.join(directory, "out-torch.npy"))
            errs = [float(np.abs(np.load(os.path.join(directory, f"out-{i}.npy")) - ref).max() / np.abs(ref).mean())
                    for i in args.impls if i != "torch"]
        key = "median_ms" if args.clock == "wall" else "cpu_ms"
        t = res["torch"][key]
        ours = [res[i][key] for i in args.impls if i != "torch"]
        print(f"| {MODELS[name][3]} | {t:.1f} | " + " | ".join(f"{o:.1f}" for o in ours) + " | "
              + " | ".join(f"{o / t:.2f}" for o in ours) + f" | {max(errs):.1e} |", flush=True)


if __name__ == "__main__":
    main()
