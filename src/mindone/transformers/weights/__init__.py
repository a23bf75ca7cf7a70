"""Checkpoint files in and out, as numpy: safetensors, torch .bin (read without torch or code execution), GGUF.

`resolve_checkpoint_files` finds the files, `iter_state_dict` streams them one tensor at a time under their
checkpoint keys, `save_state_dict` writes HF-format checkpoints that torch `transformers` loads.
"""

from .errors import CheckpointError
from .experts import ExpertLayout, fuse_experts, split_experts
from .files import atomic_write_text
from .gguf_io import ARCHITECTURES as GGUF_ARCHITECTURES
from .gguf_io import GGUFArchitecture, load_gguf
from .loading import checkpoint_dtype, iter_state_dict
from .renames import rename_legacy_key
from .resolve import resolve_checkpoint_files, resolve_named_file
from .saving import parse_size, save_state_dict

__all__ = [
    "CheckpointError",
    "ExpertLayout",
    "GGUFArchitecture",
    "GGUF_ARCHITECTURES",
    "atomic_write_text",
    "checkpoint_dtype",
    "fuse_experts",
    "iter_state_dict",
    "load_gguf",
    "parse_size",
    "rename_legacy_key",
    "resolve_checkpoint_files",
    "resolve_named_file",
    "save_state_dict",
    "split_experts",
]
