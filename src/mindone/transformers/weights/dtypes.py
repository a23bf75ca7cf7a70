"""Dtype names shared by the readers and writers.

Inside this package a dtype is named by its numpy name, plus "bfloat16", which numpy lacks: bf16 data is carried as
its raw uint16 bits and widened to float32 when handed out (exactly: bf16 is the top half of an fp32).
"""

import numpy as np

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")

# safetensors header codes
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}

# the legacy typed-storage classes torch pickles (`torch.FloatStorage` ...)
TORCH_STORAGES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

# `torch.<name>` dtype objects, as newer pickles spell them
TORCH_DTYPES = {
    "float64": "float64",
    "double": "float64",
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}


def storage_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype the bytes of a tensor of dtype `name` are stored as."""
    return np.dtype("<u2") if name == "bfloat16" else np.dtype(name).newbyteorder("<")


def decode(raw: np.ndarray, name: str) -> np.ndarray:
    """Stored values (from `storage_dtype`) -> the array handed to callers, in native byte order; bf16 -> fp32."""
    if name == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(raw.dtype.newbyteorder("="), copy=False)


def array_dtype_name(array: np.ndarray) -> str:
    """The dtype name of an array to be saved; MindSpore's `asnumpy()` gives bf16 arrays a dtype named "bfloat16"."""
    name = array.dtype.name
    if name not in FLOAT_DTYPES and name not in SAFETENSORS_DTYPES.values():
        raise TypeError(f"cannot save dtype {array.dtype}")
    return name


def encode(array: np.ndarray) -> np.ndarray:
    """An array as the little-endian, C-contiguous values it is stored as (bf16 as its uint16 bits)."""
    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return array.view(np.uint16).astype("<u2", copy=False)
    return array.astype(array.dtype.newbyteorder("<"), copy=False)
