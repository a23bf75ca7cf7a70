"""Mixture-of-experts weights: per-expert checkpoint matrices <-> HF 5's stacked expert parameters.

HF 5 keeps a MoE layer's experts as two 3-D parameters, `...experts.gate_up_proj` (E, 2 * I, H) (gate rows first,
then up) and `...experts.down_proj` (E, H, I), and so do our models. Checkpoints on the hub, and those HF 5's own
`save_pretrained` writes (it reverts its conversion on save), hold one 2-D matrix per expert:
`...experts.{e}.{gate}.weight`, `...{up}.weight`, `...{down}.weight` (Mixtral: w1 / w3 / w2 under
`block_sparse_moe`; Qwen-MoE: gate_proj / up_proj / down_proj). HF's conversion mapping merges them on load
(`MergeModulelist` + `Concatenate(dim=1)`); `fuse_experts` does the same on our tensor stream, `split_experts` undoes
it on save, so what we write loads in torch `transformers` as HF's own files do.
"""

import re
from typing import Iterable, Iterator

import numpy as np

from .errors import CheckpointError

_PER_EXPERT_KEY = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<index>\d+)\.(?P<name>\w+)\.weight$")


class ExpertLayout:
    """How a family names its per-expert checkpoint matrices.

    Args:
        gate, up, down: the per-expert module names (e.g. "w1", "w3", "w2").
        renames: (checkpoint substring, model substring) pairs applied to every key on load and reversed on save
            (Mixtral: (".block_sparse_moe.", ".mlp.")).
    """

    def __init__(self, gate, up, down, renames=()):
        self.gate, self.up, self.down = gate, up, down
        self.renames = tuple(renames)


def fuse_experts(stream: Iterable, layout: ExpertLayout, num_experts: int) -> Iterator:
    """(key, array) stream with per-expert matrices replaced by the stacked parameters, each yielded as soon as all
    its experts were read (so at most one layer's experts are held). Stacked keys in the stream pass through."""
    pending = {}
    for key, array in stream:
        for old, new in layout.renames:
            key = key.replace(old, new)
        match = _PER_EXPERT_KEY.match(key)
        if match is None or match["name"] not in (layout.gate, layout.up, layout.down):
            yield key, array
            continue
        is_down = match["name"] == layout.down
        target = match["prefix"] + (".down_proj" if is_down else ".gate_up_proj")
        index = int(match["index"])
        if index >= num_experts:
            raise CheckpointError(f"{key}: expert index {index} out of range for {target} "
                                  f"(model has {num_experts} experts)")
        parts = pending.setdefault(target, {})
        parts[(match["name"], index)] = array
        if len(parts) < num_experts * (1 if is_down else 2):
            continue
        del pending[target]
        # indices are < num_experts and each (name, index) appears once, so a full count means every one is there
        if is_down:
            yield target, np.stack([parts[(layout.down, e)] for e in range(num_experts)])
        else:
            gate = np.stack([parts[(layout.gate, e)] for e in range(num_experts)])
            up = np.stack([parts[(layout.up, e)] for e in range(num_experts)])
            yield target, np.concatenate([gate, up], axis=1)
    for target, parts in pending.items():
        raise CheckpointError(f"{target}: checkpoint holds only {len(parts)} per-expert tensors for it "
                              f"(model has {num_experts} experts): {sorted(parts)}")


def split_experts(state_dict: dict, layout: ExpertLayout) -> dict:
    """{key: numpy array} with the stacked parameters written back as per-expert matrices, under the checkpoint
    names HF 5 saves."""
    out = {}
    for key, array in state_dict.items():
        if key.endswith(".experts.gate_up_proj"):
            prefix = key[: -len("gate_up_proj")]
            gate, up = np.split(array, 2, axis=1)
            for e in range(array.shape[0]):
                out[f"{prefix}{e}.{layout.gate}.weight"] = np.ascontiguousarray(gate[e])
                out[f"{prefix}{e}.{layout.up}.weight"] = np.ascontiguousarray(up[e])
        elif key.endswith(".experts.down_proj"):
            prefix = key[: -len("down_proj")]
            for e in range(array.shape[0]):
                out[f"{prefix}{e}.{layout.down}.weight"] = np.ascontiguousarray(array[e])
        else:
            out[key] = array
    for old, new in layout.renames:
        out = {k.replace(new, old): v for k, v in out.items()}
    return out
