"""Vision-language and mixture-of-experts generation speed, ours (MindSpore) vs torch `transformers`.

Real architectures at small sizes, seeded random weights written once by torch (no such checkpoint ships in a
registry package): greedy generation of --new-tokens tokens (EOS suppressed with min_new_tokens), batch 1, float32,
1 core (CPU affinity) and 2 cores, each (model, implementation, cores) in its own process, rounds interleaved so
machine noise hits both sides alike. Prints a markdown table (no assertions).

    python benchmarks/bench_vlm_moe.py                      # all rows
    python benchmarks/bench_vlm_moe.py --models llava --threads-list 2 --rounds 1
    python benchmarks/bench_vlm_moe.py --baseline-src /path/to/other/checkout/src   # + "ours@base" rows

--baseline-src adds an "ours@base" row per model run with another checkout's library (e.g. main before a change), in
the same interleaved rounds, so before / after are compared with torch under the same load.

Models:
  llava      LLaVA: CLIP ViT-B/32 vision tower at 224 px (49 image tokens) + SmolLM2-135M's decoder, 8 text tokens;
             TTFT is the multimodal prefill (vision tower + projector + LM prompt), then one-token decode steps
  qwen2_vl   Qwen2-VL: a 12-layer, 640-wide vision transformer (patch 14, 2x2 merge: a 224 px image = 256 patches
             -> 64 tokens) + SmolLM2-135M-sized Qwen2 decoder with M-RoPE, 8 text tokens
  mixtral    Mixtral: 8 layers, hidden 512, 8 experts of 1024, top-2
  qwen3_moe  Qwen3-MoE: 8 layers, hidden 512, 32 experts of 256, top-4, 32-token prompt
--baseline-src adds rows run with another checkout's library (e.g. main before a change), in the same rounds.
Columns: TTFT (prompt -> first token), decode tok/s after the first token, compile = extra time of our first
(warm-up) call, the ratio of decode speeds per round (median), and whether both produced the same tokens. The CPU
columns are the process's CPU time (all its threads) for the prompt and per decode step: on a machine shared with
other jobs they move far less than wall times, which count the time the process waited for a core.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_generate import TokenTimer  # noqa: E402
from common import run_worker_process  # noqa: E402

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mindone-transformers", "fixtures")
PROMPT_LEN = {"llava": 8, "qwen2_vl": 8, "mixtral": 32, "qwen3_moe": 32}
VLMS = ("llava", "qwen2_vl")
# Qwen2-VL special tokens, placed at the top of the vocabulary
QWEN_IMAGE, QWEN_VIDEO, QWEN_START, QWEN_END = 49151, 49150, 49149, 49148


def make_config(name):
    import transformers

    if name == "llava":
        vision = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                               num_attention_heads=12, image_size=224, patch_size=32,
                                               projection_dim=512)
        text = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                        max_position_embeddings=2048, rope_theta=100000.0, rms_norm_eps=1e-5,
                                        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        return transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=49151,
                                        image_seq_length=49, vision_feature_layer=-2)
    if name == "qwen2_vl":
        vision = dict(depth=12, embed_dim=640, hidden_size=576, num_heads=10, mlp_ratio=4, patch_size=14,
                      temporal_patch_size=2, spatial_merge_size=2, in_channels=3)
        text = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
                    bos_token_id=1, eos_token_id=2, pad_token_id=2,
                    rope_parameters={"rope_type": "default", "rope_theta": 100000.0, "mrope_section": [8, 12, 12]})
        return transformers.Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=QWEN_IMAGE,
                                          video_token_id=QWEN_VIDEO, vision_start_token_id=QWEN_START,
                                          vision_end_token_id=QWEN_END)
    if name == "mixtral":
        return transformers.MixtralConfig(vocab_size=32000, hidden_size=512, intermediate_size=1024,
                                          num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                                          num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=2048)
    return transformers.Qwen3MoeConfig(vocab_size=32000, hidden_size=512, intermediate_size=1024,
                                       moe_intermediate_size=256, num_hidden_layers=8, num_attention_heads=8,
                                       num_key_value_heads=4, head_dim=64, num_experts=32, num_experts_per_tok=4,
                                       max_position_embeddings=2048, norm_topk_prob=True)


def checkpoint(name):
    """The seeded random checkpoint, written by torch once (cached)."""
    target = os.path.join(CACHE, f"bench-{name}")
    if not os.path.exists(os.path.join(target, "config.json")):
        import torch
        import transformers

        cls = {"llava": transformers.LlavaForConditionalGeneration,
               "qwen2_vl": transformers.Qwen2VLForConditionalGeneration, "mixtral": transformers.MixtralForCausalLM,
               "qwen3_moe": transformers.Qwen3MoeForCausalLM}[name]
        torch.manual_seed(0)
        cls(make_config(name)).eval().save_pretrained(target)
    return target


def inputs(name):
    import numpy as np

    rng = np.random.RandomState(0)
    ids = rng.randint(300, 30000, (1, PROMPT_LEN[name])).astype(np.int64)
    out = {"input_ids": ids}
    if name == "llava":
        # BOS, an image's 49 placeholder tokens, then the text
        ids = np.concatenate([[[1]], np.full((1, 49), 49151), ids], 1).astype(np.int64)
        out = {"input_ids": ids, "pixel_values": rng.randn(1, 3, 224, 224).astype(np.float32)}
    if name == "qwen2_vl":
        # BOS, <vision_start>, the image's 64 merged-patch tokens, <vision_end>, then the text
        ids = np.concatenate([[[1, QWEN_START]], np.full((1, 64), QWEN_IMAGE), [[QWEN_END]], ids], 1).astype(np.int64)
        out = {"input_ids": ids, "mm_token_type_ids": (ids == QWEN_IMAGE).astype(np.int64),
               "pixel_values": rng.randn(256, 3 * 2 * 14 * 14).astype(np.float32),
               "image_grid_thw": np.array([[1, 16, 16]], np.int64)}
    out["attention_mask"] = np.ones_like(out["input_ids"])
    return out


def run_worker(args):
    if args.threads == 1:
        os.sched_setaffinity(0, {0})
    path = args.path
    data = inputs(args.model)
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    if args.worker == "torch":
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        model = transformers.AutoModelForImageTextToText.from_pretrained(path) if args.model in VLMS else \
            transformers.AutoModelForCausalLM.from_pretrained(path)
        model.eval()
        tensors = {k: torch.from_numpy(v) for k, v in data.items()}

        def generate(timer):
            with torch.no_grad():
                return model.generate(**tensors, streamer=timer, **kwargs).numpy()
    else:
        sys.path.insert(0, ROOT)
        from benchmarks.common import hide_torch

        hide_torch()
        import mindone.transformers
        from mindone.transformers import AutoModelForCausalLM, AutoModelForImageTextToText
        from mindone.transformers.backend import runtime

        print(f"library: {os.path.dirname(mindone.transformers.__file__)}", file=sys.stderr)
        runtime.configure()
        runtime.set_threads(args.threads)
        auto = AutoModelForImageTextToText if args.model in VLMS else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype="float32")

        def generate(timer):
            return model.generate(**data, streamer=timer, **kwargs).asnumpy()

    warm = TokenTimer()
    t0 = time.perf_counter()
    generate(warm)
    warm_s = time.perf_counter() - t0
    timer = TokenTimer()  # records CPU time too
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = generate(timer)
    total_s = time.perf_counter() - t0
    steps = timer.times[1:]
    decode_s = steps[-1] - steps[0]
    prompt = data["input_ids"].shape[1]
    print("RESULT " + json.dumps({
        "ttft_s": steps[0] - t0, "decode_tok_s": (args.new_tokens - 1) / decode_s,
        "ttft_cpu_s": timer.cpu[1] - cpu0,
        "decode_cpu_ms": (timer.cpu[-1] - timer.cpu[1]) / (args.new_tokens - 1) * 1e3,
        "compile_s": max(warm_s - total_s, 0.0) if args.worker == "ours" else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens": out[:, prompt:].tolist()}), flush=True)


def run_parent(args):
    paths = {name: checkpoint(name) for name in args.models}
    impls = ("torch", "ours") + (("ours@base",) if args.baseline_src else ())
    configs = [(m, impl, t) for m in args.models for t in args.threads_list for impl in impls]
    results = {c: [] for c in configs}
    for round_idx in range(args.rounds):
        for model, impl, threads in configs:
            env = None
            if impl.endswith("@base"):
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    [os.path.abspath(args.baseline_src)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
            cmd = [sys.executable, __file__, "--worker", impl.split("@")[0], "--model", model, "--path", paths[model],
                   "--threads", str(threads), "--new-tokens", str(args.new_tokens)]
            res = run_worker_process(cmd, f"{impl} {model} threads {threads}", env=env)
            results[(model, impl, threads)].append(res)
            print(f"round {round_idx} {model} {impl} t{threads}: TTFT {res['ttft_s']:.2f} s, "
                  f"{res['decode_tok_s']:.1f} tok/s", file=sys.stderr, flush=True)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    lines = ["| model | cores | impl | TTFT s | decode tok/s | compile s | peak RSS MB | tokens = torch | "
             "decode vs torch | TTFT vs torch | TTFT CPU s | decode CPU ms/token | CPU: TTFT / decode vs torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, impl, threads in configs:
        rows = results[(model, impl, threads)]
        ref = results[(model, "torch", threads)]
        same = decode = ttft = cpu = "-"
        if impl != "torch":
            same = "yes" if rows[0]["tokens"] == ref[0]["tokens"] else "NO"
            decode = f"{statistics.median(r['decode_tok_s'] / t['decode_tok_s'] for r, t in zip(rows, ref)):.2f}x"
            ttft = f"{statistics.median(r['ttft_s'] / t['ttft_s'] for r, t in zip(rows, ref)):.2f}x"
            cpu = (f"{statistics.median(r['ttft_cpu_s'] / t['ttft_cpu_s'] for r, t in zip(rows, ref)):.2f}x / "
                   f"{statistics.median(r['decode_cpu_ms'] / t['decode_cpu_ms'] for r, t in zip(rows, ref)):.2f}x")
        lines.append(f"| {model} | {threads} | {impl} | {med(rows, 'ttft_s'):.2f} | {med(rows, 'decode_tok_s'):.1f} | "
                     f"{med(rows, 'compile_s'):.1f} | {med(rows, 'peak_rss_mb'):.0f} | {same} | {decode} | {ttft} | "
                     f"{med(rows, 'ttft_cpu_s'):.2f} | {med(rows, 'decode_cpu_ms'):.0f} | {cpu} |")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["ours", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=list(PROMPT_LEN), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", choices=list(PROMPT_LEN), default=list(PROMPT_LEN))
    parser.add_argument("--threads-list", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", help="another checkout's src directory: adds ours@base rows run with it")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
