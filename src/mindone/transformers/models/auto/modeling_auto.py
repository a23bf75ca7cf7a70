"""Auto model classes: `config.model_type` -> our class, by class *name*, so a family's file is imported only when
one of its models is built.

Each family is registered once, in `MODEL_FAMILIES`, with the HF class name it provides for every task. Names are
resolved through the package's lazy export table (`mindone.transformers._LAZY`), so a family added there by name is
reachable here as soon as its module exists.
"""

import importlib
import logging
import os

logger = logging.getLogger(__name__)

# task -> HF's auto class that serves it
TASKS = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "masked-lm": "AutoModelForMaskedLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
    "semantic-segmentation": "AutoModelForSemanticSegmentation",
    "object-detection": "AutoModelForObjectDetection",
    "depth-estimation": "AutoModelForDepthEstimation",
    "masked-image-modeling": "AutoModelForMaskedImageModeling",
    "backbone": "AutoBackbone",
    "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
    "speech-seq2seq": "AutoModelForSpeechSeq2Seq",
    "text-encoding": "AutoModelForTextEncoding",
    "image-text-to-text": "AutoModelForImageTextToText",
    "ctc": "AutoModelForCTC",
    "audio-classification": "AutoModelForAudioClassification",
    "audio-frame-classification": "AutoModelForAudioFrameClassification",
    "audio-xvector": "AutoModelForAudioXVector",
}


def _decoder_family(prefix, heads=("sequence-classification", "token-classification", "question-answering")):
    """A decoder-only family with HF's generic heads: {"base": "<P>Model", "causal-lm": "<P>ForCausalLM", ...}."""
    names = {"base": f"{prefix}Model", "causal-lm": f"{prefix}ForCausalLM"}
    suffix = {"sequence-classification": "ForSequenceClassification",
              "token-classification": "ForTokenClassification", "question-answering": "ForQuestionAnswering"}
    names.update({task: prefix + suffix[task] for task in heads})
    return names


def _encoder_family(prefix, causal_lm=None):
    names = {"base": f"{prefix}Model", "masked-lm": f"{prefix}ForMaskedLM",
             "sequence-classification": f"{prefix}ForSequenceClassification",
             "token-classification": f"{prefix}ForTokenClassification",
             "question-answering": f"{prefix}ForQuestionAnswering", "text-encoding": f"{prefix}Model"}
    if causal_lm:
        names["causal-lm"] = causal_lm
    return names


def _t5_family(prefix):
    return {"base": f"{prefix}Model", "seq2seq-lm": f"{prefix}ForConditionalGeneration",
            "text-encoding": f"{prefix}EncoderModel", "sequence-classification": f"{prefix}ForSequenceClassification",
            "token-classification": f"{prefix}ForTokenClassification",
            "question-answering": f"{prefix}ForQuestionAnswering"}


def _vision_family(prefix):
    return {"base": f"{prefix}Model", "image-classification": f"{prefix}ForImageClassification"}


# config.model_type -> {task: class name}; HF's auto mappings restricted to the classes this package implements
MODEL_FAMILIES = {
    "llama": _decoder_family("Llama"),
    "mistral": _decoder_family("Mistral"),
    "qwen2": _decoder_family("Qwen2"),
    "qwen3": _decoder_family("Qwen3"),
    "mixtral": _decoder_family("Mixtral"),
    "qwen2_moe": _decoder_family("Qwen2Moe"),
    "qwen3_moe": _decoder_family("Qwen3Moe"),
    "gemma": _decoder_family("Gemma", heads=("sequence-classification", "token-classification")),
    "gemma3_text": {"base": "Gemma3TextModel", "causal-lm": "Gemma3ForCausalLM",
                    "sequence-classification": "Gemma3TextForSequenceClassification"},
    "phi3": _decoder_family("Phi3", heads=("sequence-classification", "token-classification")),
    "phi": _decoder_family("Phi", heads=("sequence-classification", "token-classification")),
    "gpt_neox": {"base": "GPTNeoXModel", "causal-lm": "GPTNeoXForCausalLM",
                 "sequence-classification": "GPTNeoXForSequenceClassification",
                 "token-classification": "GPTNeoXForTokenClassification",
                 "question-answering": "GPTNeoXForQuestionAnswering"},
    "opt": _decoder_family("OPT", heads=("sequence-classification", "question-answering")),
    "gptj": {"base": "GPTJModel", "causal-lm": "GPTJForCausalLM",
             "sequence-classification": "GPTJForSequenceClassification",
             "question-answering": "GPTJForQuestionAnswering"},
    "codegen": {"base": "CodeGenModel", "causal-lm": "CodeGenForCausalLM"},
    "gpt2": {"base": "GPT2Model", "causal-lm": "GPT2LMHeadModel",
             "sequence-classification": "GPT2ForSequenceClassification",
             "token-classification": "GPT2ForTokenClassification",
             "question-answering": "GPT2ForQuestionAnswering"},
    "ctrl": {"base": "CTRLModel", "causal-lm": "CTRLLMHeadModel",
             "sequence-classification": "CTRLForSequenceClassification"},
    "bert": _encoder_family("Bert", causal_lm="BertLMHeadModel"),
    "roberta": _encoder_family("Roberta", causal_lm="RobertaForCausalLM"),
    "distilbert": _encoder_family("DistilBert"),
    "roberta-prelayernorm": _encoder_family("RobertaPreLayerNorm", causal_lm="RobertaPreLayerNormForCausalLM"),
    "data2vec-text": _encoder_family("Data2VecText", causal_lm="Data2VecTextForCausalLM"),
    "fnet": {"base": "FNetModel", "masked-lm": "FNetForMaskedLM",
             "sequence-classification": "FNetForSequenceClassification",
             "token-classification": "FNetForTokenClassification", "question-answering": "FNetForQuestionAnswering"},
    "lilt": {"base": "LiltModel", "sequence-classification": "LiltForSequenceClassification",
             "token-classification": "LiltForTokenClassification", "question-answering": "LiltForQuestionAnswering"},
    "canine": {"base": "CanineModel", "sequence-classification": "CanineForSequenceClassification",
               "token-classification": "CanineForTokenClassification",
               "question-answering": "CanineForQuestionAnswering"},
    "luke": {"base": "LukeModel", "masked-lm": "LukeForMaskedLM",
             "sequence-classification": "LukeForSequenceClassification",
             "token-classification": "LukeForTokenClassification", "question-answering": "LukeForQuestionAnswering"},
    "cpmant": {"base": "CpmAntModel", "causal-lm": "CpmAntForCausalLM"},
    "t5": _t5_family("T5"),
    "mt5": _t5_family("MT5"),
    "umt5": _t5_family("UMT5"),
    "bart": {"base": "BartModel", "seq2seq-lm": "BartForConditionalGeneration",
             "sequence-classification": "BartForSequenceClassification",
             "question-answering": "BartForQuestionAnswering"},
    "vit": _vision_family("ViT"),
    "yolos": {"base": "YolosModel", "object-detection": "YolosForObjectDetection"},
    "dinov2": _vision_family("Dinov2"),
    "convnextv2": _vision_family("ConvNextV2"),
    "convnext": {**_vision_family("ConvNext"), "backbone": "ConvNextBackbone"},
    "swin": {**_vision_family("Swin"), "backbone": "SwinBackbone",
             "masked-image-modeling": "SwinForMaskedImageModeling"},
    "upernet": {"semantic-segmentation": "UperNetForSemanticSegmentation"},
    "focalnet": {**_vision_family("FocalNet"), "backbone": "FocalNetBackbone",
                 "masked-image-modeling": "FocalNetForMaskedImageModeling"},
    "mobilevitv2": {**_vision_family("MobileViTV2"), "semantic-segmentation": "MobileViTV2ForSemanticSegmentation"},
    "bit": {**_vision_family("Bit"), "backbone": "BitBackbone"},
    "dpt": {"base": "DPTModel", "depth-estimation": "DPTForDepthEstimation",
            "semantic-segmentation": "DPTForSemanticSegmentation"},
    "data2vec-vision": {**_vision_family("Data2VecVision"),
                        "semantic-segmentation": "Data2VecVisionForSemanticSegmentation"},
    "cvt": _vision_family("Cvt"),
    "pvt": _vision_family("Pvt"),
    "clip": {"base": "CLIPModel", "zero-shot-image-classification": "CLIPModel"},
    "clip_text_model": {"base": "CLIPTextModel", "text-encoding": "CLIPTextModel"},
    "clip_vision_model": {"base": "CLIPVisionModel"},
    "siglip": {"base": "SiglipModel", "image-classification": "SiglipForImageClassification",
               "zero-shot-image-classification": "SiglipModel"},
    "siglip_vision_model": {"base": "SiglipVisionModel"},
    "siglip2": {"base": "Siglip2Model", "image-classification": "Siglip2ForImageClassification",
                "zero-shot-image-classification": "Siglip2Model"},
    "siglip2_vision_model": {"base": "Siglip2VisionModel"},
    "vision-text-dual-encoder": {"base": "VisionTextDualEncoderModel"},
    # as HF 5: listed by AutoModelForImageTextToText only (HF has no AutoModelForVision2Seq any more)
    "vision-encoder-decoder": {"image-text-to-text": "VisionEncoderDecoderModel"},
    "pix2struct": {"image-text-to-text": "Pix2StructForConditionalGeneration"},
    "whisper": {"base": "WhisperModel", "speech-seq2seq": "WhisperForConditionalGeneration"},
    "data2vec-audio": {"base": "Data2VecAudioModel", "ctc": "Data2VecAudioForCTC",
                       "audio-classification": "Data2VecAudioForSequenceClassification",
                       "audio-frame-classification": "Data2VecAudioForAudioFrameClassification",
                       "audio-xvector": "Data2VecAudioForXVector"},
    "wav2vec2": {"base": "Wav2Vec2Model", "ctc": "Wav2Vec2ForCTC",
                 "audio-classification": "Wav2Vec2ForSequenceClassification",
                 "audio-frame-classification": "Wav2Vec2ForAudioFrameClassification",
                 "audio-xvector": "Wav2Vec2ForXVector"},
    "clap": {"base": "ClapModel"},
    "visual_bert": {"base": "VisualBertModel"},
    "bridgetower": {"base": "BridgeTowerModel"},
    # a tuple: HF picks the class named in config.architectures, else the first
    "perceiver": {"base": "PerceiverModel", "masked-lm": "PerceiverForMaskedLM",
                  "sequence-classification": "PerceiverForSequenceClassification",
                  "image-classification": ("PerceiverForImageClassificationLearned",
                                           "PerceiverForImageClassificationFourier",
                                           "PerceiverForImageClassificationConvProcessing")},
    "m2m_100": {"base": "M2M100Model", "seq2seq-lm": "M2M100ForConditionalGeneration"},
    "llava": {"base": "LlavaModel", "image-text-to-text": "LlavaForConditionalGeneration"},
    # HF also lists it under AutoModelForPreTraining, which mindone.transformers does not have
    "idefics": {"base": "IdeficsModel", "image-text-to-text": "IdeficsForVisionText2Text"},
    "llava_next": {"base": "LlavaNextModel", "image-text-to-text": "LlavaNextForConditionalGeneration"},
    "qwen2_vl": {"base": "Qwen2VLModel", "image-text-to-text": "Qwen2VLForConditionalGeneration"},
    "qwen2_vl_text": {"base": "Qwen2VLTextModel"},
    "qwen2_5_vl": {"base": "Qwen2_5_VLModel", "image-text-to-text": "Qwen2_5_VLForConditionalGeneration"},
    "qwen2_5_vl_text": {"base": "Qwen2_5_VLTextModel"},
    "qwen2_5_vl_vision": {"base": "Qwen2_5_VisionTransformerPretrainedModel"},
    "blenderbot-small": {"base": "BlenderbotSmallModel", "seq2seq-lm": "BlenderbotSmallForConditionalGeneration",
                         "causal-lm": "BlenderbotSmallForCausalLM"},
}

# classes added at run time with `AutoModelXxx.register(config_class, model_class)`: (model_type, task) -> class
_REGISTERED = {}


def supported_model_types(task: str) -> list:
    """model_types that have a class for `task` (a key of TASKS)."""
    types = {t for t, names in MODEL_FAMILIES.items() if task in names}
    types |= {t for t, registered_task in _REGISTERED if registered_task == task}
    return sorted(types)


def model_class_name(model_type: str, task: str, architectures=None) -> str:
    """Our class name for (model_type, task); where a family has several classes for a task (HF's tuples), the one
    named in `architectures` (a config's), else the first."""
    auto_name = TASKS[task]
    names = MODEL_FAMILIES.get(model_type)
    if names is None or task not in names:
        raise ValueError(
            f"Unrecognized configuration (model_type={model_type!r}) for {auto_name}. "
            f"Model types supported by {auto_name}: {', '.join(supported_model_types(task))}"
        )
    name = names[task]
    if isinstance(name, tuple):
        name = next((arch for arch in (architectures or ()) if arch in name), name[0])
    return name


def model_class(model_type: str, task: str, architectures=None):
    """Our class for (model_type, task), importing its family module now."""
    if (model_type, task) in _REGISTERED:
        return _REGISTERED[(model_type, task)]
    name = model_class_name(model_type, task, architectures)
    package = importlib.import_module("mindone.transformers")
    if name not in package._LAZY:
        raise ValueError(f"{TASKS[task]}: model_type {model_type!r} maps to {name}, which this installation of "
                         f"mindone.transformers does not provide yet.")
    return getattr(package, name)


_CONFIG_LOADING_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder",
                          "gguf_file", "trust_remote_code")
# from_pretrained arguments of the model itself (HF 5 configs also have a `dtype` attribute: it must not eat it)
_MODEL_LOADING_KWARGS = ("dtype", "torch_dtype", "output_loading_info", "ignore_mismatched_sizes", "device_map",
                         "low_cpu_mem_usage", "attn_implementation", "use_safetensors", "weights_only", "device")


class _BaseAutoModelClass:
    """`from_pretrained` / `from_config` choosing the class from `config.model_type`."""

    _task = None

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(f"{type(self).__name__} is designed to be instantiated using "
                               f"`{type(self).__name__}.from_pretrained(path)` or `.from_config(config)`.")

    @classmethod
    def _class_for(cls, config):
        return model_class(config.model_type, cls._task, getattr(config, "architectures", None))

    @classmethod
    def from_config(cls, config, dtype=None, **kwargs):
        """A randomly initialised model for `config` (a `transformers` config), optionally in `dtype`."""
        from ...backend import layers
        from ...modeling_utils import to_ms_dtype

        for key, value in kwargs.items():
            setattr(config, key, value)
        model_cls = cls._class_for(config)
        ms_dtype = to_ms_dtype(dtype) if dtype not in (None, "auto") else None
        if ms_dtype is None:
            return model_cls(config)
        with layers.dtype_scope(ms_dtype):
            return model_cls(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """Reads the config (unless given), picks the class for its `model_type` and calls its `from_pretrained`.

        Args and kwargs are those of `PreTrainedModel.from_pretrained`; config attributes given as kwargs
        (e.g. `num_labels=3`) override the stored config.
        """
        if config is None:
            from transformers import AutoConfig

            hub_kwargs = {k: kwargs[k] for k in _CONFIG_LOADING_KWARGS if kwargs.get(k) is not None}
            hub_kwargs.pop("trust_remote_code", None)
            config_kwargs = {k: v for k, v in kwargs.items()
                             if k not in _CONFIG_LOADING_KWARGS and k not in _MODEL_LOADING_KWARGS}
            config, unused = AutoConfig.from_pretrained(
                os.fspath(pretrained_model_name_or_path), return_unused_kwargs=True, **hub_kwargs, **config_kwargs
            )
            kwargs = {k: v for k, v in kwargs.items() if k not in config_kwargs or k in unused}
        model_cls = cls._class_for(config)
        return model_cls.from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    @classmethod
    def register(cls, config_class, model_class, exist_ok=False):
        """Adds `model_class` for configs of type `config_class` (HF's extension point)."""
        key = (config_class.model_type, cls._task)
        if not exist_ok and (key in _REGISTERED or cls._task in MODEL_FAMILIES.get(key[0], {})):
            raise ValueError(f"{config_class.model_type!r} is already registered for {cls.__name__}")
        _REGISTERED[key] = model_class


def _auto_class(task):
    name = TASKS[task]
    return type(name, (_BaseAutoModelClass,), {"_task": task, "__doc__": f"HF's `{name}` for our models "
                                                                        f"(task {task!r})."})


AutoModel = _auto_class("base")
AutoModelForCausalLM = _auto_class("causal-lm")
AutoModelForSeq2SeqLM = _auto_class("seq2seq-lm")
AutoModelForMaskedLM = _auto_class("masked-lm")
AutoModelForSequenceClassification = _auto_class("sequence-classification")
AutoModelForTokenClassification = _auto_class("token-classification")
AutoModelForQuestionAnswering = _auto_class("question-answering")
AutoModelForImageClassification = _auto_class("image-classification")
AutoModelForSemanticSegmentation = _auto_class("semantic-segmentation")
AutoModelForObjectDetection = _auto_class("object-detection")
AutoModelForDepthEstimation = _auto_class("depth-estimation")
AutoModelForMaskedImageModeling = _auto_class("masked-image-modeling")
AutoBackbone = _auto_class("backbone")
AutoModelForZeroShotImageClassification = _auto_class("zero-shot-image-classification")
AutoModelForSpeechSeq2Seq = _auto_class("speech-seq2seq")
AutoModelForTextEncoding = _auto_class("text-encoding")
AutoModelForImageTextToText = _auto_class("image-text-to-text")
AutoModelForCTC = _auto_class("ctc")
AutoModelForAudioClassification = _auto_class("audio-classification")
AutoModelForAudioFrameClassification = _auto_class("audio-frame-classification")
AutoModelForAudioXVector = _auto_class("audio-xvector")

__all__ = [TASKS[t] for t in TASKS]
