"""Resident memory of preparing ZeRO stage 3 on one rank of N: `from_pretrained` then slicing, vs `load_sharded`.

    python benchmarks/probe_zero3_load.py [--world-size 2] [--rank 0]

On SmolLM2-135M (float32 safetensors), each path runs in a fresh process: load the model, build this rank's
`ShardedAdamW` slices (stage-3 groups, no collectives needed), release the model's parameters as the stage-3 step
does. Prints VmRSS / VmHWM (peak) after import, after loading and after slicing.
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import hide_torch, rss, smollm2_hf_dir  # noqa: E402


def worker(mode, world_size, rank):
    hide_torch()
    from mindone.transformers import LlamaForCausalLM, TrainingArguments
    from mindone.transformers.trainer import zero

    path = smollm2_hf_dir()
    print(f"{mode:16s} after import   {rss()}", flush=True)
    if mode == "load_sharded":
        model = zero.load_sharded(LlamaForCausalLM, path)
    else:
        model = LlamaForCausalLM.from_pretrained(path, dtype="float32")
    print(f"{mode:16s} after load     {rss()}", flush=True)
    args = TrainingArguments(output_dir="/tmp/probe_zero3", zero_stage=3, jit_mode=False)
    args._world_size, args._rank = world_size, rank  # this rank's slices, without msrun
    optimizer = zero.ShardedAdamW.from_model(args, model)
    for param in model.get_parameters():
        zero._release_parameter(param)
    held = optimizer.state_bytes() / 1e9
    print(f"{mode:16s} after slicing  {rss()} (optimizer state {held:.2f} GB: param slice + 2 moments)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.world_size, args.rank)
        return
    smollm2_hf_dir()  # written once, outside the measured processes
    for mode in ("from_pretrained", "load_sharded"):
        subprocess.run([sys.executable, __file__, "--worker", mode, "--world-size", str(args.world_size),
                        "--rank", str(args.rank)], check=True)


if __name__ == "__main__":
    main()
