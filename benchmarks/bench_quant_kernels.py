"""Speed of the packed matrix-vector kernels alone: exact (float32 x) vs int8-activation (q8) kernels, and LinearNT.

Calls the native library's kernels directly through ctypes (no MindSpore launch overhead) on one row of x and
--rows x --cols matrices (SmolLM2's MLP: 1536 x 576), either one matrix repeated (weights in cache) or --distinct
matrices in turn (weights from memory), at --threads native threads. Times: thread CPU time with 1 thread (robust to
other processes' load), wall time otherwise; best of --repeats.

    python benchmarks/bench_quant_kernels.py                    # 1 thread, in cache and from memory
    python benchmarks/bench_quant_kernels.py --threads 2
"""

import argparse
import ctypes
import os
import time

import numpy as np


def kernel_call(lib, name, arrays):
    """A no-argument callable running kernel `name` with MindSpore's AOT signature on NumPy arrays (inputs, then
    outputs)."""
    n = len(arrays)
    params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
    dims = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    shapes = (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(d, ctypes.POINTER(ctypes.c_int64)) for d in dims])
    fn = getattr(lib, name)

    def call():
        if fn(n, params, ndims, shapes, None, None, None) != 0:
            raise RuntimeError(f"{name} failed")
    call.keep = (arrays, params, ndims, dims, shapes)
    return call


def packed(rng, bits, n, k):
    groups = k // 32
    scale = ((rng.random((n, groups)) + 0.1) / 16).astype(np.float32)
    if bits == 8:
        return [rng.integers(-127, 128, (n, k), dtype=np.int8), scale]
    return [rng.integers(0, 256, (n, k // 2), dtype=np.uint8), scale, -rng.random((n, groups)).astype(np.float32)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1536)
    parser.add_argument("--cols", type=int, default=576)
    parser.add_argument("--distinct", type=int, default=40, help="matrices for the from-memory case")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.sched_setaffinity(0, set(range(min(args.threads, os.cpu_count()))))
    from mindone.transformers.backend import native

    lib = ctypes.CDLL(native.library_path())
    lib.NativeSetThreads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    rng = np.random.default_rng(0)
    n, k = args.rows, args.cols
    x = rng.standard_normal((1, k)).astype(np.float32)
    y = np.empty((1, n), np.float32)
    print(f"{n}x{k}, 1 row of x, {args.threads} thread(s), {'thread CPU' if args.threads == 1 else 'wall'} time")
    for case, count in (("in cache", 1), ("from memory", args.distinct)):
        for bits in (4, 8):
            mats = [packed(rng, bits, n, k) for _ in range(count)]
            nbytes = sum(a.nbytes for a in mats[0])
            for name in (f"QLinearInt{bits}", f"QLinearInt{bits}Q8"):
                calls = [kernel_call(lib, name, [x, *m, y]) for m in mats]
                for call in calls:
                    call()
                best = float("inf")
                for _ in range(args.repeats):
                    start = clock()
                    for call in calls:
                        call()
                    best = min(best, (clock() - start) / count)
                print(f"{case:12s} {name:15s} {best * 1e6:7.1f} us  {nbytes / best / 1e9:5.1f} GB/s")
        mats = [rng.standard_normal((n, k)).astype(np.float32) for _ in range(min(count, 10))]
        calls = [kernel_call(lib, "LinearNT", [x, w, y]) for w in mats]
        best = float("inf")
        for _ in range(args.repeats):
            start = clock()
            for call in calls:
                call()
            best = min(best, (clock() - start) / len(calls))
        print(f"{case:12s} {'LinearNT fp32':15s} {best * 1e6:7.1f} us  {n * k * 4 / best / 1e9:5.1f} GB/s")


if __name__ == "__main__":
    main()
