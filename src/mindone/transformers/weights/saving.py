"""Writing a state dict of numpy arrays as an HF checkpoint (safetensors or torch .bin, optionally sharded).

Crash safety: every file is written under a temporary name and renamed into place, shards before the index, and files
of an earlier save are removed only afterwards. At each moment the directory loads as the old complete checkpoint,
the new complete one, or (only while same-named shards are being replaced) not at all -- never as a mixture.
"""

import json
import logging
import os
import re
from typing import Mapping

import numpy as np
from tqdm.auto import tqdm

from .dtypes import array_dtype_name
from .errors import CheckpointError
from .files import fsync_directory, remove_quietly, write_temp
from .resolve import SAFE_WEIGHTS_NAME, WEIGHTS_NAME
from .safetensors_io import write_safetensors
from .torch_bin import write_torch_bin

logger = logging.getLogger(__name__)

_SIZE_UNITS = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}


def parse_size(size: int | str) -> int:
    """Bytes from an int or "5GB" / "500MB" / "10KB" (decimal) / "2GiB" (binary); a lowercase "b" means bits."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    text = str(size).strip()
    for unit, factor in _SIZE_UNITS.items():
        if text.upper().endswith(unit):
            number = text[: -len(unit)].strip()
            try:
                value = int(float(number) * factor)
            except ValueError:
                break
            return value // 8 if text.endswith("b") else value
    if text.isdigit():
        return int(text)
    raise ValueError(f"max_shard_size {size!r}: expected bytes as an int or a string like '5GB', '500MB', '2GiB'")


def _plan_shards(state: Mapping[str, np.ndarray], max_bytes: int) -> list[list[str]]:
    """Keys grouped into shards in order: a shard closes before it would exceed max_bytes; a bigger tensor is alone."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for key, array in state.items():
        nbytes = array.nbytes
        if nbytes > max_bytes:
            shards.append([key])
            continue
        if current and current_bytes + nbytes > max_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def _family(weights_name: str) -> tuple[str, str]:
    """("model", ".safetensors") for "model.safetensors": the stem shards are named after, and the extension."""
    stem, ext = os.path.splitext(weights_name)
    return stem, ext


def _shard_name(weights_name: str, index: int, count: int) -> str:
    stem, ext = _family(weights_name)
    return f"{stem}-{index:05d}-of-{count:05d}{ext}"


def _weight_files_of(directory: str, weights_name: str) -> list[str]:
    """Files in `directory` that belong to a checkpoint saved as `weights_name`: single, index, shards."""
    stem, ext = _family(weights_name)
    shard = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(ext))
    index_name = weights_name + ".index.json"
    return [
        name
        for name in os.listdir(directory)
        if name in (weights_name, index_name) or shard.fullmatch(name)
    ]


def _validated(state: Mapping[str, np.ndarray], directory: str, safe_serialization: bool) -> dict[str, np.ndarray]:
    checked = {}
    for key, array in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{directory}: state dict key {key!r} is not a string")
        if not isinstance(array, np.ndarray):
            raise CheckpointError(f"{directory}: tensor {key!r} is a {type(array).__name__}, not a numpy array")
        try:
            name = array_dtype_name(array)
        except TypeError as error:
            raise CheckpointError(f"{directory}: tensor {key!r}: {error}") from None
        if not safe_serialization and name in ("uint16", "uint32", "uint64"):
            raise CheckpointError(f"{directory}: tensor {key!r}: torch .bin has no {name} storage")
        checked[key] = array
    return checked


def save_state_dict(
    state: Mapping[str, np.ndarray],
    save_directory,
    max_shard_size: int | str = "5GB",
    safe_serialization: bool = True,
    weights_name: str | None = None,
) -> list[str]:
    """Save a state dict as an HF checkpoint that torch `transformers` loads.

    Args:
        state: checkpoint key -> numpy array (MindSpore's bf16 `asnumpy()` arrays are saved as BF16).
        save_directory: created if missing.
        max_shard_size: bytes per shard, an int or "5GB" / "500MB" / "10KB" (decimal) / "5GiB" (binary).
            A tensor larger than this gets a shard of its own.
        safe_serialization: True writes safetensors (metadata {"format": "pt"}); False writes torch's zip
            format `pytorch_model.bin`, without torch.
        weights_name: file name of an unsharded checkpoint (default "model.safetensors" / "pytorch_model.bin");
            shards are named "<stem>-00001-of-0000N<ext>" with an index "<weights_name>.index.json".

    Returns:
        The paths written: the weight files, then the index if sharded.
    """
    directory = os.fspath(save_directory)
    os.makedirs(directory, exist_ok=True)
    weights_name = weights_name or (SAFE_WEIGHTS_NAME if safe_serialization else WEIGHTS_NAME)
    state = _validated(state, directory, safe_serialization)
    shards = _plan_shards(state, parse_size(max_shard_size))
    if len(shards) == 1:
        names = [weights_name]
    else:
        names = [_shard_name(weights_name, i + 1, len(shards)) for i in range(len(shards))]
    index_name = weights_name + ".index.json" if len(shards) > 1 else None

    # 1. everything under temporary names
    pending: list[tuple[str, str]] = []  # (temp path, final path)
    try:
        for name, keys in tqdm(
            list(zip(names, shards)), desc="Saving checkpoint shards", unit="shard", disable=len(shards) < 2 or None
        ):
            final = os.path.join(directory, name)
            tensors = {key: state[key] for key in keys}
            pending.append((write_temp(final, lambda file, t=tensors: _write_weights(file, t, safe_serialization)), final))
        if index_name is not None:
            index = {
                "metadata": {"total_size": sum(array.nbytes for array in state.values())},
                "weight_map": {key: name for name, keys in zip(names, shards) for key in sorted(keys)},
            }
            text = json.dumps(index, indent=2, sort_keys=True) + "\n"
            final = os.path.join(directory, index_name)
            pending.append((write_temp(final, lambda file: file.write(text.encode("utf-8"))), final))
    except BaseException:
        for temp, _ in pending:
            remove_quietly(temp)
        raise

    # 2. into place. An old index naming files that are about to be replaced would, for a moment, describe a mix of
    # old and new shards: it goes first (the directory then fails to load rather than loading wrong).
    old_index = os.path.join(directory, weights_name + ".index.json")
    if os.path.exists(old_index) and any(os.path.exists(final) for _, final in pending if final != old_index):
        os.remove(old_index)
        fsync_directory(directory)
    for temp, final in pending:
        os.replace(temp, final)
    fsync_directory(directory)

    # 3. files of an earlier save that the new one does not overwrite: indexes first, so none points at a removed shard
    written = {os.path.basename(final) for _, final in pending}
    families = {weights_name} | ({SAFE_WEIGHTS_NAME, WEIGHTS_NAME} if weights_name in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME) else set())
    stale = [name for family in families for name in _weight_files_of(directory, family) if name not in written]
    for name in sorted(stale, key=lambda name: not name.endswith(".index.json")):
        logger.info("removing %s, left from an earlier save", os.path.join(directory, name))
        remove_quietly(os.path.join(directory, name))
    if stale:
        fsync_directory(directory)
    return [final for _, final in pending]


def _write_weights(file, tensors: Mapping[str, np.ndarray], safe_serialization: bool) -> None:
    if safe_serialization:
        write_safetensors(file, tensors, {"format": "pt"})
    else:
        write_torch_bin(file, tensors)
