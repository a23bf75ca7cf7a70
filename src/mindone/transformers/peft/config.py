"""`LoraConfig`: the `peft` library's configuration, same field names, defaults and `adapter_config.json` format.

Fields we implement are dataclass fields. Every other field `peft` writes is accepted only at its default value (what
`peft` itself writes for a plain LoRA adapter); any other value raises `NotImplementedError` naming the option, so an
adapter that needs a feature we lack never loads as something else.
"""

import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field
from typing import Optional, Union

CONFIG_NAME = "adapter_config.json"
INCLUDE_LINEAR_LAYERS_SHORTHAND = "all-linear"


class PeftType(str, enum.Enum):
    LORA = "LORA"


class TaskType(str, enum.Enum):
    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


# peft's LoraConfig fields that we do not implement and whose "off" value is not None / False / {} / []
_UNSUPPORTED_AT_DEFAULT = {"megatron_core": "megatron.core", "qalora_group_size": 16}
# fields peft writes that carry no behaviour
_INFORMATIONAL = {"peft_version", "auto_mapping"}
_SUPPORTED_INITS = (True, False, "gaussian")


@dataclass
class LoraConfig:
    """Configuration of a LoRA adapter (`peft.LoraConfig`).

    Args:
        r: rank of the update `B @ A`.
        target_modules: module names (a module matches when its full name equals one or ends with `.name`), a regex
            matched against the full name (`re.fullmatch`), or `"all-linear"` (every Linear but the output layer).
        exclude_modules: names or a regex of modules never adapted.
        lora_alpha: scaling numerator: the update is scaled by `lora_alpha / r` (`lora_alpha / sqrt(r)` with
            `use_rslora`).
        lora_dropout: dropout on the LoRA branch input during training.
        fan_in_fan_out: the base weight is stored (in, out) (GPT-2's Conv1D); our Linear layers are (out, in).
        bias: "none", "all" (every bias of the model is trained and saved) or "lora_only" (biases of adapted layers).
        use_rslora: rank-stabilised scaling `lora_alpha / sqrt(r)`.
        modules_to_save: modules trained in full and saved with the adapter (e.g. `["lm_head"]`).
        init_lora_weights: True (A kaiming-uniform, B zero: the adapter starts as a no-op), "gaussian" (A normal with
            std 1/r, B zero) or False (both random: for tests).
        layers_to_transform / layers_pattern: only adapt layers with these indices (in the `layers_pattern` list).
        rank_pattern / alpha_pattern: {regex of a module name: r / alpha} overriding `r` / `lora_alpha`.
        use_dora: weight-decomposed LoRA (DoRA): a trained magnitude per output row of the adapted weight.
        lora_bias: a trainable bias on `lora_B`.
    """

    r: int = 8
    target_modules: Optional[Union[list, set, str]] = None
    exclude_modules: Optional[Union[list, set, str]] = None
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    modules_to_save: Optional[list] = None
    init_lora_weights: Union[bool, str] = True
    layers_to_transform: Optional[Union[list, int]] = None
    layers_pattern: Optional[Union[list, str]] = None
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    use_dora: bool = False
    lora_bias: bool = False
    task_type: Optional[Union[str, TaskType]] = None
    peft_type: Union[str, PeftType] = PeftType.LORA
    base_model_name_or_path: Optional[str] = None
    revision: Optional[str] = None
    inference_mode: bool = False

    def __post_init__(self):
        self.peft_type = PeftType(self.peft_type) if self.peft_type is not None else PeftType.LORA
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, (list, tuple)):
            self.exclude_modules = set(self.exclude_modules)
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"LoraConfig: bias={self.bias!r} must be 'none', 'all' or 'lora_only'")
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            raise ValueError("`layers_to_transform` cannot be used when `target_modules` is a str.")
        if isinstance(self.target_modules, str) and self.layers_pattern is not None:
            raise ValueError("`layers_pattern` cannot be used when `target_modules` is a str.")
        if self.layers_pattern and not self.layers_to_transform:
            raise ValueError("When `layers_pattern` is specified, `layers_to_transform` must also be specified. ")
        init = self.init_lora_weights
        if not (init is True or init is False or (isinstance(init, str) and init.lower() == "gaussian")):
            raise NotImplementedError(f"LoraConfig(init_lora_weights={init!r}) is not implemented in "
                                      f"mindone.transformers.peft; supported: True, False, 'gaussian'")

    @property
    def is_prompt_learning(self) -> bool:
        return False

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, set):
                value = sorted(value)
            elif isinstance(value, enum.Enum):
                value = value.value
            out[f.name] = value
        return out

    def save_pretrained(self, save_directory, **kwargs):
        """Writes `adapter_config.json` as `peft` does (torch `peft` reads it back)."""
        from ..weights import atomic_write_text

        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        out = self.to_dict()
        out.update(kwargs)
        atomic_write_text(os.path.join(save_directory, CONFIG_NAME), json.dumps(out, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> "LoraConfig":
        values = dict(values)
        peft_type = values.get("peft_type", "LORA")
        if peft_type != "LORA":
            raise NotImplementedError(f"peft_type={peft_type!r}: only LoRA adapters are implemented")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in list(values):
            if key in known:
                continue
            value = values.pop(key)
            if key in _INFORMATIONAL or value in (None, False, {}, []):
                continue
            if key in _UNSUPPORTED_AT_DEFAULT and value == _UNSUPPORTED_AT_DEFAULT[key]:
                continue
            raise NotImplementedError(f"LoraConfig option {key!r} = {value!r} is not implemented in "
                                      f"mindone.transformers.peft (only LoRA with this option off is)")
        return cls(**values)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs) -> "LoraConfig":
        """Reads `adapter_config.json` from a directory (or a hub repo id through the HF cache)."""
        path = os.fspath(pretrained_model_name_or_path)
        if subfolder:
            path = os.path.join(path, subfolder)
        config_file = find_adapter_config_file(path, **kwargs)
        if config_file is None:
            raise ValueError(f"Can't find '{CONFIG_NAME}' at '{pretrained_model_name_or_path}'")
        with open(config_file, encoding="utf-8") as f:
            values = json.load(f)
        return cls.from_dict(values)


PeftConfig = LoraConfig


def find_adapter_config_file(path, **hub_kwargs) -> Optional[str]:
    """The path of `adapter_config.json` in a local directory or hub repo, or None when there is none."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, CONFIG_NAME)
        return candidate if os.path.isfile(candidate) else None
    if os.path.exists(path) or path.count("/") > 1:
        return None
    try:
        from huggingface_hub import hf_hub_download

        keep = {k: v for k, v in hub_kwargs.items() if k in ("cache_dir", "revision", "token", "local_files_only")}
        return hf_hub_download(path, CONFIG_NAME, **keep)
    except Exception:  # noqa: BLE001 - any hub failure means "no adapter here", as in transformers
        return None
