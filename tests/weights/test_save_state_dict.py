import json
import os

import numpy as np
import pytest

from mindone.transformers.weights import (
    atomic_write_text,
    iter_state_dict,
    parse_size,
    resolve_checkpoint_files,
    save_state_dict,
)
from mindone.transformers.weights import saving


def _numpy_state(model):
    return {key: tensor.detach().numpy().copy() for key, tensor in model.state_dict().items()}


def _assert_torch_state_equal(torch_state, numpy_state):
    assert sorted(torch_state) == sorted(numpy_state)
    for key, array in numpy_state.items():
        np.testing.assert_array_equal(torch_state[key].numpy(), array, err_msg=key)


def _load_back(directory):
    files, fmt = resolve_checkpoint_files(directory)
    return dict(iter_state_dict(files, fmt))


@pytest.mark.parametrize("size, expected", [(1234, 1234), ("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("10KB", 10**4),
                                            ("2GiB", 2 * 2**30), ("8Kb", 1000), ("42", 42)])
def test_parse_size_uses_hf_units(size, expected):
    assert parse_size(size) == expected


def test_parse_size_rejects_nonsense():
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size("lots")


def test_single_file_loads_in_torch_with_pt_metadata(tmp_path):
    import safetensors
    import safetensors.torch

    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "h": np.ones(5, np.float16),
             "i": np.array([1, -2], np.int64), "t": np.arange(6, dtype=np.float32).reshape(2, 3).T}
    written = save_state_dict(state, tmp_path)
    assert written == [os.path.join(tmp_path, "model.safetensors")]
    _assert_torch_state_equal(safetensors.torch.load_file(written[0]), state)
    with safetensors.safe_open(written[0], framework="pt") as file:
        assert file.metadata() == {"format": "pt"}


def test_bf16_arrays_from_mindspore_are_saved_as_bf16(tmp_path):
    ms = pytest.importorskip("mindspore")
    import safetensors.torch
    import torch

    values = np.array([1.5, -2.25, 3.0e38, 0.0], np.float32)
    bf16 = ms.Tensor(values).astype(ms.bfloat16).asnumpy()
    save_state_dict({"b": bf16}, tmp_path)
    loaded = safetensors.torch.load_file(tmp_path / "model.safetensors")["b"]
    assert loaded.dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded.float().numpy(), torch.from_numpy(values).bfloat16().float().numpy())


def test_sharded_save_has_hf_index_and_loads_in_transformers(tmp_path, tiny_llama):
    import transformers

    state = _numpy_state(tiny_llama)
    written = save_state_dict(state, tmp_path, max_shard_size="20KB")
    tiny_llama.config.save_pretrained(tmp_path)
    names = sorted(os.listdir(tmp_path))
    shards = [n for n in names if n.endswith(".safetensors")]
    assert len(shards) > 2 and all(n == f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i, n in enumerate(shards))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in state.values())
    assert sorted(index["weight_map"]) == sorted(state) and set(index["weight_map"].values()) == set(shards)
    assert written[-1].endswith("model.safetensors.index.json")
    for shard in shards:  # no shard above the limit unless it holds one tensor that is
        assert os.path.getsize(tmp_path / shard) < 20_000 + 2_000 or len(
            [k for k, v in index["weight_map"].items() if v == shard]) == 1

    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
    _assert_torch_state_equal(reloaded.state_dict(), state)
    assert all(not n.endswith(".tmp") for n in os.listdir(tmp_path))


@pytest.mark.parametrize("max_shard_size", ["5GB", "20KB"])
def test_bin_format_is_written_without_torch_and_read_by_torch(tmp_path, tiny_llama, max_shard_size):
    import torch
    import transformers

    state = _numpy_state(tiny_llama)
    written = save_state_dict(state, tmp_path, max_shard_size=max_shard_size, safe_serialization=False)
    for path in written:
        if path.endswith(".bin"):
            for mmap in (False, True):
                loaded = torch.load(path, weights_only=True, mmap=mmap)
                for key, tensor in loaded.items():
                    np.testing.assert_array_equal(tensor.numpy(), state[key])
    tiny_llama.config.save_pretrained(tmp_path)
    _assert_torch_state_equal(transformers.LlamaForCausalLM.from_pretrained(tmp_path).state_dict(), state)
    assert _load_back(tmp_path).keys() == state.keys()


def test_bin_writer_keeps_dtypes_shapes_and_scalars(tmp_path):
    import torch

    state = {"f16": np.ones((2, 3), np.float16), "i8": np.array([-1, 2], np.int8), "b": np.array([True, False]),
             "scalar": np.array(3.5, np.float32), "empty": np.zeros((0, 4), np.float32), "f64": np.arange(3.0)}
    save_state_dict(state, tmp_path, safe_serialization=False)
    loaded = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    for key, array in state.items():
        assert loaded[key].numpy().dtype == array.dtype and loaded[key].shape == array.shape, key
        np.testing.assert_array_equal(loaded[key].numpy(), array)


def _snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize("previous_shard_size", ["5GB", "20KB"], ids=["previous-single", "previous-sharded"])
def test_interrupted_save_leaves_previous_checkpoint_loadable_and_no_half_file(tmp_path, tiny_llama, monkeypatch,
                                                                             previous_shard_size):
    old = _numpy_state(tiny_llama)
    save_state_dict(old, tmp_path, max_shard_size=previous_shard_size)
    before = _snapshot(tmp_path)

    real_write = saving._write_weights
    calls = []

    def dies_after_first_shard(file, tensors, safe):
        calls.append(1)
        if len(calls) == 2:
            file.write(b"half a shard")
            raise KeyboardInterrupt("power cut")
        real_write(file, tensors, safe)

    monkeypatch.setattr(saving, "_write_weights", dies_after_first_shard)
    new = {key: array + 1 for key, array in old.items()}
    with pytest.raises(KeyboardInterrupt):
        save_state_dict(new, tmp_path, max_shard_size="20KB")
    assert len(calls) == 2
    assert _snapshot(tmp_path) == before  # no temp file left, nothing at a final name touched
    loaded = _load_back(tmp_path)
    for key, array in old.items():
        np.testing.assert_array_equal(loaded[key], array)


@pytest.mark.parametrize(
    "first, second",
    [(dict(max_shard_size="20KB"), dict()), (dict(), dict(max_shard_size="20KB")),
     (dict(max_shard_size="20KB"), dict(max_shard_size="20KB")), (dict(), dict(safe_serialization=False)),
     (dict(safe_serialization=False, max_shard_size="20KB"), dict())],
    ids=["sharded-then-single", "single-then-sharded", "resharded-same-count", "safetensors-then-bin", "bin-then-safetensors"],
)
def test_resaving_replaces_the_checkpoint_and_removes_stale_files(tmp_path, tiny_llama, first, second):
    old = _numpy_state(tiny_llama)
    save_state_dict(old, tmp_path, **first)
    (tmp_path / "config.json").write_text("{}")
    new = {key: array * 2 for key, array in old.items()}
    written = save_state_dict(new, tmp_path, **second)
    assert sorted(os.listdir(tmp_path)) == sorted(["config.json"] + [os.path.basename(p) for p in written])
    loaded = _load_back(tmp_path)
    for key, array in new.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "config.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, '{"new": "ünïcode"}')
    assert path.read_text(encoding="utf-8") == '{"new": "ünïcode"}'
    assert os.listdir(tmp_path) == ["config.json"]
