"""LoRA layers and the functions that put them into a model, switch them, merge them and take them out again.

A targeted linear layer is replaced by a `LoraLinear` that holds the *same* base `weight` / `bias` Parameters under the
same names, so the base model's keys are unchanged (`...q_proj.weight`) and the adapter's live beside them
(`...q_proj.lora_A.<adapter>.weight`), as in `peft`. `modules_to_save` become a `ModulesToSaveWrapper` holding the
original module and one trainable copy per adapter (`lm_head.original_module.weight`,
`lm_head.modules_to_save.<adapter>.weight`). Adapter files name the keys without the adapter name
(`...q_proj.lora_A.weight`, `lm_head.weight`), as `peft` writes them.

The math (peft's `lora.Linear.forward`): y = base(x) + sum over active adapters of lora_B(lora_A(dropout(x))) * s,
s = lora_alpha / r (or lora_alpha / sqrt(r) with use_rslora). Merging adds s * B @ A to the base weight.
DoRA (use_dora) rescales each output row of W + s * B @ A to a trained magnitude m: with n = ||W + s B A||
per row (a constant for the gradient, as in the paper and peft), y = base(x) + (m / n - 1) * (x W^T) + (m / n) * s *
lora_B(lora_A(x)); its file key is `...lora_magnitude_vector` (no ".weight"), as peft writes it.
"""

import copy
import logging
import math
import re

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeUniform, Normal, Zero

from ..backend import functional as F
from ..backend import layers
from .config import INCLUDE_LINEAR_LAYERS_SHORTHAND, LoraConfig

logger = logging.getLogger(__name__)

_ADAPTER_LAYER_NAMES = ("lora_A", "lora_B", "lora_magnitude_vector")


class NoMatchingPeftModuleError(ValueError):
    """No module of the model matched the config's `target_modules` (peft's error type and message)."""


class _Magnitude(nn.Cell):
    """DoRA's per-output-row magnitude (peft's DoraLinearLayer holds it as `.weight`)."""

    def __init__(self, values):
        super().__init__()
        self.weight = ms.Parameter(values, name="weight")


class _AdapterCells(nn.Cell):
    """Holds one sub-Cell per adapter name as an attribute (peft's ModuleDict): keys `<holder>.<adapter>.weight`."""

    def keys(self):
        return list(self._cells.keys())


def _is_conv1d(cell) -> bool:
    """HF's GPT-2 `Conv1D`: a linear layer whose weight is stored (in_features, out_features)."""
    return type(cell).__name__ == "Conv1D" and getattr(cell, "weight", None) is not None and \
        len(cell.weight.shape) == 2


def _is_linear(cell) -> bool:
    return isinstance(cell, layers.Linear) or _is_conv1d(cell)


class LoraLinear(layers.Linear):
    """A linear layer (our `layers.Linear` or a GPT-2 `Conv1D`) with LoRA adapters; keeps the base Parameters."""

    def __init__(self, base_layer, fan_in_fan_out=False):
        nn.Cell.__init__(self)
        weight = base_layer.weight
        if fan_in_fan_out:
            self.in_features, self.out_features = weight.shape
        else:
            self.out_features, self.in_features = weight.shape
        self.fan_in_fan_out = fan_in_fan_out
        self.weight = weight
        self.bias = base_layer.bias
        # the original Cell, kept outside the Cell tree (no second set of parameter names) for `unload`
        object.__setattr__(self, "_base_layer_cell", base_layer)
        self.lora_A = _AdapterCells()
        self.lora_B = _AdapterCells()
        self.lora_dropout = _AdapterCells()
        self.lora_magnitude_vector = _AdapterCells()
        self.r, self.lora_alpha, self.scaling, self.dropout_p = {}, {}, {}, {}
        self.use_dora, self._dora_norm = {}, {}
        self.active_adapters = []
        self.merged_adapters = []
        self.disable_adapters = False
        self._branches = ()

    def get_base_layer(self):
        return self._base_layer_cell

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def update_layer(self, adapter_name, r, lora_alpha, config: LoraConfig, prefix=""):
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        dtype = self.weight.dtype
        # peft's autocast_adapter_dtype: adapters of a float16 / bfloat16 model are kept in float32
        dtype = ms.float32 if dtype in (ms.float16, ms.bfloat16) else dtype
        lora_a = layers.Linear(self.in_features, r, bias=False, dtype=dtype)
        lora_b = layers.Linear(r, self.out_features, bias=config.lora_bias, dtype=dtype)
        init = config.init_lora_weights
        if init is True:
            lora_a.weight.set_data(_init(HeUniform(math.sqrt(5)), lora_a.weight))
        elif isinstance(init, str) and init.lower() == "gaussian":
            lora_a.weight.set_data(_init(Normal(1.0 / r), lora_a.weight))
        if init is not False:
            lora_b.weight.set_data(_init(Zero(), lora_b.weight))
            if lora_b.bias is not None:
                lora_b.bias.set_data(_init(Zero(), lora_b.bias))
        for param in (*lora_a.get_parameters(), *lora_b.get_parameters()):
            if param.has_init:
                param.init_data()
        setattr(self.lora_A, adapter_name, lora_a)
        setattr(self.lora_B, adapter_name, lora_b)
        setattr(self.lora_dropout, adapter_name, layers.Dropout(config.lora_dropout))
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if config.use_rslora else lora_alpha / r
        self.dropout_p[adapter_name] = float(config.lora_dropout)
        self.use_dora[adapter_name] = bool(config.use_dora)
        cells = [("lora_A", lora_a), ("lora_B", lora_b)]
        if config.use_dora:
            if config.lora_bias:
                raise NotImplementedError("LoraConfig(use_dora=True, lora_bias=True) is not implemented")
            norm = self._weight_norm(self.get_delta_weight(adapter_name))
            magnitude = _Magnitude(Tensor(norm.astype(np.float32)).astype(dtype))
            setattr(self.lora_magnitude_vector, adapter_name, magnitude)
            cells.append(("lora_magnitude_vector", magnitude))
        for kind, cell in cells:
            for pname, param in cell.parameters_and_names():
                param.name = f"{prefix}.{kind}.{adapter_name}.{pname}" if prefix else f"{kind}.{adapter_name}.{pname}"
        self._refresh()

    def delete_adapter(self, adapter_name):
        for holder in (self.lora_A, self.lora_B, self.lora_dropout, self.lora_magnitude_vector):
            if adapter_name in holder._cells:
                delattr(holder, adapter_name)
        for table in (self.r, self.lora_alpha, self.scaling, self.dropout_p, self.use_dora):
            table.pop(adapter_name, None)
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]
        self._refresh()

    def set_adapter(self, adapter_names, inference_mode=False):
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for holder in (self.lora_A, self.lora_B, self.lora_magnitude_vector):
            for key in holder.keys():
                for param in getattr(holder, key).get_parameters():
                    param.requires_grad = key in names and not inference_mode
        self.active_adapters = names
        self._refresh()

    def enable_adapters(self, enabled: bool):
        if not enabled and self.merged:
            self.unmerge()
        self.disable_adapters = not enabled
        self._refresh()

    def _refresh(self):
        """The branches `construct` adds: a constant tuple, so the layer compiles under `mindspore.jit`."""
        if self.disable_adapters or self.merged:
            self._branches = ()
        else:
            self._branches = tuple((name, float(self.scaling[name]), self.dropout_p[name] > 0, self.use_dora[name])
                                   for name in self.active_adapters if name in self.scaling)

    def get_delta_weight(self, adapter) -> np.ndarray:
        """s * B @ A in the base weight's layout (float32 on the host, like peft's CPU merge)."""
        a = getattr(self.lora_A, adapter).weight.asnumpy().astype(np.float32)
        b = getattr(self.lora_B, adapter).weight.asnumpy().astype(np.float32)
        delta = (b @ a) * np.float32(self.scaling[adapter])
        return delta.T if self.fan_in_fan_out else delta

    def _weight_norm(self, delta):
        """DoRA's n: the L2 norm of each output row of W + delta (delta in the base weight's layout)."""
        weight = self.weight.asnumpy().astype(np.float32) + delta
        return np.linalg.norm(weight.T if self.fan_in_fan_out else weight, axis=1)

    def _dora_factor(self, name, norm):
        factor = getattr(self.lora_magnitude_vector, name).weight.asnumpy().astype(np.float32) / norm
        return factor[None, :] if self.fan_in_fan_out else factor[:, None]

    def merge(self, safe_merge=False, adapter_names=None):
        names = self.active_adapters if adapter_names is None else list(adapter_names)
        for name in names:
            if name not in self.scaling or name in self.merged_adapters:
                continue
            delta = self.get_delta_weight(name)
            weight = self.weight.asnumpy().astype(np.float32) + delta
            if self.use_dora[name]:
                # the norm of the unmerged weight, kept to undo the merge exactly
                self._dora_norm[name] = self._weight_norm(delta)
                weight = weight * self._dora_factor(name, self._dora_norm[name])
            if safe_merge and not np.isfinite(weight).all():
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            _set(self.weight, weight)
            lora_b_bias = getattr(self.lora_B, name).bias
            if lora_b_bias is not None:
                if self.bias is None:
                    raise ValueError(f"adapter {name!r} has a lora_B bias but the base layer has no bias to merge "
                                     f"it into")
                _set(self.bias, self.bias.asnumpy().astype(np.float32) +
                     lora_b_bias.asnumpy().astype(np.float32) * np.float32(self.scaling[name]))
            self.merged_adapters.append(name)
        self._refresh()

    def unmerge(self):
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight = self.weight.asnumpy().astype(np.float32)
            if self.use_dora[name]:
                weight = weight / self._dora_factor(name, self._dora_norm.pop(name))
            _set(self.weight, weight - self.get_delta_weight(name))
            lora_b_bias = getattr(self.lora_B, name).bias
            if lora_b_bias is not None:
                _set(self.bias, self.bias.asnumpy().astype(np.float32) -
                     lora_b_bias.asnumpy().astype(np.float32) * np.float32(self.scaling[name]))
        self._refresh()

    def construct(self, x):
        if self.fan_in_fan_out:
            shape = x.shape
            result = F.matmul(x.reshape(-1, shape[-1]), self.weight).reshape(shape[:-1] + (self.out_features,))
            if self.bias is not None:
                result = result + self.bias
        else:
            result = F.linear(x, self.weight, self.bias)
        out_dtype = result.dtype
        for name, scaling, has_dropout, use_dora in self._branches:
            lora_a = getattr(self.lora_A, name)
            lora_b = getattr(self.lora_B, name)
            h = F.cast(x, lora_a.weight.dtype)
            if has_dropout:
                h = getattr(self.lora_dropout, name)(h)
            if use_dora:
                result = self._dora_branch(name, scaling, h, result, has_dropout and self.training)
                continue
            result = _add(result, lora_b(lora_a(h)) * scaling)
        return F.cast(result, out_dtype)

    def _dora_branch(self, name, scaling, h, result, dropped):
        lora_a = getattr(self.lora_A, name)
        lora_b = getattr(self.lora_B, name)
        weight = F.cast(self.weight, h.dtype)
        if self.fan_in_fan_out:
            weight = weight.swapaxes(0, 1)
        full = weight + F.matmul(lora_b.weight, lora_a.weight) * scaling
        norm = ops.stop_gradient(ops.sqrt((full * full).sum(axis=1)))
        mag_norm_scale = getattr(self.lora_magnitude_vector, name).weight / norm
        if dropped:
            base = F.linear(h, weight)  # peft: with dropout active, the base term uses the dropped-out input
        else:
            base = F.cast(result, h.dtype)
            base = base - F.cast(self.bias, h.dtype) if self.bias is not None else base
        return _add(result, (mag_norm_scale - 1) * base + mag_norm_scale * lora_b(lora_a(h)) * scaling)

    def extend_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"adapters={list(self.scaling)}"


def _add(result, delta):
    """result + delta, in float32 when their dtypes differ (torch's promotion for a float16 model with float32
    adapters, and no rounding of a float32 result when the Trainer's fp16 mode made the adapters float16)."""
    if result.dtype == delta.dtype:
        return result + delta
    return F.cast(result, ms.float32) + F.cast(delta, ms.float32)


class ModulesToSaveWrapper(nn.Cell):
    """A module trained in full: the original (frozen) and one trainable copy per adapter; the active copy runs."""

    def __init__(self, module_to_save, adapter_name, prefix=""):
        super().__init__()
        self.original_module = module_to_save
        self.modules_to_save = _AdapterCells()
        self.active_adapter = None
        self.disable_adapters = False
        self._use = None
        for param in module_to_save.get_parameters():
            param.requires_grad = False
        self.update(adapter_name, prefix)

    def update(self, adapter_name, prefix=""):
        twin = copy.deepcopy(self.original_module)
        setattr(self.modules_to_save, adapter_name, twin)
        for pname, param in twin.parameters_and_names():
            param.name = f"{prefix}.modules_to_save.{adapter_name}.{pname}".lstrip(".")
            param.requires_grad = True

    def set_adapter(self, adapter_names, inference_mode=False):
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        present = [n for n in names if n in self.modules_to_save._cells]
        if len(present) > 1:
            raise ValueError(f"Attempted to set multiple ({present}) adapters at once for modules_to_save, which is "
                             f"not allowed.")
        for key, cell in self.modules_to_save._cells.items():
            for param in cell.get_parameters():
                param.requires_grad = key in present and not inference_mode
        self.active_adapter = present[0] if present else None
        self._refresh()

    def enable_adapters(self, enabled: bool):
        self.disable_adapters = not enabled
        self._refresh()

    def delete_adapter(self, adapter_name):
        if adapter_name in self.modules_to_save._cells:
            delattr(self.modules_to_save, adapter_name)
        if self.active_adapter == adapter_name:
            self.active_adapter = None
        self._refresh()

    def _refresh(self):
        self._use = None if self.disable_adapters else self.active_adapter
        self._cast_input = self._use is not None and \
            getattr(getattr(self.modules_to_save, self._use), "weight", None) is not None

    def construct(self, x, *args):
        if self._use is None:
            return self.original_module(x, *args)
        module = getattr(self.modules_to_save, self._use)
        if self._cast_input and x.dtype in F.FLOAT_DTYPES:
            # the trained copy may be in another dtype than the frozen model (the Trainer's fp16 mode)
            x = F.cast(x, module.weight.dtype)
        return module(x, *args)


def _init(initializer, param):
    from mindspore.common.initializer import initializer as make

    return make(initializer, param.shape, param.dtype).init_data()


def _set(param, array):
    np_dtype = {ms.float16: np.float16, ms.float32: np.float32, ms.float64: np.float64}.get(param.dtype)
    if np_dtype is None:  # bfloat16
        param.set_data(Tensor(np.ascontiguousarray(array, np.float32)).astype(param.dtype))
    else:
        param.set_data(Tensor(np.ascontiguousarray(array, np_dtype)))


# ----------------------------------------------------------------------------------------------------------------
# finding targets
# ----------------------------------------------------------------------------------------------------------------


def _named_cells(model):
    """(name, cell) of the model's own modules: not the insides of LoRA layers or of modules_to_save copies."""
    skip = []
    for name, cell in model.cells_and_names():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(cell, LoraLinear):
            skip.extend(f"{name}.{h}" if name else h
                        for h in ("lora_A", "lora_B", "lora_dropout", "lora_magnitude_vector"))
        elif isinstance(cell, ModulesToSaveWrapper):
            skip.extend(f"{name}.{h}" if name else h for h in ("modules_to_save", "original_module"))
        yield name, cell


def _matches_module(names, key) -> bool:
    return any(key == n or key.endswith("." + n) for n in names)


def check_target_module_exists(config: LoraConfig, key: str) -> bool:
    """peft's rule: excluded and modules_to_save never match; a str target is a regex matched in full; a list entry
    matches the full name or its last dotted parts; `layers_to_transform` keeps only those layer indices."""
    exclude = config.exclude_modules
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, key):
                return False
        elif _matches_module(exclude, key):
            return False
    if config.modules_to_save and any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in config.modules_to_save):
        return False
    targets = config.target_modules
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    found = any(key.endswith(f".{t}") for t in targets)
    indexes = config.layers_to_transform
    if found and indexes is not None and (not isinstance(indexes, list) or len(indexes) > 0):
        pattern = config.layers_pattern
        match = None
        if not pattern:
            match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
        else:
            for p in [pattern] if isinstance(pattern, str) else pattern:
                match = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", key)
                if match is not None:
                    break
        if match is None:
            return False
        index = int(match.group("idx"))
        return index == indexes if isinstance(indexes, int) else index in indexes
    return found


def get_pattern_key(pattern_keys, key_to_match):
    """The first pattern of rank_pattern / alpha_pattern that matches the end of the module name (peft's rule)."""
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def _output_layer_name(model):
    get = getattr(model, "get_output_embeddings", None)
    output = get() if get is not None else None
    if output is None:
        return None
    for name, cell in model.cells_and_names():
        if cell is output:
            return name
    return None


def _resolve_all_linear(config, model):
    if not (isinstance(config.target_modules, str) and
            config.target_modules.lower() == INCLUDE_LINEAR_LAYERS_SHORTHAND):
        return
    names = {name for name, cell in _named_cells(model) if name and _is_linear(cell)}
    names.discard(_output_layer_name(model))
    config.target_modules = names


def _replace(model, name, new):
    """Puts `new` at `name`, keeping its Parameters' names: MindSpore re-prefixes them on assignment, and compiled
    graphs (the decode step) need every parameter name unique."""
    names = {id(p): p.name for p in new.get_parameters()}
    parent_name, _, attr = name.rpartition(".")
    parent = _submodule(model, parent_name) if parent_name else model
    if isinstance(parent, (nn.CellList, nn.SequentialCell)):
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    for param in new.get_parameters():
        param.name = names[id(param)]


def _submodule(model, name):
    cell = model
    for part in name.split("."):
        cell = cell[int(part)] if isinstance(cell, (nn.CellList, nn.SequentialCell)) else getattr(cell, part)
    return cell


# ----------------------------------------------------------------------------------------------------------------
# the model-level operations (shared by PeftModel and PreTrainedModel's adapter API)
# ----------------------------------------------------------------------------------------------------------------


def inject_adapter_in_model(peft_config: LoraConfig, model, adapter_name: str = "default"):
    """Adds the adapter `adapter_name` described by `peft_config` to `model` in place (peft's function of this
    name): wraps every matching linear layer, wraps `modules_to_save`, and leaves only adapter parameters (and the
    configured biases) trainable. Raises when nothing matches or a matched module cannot carry LoRA."""
    if not isinstance(peft_config, LoraConfig):
        raise TypeError(f"peft_config should be a LoraConfig, got {type(peft_config).__name__}")
    existing = getattr(model, "peft_config", None) or {}
    if adapter_name in existing:
        raise ValueError(f"Adapter with name {adapter_name} already exists. Please use a different name.")
    if peft_config.target_modules is None:
        raise ValueError("LoraConfig.target_modules is None: name the modules to adapt (e.g. ['q_proj', 'v_proj'], "
                         "a regex, or 'all-linear'); mindone.transformers has no per-architecture default table")
    _resolve_all_linear(peft_config, model)
    matched = []
    for name, cell in list(_named_cells(model)):
        if not name or isinstance(cell, ModulesToSaveWrapper) or not check_target_module_exists(peft_config, name):
            continue
        if not _is_linear(cell):
            raise NotImplementedError(f"target module {name!r} is a {type(cell).__name__}: mindone.transformers.peft "
                                      f"implements LoRA on linear layers only")
        matched.append((name, cell))
    if not matched:
        message = f"Target modules {peft_config.target_modules} not found in the base model. " \
                  f"Please check the target modules and try again."
        if peft_config.layers_to_transform is not None:
            message += f" Note: You specified 'layers_to_transform': {peft_config.layers_to_transform}."
        if peft_config.layers_pattern is not None:
            message += f" You also specified 'layers_pattern': {peft_config.layers_pattern}."
        raise NoMatchingPeftModuleError(message)

    wrappers = []
    for module_name in peft_config.modules_to_save or ():
        found = [(n, c) for n, c in _named_cells(model) if n and (n == module_name or n.endswith("." + module_name))]
        found = [(n, c) for n, c in found if not any(n.startswith(o + ".") for o, _ in found if o != n)]
        if not found:
            raise ValueError(f"modules_to_save entry {module_name!r} matches no module of the model")
        wrappers.extend(found)

    for name, cell in matched:
        if isinstance(cell, LoraLinear):
            layer = cell
        else:
            conv1d = _is_conv1d(cell)
            if conv1d and not peft_config.fan_in_fan_out:
                logger.warning("fan_in_fan_out is set to False but the target module is `Conv1D`. Setting "
                               "fan_in_fan_out to True.")
            elif not conv1d and peft_config.fan_in_fan_out:
                logger.warning("fan_in_fan_out is set to True but the target module is `Linear`. Setting "
                               "fan_in_fan_out to False.")
            layer = LoraLinear(cell, fan_in_fan_out=conv1d)
            _replace(model, name, layer)
        r_key = get_pattern_key(peft_config.rank_pattern, name)
        alpha_key = get_pattern_key(peft_config.alpha_pattern, name)
        layer.update_layer(adapter_name, peft_config.rank_pattern.get(r_key, peft_config.r),
                           peft_config.alpha_pattern.get(alpha_key, peft_config.lora_alpha), peft_config, prefix=name)
    for name, cell in wrappers:
        if isinstance(cell, ModulesToSaveWrapper):
            cell.update(adapter_name, prefix=name)
        else:
            _replace(model, name, ModulesToSaveWrapper(cell, adapter_name, prefix=name))

    if not hasattr(model, "peft_config") or model.peft_config is None:
        model.peft_config = {}
    model.peft_config[adapter_name] = peft_config
    model._hf_peft_config_loaded = True
    _mark_only_adapters_as_trainable(model, peft_config)
    active = active_adapters(model) if len(model.peft_config) > 1 else [adapter_name]
    set_adapter(model, active, inference_mode=peft_config.inference_mode)
    return model


def _mark_only_adapters_as_trainable(model, config):
    lora_owners = {name for name, cell in _named_cells(model) if isinstance(cell, LoraLinear)}
    for name, param in _named_parameters(model).items():
        if "lora_" in name or ".modules_to_save." in f".{name}":
            continue
        param.requires_grad = False
        if config.bias == "all" and name.endswith("bias"):
            param.requires_grad = True
        elif config.bias == "lora_only" and name.endswith(".bias") and name[: -len(".bias")] in lora_owners:
            param.requires_grad = True


def _named_parameters(model):
    if hasattr(model, "named_parameters_dict"):
        return model.named_parameters_dict()
    return {name: param for name, param in model.parameters_and_names()}


def _tuner_cells(model):
    return [cell for _, cell in _named_cells(model) if isinstance(cell, (LoraLinear, ModulesToSaveWrapper))]


def _forget_compiled(model):
    from ..generation.utils import forget_compiled_steps

    forget_compiled_steps(model)


def set_adapter(model, adapter_name, inference_mode=False):
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    known = getattr(model, "peft_config", None) or {}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"Adapter(s) {missing} not found; loaded adapters: {list(known)}")
    for cell in _tuner_cells(model):
        cell.set_adapter(names, inference_mode=inference_mode)
    _forget_compiled(model)


def enable_adapters(model, enabled: bool):
    for cell in _tuner_cells(model):
        cell.enable_adapters(enabled)
    _forget_compiled(model)


def active_adapters(model):
    for cell in _tuner_cells(model):
        if isinstance(cell, LoraLinear):
            return list(cell.active_adapters)
    return []


def delete_adapter(model, adapter_name):
    config = getattr(model, "peft_config", None) or {}
    if adapter_name not in config:
        raise ValueError(f"Adapter {adapter_name} does not exist")
    for cell in _tuner_cells(model):
        cell.delete_adapter(adapter_name)
    del config[adapter_name]
    _forget_compiled(model)


def merge_adapter(model, adapter_names=None, safe_merge=False):
    for cell in _tuner_cells(model):
        if isinstance(cell, LoraLinear):
            cell.merge(safe_merge=safe_merge, adapter_names=adapter_names)
    _forget_compiled(model)


def unmerge_adapter(model):
    for cell in _tuner_cells(model):
        if isinstance(cell, LoraLinear):
            cell.unmerge()
    _forget_compiled(model)


def unload(model, merge=True, safe_merge=False, adapter_names=None):
    """Replaces every LoRA layer by its base layer (merged with the active adapters when `merge`) and every
    modules_to_save wrapper by its active adapter's copy (the original when none is active), as peft does; the
    model has no adapter afterwards."""
    for name, cell in list(_named_cells(model)):
        if isinstance(cell, LoraLinear):
            if merge:
                cell.merge(safe_merge=safe_merge, adapter_names=adapter_names)
            elif cell.merged:
                cell.unmerge()
            _replace(model, name, cell.get_base_layer())
        elif isinstance(cell, ModulesToSaveWrapper):
            keep = cell.original_module
            if cell.active_adapter is not None:
                keep = getattr(cell.modules_to_save, cell.active_adapter)
                for pname, param in keep.parameters_and_names():
                    param.name = f"{name}.{pname}"
            _replace(model, name, keep)
    for param in _named_parameters(model).values():
        param.requires_grad = True
    model.peft_config = {}
    model._hf_peft_config_loaded = False
    _forget_compiled(model)
    return model


# ----------------------------------------------------------------------------------------------------------------
# adapter state dicts: in-model names <-> peft file keys
# ----------------------------------------------------------------------------------------------------------------


def _file_key(name, adapter_name, config, lora_owners):
    """The adapter-file key of an in-model parameter name, or None when it is not part of the adapter."""
    parts = name.split(".")
    for holder in _ADAPTER_LAYER_NAMES:
        if holder in parts:
            i = parts.index(holder)
            if i + 1 < len(parts) and parts[i + 1] == adapter_name:
                key = ".".join(parts[: i + 1] + parts[i + 2:])
                # peft writes DoRA's magnitude without ".weight" (its pre-refactor ParameterDict name)
                return key[: -len(".weight")] if holder == "lora_magnitude_vector" else key
            return None
    if "modules_to_save" in parts:
        i = parts.index("modules_to_save")
        if i + 1 < len(parts) and parts[i + 1] == adapter_name:
            return ".".join(parts[:i] + parts[i + 2:])
        return None
    if not name.endswith("bias") or "original_module" in parts:
        return None
    if config.bias == "all" or (config.bias == "lora_only" and name[: -len(".bias")] in lora_owners):
        return name
    return None


def get_peft_model_state_dict(model, state_dict=None, adapter_name="default"):
    """{file key: array} of one adapter, keys without the adapter name (peft's function of this name). `model` is
    the adapted base model; `state_dict`, when given, is {in-model name: array} to select from."""
    config = model.peft_config[adapter_name]
    lora_owners = {name for name, cell in _named_cells(model) if isinstance(cell, LoraLinear)}
    source = state_dict if state_dict is not None else _named_parameters(model)
    out = {}
    for name, value in source.items():
        key = _file_key(name, adapter_name, config, lora_owners)
        if key is not None:
            out[key] = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return out


def set_peft_model_state_dict(model, peft_model_state_dict, adapter_name="default", source=""):
    """Copies adapter-file tensors into the adapter `adapter_name`; a shape mismatch raises naming the key (an adapter
    made for another base model). Returns {"missing_keys", "unexpected_keys"} in file-key terms."""
    from ..modeling_utils import _assign

    config = model.peft_config[adapter_name]
    lora_owners = {name for name, cell in _named_cells(model) if isinstance(cell, LoraLinear)}
    targets = {}
    for name, param in _named_parameters(model).items():
        key = _file_key(name, adapter_name, config, lora_owners)
        if key is not None:
            targets[key] = param
    loaded, unexpected = set(), []
    for key, array in peft_model_state_dict.items():
        if key not in targets:
            unexpected.append(key)
            continue
        param = targets[key]
        if tuple(array.shape) != tuple(param.shape):
            where = f" ({source})" if source else ""
            raise ValueError(f"{key}: adapter shape {tuple(array.shape)} != model shape {tuple(param.shape)}{where}; "
                             f"was this adapter trained on another base model?")
        _assign(param, array)
        loaded.add(key)
    missing = sorted(k for k in targets if k not in loaded)
    _forget_compiled(model)
    return {"missing_keys": missing, "unexpected_keys": unexpected}
