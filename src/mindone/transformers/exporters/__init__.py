"""Export for deployment: a model's forward as a MindIR or ONNX graph file (`mindspore.export`), next to its config,
its tokenizer / processor files and `export.json`, which names every graph input and output with its shape and dtype.

    from mindone.transformers.exporters import export
    export("path/to/model", "out_dir", task="text-classification", file_format="onnx", seq_len=128)

Command line: `mindone-transformers export --model PATH --task TASK --format mindir|onnx --output DIR`.
Tasks and graphs (docs/export.md has the details and how to run each file):

- feature-extraction, text-classification, token-classification, fill-mask, question-answering:
  `model.{mindir,onnx}`, inputs `input_ids`, `attention_mask` (and `token_type_ids` for models with segment ids).
- image-classification: `model.*`, input `pixel_values`.
- text-generation: `prefill.*` (`seq_len` tokens) and `decode.*` (one token), both one step of a static KV cache
  given as inputs and returned as outputs: inputs `input_ids`, `attention_mask` (B, cache_len), `position_ids`,
  `cache_position`, `past_key_values.{i}.key` / `.value` (B, kv_heads, cache_len, head_dim); outputs `logits` and
  `present.{i}.key` / `.value` (the cache with the step's keys written at `cache_position`).
- text2text-generation: `encoder.*` (`input_ids`, `attention_mask` -> `last_hidden_state`) and `decoder.*` (one
  token: `decoder_input_ids`, `encoder_hidden_states`, `encoder_attention_mask`, `cache_position` and the decoder's
  self-attention cache as above -> `logits`, `present.*`).

Exports always use MindSpore's own operators: never the native AOT kernels (`backend/native.py`), and for ONNX only
operators MindSpore's ONNX exporter converts (`backend.runtime.exporting`).
"""

import inspect
import json
import logging
import os
import re

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ("mindir", "onnx")
# task -> Auto class task (models/auto/modeling_auto.py)
TASKS = {
    "feature-extraction": "base",
    "text-classification": "sequence-classification",
    "token-classification": "token-classification",
    "fill-mask": "masked-lm",
    "question-answering": "question-answering",
    "image-classification": "image-classification",
    "text-generation": "causal-lm",
    "text2text-generation": "seq2seq-lm",
}
_OUTPUTS = {
    "feature-extraction": ("last_hidden_state",),
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "fill-mask": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "image-classification": ("logits",),
}
METADATA_FILE = "export.json"
_UNCONVERTED_OP = re.compile(r"Can not find key (\w+) in convert map")


class ExportError(RuntimeError):
    """A model/task/format combination the exporter cannot write (the message names the operator or axis)."""


def _spec(name, shape, dtype):
    return {"name": name, "shape": [None if d is None else int(d) for d in shape], "dtype": str(np.dtype(dtype))}


def _ms_dtype(name):
    import mindspore as ms

    return {"float32": ms.float32, "float16": ms.float16, "int64": ms.int64, "int32": ms.int32}[name]


def _placeholder(spec):
    """What `mindspore.export` traces with for one input: a dynamic-shape Tensor, or a concrete one (masks of ones,
    zeros elsewhere: values never change the traced graph)."""
    import mindspore as ms

    dtype = _ms_dtype(spec["dtype"])
    if any(d is None for d in spec["shape"]):
        return ms.Tensor(shape=spec["shape"], dtype=dtype)
    fill = np.ones if spec["name"].endswith("attention_mask") else np.zeros
    return ms.Tensor(fill(spec["shape"], spec["dtype"]))


def _float_dtype_name(model):
    import mindspore as ms

    dtype = model.dtype if hasattr(model, "dtype") else ms.float32
    name = {ms.float32: "float32", ms.float16: "float16"}.get(dtype)
    if name is None:
        raise ExportError(f"exporting {dtype} weights is not supported here (float32 or float16)")
    return name


def _load(model, task, dtype):
    """(model, tokenizer-or-processor-or-None) for a path / repo id, or (model, None) for a model object."""
    if not isinstance(model, (str, os.PathLike)):
        return model, None
    from ..models.auto import modeling_auto

    auto_cls = getattr(modeling_auto, modeling_auto.TASKS[TASKS[task]])
    loaded = auto_cls.from_pretrained(model, dtype=dtype or "float32")
    return loaded, _load_preprocessor(model, task)


# files whose presence says a local directory has a tokenizer / image processor of its own (transformers 5's
# AutoTokenizer otherwise builds an empty default one from the config, which would be copied as if it were real)
_PREPROCESSOR_FILES = {"image": ("preprocessor_config.json", "processor_config.json"),
                       "text": ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                                "sentencepiece.bpe.model", "tokenizer.model")}


def _load_preprocessor(path, task):
    import transformers

    kind = "image" if task == "image-classification" else "text"
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in _PREPROCESSOR_FILES[kind]):
        logger.info("no %s files in %s: none copied to the export", kind == "image" and "image processor" or
                    "tokenizer", path)
        return None
    loaders = ((transformers.AutoImageProcessor,) if task == "image-classification"
               else (transformers.AutoTokenizer,))
    for loader in loaders:
        try:
            return loader.from_pretrained(path)
        except (OSError, ValueError, KeyError) as e:
            logger.info("no %s in %s (%s): not copied to the export", loader.__name__, path, e)
    return None


def _text_inputs(model, batch, seq):
    specs = [_spec("input_ids", (batch, seq), np.int64), _spec("attention_mask", (batch, seq), np.int64)]
    params = inspect.signature(model.construct).parameters
    if "token_type_ids" in params and getattr(model.config, "type_vocab_size", 0):
        specs.append(_spec("token_type_ids", (batch, seq), np.int64))
    return specs


def _image_inputs(model, batch):
    config = model.config
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return [_spec("pixel_values", (batch, config.num_channels, height, width), _float_dtype_name(model))]


def _graphs(model, task, batch, seq, cache_len, dynamic):
    """[(file stem, Cell, input specs, output names)] for the task."""
    from .graphs import CausalLMStep, ImageGraph, Seq2SeqDecoderStep, Seq2SeqEncoder, TextGraph, TextGraphWithSegments

    if task in _OUTPUTS and task != "image-classification":
        inputs = _text_inputs(model, None if dynamic else batch, None if dynamic else seq)
        cls = TextGraphWithSegments if len(inputs) == 3 else TextGraph
        return [("model", cls(model, _OUTPUTS[task]), inputs, list(_OUTPUTS[task]))]
    if task == "image-classification":
        inputs = _image_inputs(model, None if dynamic else batch)
        return [("model", ImageGraph(model, _OUTPUTS[task]), inputs, list(_OUTPUTS[task]))]
    if dynamic:
        raise ExportError(f"dynamic axes are not supported for {task}: its steps read and write a static "
                          "KV cache of fixed shape (batch, kv_heads, cache_len, head_dim); export with fixed "
                          "--batch / --seq-len / --cache-len")
    from ..cache_utils import StaticCache

    dtype = _float_dtype_name(model)
    if task == "text2text-generation":
        encoder_inputs = [_spec("input_ids", (batch, seq), np.int64), _spec("attention_mask", (batch, seq), np.int64)]
        self_cache = _decoder_self_cache(model.config, cache_len, batch, _ms_dtype(dtype))
        hidden = model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size
        kv_shape = (batch, self_cache.num_kv_heads, cache_len, self_cache.head_dim)
        inputs = [_spec("decoder_input_ids", (batch, 1), np.int64),
                  _spec("encoder_hidden_states", (batch, seq, hidden), dtype),
                  _spec("encoder_attention_mask", (batch, seq), np.int64), _spec("cache_position", (1,), np.int64)]
        outputs = ["logits"]
        for i in range(len(self_cache)):
            inputs += [_spec(f"past_key_values.{i}.key", kv_shape, dtype),
                       _spec(f"past_key_values.{i}.value", kv_shape, dtype)]
            outputs += [f"present.{i}.key", f"present.{i}.value"]
        return [("encoder", Seq2SeqEncoder(model.get_encoder()), encoder_inputs, ["last_hidden_state"]),
                ("decoder", Seq2SeqDecoderStep(model, self_cache), inputs, outputs)]
    graphs = []
    for stem, length in (("prefill", seq), ("decode", 1)):
        cache = StaticCache(model.config, max_cache_len=cache_len, max_batch_size=batch, dtype=_ms_dtype(dtype))
        kv_shape = (batch, cache.num_kv_heads, cache_len, cache.head_dim)
        inputs = [_spec("input_ids", (batch, length), np.int64), _spec("attention_mask", (batch, cache_len), np.int64),
                  _spec("position_ids", (batch, length), np.int64), _spec("cache_position", (length,), np.int64)]
        outputs = ["logits"]
        for i in range(len(cache)):
            inputs += [_spec(f"past_key_values.{i}.key", kv_shape, dtype),
                       _spec(f"past_key_values.{i}.value", kv_shape, dtype)]
            outputs += [f"present.{i}.key", f"present.{i}.value"]
        graphs.append((stem, CausalLMStep(model, cache), inputs, outputs))
    return graphs


def _decoder_self_cache(config, cache_len, batch, dtype):
    """The decoder's self-attention StaticCache: layers / heads / head size of the decoder (T5: `num_decoder_layers`,
    `d_kv`; BART-like: `decoder_layers`, `decoder_attention_heads`)."""
    from ..cache_utils import StaticCache, _decoder_geometry

    layers, heads, head_dim = _decoder_geometry(config)
    cache = StaticCache(config, max_cache_len=cache_len)
    cache.num_layers = getattr(config, "num_decoder_layers", None) or layers
    cache.num_kv_heads = heads
    cache.head_dim = getattr(config, "d_kv", None) or head_dim
    cache._allocate(batch, dtype)
    return cache


def _output_specs(cell, inputs, names, task):
    """Shapes and dtypes of the graph's outputs, from one PyNative run on placeholder inputs. With dynamic inputs the
    outputs' batch axis (and sequence axis of per-token outputs) are None."""
    dynamic = any(d is None for spec in inputs for d in spec["shape"])
    concrete = [dict(spec, shape=[1 if d is None else d for d in spec["shape"]]) for spec in inputs]
    values = cell(*[_placeholder(spec) for spec in concrete])
    per_token = task not in ("text-classification", "image-classification")
    specs = []
    for name, value in zip(names, values):
        shape = list(value.shape)
        if dynamic:
            shape = [None if a == 0 or (a == 1 and per_token) else d for a, d in enumerate(shape)]
        specs.append(_spec(name, shape, _np_dtype(value.dtype)))
    return specs


def _np_dtype(ms_dtype):
    import mindspore as ms

    return {ms.float32: np.float32, ms.float16: np.float16, ms.int64: np.int64, ms.int32: np.int32}[ms_dtype]


def _export_graph(cell, inputs, path_stem, file_format, what):
    import mindspore as ms

    from ..backend import runtime

    placeholders = [_placeholder(spec) for spec in inputs]
    try:
        with runtime.exporting(file_format):
            ms.export(cell, *placeholders, file_name=path_stem, file_format=file_format.upper())
    except (RuntimeError, TypeError, ValueError) as e:
        text = str(e)
        missing = _UNCONVERTED_OP.search(text)
        if missing:
            raise ExportError(f"{what}: MindSpore's ONNX exporter cannot convert the operator {missing.group(1)} "
                              f"used by this model; export to MindIR (--format mindir) instead") from e
        if any(d is None for spec in inputs for d in spec["shape"]):
            axes = {spec["name"]: [a for a, d in enumerate(spec["shape"]) if d is None] for spec in inputs}
            raise ExportError(f"{what}: MindSpore could not export with dynamic axes {axes} to {file_format.upper()} "
                              f"({text.strip().splitlines()[0]}); export with fixed shapes") from e
        raise


def _name_onnx_io(path, inputs, outputs):
    """Gives the ONNX graph's inputs and outputs our names (MindSpore names outputs after their nodes, and a `*past`
    argument's inputs after the argument). Needs the `onnx` package; without it the names are left as written and
    `export.json` records them."""
    try:
        import onnx
    except ImportError:
        logger.info("the onnx package is not installed: %s keeps MindSpore's input/output names", path)
        return False
    graph_proto = onnx.load(path)
    graph = graph_proto.graph
    initializers = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in initializers]
    rename = {}
    for value, spec in zip(real_inputs, inputs):
        rename[value.name] = spec["name"]
    for value, spec in zip(graph.output, outputs):
        rename[value.name] = spec["name"]
    for value in list(real_inputs) + list(graph.output):
        value.name = rename[value.name]
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    onnx.save(graph_proto, path)
    return True


def _export_graphs(model, output, task, file_format, batch_size, seq_len, cache_len, dynamic):
    """Traces and writes the task's graphs; {stem: its export.json entry}."""
    suffix = {"mindir": ".mindir", "onnx": ".onnx"}[file_format]
    graphs = {}
    for stem, cell, inputs, output_names in _graphs(model, task, batch_size, seq_len, cache_len, dynamic):
        what = f"{type(model).__name__} ({task}, {stem})"
        try:
            outputs = _output_specs(cell, inputs, output_names, task)
        except ValueError as e:
            if "cache_position" not in str(e):
                raise
            # a decoder whose self-attention appends to its cache instead of writing the given slots
            raise ExportError(f"{what}: the model's attention does not write its KV cache at cache_position, which "
                              f"the exported step needs ({e})") from e
        _export_graph(cell, inputs, os.path.join(output, stem), file_format, what)
        entry = {"file": stem + suffix, "inputs": inputs, "outputs": outputs}
        if file_format == "onnx":
            if not _name_onnx_io(os.path.join(output, stem + suffix), inputs, outputs):
                entry["onnx_names_unchanged"] = True
        graphs[stem] = entry
    return graphs


def export(model, output, task, file_format="mindir", seq_len=16, batch_size=1, cache_len=None, dtype=None,
           dynamic=False, preprocessor=None):
    """Writes the task's graph file(s), the config, the tokenizer / processor files and `export.json` to `output`.

    Args:
        model: a model of this package, or a directory / hub repo id loaded with the task's Auto class.
        output: directory to write (created).
        task: one of `TASKS`.
        file_format: "mindir" or "onnx".
        seq_len: sequence length of text inputs (text-generation: of the prefill step; text2text-generation: of
            the encoder input).
        batch_size: batch size of the inputs.
        cache_len: generation tasks: KV cache slots (text-generation: prompt + generated tokens; text2text-generation:
            generated tokens); default `seq_len + 32`.
        dtype: when `model` is a path: "float32" (default) or "float16".
        dynamic: batch and sequence axes of variable size (encoder and image tasks only; MindIR only).
        preprocessor: tokenizer / processor to save beside the graph (loaded from `model` when it is a path).

    Returns the metadata written to `export.json`. Raises `ExportError` naming the operator or axis that the chosen
    format cannot express.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not exportable; choose one of {', '.join(TASKS)}")
    file_format = file_format.lower()
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {FORMATS}, got {file_format!r}")
    if dynamic and file_format == "onnx":
        raise ExportError("dynamic axes are not supported for ONNX: MindSpore 2.10's ONNX exporter writes static "
                          "shapes only; export MindIR with dynamic axes, or ONNX with fixed --batch / --seq-len")
    if task in ("text-generation", "text2text-generation") and file_format == "onnx":
        raise ExportError(f"{task}: MindSpore 2.10's ONNX exporter cannot convert the operator Assign, with which "
                          f"the decoding steps write their static KV cache in place; export to MindIR "
                          f"(--format mindir) instead")
    model, loaded_preprocessor = _load(model, task, dtype)
    preprocessor = preprocessor if preprocessor is not None else loaded_preprocessor
    if task == "text-generation" and not getattr(model, "_supports_static_cache", False):
        raise ExportError(f"text-generation: {type(model).__name__} does not decode with a static KV cache "
                          f"(_supports_static_cache is False), which the exported steps carry")
    model.set_train(False)
    cache_len = int(cache_len or seq_len + 32)
    if task == "text-generation" and cache_len < seq_len + 1:
        raise ValueError(f"cache_len ({cache_len}) must exceed seq_len ({seq_len}): the decode step writes after "
                         f"the prompt")
    os.makedirs(output, exist_ok=True)
    # MindSpore prefixes the parameters' names with the wrapper's attribute ("model.model.embed_tokens.weight") when
    # it compiles the wrapper; the caller's model gets its names back afterwards
    params = list(model.get_parameters())
    names = [p.name for p in params]
    try:
        graphs = _export_graphs(model, output, task, file_format, batch_size, seq_len, cache_len, dynamic)
    finally:
        for param, name in zip(params, names):
            param.name = name
    model.config.save_pretrained(output)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and task in ("text-generation", "text2text-generation"):
        generation_config.save_pretrained(output)
    if preprocessor is not None:
        preprocessor.save_pretrained(output)
    metadata = {"format": file_format, "task": task, "model_class": type(model).__name__,
                "model_type": model.config.model_type, "dtype": _float_dtype_name(model), "batch_size": batch_size,
                "seq_len": seq_len, "dynamic": bool(dynamic), "mindspore_version": _mindspore_version(),
                "graphs": graphs}
    if task in ("text-generation", "text2text-generation"):
        metadata["cache_len"] = cache_len
    with open(os.path.join(output, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    logger.debug("exported %s (%s) to %s: %s", type(model).__name__, task, output,
                ", ".join(g["file"] for g in graphs.values()))
    return metadata


def _mindspore_version():
    import mindspore as ms

    return ms.__version__


__all__ = ["export", "ExportError", "TASKS", "FORMATS"]
