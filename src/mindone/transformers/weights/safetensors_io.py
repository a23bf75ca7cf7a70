"""safetensors, read and written here rather than through the `safetensors` package, for two reasons: tensors are
streamed one at a time in both directions (its numpy `save_file` builds the whole file in memory first), and bf16
is carried as raw bits, which needs no numpy bfloat16 dtype.

Layout: u64 little-endian header length N, N bytes of JSON {key: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {str: str}}, then the tensor bytes, offsets relative to the end of the header.
"""

import json
import math
import os
import struct
from typing import BinaryIO, Iterator, Mapping, NamedTuple

import numpy as np

from .dtypes import SAFETENSORS_DTYPES, decode, encode, storage_dtype
from .errors import CheckpointError

# the reference implementation refuses larger headers too
MAX_HEADER_BYTES = 100 * 1000 * 1000
_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}


class TensorInfo(NamedTuple):
    key: str
    dtype: str  # dtypes.py naming
    shape: tuple[int, ...]


class _Entry(NamedTuple):
    info: TensorInfo
    begin: int  # absolute offsets in the file
    end: int


class SafetensorsFile:
    """A parsed and checked safetensors header; `tensors()` then reads the data one tensor at a time."""

    def __init__(self, path: str):
        self.path = path
        with _open_for_reading(path) as file:
            size = os.fstat(file.fileno()).st_size
            if size < 8:
                raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, truncated?)")
            (header_len,) = struct.unpack("<Q", file.read(8))
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointError(
                    f"{path}: header length {header_len} does not fit a {size}-byte file (truncated or not safetensors)"
                )
            try:
                header = json.loads(file.read(header_len).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise CheckpointError(f"{path}: header is not valid JSON ({error})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{path}: __metadata__ is not a JSON object")
        self.metadata: dict = metadata
        start = 8 + header_len
        self._entries = sorted((self._parse_entry(key, spec, start) for key, spec in header.items()), key=_begin)
        # tensors must tile the data section exactly, as the reference implementation requires
        position = start
        for entry in self._entries:
            if entry.begin != position:
                raise CheckpointError(
                    f"{path}: tensor {entry.info.key!r} starts at byte {entry.begin - start} of the data, expected "
                    f"{position - start} (overlapping or missing data)"
                )
            position = entry.end
        if position != size:
            raise CheckpointError(
                f"{path}: header describes {position - start} bytes of tensor data but the file holds {size - start}"
                + (" (truncated)" if position > size else "")
            )

    def _parse_entry(self, key, spec, start: int) -> _Entry:
        try:
            code, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
            shape = tuple(int(d) for d in shape)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{self.path}: tensor {key!r} has a malformed header entry {spec!r}") from None
        if code not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {key!r} has unsupported dtype {code!r}")
        dtype = SAFETENSORS_DTYPES[code]
        expected = math.prod(shape) * storage_dtype(dtype).itemsize
        if any(d < 0 for d in shape) or begin < 0 or end - begin != expected:
            raise CheckpointError(
                f"{self.path}: tensor {key!r} of dtype {code} and shape {list(shape)} needs {expected} bytes, "
                f"header gives offsets [{begin}, {end}]"
            )
        return _Entry(TensorInfo(key, dtype, shape), start + begin, start + end)

    @property
    def infos(self) -> list[TensorInfo]:
        return [entry.info for entry in self._entries]

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(key, array) in file order; bf16 widened to fp32."""
        with _open_for_reading(self.path) as file:
            for info, begin, end in self._entries:
                file.seek(begin)
                raw = np.empty(end - begin, dtype=np.uint8)
                if file.readinto(raw) != raw.size:
                    raise CheckpointError(f"{self.path}: tensor {info.key!r} is cut short (file changed while reading?)")
                yield info.key, decode(raw.view(storage_dtype(info.dtype)).reshape(info.shape), info.dtype)


def _begin(entry: _Entry) -> int:
    return entry.begin


def _open_for_reading(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open ({error.strerror})") from None


def write_safetensors(file: BinaryIO, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write `tensors` to an open binary file, one tensor in memory at a time (beyond the caller's own arrays)."""
    # widest dtypes first, so every tensor starts at a multiple of its item size (the header is padded to 8)
    order = sorted(tensors, key=lambda key: (-tensors[key].dtype.itemsize, key))
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for key in order:
        array = tensors[key]
        nbytes = array.size * array.dtype.itemsize
        header[key] = {"dtype": _CODES[array.dtype.name], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    file.write(struct.pack("<Q", len(encoded)))
    file.write(encoded)
    for key in order:
        file.write(encode(tensors[key]).reshape(-1).view(np.uint8))
