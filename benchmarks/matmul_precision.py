"""Float32 matrix products on MindSpore CPU against float64: every MindSpore route, our native kernel, numpy, torch.

    PYTHONPATH=src python benchmarks/matmul_precision.py [--n 1024] [--k 1024,4096,14336] [--m 1,64,600]

Prints one markdown row per (M, K) product of x (M, K) @ w (N, K)^T: for each route `max|y - y64| / mean|y64|`,
the RMS of the same difference over mean|y64|, and the best of two call times. Random data, w scaled by 1/sqrt(K).
oneDNN reads `ONEDNN_MAX_CPU_ISA` once, when MindSpore first runs a product: set it in the environment to compare
kernels (docs/parity.md, "MatMul precision").
"""

import argparse
import os
import sys
import time

import mindspore as ms
import numpy as np
import torch
from mindspore import mint, nn, ops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
from mindone.transformers.backend import native  # noqa: E402


def errors(y, exact):
    diff = y.astype(np.float64) - exact
    scale = np.abs(exact).mean()
    return np.abs(diff).max() / scale, np.sqrt((diff ** 2).mean()) / scale


def routes(x, w):
    xm, wm, wtm = ms.Tensor(x), ms.Tensor(w), ms.Tensor(np.ascontiguousarray(w.T))
    dense = nn.Dense(w.shape[1], w.shape[0], has_bias=False)
    dense.weight.set_data(wm)
    matmul_nt, matmul, batch_nt = ops.MatMul(transpose_b=True), ops.MatMul(), ops.BatchMatMul(transpose_b=True)
    out = {
        "ops.MatMul(transpose_b)": lambda: matmul_nt(xm, wm).asnumpy(),
        "ops.MatMul (w.T stored)": lambda: matmul(xm, wtm).asnumpy(),
        "mint.matmul (w.T stored)": lambda: mint.matmul(xm, wtm).asnumpy(),
        "ops.BatchMatMul(transpose_b)": lambda: batch_nt(xm[None], wm[None]).asnumpy()[0],
        "nn.Dense": lambda: dense(xm).asnumpy(),
    }
    linear_nt = native.linear_nt_op()
    if linear_nt is not None:
        out["native linear_nt"] = lambda: linear_nt(xm, wm).asnumpy()
    out["numpy float32"] = lambda: x @ w.T
    out["torch float32"] = lambda: (torch.from_numpy(x) @ torch.from_numpy(w).T).numpy()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--k", default="1024,2816,4096,8960,14336")
    parser.add_argument("--m", default="1,64,600")
    args = parser.parse_args()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.runtime.launch_blocking()
    torch.set_num_threads(2)
    names = None
    for k in (int(v) for v in args.k.split(",")):
        for m in (int(v) for v in args.m.split(",")):
            rng = np.random.default_rng(k + m)
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = (rng.standard_normal((args.n, k)) / np.sqrt(k)).astype(np.float32)
            exact = x.astype(np.float64) @ w.astype(np.float64).T
            cells = []
            table = routes(x, w)
            if names is None:
                names = list(table)
                print("| M x K (N = %d) | " % args.n + " | ".join(names) + " |")
                print("|---" * (len(names) + 1) + "|")
            for fn in table.values():
                y = fn()
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
                peak, rms = errors(y, exact)
                cells.append(f"{peak:.1e} / {rms:.1e} / {min(times) * 1e3:.0f} ms")
            print(f"| {m} x {k} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
