"""Kernel time of one compiled forward of an encoder of `bench_encoders.py` or of SmolLM2-135M's prefill (MindSpore
profiler, CPU): kernels per forward and time per kernel type, to find where a graph-mode forward spends its time.

    python benchmarks/profile_forward.py --model dinov2|bert|whisper|smollm2 [--seq 128] [--threads 1] [--runs 2]

Random weights (SmolLM2: the benchmark checkpoint of `common.smollm2_hf_dir`). Kernel counts do not depend on machine
load; times do.
"""

import argparse
import collections
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dinov2", choices=["dinov2", "bert", "whisper", "smollm2"])
    parser.add_argument("--seq", type=int, default=128, help="smollm2: prompt tokens")
    parser.add_argument("--threads", type=int, default=1, help="1 pins the process to one core")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if args.threads == 1:
        os.sched_setaffinity(0, {0})

    import mindspore as ms
    import numpy as np
    from mindspore.profiler import Profiler

    import bench_encoders
    from profile_decode_step import kernel_events

    import mindone.transformers as mt
    from mindone.transformers.backend import runtime

    runtime.configure()
    runtime.set_threads(args.threads)
    if args.model == "smollm2":
        from common import smollm2_hf_dir

        model = mt.LlamaForCausalLM.from_pretrained(smollm2_hf_dir(), dtype="float32")
        ids = np.random.RandomState(0).randint(0, 49152, (1, args.seq)).astype(np.int64)
        inputs, key = {"input_ids": ms.Tensor(ids), "use_cache": False}, "logits"
    else:
        directory = tempfile.mkdtemp(prefix="profile_forward_")
        bench_encoders.prepare(args.model, directory)
        if args.model == "whisper":
            from mindone.transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
        else:
            cls = getattr(mt, bench_encoders.MODELS[args.model][0])
        model = cls.from_pretrained(directory)
        inputs = {k: ms.Tensor(v) for k, v in bench_encoders._inputs(args.model).items()}
        key = "last_hidden_state"

    @ms.jit
    def forward(**kw):
        return model(**kw)[key]

    forward(**inputs).asnumpy()
    t0 = time.perf_counter()
    forward(**inputs).asnumpy()
    wall_ms = (time.perf_counter() - t0) * 1e3
    out = tempfile.mkdtemp(prefix="forward_prof_")
    profiler = Profiler(output_path=out)
    for _ in range(args.runs):
        forward(**inputs).asnumpy()
    profiler.stop()
    profiler.analyse()

    events = kernel_events(out)
    n = args.runs
    total, count = collections.Counter(), collections.Counter()
    for _, duration, kind, _ in events:
        total[kind] += duration
        count[kind] += 1
    print(f"load average {os.getloadavg()[0]:.2f}; threads {args.threads}; wall {wall_ms:.1f} ms/forward (no profiler)")
    print(f"kernels/forward {len(events) / n:.0f}; kernel time {sum(total.values()) / n:.1f} ms/forward")
    print("kernel | per forward | ms/forward | us each")
    for kind, ms_total in total.most_common(args.top):
        print(f"{kind} | {count[kind] / n:.0f} | {ms_total / n:.2f} | {ms_total / count[kind] * 1e3:.1f}")


if __name__ == "__main__":
    main()
