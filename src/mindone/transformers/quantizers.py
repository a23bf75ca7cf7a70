"""Weight-only quantization of a loaded model's Linear layers (from_pretrained's `quantization_config` and
`keep_quantized`); the layer and the packed formats are in `backend/quantization.py`.

Three ways in, one result (Linear cells replaced by `QuantizedLinear`, the plan recorded in
`config.quantization_config`, which save_pretrained writes to config.json and from_pretrained reads back):

- `quantization_config=QuantoConfig(weights="int8" | "int4")` (transformers' class, or its dict): every
  `layers.Linear` is quantized after loading, except `modules_to_not_convert` (default `["lm_head"]`, as
  transformers; pass `[]` to quantize the output layer too; with weights="int4" it becomes int8 unless
  `output_layer_weights="int4"`). Group size: `group_size` attribute / key (default 32); a layer whose in_features
  it does not divide stays float (logged).
- `gguf_file=..., keep_quantized=True`: Linear weights stored as Q8_0 / Q4_0 / Q4_1 / Q4_K keep their blocks
  (exactly the values the dense load dequantises to); other types (F16, Q6_K, ...) stay float. A tied output layer
  takes the embedding's blocks (the embedding itself stays a float table for the lookup).
- a directory written by save_pretrained of such a model: config.json's `quantization_config` (quant_method
  "mindone_weight_only") lists every quantized module; their checkpoint keys are `<module>.weight_packed`,
  `.weight_scale` and (int4) `.weight_min`.
"""

import logging

import mindspore as ms
from mindspore import nn

from .backend import layers
from .backend.quantization import (BITS, DEFAULT_GROUP_SIZE, QUANT_METHOD, QuantizedLinear, mark_fusable_projections,
                                   quantize_numpy)

logger = logging.getLogger(__name__)

__all__ = ["QuantizationSettings", "parse_quantization_config", "quantize_model", "keep_gguf_quantized",
           "prepare_quantized_checkpoint", "is_saved_quantized"]


class QuantizationSettings:
    def __init__(self, bits, group_size, modules_to_not_convert, output_bits=None):
        self.bits, self.group_size, self.modules_to_not_convert = bits, group_size, list(modules_to_not_convert)
        self.output_bits = output_bits or bits


def parse_quantization_config(quantization_config) -> QuantizationSettings:
    """QuantoConfig (or its dict) -> settings; ValueError naming the bad field."""
    if quantization_config is None:
        raise ValueError("quantization_config is None")
    if isinstance(quantization_config, dict):
        fields = dict(quantization_config)
    elif hasattr(quantization_config, "to_dict"):
        fields = quantization_config.to_dict()
        for extra in ("group_size", "output_layer_weights"):
            if hasattr(quantization_config, extra):
                fields[extra] = getattr(quantization_config, extra)
    else:
        raise ValueError(f"quantization_config must be a transformers QuantoConfig or a dict, got "
                         f"{type(quantization_config).__name__}")
    method = fields.get("quant_method", "quanto")
    method = getattr(method, "value", method)  # transformers' QuantizationMethod enum
    if method != "quanto":
        raise ValueError(f"quantization_config.quant_method={method!r} is not supported: use "
                         "transformers.QuantoConfig(weights='int8' | 'int4')")
    weights = fields.get("weights", "int8")
    if weights not in BITS:
        raise ValueError(f"quantization_config.weights={weights!r} is not supported: expected one of "
                         f"{sorted(BITS)} (weight-only; float8 / int2 are not implemented)")
    if fields.get("activations") is not None:
        raise ValueError(f"quantization_config.activations={fields['activations']!r} is not supported: only "
                         "weight-only quantization (activations=None)")
    group_size = fields.get("group_size") or DEFAULT_GROUP_SIZE
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 32:
        raise ValueError(f"quantization_config.group_size={group_size!r}: expected a positive multiple of 32")
    # the output layer is the most rounding-sensitive one (llama.cpp's 4-bit presets keep it at 6-8 bits): with
    # int4 weights it is int8 unless output_layer_weights says otherwise (when it is converted at all)
    output = fields.get("output_layer_weights") or ("int8" if weights == "int4" else weights)
    if output not in BITS:
        raise ValueError(f"quantization_config.output_layer_weights={output!r} is not supported: expected one of "
                         f"{sorted(BITS)}")
    skip = fields.get("modules_to_not_convert")
    return QuantizationSettings(BITS[weights], group_size, ["lm_head"] if skip is None else skip, BITS[output])


def _named_linears(model):
    return [(name, cell) for name, cell in model.cells_and_names() if name and isinstance(cell, layers.Linear)]


def _skipped(name, patterns):
    return any(name == p or name.endswith("." + p) or name.startswith(p + ".") for p in patterns)


def _replace(model, name, new):
    """Puts `new` at `name` with parameter names "<name>.<param>" (compiled graphs need unique names)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, (nn.CellList, nn.SequentialCell)):
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    for pname, param in new.parameters_and_names():
        param.name = f"{name}.{pname}"


def _forget_compiled(model):
    from .generation.utils import forget_compiled_steps

    forget_compiled_steps(model)


def _quantized_cell(linear, bits, group_size, arrays):
    bias = linear.bias.asnumpy() if linear.bias is not None else None
    cell = QuantizedLinear(linear.in_features, linear.out_features, bias=bias is not None, bits=bits,
                           group_size=group_size, bias_dtype=linear.bias.dtype if bias is not None else ms.float32)
    cell.load_packed(arrays, bias)
    return cell


def _record(model, modules: dict, group_size, skip, weights=None):
    mark_fusable_projections(model)
    kinds = sorted(set(modules.values()))
    model.config.quantization_config = {
        "quant_method": QUANT_METHOD,
        "weights": kinds[0] if len(kinds) == 1 else ("mixed" if kinds else weights),
        "group_size": group_size,
        "modules_to_not_convert": list(skip),
        "modules": dict(sorted(modules.items())),
    }
    _forget_compiled(model)


def quantize_model(model, settings: QuantizationSettings):
    """Replaces the model's Linear cells by QuantizedLinear ones quantized from their float weights (in place)."""
    modules = {}
    try:
        output_layer = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        output_layer = None
    for name, linear in _named_linears(model):
        if _skipped(name, settings.modules_to_not_convert):
            continue
        bits = settings.output_bits if linear is output_layer else settings.bits
        if linear.in_features % settings.group_size:
            logger.info("%s: in_features %d is not a multiple of group_size %d, left in float", name,
                        linear.in_features, settings.group_size)
            continue
        arrays = quantize_numpy(linear.weight.asnumpy(), bits, settings.group_size)
        _replace(model, name, _quantized_cell(linear, bits, settings.group_size, arrays))
        modules[name] = f"int{bits}"
    if not modules:
        logger.warning("quantization_config: no Linear layer of %s was quantized", type(model).__name__)
    _record(model, modules, settings.group_size, settings.modules_to_not_convert, f"int{settings.bits}")
    return model


def keep_gguf_quantized(model, gguf_path, tied_output=None):
    """Replaces the Linear cells whose GGUF tensor is Q8_0 / Q4_0 / Q4_1 / Q4_K by QuantizedLinear cells holding
    those blocks. `tied_output`: (output layer name, embedding key) when the output layer is tied to the
    embedding."""
    from .weights.gguf_io import GGUFFile

    gguf = GGUFFile(gguf_path)
    prefix = model.base_model_prefix
    keys = {info.key for info in gguf.infos}
    modules, kept_types, other = {}, set(), set()
    for name, linear in _named_linears(model):
        key = tied_output[1] if tied_output and name == tied_output[0] else f"{name}.weight"
        # the checkpoint's key may lack (or have) the base model's prefix, as in _load_checkpoint
        for candidate in (key, key[len(prefix) + 1:] if prefix and key.startswith(prefix + ".") else None,
                          f"{prefix}.{key}" if prefix else None):
            if candidate in keys:
                key = candidate
                break
        packed = gguf.packed(key)
        if packed is None:
            other.add(str(gguf.qtype_of(key)))
            continue
        bits, arrays = packed
        kept_types.add(gguf.qtype_of(key))
        _replace(model, name, _quantized_cell(linear, bits, 32, arrays))
        modules[name] = f"int{bits}"
    logger.info("%s: kept %d Linear weights quantized (%s); left float: %s", gguf_path, len(modules),
                ", ".join(sorted(kept_types)) or "none", ", ".join(sorted(other)) or "none")
    _record(model, modules, 32, [])
    return model


def is_saved_quantized(config) -> bool:
    qc = getattr(config, "quantization_config", None)
    return isinstance(qc, dict) and qc.get("quant_method") == QUANT_METHOD


def prepare_quantized_checkpoint(model, config):
    """Before loading a checkpoint written by save_pretrained of a quantized model: puts an empty QuantizedLinear
    where config.quantization_config says, so the packed tensors load into it."""
    qc = config.quantization_config
    group_size = qc.get("group_size", DEFAULT_GROUP_SIZE)
    linears = dict(_named_linears(model))
    for name, weights in qc.get("modules", {}).items():
        if name not in linears or weights not in BITS:
            raise ValueError(f"quantization_config.modules[{name!r}] = {weights!r}: the model has no Linear layer "
                             f"{name!r} or the type is not one of {sorted(BITS)}")
        linear = linears[name]
        cell = QuantizedLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                               bits=BITS[weights], group_size=group_size,
                               bias_dtype=linear.bias.dtype if linear.bias is not None else ms.float32)
        _replace(model, name, cell)
    mark_fusable_projections(model)
    return model
