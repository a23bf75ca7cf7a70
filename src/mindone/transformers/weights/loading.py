"""Streaming a resolved checkpoint, whatever its format, as (key, numpy array) pairs."""

from collections import Counter
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from .dtypes import FLOAT_DTYPES
from .errors import CheckpointError
from .gguf_io import GGUFFile
from .safetensors_io import SafetensorsFile
from .torch_bin import TorchBinFile

_READERS = {"safetensors": SafetensorsFile, "bin": TorchBinFile, "gguf": GGUFFile}


def _open_all(files: Sequence[str], fmt: str) -> list:
    if fmt not in _READERS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {sorted(_READERS)}")
    # every header is read before the first tensor, so a bad shard fails the load before anything is handed out
    return [_READERS[fmt](path) for path in files]


def iter_state_dict(files: Sequence[str], fmt: str) -> Iterator[tuple[str, np.ndarray]]:
    """Stream the tensors of a checkpoint one at a time.

    Args:
        files: the weight files, as returned by `resolve_checkpoint_files`.
        fmt: "safetensors", "bin" or "gguf".

    Yields:
        (checkpoint key, numpy array). bfloat16 is widened to float32 (exactly); other dtypes are kept. GGUF keys
        are already transformers names and its tensors dense float32.

    Raises:
        CheckpointError: a file is missing, truncated, corrupt or unsafe, or two shards hold the same key.
    """
    readers = _open_all(files, fmt)
    seen: dict[str, str] = {}
    for reader in tqdm(readers, desc="Loading checkpoint shards", unit="shard", disable=len(readers) < 2 or None):
        for key, array in reader.tensors():
            if key in seen:
                raise CheckpointError(f"{reader.path}: tensor {key!r} is also in {seen[key]}")
            seen[key] = reader.path
            yield key, array


def checkpoint_dtype(files: Sequence[str], fmt: str) -> str | None:
    """The floating dtype most of the checkpoint's parameters are stored in, for `dtype="auto"`.

    Args:
        files: the weight files, as returned by `resolve_checkpoint_files`.
        fmt: "safetensors", "bin" or "gguf".

    Returns:
        "float32", "float16" or "bfloat16" (float64 counts as float32; quantised GGUF blocks dequantise to
        float32), or None when no tensor is floating point. Only headers are read.
    """
    counts: Counter = Counter()
    for reader in _open_all(files, fmt):
        for info in reader.infos:
            if info.dtype in FLOAT_DTYPES:
                counts["float32" if info.dtype == "float64" else info.dtype] += int(np.prod(info.shape, dtype=np.int64))
    return counts.most_common(1)[0][0] if counts else None
