import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mindone.transformers.weights import CheckpointError, iter_state_dict, resolve_checkpoint_files, save_state_dict

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOOKED_FOR = "model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json"


def _fake_hub_cache(cache, repo_id, files: dict, *, commit=COMMIT, branch="main"):
    """huggingface_hub's cache layout: blobs/, refs/<branch> holding the commit, snapshots/<commit>/<file> -> blob."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        blob = repo / "blobs" / f"blob-{abs(hash((commit, name)))}"
        blob.write_bytes(source.read_bytes())
        target = repo / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, target.parent), target)
    return repo / "snapshots" / commit


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """Point huggingface_hub (already imported, so its constants) at an empty cache, offline."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def saved(tmp_path):
    def save(name, **kwargs):
        state = {f"layer{i}.weight": np.full((40, 40), i, np.float32) for i in range(4)}
        directory = tmp_path / name
        save_state_dict(state, directory, **kwargs)
        return directory, state

    return save


def test_local_directory_prefers_safetensors_over_bin(saved):
    directory, _ = saved("both", safe_serialization=False)
    assert resolve_checkpoint_files(directory)[1] == "bin"
    import safetensors.numpy

    safetensors.numpy.save_file({"x": np.ones(1, np.float32)}, directory / "model.safetensors")
    files, fmt = resolve_checkpoint_files(directory)
    assert (files, fmt) == ([str(directory / "model.safetensors")], "safetensors")


def test_local_subfolder_and_gguf_file(tmp_path, saved):
    directory, _ = saved("repo/text_encoder")
    files, fmt = resolve_checkpoint_files(tmp_path / "repo", subfolder="text_encoder")
    assert (files, fmt) == ([str(directory / "model.safetensors")], "safetensors")
    (tmp_path / "repo" / "m.gguf").write_bytes(b"GGUF")
    assert resolve_checkpoint_files(tmp_path / "repo", gguf_file="m.gguf") == ([str(tmp_path / "repo" / "m.gguf")], "gguf")


def test_missing_directory_or_weights_name_what_was_looked_for(tmp_path, offline_cache):
    with pytest.raises(CheckpointError, match=f"{tmp_path}/nope.*{LOOKED_FOR}"):
        resolve_checkpoint_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=f"empty: no weights found \\(looked for {LOOKED_FOR}\\)"):
        resolve_checkpoint_files(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no subfolder 'unet'"):
        resolve_checkpoint_files(tmp_path / "empty", subfolder="unet")
    with pytest.raises(CheckpointError, match="no GGUF file 'x.gguf'"):
        resolve_checkpoint_files(tmp_path / "empty", gguf_file="x.gguf")


def test_shard_listed_in_index_but_missing_is_an_error(saved):
    directory, _ = saved("sharded", max_shard_size="10KB")
    os.remove(directory / "model-00003-of-00004.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: lists shard files that are missing: "
                                              "model-00003-of-00004.safetensors"):
        resolve_checkpoint_files(directory)


def test_corrupt_index_is_an_error(saved):
    directory, _ = saved("sharded", max_shard_size="10KB")
    (directory / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(CheckpointError, match="index.json: not a valid shard index"):
        resolve_checkpoint_files(directory)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        resolve_checkpoint_files(directory)


def test_hub_repo_id_resolves_from_offline_cache_with_env_vars_only(tmp_path, saved):
    directory, state = saved("src")
    cache = tmp_path / "hub"
    snapshot = _fake_hub_cache(cache, "org/tiny", {"model.safetensors": directory / "model.safetensors"})
    code = (
        "from mindone.transformers.weights import resolve_checkpoint_files as r; "
        "files, fmt = r('org/tiny'); print(fmt); print(files[0])"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    fmt, path = result.stdout.split()
    assert fmt == "safetensors" and path == str(snapshot / "model.safetensors")


def test_hub_sharded_checkpoint_in_a_subfolder(tmp_path, saved, offline_cache):
    directory, state = saved("src", max_shard_size="10KB")
    files = {f"unet/{name}": directory / name for name in os.listdir(directory)}
    snapshot = _fake_hub_cache(offline_cache, "org/pipe", files)
    paths, fmt = resolve_checkpoint_files("org/pipe", subfolder="unet")
    assert fmt == "safetensors"
    assert paths == [str(snapshot / "unet" / f"model-0000{i}-of-00004.safetensors") for i in range(1, 5)]
    loaded = dict(iter_state_dict(paths, fmt))
    assert sorted(loaded) == sorted(state)


def test_hub_revision_and_missing_shard_and_uncached_repo(tmp_path, saved, offline_cache):
    directory, _ = saved("src", max_shard_size="10KB")
    files = {name: directory / name for name in os.listdir(directory) if name != "model-00002-of-00004.safetensors"}
    _fake_hub_cache(offline_cache, "org/broken", files, branch="v2")
    with pytest.raises(CheckpointError, match="lists shard file model-00002-of-00004.safetensors, missing from org/broken"):
        resolve_checkpoint_files("org/broken", revision="v2")
    with pytest.raises(CheckpointError, match=f"org/absent: no weights found.*{LOOKED_FOR}"):
        resolve_checkpoint_files("org/absent")
