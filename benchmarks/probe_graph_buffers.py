"""Peak memory of compiled chains of one op: which CPU kernels hold their buffers until the graph ends.

    python benchmarks/probe_graph_buffers.py [--links 2 6]

Each variant runs `x = op(x)` `links` times on a (32, 9, 128, 128) float32 tensor inside one `mindspore.jit` graph
(forward only) and prints the rise of the process's peak RSS in units of x's size. A kernel whose buffers are freed
when their last user has run stays flat as the chain grows; one that holds them grows per link. Measured on
MindSpore 2.10 CPU (see docs/performance.md, "Training memory"): a broadcasting add (mask or per-row statistic) grows
by ~4 x-sizes per link and a 4-D Transpose by ~2, while the same chains written with an explicit `broadcast_to`
or with `mint.permute` (or the native SwapAxes12 kernel, `F.swap_axes`) stay flat, as does BiasAdd where a
broadcasting Add of a linear's bias grows ~4 x-sizes per link (hence `F.linear`'s BiasAdd). One variant per subprocess (peak RSS is per process).
"""

import argparse
import subprocess
import sys

import mindspore as ms
import numpy as np
from mindspore import mint, ops

SHAPE = (32, 9, 128, 128)


def add_mask(x, mask):
    return x + mask


def add_broadcast_mask(x, mask):
    return x + ops.broadcast_to(mask, x.shape)


def mul_row_statistic(x, mask):
    return x * x.mean(-1, keep_dims=True)


def mul_broadcast_row_statistic(x, mask):
    return x * ops.broadcast_to(x.mean(-1, keep_dims=True), x.shape)


def transpose_mul(x, mask):
    return x.transpose(0, 2, 1, 3) * 2


def permute_mul(x, mask):
    return mint.permute(x, (0, 2, 1, 3)) * 2


_NATIVE = {}  # set by the worker of the native variant (mindone is imported only there)


def native_swap_mul(x, mask):
    return _NATIVE["swap"](x) * 2  # F.swap_axes's kernel in compiled training steps


_BIAS_ADD = ops.BiasAdd()


def add_bias_rows(x, mask):
    # a linear's bias on 2-D rows (F.linear's layout), broadcasting Add
    rows = x.reshape(-1, SHAPE[3])
    return (rows + mask[0, 0, 0]).reshape(SHAPE)


def bias_add_rows(x, mask):
    # the same with the BiasAdd kernel (F.linear's choice on CPU)
    return _BIAS_ADD(x.reshape(-1, SHAPE[3]), mask[0, 0, 0]).reshape(SHAPE)


def same_shape_mul(x, mask):
    return x * x


VARIANTS = {
    "add (1,1,S,S) mask": add_mask,
    "add broadcast_to(mask)": add_broadcast_mask,
    "mul by a row statistic (...,1)": mul_row_statistic,
    "mul by broadcast_to(row statistic)": mul_broadcast_row_statistic,
    "Tensor.transpose then mul": transpose_mul,
    "mint.permute then mul": permute_mul,
    "native SwapAxes12 then mul": native_swap_mul,
    "add a bias (N,) to rows": add_bias_rows,
    "BiasAdd a bias (N,) to rows": bias_add_rows,
    "same-shape mul (reference)": same_shape_mul,
}


def worker(name, links):
    op = VARIANTS[name]
    if op is native_swap_mul:
        from mindone.transformers.backend import native

        _NATIVE["swap"] = native.swap_axes12_op()

    def chain(x, mask):
        for _ in range(links):
            x = op(x, mask)
        return x.sum()

    def peak():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1e3 for line in f if line.startswith("VmHWM"))

    x = ms.Tensor(np.random.rand(*SHAPE).astype(np.float32))
    mask = ms.Tensor(np.random.rand(1, 1, SHAPE[2], SHAPE[3]).astype(np.float32))
    fn = ms.jit(chain)
    before = peak()
    float(fn(x, mask).asnumpy())
    print(f"{(peak() - before) / (x.size * 4):.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", nargs="+", type=int, default=[2, 6])
    parser.add_argument("--worker", nargs=2)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    print("| chain of | " + " | ".join(f"{n} links" for n in args.links) + " |")
    print("|---|" + "---|" * len(args.links))
    for name in VARIANTS:
        cells = []
        for links in args.links:
            out = subprocess.run([sys.executable, __file__, "--worker", name, str(links)], capture_output=True,
                                 text=True)
            lines = out.stdout.strip().splitlines()
            cells.append(lines[-1] if out.returncode == 0 and lines else "error")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
