"""HF's `PeftAdapterMixin`: the adapter API of every `PreTrainedModel` (transformers' integrations/peft.py).

    model.add_adapter(LoraConfig(target_modules=["q_proj", "v_proj"]))   # new, trainable, active
    model.load_adapter("path/to/adapter", adapter_name="chat")           # frozen, not activated
    model.set_adapter("chat"); model.disable_adapters(); model.enable_adapters()
    model.save_pretrained("out")   # with adapters attached: only the active adapter, in peft's format

The adapter state is the model's `peft_config` ({name: LoraConfig}) and its LoRA layers (see `tuners`).
"""

import os

from . import tuners


class PeftAdapterMixin:
    _hf_peft_config_loaded = False

    def _require_adapters(self):
        if not self._hf_peft_config_loaded:
            raise ValueError("No adapter loaded. Please load an adapter first.")

    def add_adapter(self, adapter_config, adapter_name=None):
        """Adds a fresh adapter (a `LoraConfig`) for training and activates it.

        Args:
            adapter_config: a `mindone.transformers.peft.LoraConfig`.
            adapter_name: defaults to "default".
        """
        from .config import LoraConfig

        adapter_name = adapter_name or "default"
        if self._hf_peft_config_loaded and adapter_name in self.peft_config:
            raise ValueError(f"Adapter with name {adapter_name} already exists. Please use a different name.")
        if not isinstance(adapter_config, LoraConfig):
            raise TypeError(f"adapter_config should be an instance of PeftConfig. Got {type(adapter_config)} "
                            f"instead.")
        adapter_config.base_model_name_or_path = self.__dict__.get("name_or_path", None)
        tuners.inject_adapter_in_model(adapter_config, self, adapter_name)
        self.set_adapter(adapter_name)

    def load_adapter(self, peft_model_id=None, adapter_name=None, revision=None, token=None, is_trainable=False,
                     adapter_state_dict=None, peft_config=None, local_files_only=False, adapter_kwargs=None,
                     **kwargs):
        """Loads an adapter (directory or hub repo with `adapter_config.json` + `adapter_model.safetensors`, or
        `peft_config` + `adapter_state_dict`) as `adapter_name` ("default"). Frozen unless `is_trainable`.

        Returns {"missing_keys", "unexpected_keys"} (adapter-file keys).
        """
        from .config import LoraConfig
        from .peft_model import PEFT_PREFIX, load_adapter_into

        for unsupported in ("hotswap", "low_cpu_mem_usage"):
            if kwargs.pop(unsupported, False) not in (False, "auto"):
                raise NotImplementedError(f"load_adapter({unsupported}=...) is not implemented")
        kwargs.pop("device_map", None)
        if kwargs:
            raise TypeError(f"load_adapter got unexpected keyword arguments: {sorted(kwargs)}")
        adapter_name = adapter_name or "default"
        if self._hf_peft_config_loaded and adapter_name in self.peft_config:
            raise ValueError(f"Adapter with name {adapter_name} already exists. Please use a different name.")
        hub = dict(adapter_kwargs or {}, revision=revision, token=token, local_files_only=local_files_only)
        if adapter_state_dict is None:
            if peft_model_id is None:
                raise ValueError("You should either pass a `peft_model_id` or a `peft_config` and "
                                 "`adapter_state_dict` to load an adapter.")
            config = LoraConfig.from_dict(peft_config) if isinstance(peft_config, dict) else peft_config
            info = load_adapter_into(self, peft_model_id, adapter_name, is_trainable=is_trainable, config=config,
                                     **hub)
        else:
            if peft_config is None:
                raise ValueError("load_adapter(adapter_state_dict=...) needs `peft_config` too")
            config = LoraConfig.from_dict(peft_config) if isinstance(peft_config, dict) else peft_config
            config.inference_mode = not is_trainable
            state = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k:
                     v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in adapter_state_dict.items()}
            tuners.inject_adapter_in_model(config, self, adapter_name)
            info = tuners.set_peft_model_state_dict(self, state, adapter_name=adapter_name)
        if not is_trainable:
            self.set_train(False)
        return info

    def set_adapter(self, adapter_name):
        """Activates one adapter (a str) or several (a list, their updates add up)."""
        self._require_adapters()
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        missing = [n for n in names if n not in self.peft_config]
        if missing:
            raise ValueError(f"Adapter with name {', '.join(missing)} not found. Please pass the correct adapter "
                             f"name among {list(self.peft_config.keys())}")
        tuners.set_adapter(self, adapter_name,
                           inference_mode=all(self.peft_config[n].inference_mode for n in names))

    def disable_adapters(self):
        """Runs the base model only (adapters stay attached)."""
        self._require_adapters()
        tuners.enable_adapters(self, False)

    def enable_adapters(self):
        self._require_adapters()
        tuners.enable_adapters(self, True)

    def active_adapters(self):
        """Names of the active adapters."""
        self._require_adapters()
        return tuners.active_adapters(self)

    def delete_adapter(self, adapter_names):
        self._require_adapters()
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        missing = [n for n in names if n not in self.peft_config]
        if missing:
            raise ValueError(f"The following adapter(s) are not present and cannot be deleted: "
                             f"{', '.join(missing)}")
        for name in names:
            tuners.delete_adapter(self, name)
        if not self.peft_config:
            self._hf_peft_config_loaded = False

    def get_adapter_state_dict(self, adapter_name=None, state_dict=None):
        """{adapter-file key (no "base_model.model." prefix, no adapter name): array} of one adapter (the active one
        by default)."""
        self._require_adapters()
        if adapter_name is None:
            adapter_name = self.active_adapters()[0]
        return tuners.get_peft_model_state_dict(self, state_dict=state_dict, adapter_name=adapter_name)

    def _save_active_adapter(self, save_directory, state_dict=None):
        """`save_pretrained` with adapters attached: the active adapter in peft's format, as HF does."""
        from .peft_model import save_adapter

        active = self.active_adapters()
        if len(active) > 1:
            raise ValueError("Multiple active adapters detected, saving multiple active adapters is not supported "
                             "yet. You can save adapters separately one by one by iteratively calling "
                             "`model.set_adapter(adapter_name)` then `model.save_pretrained(...)`")
        save_adapter(self, save_directory, active[0], state_dict=state_dict)

    def _load_adapter_checkpoint(self, directory):
        """Reloads the active adapter's weights from an adapter directory (Trainer resume / best model)."""
        from .peft_model import load_adapter_weights

        state, file = load_adapter_weights(directory)
        tuners.set_peft_model_state_dict(self, state, adapter_name=self.active_adapters()[0], source=file)


def adapter_paths(path, **hub_kwargs):
    """(adapter directory or None, base model path) for `from_pretrained(path)`: a directory holding only an adapter
    loads the base model named by its `base_model_name_or_path`, then the adapter (HF's `maybe_load_adapters`)."""
    import json

    from .config import find_adapter_config_file

    config_file = find_adapter_config_file(path, **hub_kwargs)
    if config_file is None:
        return None, path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        return path, path
    with open(config_file, encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path} holds an adapter whose adapter_config.json names no base_model_name_or_path; load "
                         f"the base model and call load_adapter({path!r})")
    return path, base
