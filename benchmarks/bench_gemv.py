"""Matrix-vector products as in a batch-1 decode step: MindSpore's MatMul vs the native kernel vs torch.

Streams --layers distinct (N, K) float32 weights (default 60 x (1536, 576) = 212 MB, far larger than the caches, as a
decoder's weights are) through `x (rows, K) @ w.T`, inside one `mindspore.jit` graph for MindSpore and in a Python
loop of `torch.nn.functional.linear` for torch, and prints GB/s of weights read (median of interleaved repeats).
This is why `F.linear` uses `backend.native` for one float32 row on CPU.

    python benchmarks/bench_gemv.py [--threads 1] [--rows 1 4] [--repeats 15]
"""

import argparse
import os
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="1 pins the process to one core")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--n", type=int, default=1536)
    parser.add_argument("--k", type=int, default=576)
    parser.add_argument("--layers", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))

    import mindspore as ms
    import torch
    from mindspore import Tensor, ops

    from mindone.transformers.backend import native, runtime

    runtime.configure()
    runtime.set_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((args.n, args.k)).astype(np.float32) for _ in range(args.layers)]
    gigabytes = sum(w.nbytes for w in weights) / 1e9
    params = [ms.Parameter(Tensor(w), name=f"w{i}") for i, w in enumerate(weights)]
    torch_weights = [torch.from_numpy(w) for w in weights]
    matmul_nt = ops.MatMul(transpose_b=True)
    native_op = native.linear_nt_op()

    def graph(op):
        def run(x):
            out = []
            for w in params:
                out.append(op(x, w)[:, :1])
            return ops.concat(out, 1)

        return ms.jit(run)

    print(f"{args.layers} weights of ({args.n}, {args.k}) float32 = {gigabytes * 1e3:.0f} MB, {args.threads} "
          f"thread(s); GB/s of weights read, median of {args.repeats}\n")
    print("| rows | MindSpore MatMul (jit) | native kernel (jit) | torch linear | native / MatMul |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        x = rng.standard_normal((rows, args.k)).astype(np.float32)
        calls = {"matmul": graph(matmul_nt)}
        if native_op is not None:
            calls["native"] = graph(native_op)
        tx = torch.from_numpy(x)
        calls["torch"] = lambda: [torch.nn.functional.linear(tx, w) for w in torch_weights]
        mx = Tensor(x)
        reference = calls["matmul"](mx).asnumpy()
        if "native" in calls:
            np.testing.assert_allclose(calls["native"](mx).asnumpy(), reference, rtol=1e-4, atol=1e-3)
        times = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                if name == "torch":
                    call()
                else:
                    call(mx).asnumpy()
                times[name].append(time.perf_counter() - start)
        rate = {name: gigabytes / statistics.median(t) for name, t in times.items()}
        native_cell = f"{rate['native']:.1f}" if "native" in rate else "unavailable"
        ratio = f"{rate['native'] / rate['matmul']:.2f}x" if "native" in rate else "-"
        print(f"| {rows} | {rate['matmul']:.1f} | {native_cell} | {rate['torch']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
