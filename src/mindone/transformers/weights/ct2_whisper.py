"""CTranslate2 Whisper models (`model.bin` + `config.json` + `tokenizer.json`) -> HF Whisper checkpoint directories.

CTranslate2 (faster-whisper, whisperX, many PyPI packages) stores Whisper as one `model.bin` of named arrays in its
own binary layout, often in float16 or int8. This module reads that file with numpy only (neither torch nor
ctranslate2 is needed) and writes what `WhisperForConditionalGeneration.from_pretrained` and the
automatic-speech-recognition pipeline read, for both this package and torch `transformers`:
`config.json`, `generation_config.json`, `model.safetensors`, the tokenizer and the feature extractor.

    from mindone.transformers.weights.ct2_whisper import convert_ct2_whisper
    convert_ct2_whisper("path/to/ct2-model", "path/to/hf-model")

or `mindone-transformers convert-ct2-whisper SRC DST`. `pipeline("automatic-speech-recognition", model=SRC)`
accepts a CTranslate2 directory too: it converts once into ~/.cache/mindone-transformers/converted/ (logged).

Name mapping (CTranslate2 -> HF): `*/self_attention/linear_0` is the fused q/k/v projection (split in three; Whisper's
key projection has no bias, CTranslate2 stores zeros there), `*/attention/linear_0` the cross-attention query and
`linear_1` its fused k/v, `linear_1`/`linear_2` the output projections, `ffn/linear_0/1` fc1/fc2, `gamma`/`beta` the
layer norm weight/bias, `position_encodings/encodings` the position tables.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import struct

import numpy as np

from .errors import CheckpointError
from .saving import save_state_dict

logger = logging.getLogger(__name__)

# CTranslate2's DataType enum
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_MULTILINGUAL_VOCAB = 51865  # English-only Whisper checkpoints have 51864 tokens
_CONVERTER_VERSION = 2  # part of the conversion cache key: a changed converter converts again


def read_ct2(path):
    """Reads a CTranslate2 `model.bin` (binary version 4 or later) without ctranslate2.

    Returns:
        dict with `version`, `spec` (e.g. "WhisperSpec"), `revision`, `variables` (name -> numpy array, views into
        the file's bytes; bfloat16 arrays are widened to float32) and `aliases` (name -> name of the stored array).
    """
    with open(path, "rb") as f:
        data = f.read()
    offset = 0

    def unpack(fmt):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def string():
        nonlocal offset
        (length,) = unpack("H")
        text = data[offset:offset + length]
        offset += length
        return text.rstrip(b"\0").decode("utf-8")

    try:
        (version,) = unpack("I")
        if version < 4:
            raise CheckpointError(f"{path}: CTranslate2 binary version {version} is not supported (4 or later is; "
                                  "re-convert the model with a recent ctranslate2)")
        spec = string()
        (revision,) = unpack("I")
        (count,) = unpack("I")
        variables = {}
        for _ in range(count):
            name = string()
            (rank,) = unpack("B")
            shape = unpack(f"{rank}I") if rank else ()
            dtype_id, nbytes = unpack("BI")
            if dtype_id not in _CT2_DTYPES:
                raise CheckpointError(f"{path}: variable {name} has unknown CTranslate2 dtype id {dtype_id}")
            dtype = _CT2_DTYPES[dtype_id]
            if dtype == "bfloat16":
                bits = np.frombuffer(data, np.uint16, nbytes // 2, offset)
                array = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(data, dtype, nbytes // np.dtype(dtype).itemsize, offset)
            variables[name] = array.reshape(shape)
            offset += nbytes
        aliases = {}
        (count,) = unpack("I")
        for _ in range(count):
            alias = string()
            aliases[alias] = string()
    except (struct.error, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or not a CTranslate2 model.bin ({e})") from None
    if offset != len(data):
        raise CheckpointError(f"{path}: {len(data) - offset} unexpected bytes after the CTranslate2 variables")
    return {"version": version, "spec": spec, "revision": revision, "variables": variables, "aliases": aliases}


def ct2_spec_name(directory):
    """The model spec name ("WhisperSpec", ...) of a CTranslate2 directory, or None if it is not one."""
    path = os.path.join(os.fspath(directory), "model.bin")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(4 + 2 + 256)
    if len(head) < 6:
        return None
    version, length = struct.unpack_from("<IH", head)
    if not 1 <= version <= 64 or length > 256 or 6 + length > len(head):
        return None
    try:
        return head[6:6 + length].rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        return None


def is_ct2_whisper_dir(directory):
    """True for a directory holding a CTranslate2 Whisper model (and no HF config.json of its own)."""
    return ct2_spec_name(directory) == "WhisperSpec"


def _float32(variables, name):
    """A weight as float32, dequantizing int8/int16 weights with their `<name>_scale` (CTranslate2 stores
    round(w * scale) per output row)."""
    array = variables[name]
    if np.issubdtype(array.dtype, np.integer):
        scale = variables.get(name + "_scale")
        if scale is None:
            raise CheckpointError(f"{name}: quantized {array.dtype} weight without {name}_scale")
        scale = np.asarray(scale, np.float32)
        return array.astype(np.float32) / (scale.reshape(-1, *([1] * (array.ndim - 1))) if scale.ndim else scale)
    return array.astype(np.float32)


def whisper_state_dict(variables, d_model):
    """HF `WhisperForConditionalGeneration` state dict (float32 numpy, without the tied `proj_out.weight`) from
    CTranslate2 WhisperSpec variables."""
    state = {}

    def linear(target, source):
        state[target + ".weight"] = _float32(variables, source + "/weight")
        if source + "/bias" in variables:
            state[target + ".bias"] = _float32(variables, source + "/bias")

    def layer_norm(target, source):
        state[target + ".weight"] = _float32(variables, source + "/gamma")
        state[target + ".bias"] = _float32(variables, source + "/beta")

    def fused(target, source, parts):
        weight = _float32(variables, source + "/weight")
        bias = _float32(variables, source + "/bias")
        if weight.shape[0] != len(parts) * d_model:
            raise CheckpointError(f"{source}/weight: shape {weight.shape}, expected {len(parts)} x {d_model} rows")
        for i, part in enumerate(parts):
            rows = slice(i * d_model, (i + 1) * d_model)
            state[f"{target}.{part}_proj.weight"] = np.ascontiguousarray(weight[rows])
            if part == "k":
                if np.abs(bias[rows]).max(initial=0.0) != 0.0:
                    raise CheckpointError(f"{source}/bias: Whisper's key projection has no bias, but the stored one "
                                          "is not zero")
            else:
                state[f"{target}.{part}_proj.bias"] = np.ascontiguousarray(bias[rows])

    def attention_block(target, source):
        layer_norm(target + ".self_attn_layer_norm", source + "/self_attention/layer_norm")
        fused(target + ".self_attn", source + "/self_attention/linear_0", "qkv")
        linear(target + ".self_attn.out_proj", source + "/self_attention/linear_1")
        layer_norm(target + ".final_layer_norm", source + "/ffn/layer_norm")
        linear(target + ".fc1", source + "/ffn/linear_0")
        linear(target + ".fc2", source + "/ffn/linear_1")

    encoder, decoder = "model.encoder", "model.decoder"
    linear(encoder + ".conv1", "encoder/conv1")
    linear(encoder + ".conv2", "encoder/conv2")
    state[encoder + ".embed_positions.weight"] = _float32(variables, "encoder/position_encodings/encodings")
    layer_norm(encoder + ".layer_norm", "encoder/layer_norm")
    for i in range(_count_layers(variables, "encoder")):
        attention_block(f"{encoder}.layers.{i}", f"encoder/layer_{i}")
    state[decoder + ".embed_tokens.weight"] = _float32(variables, "decoder/embeddings/weight")
    state[decoder + ".embed_positions.weight"] = _float32(variables, "decoder/position_encodings/encodings")
    layer_norm(decoder + ".layer_norm", "decoder/layer_norm")
    for i in range(_count_layers(variables, "decoder")):
        target, source = f"{decoder}.layers.{i}", f"decoder/layer_{i}"
        attention_block(target, source)
        layer_norm(target + ".encoder_attn_layer_norm", source + "/attention/layer_norm")
        linear(target + ".encoder_attn.q_proj", source + "/attention/linear_0")
        fused(target + ".encoder_attn", source + "/attention/linear_1", "kv")
        linear(target + ".encoder_attn.out_proj", source + "/attention/linear_2")
    return state


def _count_layers(variables, stack):
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return len({m.group(1) for m in map(pattern.match, variables) if m})


def whisper_configs(variables, ct2_config, tokenizer):
    """(transformers `WhisperConfig`, `GenerationConfig`) for CTranslate2 Whisper variables, its config.json dict
    and the HF tokenizer (special token ids are looked up by name)."""
    from transformers import GenerationConfig, WhisperConfig

    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    ffn_dim = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    token = tokenizer.convert_tokens_to_ids
    eot, sot = token("<|endoftext|>"), token("<|startoftranscript|>")
    multilingual = vocab_size >= _MULTILINGUAL_VOCAB
    config = WhisperConfig(
        vocab_size=int(vocab_size), num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]), d_model=int(d_model),
        encoder_layers=_count_layers(variables, "encoder"), decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"].reshape(-1)[0]),
        decoder_attention_heads=int(variables["decoder/num_heads"].reshape(-1)[0]),
        encoder_ffn_dim=int(ffn_dim), decoder_ffn_dim=int(ffn_dim),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        # the ids of OpenAI's checkpoints on the hub: BOS is <|startoftranscript|>, EOS and padding <|endoftext|>
        bos_token_id=sot, decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"), suppress_tokens=ct2_config.get("suppress_ids"),
        tie_word_embeddings=True, architectures=["WhisperForConditionalGeneration"])
    no_timestamps = token("<|notimestamps|>")
    generation = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"), is_multilingual=multilingual,
        no_timestamps_token_id=no_timestamps, prev_sot_token_id=token("<|startofprev|>"),
        max_initial_timestamp_index=50)
    if multilingual:
        generation.lang_to_id = {tokenizer.convert_ids_to_tokens(i): int(i) for i in ct2_config.get("lang_ids", ())}
        generation.task_to_id = {"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")}
    return config, generation


def convert_ct2_whisper(source, target, dtype="float32"):
    """Converts a CTranslate2 Whisper directory into an HF Whisper checkpoint directory.

    Args:
        source: directory with CTranslate2's `model.bin`, `config.json` and `tokenizer.json`.
        target: output directory (created; existing files of the same names are replaced).
        dtype: "float32" (default: what HF's Whisper checkpoints hold; float16/int8 weights are widened exactly or
            dequantized) or "float16".

    Returns:
        The target directory.
    """
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    source, target = os.fspath(source), os.fspath(target)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    spec = ct2_spec_name(source)
    if spec != "WhisperSpec":
        found = f"a {spec} model" if spec else "no CTranslate2 model.bin"
        raise CheckpointError(f"{source}: expected a CTranslate2 Whisper model (WhisperSpec), found {found}")
    for name in ("config.json", "tokenizer.json"):
        if not os.path.isfile(os.path.join(source, name)):
            raise CheckpointError(f"{source}: {name} is missing (CTranslate2 Whisper directories carry it)")
    model = read_ct2(os.path.join(source, "model.bin"))
    variables = model["variables"]
    with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
        ct2_config = json.load(f)
    tokenizer = WhisperTokenizerFast(tokenizer_file=os.path.join(source, "tokenizer.json"))
    config, generation = whisper_configs(variables, ct2_config, tokenizer)
    state = whisper_state_dict(variables, config.d_model)
    if dtype == "float16":
        state = {k: v.astype(np.float16) for k, v in state.items()}
    config.dtype = dtype
    os.makedirs(target, exist_ok=True)
    save_state_dict(state, target)
    config.save_pretrained(target)
    generation.save_pretrained(target)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(target)
    logger.info("converted CTranslate2 Whisper %s -> %s (%d encoder / %d decoder layers, d_model %d, vocab %d, %s)",
                source, target, config.encoder_layers, config.decoder_layers, config.d_model, config.vocab_size,
                dtype)
    return target


def converted_ct2_whisper_dir(source, cache_dir=None):
    """The HF directory converted from a CTranslate2 Whisper directory, converting it once into
    `cache_dir` (default ~/.cache/mindone-transformers/converted/) keyed by the source's path, size and mtime."""
    source = os.path.abspath(os.fspath(source))
    stat = os.stat(os.path.join(source, "model.bin"))
    key = hashlib.sha1(f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{_CONVERTER_VERSION}".encode()).hexdigest()[:16]
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache_dir = os.path.join(base, "mindone-transformers", "converted")
    target = os.path.join(cache_dir, f"ct2-whisper-{key}")
    if os.path.isfile(os.path.join(target, "model.safetensors")):
        logger.info("using %s, converted earlier from the CTranslate2 model %s", target, source)
        return target
    logger.info("converting the CTranslate2 Whisper model %s to HF format in %s (once)", source, target)
    tmp = f"{target}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    convert_ct2_whisper(source, tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


__all__ = ["convert_ct2_whisper", "converted_ct2_whisper_dir", "is_ct2_whisper_dir", "read_ct2",
           "whisper_configs", "whisper_state_dict"]
