"""Cold start of `make demo` (examples/demo.py: SmolLM2-135M-Instruct, 64 new tokens): time to first token after
the model is loaded, in fresh processes, with and without the persistent compile cache (backend/compile_cache.py).

Runs, each a new process of the demo, with its own empty cache root (MINDONE_TRANSFORMERS_CACHE in a temporary
directory; the native kernel library is linked in from the user's cache so no run pays the C++ build):
  cold  - empty graph cache: compiles both graphs (prefill chunk, one-token step) and stores them
  warm  - the same cache again: loads both graphs (MindSpore then runs only its back-end compile actions)
  off   - MINDONE_TRANSFORMERS_COMPILE_CACHE=0: compiles without the cache (as before the cache existed)
and prints a markdown table of the demo's own summary line (first token, second token, decode tok/s) per run.

    python benchmarks/bench_cold_start.py            # cold, warm, warm, off
    python benchmarks/bench_cold_start.py --warm 3
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"first token ([\d.]+) s \| second ([\d.]+) s \| decode ([\d.]+) tok/s")


def run_demo(cache_root, compile_cache=True):
    env = dict(os.environ, MINDONE_TRANSFORMERS_CACHE=cache_root,
               PYTHONPATH=os.path.join(REPO, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MS_COMPILER_CACHE_ENABLE", None)
    if not compile_cache:
        env["MINDONE_TRANSFORMERS_COMPILE_CACHE"] = "0"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "demo.py")], capture_output=True,
                            text=True, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"demo failed:\n{result.stderr[-3000:]}")
    match = SUMMARY.search(result.stderr)
    if match is None:
        raise SystemExit(f"no summary line in the demo's stderr:\n{result.stderr[-3000:]}")
    first, second, decode = map(float, match.groups())
    return {"first": first, "second": second, "decode": decode, "wall": wall, "text": result.stdout.strip()}


def link_kernels(cache_root):
    """The user's compiled native kernels, linked into the temporary cache root (no C++ build inside a run)."""
    user_root = os.environ.get("MINDONE_TRANSFORMERS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                             "mindone_transformers")
    kernels = os.path.join(user_root, "kernels")
    if os.path.isdir(kernels):
        os.symlink(kernels, os.path.join(cache_root, "kernels"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=2, help="warm runs after the cold one")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mindone-cold-start-")
    try:
        link_kernels(root)
        rows = [("cold (cache empty)", run_demo(root))]
        rows += [(f"warm {i + 1} (cache filled)", run_demo(root)) for i in range(args.warm)]
        off_root = os.path.join(root, "off")
        os.makedirs(off_root)
        link_kernels(off_root)
        rows.append(("off (MINDONE_TRANSFORMERS_COMPILE_CACHE=0)", run_demo(off_root, compile_cache=False)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| run | first token (s) | second token (s) | decode tok/s | process wall (s) |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['first']:.2f} | {r['second']:.2f} | {r['decode']:.1f} | {r['wall']:.1f} |")
    texts = {r["text"] for _, r in rows}
    print(f"\nsame answer in every run: {len(texts) == 1}")


if __name__ == "__main__":
    main()
