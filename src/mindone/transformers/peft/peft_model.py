"""`PeftModel` and `get_peft_model`: peft's model wrapper, its attribute layout and its adapter files.

`PeftModel.base_model` is a `LoraModel` whose `.model` is the adapted model, so parameter names are
`base_model.model.<path>` as in `peft`, and adapter files hold `base_model.model.<path>.lora_A.weight`.
The adapter state itself (LoRA layers, `peft_config`) lives on the wrapped model, so `get_base_model()` is an
adapter-enabled `PreTrainedModel` with HF's adapter API; both views share one set of parameters.
"""

import contextlib
import logging
import os

import numpy as np
from mindspore import nn

from . import tuners
from .config import LoraConfig, TaskType

logger = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
SAFETENSORS_WEIGHTS_NAME = "adapter_model.safetensors"
WEIGHTS_NAME = "adapter_model.bin"


def load_adapter_weights(model_id, subfolder=None, **hub_kwargs) -> tuple[dict, str]:
    """({file key without "base_model.model.": array}, file path) from `adapter_model.safetensors` (or `.bin`) in a
    directory or hub repo."""
    from .. import weights

    path = os.fspath(model_id)
    if subfolder:
        path = os.path.join(path, subfolder)
    found = None
    for name, fmt in ((SAFETENSORS_WEIGHTS_NAME, "safetensors"), (WEIGHTS_NAME, "bin")):
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            found = (candidate, fmt)
            break
        if not os.path.isdir(path):
            try:
                from huggingface_hub import hf_hub_download

                keep = {k: v for k, v in hub_kwargs.items()
                        if k in ("cache_dir", "revision", "token", "local_files_only")}
                found = (hf_hub_download(path, name, **keep), fmt)
                break
            except Exception:  # noqa: BLE001 - try the next file name, then report both below
                continue
    if found is None:
        raise ValueError(f"Can't find weights for {model_id} in {path} or in the Hugging Face Hub. Please check that "
                         f"the file {SAFETENSORS_WEIGHTS_NAME} or {WEIGHTS_NAME} is present at {model_id}.")
    file, fmt = found
    state = {}
    for key, array in weights.iter_state_dict([file], fmt):
        state[key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key] = array
    return state, file


def save_adapter(model, save_directory, adapter_name, state_dict=None):
    """Writes `adapter_config.json` and `adapter_model.safetensors` (peft's keys, `{"format": "pt"}`) of one adapter
    of the adapted model `model`; `state_dict` ({in-model name: array}) selects the values to write."""
    from .. import weights

    os.makedirs(save_directory, exist_ok=True)
    tensors = tuners.get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=adapter_name)
    tensors = {PEFT_PREFIX + k: (v.astype(np.float32) if v.dtype.name == "bfloat16" else v) for k, v in
               tensors.items()}
    weights.save_state_dict(tensors, save_directory, weights_name=SAFETENSORS_WEIGHTS_NAME)
    config = model.peft_config[adapter_name]
    inference_mode = config.inference_mode
    config.inference_mode = True
    try:
        config.save_pretrained(save_directory)
    finally:
        config.inference_mode = inference_mode


def load_adapter_into(model, model_id, adapter_name="default", is_trainable=False, config=None, **hub_kwargs):
    """Adds the adapter stored at `model_id` to the model as `adapter_name` and loads its weights; returns
    {"missing_keys", "unexpected_keys"}. Shared by `PeftModel.load_adapter` and `PreTrainedModel.load_adapter`."""
    if config is None:
        config = LoraConfig.from_pretrained(model_id, **hub_kwargs)
    config.inference_mode = not is_trainable
    state, file = load_adapter_weights(model_id, **hub_kwargs)
    tuners.inject_adapter_in_model(config, model, adapter_name)
    info = tuners.set_peft_model_state_dict(model, state, adapter_name=adapter_name, source=file)
    _report_loading(info, file)
    return info


def _report_loading(info, file):
    if info["unexpected_keys"]:
        logger.warning("Found unexpected keys in the adapter %s that do not belong to the model: %s", file,
                       info["unexpected_keys"])
    if info["missing_keys"]:
        logger.warning("Found missing adapter keys while loading the checkpoint %s: %s", file,
                       info["missing_keys"])


def _getattr_or_delegate(cell, name, inner):
    """Cell attribute lookup, falling back to the wrapped `inner` Cell (peft's wrappers forward unknown attributes)."""
    try:
        return nn.Cell.__getattr__(cell, name)
    except AttributeError:
        if name == inner:
            raise
        return getattr(getattr(cell, inner), name)


class LoraModel(nn.Cell):
    """peft's `LoraModel`: the tuner that owns the adapted model as `.model`."""

    prefix = "lora_"

    def __init__(self, model, config, adapter_name="default"):
        super().__init__()
        self.model = model
        tuners.inject_adapter_in_model(config, model, adapter_name)

    @property
    def peft_config(self):
        return self.model.peft_config

    @property
    def active_adapters(self):
        return tuners.active_adapters(self.model)

    @property
    def active_adapter(self):
        active = self.active_adapters
        return active[0] if len(active) == 1 else active

    def construct(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def set_adapter(self, adapter_name, inference_mode=False):
        tuners.set_adapter(self.model, adapter_name, inference_mode=inference_mode)

    def enable_adapter_layers(self):
        tuners.enable_adapters(self.model, True)

    def disable_adapter_layers(self):
        tuners.enable_adapters(self.model, False)

    def delete_adapter(self, adapter_name):
        tuners.delete_adapter(self.model, adapter_name)

    def merge_adapter(self, adapter_names=None, safe_merge=False):
        tuners.merge_adapter(self.model, adapter_names=adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self):
        tuners.unmerge_adapter(self.model)

    def merge_and_unload(self, progressbar=False, safe_merge=False, adapter_names=None):
        """Merges the active adapters into the base weights and returns the plain base model."""
        return tuners.unload(self.model, merge=True, safe_merge=safe_merge, adapter_names=adapter_names)

    def unload(self):
        """Removes every adapter without merging and returns the plain base model."""
        return tuners.unload(self.model, merge=False)

    def __getattr__(self, name):
        return _getattr_or_delegate(self, name, "model")


class PeftModel(nn.Cell):
    """peft's `PeftModel` for LoRA: `PeftModel(model, LoraConfig(...))` or `PeftModel.from_pretrained(model, path)`.

    Args:
        model: the base model (adapted in place, as peft does).
        peft_config: a `LoraConfig`.
        adapter_name: name of the first adapter ("default").
    """

    _extra_modules_to_save = ()

    def __init__(self, model, peft_config: LoraConfig, adapter_name="default", autocast_adapter_dtype=True, **kwargs):
        super().__init__()
        if kwargs.get("low_cpu_mem_usage"):
            raise NotImplementedError("PeftModel(low_cpu_mem_usage=True) is not implemented")
        if not autocast_adapter_dtype:
            raise NotImplementedError("PeftModel(autocast_adapter_dtype=False) is not implemented: adapters of a "
                                      "float16 model are always kept in float32")
        self._add_task_modules_to_save(model, peft_config)
        if peft_config.base_model_name_or_path is None:
            peft_config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
        self.base_model = LoraModel(model, peft_config, adapter_name)

    def _add_task_modules_to_save(self, model, config):
        present = [n for n in self._extra_modules_to_save if getattr(model, n, None) is not None]
        if present:
            config.modules_to_save = list(dict.fromkeys(list(config.modules_to_save or []) + present))

    # --- the wrapped model -----------------------------------------------------------------------------------------

    def get_base_model(self):
        return self.base_model.model

    @property
    def config(self):
        return self.base_model.model.config

    @property
    def peft_config(self):
        return self.base_model.model.peft_config

    @property
    def active_adapters(self):
        return self.base_model.active_adapters

    @property
    def active_adapter(self):
        return self.base_model.active_adapter

    @property
    def active_peft_config(self):
        return self.peft_config[self.active_adapters[0]]

    def construct(self, *args, **kwargs):
        return self.base_model.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return _getattr_or_delegate(self, name, "base_model")

    def named_parameters_dict(self):
        return {PEFT_PREFIX + k: v for k, v in self.base_model.model.named_parameters_dict().items()}

    def state_dict(self):
        return {PEFT_PREFIX + k: v for k, v in self.base_model.model.state_dict().items()}

    # --- adapters --------------------------------------------------------------------------------------------------

    def add_adapter(self, adapter_name, peft_config, low_cpu_mem_usage=False):
        """Adds a new (not active) adapter; `set_adapter` activates it."""
        active = self.active_adapters
        self._add_task_modules_to_save(self.base_model.model, peft_config)
        tuners.inject_adapter_in_model(peft_config, self.base_model.model, adapter_name)
        tuners.set_adapter(self.base_model.model, active)

    def set_adapter(self, adapter_name):
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} not found.")
        tuners.set_adapter(self.base_model.model, adapter_name,
                           inference_mode=self.peft_config[adapter_name].inference_mode)

    def delete_adapter(self, adapter_name):
        tuners.delete_adapter(self.base_model.model, adapter_name)

    @contextlib.contextmanager
    def disable_adapter(self):
        """Context in which the model runs without its adapters."""
        tuners.enable_adapters(self.base_model.model, False)
        try:
            yield
        finally:
            tuners.enable_adapters(self.base_model.model, True)

    def load_adapter(self, model_id, adapter_name, is_trainable=False, **kwargs):
        """Loads the adapter at `model_id` as `adapter_name` (not activated, as in peft)."""
        active = self.active_adapters
        info = load_adapter_into(self.base_model.model, model_id, adapter_name, is_trainable=is_trainable, **kwargs)
        tuners.set_adapter(self.base_model.model, active,
                           inference_mode=self.peft_config[active[0]].inference_mode)
        return info

    def merge_and_unload(self, progressbar=False, safe_merge=False, adapter_names=None):
        return self.base_model.merge_and_unload(safe_merge=safe_merge, adapter_names=adapter_names)

    def unload(self):
        return self.base_model.unload()

    # --- counting --------------------------------------------------------------------------------------------------

    def get_nb_trainable_parameters(self):
        """(trainable parameters, all parameters), each shared Parameter counted once."""
        seen, trainable, total = set(), 0, 0
        for param in self.base_model.model.named_parameters_dict().values():
            if id(param) in seen:
                continue
            seen.add(id(param))
            count = int(np.prod(param.shape))
            total += count
            if param.requires_grad:
                trainable += count
        return trainable, total

    def print_trainable_parameters(self):
        """Prints the trainable and total parameter counts (peft prints this line; so do we)."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: "
              f"{100 * trainable / total:.4f}")

    # --- files -----------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, safe_serialization=True, selected_adapters=None,
                        is_main_process=True, state_dict=None, **kwargs):
        """Writes each adapter (the "default" one in `save_directory`, others in `save_directory/<name>`) as
        `adapter_config.json` + `adapter_model.safetensors`, loadable by torch `peft`."""
        if os.path.isfile(save_directory):
            raise ValueError(f"Provided path ({save_directory}) should be a directory, not a file")
        if not safe_serialization:
            raise NotImplementedError("PeftModel.save_pretrained(safe_serialization=False) is not implemented")
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        missing = [n for n in names if n not in self.peft_config]
        if missing:
            raise ValueError(f"You passed an invalid `selected_adapters` arguments, current supported adapter names "
                             f"are {list(self.peft_config)} - got {missing}.")
        if not is_main_process:
            return
        if state_dict is not None:
            state_dict = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v for k, v in state_dict.items()}
        for name in names:
            directory = save_directory if name == "default" else os.path.join(save_directory, name)
            save_adapter(self.base_model.model, directory, name, state_dict=state_dict)

    @classmethod
    def from_pretrained(cls, model, model_id, adapter_name="default", is_trainable=False, config=None, **kwargs):
        """Wraps `model` with the adapter stored at `model_id` (a directory or hub repo holding
        `adapter_config.json` and `adapter_model.safetensors`). Frozen unless `is_trainable`."""
        if config is None:
            config = LoraConfig.from_pretrained(model_id, **kwargs)
        config.inference_mode = not is_trainable
        model_cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(_task(config), cls) if cls is PeftModel else cls
        state, file = load_adapter_weights(model_id, **kwargs)
        peft_model = model_cls(model, config, adapter_name)
        info = tuners.set_peft_model_state_dict(peft_model.base_model.model, state, adapter_name=adapter_name,
                                                source=file)
        _report_loading(info, file)
        if not is_trainable:
            peft_model.set_train(False)
        return peft_model

    def _load_adapter_checkpoint(self, directory):
        self.base_model.model._load_adapter_checkpoint(directory)


class PeftModelForCausalLM(PeftModel):
    pass


class PeftModelForSeq2SeqLM(PeftModel):
    pass


class PeftModelForSequenceClassification(PeftModel):
    _extra_modules_to_save = ("classifier", "score")


class PeftModelForTokenClassification(PeftModel):
    _extra_modules_to_save = ("classifier", "score")


class PeftModelForQuestionAnswering(PeftModel):
    _extra_modules_to_save = ("qa_outputs",)


class PeftModelForFeatureExtraction(PeftModel):
    pass


MODEL_TYPE_TO_PEFT_MODEL_MAPPING = {
    TaskType.CAUSAL_LM: PeftModelForCausalLM,
    TaskType.SEQ_2_SEQ_LM: PeftModelForSeq2SeqLM,
    TaskType.SEQ_CLS: PeftModelForSequenceClassification,
    TaskType.TOKEN_CLS: PeftModelForTokenClassification,
    TaskType.QUESTION_ANS: PeftModelForQuestionAnswering,
    TaskType.FEATURE_EXTRACTION: PeftModelForFeatureExtraction,
}


def _task(config):
    try:
        return TaskType(config.task_type) if config.task_type is not None else None
    except ValueError:
        raise NotImplementedError(f"task_type={config.task_type!r} is not known to mindone.transformers.peft")


def get_peft_model(model, peft_config: LoraConfig, adapter_name="default", mixed=False, autocast_adapter_dtype=True,
                   revision=None, low_cpu_mem_usage=False):
    """Wraps `model` with a new LoRA adapter (peft's entry point): the class follows `peft_config.task_type`."""
    if mixed:
        raise NotImplementedError("get_peft_model(mixed=True) (PeftMixedModel) is not implemented")
    if revision is not None:
        peft_config.revision = revision
    peft_config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
    model_cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(_task(peft_config), PeftModel)
    return model_cls(model, peft_config, adapter_name=adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                     low_cpu_mem_usage=low_cpu_mem_usage)

