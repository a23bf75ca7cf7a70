"""`PreTrainedModel`: HF's loading, saving and bookkeeping API for MindSpore Cells.

`from_pretrained` builds the model directly in the target dtype without allocating or initialising its parameters
(`no_init_parameters`), then streams checkpoint tensors one at a time into them, so peak memory stays near one copy of
the weights. Parameter names equal HF checkpoint keys; the only key translation is the base-model prefix
(`model.`, `transformer.`, ...) when a head model loads a base checkpoint or the reverse, plus HF's own legacy
renames (`gamma`/`beta`) and a model's optional `_fix_checkpoint_key` hook.
"""

import contextlib
import functools
import inspect
import json
import logging
import os
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn
from mindspore.common.initializer import Normal, One, Zero, initializer
from mindspore.nn.utils import no_init_parameters

from . import tensor_interop, weights
from .backend import layers
from .backend import runtime
from . import quantizers
from .peft.mixin import PeftAdapterMixin, adapter_paths

logger = logging.getLogger(__name__)

_STR_TO_DTYPE = {
    "float32": ms.float32, "fp32": ms.float32, "float": ms.float32,
    "float16": ms.float16, "fp16": ms.float16, "half": ms.float16,
    "bfloat16": ms.bfloat16, "bf16": ms.bfloat16,
    "float64": ms.float64,
}
_MS_TO_NP = {ms.float32: np.float32, ms.float16: np.float16, ms.float64: np.float64}
_DTYPE_TO_STR = {ms.float32: "float32", ms.float16: "float16", ms.bfloat16: "bfloat16", ms.float64: "float64"}

# True while `from_pretrained` builds a model: `post_init` then skips random initialisation.
_LOADING = [False]


@contextlib.contextmanager
def _loading_scope():
    _LOADING.append(True)
    try:
        yield
    finally:
        _LOADING.pop()


def to_ms_dtype(dtype):
    """Accepts MindSpore dtypes, numpy dtypes, torch dtypes or their names ("float16", "torch.bfloat16"), or None."""
    if dtype is None or isinstance(dtype, ms.dtype.Type):
        return dtype
    if tensor_interop.is_torch_object(dtype, "dtype"):
        dtype = str(dtype)
    if isinstance(dtype, str):
        key = dtype.replace("torch.", "").replace("mindspore.", "").lower()
        if key in _STR_TO_DTYPE:
            return _STR_TO_DTYPE[key]
    else:
        try:
            return _STR_TO_DTYPE[np.dtype(dtype).name]
        except (TypeError, KeyError):
            pass
    raise ValueError(f"dtype {dtype!r} is not supported; use 'auto', 'float32', 'float16' or 'bfloat16'")


def _is_dtype(value) -> bool:
    try:
        to_ms_dtype(value)
    except (ValueError, TypeError):
        return False
    return True


def resolve_load_dtype(dtype, config, files, fmt):
    """The dtype to build the model in, following HF's rules for `dtype=` (default "auto").

    bfloat16 has no compute kernels on MindSpore's CPU backend (matmul, softmax, norms all fail), so on CPU a bf16
    request or a bf16 checkpoint under "auto" becomes float32 with a warning.
    """
    requested = dtype
    if dtype is None or dtype == "auto":
        found = getattr(config, "dtype", None) if dtype == "auto" or dtype is None else None
        if found is None:
            found = weights.checkpoint_dtype(files, fmt)
        if found is None or str(found).replace("torch.", "") not in _STR_TO_DTYPE:
            found = "float32"
        dtype = found
    ms_dtype = to_ms_dtype(str(dtype) if not isinstance(dtype, ms.dtype.Type) else dtype)
    if ms_dtype == ms.bfloat16 and runtime.is_cpu():
        logger.warning(
            "bfloat16 was %s, but MindSpore's CPU backend has no bfloat16 compute kernels (matmul, softmax, norms). "
            "Loading in float32 instead (exact: every bfloat16 value is a float32 value). Pass dtype='float16' for "
            "half the memory (slower than float32 on CPU).",
            "requested" if requested not in (None, "auto") else "found in the checkpoint",
        )
        ms_dtype = ms.float32
    if ms_dtype == ms.float16 and runtime.is_cpu():
        logger.info("float16 on MindSpore's CPU backend runs matmuls through casts and is ~4x slower than float32.")
    return ms_dtype


def _undo_recompute(cell):
    """Reverses `Cell.recompute()`: PyNative replays through `_recompute_cell`; graph mode recomputes the nodes of
    cells whose scope starts with "recompute_" (children are marked with the `output_recompute` flag)."""
    for sub in [cell, *(c for _, c in cell.cells_and_names() if c is not cell)]:
        object.__setattr__(sub, "_recompute_cell", None)
        object.__setattr__(sub, "_has_config_recompute", False)
        scope = getattr(sub, "_scope", None)
        if isinstance(scope, str) and scope.startswith("recompute_"):
            object.__setattr__(sub, "_scope", scope[len("recompute_"):] or None)
        getattr(sub, "_func_graph_flags", {}).pop("output_recompute", None)
        sub.__dict__.pop("output_recompute", None)


class PreTrainedModel(PeftAdapterMixin, nn.Cell):
    """Base class of every model: HF's `from_pretrained` / `save_pretrained` and helpers on a MindSpore Cell."""

    config_class = None
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    # {target parameter: source parameter} shared when config.tie_word_embeddings is true (HF 5 format)
    _tied_weights_keys = None
    _keys_to_ignore_on_load_missing = None
    _keys_to_ignore_on_load_unexpected = None
    _keys_to_ignore_on_save = None

    def __init__(self, config, *args, **kwargs):
        super().__init__()
        self.config = config
        self.name_or_path = getattr(config, "name_or_path", "")
        self.generation_config = None
        if self.can_generate():
            from transformers import GenerationConfig

            self.generation_config = GenerationConfig.from_model_config(config)
        self.gradient_checkpointing = False
        # tokenizers then decode this model's output tensors (transformers is imported by now: the config is its)
        tensor_interop.install_tokenizer_support()

    # ------------------------------------------------------------------------------------------------------------
    # calling with numpy / lists, like HF with torch tensors (tensor_interop.py)
    # ------------------------------------------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        names = _construct_arg_names(type(self))
        args = tuple(tensor_interop.to_model_input(names[i] if i < len(names) else f"argument {i}", a)
                     for i, a in enumerate(args))
        kwargs = {k: tensor_interop.to_model_input(k, v) for k, v in kwargs.items()}
        if "cache" in kwargs and "cache" not in _construct_params(type(self)):
            # transformers >= 5.23 names the cache argument `cache` (`past_key_values` until 5.40); ours keep HF's
            # older name, so both spellings work
            if kwargs.get("past_key_values") is not None:
                raise ValueError("You cannot specify both `cache` and `past_key_values`. Use `cache` only.")
            kwargs["past_key_values"] = kwargs.pop("cache")
        if tensor_interop.ids_already_checked():
            return super().__call__(*args, **kwargs)
        # a bad id would otherwise wrap (negative) or fail in the Gather kernel with a C++ stack; checked here, on
        # the host where the user's call enters (under mindspore.jit this method is not run: the graph calls
        # `construct`), once: nested model calls skip it
        vocab_size = None
        for name in ("input_ids", "decoder_input_ids"):
            ids = kwargs.get(name)
            if ids is None and name in names and names.index(name) < len(args):
                ids = args[names.index(name)]
            if ids is not None:
                vocab_size = vocab_size or tensor_interop.embedding_rows(self)
                tensor_interop.check_token_ids(name, ids, vocab_size)
        if vocab_size is None:
            return super().__call__(*args, **kwargs)
        with tensor_interop.ids_checked():
            return super().__call__(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # initialisation and tying
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "prepare_inputs_for_generation") or "ForCausalLM" in cls.__name__ \
            or "ForConditionalGeneration" in cls.__name__

    def post_init(self):
        """Called at the end of every model's __init__: initialise weights (unless loading) and tie them."""
        if not _LOADING[-1]:
            self.init_weights()
        self.tie_weights()

    def init_weights(self):
        for _, cell in self.cells_and_names():
            self._init_weights(cell)

    def _init_weights(self, cell):
        """HF's default scheme: normal(0, initializer_range) for Linear/Embedding, zero bias, unit norms."""
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(cell, layers.Linear):
            init_parameter(cell.weight, Normal(std))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, layers.Embedding):
            init_parameter(cell.weight, Normal(std))
            if cell.padding_idx is not None:
                data = cell.weight.asnumpy().copy()
                data[cell.padding_idx] = 0
                cell.weight.set_data(Tensor(data))
        elif isinstance(cell, layers.LayerNorm):
            if cell.weight is not None:
                init_parameter(cell.weight, One())
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())

    def _tie_word_embeddings_enabled(self) -> bool:
        text_config = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        return bool(getattr(text_config, "tie_word_embeddings", False))

    def _tied_pairs(self):
        if not self._tied_weights_keys or not self._tie_word_embeddings_enabled():
            return {}
        # a quantized output layer (quantizers.py) holds its own packed copy of the embedding: no longer tied
        return {target: source for target, source in dict(self._tied_weights_keys).items()
                if not hasattr(self.get_submodule(target.rpartition(".")[0]), "weight_packed")}

    def tie_weights(self):
        """Makes each tied target the *same* Parameter as its source (one storage, one gradient)."""
        for target, source in self._tied_pairs().items():
            owner_path, _, attr = target.rpartition(".")
            src_owner_path, _, src_attr = source.rpartition(".")
            owner = self.get_submodule(owner_path)
            src_param = getattr(self.get_submodule(src_owner_path), src_attr)
            setattr(owner, attr, src_param)

    def _packed_owner(self, key: str):
        """The QuantizedLinear a checkpoint key's weight_scale / weight_min belongs to, else None (other keys are not
        looked up: loading walks every key)."""
        if not key.endswith((".weight_scale", ".weight_min")):
            return None
        owner = self.get_submodule(key.rsplit(".", 1)[0])
        return owner if hasattr(owner, "set_packed") else None

    def get_submodule(self, path: str):
        cell = self
        for part in filter(None, path.split(".")):
            # a CellList's or CellDict's items are attributes named "0", "1", ...; other indexable holders by index
            named = part in getattr(cell, "_cells", {})
            cell = cell[int(part)] if part.isdigit() and not named else getattr(cell, part)
        return cell

    # ------------------------------------------------------------------------------------------------------------
    # small HF helpers
    # ------------------------------------------------------------------------------------------------------------

    @property
    def base_model(self):
        return getattr(self, self.base_model_prefix, self)

    @property
    def dtype(self):
        for p in self.get_parameters():
            if p.dtype in (ms.float32, ms.float16, ms.bfloat16, ms.float64):
                return p.dtype
        return ms.float32

    def get_input_embeddings(self):
        base = self.base_model
        if base is not self:
            return base.get_input_embeddings()
        raise NotImplementedError(f"{type(self).__name__} does not define get_input_embeddings")

    def set_input_embeddings(self, value):
        base = self.base_model
        if base is not self:
            return base.set_input_embeddings(value)
        raise NotImplementedError(f"{type(self).__name__} does not define set_input_embeddings")

    def get_output_embeddings(self):
        return getattr(self, "lm_head", None)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        # parameters counted otherwise than by their size: embedding tables (0 when excluded), and a weight-only
        # quantized Linear's weight as its logical elements (out x in, as HF counts a 4-bit weight), not its packed
        # bytes, with its scales / minimums not counted
        counts = {}
        for _, cell in self.cells_and_names():
            if exclude_embeddings and isinstance(cell, layers.Embedding):
                counts[id(cell.weight)] = 0
            packed = getattr(cell, "weight_packed", None)
            if packed is not None and hasattr(cell, "in_features"):
                counts[id(packed)] = cell.out_features * cell.in_features
                for name in ("weight_scale", "weight_min"):
                    if getattr(cell, name, None) is not None:
                        counts[id(getattr(cell, name))] = 0
        return sum(counts.get(id(p), int(np.prod(p.shape))) for p in self.get_parameters(expand=True)
                   if p.requires_grad or not only_trainable)

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None):
        """Grows or shrinks the input (and tied/untied output) embeddings; new rows are initialised like HF
        (normal(0, initializer_range)); returns the input Embedding."""
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        if new_num_tokens is None:
            new_num_tokens = old.num_embeddings
        if pad_to_multiple_of is not None:
            new_num_tokens = ((new_num_tokens + pad_to_multiple_of - 1) // pad_to_multiple_of) * pad_to_multiple_of
        std = getattr(self.config, "initializer_range", 0.02)

        def resized(param):
            data = param.asnumpy()
            fresh = np.random.default_rng().normal(0.0, std, (new_num_tokens,) + data.shape[1:]).astype(data.dtype)
            n = min(new_num_tokens, data.shape[0])
            fresh[:n] = data[:n]
            return Parameter(Tensor(fresh), name=param.name, requires_grad=param.requires_grad)

        old.weight = resized(old.weight)
        old.num_embeddings = new_num_tokens
        output = self.get_output_embeddings()
        if output is not None:
            if self._tied_pairs():
                self.tie_weights()
            else:
                output.weight = resized(output.weight)
            output.out_features = new_num_tokens
        self.config.vocab_size = new_num_tokens
        if hasattr(self, "vocab_size"):
            self.vocab_size = new_num_tokens
        return old

    def train(self, mode: bool = True):
        self.set_train(mode)
        return self

    def eval(self):
        self.set_train(False)
        return self

    def to(self, *args, **kwargs):
        """torch's `module.to`: `to(dtype)`, `to(device)`, `to(device, dtype)`, `to(device=..., dtype=...)`,
        `to(tensor)`. Floating parameters are cast to `dtype` in place. A model lives from creation on the device
        MindSpore runs on, so `device` ("cpu", "cuda", "npu", MindSpore's "CPU"/"GPU"/"Ascend", a torch.device)
        must name that device (a no-op); another raises, saying to call `mindspore.set_device` before loading.
        `non_blocking` / `copy` are accepted and ignored."""
        kwargs.pop("non_blocking", None)
        kwargs.pop("copy", None)
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments: {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, (Tensor, Parameter)):
                dtype = arg.dtype
            elif _is_dtype(arg):
                dtype = arg
            else:
                device = arg
        if device is not None:
            tensor_interop.check_device(device)
        if dtype is None:
            return self
        target = to_ms_dtype(dtype)
        for p in self.get_parameters():
            if p.dtype in (ms.float32, ms.float16, ms.bfloat16, ms.float64) and p.dtype != target:
                p.set_dtype(target)
        return self

    def cpu(self):
        return self.to("cpu")

    def half(self):
        return self.to(ms.float16)

    def float(self):
        return self.to(ms.float32)

    @property
    def device(self):
        """The device the model runs on, spelt like torch: "cpu" (a str with torch.device's `.type`/`.index`)."""
        return tensor_interop.current_device()

    def parameters(self, recurse: bool = True):
        """Yields the parameters, each once (a tied one under its first name), like torch; same as
        `get_parameters()`."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Yields (HF checkpoint key, Parameter) like torch; a tied parameter once, under its first name unless
        `remove_duplicate=False`."""
        seen = set()
        for name, param in self.named_parameters_dict().items():
            if not recurse and "." in name:
                continue
            if remove_duplicate:
                if id(param) in seen:
                    continue
                seen.add(id(param))
            yield (f"{prefix}.{name}" if prefix else name), param

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (each tied parameter once) and, with `return_buffers`, the Cell buffers."""
        tensors = list(self.parameters())
        if return_buffers:
            tensors += [b for b in self.buffers() if b is not None]
        return sum(int(np.prod(t.shape)) * t.itemsize for t in tensors)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        """Recomputes each decoder/encoder layer's activations in the backward pass (MindSpore recompute).

        In training, a recomputed layer ignores the KV cache (`use_cache=False` with a warning, as in HF)."""
        if not self.supports_gradient_checkpointing:
            raise ValueError(f"{type(self).__name__} does not support gradient checkpointing.")
        for _, cell in self.cells_and_names():
            if getattr(cell, "_is_checkpointing_layer", False) and getattr(cell, "_recompute_cell", None) is None:
                cell.recompute()
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self):
        """Turns recompute off again (MindSpore has no `recompute(False)`: its markers are removed by hand)."""
        for _, cell in self.cells_and_names():
            if getattr(cell, "_is_checkpointing_layer", False):
                _undo_recompute(cell)
        self.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.gradient_checkpointing

    # ------------------------------------------------------------------------------------------------------------
    # state dict
    # ------------------------------------------------------------------------------------------------------------

    def named_parameters_dict(self):
        """{HF key: Parameter}; a tied parameter appears under every name it has (like torch's state_dict)."""
        out = {}
        for prefix, cell in self.cells_and_names():
            for name, param in cell._params.items():
                if param is not None:
                    out[f"{prefix}.{name}" if prefix else name] = param
        return out

    def state_dict(self):
        """{HF key: numpy array} without the tied copies (as HF saves them)."""
        params = self.named_parameters_dict()
        for target in self._tied_pairs():
            params.pop(target, None)
        return {k: p.asnumpy() for k, p in params.items()}

    # ------------------------------------------------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def _fix_checkpoint_key(cls, key: str) -> str:
        """HF's legacy renames; models override to add their own (then call super)."""
        if key.endswith(".gamma"):
            return key[: -len(".gamma")] + ".weight"
        if key.endswith(".beta"):
            return key[: -len(".beta")] + ".bias"
        return weights.rename_legacy_key(key)

    def _convert_checkpoint(self, stream):
        """The (key, numpy array) checkpoint stream as this model's parameters; models whose checkpoints store a
        parameter in pieces (MoE experts) override it. The reverse is `_revert_checkpoint`."""
        return stream

    def _revert_checkpoint(self, state_dict):
        """{key: numpy array} in the layout HF's save_pretrained writes (identity unless `_convert_checkpoint` is)."""
        return state_dict

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, cache_dir=None,
                        force_download=False, local_files_only=False, token=None, revision=None, subfolder="",
                        dtype=None, torch_dtype=None, gguf_file=None, output_loading_info=False,
                        ignore_mismatched_sizes=False, **kwargs):
        """Instantiates a model from a local directory or a hub repo id (resolved through the HF cache).

        Args:
            pretrained_model_name_or_path: directory with config.json and weights, or a hub repo id.
            config: a `transformers` config to use instead of the one stored with the weights.
            dtype: "auto" (default, HF 5: the config's / checkpoint's dtype), "float32", "float16", "bfloat16",
                or a MindSpore dtype. bfloat16 becomes float32 on CPU (see `resolve_load_dtype`).
            gguf_file: name of a GGUF file in the directory / repo; weights are dequantised to dense unless
                `keep_quantized`.
            keep_quantized: with `gguf_file`, Linear weights stored as Q8_0 / Q4_0 / Q4_1 / Q4_K blocks stay packed
                (`QuantizedLinear`, same values as the dense load); see docs/quantization.md.
            quantization_config: `transformers.QuantoConfig(weights="int8" | "int4")` (or its dict; optional
                `group_size`, default 32): weight-only quantization of the Linear layers after loading, except
                `modules_to_not_convert` (default ["lm_head"]). A directory saved from a quantized model reloads
                quantized without it.
            subfolder, revision, cache_dir, local_files_only, token: as in HF.
            output_loading_info: also return {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}.
            ignore_mismatched_sizes: re-initialise parameters whose checkpoint shape differs instead of failing.
            adapter_name, adapter_kwargs: when the path holds a LoRA adapter (adapter_config.json), the base model
                it names (or the model beside it) is loaded and the adapter attached under this name, as in HF.
            kwargs: config attribute overrides (e.g. `num_labels=3`).
        """
        for unused in ("device_map", "low_cpu_mem_usage", "attn_implementation", "trust_remote_code",
                       "use_safetensors", "weights_only", "_fast_init", "device"):
            kwargs.pop(unused, None)
        if torch_dtype is not None and dtype is None:
            dtype = torch_dtype
        if dtype is None:
            dtype = "auto"
        path = os.fspath(pretrained_model_name_or_path)
        hub_kwargs = dict(cache_dir=cache_dir, revision=revision, local_files_only=local_files_only, token=token)
        adapter_name = kwargs.pop("adapter_name", "default")
        adapter_kwargs = kwargs.pop("adapter_kwargs", None) or {}
        quantization_config = kwargs.pop("quantization_config", None)
        keep_quantized = kwargs.pop("keep_quantized", False)
        quantization = None
        if quantization_config is not None:
            quantization = quantizers.parse_quantization_config(quantization_config)
        if keep_quantized and not gguf_file:
            raise ValueError("keep_quantized=True needs gguf_file= (it keeps a GGUF file's quantized blocks)")
        if keep_quantized and quantization is not None:
            raise ValueError("pass either keep_quantized=True (GGUF blocks as stored) or quantization_config, not both")
        adapter_path, base_path = adapter_paths(path, **hub_kwargs) if not gguf_file else (None, path)
        if adapter_path is not None:
            model = cls.from_pretrained(base_path, *model_args, config=config, dtype=dtype, subfolder=subfolder,
                                        output_loading_info=output_loading_info,
                                        ignore_mismatched_sizes=ignore_mismatched_sizes, **hub_kwargs, **kwargs)
            base_model = model[0] if output_loading_info else model
            base_model.load_adapter(adapter_path, adapter_name=adapter_name, **adapter_kwargs)
            return model

        if config is None:
            config, kwargs = cls._load_config(path, subfolder=subfolder, gguf_file=gguf_file, kwargs=kwargs,
                                              **hub_kwargs)
        else:
            for key, value in list(kwargs.items()):
                if hasattr(config, key):
                    setattr(config, key, kwargs.pop(key))
        # what is neither a config attribute nor a hub option goes to the model's __init__, as in HF
        # (e.g. ViTModel.from_pretrained(path, add_pooling_layer=False))
        init_params = inspect.signature(cls.__init__).parameters
        model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in init_params and k not in ("self", "config")}
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained got unexpected keyword arguments: {sorted(kwargs)}")
        config.name_or_path = path

        files, fmt = weights.resolve_checkpoint_files(path, subfolder=subfolder, gguf_file=gguf_file, **hub_kwargs)
        ms_dtype = resolve_load_dtype(dtype, config, files, fmt)
        config.dtype = _DTYPE_TO_STR.get(ms_dtype, "float32")

        saved_quantized = quantizers.is_saved_quantized(config)
        if saved_quantized and (quantization is not None or keep_quantized):
            raise ValueError(f"{path} holds an already quantized model (config.json quantization_config); load it "
                             "without quantization_config / keep_quantized")
        with no_init_parameters(), layers.dtype_scope(ms_dtype), _loading_scope():
            model = cls(config, *model_args, **model_kwargs)
            if saved_quantized:
                quantizers.prepare_quantized_checkpoint(model, config)
        tied_output = next(((t.rpartition(".")[0], s) for t, s in model._tied_pairs().items()), None)
        info = model._load_checkpoint(files, fmt, ignore_mismatched_sizes=ignore_mismatched_sizes)
        model.name_or_path = path
        if quantization is not None:
            quantizers.quantize_model(model, quantization)
        elif keep_quantized:
            quantizers.keep_gguf_quantized(model, files[0], tied_output=tied_output)

        if model.can_generate():
            model.generation_config = _load_generation_config(path, subfolder, config, **hub_kwargs)
        model.set_train(False)
        if output_loading_info:
            return model, info
        return model

    @classmethod
    def _load_config(cls, path, subfolder, gguf_file, kwargs, **hub_kwargs):
        if gguf_file:
            return cls._gguf_config(path, subfolder, gguf_file, kwargs, **hub_kwargs)
        config_cls = cls.config_class
        if config_cls is None:
            from transformers import AutoConfig as config_cls
        try:
            config, unused = config_cls.from_pretrained(path, subfolder=subfolder, return_unused_kwargs=True,
                                                        **hub_kwargs, **kwargs)
        except OSError as e:
            raise OSError(f"Could not load a config for {cls.__name__} from {path!r} "
                          f"(subfolder={subfolder!r}): {e}") from e
        return config, unused

    @classmethod
    def _gguf_config(cls, path, subfolder, gguf_file, kwargs, **hub_kwargs):
        """The config a GGUF file's metadata states, read by our own header parser (transformers' reader parses the
        whole tokenizer table and takes ~10x longer)."""
        from transformers import AutoConfig

        files, _ = weights.resolve_checkpoint_files(path, subfolder=subfolder, gguf_file=gguf_file, **hub_kwargs)
        summary, _ = weights.load_gguf(files[0])
        values = {k: v for k, v in summary["config"].items() if k != "model_type"}
        config = AutoConfig.for_model(summary["model_type"], **values)
        unused = {}
        for key, value in kwargs.items():
            if hasattr(config, key):
                setattr(config, key, value)
            else:
                unused[key] = value
        return config, unused

    def _load_checkpoint(self, files, fmt, ignore_mismatched_sizes=False):
        """Streams tensors into the (uninitialised) parameters; returns HF's loading-info dict.

        Raises before returning anything when the checkpoint is unreadable or a shape does not match (unless
        `ignore_mismatched_sizes`), so a half-loaded model never reaches the caller.
        """
        params = self.named_parameters_dict()
        tied = self._tied_pairs()
        prefix = self.base_model_prefix
        model_has_prefix = bool(prefix) and any(k.startswith(prefix + ".") for k in params)
        loaded, unexpected, mismatched, head_only = set(), [], [], []

        def names_a_parameter(key):
            return key in params or (bool(prefix) and (f"{prefix}.{key}" in params or (
                key.startswith(prefix + ".") and key[len(prefix) + 1:] in params)))

        for raw_key, array in self._convert_checkpoint(weights.iter_state_dict(files, fmt)):
            # a key that already names a parameter is never renamed (a parameter may be called `beta` or `gamma`)
            key = raw_key if names_a_parameter(raw_key) else self._fix_checkpoint_key(raw_key)
            if key not in params and prefix:
                if model_has_prefix and f"{prefix}.{key}" in params:
                    key = f"{prefix}.{key}"
                elif not model_has_prefix and key.startswith(prefix + "."):
                    key = key[len(prefix) + 1:]
                elif not model_has_prefix:
                    # a head's weight (lm_head, classifier) seen while loading the bare base model: expected
                    head_only.append(raw_key)
                    continue
            if key in tied:
                loaded.add(key)  # HF ties after loading: the source's values win
                continue
            if key not in params:
                unexpected.append(raw_key)
                continue
            param = params[key]
            if tuple(array.shape) != tuple(param.shape):
                if ignore_mismatched_sizes:
                    mismatched.append((key, tuple(array.shape), tuple(param.shape)))
                    continue
                files_desc = ", ".join(os.path.basename(f) for f in files)
                raise ValueError(f"{key}: checkpoint shape {tuple(array.shape)} != model shape {tuple(param.shape)} "
                                 f"(checkpoint {files_desc}; pass ignore_mismatched_sizes=True to re-initialise it)")
            owner = self._packed_owner(key)
            if owner is not None:
                owner.set_packed(key.rsplit(".", 1)[1], array)  # a packed layer's float16 scales stay float16
            else:
                _assign(param, array)
            loaded.add(key)

        missing = [k for k in params if k not in loaded and k not in tied]
        missing = _drop_ignored(missing, self._keys_to_ignore_on_load_missing)
        unexpected = _drop_ignored(unexpected, self._keys_to_ignore_on_load_unexpected)
        self._initialize_missing(missing + [m[0] for m in mismatched], params)
        self.tie_weights()

        name = type(self).__name__
        if head_only:
            logger.info("%s: checkpoint weights not used by the base model: %s", name, head_only)
        if unexpected:
            logger.warning("Some weights of the checkpoint were not used when initializing %s: %s", name, unexpected)
        if missing:
            logger.warning("Some weights of %s were not initialized from the model checkpoint and are newly "
                           "initialized: %s\nYou should probably TRAIN this model on a down-stream task.", name, missing)
        if mismatched:
            detail = "\n".join(f"- {k}: found shape {a} in the checkpoint and {b} in the model instantiated"
                               for k, a, b in mismatched)
            logger.warning("Some weights of %s were newly initialized because the shapes did not match:\n%s", name,
                           detail)
        return {"missing_keys": missing, "unexpected_keys": unexpected + head_only,
                "mismatched_keys": mismatched, "error_msgs": []}

    def _initialize_missing(self, keys, params):
        """Runs the model's `_init_weights` on the cells that own still-uninitialised parameters."""
        if not keys:
            return
        owners = {k.rpartition(".")[0] for k in keys}
        for cell_name, cell in self.cells_and_names():
            if cell_name in owners:
                self._init_weights(cell)
        for k in keys:
            if params[k].has_init:
                params[k].init_data()

    # ------------------------------------------------------------------------------------------------------------
    # saving
    # ------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, max_shard_size="5GB", safe_serialization=True, state_dict=None,
                        is_main_process=True, **kwargs):
        """Writes config.json, generation_config.json and safetensors weights (`{"format": "pt"}`) that torch
        `transformers` loads; shards above `max_shard_size` with an index. With adapters attached, writes only the
        active adapter (adapter_config.json + adapter_model.safetensors in peft's format), as HF does. Every file is
        written under a temporary name and renamed into place, so an interrupted save never leaves a directory that
        loads as a broken model."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file, expected a directory")
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        if self._hf_peft_config_loaded:
            self._save_active_adapter(save_directory, state_dict=state_dict)
            return
        if state_dict is None:
            state_dict = self.state_dict()
        for key in self._keys_to_ignore_on_save or ():
            state_dict.pop(key, None)
        state_dict = {k: _to_saveable(v) for k, v in state_dict.items()}
        state_dict = self._revert_checkpoint(state_dict)
        self.config.architectures = [type(self).__name__]
        self.config.dtype = _DTYPE_TO_STR.get(self.dtype, "float32")
        weights.save_state_dict(state_dict, save_directory, max_shard_size=max_shard_size,
                                safe_serialization=safe_serialization)
        weights.atomic_write_text(os.path.join(save_directory, "config.json"), self.config.to_json_string())
        if self.generation_config is not None:
            weights.atomic_write_text(os.path.join(save_directory, "generation_config.json"),
                                      self.generation_config.to_json_string())


def init_parameter(param, init):
    """Replaces a parameter's data by a fresh initialisation (a MindSpore initializer or its name)."""
    param.set_data(initializer(init, param.shape, param.dtype).init_data())


def _assign(param, array):
    np_dtype = _MS_TO_NP.get(param.dtype)
    if np_dtype is not None and array.dtype != np_dtype:
        array = array.astype(np_dtype)
    if param.dtype == ms.bfloat16:
        param.set_data(Tensor(np.require(array, np.float32, "C")).astype(ms.bfloat16))
    else:
        # np.require, not ascontiguousarray: the latter turns 0-d tensors (e.g. CLIP's logit_scale) into shape (1,)
        param.set_data(Tensor.from_numpy(np.require(array, requirements="C")))


def _drop_ignored(keys, patterns):
    if not patterns:
        return keys
    import re

    return [k for k in keys if not any(re.search(p, k) for p in patterns)]


@functools.lru_cache(maxsize=None)
def _construct_params(cls) -> frozenset:
    return frozenset(inspect.signature(cls.construct).parameters)


@functools.lru_cache(maxsize=None)
def _construct_arg_names(cls) -> tuple:
    """`construct`'s positional parameter names (without self), to name positional arguments."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(inspect.signature(cls.construct).parameters.values())[1:]
    return tuple(p.name for p in params if p.kind in kinds)


def _to_saveable(value):
    if isinstance(value, (Tensor, Parameter)):
        if value.dtype == ms.bfloat16:
            return value.astype(ms.float32).asnumpy()
        return value.asnumpy()
    return np.asarray(value)


def _load_generation_config(path, subfolder, config, cache_dir=None, revision=None, local_files_only=False,
                            token=None):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path, subfolder=subfolder, cache_dir=cache_dir, revision=revision,
                                                local_files_only=local_files_only, token=token)
    except (OSError, ValueError, json.JSONDecodeError):
        return GenerationConfig.from_model_config(config)
