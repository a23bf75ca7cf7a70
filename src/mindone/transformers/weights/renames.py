"""Key renames transformers applies to every checkpoint on load, so old checkpoints keep loading.

Model-specific renames belong beside the model (a `sanitize`-style hook), not here.
"""

# TF-era BERT-style checkpoints name LayerNorm parameters gamma/beta
_LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def rename_legacy_key(key: str) -> str:
    """The current name of a checkpoint key: "...LayerNorm.gamma" -> "...LayerNorm.weight", beta -> bias."""
    for old, new in _LEGACY_SUFFIXES.items():
        if key.endswith(old):
            return key[: -len(old)] + new
    return key
