import io
import json
import os
import pickle
import sys
import zipfile

import pytest

from mindone.transformers.weights import CheckpointError, checkpoint_dtype, iter_state_dict, resolve_checkpoint_files

from tests.weights.helpers import assert_same_tensors


def _load(path):
    return dict(iter_state_dict([str(path)], "bin"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_round_trips_all_dtypes(tmp_path, mixed_torch_state, zip_format):
    import torch

    torch.save(mixed_torch_state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    files, fmt = resolve_checkpoint_files(tmp_path)
    assert fmt == "bin"
    assert_same_tensors(dict(iter_state_dict(files, fmt)), mixed_torch_state)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_views_shared_storages_and_parameters_come_out_as_their_values(tmp_path, zip_format):
    import torch

    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    state = {
        "base": base,
        "transposed": base.t(),  # shares the storage, non-contiguous
        "rows": base[2:4],  # storage offset
        "strided": base[::2, 1::3],
        "expanded": torch.ones(3, 1).expand(3, 4),  # stride 0
        "tied": base,  # same tensor under two names
        "parameter": torch.nn.Parameter(torch.randn(4, 4)),
    }
    torch.save(state, tmp_path / "x.bin", _use_new_zipfile_serialization=zip_format)
    ours = _load(tmp_path / "x.bin")
    assert_same_tensors(ours, state)
    ours["base"][0, 0] = -1  # arrays handed out never alias one another
    assert ours["tied"][0, 0] == 0 and ours["transposed"][0, 0] == 0


def test_sharded_bin_checkpoint_resolves_every_shard(tmp_path, tiny_llama):
    import torch

    state = tiny_llama.state_dict()
    keys = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
    for name, shard_keys in halves.items():
        torch.save({key: state[key] for key in shard_keys}, tmp_path / name)
    weight_map = {key: name for name, shard_keys in halves.items() for key in shard_keys}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    files, fmt = resolve_checkpoint_files(tmp_path)
    assert (fmt, [os.path.basename(f) for f in files]) == ("bin", sorted(halves))
    assert_same_tensors(dict(iter_state_dict(files, fmt)), state)
    assert checkpoint_dtype(files, fmt) == "float32"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_like_zip(path, pickled: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused_naming_the_global_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    _torch_like_zip(path, pickle.dumps({"weight": _RunsCode(marker)}, protocol=2))
    global_name = f"{os.system.__module__}.system"  # posix.system on Linux
    with pytest.raises(CheckpointError, match=f"refusing to unpickle {global_name} in .*pytorch_model.bin"):
        _load(path)
    assert not marker.exists()

    # legacy (non-zip) format: the first pickle of the file is the payload
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        _load(legacy)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"), ("torch", "load"), ("numpy", "array")])
def test_any_global_outside_the_allowlist_is_refused(tmp_path, module, name):
    path = tmp_path / "pytorch_model.bin"
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x001\x85R."
    _torch_like_zip(path, payload)
    with pytest.raises(CheckpointError, match=f"{module}.{name}"):
        _load(path)


def _saved_bytes(tmp_path):
    import torch

    weight = torch.randn(64, 64)
    buffer = io.BytesIO()
    torch.save({"w": weight, "b": torch.randn(64)}, buffer)
    return buffer.getvalue(), weight.numpy().tobytes()


@pytest.mark.parametrize("cut", [10, 5000, 16000])
def test_truncated_zip_checkpoint_is_refused_naming_the_file(tmp_path, cut):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(_saved_bytes(tmp_path)[0][:-cut])
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        _load(path)


def test_flipped_byte_in_tensor_data_fails_the_crc_check(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    saved, weight_bytes = _saved_bytes(tmp_path)
    data = bytearray(saved)
    data[data.index(weight_bytes) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*corrupt"):
        _load(path)


def test_truncated_legacy_checkpoint_is_refused(tmp_path):
    import torch

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        _load(path)


def test_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"hello world, not a pickle")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        _load(path)


def test_reader_never_imports_torch(tmp_path):
    import subprocess

    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    code = (
        "import sys; from mindone.transformers.weights import iter_state_dict; "
        f"d = dict(iter_state_dict([{str(tmp_path / 'pytorch_model.bin')!r}], 'bin')); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(d['w'].tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1.0, 1.0]"
