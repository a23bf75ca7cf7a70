"""`pytorch_model.bin` without torch and without running pickled code.

A torch checkpoint is a pickle whose tensors are rebuilt by calling `torch._utils._rebuild_tensor_v2` on storages
kept outside the pickle. The unpickler below resolves only the handful of globals a state dict needs, each to a
function of ours that records *where* a tensor's bytes are (storage key, offset, shape, stride) without reading them;
every other global is refused. The bytes are read afterwards, one tensor at a time.

Zip format (torch >= 1.6): `<root>/data.pkl`, storages in `<root>/data/<key>`, `<root>/byteorder`.
Legacy format: pickled magic number, protocol version and sys info, the state-dict pickle, the list of storage keys,
then per storage an int64 element count followed by its bytes.
"""

import logging
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import BinaryIO, Callable, Iterator, Mapping, NamedTuple

import numpy as np

from .dtypes import TORCH_DTYPES, TORCH_STORAGES, decode, encode, storage_dtype
from .errors import CheckpointError
from .safetensors_io import TensorInfo

logger = logging.getLogger(__name__)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_READ_CHUNK = 16 * 1024 * 1024
_ALIGNMENT = 64  # torch aligns storage records so that `torch.load(mmap=True)` gets aligned data


class _StorageType(NamedTuple):
    dtype: str


class _TorchDtype(NamedTuple):
    dtype: str


class _Storage(NamedTuple):
    key: str
    dtype: str
    nbytes: int


class _Tensor(NamedTuple):
    storage: _Storage
    dtype: str
    offset: int  # in elements of `dtype`
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Malformed(Exception):
    """Raised inside unpickling; turned into a CheckpointError that names the file."""


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Malformed(f"{what} is {value!r}, not a tuple of ints")
    return value


def _tensor(storage, offset, size, stride, dtype: str | None = None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise _Malformed(f"tensor storage is {type(storage).__name__}, not a storage record")
    if not isinstance(offset, int) or offset < 0:
        raise _Malformed(f"tensor storage offset is {offset!r}")
    size, stride = _int_tuple(size, "tensor size"), _int_tuple(stride, "tensor stride")
    if len(size) != len(stride):
        raise _Malformed(f"tensor size {size} and stride {stride} differ in length")
    return _Tensor(storage, dtype or storage.dtype, offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _Tensor:
    # v1 (storage, offset, size, stride) and v2 (... requires_grad, backward_hooks[, metadata]): the rest is
    # autograd state, which a state dict does not need
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *_ignored):
    if not isinstance(dtype, _TorchDtype):
        raise _Malformed(f"tensor dtype is {dtype!r}")
    return _tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, *_ignored):
    # (data, requires_grad, backward_hooks[, state]): a Parameter is its data
    if not isinstance(data, _Tensor):
        raise _Malformed(f"parameter data is {type(data).__name__}, not a tensor")
    return data


def _allowed_global(module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict
    if module == "torch._utils":
        rebuilders = {
            "_rebuild_tensor": _rebuild_tensor,
            "_rebuild_tensor_v2": _rebuild_tensor,
            "_rebuild_tensor_v3": _rebuild_tensor_v3,
            "_rebuild_parameter": _rebuild_parameter,
            "_rebuild_parameter_with_state": _rebuild_parameter,
        }
        return rebuilders.get(name)
    if module == "torch":
        if name in TORCH_STORAGES:
            return _StorageType(TORCH_STORAGES[name])
        if name == "UntypedStorage":
            return _StorageType("uint8")
        if name in TORCH_DTYPES:
            return _TorchDtype(TORCH_DTYPES[name])
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, path: str, storage_for: Callable[[tuple], _Storage] | None = None):
        super().__init__(file)
        self._path = path
        self._storage_for = storage_for

    def find_class(self, module: str, name: str):
        found = _allowed_global(module, name)
        if found is None:
            raise CheckpointError(
                f"refusing to unpickle {module}.{name} in {self._path}: only tensors and plain containers are allowed"
            )
        return found

    def persistent_load(self, pid):
        if self._storage_for is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"refusing to unpickle persistent object {pid!r:.100} in {self._path}")
        return self._storage_for(pid)


def _unpickle(file: BinaryIO, path: str, storage_for: Callable[[tuple], _Storage] | None = None):
    try:
        return _RestrictedUnpickler(file, path, storage_for).load()
    except CheckpointError:
        raise
    except _Malformed as error:
        raise CheckpointError(f"{path}: {error}") from None
    except Exception as error:  # any failure of the pickle machinery on untrusted bytes is a bad file
        raise CheckpointError(f"{path}: corrupt pickle ({type(error).__name__}: {error})") from None


def _storage_record(pid: tuple) -> _Storage:
    """The `_Storage` for a persistent id ('storage', storage_type, key, location, numel[, view_metadata])."""
    if len(pid) < 5 or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0:
        raise _Malformed(f"malformed storage record {pid!r:.100}")
    dtype = pid[1].dtype
    return _Storage(str(pid[2]), dtype, pid[4] * storage_dtype(dtype).itemsize)


class TorchBinFile:
    """The tensors of a torch checkpoint, located by unpickling; `tensors()` then reads them one at a time."""

    def __init__(self, path: str):
        self.path = path
        self._root: str | None = None  # zip format: the archive's top folder
        self._sizes: dict[str, int] = {}  # zip format: record sizes
        self._legacy_offsets: dict[str, int] = {}  # legacy format: where each storage's bytes start
        self._big_endian = False
        try:
            is_zip = zipfile.is_zipfile(path)
        except OSError as error:
            raise CheckpointError(f"{path}: cannot open ({error.strerror})") from None
        if is_zip:
            state = self._read_zip_index()
        else:
            state = self._read_legacy_index()
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors")
        self._tensors: dict[str, _Tensor] = {}
        for key, value in state.items():
            if isinstance(value, _Tensor):
                self._tensors[str(key)] = value
            else:
                logger.warning("%s: entry %r is a %s, not a tensor; skipped", path, key, type(value).__name__)

    def _read_zip_index(self):
        try:
            with zipfile.ZipFile(self.path) as archive:
                pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
                if len(pickles) != 1:
                    raise CheckpointError(f"{self.path}: zip archive without a single <root>/data.pkl (not torch.save output)")
                self._root = pickles[0].rsplit("/", 1)[0]
                byteorder = f"{self._root}/byteorder"
                self._big_endian = byteorder in archive.namelist() and archive.read(byteorder).strip() == b"big"
                self._sizes = {info.filename: info.file_size for info in archive.infolist()}
                with archive.open(pickles[0]) as file:
                    return _unpickle(file, self.path, lambda pid: self._check_zip_storage(_storage_record(pid)))
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
            raise CheckpointError(f"{self.path}: corrupt zip archive ({error})") from None

    def _check_zip_storage(self, storage: _Storage) -> _Storage:
        name = f"{self._root}/data/{storage.key}"
        if self._sizes.get(name) != storage.nbytes:
            raise _Malformed(f"storage {name} holds {self._sizes.get(name)} bytes, the pickle says {storage.nbytes}")
        return storage

    def _read_legacy_index(self):
        with open(self.path, "rb") as file:
            if _unpickle(file, self.path) != _LEGACY_MAGIC:
                raise CheckpointError(f"{self.path}: neither a zip nor a legacy torch checkpoint")
            if _unpickle(file, self.path) != _LEGACY_PROTOCOL:
                raise CheckpointError(f"{self.path}: unknown legacy torch protocol version")
            sys_info = _unpickle(file, self.path)
            if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
                raise CheckpointError(f"{self.path}: big-endian legacy checkpoints are not supported")
            storages: dict[str, _Storage] = {}

            def record(pid: tuple) -> _Storage:
                # ('storage', type, root_key, location, numel, view_metadata); views of storages predate torch 1.0
                storage = _storage_record(pid)
                if len(pid) > 5 and pid[5] is not None:
                    raise CheckpointError(f"{self.path}: storage views (pre-1.0 torch checkpoints) are not supported")
                return storages.setdefault(storage.key, storage)

            state = _unpickle(file, self.path, record)
            keys = _unpickle(file, self.path)
            size = os.fstat(file.fileno()).st_size
            position = file.tell()
            for key in keys if isinstance(keys, list) else ():
                storage = storages.get(str(key))
                if storage is None or position + 8 > size:
                    raise CheckpointError(f"{self.path}: storage list does not match the pickle (truncated?)")
                file.seek(position)
                (numel,) = struct.unpack("<q", file.read(8))
                if numel * storage_dtype(storage.dtype).itemsize != storage.nbytes:
                    raise CheckpointError(f"{self.path}: storage {key} size does not match the pickle")
                self._legacy_offsets[storage.key] = position + 8
                position += 8 + storage.nbytes
            if position > size or set(self._legacy_offsets) != set(storages):
                raise CheckpointError(f"{self.path}: storage data is truncated or incomplete")
        return state

    @property
    def infos(self) -> list[TensorInfo]:
        return [TensorInfo(key, t.dtype, t.shape) for key, t in self._tensors.items()]

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(key, array) in pickle order, reading each storage once per tensor (the last one is kept for reuse)."""
        cached_key, cached = None, None
        with self._open_data() as read_storage:
            for key, tensor in self._tensors.items():
                if tensor.storage.key != cached_key:
                    cached_key, cached = tensor.storage.key, read_storage(tensor.storage)
                array, owns_storage = self._view(key, tensor, cached)
                if owns_storage:  # handed out as is: the next tensor must not alias it
                    cached_key = None
                yield key, array

    def _open_data(self):
        if self._root is not None:
            return _ZipStorageReader(self.path, self._root)
        return _LegacyStorageReader(self.path, self._legacy_offsets)

    def _view(self, key: str, tensor: _Tensor, data: np.ndarray) -> tuple[np.ndarray, bool]:
        """The tensor's values copied out of its storage bytes, or the storage itself when it is exactly the tensor."""
        dtype = storage_dtype(tensor.dtype)
        if self._big_endian:
            dtype = dtype.newbyteorder(">")
        if any(s < 0 for s in tensor.stride):
            raise CheckpointError(f"{self.path}: tensor {key!r} has a negative stride {tensor.stride}")
        count = math.prod(tensor.shape)
        span = 0 if count == 0 else 1 + sum((d - 1) * s for d, s in zip(tensor.shape, tensor.stride))
        begin, end = tensor.offset * dtype.itemsize, (tensor.offset + span) * dtype.itemsize
        if end > data.size:
            raise CheckpointError(
                f"{self.path}: tensor {key!r} reads bytes [{begin}, {end}) of a {data.size}-byte storage"
            )
        values = data[begin:end].view(dtype)
        contiguous = span == count and tensor.stride == _contiguous_strides(tensor.shape)
        if contiguous and span * dtype.itemsize == data.size:
            return decode(values.reshape(tensor.shape), tensor.dtype), True
        if count == 0:
            return decode(np.empty(tensor.shape, dtype), tensor.dtype), False
        strides = tuple(s * dtype.itemsize for s in tensor.stride)
        array = np.lib.stride_tricks.as_strided(values, tensor.shape, strides, writeable=False).copy()
        return decode(array, tensor.dtype), False


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


class _ZipStorageReader:
    def __init__(self, path: str, root: str):
        self._path, self._root = path, root

    def __enter__(self):
        self._archive = zipfile.ZipFile(self._path)
        return self

    def __exit__(self, *exc):
        self._archive.close()

    def __call__(self, storage: _Storage) -> np.ndarray:
        name = f"{self._root}/data/{storage.key}"
        data = np.empty(storage.nbytes, dtype=np.uint8)
        try:
            with self._archive.open(name) as member:
                filled = 0
                while filled < storage.nbytes:
                    chunk = member.read(min(_READ_CHUNK, storage.nbytes - filled))
                    if not chunk:
                        break
                    data[filled : filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                    filled += len(chunk)
                member.read(1)  # reach EOF so that zipfile checks the CRC
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
            raise CheckpointError(f"{self._path}: storage {name} is corrupt ({error})") from None
        if filled != storage.nbytes:
            raise CheckpointError(f"{self._path}: storage {name} is truncated")
        return data


class _LegacyStorageReader:
    def __init__(self, path: str, offsets: Mapping[str, int]):
        self._path, self._offsets = path, offsets

    def __enter__(self):
        self._file = open(self._path, "rb")
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __call__(self, storage: _Storage) -> np.ndarray:
        data = np.empty(storage.nbytes, dtype=np.uint8)
        self._file.seek(self._offsets[storage.key])
        if self._file.readinto(data) != storage.nbytes:
            raise CheckpointError(f"{self._path}: storage {storage.key} is truncated")
        return data


# --- writing -------------------------------------------------------------------------------------------------------

_STORAGE_NAMES = {dtype: name for name, dtype in TORCH_STORAGES.items()}


def _pickle_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _pickle_int(value: int) -> bytes:
    if 0 <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def _pickle_ints(values) -> bytes:
    return pickle.MARK + b"".join(_pickle_int(v) for v in values) + pickle.TUPLE


def _pickle_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _state_dict_pickle(tensors: list[tuple[str, np.ndarray]]) -> bytes:
    """The protocol-2 pickle torch itself writes for an OrderedDict of contiguous tensors, storage i for tensor i.

    Written opcode by opcode: pickling torch's globals by reference would need torch importable.
    """
    empty_hooks = _pickle_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    out = [pickle.PROTO + b"\x02", empty_hooks, pickle.MARK]
    for index, (key, array) in enumerate(tensors):
        storage_id = (
            pickle.MARK
            + _pickle_str("storage")
            + _pickle_global("torch", _STORAGE_NAMES[array.dtype.name])
            + _pickle_str(str(index))
            + _pickle_str("cpu")
            + _pickle_int(array.size)
            + pickle.TUPLE
            + pickle.BINPERSID
        )
        rebuild_args = (
            pickle.MARK
            + storage_id
            + _pickle_int(0)
            + _pickle_ints(array.shape)
            + _pickle_ints(_contiguous_strides(array.shape))
            + pickle.NEWFALSE
            + empty_hooks
            + pickle.TUPLE
        )
        out += [_pickle_str(key), _pickle_global("torch._utils", "_rebuild_tensor_v2"), rebuild_args, pickle.REDUCE]
    out += [pickle.SETITEMS, pickle.STOP]
    return b"".join(out)


def _write_aligned(archive: zipfile.ZipFile, name: str, data) -> None:
    """Store `data` uncompressed with its first byte at a multiple of 64 in the file, padding the local header."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    nbytes = memoryview(data).nbytes
    # zipfile adds a 20-byte zip64 record to the local header under this same condition
    zip64 = nbytes * 1.05 > zipfile.ZIP64_LIMIT
    header = 30 + len(name.encode("utf-8")) + 4 + (20 if zip64 else 0)
    padding = -(archive.fp.tell() + header) % _ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, padding) + b"\0" * padding  # torch pads with an extra field "FB" too
    info.file_size = nbytes
    with archive.open(info, mode="w", force_zip64=zip64) as member:
        member.write(data)


def write_torch_bin(file: BinaryIO, tensors: Mapping[str, np.ndarray]) -> None:
    """Write `tensors` as torch's zip checkpoint format, readable by `torch.load(weights_only=True, mmap=True)`."""
    items = list(tensors.items())
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        _write_aligned(archive, "archive/data.pkl", _state_dict_pickle(items))
        _write_aligned(archive, "archive/byteorder", b"little")
        for index, (_, array) in enumerate(items):
            _write_aligned(archive, f"archive/data/{index}", encode(array).reshape(-1).view(np.uint8))
        _write_aligned(archive, "archive/version", b"3\n")
