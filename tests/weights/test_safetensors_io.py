import json
import os
import struct

import numpy as np
import pytest

from mindone.transformers.weights import CheckpointError, checkpoint_dtype, iter_state_dict, resolve_checkpoint_files
from mindone.transformers.weights.safetensors_io import SafetensorsFile

from tests.weights.helpers import assert_same_tensors


def test_torch_written_file_round_trips_all_dtypes_bf16_widened_exactly(tmp_path, mixed_torch_state):
    import safetensors.torch

    safetensors.torch.save_file(mixed_torch_state, tmp_path / "model.safetensors")
    files, fmt = resolve_checkpoint_files(tmp_path)
    assert (files, fmt) == ([str(tmp_path / "model.safetensors")], "safetensors")
    ours = dict(iter_state_dict(files, fmt))
    assert ours["bf16"].dtype == np.float32
    assert_same_tensors(ours, mixed_torch_state)


def test_transformers_sharded_save_pretrained_loads_every_shard(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    files, fmt = resolve_checkpoint_files(tmp_path)
    assert fmt == "safetensors" and len(files) > 2
    assert all(os.path.isabs(f) for f in files)
    assert_same_tensors(dict(iter_state_dict(files, fmt)), tiny_llama.state_dict())


def test_yielded_arrays_are_writable_copies_not_views_of_the_file(tmp_path):
    import safetensors.torch
    import torch

    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"a": torch.ones(3), "b": torch.zeros(2)}, path)
    first = dict(iter_state_dict([str(path)], "safetensors"))
    first["a"][:] = 7  # MindSpore's from_numpy shares memory: callers may write
    again = dict(iter_state_dict([str(path)], "safetensors"))
    np.testing.assert_array_equal(again["a"], np.ones(3, np.float32))


@pytest.mark.parametrize(
    "stored, expected",
    [({"float16": 100, "float32": 10}, "float16"), ({"bfloat16": 100, "float32": 10}, "bfloat16"),
     ({"float32": 100, "float16": 10}, "float32"), ({"int64": 5}, None)],
)
def test_checkpoint_dtype_is_the_dtype_of_most_parameters(tmp_path, stored, expected):
    import safetensors.torch
    import torch

    state = {name: torch.zeros(count, dtype=getattr(torch, name)) for name, count in stored.items()}
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    assert checkpoint_dtype([str(tmp_path / "model.safetensors")], "safetensors") == expected


def _valid_file(path):
    import safetensors.torch
    import torch

    safetensors.torch.save_file({"weight": torch.randn(16, 16), "bias": torch.randn(16)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("cut", [1, 100, 1030])
def test_truncated_file_is_refused_naming_it(tmp_path, cut):
    path = tmp_path / "model.safetensors"
    data = _valid_file(path)
    path.write_bytes(data[:-cut])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        list(iter_state_dict([str(path)], "safetensors"))


def test_garbage_header_and_bad_offsets_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    data = _valid_file(path)
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])

    path.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        SafetensorsFile(str(path))

    header["weight"]["data_offsets"][1] -= 4  # shape says 1024 bytes, offsets 1020
    encoded = json.dumps(header, separators=(",", ":")).encode().ljust(header_len)
    path.write_bytes(data[:8] + encoded + data[8 + header_len :])
    with pytest.raises(CheckpointError, match="'weight'"):
        SafetensorsFile(str(path))

    path.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    with pytest.raises(CheckpointError, match="header length"):
        SafetensorsFile(str(path))

    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        SafetensorsFile(str(path))


def test_same_key_in_two_shards_is_refused(tmp_path):
    import safetensors.torch
    import torch

    for name in ("a.safetensors", "b.safetensors"):
        safetensors.torch.save_file({"w": torch.ones(2)}, tmp_path / name)
    with pytest.raises(CheckpointError, match="'w' is also in"):
        list(iter_state_dict([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")], "safetensors"))


@pytest.mark.parametrize(
    "key, expected",
    [("bert.embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.weight"),
     ("encoder.layer.0.output.LayerNorm.beta", "encoder.layer.0.output.LayerNorm.bias"),
     ("model.layers.0.gamma", "model.layers.0.gamma"), ("lm_head.weight", "lm_head.weight"),
     # torch's old weight_norm names (transformers 5's "legacy" renames)
     ("wav2vec2.encoder.pos_conv_embed.conv.weight_g",
      "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
     ("encoder.pos_conv_embed.conv.weight_v", "encoder.pos_conv_embed.conv.parametrizations.weight.original1")],
)
def test_legacy_layernorm_names_are_renamed_as_transformers_does(key, expected):
    from mindone.transformers.weights import rename_legacy_key

    assert rename_legacy_key(key) == expected
