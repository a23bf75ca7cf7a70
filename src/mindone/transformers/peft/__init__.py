"""LoRA adapters with the `peft` library's API, semantics and file format, on MindSpore (no torch).

    from mindone.transformers.peft import LoraConfig, get_peft_model, PeftModel
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained("adapter")            # adapter_config.json + adapter_model.safetensors (torch peft loads it)
    model = PeftModel.from_pretrained(base, "adapter")   # an adapter saved by torch peft loads here

Every `PreTrainedModel` also has HF's adapter API (`add_adapter`, `load_adapter`, `set_adapter`, ...): see
`mixin.PeftAdapterMixin`.
"""

from .config import CONFIG_NAME, LoraConfig, PeftConfig, PeftType, TaskType
from .peft_model import (
    LoraModel,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    get_peft_model,
)
from .tuners import (
    LoraLinear,
    ModulesToSaveWrapper,
    NoMatchingPeftModuleError,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)

__all__ = [
    "CONFIG_NAME",
    "LoraConfig",
    "LoraLinear",
    "LoraModel",
    "ModulesToSaveWrapper",
    "NoMatchingPeftModuleError",
    "PeftConfig",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction",
    "PeftModelForQuestionAnswering",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PeftType",
    "TaskType",
    "get_peft_model",
    "get_peft_model_state_dict",
    "inject_adapter_in_model",
    "set_peft_model_state_dict",
]
