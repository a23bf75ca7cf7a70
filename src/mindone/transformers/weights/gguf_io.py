"""GGUF (llama.cpp) checkpoints: header parsed here, blocks dequantised by the `gguf` package, names mapped to HF.

The header is parsed by hand rather than with `gguf.GGUFReader`, which turns every entry of the tokenizer arrays into
numpy objects and takes seconds on a 50k-token vocabulary where this takes milliseconds.

Layout: b"GGUF", u32 version (2 or 3), u64 tensor count, u64 metadata count, the metadata (key, u32 type, value),
per tensor (name, u32 n_dims, u64 dims innermost first, u32 ggml type, u64 offset), padding to `general.alignment`
(default 32), then the tensor data.
"""

import logging
import math
import struct
from typing import Iterator, NamedTuple

import numpy as np

from .dtypes import decode
from .errors import CheckpointError
from .safetensors_io import TensorInfo

logger = logging.getLogger(__name__)

# metadata value types of the GGUF spec (the `gguf` package, imported only when a file is read, has them as an enum)
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# ggml tensor types handed out as they are stored
_PLAIN_TYPES = {"I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "F64": "float64"}
# the floating type each storage type stands for, for dtype="auto": blocks dequantise to float32
_STORED_FLOAT = {"F16": "float16", "BF16": "bfloat16", **_PLAIN_TYPES}


# --- architectures ---------------------------------------------------------------------------------------------------


# tokenizer metadata -> config special-token ids (transformers' own GGUF config loader reads the same keys)
_SPECIAL_TOKEN_IDS = {
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "padding_token_id": "pad_token_id",
    "unknown_token_id": "unk_token_id",
}


class GGUFArchitecture(NamedTuple):
    """How one llama.cpp architecture maps onto its transformers model."""

    model_type: str
    names: dict[str, str]  # GGUF name stem -> HF module path; "blk.N.<stem>" -> "model.layers.N.<path>"
    block_names: dict[str, str]
    config: dict[str, str]  # metadata key after "<architecture>." -> HF config attribute
    permute_qk: bool = False  # llama.cpp's converter interleaves q/k rows to its rotary layout; undone on load
    ignored: frozenset[str] = frozenset()  # GGUF stems with no HF weight (derived data)
    # llama.cpp's converter adds this to every "*norm.weight" (Gemma stores weight - 1, llama.cpp wants the factor
    # itself); subtracted on load
    norm_shift: float = 0.0


_DECODER_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_DECODER_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_DECODER_CONFIG = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}

ARCHITECTURES: dict[str, GGUFArchitecture] = {
    "llama": GGUFArchitecture(
        "llama",
        _DECODER_NAMES,
        _DECODER_BLOCK_NAMES,
        # for llama the rotary width is the head width
        {**_DECODER_CONFIG, "rope.dimension_count": "head_dim"},
        permute_qk=True,
        ignored=frozenset({"rope_freqs"}),  # llama 3 rope scaling factors, recomputed from the config
    ),
    "qwen2": GGUFArchitecture("qwen2", _DECODER_NAMES, _DECODER_BLOCK_NAMES, _DECODER_CONFIG),
    # text backbone only (transformers' GGUF loader makes the same choice); no q/k permutation (rotate-half RoPE)
    "gemma3": GGUFArchitecture(
        "gemma3_text",
        _DECODER_NAMES,
        {
            **_DECODER_BLOCK_NAMES,
            "attn_q_norm": "self_attn.q_norm",
            "attn_k_norm": "self_attn.k_norm",
            "post_attention_norm": "post_attention_layernorm",
            "ffn_norm": "pre_feedforward_layernorm",
            "post_ffw_norm": "post_feedforward_layernorm",
        },
        # key_length == value_length == head_dim; rope.freq_base is the global (full-attention) base, the local one
        # is not stored (llama.cpp and transformers both use 10000)
        {**_DECODER_CONFIG, "attention.key_length": "head_dim", "attention.sliding_window": "sliding_window"},
        norm_shift=1.0,
    ),
}


def _half_if_exact(values: np.ndarray) -> np.ndarray:
    """float32 values as float16 when that is exact (the kernels then stream half the bytes), else as they are."""
    half = values.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), values) else values


def _unpermute_rows(weight: np.ndarray, n_head: int, what: str) -> np.ndarray:
    """Undo llama.cpp's `permute`, which reorders each head's rows from HF's rotate-half layout (two halves) to
    interleaved pairs: rows viewed as (head, half, 2) in the file are (head, 2, half) in HF."""
    rows = weight.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise CheckpointError(f"{what}: {rows} rows cannot be split into {n_head} heads of rotary pairs")
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _module_of(name: str) -> str:
    """"blk.3.attn_q.weight" -> "attn_q"."""
    return name.rpartition(".")[0].rpartition(".")[2]


# --- the file --------------------------------------------------------------------------------------------------------


class _GGUFTensor(NamedTuple):
    name: str  # GGUF name
    key: str  # HF checkpoint key
    qtype: object  # gguf.GGMLQuantizationType (gguf is imported only when a file is read)
    shape: tuple[int, ...]  # numpy order (outermost first)
    begin: int  # absolute byte offsets
    end: int


class _Cursor:
    """Bounds-checked reading of the header from a memory-mapped file (through a memoryview: numpy slicing per
    field would dominate the time on tokenizer arrays)."""

    def __init__(self, path: str, data: np.ndarray):
        self.path, self.buffer, self.pos = path, memoryview(data), 0

    def take(self, nbytes: int) -> memoryview:
        if nbytes < 0 or self.pos + nbytes > len(self.buffer):
            raise CheckpointError(f"{self.path}: GGUF header is cut short at byte {self.pos} (truncated?)")
        chunk = self.buffer[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.unpack("<Q"))
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: invalid UTF-8 string at byte {self.pos - len(raw)}") from None

    def value(self, value_type: int):
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if item_type == _STRING:
                return self._strings(count)
            if item_type == _ARRAY:
                return [self.value(item_type) for _ in range(count)]
            fmt = self._scalar_format(item_type)
            return np.frombuffer(self.take(count * struct.calcsize(fmt)), dtype=np.dtype(fmt)).tolist()
        return self.unpack(self._scalar_format(value_type))

    def _strings(self, count: int) -> list[str]:
        # the tokenizer's vocabulary and merges: one tight loop rather than a method call per field
        buffer, pos, strings = self.buffer, self.pos, []
        try:
            for _ in range(count):
                (length,) = struct.unpack_from("<Q", buffer, pos)
                if pos + 8 + length > len(buffer):
                    raise struct.error
                strings.append(str(buffer[pos + 8 : pos + 8 + length], "utf-8"))
                pos += 8 + length
        except struct.error:
            raise CheckpointError(f"{self.path}: GGUF header is cut short at byte {pos} (truncated?)") from None
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: invalid UTF-8 string at byte {pos}") from None
        self.pos = pos
        return strings

    def _scalar_format(self, value_type: int) -> str:
        if value_type not in _SCALARS:
            raise CheckpointError(f"{self.path}: unknown metadata type {value_type} before byte {self.pos}")
        return _SCALARS[value_type]


class GGUFFile:
    """A parsed GGUF header; `tensors()` then dequantises one tensor at a time to HF-named float32 arrays."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._data = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as error:  # ValueError: an empty file cannot be mapped
            raise CheckpointError(f"{path}: cannot map as GGUF ({error})") from None
        cursor = _Cursor(path, self._data)
        if cursor.take(4).tobytes() != b"GGUF":
            raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
        version = cursor.unpack("<I")
        if version not in (2, 3):
            raise CheckpointError(f"{path}: unsupported GGUF version {version} (big-endian or pre-v2 file?)")
        tensor_count, metadata_count = cursor.unpack("<Q"), cursor.unpack("<Q")
        self.metadata: dict = {}
        for _ in range(metadata_count):
            key = cursor.string()
            self.metadata[key] = cursor.value(cursor.unpack("<I"))
        raw_tensors = []
        for _ in range(tensor_count):
            name = cursor.string()
            dims = [cursor.unpack("<Q") for _ in range(cursor.unpack("<I"))]
            raw_tensors.append((name, tuple(reversed(dims)), cursor.unpack("<I"), cursor.unpack("<Q")))
        alignment = self.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"{path}: general.alignment {alignment!r} is not a power of two")
        data_start = -(-cursor.pos // alignment) * alignment

        self.architecture = self.metadata.get("general.architecture")
        if self.architecture not in ARCHITECTURES:
            raise CheckpointError(
                f"{path}: GGUF architecture {self.architecture!r} is not supported (known: {sorted(ARCHITECTURES)})"
            )
        self._arch = ARCHITECTURES[self.architecture]
        self._tensors = [self._locate(data_start, *raw) for raw in raw_tensors]
        self.gguf_names = [raw[0] for raw in raw_tensors]
        unmapped = [t.name for t in self._tensors if not t.key and _module_of(t.name) not in self._arch.ignored]
        if unmapped:
            logger.warning("%s: GGUF tensors with no transformers name, skipped: %s", path, ", ".join(unmapped))
        self._tensors = [t for t in self._tensors if t.key]

    def _locate(self, data_start: int, name: str, shape: tuple[int, ...], qtype: int, offset: int) -> _GGUFTensor:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            qtype = GGMLQuantizationType(qtype)
        except ValueError:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unknown ggml type {qtype}") from None
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if not shape or shape[-1] % block_size:
            raise CheckpointError(f"{self.path}: tensor {name!r} of shape {shape} does not fit {qtype.name} blocks")
        begin = data_start + offset
        end = begin + math.prod(shape) // block_size * type_size
        if end > self._data.size:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} needs bytes [{begin}, {end}) but the file has {self._data.size} (truncated)"
            )
        return _GGUFTensor(name, self._hf_key(name), qtype, shape, begin, end)

    def _hf_key(self, name: str) -> str:
        stem, _, suffix = name.rpartition(".")
        if stem.startswith("blk."):
            _, layer, part = (stem.split(".", 2) + [""])[:3]
            mapped = self._arch.block_names.get(part)
            return f"model.layers.{layer}.{mapped}.{suffix}" if mapped and layer.isdigit() else ""
        mapped = self._arch.names.get(stem)
        return f"{mapped}.{suffix}" if mapped else ""

    @property
    def tie_word_embeddings(self) -> bool:
        # llama.cpp writes the output projection only when it differs from the embedding matrix
        return "output.weight" not in self.gguf_names

    @property
    def infos(self) -> list[TensorInfo]:
        return [TensorInfo(t.key, _STORED_FLOAT.get(t.qtype.name, "float32"), t.shape) for t in self._tensors]

    def config(self) -> dict:
        """transformers config attributes stated by the metadata."""
        prefix = self.architecture + "."
        config = {"model_type": self._arch.model_type, "tie_word_embeddings": self.tie_word_embeddings}
        for suffix, attribute in self._arch.config.items():
            if prefix + suffix in self.metadata:
                config[attribute] = self.metadata[prefix + suffix]
        if "vocab_size" not in config and "tokenizer.ggml.tokens" in self.metadata:
            config["vocab_size"] = len(self.metadata["tokenizer.ggml.tokens"])
        for suffix, attribute in _SPECIAL_TOKEN_IDS.items():
            if "tokenizer.ggml." + suffix in self.metadata:
                config[attribute] = int(self.metadata["tokenizer.ggml." + suffix])
        return config

    def summary(self) -> dict:
        return {
            "architecture": self.architecture,
            "model_type": self._arch.model_type,
            "name": self.metadata.get("general.name"),
            "config": self.config(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "metadata": self.metadata,
        }

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(HF key, array): float types and blocks as float32, integer tensors as they are."""
        for tensor in self._tensors:
            yield tensor.key, self._dense(tensor)

    def _dense(self, tensor: _GGUFTensor) -> np.ndarray:
        from gguf.quants import dequantize, quant_shape_to_byte_shape

        raw = self._data[tensor.begin : tensor.end]
        plain = _PLAIN_TYPES.get(tensor.qtype.name)
        if plain is not None:
            return decode(raw.view(np.dtype(plain).newbyteorder("<")).reshape(tensor.shape), plain).copy()
        try:
            values = dequantize(raw.reshape(quant_shape_to_byte_shape(tensor.shape, tensor.qtype)), tensor.qtype)
        except NotImplementedError:
            raise CheckpointError(f"{self.path}: tensor {tensor.name!r}: no dequantisation for {tensor.qtype.name}") from None
        if np.may_share_memory(values, raw):  # F32 comes back as a view of the mapped file
            values = values.copy()
        module = _module_of(tensor.name)
        if self._arch.permute_qk and module in ("attn_q", "attn_k"):
            heads = self.metadata.get(f"{self.architecture}.attention.head_count", 0)
            if module == "attn_k":
                heads = self.metadata.get(f"{self.architecture}.attention.head_count_kv", heads)
            values = _unpermute_rows(values, heads, f"{self.path}: tensor {tensor.name!r}")
        if self._arch.norm_shift and tensor.name.endswith("norm.weight"):
            values = values - np.float32(self._arch.norm_shift)
        return values

    # --- quantized blocks kept as stored (from_pretrained(gguf_file=..., keep_quantized=True)) ---

    # ggml types whose blocks map exactly onto backend.quantization's packed formats
    KEEPABLE = ("Q8_0", "Q4_0", "Q4_1", "Q4_K")

    def qtype_of(self, key: str):
        """ggml type name of the tensor stored under HF `key` (None if absent)."""
        for tensor in self._tensors:
            if tensor.key == key:
                return tensor.qtype.name
        return None

    def packed(self, key: str):
        """(bits, {"weight_packed", "weight_scale"[, "weight_min"]}) of a Q8_0 / Q4_0 / Q4_1 / Q4_K 2-D tensor in
        backend.quantization's format (group size 32; Q8_0 / Q4_0 / Q4_1 keep their float16 scales as stored, which
        halves the scales' share of a decode step's memory traffic; Q4_K's are float32: its 6-bit sub-block
        scales multiplied out, both exactly), with llama's q/k row permutation undone; None for other types.
        Dequantising the result gives the `gguf` package's dequantisation bit for bit."""
        from gguf.quants import Q4_K

        tensor = next((t for t in self._tensors if t.key == key), None)
        if tensor is None or tensor.qtype.name not in self.KEEPABLE or len(tensor.shape) != 2:
            return None
        rows, cols = tensor.shape
        raw = np.asarray(self._data[tensor.begin : tensor.end])
        name = tensor.qtype.name

        def f16(block_bytes):
            return np.ascontiguousarray(block_bytes).view(np.float16)[..., 0]

        if name == "Q8_0":
            blocks = raw.reshape(rows, cols // 32, 34)
            out = {"weight_packed": blocks[..., 2:].view(np.int8).reshape(rows, cols),
                   "weight_scale": f16(blocks[..., :2])}
            bits = 8
        elif name in ("Q4_0", "Q4_1"):
            header = 2 if name == "Q4_0" else 4
            blocks = raw.reshape(rows, cols // 32, header + 16)
            scale = f16(blocks[..., :2])
            low = _half_if_exact(-8 * scale.astype(np.float32)) if name == "Q4_0" else f16(blocks[..., 2:4])
            if low.dtype != scale.dtype:
                scale = scale.astype(np.float32)
            out = {"weight_packed": np.ascontiguousarray(blocks[..., header:]).reshape(rows, cols // 2),
                   "weight_scale": scale, "weight_min": low}
            bits = 4
        else:  # Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins
            from ..backend.quantization import pack_int4

            blocks = raw.reshape(rows * cols // 256, 144)
            d, dmin = f16(blocks[:, :2]).astype(np.float32)[:, None], f16(blocks[:, 2:4]).astype(np.float32)[:, None]
            sc, mn = Q4_K.get_scale_min(np.ascontiguousarray(blocks[:, 4:16]))
            # qs: per 64 elements 32 bytes, low nibbles the first 32 elements, high nibbles the next 32
            qs = blocks[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
            q = (qs & np.uint8(15)).reshape(rows, cols)
            out = {"weight_packed": pack_int4(q), "weight_scale": (d * sc.astype(np.float32)).reshape(rows, -1),
                   "weight_min": -(dmin * mn.astype(np.float32)).reshape(rows, -1)}
            bits = 4
        module = _module_of(tensor.name)
        if self._arch.permute_qk and module in ("attn_q", "attn_k"):
            heads = self.metadata.get(f"{self.architecture}.attention.head_count", 0)
            if module == "attn_k":
                heads = self.metadata.get(f"{self.architecture}.attention.head_count_kv", heads)
            out = {k: _unpermute_rows(v, heads, f"{self.path}: tensor {tensor.name!r}") for k, v in out.items()}
        return bits, {k: np.ascontiguousarray(v) for k, v in out.items()}


def load_gguf(path: str) -> tuple[dict, Iterator[tuple[str, np.ndarray]]]:
    """Read a GGUF checkpoint.

    Args:
        path: the .gguf file.

    Returns:
        (summary, tensors): summary has "architecture" (llama.cpp's name), "model_type", "name", "config"
        (transformers config attributes the metadata states, incl. "tie_word_embeddings"), "tie_word_embeddings"
        and "metadata" (every key/value of the file); tensors yields (HF checkpoint key, dense float32 array) one at
        a time, with llama's q/k row permutation and Gemma's norm shift undone. A tied model has no "lm_head.weight".
    """
    gguf_file = GGUFFile(path)
    return gguf_file.summary(), gguf_file.tensors()
