"""Finding the weight files of a local directory or a Hugging Face Hub repo (downloaded or already cached)."""

import json
import os

from .errors import CheckpointError

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# in order of preference: (file name, format, is an index of shards)
_CANDIDATES = (
    (SAFE_WEIGHTS_NAME, "safetensors", False),
    (SAFE_WEIGHTS_INDEX_NAME, "safetensors", True),
    (WEIGHTS_NAME, "bin", False),
    (WEIGHTS_INDEX_NAME, "bin", True),
)
_FORMAT_BY_SUFFIX = {".safetensors": "safetensors", ".bin": "bin", ".gguf": "gguf"}


def shard_names(index_path: str) -> list[str]:
    """The distinct shard file names an index lists, in name order."""
    try:
        with open(index_path, encoding="utf-8") as file:
            weight_map = json.load(file)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_path}: not a valid shard index ({type(error).__name__}: {error})") from None
    if not names or not all(isinstance(name, str) for name in names):
        raise CheckpointError(f"{index_path}: weight_map lists no shard files")
    for name in names:
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise CheckpointError(f"{index_path}: shard name {name!r} points outside the checkpoint directory")
    return names


def _format_of_file(path: str) -> str:
    for suffix, fmt in _FORMAT_BY_SUFFIX.items():
        if path.endswith(suffix):
            return fmt
    raise CheckpointError(f"{path}: unknown weight file type (expected {', '.join(_FORMAT_BY_SUFFIX)})")


def _resolve_local(directory: str, gguf_file: str | None) -> tuple[list[str], str]:
    if gguf_file is not None:
        path = gguf_file if os.path.isabs(gguf_file) else os.path.join(directory, gguf_file)
        if not os.path.isfile(path):
            raise CheckpointError(f"{directory}: no GGUF file {gguf_file!r} (looked for {path})")
        return [os.path.abspath(path)], "gguf"
    for name, fmt, is_index in _CANDIDATES:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        if not is_index:
            return [os.path.abspath(path)], fmt
        shards = [os.path.join(directory, shard) for shard in shard_names(path)]
        missing = [os.path.basename(shard) for shard in shards if not os.path.isfile(shard)]
        if missing:
            raise CheckpointError(f"{path}: lists shard files that are missing: {', '.join(missing)}")
        return [os.path.abspath(shard) for shard in shards], fmt
    raise CheckpointError(
        f"{directory}: no weights found (looked for {', '.join(name for name, _, _ in _CANDIDATES)})"
    )


def _resolve_hub(repo_id: str, subfolder: str, gguf_file: str | None, **download_kwargs) -> tuple[list[str], str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"{repo_id}/{subfolder}" if subfolder else repo_id

    def download(name: str) -> str | None:
        try:
            return hf_hub_download(repo_id, name, subfolder=subfolder or None, **download_kwargs)
        except EntryNotFoundError:  # includes "not in the local cache" when offline
            return None
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise CheckpointError(f"{where}: {error}") from None
        except HFValidationError:
            raise CheckpointError(
                f"{repo_id}: no such local directory or file, and not a valid Hugging Face Hub repo id "
                f"(looked for {gguf_file or ', '.join(candidate for candidate, _, _ in _CANDIDATES)})"
            ) from None

    if gguf_file is not None:
        path = download(gguf_file)
        if path is None:
            raise CheckpointError(f"{where}: no GGUF file {gguf_file!r} on the Hub or in the local cache")
        return [path], "gguf"
    for name, fmt, is_index in _CANDIDATES:
        path = download(name)
        if path is None:
            continue
        if not is_index:
            return [path], fmt
        shards = []
        for shard in shard_names(path):
            shard_path = download(shard)
            if shard_path is None:
                raise CheckpointError(f"{path}: lists shard file {shard}, missing from {where}")
            shards.append(shard_path)
        return shards, fmt
    raise CheckpointError(
        f"{where}: no weights found on the Hub or in the local cache "
        f"(looked for {', '.join(name for name, _, _ in _CANDIDATES)})"
    )


def resolve_named_file(pretrained_model_name_or_path, name: str, subfolder: str = "", revision: str | None = None,
                       cache_dir=None, local_files_only: bool = False, token=None) -> str | None:
    """The path of file `name` in a local directory or a Hub repo (downloaded through huggingface_hub's cache), or
    None when it does not exist there (e.g. `adapter.<lang>.safetensors` beside a Wav2Vec2 MMS checkpoint)."""
    path = os.fspath(pretrained_model_name_or_path)
    if os.path.isdir(path):
        candidate = os.path.join(path, subfolder, name) if subfolder else os.path.join(path, name)
        return os.path.abspath(candidate) if os.path.isfile(candidate) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(path, name, subfolder=subfolder or None, revision=revision, cache_dir=cache_dir,
                               local_files_only=local_files_only, token=token)
    except EntryNotFoundError:
        return None


def resolve_checkpoint_files(
    pretrained_model_name_or_path,
    subfolder: str = "",
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
    token=None,
    gguf_file: str | None = None,
) -> tuple[list[str], str]:
    """Find the weight files of a checkpoint.

    Args:
        pretrained_model_name_or_path: a local directory, a single weight file, or a Hub repo id ("org/name"),
            resolved through huggingface_hub (so `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` apply).
        subfolder: folder inside the directory or repo.
        revision, cache_dir, local_files_only, token: as for `huggingface_hub.hf_hub_download`.
        gguf_file: name of a GGUF file in the directory/repo (or an absolute path); its presence selects GGUF.

    Returns:
        (absolute file paths, format) with format "safetensors", "bin" or "gguf". Preference: model.safetensors,
        model.safetensors.index.json (all its shards), pytorch_model.bin, pytorch_model.bin.index.json.

    Raises:
        CheckpointError: nothing found (the message names where and what was looked for), an index is invalid,
            or a shard it lists is missing.
    """
    path = os.fspath(pretrained_model_name_or_path)
    subfolder = subfolder or ""
    if os.path.isdir(path):
        directory = os.path.join(path, subfolder) if subfolder else path
        if not os.path.isdir(directory):
            raise CheckpointError(f"{path}: no subfolder {subfolder!r}")
        return _resolve_local(directory, gguf_file)
    if os.path.isfile(path):
        fmt = _format_of_file(path)
        return [os.path.abspath(path)], fmt
    return _resolve_hub(
        path,
        subfolder,
        gguf_file,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
    )
