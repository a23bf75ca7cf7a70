"""Key renames transformers applies to every checkpoint on load, so old checkpoints keep loading.

Model-specific renames belong beside the model (a `sanitize`-style hook), not here.
"""

# TF-era BERT-style checkpoints name LayerNorm parameters gamma/beta
_LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias",
                    # torch's old `nn.utils.weight_norm` names; transformers 5 maps them onto the parametrization
                    ".weight_g": ".parametrizations.weight.original0",
                    ".weight_v": ".parametrizations.weight.original1"}


def rename_legacy_key(key: str) -> str:
    """The current name of a checkpoint key: "...LayerNorm.gamma" -> "...LayerNorm.weight", beta -> bias,
    "...conv.weight_g" -> "...conv.parametrizations.weight.original0", weight_v -> original1."""
    for old, new in _LEGACY_SUFFIXES.items():
        if key.endswith(old):
            return key[: -len(old)] + new
    return key
